"""What to explain: ``--target box:K | class:NAME | pixel:Y,X | answer:TEXT`` as a score of the model's output.

A :class:`Target` is called on ONE image's output of :class:`~attnkit.explain.scorer.TaskScorer` (as
``pytorch_grad_cam`` does: ``target(output[i])``) and returns a scalar: the logit (``prob=False``, what Grad-CAM
differentiates) or a probability (``prob=True``, what the deletion/insertion curves plot).

- box score (detection): the best score of the box's class over the points inside the box;
- class mask (segmentation): the mean over the class's predicted pixels;
- pixel (segmentation): the predicted class at that pixel;
- answer (VQA): the answer's logit / sigmoid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import closest_names

__all__ = ['Target', 'BoxScore', 'MaskScore', 'PixelScore', 'AnswerScore', 'resolve_target', 'parse_target']


class BoxScore:
    """Detection: max over the points inside ``box`` (xyxy, input pixels) of class ``label``'s score.

    Called on (P, C) per-point scores; ``points`` (P, 2) are their xy. No point inside the box: the point nearest
    to its centre.
    """

    def __init__(self, scorer: Any, box: Sequence[float], label: int, prob: bool = False) -> None:
        self.scorer, self.box, self.label, self.prob = scorer, [float(v) for v in box], int(label), prob

    def __call__(self, output: Tensor) -> Tensor:
        pts = self.scorer.points
        x1, y1, x2, y2 = self.box
        inside = (pts[:, 0] >= x1) & (pts[:, 0] <= x2) & (pts[:, 1] >= y1) & (pts[:, 1] <= y2)
        if not bool(inside.any()):
            centre = pts.new_tensor([(x1 + x2) / 2, (y1 + y2) / 2])
            inside = torch.zeros_like(inside)
            inside[int(((pts - centre) ** 2).sum(1).argmin())] = True
        s = output[inside, self.label].max()
        return s if self.prob else torch.logit(s.clamp(1e-6, 1 - 1e-6))


class MaskScore:
    """Segmentation: the mean of class ``label``'s logit (or softmax probability) over ``mask`` (H, W) bool."""

    def __init__(self, label: int, mask: Tensor, prob: bool = False) -> None:
        self.label, self.mask, self.prob = int(label), mask.bool(), prob

    def __call__(self, output: Tensor) -> Tensor:
        values = output.softmax(0)[self.label] if self.prob else output[self.label]
        mask = self.mask.to(values.device)
        if not bool(mask.any()):
            return values.mean()
        return values[mask].mean()


class PixelScore(MaskScore):
    """Segmentation: class ``label`` at pixel (y, x) of the input."""

    def __init__(self, label: int, y: int, x: int, size: Sequence[int], prob: bool = False) -> None:
        mask = torch.zeros(tuple(size), dtype=torch.bool)
        mask[y, x] = True
        super().__init__(label, mask, prob)


class AnswerScore:
    """VQA: answer ``index``'s logit (or sigmoid)."""

    def __init__(self, index: int, prob: bool = False) -> None:
        self.index, self.prob = int(index), prob

    def __call__(self, output: Tensor) -> Tensor:
        return output[self.index].sigmoid() if self.prob else output[self.index]


@dataclass
class Target:
    """A resolved target of one image.

    Attributes:
        spec: the canonical ``--target`` text (``box:0``, ``class:circle``...).
        title: what the pictures say (``box 0: circle 0.93``).
        make: ``make(scorer, prob) -> callable on one output``.
        centre: (y, x) in original-image pixels: the default query point of self-attention maps.
        box: detection: the box (xyxy, original pixels) to draw.
        region: (H0, W0) bool, the target's pixels in the original image (box, class mask or pixel), or None.
    """
    spec: str
    title: str
    make: Any
    centre: tuple[int, int]
    box: list[float] | None = None
    region: np.ndarray | None = field(default=None, repr=False)


