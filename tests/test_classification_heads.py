"""Classification heads (linear, attnpool, class_attention, ml_decoder) against naive references written here.

Each reference copies the module's weights and spells the attention out as explicit per-head
``softmax(q k^T / sqrt(d)) v``; the recorded maps are checked against the reference's attention weights.
"""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from attnkit.attention import record
from attnkit.errors import ConfigError
from attnkit.heads.classification import attnpool as attnpool_module
from attnkit.heads.classification import class_attention as class_attention_module
from attnkit.heads.classification import ml_decoder as ml_decoder_module
from attnkit.registry import HEADS, build

C, K = 32, 7
TOL = dict(atol=1e-5, rtol=1e-5)


def make(cfg: dict, in_channels: int = C, num_classes: int | None = K) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(HEADS, cfg, in_channels=in_channels, num_classes=num_classes).eval()


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int):
    """q (Lq, C), k/v (L, C) of one sample -> ((Lq, C) output, (heads, Lq, L) weights), loop over heads."""
    d = q.shape[-1] // heads
    outs, weights = [], []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        a = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d), dim=-1)
        outs.append(a @ v[:, sl])
        weights.append(a)
    return torch.cat(outs, dim=-1), torch.stack(weights)


def lin(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


def ln(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


# ----------------------------------------------------------------------------------------------- references

def ref_attnpool(head, x: torch.Tensor):
    """CLIP's AttentionPool2d spelled out; the positional grid resampled here with F.interpolate."""
    n, c, h, w = x.shape
    pos = head.positional_embedding.detach()
    gh, gw = head.feat_size
    grid = pos[1:].reshape(1, gh, gw, c).permute(0, 3, 1, 2)
    if (h, w) != (gh, gw):
        grid = F.interpolate(grid, size=(h, w), mode='bicubic', align_corners=False, antialias=True)
    pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(h * w, c)])
    logits, maps = [], []
    for i in range(n):
        t = x[i].reshape(c, h * w).T
        t = torch.cat([t.mean(0, keepdim=True), t]) + pos
        out, a = naive_attention(lin(t[:1], head.q_proj), lin(t, head.k_proj), lin(t, head.v_proj), head.heads)
        logits.append(lin(lin(out, head.c_proj), head.fc)[0])
        a = a[:, 0]  # (heads, 1 + HW)
        maps.append((a[:, 1:] + a[:, :1] / (h * w)).reshape(-1, h, w))
    return torch.stack(logits), torch.stack(maps)


