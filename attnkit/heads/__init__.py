"""Task heads: detection (FCOS, RetinaNet), segmentation (FCN, DANet, CCNet, Semantic-FPN, DeepLabV3+), VQA (SAN, MCAN),
classification (linear, attnpool, class_attention, ml_decoder)."""
from . import classification, detection, segmentation, vqa  # noqa: F401  (registers the heads)
