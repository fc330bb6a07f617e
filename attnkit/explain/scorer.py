"""A differentiable view of a task model: float images in, one task output tensor out.

``pytorch_grad_cam`` (and the deletion/insertion curves) need ``model(images) -> output`` with ``target(output[i])``
giving a scalar. attnkit models take collated batches and return post-processed predictions, so
:class:`TaskScorer` calls their parts directly:

- detection: per-point class scores (N, P, C) = sqrt(sigmoid(cls) * sigmoid(centerness)) for FCOS (sigmoid(cls)
  for RetinaNet), with ``scorer.points`` (P, 2) the xy centres of the points in input pixels;
- segmentation: logits (N, K, H, W) at the input size (``Segmentor.encode_decode``);
- VQA: answer logits (N, A) for one question (the scorer holds its tokens).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ['TaskScorer', 'TASKS', 'task_of']

TASKS = ('detection', 'segmentation', 'vqa')
_TASK_OF_CLASS = {'Detector': 'detection', 'Segmentor': 'segmentation', 'VQAModel': 'vqa'}


def task_of(model: nn.Module, cfg: Mapping[str, Any] | None = None) -> str:
    """'detection' | 'segmentation' | 'vqa' from the model's class (else the config's ``task``)."""
    task = _TASK_OF_CLASS.get(type(model).__name__) or (cfg or {}).get('task')
    if task not in TASKS:
        raise ConfigError(f'attnkit explain works on Detector, Segmentor and VQAModel models; got '
                          f'{type(model).__name__} (config task {task!r}).')
    return task


class TaskScorer(nn.Module):
    """``forward(images (N, 3, H, W) float on the 0..255 scale) -> task output`` (see the module docstring).

    Args:
        model: a built attnkit Detector, Segmentor or VQAModel (eval mode).
        task: 'detection', 'segmentation' or 'vqa'.
        input_size: (H, W) of the (padded) input images.
        img_size: the unpadded (h, w) inside the padded input (the padding is zeroed after normalising, as the
            model does); None: no padding.
        tokens: VQA only: ``input_ids`` (1, L) and ``attention_mask`` (1, L) of the question.
    """

    def __init__(self, model: nn.Module, task: str, input_size: Sequence[int], img_size: Sequence[int] | None = None,
                 tokens: Mapping[str, Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_size = tuple(int(v) for v in input_size)  # the padded (H, W) the images have
        self.task = task
        self.img_size = tuple(int(v) for v in img_size) if img_size is not None else None
        self.tokens = dict(tokens or {})
        self.points: Tensor | None = None  # detection: (P, 2) xy of the last forward's points

    def normalize(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) 0..255 float -> normalised float32 with the padding zeroed (as ``ImageNormalizer``)."""
        norm = self.model.normalizer
        x = (images.float() - norm.mean.view(1, 3, 1, 1)) / norm.std.view(1, 3, 1, 1)
        if self.img_size is not None:
            h, w = self.img_size
            keep = torch.zeros_like(x[:1, :1])
            keep[..., :h, :w] = 1
            x = x * keep
        return x

    def forward(self, images: Tensor) -> Tensor:
        x = self.normalize(images)
        if self.task == 'detection':
            return self._detection(x)
        if self.task == 'segmentation':
            return self.model.encode_decode(x)
        return self._vqa(x)

    def _detection(self, x: Tensor) -> Tensor:
        from ..heads.detection.fcos import level_points
        from ..heads.detection.utils import flatten_level
        head = self.model.head
        out = head(self.model.extract_feats(x))
        cls_out = out[0]
        sizes = [tuple(c.shape[-2:]) for c in cls_out]
        strides = getattr(head, 'strides', None)
        if strides is None:  # RetinaNet: the anchor generator knows the strides
            strides = getattr(getattr(head, 'anchor_generator', None), 'strides', None)
        if strides is None:
            raise ConfigError(f'attnkit explain: cannot find the strides of detection head {type(head).__name__}.')
        pts = level_points(sizes, [int(s if not isinstance(s, (tuple, list)) else s[0]) for s in strides], x.device)
        scores, points = [], []
        for lvl, c in enumerate(cls_out):
            s = flatten_level(c, head.num_classes).float().sigmoid()  # (N, H*W*A, C)
            if len(out) == 3:  # FCOS: centerness
                s = (s * flatten_level(out[2][lvl], 1).float().sigmoid()).sqrt()
            per_cell = s.shape[1] // max(1, pts[lvl].shape[0])
            scores.append(s)
            points.append(pts[lvl].repeat_interleave(per_cell, dim=0))
        self.points = torch.cat(points)
        return torch.cat(scores, dim=1)

    def _vqa(self, x: Tensor) -> Tensor:
        model = self.model
        n = x.shape[0]
        ids = self.tokens['input_ids'].expand(n, -1)
        mask = self.tokens['attention_mask'].bool().expand(n, -1)
        q = model.question_encoder(ids, mask)
        grid = model.image_grid(x) if model.use_image else None
        return model.head(grid, q, mask, image_index=None)['logits'].float()
