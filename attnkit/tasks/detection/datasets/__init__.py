"""Detection datasets (registered in DATASETS)."""
from .base import DetectionDataset
from .coco import CocoDetection
from .voc import VOC_CLASSES, VOCDetection

__all__ = ['DetectionDataset', 'CocoDetection', 'VOCDetection', 'VOC_CLASSES']
