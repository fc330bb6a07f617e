"""Fused residual tails: a ResNet block's attention gate, residual addition and ReLU in fewer passes.

A block with attention ``'after_conv3'`` (the SE-Net placement) computes ``relu(attn(bn3(conv3(.))) + identity)``.
With the attention in its inference form (:mod:`attnkit.deploy.attention_fast`) that is the gate's statistics,
one multiply pass (``x * gate``), the addition pass and the ReLU pass over the map. ``relu(x * gate + identity)``
needs only two of them: one ``addcmul`` and the in-place ReLU, the plain block's count, so the attention's cost
drops to its statistics (one read of the map for a channel gate). :func:`fuse_residual_tails` unhooks each such
form from the norm it was attached to and lets the block call ``form.forward_residual(out, identity)`` instead of
its own addition (``attn_fused_tail``). Outputs equal the unfused form's within float rounding.

Forms with a fused tail (``fuses_residual``): ``se``, ``eca``, ``gc`` with a ``'scale'`` fusion, ``cbam`` (its
blend and the addition written into ``y = x * Mc``'s buffer). ``gc`` with ``'add'`` only and ``coord`` keep the
block's addition (no pass to save).

**Statistics through the expansion** (``expansion=True``): in a bottleneck whose ``conv3`` is a bare 1x1 conv (its
norm folded into it), a form with ``reads_expansion`` also runs ``conv3`` and reads its statistics from conv3's
input z, a quarter of the map (:mod:`attnkit.deploy.map_stats`). That is ``gc``: its logits and context from z,
and for one sample its ``'add'`` term in conv3's bias (and a ``'scale'`` gate in its weight), so the map is passed
over only by the plain block's addition and ReLU; ``gc`` with ``'add'`` is fused this way too. The block calls
``form.forward_expansion(z, conv3, identity)`` (``attn_reads_expansion``). SE's, ECA's and CBAM's means could be
read the same way but measured no faster (their one mean is cheap next to the extra matrix product), so they
read the map.
"""
from __future__ import annotations

from torch import nn

from ..attention.insert import attachments, detach
from ..backbones.blocks import BasicBlock, Bottleneck
from .attention_fast import InferenceGate
from .map_stats import plain_expansion

__all__ = ['fuse_residual_tails']


def fuse_residual_tails(model: nn.Module, *, expansion: bool = True) -> list[str]:
    """Fuse every eligible attention form of ``model`` with its block's residual addition and ReLU; in place.

    Eligible: an attnkit ``BasicBlock``/``Bottleneck`` whose ``attn`` is an inference form placed ``'after_conv3'``
    and attached (alone) after the branch's last norm (``bn3``/``bn2``, or the ``nn.Identity`` a folded norm left),
    with ``fuses_residual``, or (``expansion``) in a bottleneck whose folded ``conv3`` it can read through
    (``reads_expansion``; the block's ``attn_reads_expansion`` is then set too). Call after
    :func:`~attnkit.deploy.attention_fast.swap_inference_forms`.

    Returns:
        The names of the fused attention modules (``layer2.0.attn``, ...), in model order.
    """
    by_name = {a.module_name: a for a in attachments(model)}
    fused = []
    for name, block in model.named_modules():
        if not isinstance(block, (BasicBlock, Bottleneck)) or block.attn_fused_tail:
            continue
        form = getattr(block, 'attn', None)  # gone when identity attention was folded away
        if block.attn_position != 'after_conv3' or not isinstance(form, InferenceGate):
            continue
        through = (expansion and form.reads_expansion and isinstance(block, Bottleneck)
                   and isinstance(block.bn3, nn.Identity) and plain_expansion(block.conv3))
        if not (through or form.fuses_residual):
            continue
        attn_name = f'{name}.attn' if name else 'attn'
        att = by_name.get(attn_name)
        last_norm = f"{name + '.' if name else ''}{'bn3' if isinstance(block, Bottleneck) else 'bn2'}"
        if att is None or att.attention is not form or att.where != 'after' or att.target_name != last_norm:
            continue
        target = model.get_submodule(att.target_name)
        if list(getattr(target, '_attnkit_after', [])) != [form] or getattr(target, '_attnkit_before', []):
            continue  # something else is attached there too: keep the order as it is
        detach(model, attn_name, keep_module=True)
        block.attn_fused_tail = True
        block.attn_reads_expansion = bool(through)
        fused.append(attn_name)
    return fused
