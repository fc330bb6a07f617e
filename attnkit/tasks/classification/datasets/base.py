"""What every classification dataset shares: records of (image file, target), the pipeline, samples, collate.

A sample (docs/classification.md)::

    {'image': (3, H, W) uint8, 'label': target, 'meta': {'id', 'index', 'file', 'ori_size', 'img_size',
     'scale_factor', 'batch_seed'}}

``label`` is a 0-dim int64 tensor (the class index) for single-label data, and a (K,) float32 tensor for
multi-label data: 1 = present, 0 = absent, -1 = ignored (e.g. a VOC class present only as "difficult"
objects: neither a positive nor a negative for its AP). ``collate`` stacks them into ``batch['labels']``
((N,) int64 or (N, K) float32).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ....data import as_pipeline, collate, read_image
from ....data.randomness import sample_random
from ....errors import ConfigError

__all__ = ['ClassificationDataset', 'IMG_EXTENSIONS']

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


class ClassificationDataset(Dataset):
    """Images with one class each (single-label) or a set of classes each (multi-label).

    Subclasses call ``super().__init__`` with the records they read.

    Args:
        records: ``(file, target)`` pairs: ``target`` an int class index (single-label) or a (K,) array of
            1 / 0 / -1 (multi-label: present / absent / ignored).
        classes: class names (index = class id).
        multi_label: whether targets are sets of classes.
        pipeline: transform configs (albumentations names or attnkit TRANSFORMS), ``dict(transforms=[...])`` or
            a built :class:`~attnkit.data.Pipeline`; images stay uint8 (the model normalises).
        source: what lists the records (a folder, a list file), named in errors.
    """

    def __init__(self, records: Sequence[tuple[str, Any]], classes: Sequence[str], *, multi_label: bool = False,
                 pipeline: Any = None, source: str = '') -> None:
        if not classes:
            raise ConfigError(f'Classification dataset {source!r}: no classes.')
        self.records = list(records)
        self.classes = [str(c) for c in classes]
        self.multi_label = bool(multi_label)
        self.source = source
        self.pipeline = as_pipeline(pipeline)
        self.metainfo: dict[str, Any] = {'classes': list(self.classes), 'multi_label': self.multi_label}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def target(self, index: int) -> torch.Tensor:
        """The ground truth of sample ``index``: 0-dim int64 class, or (K,) float32 of 1 / 0 / -1."""
        t = self.records[index][1]
        if self.multi_label:
            return torch.as_tensor(np.asarray(t, np.float32))
        return torch.tensor(int(t), dtype=torch.int64)

    def targets(self) -> torch.Tensor:
        """All ground truths: (len,) int64 or (len, K) float32 (for class counts and the evaluator)."""
        if not self.records:
            return torch.zeros((0, self.num_classes) if self.multi_label else (0,))
        return torch.stack([self.target(i) for i in range(len(self))])

    def __getitem__(self, index: int) -> dict[str, Any]:
        file = self.records[index][0]
        image = read_image(file, record=f'sample {index} of {self.source}')
        out = self.pipeline(image)
        h0, w0 = image.shape[:2]
        h, w = out['img_size']
        meta = {'id': index, 'index': index, 'file': file, 'ori_size': (h0, w0), 'img_size': (h, w),
                'scale_factor': (w / w0, h / h0)}
        return {'image': out['image'], 'label': self.target(index), 'meta': meta}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Samples ``indices`` (one batch), each drawn in its own ``sample_random(index)`` scope, plus the batch's
        own seed ``meta['batch_seed']``: ``sample_seed(seed, epoch, ('batch', *indices))`` inside the engine's
        :class:`~attnkit.data.SeededDataset` (else None). The model's mixup/cutmix draws from it, so they repeat
        whatever the number of workers and after a resume."""
        samples = []
        for i in indices:
            with sample_random(int(i)):
                samples.append(self[int(i)])
        with sample_random(('batch', *(int(i) for i in indices))) as seed:
            for s in samples:
                s['meta']['batch_seed'] = seed
        return samples

    @staticmethod
    def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """``images`` (N, 3, H, W) uint8 (padded to a multiple of 32), ``labels`` (N,) int64 or (N, K) float32,
        ``metas``."""
        batch = collate(samples, size_divisor=32)
        batch['labels'] = batch.pop('label')
        return batch

    def class_counts(self) -> list[int]:
        """Images per class (multi-label: images where the class is present)."""
        t = self.targets()
        if self.multi_label:
            return [int(v) for v in (t == 1).sum(0).tolist()] if len(t) else [0] * self.num_classes
        return [int(v) for v in torch.bincount(t, minlength=self.num_classes).tolist()]
