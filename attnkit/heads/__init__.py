"""Task heads: detection (FCOS, RetinaNet), segmentation (FCN, DANet, CCNet, Semantic-FPN, DeepLabV3+), VQA (SAN, MCAN)."""
from . import detection, segmentation, vqa  # noqa: F401  (registers the heads)
