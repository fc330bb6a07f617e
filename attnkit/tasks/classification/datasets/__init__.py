"""Classification datasets (registered in DATASETS): ImageFolder, ClassificationList (CSV/JSON), and multi-label
VOC and COCO from their detection annotations."""
from .base import IMG_EXTENSIONS, ClassificationDataset
from .folder import ImageFolder
from .lists import ClassificationList, read_label_list
from .multilabel import CocoMultiLabel, VOCMultiLabel, multi_hot

__all__ = ['ClassificationDataset', 'ImageFolder', 'ClassificationList', 'VOCMultiLabel', 'CocoMultiLabel',
           'read_label_list', 'multi_hot', 'IMG_EXTENSIONS']
