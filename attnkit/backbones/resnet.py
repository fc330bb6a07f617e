"""ResNet / ResNeXt backbones in torchvision's layout, with attention slots and pretrained loading."""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from ..builder import build_pooling
from ..errors import ConfigError
from ..registry import BACKBONES, closest_names
from .blocks import ATTENTION_POSITIONS, BasicBlock, Bottleneck, conv1x1, last_norm
from .freezing import FrozenPartsMixin
from .norm import NORMS, build_norm
from .pretrained import LoadReport, load_pretrained

__all__ = ['ResNet', 'ResNeXt', 'ARCH_SETTINGS']

ARCH_SETTINGS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
STAGE_NAMES = ('layer1', 'layer2', 'layer3', 'layer4')
_SLOT_NAMES = ('attn', 'sa', 'pool', 'downsample_pool')  # inserted modules inside blocks (not in torchvision)
DOWNSAMPLE_PLACES = ('stem', 'layer2', 'layer3', 'layer4')  # where ResNet downsamples by 2 (layer1 never does)


def _downsample_places(cfg: Mapping[str, Any] | None, built: int, dilate: tuple[bool, ...]
                       ) -> tuple[frozenset[str], dict[str, Any] | None]:
    """(places, downsampler config without ``places``) of the ``downsample`` option.

    Without ``places`` every stride-2 place that is built and not dilated is used; an explicit place that
    does not exist, is not built (``out_indices``) or is dilated (``output_stride``) is a ConfigError.
    """
    if cfg is None:
        return frozenset(), None
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        raise ConfigError(f"ResNet downsample must be a dict with a 'type' key (e.g. dict(type='lip')), got {cfg!r}.")
    module_cfg = dict(cfg)
    explicit = 'places' in module_cfg
    places = module_cfg.pop('places', DOWNSAMPLE_PLACES)
    places = (places,) if isinstance(places, str) else tuple(places)
    available = {'stem'} | {f'layer{i + 1}' for i in range(1, built) if not dilate[i]}
    for place in places:
        if place == 'layer1':
            raise ConfigError("ResNet downsample place 'layer1' has no stride-2 operation (layer1 keeps the "
                              f"stem's resolution); choose from {', '.join(repr(p) for p in DOWNSAMPLE_PLACES)}.")
        if place not in DOWNSAMPLE_PLACES:
            close = closest_names(str(place), DOWNSAMPLE_PLACES)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
            raise ConfigError(f"Unknown ResNet downsample place {place!r}.{hint} Places: "
                              f"{', '.join(DOWNSAMPLE_PLACES)}.")
        if explicit and place not in available:
            why = ('is dilated at this output_stride (stride 1: nothing to downsample)'
                   if dilate[int(place[-1]) - 1] else 'is not built (out_indices stops before it)')
            raise ConfigError(f"ResNet downsample place {place!r} has no stride-2 operation: {place} {why}. "
                              f"Places with one here: {', '.join(p for p in DOWNSAMPLE_PLACES if p in available)}.")
    return frozenset(p for p in places if p in available), module_cfg


def _stage_flags(cfg: Mapping[str, Any], what: str, default: tuple[bool, ...]) -> tuple[bool, ...]:
    stages = tuple(bool(s) for s in cfg.get('stages', default))
    if len(stages) != 4:
        raise ConfigError(f"{what}.stages must have 4 entries (layer1..layer4), got {cfg.get('stages')!r}.")
    return stages


