"""Metrics: COCO and VOC mAP, mIoU, VQA accuracy."""
from .base import BaseEvaluator

__all__ = ['BaseEvaluator']
