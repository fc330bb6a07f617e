"""vqa heads."""
