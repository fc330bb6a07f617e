"""Inference-time graph simplification without tracing: BatchNorm into convolutions, identity attention out.

No ``torch.fx``: attnkit attaches inserted attention by swapping the class of the target module
(:mod:`attnkit.attention.insert`), which a trace would flatten away. Instead the pairs to fold are found by
structure:

* inside an ``nn.Sequential`` (with the stock ``forward``), a ``Conv2d`` directly followed by a batch norm
  (necks' and heads' conv-BN-ReLU stacks, ``downsample = Sequential(conv1x1, norm)``);
* the named pairs of attnkit's own modules whose ``forward`` calls ``bnK(convK(x))`` (:data:`FOLD_PAIRS`:
  the ResNet stem and the Basic/Bottleneck blocks, CoordAttention's squeeze conv).

A pair is not folded when attention runs between the two (attached ``after`` the conv or ``before`` the norm),
when the norm uses batch statistics (``track_running_stats=False``) or when the conv is not a plain ``Conv2d``.
The norm is replaced by ``nn.Identity`` with :func:`attnkit.attention.insert.replace_module`, so attention
attached after it now runs after the identity, exactly where it ran before.

An attention module whose learnable ``gamma`` is exactly 0 (identity initialisation, never trained away from
it) computes ``x + 0 * (...)`` = its shortcut: attached ones are detached, others (``block.attn``, ``sa``,
``head.pam``, FPN ``attn.<level>``) are replaced by ``nn.Identity`` (or the 2×2 average pool of a stride-2 MHSA).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..attention.base import AttentionModule
from ..attention.insert import _WithAttention, attachments, detach, replace_module
from ..attention.coord import CoordAttention
from ..attention.mhsa import MHSA
from ..backbones.blocks import BasicBlock, Bottleneck
from ..backbones.resnet import ResNet

__all__ = ['FoldReport', 'FOLD_PAIRS', 'fold_batch_norms', 'fold_identity_attention', 'is_foldable_norm',
           'fuse_conv_norm']

# classes whose forward computes norm(conv(x)) for these (conv, norm) attribute pairs (subclasses included, so
# the classes swapped by insert() count too)
FOLD_PAIRS: dict[type, tuple[tuple[str, str], ...]] = {
    ResNet: (('conv1', 'bn1'),),
    BasicBlock: (('conv1', 'bn1'), ('conv2', 'bn2')),
    Bottleneck: (('conv1', 'bn1'), ('conv2', 'bn2'), ('conv3', 'bn3')),
    CoordAttention: (('conv', 'bn'),),
}


@dataclass
class FoldReport:
    """What :func:`fold_batch_norms` / :func:`fold_identity_attention` changed.

    Attributes:
        folded_norms: names of the norm layers folded into their convolution (now ``nn.Identity``).
        kept_norms: ``name: reason`` of batch norms left in the model.
        folded_attention: names of identity attention modules (gamma = 0) taken out of the graph.
        kept_attention: names of attention modules kept (gamma != 0, or no gamma).
    """

    folded_norms: list[str] = field(default_factory=list)
    kept_norms: dict[str, str] = field(default_factory=dict)
    folded_attention: list[str] = field(default_factory=list)
    kept_attention: list[str] = field(default_factory=list)


def is_foldable_norm(module: nn.Module) -> bool:
    """A 2-D batch norm with running statistics (BatchNorm2d, SyncBatchNorm, FrozenBatchNorm2d)."""
    if isinstance(module, FrozenBatchNorm2d):
        return True
    return (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
            and module.running_mean is not None and module.running_var is not None)


def _norm_eps(norm: nn.Module) -> float:
    return float(getattr(norm, 'eps', 1e-5))


@torch.no_grad()
def fuse_conv_norm(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Fold ``norm`` (eval mode: ``(y - mean) / sqrt(var + eps) * weight + bias`` per channel) into ``conv`` in place.

    The conv gets a bias when it had none; the arithmetic runs in float64 and is cast back to the conv's dtype.
    ``norm`` itself is left untouched (the caller takes it out of the graph).
    """
    if conv.out_channels != norm.running_mean.numel():
        raise ValueError(f'cannot fold a norm over {norm.running_mean.numel()} channels into a conv with '
                         f'{conv.out_channels} output channels')
    dtype = conv.weight.dtype
    weight, bias = torch.nn.utils.fusion.fuse_conv_bn_weights(
        conv.weight.double(), None if conv.bias is None else conv.bias.double(), norm.running_mean.double(),
        norm.running_var.double(), _norm_eps(norm),
        None if getattr(norm, 'weight', None) is None else norm.weight.double(),
        None if getattr(norm, 'bias', None) is None else norm.bias.double())
    memory_format = (torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last)
                     and not conv.weight.is_contiguous() else torch.contiguous_format)
    conv.weight = nn.Parameter(weight.to(dtype).contiguous(memory_format=memory_format),
                               requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=conv.weight.requires_grad)


