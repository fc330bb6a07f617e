"""Statistics read through a bottleneck's 1x1 expansion (attnkit.deploy.map_stats), GC's fused tail that uses
them, and the fp32 gate math of the inference forms under bf16 autocast."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.attention import attachments
from attnkit.builder import build_attention, build_backbone
from attnkit.deploy import prepare_fast
from attnkit.deploy.attention_fast import FastGC, inference_form
from attnkit.deploy.map_stats import (channel_dot, expanded_weighted_sum, expansion_pays, expansion_weight,
                                      hw_weighted_sum, plain_expansion, run_expansion)

from _norms import randomise_norms

FORMATS = [torch.contiguous_format, torch.channels_last]
GC_FUSIONS = ['add', 'scale', ('scale', 'add')]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1.0)).item()


def _expansion(c_in: int, c_out: int, bias: bool, seed: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 1, bias=bias)
    if bias:
        nn.init.uniform_(conv.bias, -1, 1)
    return conv.eval()


@pytest.mark.parametrize('fmt', FORMATS, ids=['nchw', 'nhwc'])
def test_map_statistics_equal_their_direct_computation(fmt):
    """channel_dot and hw_weighted_sum on the map's own layout, and the weighted sum read through the expansion,
    against einsum over the NCHW map; run_expansion's folded scale and shift against ``conv(z) * s + t``."""
    torch.manual_seed(0)
    z = torch.randn(2, 6, 5, 7).contiguous(memory_format=fmt)
    v, c = torch.randn(2, 6), torch.randn(2)
    expected = torch.einsum('nchw,nc->nhw', z, v).reshape(2, -1) + c[:, None]
    assert _rel(expected, channel_dot(z, v, c)) <= 1e-6
    assert _rel(expected - c[:, None], channel_dot(z, v)) <= 1e-6
    w = torch.softmax(torch.randn(2, 35), 1)
    assert _rel(torch.einsum('nchw,nhw->nc', z, w.reshape(2, 5, 7)), hw_weighted_sum(z, w)) <= 1e-6
    for bias in (True, False):
        conv = _expansion(6, 24, bias, 1)
        with torch.no_grad():
            x = conv(z)
            got = expanded_weighted_sum(z, expansion_weight(conv), conv.bias, w * 0.9)  # weights need not sum to 1
            assert _rel(hw_weighted_sum(x, w * 0.9), got) <= 1e-5
            scale, shift = torch.rand(24) + 0.5, torch.randn(24)
            assert _rel(conv(z[:1]) * scale[:, None, None] + shift[:, None, None],
                        run_expansion(z[:1], conv, scale, shift)) <= 1e-5
            assert torch.equal(run_expansion(z, conv), conv(z))


def test_expansion_pays_and_plain_expansion():
    """Reading through the expansion where z plus the weight is less to read than the output; only bare 1x1
    stride-1 convolutions without hooks are expansions."""
    conv = nn.Conv2d(512, 2048, 1)
    assert not expansion_pays(torch.empty(1, 512, 16, 16), conv)  # R50 layer4 at 512²: 2048 x 512 weights
    assert expansion_pays(torch.empty(1, 256, 32, 32), nn.Conv2d(256, 1024, 1))  # layer3
    assert expansion_pays(torch.empty(4, 512, 16, 16), conv)  # a batch of 4 reads 4 maps
    assert plain_expansion(conv)
    assert not plain_expansion(nn.Conv2d(8, 32, 3, padding=1))
    assert not plain_expansion(nn.Conv2d(8, 32, 1, stride=2))
    assert not plain_expansion(nn.Conv2d(8, 32, 1, groups=2))
    hooked = nn.Conv2d(8, 32, 1)
    hooked.register_forward_hook(lambda *a: None)
    assert not plain_expansion(hooked)


