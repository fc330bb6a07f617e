"""The vqa task."""
