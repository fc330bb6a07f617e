"""Training engine on Hugging Face Accelerate."""
