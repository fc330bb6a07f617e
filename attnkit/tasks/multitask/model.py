"""``MultiTaskModel``: one shared backbone, optional shared necks, a dict of task branches (own neck and head).

::

    model = dict(type='MultiTaskModel',
                 backbone=dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3)),
                 branches=dict(
                     det=dict(task='detection', in_indices=(1, 2, 3), neck=dict(type='FPN', ...), head=...),
                     seg=dict(task='segmentation', decode_head=..., auxiliary_head=...),
                     vqa=dict(task='vqa', in_indices=(0, 2), grid_fusion='concat', question_encoder=..., head=...)),
                 loss_weights=dict(det=1.0, seg=1.0, vqa=0.5),   # fixed multipliers (default 1)
                 loss_weighting='fixed')                          # or 'uncertainty' (weighting.py)

A neck may be shared too: ``necks=dict(fpn=dict(type='FPN', in_indices=(1, 2, 3), out_channels=64, num_outs=3))``
builds it once over the shared backbone outputs ``in_indices``, and a branch with ``inputs='fpn'`` (and no neck or
``in_indices`` of its own) is its single-task model with that neck — e.g. detection and segmentation on ONE FPN,
run once per image by ``predict_all`` (:mod:`.shared_neck`; ``inputs='backbone'``, the default, is a branch's own
neck). State-dict keys ``necks.<name>.neck.*``; an exported branch gets the shared neck as its own ``neck.*``.

Each branch is its single-task model (``Detector``, ``Segmentor``, ``VQAModel``, ``ImageClassifier``) built
without a backbone (:mod:`.branches`): it takes the shared backbone's outputs through its ``forward(batch,
feats=...)`` and wires its neck by the :class:`~attnkit.tasks.encoder.Encoder` contract, so heads, losses and
post-processing are the single-task code. State dict: ``backbone.*``, ``branches.<name>.<single-task keys>``,
``loss_weighting.log_vars.<name>`` (uncertainty weighting) — every tensor once.

* ``forward(batch)`` / ``forward(batch, task=name)``: routed by ``batch['task']``; training returns
  ``{'loss': weighted total, '<name>/loss': raw task loss, '<name>/<component>': ..., '<name>/weight': ...}``;
  eval returns that branch's predictions.
* ``predict_all(batch)``: every branch on the batch's images in ONE backbone pass -> ``{name: predictions}``
  (VQA branches only when the batch holds questions: ``input_ids``, ``attention_mask``, ``image_index``).
* ``branch_state_dict(name)`` / ``export_branch(name, path)`` / ``branch_config(name)``: the branch as a single-task
  checkpoint (``backbone.*`` + the branch's keys, with its metainfo) and the single-task config that loads it.
"""
from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ...data.normalize import build_normalizer, image_sizes
from ...errors import CheckpointError, ConfigError, DataError
from ...registry import MODELS, closest_names
from ..encoder import Encoder, build_neck_on
from .shared_neck import SharedNeck, attach_shared_neck
from .branches import build_branch, check_branch_name, single_task_config, task_model_type
from .weighting import build_loss_weighting

__all__ = ['MultiTaskModel']


def _names(items: Sequence[str]) -> str:
    return ', '.join(repr(i) for i in items) or 'none'


