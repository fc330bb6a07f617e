"""Metrics: COCO and VOC mAP, mIoU, VQA accuracy."""
from .base import BaseEvaluator

__all__ = ['BaseEvaluator']
from .miou import IoUMetric  # noqa: E402,F401
from . import vqa  # noqa: E402,F401  (registers VQAAccuracy)
from .coco import CocoMetric  # noqa: E402,F401
from .voc import VOCMetric  # noqa: E402,F401
from .classification import Accuracy, MultiLabelMAP  # noqa: E402,F401
