"""Tasks: each joins backbone + neck + head into a registered model, with its datasets and pictures."""
from . import classification, detection, multitask, segmentation, vqa  # noqa: F401
