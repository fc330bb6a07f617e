"""The detection task: datasets (COCO, VOC), transforms, the ``Detector`` model, pictures, the inferencer."""
from . import transforms  # noqa: F401  (registers the transforms)
from .datasets import VOC_CLASSES, CocoDetection, VOCDetection
from .infer import infer_detector
from .model import Detector
from .visualize import draw_detections

__all__ = ['Detector', 'CocoDetection', 'VOCDetection', 'VOC_CLASSES', 'infer_detector', 'draw_detections']