@MODELS.register_module()
class MultiTaskModel(Encoder):
    """One shared backbone, several task branches (see the module docstring).

    Args:
        backbone: the shared backbone config.
        branches: branch name -> ``dict(task='detection' | 'segmentation' | 'vqa' | 'classification', ...)``:
            the rest is the single-task model's config without ``type``/``backbone``/``normalize``
            (``in_indices`` picks the shared backbone outputs the branch uses).
        metainfo: ``{'tasks': {name: that task's metainfo}}`` (the multi-task dataset's or the checkpoint's).
        loss_weights: fixed per-branch multipliers (default 1.0 each).
        loss_weighting: ``'fixed'`` or ``'uncertainty'`` (or ``dict(type='uncertainty', init=0.0)``).
        normalize: input normalisation shared by all branches (as in the single-task models).
        necks: shared neck name -> neck config with ``in_indices`` (the backbone outputs it reads; default all);
            a branch reads one with ``inputs=<name>``.

    Raises:
        ConfigError: no branches, a bad branch name, an unknown task (the registered tasks are listed), a branch
            that sets the shared parts, metainfo for other branches than configured.
    """

    def __init__(self, backbone: Mapping[str, Any], branches: Mapping[str, Mapping[str, Any]],
                 metainfo: Mapping[str, Any] | None = None, loss_weights: Mapping[str, float] | None = None,
                 loss_weighting: str | Mapping[str, Any] | None = 'fixed',
                 normalize: Mapping[str, Any] | None = None,
                 necks: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        if not isinstance(branches, Mapping) or not branches:
            raise ConfigError('MultiTaskModel needs branches=dict(<name>=dict(task=..., ...), ...).')
        names = [check_branch_name(n) for n in branches]
        task_meta = self._task_metainfo(metainfo, names)
        self.normalizer = build_normalizer(normalize)
        self.init_encoder(backbone)
        self.neck_cfgs = {check_branch_name(n): copy.deepcopy(dict(c)) for n, c in (necks or {}).items()}
        self.necks = nn.ModuleDict()
        self.neck_in_indices: dict[str, tuple[int, ...] | None] = {}
        for n, c in self.neck_cfgs.items():
            c = dict(c)
            idx = c.pop('in_indices', None)
            self.neck_in_indices[n] = None if idx is None else tuple(int(i) for i in idx)
            neck, _ = build_neck_on(c, self.feature_spec.select(self.neck_in_indices[n]))
            self.necks[n] = SharedNeck(neck)
        self.branch_cfgs = {n: copy.deepcopy(dict(b)) for n, b in branches.items()}
        self.inputs = {n: self._branch_inputs(n, b, ['backbone', *self.necks]) for n, b in self.branch_cfgs.items()}
        self.backbone_cfg = copy.deepcopy(dict(backbone))
        self.normalize_cfg = None if normalize is None else copy.deepcopy(dict(normalize))
        self.tasks = {n: dict(b).get('task') for n, b in branches.items()}
        for n, t in self.tasks.items():
            task_model_type(t, n)
        self.branches = nn.ModuleDict({n: build_branch(n, self._own_config(n), self.feature_spec, task_meta.get(n),
                                                       normalize) for n in branches})
        for n, src in self.inputs.items():
            if src != 'backbone':
                attach_shared_neck(self.branches[n], self.necks[src])
        self.loss_weighting = build_loss_weighting(loss_weighting, names, loss_weights)
        self.metainfo = {'tasks': {n: dict(getattr(b, 'metainfo', {}) or {}) for n, b in self.branches.items()}}

    @staticmethod
    def _branch_inputs(name: str, cfg: dict[str, Any], sources: list[str]) -> str:
        """The features branch ``name`` reads: ``'backbone'`` or a shared neck (ConfigError otherwise)."""
        src = cfg.get('inputs', 'backbone')
        if src not in sources:
            close = closest_names(str(src), sources)
            hint = f" Did you mean {close[0]!r}?" if close else ''
            raise ConfigError(f"MultiTaskModel branch {name!r}: inputs={src!r} is not 'backbone' or a shared neck."
                              f'{hint} Choices: {_names(sources)}.')
        own = [k for k in ('neck', 'in_indices') if cfg.get(k) is not None]
        if src != 'backbone' and own:
            raise ConfigError(f"MultiTaskModel branch {name!r} reads the shared neck {src!r} and sets "
                              f"{', '.join(own)}: such a branch gets that neck and its in_indices (set them on "
                              'the neck); heads pick its levels with their in_index.')
        return src

    def _own_config(self, name: str) -> dict[str, Any]:
        """Branch ``name``'s single-task model config (less the shared parts): without ``inputs``; on a shared
        neck, with that neck's config and ``in_indices``."""
        out = {k: v for k, v in self.branch_cfgs[name].items() if k != 'inputs'}
        src = self.inputs[name]
        if src != 'backbone':
            neck = {k: copy.deepcopy(v) for k, v in self.neck_cfgs[src].items() if k != 'in_indices'}
            out.update(neck=neck, in_indices=self.neck_in_indices[src])
        return out

    @staticmethod
    def _task_metainfo(metainfo: Mapping[str, Any] | None, names: list[str]) -> dict[str, Any]:
        if not metainfo:
            return {}
        tasks = metainfo.get('tasks') if isinstance(metainfo, Mapping) else None
        if not isinstance(tasks, Mapping):
            raise ConfigError("MultiTaskModel metainfo must be {'tasks': {branch name: metainfo}} (a multi-task "
                              f"dataset's or checkpoint's), got keys {sorted(metainfo)}.")
        missing = [n for n in names if n not in tasks]
        extra = [n for n in tasks if n not in names]
        if missing or extra:
            raise ConfigError(f'MultiTaskModel: the data/checkpoint metainfo has branches {_names(list(tasks))}, '
                              f'the config {_names(names)}: missing {_names(missing)}, extra {_names(extra)}.')
        return dict(tasks)

    # -- routing -----------------------------------------------------------------------------------
    def branch_name(self, name: str) -> str:
        """``name`` if it is a branch; ConfigError naming the closest branch and all branches otherwise."""
        if name not in self.branches:
            close = closest_names(str(name), list(self.branches))
            hint = f" Did you mean {close[0]!r}?" if close else ''
            raise ConfigError(f'MultiTaskModel has no branch {name!r}.{hint} Branches: {_names(list(self.branches))}.')
        return name

    def route(self, batch: Mapping[str, Any], task: str | None = None) -> str:
        """The branch a batch goes to: ``task`` if given, else ``batch['task']`` (a name, or one name per sample)."""
        name = task if task is not None else batch.get('task')
        if isinstance(name, (list, tuple)):
            if not name or len(set(name)) != 1:
                raise DataError(f'MultiTaskModel: a batch holds one task, this one has {sorted(set(name))}.')
            name = name[0]
        if name is None:
            raise DataError("MultiTaskModel: the batch has no 'task' (use MultiTaskDataset's collate) and no task= "
                            f"was given. Branches: {_names(list(self.branches))}.")
        if name not in self.branches:
            close = closest_names(str(name), list(self.branches))
            hint = f" Did you mean {close[0]!r}?" if close else ''
            raise DataError(f'MultiTaskModel: the batch is for branch {name!r}, which this model does not have.'
                            f'{hint} Branches: {_names(list(self.branches))}.')
        return name

    def shared_features(self, batch: Mapping[str, Any]) -> tuple[Tensor, ...]:
        """All shared backbone outputs for ``batch['images']`` (N, 3, H, W) uint8, normalised here."""
        return self.run_backbone(self.normalizer(batch['images'], image_sizes(batch)))

    def _needs_image(self, name: str) -> bool:
        return bool(getattr(self.branches[name], 'use_image', True))

    def forward(self, batch: Mapping[str, Any], task: str | None = None
                ) -> dict[str, Tensor] | list[dict[str, Any]]:
        """Training: the routed branch's losses, weighted (module docstring); eval: its predictions."""
        name = self.route(batch, task)
        branch = self.branches[name]
        feats = self.shared_features(batch) if self._needs_image(name) else ()
        out = branch(batch, feats=feats)
        if not self.training:
            return out
        raw = out['loss']
        total, extras = self.loss_weighting(name, raw)
        logged = {f'{name}/loss': raw.detach(),
                  **{f'{name}/{k}': v.detach() for k, v in out.items() if k != 'loss'},
                  **{f'{name}/{k}': v for k, v in extras.items()}}
        return {'loss': total, **logged}

    @torch.no_grad()
    def predict_all(self, batch: Mapping[str, Any], tasks: Sequence[str] | None = None) -> dict[str, Any]:
        """Every branch (or ``tasks``) on ``batch['images']`` with ONE backbone pass -> ``{name: predictions}``.

        Detection/segmentation/classification need ``metas`` as their datasets' batches have them; VQA branches
        run only when the batch holds questions (``input_ids``, ``attention_mask``; ``image_index`` maps each
        question to its image, default all on image 0 when there is one image).
        """
        if self.training:
            raise RuntimeError('MultiTaskModel.predict_all predicts: call model.eval() first.')
        names = list(self.branches) if tasks is None else [self.branch_name(t) for t in tasks]
        has_questions = 'input_ids' in batch and 'attention_mask' in batch
        run = [n for n in names if self.tasks[n] != 'vqa' or has_questions]
        feats = self.shared_features(batch) if any(self._needs_image(n) for n in run) else ()
        out: dict[str, Any] = {}
        with contextlib.ExitStack() as stack:
            for neck in self.necks.values():
                stack.enter_context(neck.reuse())
            for name in run:
                out[name] = self._predict_branch(name, batch, feats)
        return out

    def _predict_branch(self, name: str, batch: Mapping[str, Any], feats: tuple[Tensor, ...]) -> Any:
        sub = batch
        if self.tasks[name] == 'vqa' and 'image_index' not in batch:
            if batch['images'].shape[0] != 1:
                raise DataError('MultiTaskModel.predict_all: VQA questions on several images need '
                                "batch['image_index'] (question -> image).")
            sub = {**batch, 'image_index': torch.zeros(batch['input_ids'].shape[0], dtype=torch.long,
                                                       device=batch['input_ids'].device)}
        return self.branches[name](sub, feats=feats)

    # -- single-task export ------------------------------------------------------------------------
    def branch_config(self, name: str) -> dict[str, Any]:
        """The single-task model config equivalent to branch ``name`` (shared backbone and normalisation)."""
        name = self.branch_name(name)
        return single_task_config(self._own_config(name), self.backbone_cfg, self.normalize_cfg)

    def branch_state_dict(self, name: str) -> 'OrderedDict[str, Tensor]':
        """Branch ``name`` as a single-task state dict: ``backbone.*`` + the branch's own keys (same tensors)."""
        name = self.branch_name(name)
        state: OrderedDict[str, Tensor] = OrderedDict()
        if self._needs_image(name):
            state.update(self.backbone.state_dict(prefix='backbone.'))
        if self.inputs[name] != 'backbone':
            state.update(self.necks[self.inputs[name]].neck.state_dict(prefix='neck.'))
        state.update(self.branches[name].state_dict())
        return state

    def export_branch(self, name: str, path: str) -> str:
        """Write branch ``name`` as a single-task ``.safetensors`` checkpoint (with its metainfo) to ``path``.

        ``build_model(self.branch_config(name), metainfo=...)`` loads it strictly (``attnkit test`` with the
        equivalent single-task config).
        """
        from ...engine.checkpoint import save_safetensors
        name = self.branch_name(name)
        save_safetensors(self.branch_state_dict(name), self.metainfo['tasks'][name], path)
        return path

    # -- loading -----------------------------------------------------------------------------------
    def check_branches(self, state_dict: Mapping[str, Any]) -> None:
        """CheckpointError when ``state_dict`` was saved with another set of branches (names them)."""
        saved = list(dict.fromkeys(k.split('.')[1] for k in state_dict if k.startswith('branches.')))
        own = list(self.branches)
        missing = [n for n in own if n not in saved]
        extra = [n for n in saved if n not in own]
        if missing or extra:
            raise CheckpointError(f'MultiTaskModel: the state dict holds branches {_names(saved)}, this model has '
                                  f'{_names(own)}: missing {_names(missing)}, extra {_names(extra)}.')

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` after :meth:`check_branches` (when ``strict``)."""
        if strict:
            self.check_branches(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