@BACKBONES.register_module('ResNet')
class ResNet(FrozenPartsMixin, nn.Module):
    """ResNet / ResNeXt (torchvision's "v1.5": stride in the 3x3 conv) returning multi-scale features.

    Parameter names equal torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
    ...), so torchvision / ImageNet state dicts load directly; inserted attention lives under
    ``layerX.Y.attn.*``, self-attention (replacing ``conv2``) under ``layerX.Y.sa.*`` and downsamplers
    (``downsample=``) under ``maxpool.*``, ``layerX.0.pool.*`` and ``layerX.0.downsample_pool.*``.

    Args:
        depth: 18, 34 (basic blocks), 50, 101 or 152 (bottlenecks).
        in_channels: channels of the input image.
        base_channels: stem width; stage ``i`` has ``base_channels * 2**i`` planes (64 = torchvision; small
            values give tiny test models).
        groups: ResNeXt cardinality (``resnext50_32x4d`` = depth 50, groups 32, width_per_group 4).
        width_per_group: ResNeXt width per group (64 for plain ResNet).
        out_indices: stages to return, 0..3 = layer1..layer4. Stages after the last one returned are not
            built (their pretrained keys are reported as unused).
        output_stride: 32, 16 (layer4 dilated instead of strided) or 8 (layer3 and layer4 dilated), as
            torchvision's ``replace_stride_with_dilation``: the first block of a dilated stage keeps the
            previous dilation, later blocks use the new one.
        multi_grid: per-block dilation multipliers of layer4 (DeepLabV3 "multi-grid", e.g. ``(1, 2, 4)``);
            block ``j`` of layer4 gets dilation ``d4 * multi_grid[j]`` (d4 = 1, 2 or 4 for output stride
            32, 16, 8). Its length must equal the number of layer4 blocks.
        frozen_stages: -1 trains everything; 0 freezes the stem (conv1, bn1 and a ``maxpool`` downsampler);
            k freezes the stem and layer1..layerk (parameters get ``requires_grad=False``, modules stay in eval
            mode, inserted attention and downsamplers in those stages included).
        norm_eval: keep every batch-norm layer in eval mode (frozen running statistics) while training.
        norm: ``'bn'``, ``'syncbn'``, ``'frozen_bn'`` or ``'gn'`` (see :func:`~attnkit.backbones.norm.build_norm`).
        attention: ``dict(type=<registered attention>, stages=(False, True, True, True),
            position='after_conv3' | 'after_block', **module_kwargs)``: one module in every block of the
            chosen stages, on the residual branch after the last norm ('after_conv3', SE-Net placement;
            default) or after the addition and ReLU ('after_block').
        self_attention: ``dict(type='mhsa', stages=(False, False, False, True), **module_kwargs)``: replaces
            the 3x3 conv of those stages' blocks (BoTNet); a stride-2 block passes ``stride=2``.
        downsample: ``dict(type=<registered POOLING type: 'lip', 'softpool', 'guided', 'avg'>,
            places=('stem', 'layer2', 'layer3', 'layer4'), **module_kwargs)``: attention-guided downsampling
            as LIP-ResNet. ``'stem'``: the stem max-pool becomes the downsampler (module ``maxpool``, keys
            ``maxpool.*``); ``'layerK'``: in the stage's first block the strided 3x3 conv (bottleneck ``conv2``,
            basic-block ``conv1``) runs at stride 1 after the downsampler ``layerK.0.pool``, and the shortcut's
            1x1 conv runs at stride 1 after ``layerK.0.downsample_pool``. Every conv/norm keeps its name and
            shape: a plain ResNet checkpoint loads with only the downsamplers' keys missing. Without
            ``places``, all stride-2 places that are built and not dilated; an explicit place without a
            stride-2 operation (``layer1``, a stage dilated by ``output_stride`` or not built) is a ConfigError.
            At init ``lip`` and ``guided`` are exactly ``avg`` (3x3/2 average pooling over valid positions),
            so the network equals ``downsample=dict(type='avg')`` with the same weights.
        pretrained: local .pth/.pt/.safetensors file (raw state dict, or under 'state_dict'/'model';
            'module.'/'backbone.' prefixes stripped) or ``torchvision://resnet50`` (read from
            ``torch.hub.get_dir()/checkpoints``; never downloaded).
        identity_init: passed to every inserted module; None means True when ``pretrained`` is given, so the
            pretrained network's outputs are unchanged at step 0.
        zero_init_residual: zero the last norm's weight in every block (each block starts as identity).

    Attributes:
        out_channels: channels of each returned map.
        strides: stride of each returned map w.r.t. the input.
        pretrained_report: the :class:`~attnkit.backbones.pretrained.LoadReport` of the load, or None.

    Shapes: ``forward((N, in_channels, H, W))`` returns one (N, out_channels[i], ceil(H / strides[i]), ...)
    map per ``out_indices`` entry. A channels_last input stays channels_last.
    """

    def __init__(self, depth: int = 50, *, in_channels: int = 3, base_channels: int = 64, groups: int = 1,
                 width_per_group: int = 64, out_indices: Sequence[int] = (0, 1, 2, 3), output_stride: int = 32,
                 multi_grid: Sequence[int] | None = None, frozen_stages: int = -1, norm_eval: bool = False,
                 norm: str = 'bn', attention: Mapping[str, Any] | None = None,
                 self_attention: Mapping[str, Any] | None = None, downsample: Mapping[str, Any] | None = None,
                 pretrained: str | None = None, identity_init: bool | None = None,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        if depth not in ARCH_SETTINGS:
            raise ConfigError(f"ResNet depth {depth!r} is not one of {', '.join(map(str, ARCH_SETTINGS))}.")
        out_indices = (int(out_indices),) if isinstance(out_indices, int) else tuple(int(i) for i in out_indices)
        if not out_indices or any(i not in range(4) for i in out_indices) \
                or list(out_indices) != sorted(set(out_indices)):
            raise ConfigError(f"ResNet out_indices must be increasing, distinct values in 0..3, got {out_indices!r}.")
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"ResNet output_stride must be 8, 16 or 32, got {output_stride!r}.")
        if norm not in NORMS:
            raise ConfigError(f"ResNet norm {norm!r} is not one of {', '.join(repr(n) for n in NORMS)}.")
        if frozen_stages not in range(-1, 5):
            raise ConfigError(f"ResNet frozen_stages must be in -1..4, got {frozen_stages!r}.")
        block, num_blocks = ARCH_SETTINGS[depth]
        if multi_grid is not None and len(multi_grid) != num_blocks[3]:
            raise ConfigError(f"ResNet-{depth} multi_grid needs {num_blocks[3]} entries (one per layer4 block), "
                              f"got {tuple(multi_grid)!r}.")
        if identity_init is None:
            identity_init = pretrained is not None
        att_stages, att_position, att_cfg = self._split_slot(attention, 'attention', (False, True, True, True))
        sa_stages, _, sa_cfg = self._split_slot(self_attention, 'self_attention', (False, False, False, True))

        self.depth = depth
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.conv1 = nn.Conv2d(in_channels, base_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = build_norm(norm, base_channels)
        self.relu = nn.ReLU(inplace=True)
        dilate = {32: (False, False, False, False), 16: (False, False, False, True),
                  8: (False, False, True, True)}[output_stride]
        places, pool_cfg = _downsample_places(downsample, max(out_indices) + 1, dilate)
        self.downsample_places: tuple[str, ...] = tuple(p for p in DOWNSAMPLE_PLACES if p in places)
        # the stem downsampler keeps the max-pool's name (as LIP-ResNet): keys maxpool.*
        self.maxpool = (build_pooling(pool_cfg, base_channels) if 'stem' in places
                        else nn.MaxPool2d(kernel_size=3, stride=2, padding=1))

        channels, stride_now, dilation = base_channels, 4, 1
        all_strides, all_channels = [], []
        for i in range(max(out_indices) + 1):
            planes = base_channels * 2 ** i
            stride = 1 if i == 0 else 2
            previous_dilation = dilation
            if dilate[i]:
                dilation *= stride
                stride = 1
            stride_now *= stride
            pool = pool_cfg if STAGE_NAMES[i] in places and stride == 2 else None
            downsample = None
            if stride != 1 or channels != planes * block.expansion:
                downsample = nn.Sequential(conv1x1(channels, planes * block.expansion, 1 if pool else stride),
                                           build_norm(norm, planes * block.expansion))
            blocks = []
            for j in range(num_blocks[i]):
                block_dilation = previous_dilation if j == 0 else dilation
                if i == 3 and multi_grid is not None:
                    block_dilation = dilation * int(multi_grid[j])
                blocks.append(block(
                    channels, planes, stride=stride if j == 0 else 1, dilation=block_dilation,
                    downsample=downsample if j == 0 else None, groups=groups, base_width=width_per_group,
                    norm=norm, attention=att_cfg if att_stages[i] else None, attention_position=att_position,
                    self_attention=sa_cfg if sa_stages[i] else None, identity_init=identity_init,
                    pool=pool if j == 0 else None))
                channels = planes * block.expansion
            self.add_module(STAGE_NAMES[i], nn.Sequential(*blocks))
            all_strides.append(stride_now)
            all_channels.append(channels)
        self.out_channels: tuple[int, ...] = tuple(all_channels[i] for i in out_indices)
        self.strides: tuple[int, ...] = tuple(all_strides[i] for i in out_indices)

        self._init_weights(zero_init_residual)
        self.pretrained_report: LoadReport | None = None
        if pretrained is not None:
            self.pretrained_report = load_pretrained(
                self, pretrained, expected_missing=self._is_inserted_key, expected_unexpected=self._is_unused_key)
        self._freeze_stages()

    @staticmethod
    def _split_slot(cfg: Mapping[str, Any] | None, what: str, default_stages: tuple[bool, ...]
                    ) -> tuple[tuple[bool, ...], str, dict[str, Any] | None]:
        """(stage flags, position, module config) of an ``attention``/``self_attention`` option."""
        if cfg is None:
            return (False,) * 4, 'after_conv3', None
        if not isinstance(cfg, Mapping) or 'type' not in cfg:
            raise ConfigError(f"ResNet {what} must be a dict with a 'type' key, got {cfg!r}.")
        module_cfg = dict(cfg)
        stages = _stage_flags(module_cfg, what, default_stages)
        module_cfg.pop('stages', None)
        position = module_cfg.pop('position', 'after_conv3')
        if what == 'self_attention' and position != 'after_conv3':
            raise ConfigError("ResNet self_attention takes no 'position': it always replaces the 3x3 conv.")
        if position not in ATTENTION_POSITIONS:
            raise ConfigError(f"ResNet {what}.position {position!r} is not one of "
                              f"{', '.join(repr(p) for p in ATTENTION_POSITIONS)}.")
        return stages, position, module_cfg

    def _own_modules(self) -> list[nn.Module]:
        """Modules of the ResNet itself, excluding the subtrees of inserted (self-)attention modules and
        downsamplers (they keep their own init)."""
        inserted = {id(m) for blk in self._blocks() for m in (blk.attn, blk.sa, blk.pool, blk.downsample_pool)
                    if m is not None}
        if not isinstance(self.maxpool, nn.MaxPool2d):
            inserted.add(id(self.maxpool))
        own, stack = [], [self]
        while stack:
            module = stack.pop()
            own.append(module)
            stack.extend(c for c in module.children() if id(c) not in inserted)
        return own

    def _blocks(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (BasicBlock, Bottleneck))]

    def _init_weights(self, zero_init_residual: bool) -> None:
        """Kaiming (fan_out) convs and unit norms as torchvision; inserted modules keep their own init."""
        for m in self._own_modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for blk in self._blocks():
                norm = last_norm(blk)
                if getattr(norm, 'weight', None) is not None:
                    nn.init.zeros_(norm.weight)

    @staticmethod
    def _is_inserted_key(key: str) -> bool:
        parts = key.split('.')
        return (len(parts) > 3 and parts[0] in STAGE_NAMES and parts[2] in _SLOT_NAMES) or parts[0] == 'maxpool'

    def _is_unused_key(self, key: str) -> bool:
        """File keys the model does not need: the classifier, stages not built, conv2 replaced by ``sa``."""
        parts = key.split('.')
        if parts[0] == 'fc' or (parts[0] in STAGE_NAMES and not hasattr(self, parts[0])):
            return True
        if len(parts) > 3 and parts[0] in STAGE_NAMES and parts[2] == 'conv2':
            stage = getattr(self, parts[0])
            return parts[1].isdigit() and int(parts[1]) < len(stage) and stage[int(parts[1])].sa is not None
        return False

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        mods: list[nn.Module] = [self.conv1, self.bn1, self.maxpool]
        mods += [getattr(self, n) for n in STAGE_NAMES[:self.frozen_stages] if hasattr(self, n)]
        return mods

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(N, in_channels, H, W) -> one (N, out_channels[i], H/strides[i], W/strides[i]) map per out index."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(self.out_indices[-1] + 1):
            x = getattr(self, STAGE_NAMES[i])(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


@BACKBONES.register_module('ResNeXt')
class ResNeXt(ResNet):
    """:class:`ResNet` with ResNeXt defaults (``groups=32, width_per_group=4``: resnext50_32x4d at depth 50;
    ``resnext101_32x8d`` is depth=101, width_per_group=8). Same arguments as :class:`ResNet`."""

    def __init__(self, depth: int = 50, *, groups: int = 32, width_per_group: int = 4, **kwargs: Any) -> None:
        super().__init__(depth, groups=groups, width_per_group=width_per_group, **kwargs)


_sig = inspect.signature(ResNet)
ResNeXt.__signature__ = _sig.replace(parameters=[  # type: ignore[attr-defined]
    p.replace(default={'groups': 32, 'width_per_group': 4}.get(p.name, p.default)) for p in _sig.parameters.values()])
