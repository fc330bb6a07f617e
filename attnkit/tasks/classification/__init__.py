"""The classification task: datasets (ImageFolder, CSV/JSON lists, multi-label VOC/COCO), the ``ImageClassifier``
model with seeded mixup/cutmix, pictures and the inferencer."""
from .datasets import (ClassificationDataset, ClassificationList, CocoMultiLabel, ImageFolder, VOCMultiLabel,
                       read_label_list)
from .infer import infer_classifier
from .mixup import SeededMixup, build_mixup
from .model import ImageClassifier

__all__ = ['ImageClassifier', 'ClassificationDataset', 'ImageFolder', 'ClassificationList', 'VOCMultiLabel',
           'CocoMultiLabel', 'read_label_list', 'SeededMixup', 'build_mixup', 'infer_classifier']
