"""The training-mode rule every backbone shares: frozen parts and (with ``norm_eval``) batch norms stay in eval."""
from __future__ import annotations

from torch import nn

from .norm import is_batch_norm

__all__ = ['FrozenPartsMixin']


class FrozenPartsMixin:
    """Mixin for an ``nn.Module`` backbone with ``frozen_stages``/``norm_eval``.

    Subclasses implement ``_frozen_modules()`` (the modules of the frozen stem and stages, looked up at call time so
    a conversion that replaced modules is followed) and set ``self.norm_eval``; ``_freeze_stages()`` turns their
    gradients off and ``train(mode)`` keeps them — and with ``norm_eval`` every batch norm — in eval mode.
    """

    norm_eval: bool

    def _frozen_modules(self) -> list[nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        """``requires_grad=False`` and eval mode for every frozen module."""
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        """Switch mode, keeping frozen parts (and, with ``norm_eval``, every batch norm) in eval mode."""
        super().train(mode)  # type: ignore[misc]
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for m in self.modules():  # type: ignore[attr-defined]
                    if is_batch_norm(m):
                        m.eval()
        return self
