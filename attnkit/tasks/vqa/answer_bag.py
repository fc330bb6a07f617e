"""The answer-bag auxiliary loss: image-level multiple-instance learning from the training QA pairs (no masks).

For each training image, the consensus answers (``multiple_choice_answer``, normalised; the majority of the ten
human answers when absent) of ALL its annotated questions form its *answer bag*: an image-level multi-label
tag set ("this image holds a square, a red thing, ..."). A 1x1 convolution on the grid the fusion head
consumes predicts, at every cell, one logit per answer of the selected answer types (``'other'`` by default:
colours and shape names in the demo; objects, colours, ... in VQA v2); the cells are pooled to one image logit
per answer and a binary cross-entropy against the bag (restricted to those answers) is added to the VQA loss::

    z[m, k]  = pool over cells c of  conv1x1(grid[m])[k, c]          (M, K)
    y[m, k]  = 1 if answer k is in the bag of image m, else 0        (M, K)
    loss_bag = sum over the images m with a non-empty bag of  sum_k BCE(z[m, k], y[m, k])  / #those images
               (``loss_reduction='mean'``: also / K, as the VQA loss)

Pooling (``pool``): ``'mean'`` (default: global average pooling, as CAM), ``'max'`` or ``'lse'`` =
``(1/r) log(mean_c exp(r x_c))`` (log-sum-exp with temperature ``r``: ``max`` as r -> inf, ``mean`` as r -> 0).
Measured on the demo (docs/bench/vqa.md, 2026-12-02): mean pooling teaches the backbone shapes, lse (r=5) does
not within the same steps -- early on, lse sends the gradient to the few cells that happen to score highest, mean
to every cell of the image.

Where the pieces live: the dataset (:class:`~attnkit.tasks.vqa.dataset.VQAv2Dataset`) computes every image's bag
over *all* its questions (so a batch holding some of an image's questions still sees the complete bag) and puts
``answer_bag`` (M, A) bool into each batch, one row per distinct image of ``images``; the answer types of the
vocabulary are ``metainfo['answer_types']`` (saved with checkpoints); :class:`AnswerBagLoss` is the model side.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, DataError
from ...heads.dist import global_normalizer
from ...registry import closest_names
from .answers import majority_answer, normalize_answer

__all__ = ['AUX_LOSS_TYPES', 'BAG_POOLS', 'consensus_answer', 'vocab_answer_types', 'image_answer_bags',
           'pool_cells', 'AnswerBagLoss', 'build_aux_loss']

AUX_LOSS_TYPES = ('answer_bag',)
BAG_POOLS = ('lse', 'max', 'mean')
_KEYS = ('type', 'weight', 'pool', 'r', 'answer_types')


def consensus_answer(ann: Mapping[str, Any]) -> str:
    """The normalised ``multiple_choice_answer`` of an annotation (the majority of its ``answers`` when absent):
    the same answer the vocabulary is built from (:func:`~attnkit.tasks.vqa.answers.build_answer_vocab`)."""
    mc = ann.get('multiple_choice_answer')
    return normalize_answer(mc) if isinstance(mc, str) else majority_answer([a['answer'] for a in ann['answers']])


def vocab_answer_types(annotations: Iterable[Mapping[str, Any]], answers: Sequence[str]) -> list[str]:
    """The answer type of every vocabulary answer: the most common ``answer_type`` (``'other'`` when a record has
    none) of the questions whose consensus answer it is; ties go to the type seen first. (A,) list of str."""
    counts: dict[str, Counter] = {a: Counter() for a in answers}
    for ann in annotations:
        c = counts.get(consensus_answer(ann))
        if c is not None:
            c[ann.get('answer_type') or 'other'] += 1
    return [c.most_common(1)[0][0] if c else 'other' for c in counts.values()]


def image_answer_bags(pairs: Iterable[tuple[int, Mapping[str, Any]]], answer_to_index: Mapping[str, int],
                      transform: Callable[[str], str] | None = None) -> dict[int, tuple[int, ...]]:
    """Image id -> sorted vocabulary indices of the consensus answers of all its questions.

    Args:
        pairs: ``(image_id, annotation record)`` per annotated question.
        answer_to_index: vocabulary answer -> index; answers outside the vocabulary are left out.
        transform: applied to each consensus answer first (the flip's left/right swap for mirrored images).
    """
    bags: dict[int, set[int]] = {}
    for image_id, ann in pairs:
        answer = consensus_answer(ann)
        if transform is not None:
            answer = normalize_answer(transform(answer))
        bag = bags.setdefault(int(image_id), set())
        idx = answer_to_index.get(answer)
        if idx is not None:
            bag.add(idx)
    return {k: tuple(sorted(v)) for k, v in bags.items()}


def pool_cells(x: torch.Tensor, pool: str, r: float = 5.0) -> torch.Tensor:
    """Pool per-cell logits ``x`` (M, K, h, w) over the cells -> (M, K): ``'max'``, ``'mean'``, or ``'lse'``
    ``(1/r) log(mean exp(r x))`` (between mean and max; -> max as r -> inf, -> mean as r -> 0)."""
    flat = x.flatten(2)
    if pool == 'max':
        return flat.amax(2)
    if pool == 'mean':
        return flat.mean(2)
    if pool == 'lse':
        return (torch.logsumexp(r * flat, dim=2) - math.log(flat.shape[2])) / r
    raise ConfigError(f"answer_bag pool must be one of {', '.join(BAG_POOLS)}, got {pool!r}.")


class AnswerBagLoss(nn.Module):
    """A 1x1 convolution from the grid to per-cell logits of K answers, pooled to image logits, BCE vs the bag.

    Args:
        in_channels: C of the grid (M, C, h, w).
        answer_ids: the K vocabulary indices (of the selected answer types) predicted and scored.
        pool, r: cell pooling (:func:`pool_cells`).
        reduction: ``'num_answers'`` (sum over the K answers, mean over images) or ``'mean'`` (also / K), as the
            model's ``loss_reduction``.

    ``answer_ids`` is a non-persistent buffer (it comes from ``metainfo``), so the state dict holds only
    ``conv.weight`` (K, C, 1, 1) and ``conv.bias`` (K,).
    """

    def __init__(self, in_channels: int, answer_ids: Sequence[int], pool: str = 'mean', r: float = 5.0,
                 reduction: str = 'num_answers') -> None:
        super().__init__()
        self.pool, self.r, self.reduction = pool, float(r), reduction
        self.register_buffer('answer_ids', torch.tensor(list(answer_ids), dtype=torch.long), persistent=False)
        self.conv = nn.Conv2d(in_channels, len(answer_ids), 1)

    def cell_logits(self, grid: torch.Tensor) -> torch.Tensor:
        """(M, C, h, w) grid -> (M, K, h, w) float32 per-cell answer logits."""
        return self.conv(grid).float()

    def image_logits(self, grid: torch.Tensor) -> torch.Tensor:
        """(M, C, h, w) grid -> (M, K) float32 pooled image-level answer logits."""
        return pool_cells(self.cell_logits(grid), self.pool, self.r)

    def forward(self, grid: torch.Tensor, bags: torch.Tensor) -> torch.Tensor:
        """The unweighted loss: ``grid`` (M, C, h, w), ``bags`` (M, A) 0/1 over the whole answer vocabulary
        (``batch['answer_bag']``, aligned with the grid's images) -> () float32.

        Images with an empty bag (no question of the selected types) carry no evidence and are left out; the
        divisor is the number of the others over all processes (a DDP-averaged sum equals the global mean).
        """
        if bags.dim() != 2 or bags.shape[0] != grid.shape[0]:
            raise DataError(f'answer_bag: the batch has {tuple(bags.shape)} answer bags for {grid.shape[0]} images; '
                            "expected (M, A), one row per image of batch['images'] (the VQA dataset's collate).")
        target = bags[:, self.answer_ids].float()  # (M, K)
        z = self.image_logits(grid)
        keep = (target.sum(1) > 0).float()  # (M,)
        per_image = F.binary_cross_entropy_with_logits(z, target, reduction='none').sum(1)
        loss = (per_image * keep).sum() / global_normalizer(keep.sum(), 1.0)
        if self.reduction == 'mean':
            loss = loss / target.shape[1]
        return loss


def build_aux_loss(cfg: Mapping[str, Any] | None, in_channels: int | None, metainfo: Mapping[str, Any],
                   reduction: str = 'num_answers') -> tuple[AnswerBagLoss, float] | None:
    """``(loss module, weight)`` of a VQAModel ``aux_loss`` config, or None for ``cfg=None``.

    ``cfg``: ``dict(type='answer_bag', weight=1.0, pool='mean', r=5.0, answer_types=('other',))``; ``in_channels``
    the grid's C (None: a question-only model, an error); ``metainfo`` needs ``answers`` and ``answer_types``.
    Raises :class:`ConfigError` naming the valid choices for an unknown type, key or pool.
    """
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"VQAModel aux_loss must be None or dict(type='answer_bag', ...), got {cfg!r}.")
    cfg = dict(cfg)
    kind = cfg.get('type')
    if kind not in AUX_LOSS_TYPES:
        close = closest_names(str(kind), AUX_LOSS_TYPES)
        raise ConfigError(f'VQAModel aux_loss type {kind!r} is unknown' + (f"; did you mean {close[0]!r}?" if close
                          else '.') + f" Valid types: {', '.join(AUX_LOSS_TYPES)}.")
    for key in cfg:
        if key not in _KEYS:
            close = closest_names(str(key), _KEYS)
            raise ConfigError(f'VQAModel aux_loss has no option {key!r}' + (f"; did you mean {close[0]!r}?" if close
                              else '.') + f" Options: {', '.join(_KEYS)}.")
    pool, r, weight = cfg.get('pool', 'mean'), cfg.get('r', 5.0), cfg.get('weight', 1.0)
    if pool not in BAG_POOLS:
        close = closest_names(str(pool), BAG_POOLS)
        raise ConfigError(f'VQAModel aux_loss pool {pool!r} is unknown' + (f"; did you mean {close[0]!r}?" if close
                          else '.') + f" Valid pools: {', '.join(BAG_POOLS)}.")
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0:
        raise ConfigError(f'VQAModel aux_loss r (the log-sum-exp temperature) must be a number > 0, got {r!r}.')
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ConfigError(f'VQAModel aux_loss weight must be a number >= 0, got {weight!r}.')
    wanted = cfg.get('answer_types', ('other',))
    if isinstance(wanted, str) or not wanted or not all(isinstance(t, str) for t in wanted):
        raise ConfigError(f"VQAModel aux_loss answer_types must be a non-empty list of names (e.g. ('other',)), "
                          f'got {wanted!r}.')
    if in_channels is None:
        raise ConfigError('VQAModel aux_loss (answer_bag) needs the image grid: not with use_image=False.')
    types = metainfo.get('answer_types')
    if not types or len(types) != len(metainfo['answers']):
        raise ConfigError("VQAModel aux_loss (answer_bag) needs metainfo['answer_types'] (one per answer), which "
                          'VQAv2Dataset builds from the training annotations; this metainfo (an older checkpoint?) '
                          'has none: train from the annotations, or set aux_loss=None.')
    ids = [i for i, t in enumerate(types) if t in set(wanted)]
    if not ids:
        raise ConfigError(f'VQAModel aux_loss answer_types {list(wanted)} match no answer of the vocabulary; its '
                          f'answer types: {sorted(set(types))}.')
    return AnswerBagLoss(in_channels, ids, pool=pool, r=float(r), reduction=reduction), float(weight)
