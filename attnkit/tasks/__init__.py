"""Tasks: each joins backbone + neck + head into a registered model, with its datasets and pictures."""
from . import detection, segmentation, vqa  # noqa: F401