def _unswapped_class(module: nn.Module) -> type:
    """The module's own class, under the ``...WithAttention`` subclass insert() may have swapped in."""
    return next(c for c in type(module).__mro__ if not issubclass(c, _WithAttention))


def _has_after(module: nn.Module) -> bool:
    return bool(getattr(module, '_attnkit_after', None))


def _has_before(module: nn.Module) -> bool:
    return bool(getattr(module, '_attnkit_before', None))


def _candidate_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, norm path) pairs where the norm directly consumes the conv's output, in model order."""
    pairs: list[tuple[str, str]] = []
    for path, module in model.named_modules():
        prefix = f'{path}.' if path else ''
        if isinstance(module, nn.Sequential) and _unswapped_class(module).forward is nn.Sequential.forward:
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                pairs.append((prefix + first, prefix + second))
        for cls, named in FOLD_PAIRS.items():
            if isinstance(module, cls):
                pairs.extend((prefix + c, prefix + n) for c, n in named)
    return pairs


def fold_batch_norms(model: nn.Module, report: FoldReport | None = None) -> FoldReport:
    """Fold every batch norm that directly follows a ``Conv2d`` into it (see the module docstring); in place.

    Args:
        model: any module (eval-mode semantics: running statistics are what gets folded).
        report: a report to add to (a new one when None).

    Returns:
        The report: folded norm names and, for every other batch norm, why it was kept.
    """
    report = report if report is not None else FoldReport()
    folded: set[str] = set()
    for conv_path, norm_path in _candidate_pairs(model):
        conv = model.get_submodule(conv_path) if _exists(model, conv_path) else None
        norm = model.get_submodule(norm_path) if _exists(model, norm_path) else None
        if conv is None or norm is None or norm_path in folded or not is_foldable_norm(norm):
            continue
        if not isinstance(conv, nn.Conv2d):
            continue
        if _unswapped_class(conv) is not nn.Conv2d:
            report.kept_norms[norm_path] = f'{conv_path} is a {type(conv).__name__}, not a plain Conv2d'
            continue
        if _has_after(conv) or _has_before(norm):
            report.kept_norms[norm_path] = f'attention runs between {conv_path} and {norm_path}'
            continue
        fuse_conv_norm(conv, norm)
        replace_module(model, norm_path, nn.Identity())
        folded.add(norm_path)
        report.folded_norms.append(norm_path)
    for path, module in model.named_modules():
        if is_foldable_norm(module) and path not in folded and path not in report.kept_norms:
            report.kept_norms[path] = 'no convolution directly before it'
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and not is_foldable_norm(module):
            report.kept_norms[path] = 'uses batch statistics (track_running_stats=False)'
    return report


def _exists(model: nn.Module, path: str) -> bool:
    try:
        return model.get_submodule(path) is not None
    except AttributeError:
        return False


def _is_identity(module: nn.Module) -> bool:
    gamma = getattr(module, 'gamma', None)
    return isinstance(gamma, torch.Tensor) and gamma.numel() == 1 and float(gamma.detach().float()) == 0.0


def _shortcut_module(module: AttentionModule) -> nn.Module | None:
    """What an identity (gamma = 0) attention module computes, as a module; None when it is not known."""
    if type(module).shortcut is AttentionModule.shortcut:
        return nn.Identity()
    if isinstance(module, MHSA) and type(module).shortcut is MHSA.shortcut:
        return nn.AvgPool2d(2, 2, ceil_mode=True) if module.stride == 2 else nn.Identity()
    return None


def fold_identity_attention(model: nn.Module, report: FoldReport | None = None,
                            keep: Callable[[str, nn.Module], bool] | None = None) -> FoldReport:
    """Take attention modules whose ``gamma`` is exactly 0 out of the graph; in place.

    Attached modules (:func:`attnkit.attention.insert.attachments`) are detached; modules called by their parent
    (``block.attn``, ``block.sa``, ``decode_head.pam``, ``neck.attn.<i>``) are replaced by what they compute,
    their shortcut (``nn.Identity``, or a 2×2 average pool for a stride-2 MHSA).

    Args:
        keep: optional ``keep(name, module) -> bool`` to leave chosen modules in place.

    Returns:
        The report with ``folded_attention`` and ``kept_attention`` filled in.
    """
    report = report if report is not None else FoldReport()
    attached = {a.module_name for a in attachments(model)}
    for name in sorted(attached):
        module = model.get_submodule(name)
        if _is_identity(module) and not (keep and keep(name, module)) and type(module).shortcut is \
                AttentionModule.shortcut:
            detach(model, name)
            report.folded_attention.append(name)
    done: list[str] = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, AttentionModule) or not name:
            continue
        if any(name.startswith(d + '.') for d in done):
            continue  # inside an attention module already handled
        done.append(name)
        if name in attached:
            report.kept_attention.append(name)
            continue
        replacement = _shortcut_module(module) if _is_identity(module) else None
        if replacement is None or (keep and keep(name, module)):
            report.kept_attention.append(name)
            continue
        replace_module(model, name, replacement)
        report.folded_attention.append(name)
    return report
