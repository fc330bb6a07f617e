"""Any ``transformers`` vision backbone (DINOv2, ViTDet, BEiT, Swin, ConvNeXt, ResNet, ...) from a local directory."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import BACKBONES
from .hf_load import load_hf_backbone
from ..attention.insert import first_tensor as _first_tensor
from .freezing import FrozenPartsMixin

__all__ = ['HFBackbone']

_EMBEDDING_NAMES = ('embeddings', 'embedder')


@BACKBONES.register_module('HFBackbone')
class HFBackbone(FrozenPartsMixin, nn.Module):
    """A ``transformers.AutoBackbone`` with attnkit's backbone contract (as :class:`~attnkit.backbones.ResNet`).

    Args:
        model_path: local directory with ``config.json`` + weights (``save_pretrained`` or
            ``huggingface-cli download <repo> --local-dir <dir>``); never downloaded. None: build from ``config``
            with random weights.
        config: without ``model_path``, ``dict(model_type='dinov2', hidden_size=..., ...)`` (any fields of that
            transformers config: ``AutoConfig.for_model``); with ``model_path``, overrides of its config's fields
            (e.g. ``dict(drop_path_rate=0.1)``).
        out_indices: stages to return; 0 is the first stage after the stem (a ViT's first layer, a ResNet's
            first stage), negatives count from the last (-1 = last stage / last ViT layer).
        frozen_stages: -1 trains everything; 0 freezes the embeddings (patch embedding / stem); k freezes the
            embeddings and the first k stages (ViT: layers) — ``requires_grad=False``, eval mode.
        norm_eval: keep every batch-norm layer in eval mode while training (HF ResNet / BiT).
        pad_input: zero-pad images bottom/right to a multiple of ``max(strides)`` (ViTs: the patch size) so no
            pixel is dropped (transformers' ViT patch embeddings floor ``H / patch``) and every map has
            ``ceil(H / stride)`` rows; False: such an input raises ``ValueError`` instead.
        attention: an :func:`attnkit.attention.insert` spec (or a list of them) applied after loading, with
            module names as in the transformers model (``dict(type='cbam', after=['encoder.stages.3'])`` on
            ConvNeXt / ResNet). Targets must output (N, C, H, W) maps: transformer layers output tokens, so ViT
            / Swin layers raise :class:`ConfigError` (their patch-embedding conv works).
        identity_init: inserted modules start as the exact identity; None = True when ``model_path`` is given.

    Attributes:
        model: the transformers backbone (float32).
        out_channels, strides: channels and stride of each returned map (strides are measured by one dry
            forward at construction: the patch size for plain ViTs, 4..32 for hierarchical models).
        model_type: the transformers ``model_type``.
        pretrained_report: :class:`~attnkit.backbones.pretrained.LoadReport` of the load, or None.
        unused_parameters: names of parameters no returned map depends on (frozen; see ``_dry_shapes``).
        places: the :class:`~attnkit.attention.insert.InsertedPlace` list of ``attention``.
        stage_indices: the returned stages, 0-based and sorted (``out_indices`` resolved).

    Shapes: ``forward((N, 3, H, W))`` (already normalised, e.g. ImageNet or the model's own mean/std through the
    task model's ``normalize``) returns one (N, out_channels[i], ceil(H / strides[i]), ceil(W / strides[i]))
    map per ``out_indices`` entry: ViT tokens reshaped to the patch grid, CLS/register tokens dropped.
    """

    def __init__(self, model_path: str | None = None, *, config: Mapping[str, Any] | None = None,
                 out_indices: int | Sequence[int] = (-1,), frozen_stages: int = -1, norm_eval: bool = False,
                 pad_input: bool = True, attention: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
                 identity_init: bool | None = None) -> None:
        super().__init__()
        self.model, self.stage_indices, self.pretrained_report = load_hf_backbone(model_path, config, out_indices)
        self.model_type: str = self.model.config.model_type
        self.norm_eval = norm_eval
        self.pad_input = pad_input
        self._image_size = getattr(self.model.config, 'image_size', None)
        patch = getattr(self.model.config, 'patch_size', None)
        patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch) if patch else 1
        self._probe = math.lcm(patch, 32)  # dry-forward size: every stage has >= 1 cell and an exact stride
        self._embeddings, self._stages = self._find_parts()
        num_stages = len(self.model.stage_names) - 1
        if frozen_stages not in range(-1, num_stages + 1):
            raise ConfigError(f"HFBackbone frozen_stages must be in -1..{num_stages} ({self.model_type} has "
                              f"{num_stages} stages), got {frozen_stages!r}.")
        if frozen_stages >= 0 and (self._embeddings is None or (frozen_stages > 0 and self._stages is None)):
            raise ConfigError(f"HFBackbone frozen_stages: cannot find the embeddings / the {num_stages} stages of "
                              f"{type(self.model).__name__}; use frozen_stages=-1.")
        self.frozen_stages = frozen_stages
        shapes = self._dry_shapes()
        self.out_channels: tuple[int, ...] = tuple(s[1] for s in shapes)
        self.strides: tuple[int, ...] = tuple(self._probe // s[2] for s in shapes)
        self.places: list[Any] = []
        if attention is not None:
            if identity_init is None:
                identity_init = model_path is not None
            self.places = self._insert(attention, identity_init)
        self._freeze_stages()

    # -- construction helpers ---------------------------------------------------------------------------
    def _find_parts(self) -> tuple[nn.Module | None, nn.ModuleList | None]:
        """The embeddings module and the ModuleList of stages (shallowest matches) of the transformers model."""
        num_stages = len(self.model.stage_names) - 1
        embeddings = stages = None
        for name, module in sorted(self.model.named_modules(), key=lambda item: item[0].count('.')):
            last = name.rsplit('.', 1)[-1]
            if embeddings is None and last in _EMBEDDING_NAMES:
                embeddings = module
            if stages is None and isinstance(module, nn.ModuleList) and len(module) == num_stages:
                stages = module
        return embeddings, stages

    def _dry_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the returned maps for one (1, 3, probe, probe) zero image (eval mode).

        The same pass finds the parameters that cannot get a gradient (DINOv2's ``mask_token``, layers after the
        last returned one): they get ``requires_grad=False`` (listed in ``unused_parameters``), so DDP needs no
        ``find_unused_parameters`` and the optimizer skips them.
        """
        mode = self.training
        self.eval()
        with torch.enable_grad():
            maps = self(torch.zeros(1, 3, self._probe, self._probe))
            trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
            reached = torch.autograd.grad(sum(m.float().sum() for m in maps), [p for _, p in trainable],
                                          allow_unused=True)
        self.train(mode)
        self.unused_parameters: tuple[str, ...] = tuple(n for (n, _), g in zip(trainable, reached) if g is None)
        for name in self.unused_parameters:
            self.get_parameter(name).requires_grad_(False)
        shapes = [tuple(m.shape) for m in maps]
        for shape in shapes:
            if len(shape) != 4 or self._probe % shape[2] or self._probe % shape[3]:
                raise ConfigError(f"HFBackbone: {type(self.model).__name__} returned shapes {shapes} for a "
                                  f"{self._probe}x{self._probe} input; cannot read (N, C, h, w) maps with an integer "
                                  'stride from it.')
        return shapes

    def _display_names(self) -> dict[str, str]:
        """transformers module name -> path in this module (``model.`` prefix)."""
        return {name: f'model.{name}' if name else 'model' for name, _ in self.model.named_modules()}

    def _insert(self, spec: Mapping[str, Any] | Sequence[Mapping[str, Any]], identity_init: bool) -> list[Any]:
        """Insert attention after checking that every target sees an (N, C, H, W) map."""
        from ..attention.insert import WHERE, insert, match_modules
        specs = [spec] if isinstance(spec, Mapping) else list(spec)
        names = self._display_names()
        example = torch.zeros(1, 3, self._probe, self._probe)
        for one in specs:
            where = next((w for w in WHERE if isinstance(one, Mapping) and one.get(w) is not None), None)
            if where is None:
                continue  # insert() raises its own error
            targets = match_modules(self, one[where], names=names, what=f'HFBackbone attention {where}=')
            seen = self._target_shapes(targets, where, example)
            for display, shape in seen.items():
                if len(shape) != 4:
                    raise ConfigError(
                        f"HFBackbone({self.model_type}) attention {where}={display!r}: that module's "
                        f"{'input' if where == 'before' else 'output'} has shape {shape} (tokens, not an (N, C, H, W) "
                        "map); attention modules need 4-D maps: use a convolutional family (convnext, resnet, ...) "
                        "or the patch embedding conv, or put attention on the returned maps (a neck).")
        places = insert(self, specs, identity_init=identity_init, example_input=example, names=names)
        return places

    def _target_shapes(self, targets: list[tuple[str, str]], where: str, example: Tensor
                       ) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        handles = []
        for display, path in targets:
            def hook(mod: nn.Module, args: Any, out: Any, key: str = display) -> None:
                tensor = _first_tensor(args if where == 'before' else out)
                if tensor is not None:
                    shapes.setdefault(key, tuple(tensor.shape))
            handles.append(self.get_submodule(path).register_forward_hook(hook))
        mode = self.training
        try:
            self.eval()
            with torch.no_grad():
                self(example)
        finally:
            self.train(mode)
            for h in handles:
                h.remove()
        return shapes

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        mods: list[nn.Module] = [self._embeddings] if self._embeddings is not None else []
        if self._stages is not None:
            mods += list(self._stages[:self.frozen_stages])
        return mods

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """(N, 3, H, W) normalised images -> one (N, out_channels[i], ceil(H/s_i), ceil(W/s_i)) map per stage."""
        h, w = images.shape[-2:]
        divisor = max(getattr(self, 'strides', (self._probe,)))
        pad_h, pad_w = (-h) % divisor, (-w) % divisor
        if pad_h or pad_w:
            if not self.pad_input:
                raise ValueError(f"HFBackbone({self.model_type}): image size {h}x{w} is not a multiple of {divisor} "
                                 f"(the coarsest stride / patch size); resize or pad the images, or set "
                                 f"pad_input=True.")
            images = F.pad(images, (0, pad_w, 0, pad_h))
        try:
            maps = self.model(pixel_values=images).feature_maps
        except RuntimeError as exc:
            size = self._image_size
            if size is not None and tuple(images.shape[-2:]) != (tuple(size) if isinstance(size, (tuple, list))
                                                                  else (size, size)):
                raise ValueError(f"HFBackbone({self.model_type}) failed on a {images.shape[-2]}x{images.shape[-1]} "
                                 f"input; the model was configured for image_size={size} and may not interpolate "
                                 f"its position embeddings: resize the images to {size} ({exc})") from exc
            raise
        grid = (images.shape[-2], images.shape[-1])
        return tuple(self._as_map(m, grid) for m in maps)

    def _as_map(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """A 4-D map as is; (N, L, C) tokens -> (N, C, h, w) on the patch grid, leading CLS/register tokens dropped."""
        if x.dim() == 4:
            return x
        if x.dim() != 3:
            raise ValueError(f"HFBackbone({self.model_type}): a feature map of shape {tuple(x.shape)} is neither "
                             '(N, C, h, w) nor (N, L, C) tokens.')
        patch = getattr(self.model.config, 'patch_size', None)
        patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch) if patch else 1
        h, w = grid[0] // patch, grid[1] // patch
        extra = x.shape[1] - h * w
        if extra < 0:
            raise ValueError(f"HFBackbone({self.model_type}): {x.shape[1]} tokens cannot fill a {h}x{w} patch grid.")
        return x[:, extra:].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