def parse_target(spec: str | None) -> tuple[str, str] | None:
    """``'box:3'`` -> ('box', '3'); None -> None. Unknown kind: ConfigError."""
    if spec is None:
        return None
    kind, sep, value = spec.partition(':')
    kinds = ('box', 'class', 'pixel', 'answer')
    if not sep or kind not in kinds or not value.strip():
        close = closest_names(kind, kinds) if kind else []
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise ConfigError(f'--target {spec!r}: expected box:K, class:NAME, pixel:Y,X or answer:TEXT{hint}.')
    return kind, value.strip()


def _to_input(box: Sequence[float], meta: dict) -> list[float]:
    sx, sy = meta.get('scale_factor', (1.0, 1.0))
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def _centre_of(mask: np.ndarray) -> tuple[int, int]:
    """The pixel of ``mask`` nearest to its centroid (inside even for a ring)."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    i = int(((ys - cy) ** 2 + (xs - cx) ** 2).argmin())
    return int(ys[i]), int(xs[i])


def _available(lines: list[str]) -> str:
    return ', '.join(lines[:12]) + (f' ... ({len(lines)} in all)' if len(lines) > 12 else '') if lines else 'none'


def resolve_target(task: str, spec: str | None, pred: dict, meta: dict, names: Sequence[str]) -> Target:
    """The target ``spec`` (None: the default) for one image's prediction.

    Args:
        task: 'detection' | 'segmentation' | 'vqa'.
        spec: ``--target`` text or None (detection: the top box; segmentation: the predicted non-background class
            with most pixels; VQA: the top answer).
        pred: detection: ``boxes`` (K, 4) original pixels, ``scores``, ``labels`` (numpy, sorted by score);
            segmentation: ``sem_seg`` (H0, W0) numpy; VQA: ``answer_ids``, ``scores``.
        meta: the image's meta (``ori_size``, ``img_size``, ``scale_factor``).
        names: class names (detection, segmentation) or answers (VQA).

    Raises:
        ConfigError: the target names no prediction; the message lists the available targets.
    """
    parsed = parse_target(spec)
    h0, w0 = meta['ori_size']
    sx, sy = meta.get('scale_factor', (1.0, 1.0))
    if task == 'detection':
        boxes, scores, labels = pred['boxes'], pred['scores'], pred['labels']
        avail = [f'box:{k} ({names[int(labels[k])]} {scores[k]:.2f})' for k in range(len(boxes))]
        k = None
        if parsed is None:
            k = 0 if len(boxes) else None
        elif parsed[0] == 'box' and parsed[1].isdigit() and int(parsed[1]) < len(boxes):
            k = int(parsed[1])
        elif parsed[0] == 'class':
            hits = [i for i in range(len(boxes)) if names[int(labels[i])] == parsed[1]]
            k = hits[0] if hits else None
        elif parsed[0] == 'pixel':
            y, x = _pixel(parsed[1], (h0, w0), spec)
            hits = [i for i in range(len(boxes)) if boxes[i][0] <= x <= boxes[i][2] and boxes[i][1] <= y <= boxes[i][3]]
            k = hits[0] if hits else None
        if k is None:
            what = 'the model detects nothing in this image' if not len(boxes) else 'it names no detection'
            raise ConfigError(f'--target {spec or "box:0"!r}: {what}; available targets: {_available(avail)}.')
        box = [float(v) for v in boxes[k]]
        label = int(labels[k])
        region = np.zeros((h0, w0), bool)
        region[max(0, int(box[1])):int(np.ceil(box[3])), max(0, int(box[0])):int(np.ceil(box[2]))] = True
        centre = (min(h0 - 1, int((box[1] + box[3]) / 2)), min(w0 - 1, int((box[0] + box[2]) / 2)))
        return Target(f'box:{k}', f'box {k}: {names[label]} {float(scores[k]):.2f}',
                      lambda scorer, prob=False: BoxScore(scorer, _to_input(box, meta), label, prob),
                      centre, box=box, region=region)
    if task == 'segmentation':
        seg = pred['sem_seg']
        present = [int(c) for c in np.unique(seg) if 0 <= int(c) < len(names)]
        avail = [f'class:{names[c]}' for c in present] + ['pixel:Y,X']
        if parsed is not None and parsed[0] == 'pixel':
            y, x = _pixel(parsed[1], (h0, w0), spec)
            label = int(seg[y, x])
            iy, ix = min(int(y * sy), int(meta['img_size'][0]) - 1), min(int(x * sx), int(meta['img_size'][1]) - 1)
            region = np.zeros((h0, w0), bool)
            region[y, x] = True
            return Target(f'pixel:{y},{x}', f'pixel ({y}, {x}): {names[label]}',
                          lambda scorer, prob=False: PixelScore(label, iy, ix, scorer.input_size, prob),
                          (y, x), region=region)
        if parsed is None:
            counts = {c: int((seg == c).sum()) for c in present if c != 0}
            label = max(counts, key=counts.get) if counts else (present[0] if present else 0)
        elif parsed[0] == 'class' and parsed[1] in names and names.index(parsed[1]) in present:
            label = names.index(parsed[1])
        else:
            close = closest_names(parsed[1], [names[c] for c in present]) if parsed[0] == 'class' else []
            hint = f' (closest: {close[0]!r})' if close else ''
            raise ConfigError(f'--target {spec!r} names no predicted class{hint}; available targets: '
                              f'{_available(avail)}.')
        region = seg == label
        return Target(f'class:{names[label]}', f'class {names[label]} ({int(region.sum())} px)',
                      lambda scorer, prob=False: MaskScore(label, _mask_to_input(region, meta, scorer.input_size),
                                                           prob),
                      _centre_of(region) if region.any() else (h0 // 2, w0 // 2), region=region)
    ids = [int(i) for i in pred['answer_ids']]
    avail = [f'answer:{names[i]}' for i in ids]
    if parsed is None:
        index = ids[0]
    elif parsed[0] == 'answer' and parsed[1] in names:
        index = list(names).index(parsed[1])
    else:
        close = closest_names(parsed[1], list(names)) if parsed[0] == 'answer' else []
        hint = f' (closest answers: {", ".join(close[:3])})' if close else ''
        raise ConfigError(f'--target {spec!r} names no answer of the model{hint}; available targets (top '
                          f'answers): {_available(avail)}.')
    att = pred.get('attention_map')
    centre = np.unravel_index(int(np.argmax(att)), att.shape) if att is not None else (h0 // 2, w0 // 2)
    return Target(f'answer:{names[index]}', f'answer {names[index]!r}',
                  lambda scorer, prob=False: AnswerScore(index, prob), (int(centre[0]), int(centre[1])))


def _pixel(value: str, size: tuple[int, int], spec: str) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in value.split(','))
    except ValueError:
        raise ConfigError(f'--target {spec!r}: pixel:Y,X takes two integers, e.g. pixel:40,60.') from None
    if not (0 <= y < size[0] and 0 <= x < size[1]):
        raise ConfigError(f'--target {spec!r}: pixel ({y}, {x}) is outside the {size[1]}x{size[0]} image.')
    return y, x


def _mask_to_input(region: np.ndarray, meta: dict, input_size: Sequence[int]) -> Tensor:
    """An original-image mask placed on the padded input (nearest resize to ``img_size``, zero padding)."""
    import torch.nn.functional as F
    h, w = (int(v) for v in meta['img_size'])
    m = torch.from_numpy(region.astype(np.float32))[None, None]
    m = F.interpolate(m, size=(h, w), mode='nearest')[0, 0] > 0.5
    out = torch.zeros(tuple(int(v) for v in input_size), dtype=torch.bool)
    out[:h, :w] = m
    return out
