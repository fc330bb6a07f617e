"""The VQA task model: image backbone (+ optional neck level) -> grid, question encoder -> tokens, fusion head.

Loss: binary cross-entropy with logits against the soft targets (``min(1, 0.3 x #annotators)``), averaged
over batch and answers and, with ``loss_reduction='num_answers'`` (default, as in Teney et al. 2018 and
bottom-up-attention-vqa), multiplied by the number of answers A — i.e. summed over answers, averaged over
questions. ``loss_reduction='mean'`` keeps the plain mean.

Optional auxiliary loss (``aux_loss=dict(type='answer_bag', ...)``, off by default): a 1x1 convolution on the grid
predicts, per cell, the answers of the image's questions, pooled over the cells and scored against the image's
complete answer bag (:mod:`attnkit.tasks.vqa.answer_bag`); it needs no masks or boxes.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from ...builder import build_head
from ...data.normalize import build_normalizer, image_sizes
from ...errors import ConfigError, DataError
from ...heads.dist import global_normalizer
from ...registry import MODELS
from ..encoder import Encoder, FeatureSpec
from .answer_bag import AnswerBagLoss, build_aux_loss
from .text import build_question_encoder

__all__ = ['VQAModel']


@MODELS.register_module()
class VQAModel(Encoder):
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
        aux_loss: ``None`` (default) or ``dict(type='answer_bag', weight=1.0, pool='lse', r=5.0,
            answer_types=('other',))``: adds ``weight`` x the answer-bag loss on the grid in training
            (:mod:`~attnkit.tasks.vqa.answer_bag`; parameters ``answer_bag.conv.*``; needs
            ``metainfo['answer_types']`` and the batches' ``answer_bag``). Not computed in eval mode.
        topk: answers kept per prediction.
        metainfo: the dataset's/checkpoint's ``answers``, ``tokenizer`` (and ``question_vocab``).
        normalize: ``dict(mean=(r, g, b), std=(r, g, b))`` on a 0..255 scale (default ImageNet's): the batch's
            uint8 ``images`` are normalised on the model's device (:mod:`attnkit.data.normalize`).
        in_indices, feature_spec: see :class:`~attnkit.tasks.encoder.Encoder` (which backbone outputs are used;
            ``backbone=None`` + ``feature_spec`` for a branch on a shared backbone).

    Wiring: the :class:`~attnkit.tasks.encoder.Encoder` contract builds backbone and neck; the grid is output
    ``neck_level`` of the neck, or the last (``'concat'``: all, pooled) selected backbone map.

    ``forward(batch)``: training mode -> ``{'loss', 'loss_cls'}`` (+ ``'loss_bag'`` with ``aux_loss``); eval mode
    -> one dict per question: ``question_id``, ``answer`` (str), ``answer_ids`` (k,) long, ``scores`` (k,) sigmoid
    scores, ``attention`` (h, w) question-guided weights over the grid (``None`` without image).
    """

    # the answer-bag conv (aux_loss) is used only in training: its weights are skipped when a checkpoint trained
    # with it is loaded into a model without it (attnkit.engine.checkpoint.reconcile_training_only)
    training_only_prefixes = ('answer_bag.',)

    def __init__(self, question_encoder: Mapping[str, Any], head: Mapping[str, Any],
                 backbone: Mapping[str, Any] | None = None, neck: Mapping[str, Any] | None = None,
                 neck_level: int = -1, grid_fusion: str = 'last', use_image: bool = True,
                 loss_reduction: str = 'num_answers',
                 loss_weight: float = 1.0, topk: int = 5, metainfo: Mapping[str, Any] | None = None,
                 normalize: Mapping[str, Any] | None = None, in_indices: Sequence[int] | None = None,
                 feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
                 aux_loss: Mapping[str, Any] | None = None) -> None:
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
        if use_image:
            if backbone is None and feature_spec is None:
                raise ConfigError('VQAModel with use_image=True needs a backbone config.')
            self.init_encoder(backbone, neck, in_indices, feature_spec)
            if self.neck is not None:
                img_channels = self.out_channels[neck_level]
            elif grid_fusion == 'concat':
                img_channels = sum(self.backbone_channels)
            else:
                img_channels = self.backbone_channels[-1]
        self.head = build_head(head, num_answers=len(self.answers), img_channels=img_channels,
                               q_channels=self.question_encoder.out_channels)
        self.answer_bag: AnswerBagLoss | None = None  # a plain attribute when off: the state dict is unchanged
        self.aux_weight = 0.0
        aux = build_aux_loss(aux_loss, img_channels, self.metainfo, loss_reduction)
        if aux is not None:
            self.answer_bag, self.aux_weight = aux

    def image_grid(self, images: torch.Tensor | None = None,
                   feats: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """(M, 3, H, W) normalised float images, or all their backbone outputs ``feats`` -> (M, C, h, w) grid."""
        if self.neck is not None:
            return self.encode(images, feats)[self.neck_level]
        feats = self.backbone_features(images, feats)
        if self.grid_fusion == 'concat':
            size = feats[-1].shape[-2:]
            return torch.cat([F.adaptive_avg_pool2d(f, size) for f in feats], dim=1)
        return feats[-1]

    def forward_logits(self, batch: Mapping[str, Any],
                       feats: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor | None]:
        """Head outputs ``logits`` (N, A) float32 and ``attention`` (N, h, w) or None.

        ``batch['images']`` (M, 3, H, W) uint8 (M distinct images, ``image_index`` (N,) maps questions to them)
        are normalised here, on the model's device. ``feats``: the backbone outputs of those M images, already
        computed (a multi-task model's shared backbone); then the images are not looked at.
        """
        logits, attention, _ = self._run(batch, feats)
        return {'logits': logits, 'attention': attention}

    def _run(self, batch: Mapping[str, Any], feats: Sequence[torch.Tensor] | None
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(logits (N, A) float32, attention (N, h, w) or None, grid (M, C, h, w) or None): see forward_logits."""
        for key in ('input_ids', 'attention_mask'):
            if key not in batch:
                raise DataError(f"VQAModel: the batch has no {key!r}; use the VQA dataset's collate (it tokenises).")
        mask = batch['attention_mask'].bool()
        q = self.question_encoder(batch['input_ids'], mask)
        grid = index = None
        if self.use_image:
            if feats is None:
                grid = self.image_grid(self.normalizer(batch['images'], image_sizes(batch)))
            else:
                grid = self.image_grid(feats=feats)  # (M, C, h, w): one per distinct image
            index = batch.get('image_index')  # (N,): the head expands per image -> per question
        out = self.head(grid, q, mask, image_index=index)
        return out['logits'].float(), out['attention'], grid

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

    def forward(self, batch: Mapping[str, Any], feats: Sequence[torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        """Training: ``{'loss', 'loss_cls'}`` (with ``aux_loss``: ``loss = loss_cls + weight x loss_bag`` and
        ``'loss_bag'``); eval: one prediction dict per question (class docstring).

        ``feats``: the backbone outputs of ``batch['images']`` when already computed (a shared backbone).
        """
        logits, attention, grid = self._run(batch, feats)
        if self.training:
            if 'answer_scores' not in batch:
                raise DataError('VQAModel: training needs answer_scores (an annotated split).')
            loss = self.loss(logits, batch['answer_scores'])
            if self.answer_bag is None:
                return {'loss': loss, 'loss_cls': loss.detach()}
            if 'answer_bag' not in batch:
                raise DataError("VQAModel with aux_loss='answer_bag': the batch has no answer_bag (M, A); use the "
                                "VQA dataset's collate on an annotated split.")
            bag = self.answer_bag(grid, batch['answer_bag'])
            return {'loss': loss + self.aux_weight * bag, 'loss_cls': loss.detach(), 'loss_bag': bag.detach()}
        return self.predict(logits, attention, batch.get('question_ids'))

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
