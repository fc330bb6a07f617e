"""segmentation heads."""