@pytest.mark.parametrize('fmt', FORMATS, ids=['nchw', 'nhwc'])
@pytest.mark.parametrize('fusion', GC_FUSIONS, ids=str)
def test_gc_expansion_tail_computes_relu_of_module_plus_identity(fusion, fmt):
    """``FastGC.forward_expansion(z, conv, identity)`` = ``relu(gc(conv(z)) + identity)`` (1e-5) for every fusion,
    with and without gamma and conv bias, one sample (terms folded into the conv) and two, on maps where reading
    through the expansion pays (16 x 12) and where it does not (2 x 2: the map path); inputs unwritten."""
    for gamma in (True, False):
        for bias in (True, False):
            for n, (h, w) in ((1, (16, 12)), (2, (16, 12)), (1, (2, 2)), (2, (2, 2))):
                torch.manual_seed(n + h)
                module = build_attention(dict(type='gc', fusion=fusion), 32, identity_init=gamma).eval()
                randomise_norms(module, n, gammas=True)
                conv = _expansion(8, 32, bias, n + h)
                z = torch.randn(n, 8, h, w).contiguous(memory_format=fmt)
                identity = torch.randn(n, 32, h, w).contiguous(memory_format=fmt)
                before = (z.clone(), identity.clone())
                form = inference_form(module)
                assert form.reads_expansion and expansion_pays(z, conv) == (h == 16)
                with torch.no_grad():
                    expected = torch.relu(module(conv(z)) + identity)
                    got = form.forward_expansion(z, conv, identity)
                assert _rel(expected, got) <= 1e-5, (fusion, gamma, bias, n, h, _rel(expected, got))
                assert got.is_contiguous(memory_format=fmt)
                assert torch.equal(z, before[0]) and torch.equal(identity, before[1])


def test_gc_expansion_cache_follows_new_weights():
    """The fp32 copies GC keeps of conv3's weight (and the logit conv read through it) are rebuilt when the
    weights change (a state dict loaded in place, a cast to bf16), so the output follows them."""
    torch.manual_seed(0)
    module = build_attention(dict(type='gc'), 32, identity_init=True).eval()
    randomise_norms(module, 0, gammas=True)
    form, conv = inference_form(module), _expansion(8, 32, True, 0)
    z, identity = torch.randn(1, 8, 16, 12), torch.randn(1, 32, 16, 12)
    with torch.no_grad():
        form.forward_expansion(z, conv, identity)
        conv.load_state_dict({'weight': conv.weight * -2, 'bias': conv.bias + 1})
        module.context_logits.load_state_dict({k: v * 3 for k, v in module.context_logits.state_dict().items()})
        assert _rel(torch.relu(module(conv(z)) + identity), form.forward_expansion(z, conv, identity)) <= 1e-5
        conv.weight.data = conv.weight.data.bfloat16()  # as cast_weights_bf16 stores them: a new tensor
        weight, _, _, _ = form._expansion_fp32(conv)
        assert weight.dtype == torch.float32 and torch.equal(weight, expansion_weight(conv).float())


@pytest.mark.parametrize('fusion', GC_FUSIONS, ids=str)
def test_fast_path_reads_gc_statistics_through_conv3(fusion):
    """A ResNet-50 with GC in every block of layers 2-4: every form runs conv3 and the residual tail (gc 'add'
    included), is unhooked but keeps its state-dict keys, and the stage outputs equal eager (5e-4, 16 folded
    random blocks) for one and two images, both memory formats; ``read_expansion=False`` reads the map instead
    (and leaves gc 'add' unfused); a ResNet-18 (no 1x1 expansion) fuses no 'add'-only tail."""
    torch.manual_seed(0)
    model = build_backbone(dict(type='ResNet', depth=50, base_channels=8, identity_init=True,
                                attention=dict(type='gc', fusion=fusion))).eval()
    randomise_norms(model, gammas=True)
    names = [a.module_name for a in attachments(model)]
    for n in (1, 2):
        x = torch.randn(n, 3, 96, 64)
        with torch.no_grad():
            expected = model(x)
        for channels_last in (True, False):
            fast, report = prepare_fast(copy.deepcopy(model), bf16=False, channels_last=channels_last)
            assert report.fused_tails == names and report.expansion_tails == names and len(names) == 13
            assert f"({len(names)} reading conv3's input)" in report.summary()
            assert all(fast.get_submodule(a.rpartition('.')[0]).attn_reads_expansion for a in names)
            assert fast.state_dict().keys() == prepare_fast(copy.deepcopy(model), bf16=False, fuse_residual=False
                                                            )[0].state_dict().keys()
            for a, b in zip(expected, fast(x)):
                assert _rel(a, b) <= 5e-4, (fusion, n, channels_last, _rel(a, b))
    _, report = prepare_fast(copy.deepcopy(model), bf16=False, read_expansion=False)
    assert report.expansion_tails == [] and report.fused_tails == ([] if fusion == 'add' else names)
    r18 = build_backbone(dict(type='ResNet', depth=18, base_channels=8, identity_init=True,
                              attention=dict(type='gc', fusion=fusion))).eval()
    randomise_norms(r18, gammas=True)
    _, report = prepare_fast(r18, bf16=False)
    assert report.expansion_tails == [] and bool(report.fused_tails) == (fusion != 'add')


