"""Interpretability as numbers: does a map point at the objects, and does the model need what it points at?

- :func:`energy_inside` — energy-based pointing game (Wang et al., Score-CAM, 2020): the fraction of a map's
  mass (min-max normalised) inside the ground-truth objects. A uniform map scores the objects' area fraction.
- :func:`pointing_hit` — pointing game: whether the map's maximum lies inside an object.
- :func:`deletion_insertion` — RISE's causal metrics (Petsiuk et al., 2018): delete the most salient pixels
  first (image -> black) and watch the target's score fall, or insert them first into a blurred image and watch
  it rise; the areas under the two curves (lower deletion, higher insertion = a more faithful map).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['energy_inside', 'pointing_hit', 'area_fraction', 'deletion_insertion', 'resize_map', 'auc']


def resize_map(amap: np.ndarray | Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) map -> (H, W) float32, bilinear (align_corners=False), negative values clipped to 0."""
    t = torch.as_tensor(np.asarray(amap, dtype=np.float32))[None, None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(size), mode='bilinear', align_corners=False)
    return t[0, 0].clamp(min=0).numpy()


def energy_inside(amap: np.ndarray, objects: np.ndarray, valid: np.ndarray | None = None,
                  normalize: bool = True) -> float:
    """sum(map inside objects) / sum(map) over the ``valid`` pixels (all by default).

    Args:
        amap: (H, W) map at the size of ``objects`` (negative values count as 0).
        objects: (H, W) bool, the union of the ground-truth objects.
        valid: (H, W) bool, pixels that count (e.g. not the segmentation's ignore label).
        normalize: min-max normalise the map over the valid pixels first, as Score-CAM's energy-based pointing
            game does with its saliency maps: a sigmoid gate that is 0.5 everywhere and 0.6 on the objects then
            counts as the contrast it is, not as its offset; Grad-CAM maps are already so normalised. A constant
            map scores the objects' area fraction (it has no preference).

    Returns:
        The fraction in [0, 1]; NaN for an all-zero map without ``normalize``.
    """
    m = np.clip(np.asarray(amap, np.float64), 0, None)
    keep = np.ones(m.shape, bool) if valid is None else np.asarray(valid, bool)
    if normalize:
        lo, hi = m[keep].min(), m[keep].max()
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            return area_fraction(objects, valid)
        m = (m - lo) / (hi - lo)
    m = m * keep
    total = m.sum()
    return float((m * objects).sum() / total) if total > 0 else float('nan')


def pointing_hit(amap: np.ndarray, objects: np.ndarray, valid: np.ndarray | None = None) -> float:
    """1.0 when the map's maximum (first in row-major order, among ``valid`` pixels) is inside an object, else 0."""
    m = np.asarray(amap, np.float64).copy()
    if valid is not None:
        m[~valid] = -np.inf
    return float(objects.reshape(-1)[int(np.argmax(m))])


def area_fraction(objects: np.ndarray, valid: np.ndarray | None = None) -> float:
    """The objects' share of the (valid) pixels: what a uniform map scores in :func:`energy_inside`."""
    if valid is None:
        return float(objects.mean())
    return float((objects & valid).sum() / max(1, valid.sum()))


def auc(scores: np.ndarray) -> float:
    """Trapezoid area under scores taken at equally spaced fractions 0..1."""
    s = np.asarray(scores, np.float64)
    return float(((s[1:] + s[:-1]) / 2).sum() / (len(s) - 1))


@torch.no_grad()
def deletion_insertion(score_fn: Callable[[Tensor], Tensor], image: Tensor, saliency: np.ndarray | Tensor,
                       steps: int = 16, blur_sigma: float = 5.0, batch_size: int = 17
                       ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """RISE deletion and insertion curves of one image.

    Pixels are ranked by ``saliency`` (stable order: ties keep row-major order). Step k of ``steps`` removes
    (deletion: sets to 0) or reveals (insertion: copies into a Gaussian-blurred copy) the first ``k/steps`` of
    them; ``score_fn`` scores every step's image.

    Args:
        score_fn: (B, 3, H, W) float images -> (B,) target scores (probabilities, so the curves are comparable).
        image: (3, H, W) float, the model's input scale (0..255 for attnkit's scorer).
        saliency: (H, W) map at the image size.
        steps: curve points after the first.
        blur_sigma: the insertion canvas's blur, in pixels.
        batch_size: images scored per forward.

    Returns:
        (deletion AUC, insertion AUC, deletion scores (steps + 1,), insertion scores (steps + 1,)).
    """
    _, h, w = image.shape
    sal = torch.as_tensor(np.asarray(saliency, np.float32)).reshape(-1)
    order = torch.argsort(-sal, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    rank = rank.view(h, w).to(image.device)
    blurred = _blur(image, blur_sigma)
    black = torch.zeros_like(image)
    images_del, images_ins = [], []
    for k in range(steps + 1):
        shown = (rank < round(k * h * w / steps)).to(image.dtype)  # (H, W): the first k/steps of the ranking
        images_del.append(image * (1 - shown) + black * shown)
        images_ins.append(blurred * (1 - shown) + image * shown)
    scores = []
    stack = torch.stack(images_del + images_ins)
    for i in range(0, len(stack), batch_size):
        scores.append(score_fn(stack[i:i + batch_size]).float().cpu())
    s = torch.cat(scores).numpy()
    d, ins = s[: steps + 1], s[steps + 1:]
    return auc(d), auc(ins), d, ins


def _blur(image: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of a (3, H, W) image (reflect padding), kernel 4 sigma + 1 wide."""
    radius = max(1, int(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(image.dtype)
    img = image[None]
    pad_h, pad_w = min(radius, image.shape[1] - 1), min(radius, image.shape[2] - 1)
    img = F.pad(img, (pad_w, pad_w, 0, 0), mode='reflect') if pad_w > 0 else img
    img = F.conv2d(img, k[radius - pad_w: radius + pad_w + 1].view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    img = F.pad(img, (0, 0, pad_h, pad_h), mode='reflect') if pad_h > 0 else img
    img = F.conv2d(img, k[radius - pad_h: radius + pad_h + 1].view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    return img[0]
