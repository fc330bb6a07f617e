"""The segmentation task: datasets, transforms, the ``Segmentor`` model, pictures and the inferencer."""
from . import transforms  # noqa: F401  (registers TRANSFORMS)
from .datasets import VOC_CLASSES, BaseSegDataset, FolderSegmentation, VOCSegmentation, voc_palette
from .infer import infer_segmentor
from .model import Segmentor

__all__ = ['VOC_CLASSES', 'voc_palette', 'BaseSegDataset', 'VOCSegmentation', 'FolderSegmentation', 'Segmentor',
           'infer_segmentor']