def clip_attnpool(head, x: torch.Tensor) -> torch.Tensor:
    """CLIP's own forward (openai/CLIP model.py AttentionPool2d) on the head's weights, at the built size."""
    x = x.flatten(start_dim=2).permute(2, 0, 1)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    x = x + head.positional_embedding[:, None, :].to(x.dtype)
    x, _ = F.multi_head_attention_forward(
        query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=head.heads,
        q_proj_weight=head.q_proj.weight, k_proj_weight=head.k_proj.weight, v_proj_weight=head.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([head.q_proj.bias, head.k_proj.bias, head.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0, out_proj_weight=head.c_proj.weight,
        out_proj_bias=head.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False)
    return head.fc(x.squeeze(0))


def ref_class_attention(head, x: torch.Tensor):
    n, c, h, w = x.shape
    logits, maps = [], []
    for i in range(n):
        tokens = x[i].reshape(c, h * w).T
        cls = head.cls_token[0]
        for blk in head.blocks_token_only:
            u = ln(torch.cat([cls, tokens]), blk.norm1)
            out, a = naive_attention(lin(u[:1], blk.attn.q), lin(u, blk.attn.k), lin(u, blk.attn.v), blk.heads)
            cls = cls + blk.gamma_1 * lin(out, blk.attn.proj)
            hidden = F.gelu(lin(ln(cls, blk.norm2), blk.mlp.fc1))
            cls = cls + blk.gamma_2 * lin(hidden, blk.mlp.fc2)
        a = a[:, 0]  # last block's class-token weights (heads, 1 + HW)
        maps.append((a[:, 1:] / a[:, 1:].sum(-1, keepdim=True)).reshape(-1, h, w))
        logits.append(lin(ln(cls, head.norm), head.fc)[0])
    return torch.stack(logits), torch.stack(maps)


def ref_ml_decoder(head, x: torch.Tensor):
    n, c, h, w = x.shape
    logits, maps = [], []
    for i in range(n):
        memory = torch.relu(lin(x[i].reshape(c, h * w).T, head.embed))
        t = head.query_embed
        for layer in head.layers:
            t = ln(t, layer.norm1)
            out, a = naive_attention(lin(t, layer.attn.q), lin(memory, layer.attn.k), lin(memory, layer.attn.v),
                                     layer.heads)
            t = ln(t + lin(out, layer.attn.proj), layer.norm2)
            t = ln(t + lin(torch.relu(lin(t, layer.linear1)), layer.linear2), layer.norm3)
        maps.append(a.mean(0).reshape(-1, h, w))
        per_group = [t[g] @ head.duplicate_pooling[g] for g in range(head.num_groups)]  # group FC
        logits.append(torch.cat(per_group)[:head.num_classes] + head.duplicate_pooling_bias)
    return torch.stack(logits), torch.stack(maps)


# ------------------------------------------------------------------------------------------------- tests

def test_linear_is_mean_pool_then_linear():
    head = make(dict(type='linear', dropout=0.5))
    x = torch.randn(3, C, 5, 3)
    expected = F.linear(x.mean(dim=(2, 3)), head.fc.weight, head.fc.bias)
    torch.testing.assert_close(head(x), expected, **TOL)
    torch.testing.assert_close(head([torch.randn(3, 4, 2, 2), x]), expected, **TOL)  # list: the last map
    torch.testing.assert_close(head(x[:, :, :1, :1]), F.linear(x[:, :, 0, 0], head.fc.weight, head.fc.bias), **TOL)
    with record(head) as maps:
        head(x)
    assert maps == {} and type(head).pooled_maps is None


@pytest.mark.parametrize('size', [(4, 4), (3, 5), (1, 1), (6, 9)])
def test_attnpool_matches_naive_reference_at_any_size(size):
    head = make(dict(type='attnpool', feat_size=4, heads=4))  # built for 4 x 4
    x = torch.randn(2, C, *size)
    with record(head) as maps:
        logits = head(x)
    expected, expected_maps = ref_attnpool(head, x)
    torch.testing.assert_close(logits, expected, **TOL)
    torch.testing.assert_close(maps['AttentionPoolHead'], expected_maps, **TOL)
    assert maps['AttentionPoolHead'].shape == (2, 4, *size)
    if size == (4, 4):
        torch.testing.assert_close(logits, clip_attnpool(head, x), **TOL)


def test_attnpool_without_classifier_returns_pooled_vector():
    head = make(dict(type='attnpool', feat_size=(3, 2), out_dim=24), num_classes=None)
    x = torch.randn(2, C, 3, 2)
    y = head(x)
    assert y.shape == (2, 24)
    torch.testing.assert_close(y, head.pool(x), **TOL)


def test_class_attention_matches_naive_reference_and_timm():
    head = make(dict(type='class_attention', depth=2, heads=4))
    with torch.no_grad():  # LayerScale 1e-5 would hide the attention: make every block count
        for blk in head.blocks_token_only:
            blk.gamma_1.uniform_(0.5, 1.5)
            blk.gamma_2.uniform_(0.5, 1.5)
    x = torch.randn(2, C, 3, 5)
    with record(head) as maps:
        logits = head(x)
    expected, expected_maps = ref_class_attention(head, x)
    torch.testing.assert_close(logits, expected, **TOL)
    torch.testing.assert_close(maps['ClassAttentionHead'], expected_maps, **TOL)
    assert set(maps) == {'ClassAttentionHead', 'ClassAttentionHead.cls', 'ClassAttentionHead.block0',
                         'ClassAttentionHead.block0.cls'}
    # the blocks are timm's CaiT class-attention blocks, parameter for parameter
    from timm.models.cait import LayerScaleBlockClassAttn
    timm_block = LayerScaleBlockClassAttn(C, num_heads=4, qkv_bias=True,
                                          norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)).eval()
    timm_block.load_state_dict(head.blocks_token_only[0].state_dict())
    tokens, cls = torch.randn(2, 6, C), torch.randn(2, 1, C)
    torch.testing.assert_close(head.blocks_token_only[0](cls, tokens), timm_block(tokens, cls), **TOL)


@pytest.mark.parametrize('num_groups', [None, 3])
def test_ml_decoder_matches_naive_reference(num_groups):
    head = make(dict(type='ml_decoder', num_groups=num_groups, embed_dim=16, heads=4, ffn_dim=24, depth=2))
    x = torch.randn(2, C, 4, 3)
    with record(head) as maps:
        logits = head(x)
    expected, expected_maps = ref_ml_decoder(head, x)
    groups = num_groups or K
    assert logits.shape == (2, K) and head.duplicate_pooling.shape == (groups, 16, math.ceil(K / groups))
    torch.testing.assert_close(logits, expected, **TOL)
    torch.testing.assert_close(maps['MLDecoderHead'], expected_maps, **TOL)
    assert maps['MLDecoderHead.layer0'].shape == (2, groups, 4, 3)


HEAD_CFGS = [dict(type='linear', dropout=0.1), dict(type='attnpool', feat_size=3, heads=2),
             dict(type='class_attention', heads=2, embed_dim=16),
             dict(type='ml_decoder', num_groups=4, embed_dim=16, heads=2, ffn_dim=16, dropout=0.1)]


@pytest.mark.parametrize('cfg', HEAD_CFGS, ids=lambda c: c['type'])
def test_gradients_bf16_and_recorded_maps(cfg):
    head = make(cfg).train()
    x = torch.randn(2, C, 5, 4, requires_grad=True)
    head(x).square().sum().backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing and x.grad.abs().sum() > 0
    head.eval()
    # bf16: a bf16 head on bf16 input, and autocast on the float32 head, both close to float32
    x32 = torch.randn(2, C, 5, 4)
    ref = head(x32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        auto = head(x32.bfloat16())
    low = head.to(torch.bfloat16)(x32.bfloat16())
    head.float()
    for y in (auto, low):
        assert y.dtype == torch.bfloat16 and y.shape == (2, K)
        torch.testing.assert_close(y.float(), ref, atol=0.15, rtol=0.1)
    # recorded maps: the stated shape, summing to 1 over the positions, at odd sizes and 1 x 1
    stated = type(head).pooled_maps
    for size in ((5, 4), (1, 1), (7, 3)):
        with record(head) as maps:
            head(torch.randn(2, C, *size))
        if stated is None:
            assert maps == {}
            continue
        m = maps[type(head).__name__]
        lead = {'(N, heads, H, W)': head.heads, '(N, G, H, W)': getattr(head, 'num_groups', None)}[stated]
        assert m.shape == (2, lead, *size)
        torch.testing.assert_close(m.sum(dim=(-2, -1)), torch.ones(2, lead), atol=1e-5, rtol=0)


def test_maps_only_computed_while_recording(monkeypatch):
    heads = [make(cfg) for cfg in HEAD_CFGS[1:]]

    def fail(*args, **kwargs):
        raise AssertionError('attention weights computed outside record()')

    for module in (attnpool_module, ml_decoder_module):
        monkeypatch.setattr(module, 'query_probs', fail)
    monkeypatch.setattr(class_attention_module, 'query_logits', fail)
    for head in heads:
        assert head(torch.randn(1, C, 3, 3)).shape == (1, K)


def test_fixed_queries_and_bad_input():
    head = make(dict(type='ml_decoder', embed_dim=16, heads=2, ffn_dim=16, learn_queries=False))
    assert 'query_embed' in head.state_dict() and 'query_embed' not in dict(head.named_parameters())
    with pytest.raises(ValueError, match=r'expects input \(N, 32, H, W\), got \(2, 8, 3, 3\)'):
        make(dict(type='attnpool'))(torch.randn(2, 8, 3, 3))
    with pytest.raises(ConfigError, match="'attnpool'"):
        make(dict(type='attnpol'))
    with pytest.raises(ConfigError, match="'feat_size'"):
        make(dict(type='attnpool', feat_szie=7))
    with pytest.raises(ValueError, match='divisible by heads'):
        make(dict(type='class_attention', heads=5))
    with pytest.raises(ValueError, match='num_classes'):
        make(dict(type='class_attention'), num_classes=0)


def test_attnpool_exports_with_dynamic_size():
    """torch.export with dynamic H, W: the positional grid is resampled in the graph, not specialised to
    feat_size (the built size goes through the same resampling, which is exact there)."""
    from torch.export import Dim, export
    head = make(dict(type='attnpool', feat_size=4, heads=2))
    program = export(head, (torch.randn(2, C, 6, 5),),
                     dynamic_shapes=({2: Dim('H', min=1, max=32), 3: Dim('W', min=1, max=32)},)).module()
    for size in ((4, 4), (9, 3), (1, 1)):
        x = torch.randn(2, C, *size)
        torch.testing.assert_close(program(x), head(x), **TOL)
