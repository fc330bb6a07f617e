"""Semantic segmentation datasets: Pascal VOC layout and a generic image-folder/label-folder layout.

Each sample (docs/design.md): ``image`` (3, H, W) uint8 (the model normalises), ``mask`` (H, W) int64 with 255 = ignore,
``meta`` with ``id``, ``file``, ``seg_file``, ``ori_size`` (H0, W0), ``img_size`` (H, W), ``scale_factor`` (sx, sy).
Label maps are checked when read: same size as the image, values in ``0..K-1`` or the ignore index.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from ...data import as_pipeline, collate, read_image, read_label_png
from ...data.checks import check_files_exist, resolve_inside
from ...data.palette import voc_palette
from ...errors import ConfigError, DataError
from ...registry import DATASETS

__all__ = ['VOC_CLASSES', 'voc_palette', 'BaseSegDataset', 'VOCSegmentation', 'FolderSegmentation']

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
               'train', 'tvmonitor')


class BaseSegDataset(Dataset):
    """A list of (image, label map) file pairs read through a :class:`attnkit.data.Pipeline`.

    Args:
        records: ``(id, image file, label file)`` triples.
        classes: class names (index = label value).
        pipeline: transform configs for :class:`~attnkit.data.Pipeline`, a dict
            ``dict(transforms=[...])``, or a built ``Pipeline`` (mean/std belong to the model: ``model.normalize``).
        ignore_index: label value that marks pixels without a class.
        reduce_zero_label: label 0 becomes ignore and every other label ``v`` becomes ``v - 1`` (ADE20K).
        palette: RGB colour per class (VOC colour map when ``None``).
        source: what lists the records (the split file or folder), named in errors.
    """

    def __init__(self, records: Sequence[tuple[str, str, str]], classes: Sequence[str],
                 pipeline: Any = (), *, ignore_index: int = 255, reduce_zero_label: bool = False,
                 palette: Sequence[Sequence[int]] | None = None, source: str = '') -> None:
        if not classes:
            raise ConfigError(f"Segmentation dataset {source!r}: no classes given.")
        self.records = list(records)
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = reduce_zero_label
        self.source = source
        pal = [list(map(int, c)) for c in (palette if palette is not None else voc_palette(len(classes)))]
        if len(pal) < len(classes):
            raise ConfigError(f"Segmentation dataset {source!r}: palette has {len(pal)} colours for "
                              f"{len(classes)} classes.")
        self.metainfo: dict[str, Any] = {'classes': [str(c) for c in classes], 'palette': pal[:len(classes)],
                                         'ignore_index': self.ignore_index}
        self.pipeline = as_pipeline(pipeline)

    @property
    def num_classes(self) -> int:
        return len(self.metainfo['classes'])

    def __len__(self) -> int:
        return len(self.records)

    @staticmethod
    def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Batch samples: images padded with 0, masks with 255, to a multiple of 32."""
        return collate(samples, size_divisor=32, mask_pad_value=255)

    def load_label(self, index: int, image_shape: tuple[int, int] | None = None) -> np.ndarray:
        """The checked (H0, W0) uint8 label map of record ``index`` (reduce_zero_label applied).

        Raises:
            DataError: missing/unreadable file, size other than ``image_shape``, or labels outside
                ``0..K-1`` other than the ignore index; the message names the file and the record.
        """
        sample_id, img_file, seg_file = self.records[index]
        record = f"sample {sample_id!r} of {self.source}"
        label = read_label_png(seg_file, record=record)
        if label.ndim != 2:
            raise DataError(f"Label file {seg_file!r} ({record}) is not a single-channel label map "
                            f"(shape {label.shape}).")
        if image_shape is not None and tuple(label.shape) != tuple(image_shape):
            raise DataError(f"Label file {seg_file!r} ({record}) is {label.shape[1]}x{label.shape[0]} pixels "
                            f"but its image {img_file!r} is {image_shape[1]}x{image_shape[0]}.")
        label = label.astype(np.int64)
        if self.reduce_zero_label:
            ignored = (label == 0) | (label == self.ignore_index)
            label = np.where(ignored, self.ignore_index, label - 1)
        bad = ((label >= self.num_classes) & (label != self.ignore_index)) | (label < 0)
        if bad.any():
            values = sorted(set(np.unique(label[bad]).tolist()))[:10]
            raise DataError(f"Label file {seg_file!r} ({record}) has label values {values} outside the "
                            f"{self.num_classes} classes 0..{self.num_classes - 1} and not the ignore index "
                            f"{self.ignore_index}.")
        return label.astype(np.uint8) if self.ignore_index < 256 else label

    def gt_mask(self, meta: Mapping[str, Any]) -> np.ndarray:
        """The original-size label map of the sample described by ``meta`` (for the evaluator)."""
        return self.load_label(int(meta['index']))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample_id, img_file, seg_file = self.records[index]
        image = read_image(img_file, record=f"sample {sample_id!r} of {self.source}")
        label = self.load_label(index, image.shape[:2])
        out = self.pipeline(image, mask=label)
        h0, w0 = image.shape[:2]
        h, w = out['img_size']
        meta = {'id': sample_id, 'index': index, 'file': img_file, 'seg_file': seg_file, 'ori_size': (h0, w0),
                'img_size': (h, w), 'scale_factor': (w / w0, h / h0)}
        return {'image': out['image'], 'mask': out['mask'], 'meta': meta}


