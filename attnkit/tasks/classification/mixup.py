"""Mixup / CutMix through ``timm.data.Mixup``, drawn from the batch's own seed so training repeats exactly.

timm's ``Mixup`` draws from numpy's global generator. :class:`SeededMixup` seeds that generator from the batch's
``meta['batch_seed']`` (a function of ``(runtime.seed, epoch, the batch's sample indices)``, set by
:meth:`ClassificationDataset.__getitems__` inside the engine's seeded loader) for the duration of the call and
restores it afterwards: the same batch gets the same mixing whatever the number of DataLoader workers, and after a
resume. Outside the engine (no seed) it draws as timm does.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError

__all__ = ['SeededMixup', 'build_mixup']

_TIMM_KEYS = ('mixup_alpha', 'cutmix_alpha', 'cutmix_minmax', 'prob', 'switch_prob', 'mode', 'correct_lam')


class SeededMixup:
    """``timm.data.Mixup`` with seeded draws, even batches, and multi-label targets with ignored entries.

    Args:
        num_classes: K.
        label_smoothing: the model's label smoothing (single-label: towards uniform; multi-label: towards 0.5).
        multi_label: targets are (N, K) multi-hot (1 / 0 / -1 = ignored) instead of (N,) class indices.
        **kwargs: timm's ``mixup_alpha``, ``cutmix_alpha``, ``cutmix_minmax``, ``prob``, ``switch_prob``,
            ``mode`` ('batch' | 'pair' | 'elem'), ``correct_lam``.

    ``__call__(images (N, 3, H, W) float, labels, seed) -> (mixed images, soft targets (N, K) float32, valid)``:
    ``valid`` is None, or for multi-label data the (N, K) bool mask of entries that count in the loss (an entry
    is ignored when it was ignored in either mixed image). An odd batch mixes its first N - 1 images (timm pairs
    image i with N - 1 - i) and leaves the last one as it is.
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, multi_label: bool = False,
                 **kwargs: Any) -> None:
        from timm.data import Mixup
        unknown = sorted(set(kwargs) - set(_TIMM_KEYS))
        if unknown:
            from ...registry import closest_names
            close = closest_names(unknown[0], _TIMM_KEYS)
            hint = f" Did you mean {close[0]!r}?" if close else ''
            extra = (' Set label smoothing with model.label_smoothing.' if 'label_smoothing' in unknown else '')
            raise ConfigError(f"model.mixup has no key {unknown[0]!r}.{hint}{extra} Keys: {', '.join(_TIMM_KEYS)}.")
        if not (kwargs.get('mixup_alpha', 1.0) > 0 or kwargs.get('cutmix_alpha', 0.0) > 0
                or kwargs.get('cutmix_minmax') is not None):
            raise ConfigError('model.mixup needs mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax; remove '
                              'model.mixup to train without mixing.')
        args = dict(kwargs, label_smoothing=float(label_smoothing), num_classes=int(num_classes))
        if multi_label:
            if 'multi_label' not in inspect.signature(Mixup).parameters:
                raise ConfigError('model.mixup with multi-label data needs timm >= 1.0.20 (Mixup(multi_label=...)); '
                                  'upgrade timm or remove model.mixup.')
            args['multi_label'] = True
        self.multi_label = multi_label
        self.mixup = Mixup(**args)

    def __call__(self, images: Tensor, labels: Tensor, seed: int | None = None
                 ) -> tuple[Tensor, Tensor, Tensor | None]:
        n = images.shape[0]
        even = n - n % 2
        valid = None
        if self.multi_label:
            valid = labels >= 0
            target = labels.clamp(min=0).float()
        else:
            target = labels
        soft = self._soft(target)
        if even >= 2:
            saved = np.random.get_state() if seed is not None else None
            if seed is not None:
                np.random.seed(int(seed) % 2 ** 32)
            try:
                mixed_images, mixed_target = self.mixup(images[:even].clone(), target[:even])
            finally:
                if saved is not None:
                    np.random.set_state(saved)
            images = torch.cat([mixed_images, images[even:]]) if even < n else mixed_images
            soft = torch.cat([mixed_target.to(soft.dtype), soft[even:]]) if even < n else mixed_target.float()
            if valid is not None:
                pair = valid[:even] & valid[:even].flip(0)
                valid = torch.cat([pair, valid[even:]]) if even < n else pair
        return images, soft.float(), valid

    def _soft(self, target: Tensor) -> Tensor:
        """Unmixed soft targets (label smoothing only), as timm's ``mixup_target`` with lam = 1."""
        from timm.data.mixup import mixup_target
        kwargs = {'multi_label': True} if self.multi_label else {}
        return mixup_target(target, self.mixup.num_classes, 1.0, self.mixup.label_smoothing, **kwargs).float()


def build_mixup(cfg: Mapping[str, Any] | None, num_classes: int, label_smoothing: float,
                multi_label: bool) -> SeededMixup | None:
    """A :class:`SeededMixup` from ``model.mixup`` (``None`` / empty: no mixing)."""
    if not cfg:
        return None
    if not isinstance(cfg, Mapping):
        raise ConfigError(f'model.mixup must be dict(mixup_alpha=..., cutmix_alpha=..., prob=...), got {cfg!r}.')
    return SeededMixup(num_classes, label_smoothing, multi_label, **dict(cfg))
