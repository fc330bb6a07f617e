"""Image normalisation inside the model: the batch carries uint8 pixels, the model owns mean and std.

Batches cross to the device as ``images`` (N, 3, H, W) **uint8** (a quarter of the bytes of float32), padded
with 0 bottom/right by the collate. Each task model normalises at the top of ``forward`` on its own device,
as torchvision's ``GeneralizedRCNNTransform`` does, so a checkpoint plus its config is all inference needs.

Set a model's statistics with ``model = dict(..., normalize=dict(mean=(...), std=(...)))`` on a 0..255 scale
(default: ImageNet, ``mean=(123.675, 116.28, 103.53)``, ``std=(58.395, 57.12, 57.375)``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'ImageNormalizer', 'build_normalizer', 'image_sizes']

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # 0..1 scale (x 255 in the model's buffers)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stat(values: Sequence[float] | None, default: Sequence[float], name: str) -> Tensor:
    """A (3,) float32 statistic on the 0..255 scale (the default is computed as ``0..1 value * 255`` in float32,
    exactly as the dataset pipeline did before normalisation moved into the model)."""
    if values is None:
        return torch.tensor(default, dtype=torch.float32) * 255.0
    try:
        out = torch.tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f'normalize.{name} must be 3 numbers (0..255 scale), got {values!r}.') from exc
    if out.shape != (3,):
        raise ConfigError(f'normalize.{name} must be 3 numbers (0..255 scale, RGB), got {list(values)!r}.')
    if name == 'std' and bool((out <= 0).any()):
        raise ConfigError(f'normalize.std must be positive, got {list(values)!r}.')
    return out


class ImageNormalizer(nn.Module):
    """``(uint8 images - mean) / std`` in float32, on the model's device.

    Args:
        mean, std: per RGB channel on a 0..255 scale; ``None`` means ImageNet's.

    ``forward(images (N, 3, H, W) uint8, sizes=None) -> (N, 3, H, W) float32`` in the input's memory format
    (channels_last stays channels_last). ``sizes`` ((h, w) per image, the unpadded ``img_size``) zeroes the
    collate's padding after normalisation, so a padded border reads 0 — the mean colour — as it did when
    the dataset normalised before padding.

    ``mean`` and ``std`` are non-persistent buffers: they follow ``.to(device)`` but are not in the state
    dict; they come from the config (the model's ``normalize`` option), like every other architecture option.
    """

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.register_buffer('mean', _stat(mean, IMAGENET_MEAN, 'mean'), persistent=False)
        self.register_buffer('std', _stat(std, IMAGENET_STD, 'std'), persistent=False)

    def forward(self, images: Tensor, sizes: Sequence[tuple[int, int] | None] | None = None) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise DataError(f'The model expects images (N, 3, H, W) uint8 (0..255, normalised inside the model), '
                            f'got {tuple(images.shape)} {str(images.dtype).replace("torch.", "")}: batches from '
                            f'attnkit.data.collate carry uint8 since normalisation moved into the model.')
        x = images.float()  # keeps channels_last (preserve_format)
        x = x.sub_(self.mean.view(1, 3, 1, 1)).div_(self.std.view(1, 3, 1, 1))
        if sizes is not None:
            height, width = x.shape[-2:]
            for i, size in enumerate(sizes):
                if size is None:
                    continue
                h, w = int(size[0]), int(size[1])
                if h < height:
                    x[i, :, h:, :] = 0
                if w < width:
                    x[i, :, :h, w:] = 0
        return x

    def extra_repr(self) -> str:
        return f'mean={[round(v, 3) for v in self.mean.tolist()]}, std={[round(v, 3) for v in self.std.tolist()]}'


def build_normalizer(cfg: Mapping[str, Any] | None) -> ImageNormalizer:
    """An :class:`ImageNormalizer` from a model's ``normalize`` option (``None`` or ``dict(mean=..., std=...)``)."""
    if cfg is None:
        return ImageNormalizer()
    if not isinstance(cfg, Mapping):
        raise ConfigError(f'normalize must be dict(mean=(r, g, b), std=(r, g, b)) on a 0..255 scale, got {cfg!r}.')
    unknown = sorted(set(cfg) - {'mean', 'std'})
    if unknown:
        raise ConfigError(f"normalize: unknown key(s) {', '.join(unknown)}; expected mean and std (0..255 scale).")
    return ImageNormalizer(cfg.get('mean'), cfg.get('std'))


def image_sizes(batch: Mapping[str, Any]) -> list[tuple[int, int] | None] | None:
    """The unpadded (h, w) of each of ``batch['images']``, from the ``metas``' ``img_size``.

    With ``image_index`` (VQA: questions -> distinct images), the size of image m comes from its first
    question's meta. ``None`` when the batch has no metas or no image is padded (nothing is zeroed then).
    """
    metas = batch.get('metas')
    images = batch.get('images')
    if not metas or images is None:
        return None
    full = tuple(images.shape[-2:])
    if all(isinstance(m, Mapping) and tuple(m.get('img_size') or ()) == full for m in metas):
        return None  # no padding anywhere (e.g. a fixed resize): nothing to zero, no device sync for image_index
    index = batch.get('image_index')
    slots = index.tolist() if isinstance(index, Tensor) else (list(index) if index is not None
                                                             else list(range(len(metas))))
    sizes: list[tuple[int, int] | None] = [None] * int(images.shape[0])
    for slot, meta in zip(slots, metas):
        size = meta.get('img_size') if isinstance(meta, Mapping) else None
        if 0 <= slot < len(sizes) and sizes[slot] is None and size is not None:
            sizes[slot] = (int(size[0]), int(size[1]))
    return sizes
