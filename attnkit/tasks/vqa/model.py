"""The VQA task model: image backbone (+ optional neck level) -> grid, question encoder -> tokens, fusion head.

Loss: binary cross-entropy with logits against the soft targets (``min(1, 0.3 x #annotators)``), averaged
over batch and answers and, with ``loss_reduction='num_answers'`` (default, as in Teney et al. 2018 and
bottom-up-attention-vqa), multiplied by the number of answers A — i.e. summed over answers, averaged over
questions. ``loss_reduction='mean'`` keeps the plain mean.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...builder import build_backbone, build_head, build_neck
from ...data.normalize import build_normalizer, image_sizes
from ...errors import ConfigError, DataError
from ...heads.dist import global_normalizer
from ...registry import MODELS, NECKS, get_registered
from .text import build_question_encoder

__all__ = ['VQAModel']


@MODELS.register_module()
class VQAModel(nn.Module):
    """Visual question answering model.

    Args:
        question_encoder: ``dict(type='gru' | 'transformer' | 'hf', ...)`` (see ``text.py``).
        head: fusion head config (``dict(type='mcan', ...)`` or ``dict(type='san', ...)``); ``num_answers``,
            ``img_channels`` and ``q_channels`` are filled in.
        backbone: image backbone config, e.g. ``dict(type='ResNet', depth=50, out_indices=(3,))``; the last
            returned map is the grid (unless a neck is given). Freeze it with ``frozen_stages=4`` or give it a
            learning-rate multiplier with ``optim.lr_mult = {'backbone': 0.1}``.
        neck: optional neck (e.g. FPN); its output ``neck_level`` is the grid.
        neck_level: which neck output is the grid.
        grid_fusion: ``'last'`` (default): the grid is the last backbone output; ``'concat'``: every backbone
            output (``out_indices``) is average-pooled to the last one's size and concatenated along channels
            (a hypercolumn: e.g. layer1's colour/edge detail next to layer3's shape features). Without a neck.
        use_image: ``False`` builds the question-only baseline (no backbone at all).
        loss_reduction: ``'num_answers'`` (BCE mean x A, the literature's scaling) or ``'mean'``.
        loss_weight: multiplies the loss.
        topk: answers kept per prediction.
        metainfo: the dataset's/checkpoint's ``answers``, ``tokenizer`` (and ``question_vocab``).
        normalize: ``dict(mean=(r, g, b), std=(r, g, b))`` on a 0..255 scale (default ImageNet's): the batch's
            uint8 ``images`` are normalised on the model's device (:mod:`attnkit.data.normalize`).

    ``forward(batch)``: training mode -> ``{'loss', 'loss_cls'}``; eval mode -> one dict per question:
    ``question_id``, ``answer`` (str), ``answer_ids`` (k,) long, ``scores`` (k,) sigmoid scores, ``attention``
    (h, w) question-guided weights over the grid (``None`` without image).
    """

    def __init__(self, question_encoder: Mapping[str, Any], head: Mapping[str, Any],
                 backbone: Mapping[str, Any] | None = None, neck: Mapping[str, Any] | None = None,
                 neck_level: int = -1, grid_fusion: str = 'last', use_image: bool = True,
                 loss_reduction: str = 'num_answers',
                 loss_weight: float = 1.0, topk: int = 5, metainfo: Mapping[str, Any] | None = None,
                 normalize: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.normalizer = build_normalizer(normalize)
        if not metainfo or not metainfo.get('answers'):
            raise ConfigError("VQAModel needs metainfo with the answer vocabulary ('answers'), from the training "
                              'dataset or the checkpoint.')
        if loss_reduction not in ('num_answers', 'mean'):
            raise ConfigError(f"VQAModel loss_reduction must be 'num_answers' or 'mean', got {loss_reduction!r}.")
        if grid_fusion not in ('last', 'concat') or (grid_fusion == 'concat' and neck is not None):
            raise ConfigError(f"VQAModel grid_fusion must be 'last' or 'concat' (the latter without a neck), got "
                              f'{grid_fusion!r}' + (' with a neck.' if neck is not None else '.'))
        self.grid_fusion = grid_fusion
        self.metainfo = dict(metainfo)
        self.answers = list(metainfo['answers'])
        self.use_image = use_image
        self.neck_level = neck_level
        self.loss_reduction = loss_reduction
        self.loss_weight = loss_weight
        self.topk = min(topk, len(self.answers))
        self.question_encoder = build_question_encoder(question_encoder, self.metainfo)
        img_channels = None
        self.backbone = self.neck = None
        if use_image:
            if backbone is None:
                raise ConfigError('VQAModel with use_image=True needs a backbone config.')
            self.backbone = build_backbone(backbone)
            img_channels = self.backbone.out_channels[-1]
            if grid_fusion == 'concat':
                img_channels = sum(self.backbone.out_channels)
            if neck is not None:
                extra = {}  # strides for necks that take them (SimpleFeaturePyramid), as Segmentor passes them
                strides = getattr(self.backbone, 'strides', None)
                neck_type = neck.get('type')
                neck_cls = get_registered(NECKS, neck_type) if isinstance(neck_type, str) else neck_type
                if strides is not None and 'in_strides' not in neck \
                        and 'in_strides' in inspect.signature(neck_cls).parameters:
                    extra['in_strides'] = tuple(strides)
                self.neck = build_neck(neck, in_channels=list(self.backbone.out_channels), **extra)
                out = self.neck.out_channels
                img_channels = out[neck_level] if isinstance(out, (tuple, list)) else int(out)
        self.head = build_head(head, num_answers=len(self.answers), img_channels=img_channels,
                               q_channels=self.question_encoder.out_channels)

    def image_grid(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised float images -> (N, C, h, w) grid features."""
        feats = self.backbone(images)
        if self.neck is not None:
            feats = self.neck(feats)
            return feats[self.neck_level]
        if self.grid_fusion == 'concat':
            size = feats[-1].shape[-2:]
            return torch.cat([F.adaptive_avg_pool2d(f, size) for f in feats], dim=1)
        return feats[-1]

    def forward_logits(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor | None]:
        """Head outputs ``logits`` (N, A) float32 and ``attention`` (N, h, w) or None.

        ``batch['images']`` (M, 3, H, W) uint8 (M distinct images, ``image_index`` (N,) maps questions to them)
        are normalised here, on the model's device.
        """
        for key in ('input_ids', 'attention_mask'):
            if key not in batch:
                raise DataError(f"VQAModel: the batch has no {key!r}; use the VQA dataset's collate (it tokenises).")
        mask = batch['attention_mask'].bool()
        q = self.question_encoder(batch['input_ids'], mask)
        grid = index = None
        if self.use_image:
            images = self.normalizer(batch['images'], image_sizes(batch))
            grid = self.image_grid(images)  # (M, C, h, w): one per distinct image
            index = batch.get('image_index')  # (N,): the head expands per image -> per question
        out = self.head(grid, q, mask, image_index=index)
        return {'logits': out['logits'].float(), 'attention': out['attention']}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """BCE-with-logits on soft targets, scaled as ``loss_reduction`` says.

        The sum over the batch is divided by the number of questions of the *global* batch over the processes
        (:func:`~attnkit.heads.dist.global_normalizer`; times A for ``'mean'``), so W processes with b questions
        each train exactly like one process with W·b questions even when the processes hold different numbers
        of questions. Without a process group: the plain mean (× A for ``'num_answers'``).

        Args:
            logits: (N, A) float32; targets: (N, A) soft scores in [0, 1].

        Returns:
            () float32 loss.
        """
        total = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction='sum')
        questions = torch.full((), logits.shape[0], dtype=torch.float32, device=logits.device)  # no host sync
        loss = total / global_normalizer(questions, 1.0)
        if self.loss_reduction == 'mean':
            loss = loss / logits.shape[1]
        return loss * self.loss_weight

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        out = self.forward_logits(batch)
        logits = out['logits']
        if self.training:
            if 'answer_scores' not in batch:
                raise DataError('VQAModel: training needs answer_scores (an annotated split).')
            loss = self.loss(logits, batch['answer_scores'])
            return {'loss': loss, 'loss_cls': loss.detach()}
        return self.predict(logits, out['attention'], batch.get('question_ids'))

    @torch.no_grad()
    def predict(self, logits: torch.Tensor, attention: torch.Tensor | None,
                question_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """Top-k answers per question from logits (N, A) and attention (N, h, w)."""
        scores, ids = torch.sigmoid(logits.float()).topk(self.topk, dim=1)
        scores, ids = scores.cpu(), ids.cpu()
        att = None if attention is None else attention.detach().float().cpu()
        preds = []
        for i in range(logits.shape[0]):
            preds.append({'question_id': None if question_ids is None else int(question_ids[i]),
                          'answer': self.answers[int(ids[i, 0])], 'answer_ids': ids[i], 'scores': scores[i],
                          'attention': None if att is None else att[i]})
        return preds
