"""Per-task loss weighting of a :class:`~attnkit.tasks.multitask.model.MultiTaskModel`.

``'fixed'``: the total of task t is ``w_t * L_t`` (``loss_weights``, default 1).

``'uncertainty'`` (homoscedastic uncertainty weighting, Kendall, Gal & Cipolla, CVPR 2018): one learned
log-variance ``s_t = log sigma_t^2`` per task (a scalar parameter, initialised to ``init``) and

    total_t = exp(-s_t) * w_t * L_t + s_t

In the paper's terms (``s = log sigma^2``) this is twice its regression term ``L / (2 sigma^2) + log sigma =
0.5 exp(-s) L + 0.5 s`` (the same minimiser), used for every task. The classification term ``L / sigma^2 +
log sigma = exp(-s) L + 0.5 s`` is not singled out: every task loss here mixes classification and regression
terms (FCOS: focal + IoU + centre-ness; the segmentor: cross-entropy; VQA: BCE), so none is a pure likelihood
of one kind, and one form for all keeps the tasks on an equal footing (it is also the common implementation).
For a fixed ``L_t`` the total is smallest at ``s_t = log(w_t L_t)``:
the learned weight ``exp(-s_t)`` settles where each task contributes about 1, i.e. tasks are balanced by
their loss scale. Because ``s_t`` enters additively, it cannot run to ``-inf`` (that would blow up the first
term) nor to ``+inf`` (the second term grows).

The log-variances are parameters of the model (``loss_weighting.log_vars.<task>``): they are optimised with the
rest and saved in checkpoints. Exclude them from weight decay (a no-decay token ``'log'``), which would pull
them towards 0 (weight 1).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import closest_names

__all__ = ['LossWeighting', 'build_loss_weighting', 'WEIGHTINGS']

WEIGHTINGS = ('fixed', 'uncertainty')


class LossWeighting(nn.Module):
    """Combines one task's loss with its weight.

    Args:
        tasks: the task (branch) names.
        weights: fixed multipliers ``w_t`` per task (missing tasks: 1.0).
        mode: ``'fixed'`` or ``'uncertainty'``.
        init: initial log-variance ``s_t`` for ``'uncertainty'`` (0 = weight 1).
    """

    def __init__(self, tasks: Iterable[str], weights: Mapping[str, float] | None = None, mode: str = 'fixed',
                 init: float = 0.0) -> None:
        super().__init__()
        tasks = list(tasks)
        if mode not in WEIGHTINGS:
            close = closest_names(str(mode), WEIGHTINGS)
            hint = f" Did you mean {close[0]!r}?" if close else ''
            raise ConfigError(f"MultiTaskModel loss_weighting {mode!r} is unknown.{hint} Choose from: "
                              f"{', '.join(WEIGHTINGS)}.")
        weights = dict(weights or {})
        unknown = [k for k in weights if k not in tasks]
        if unknown:
            close = closest_names(unknown[0], tasks)
            hint = f" Did you mean {close[0]!r}?" if close else ''
            raise ConfigError(f"MultiTaskModel loss_weights names {unknown[0]!r}, which is not a branch.{hint} "
                              f"Branches: {', '.join(tasks)}.")
        bad = {k: v for k, v in weights.items() if not isinstance(v, (int, float)) or v < 0}
        if bad:
            raise ConfigError(f'MultiTaskModel loss_weights must be numbers >= 0, got {bad!r}.')
        self.mode = mode
        self.weights = {t: float(weights.get(t, 1.0)) for t in tasks}
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.full((), float(init))) for t in tasks} if mode == 'uncertainty' else {})

    def forward(self, task: str, loss: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(weighted total, logged extras)`` for task ``task``'s scalar ``loss`` (float32)."""
        w = self.weights[task]
        if self.mode == 'fixed':
            return loss * w, {'weight': torch.full((), w, device=loss.device)}
        s = self.log_vars[task]
        precision = torch.exp(-s)
        total = precision * (w * loss) + s
        return total, {'weight': (precision * w).detach(), 'log_var': s.detach()}

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, weights={self.weights}"


def build_loss_weighting(cfg: str | Mapping[str, Any] | None, tasks: Iterable[str],
                         weights: Mapping[str, float] | None = None) -> LossWeighting:
    """``'fixed'`` / ``'uncertainty'`` / ``dict(type='uncertainty', init=0.0)`` (None = fixed)."""
    if cfg is None:
        cfg = 'fixed'
    if isinstance(cfg, str):
        cfg = {'type': cfg}
    args = dict(cfg)
    mode = args.pop('type', 'fixed')
    init = args.pop('init', 0.0)
    if args:
        raise ConfigError(f"MultiTaskModel loss_weighting takes 'type' and 'init', got {sorted(args)}.")
    return LossWeighting(tasks, weights, mode=mode, init=init)