@pytest.mark.parametrize('kind', ['se', 'eca', 'cbam', 'gc'])
def test_bf16_fast_path_computes_the_gates_in_fp32(kind):
    """With bf16 on, the forms' gate layers keep fp32 weights (the convolutions get bf16 ones) and their gates
    come out in fp32 under autocast, while the maps stay bf16; the stage outputs are as close to the eager fp32
    model as the eager modules under bf16 autocast are (16 random blocks round by a few %)."""
    torch.manual_seed(0)
    model = build_backbone(dict(type='ResNet', depth=50, base_channels=8, identity_init=True,
                                attention=dict(type=kind))).eval()
    randomise_norms(model, gammas=True)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        expected = model(x)
    fast, report = prepare_fast(copy.deepcopy(model), bf16=True)
    forms = [m for m in fast.modules() if getattr(m, 'source_type', '') == kind]
    assert len(forms) == 13 and report.bf16_weights > 0
    gate_layers = [p for f in forms for p in f.parameters()]
    assert gate_layers and all(p.dtype == torch.float32 for p in gate_layers)
    assert fast.layer2[0].conv1.weight.dtype == torch.bfloat16
    form = forms[0]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        pooled = torch.randn(1, form.channels).bfloat16()
        if kind in ('se', 'eca'):
            gate = form._gate_of_mean(pooled)
        elif kind == 'cbam':
            gate = form._channel_gate(torch.cat([pooled, pooled]), 1)
        else:
            gate = form._shift(pooled)
        assert gate.dtype == torch.float32
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        autocast = model(x)  # the eager modules in bf16: the rounding bf16 brings anyway
    for a, b, c in zip(expected, fast(x), autocast):
        assert b.dtype == torch.bfloat16 and _rel(a, b.float()) <= 2 * _rel(a, c.float()) + 1e-2, \
            (kind, _rel(a, b.float()), _rel(a, c.float()))


def test_gc_detector_fast_path_gives_the_eager_detections():
    """An FCOS detector on a ResNet-50 with GC (the ``fcos_r50-gc`` layout, tiny widths) through prepare_fast in
    fp32: one image (the 'add' term folded into conv3's bias) and a batch of two (the term added on the map) give
    the eager model's labels, boxes (1e-3 px) and scores (1e-5)."""
    from attnkit import build_model
    torch.manual_seed(0)
    cfg = dict(type='Detector',
               backbone=dict(type='ResNet', depth=50, base_channels=8, out_indices=(1, 2, 3), identity_init=True,
                             attention=dict(type='gc', stages=(False, True, True, True))),
               neck=dict(type='FPN', out_channels=16, num_outs=3),
               head=dict(type='FCOSHead', feat_channels=16, stacked_convs=2, strides=(8, 16, 32),
                         regress_ranges=((-1, 16), (16, 32), (32, 1e8)), score_thr=0.0, max_per_img=50))
    model = build_model(cfg, metainfo={'classes': ['a', 'b', 'c']}).eval()
    randomise_norms(model, gammas=True)
    fast, report = prepare_fast(copy.deepcopy(model), bf16=False)
    assert len(report.expansion_tails) == 13 and all(n.startswith('backbone.layer') for n in report.expansion_tails)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8, generator=g)
    meta = {'ori_size': (96, 96), 'img_size': (96, 96), 'scale_factor': (1.0, 1.0)}
    for n in (1, 2):
        batch = {'images': images[:n], 'metas': [dict(meta) for _ in range(n)]}
        with torch.no_grad():
            expected = model(batch)
        for e, got in zip(expected, fast(batch)):
            assert len(e['boxes']) == 50 and torch.equal(e['labels'], got['labels'])
            assert torch.allclose(e['boxes'], got['boxes'], atol=1e-3)
            assert torch.allclose(e['scores'], got['scores'], atol=1e-5)