def _classes_from(metainfo: Mapping[str, Any] | None, default: Sequence[str] | None) -> tuple[list, Any]:
    metainfo = dict(metainfo or {})
    classes = metainfo.get('classes') or default
    if classes is None:
        raise ConfigError("A segmentation dataset needs class names: pass classes= or metainfo=dict(classes=...).")
    return list(classes), metainfo.get('palette')


@DATASETS.register_module()
class VOCSegmentation(BaseSegDataset):
    """Pascal VOC 2012 segmentation (and the 10,582-image "aug" set).

    Layout (``root`` = ``data/VOCdevkit/VOC2012``)::

        JPEGImages/<id>.jpg
        SegmentationClass/<id>.png         palette PNGs; index 255 = border/ignore
        SegmentationClassAug/<id>.png      (SBD conversion, for the aug split; ann_dir='SegmentationClassAug')
        ImageSets/Segmentation/{train,val,trainaug}.txt   one id per line

    Args:
        root: the VOC2012 folder.
        split_file: split list, relative to ``root`` (e.g. ``ImageSets/Segmentation/train.txt``) or absolute.
        pipeline: transform configs (see :class:`BaseSegDataset`).
        ann_dir: label folder under ``root``.
        img_dir: image folder under ``root``.
        metainfo: ``classes`` / ``palette`` (default: the 21 VOC classes and colour map).
    """

    def __init__(self, root: str, split_file: str, pipeline: Any = (), ann_dir: str = 'SegmentationClass',
                 img_dir: str = 'JPEGImages', metainfo: Mapping[str, Any] | None = None) -> None:
        split_path = split_file if os.path.isabs(split_file) else os.path.join(root, split_file)
        if not os.path.isfile(split_path):
            raise DataError(f"VOC split file {split_path!r} does not exist (root {root!r}).")
        with open(split_path) as f:
            ids = [(lineno, line.split()[0]) for lineno, line in enumerate(f, 1) if line.strip()]
        records = []
        for lineno, sample_id in ids:
            record = f'line {lineno} of {split_path!r}'
            img = resolve_inside(os.path.join(root, img_dir), sample_id + '.jpg', record=record)
            seg = resolve_inside(os.path.join(root, ann_dir), sample_id + '.png', record=record)
            records.append((sample_id, img, seg))
        check_files_exist((r[1] for r in records), source=f'VOC split file {split_path!r}', what='image')
        check_files_exist((r[2] for r in records), source=f'VOC split file {split_path!r}', what='label')
        classes, palette = _classes_from(metainfo, VOC_CLASSES)
        super().__init__(records, classes, pipeline, palette=palette, source=split_path)


@DATASETS.register_module()
class FolderSegmentation(BaseSegDataset):
    """Images in one folder, label maps of the same stem in another (ADE20K, Cityscapes, custom data).

    Args:
        img_dir: image folder (searched recursively; Cityscapes-style city subfolders work).
        ann_dir: label folder mirroring ``img_dir``'s relative paths.
        classes: class names (or from ``metainfo``).
        img_suffix, seg_suffix: file endings, e.g. ``'_leftImg8bit.png'`` / ``'_gtFine_labelTrainIds.png'``.
        reduce_zero_label: label 0 is "other" (ignored) and labels shift down by one (ADE20K).
        ignore_index: ignore label.
        palette: RGB per class.
        pipeline: transform configs.
        metainfo: ``classes`` / ``palette`` from training or a checkpoint (used when ``classes`` is not given).

    Raises:
        DataError: an image without a label file (named) or an empty image folder.
    """

    def __init__(self, img_dir: str, ann_dir: str, classes: Sequence[str] | None = None, img_suffix: str = '.jpg',
                 seg_suffix: str = '.png', reduce_zero_label: bool = False, ignore_index: int = 255,
                 palette: Sequence[Sequence[int]] | None = None, pipeline: Any = (),
                 metainfo: Mapping[str, Any] | None = None) -> None:
        if not os.path.isdir(img_dir):
            raise DataError(f"Image folder {img_dir!r} does not exist.")
        records = []
        for dirpath, _, files in sorted(os.walk(img_dir)):
            for name in sorted(files):
                if not name.endswith(img_suffix):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), img_dir)
                stem = rel[: -len(img_suffix)]
                seg = resolve_inside(ann_dir, stem + seg_suffix, record=f'image {os.path.join(img_dir, rel)!r}')
                records.append((stem, os.path.join(img_dir, rel), seg))
        if not records:
            raise DataError(f"Image folder {img_dir!r} has no files ending in {img_suffix!r}.")
        check_files_exist((r[2] for r in records), source=f'image folder {img_dir!r} (labels in {ann_dir!r})',
                          what='label')
        meta_classes, meta_palette = _classes_from(metainfo, classes)
        super().__init__(records, classes if classes else meta_classes, pipeline, ignore_index=ignore_index,
                         reduce_zero_label=reduce_zero_label, palette=palette or meta_palette, source=img_dir)
