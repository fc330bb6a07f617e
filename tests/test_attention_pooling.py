"""Attention-guided downsampling (lip, softpool, guided, avg) and the ResNet ``downsample=`` option."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnkit.attention import create_pooling, record
from attnkit.backbones.resnet import ResNet
from attnkit.errors import ConfigError

C = 6
TYPES = ('lip', 'softpool', 'guided', 'avg')
TINY = dict(depth=18, base_channels=8)


def perturb(module: torch.nn.Module) -> torch.nn.Module:
    """Move the identity-initialised parameters away from zero (so the pool is not plain averaging)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith('logit.norm3') or name == 'gamma':
                p.copy_(torch.randn_like(p) * 0.8 + 0.5)
    return module


def windows(h: int, w: int, kernel: int, stride: int, pad: int, ceil_mode: bool):
    """(output index, list of valid input positions) of every pooling window, written out by hand."""
    oh = math.ceil(h / 2)
    ow = math.ceil(w / 2)
    for i in range(oh):
        for j in range(ow):
            ys = [y for y in range(i * stride - pad, i * stride - pad + kernel) if 0 <= y < h]
            xs = [x for x in range(j * stride - pad, j * stride - pad + kernel) if 0 <= x < w]
            yield (i, j), [(y, x) for y in ys for x in xs]


def naive_weighted_pool(x: torch.Tensor, weight: torch.Tensor, kernel: int, stride: int, pad: int) -> torch.Tensor:
    """sum(w x) / sum(w) per window in float64, weight (N, C or 1, H, W)."""
    x, weight = x.double(), weight.double().expand_as(x)
    n, c, h, w = x.shape
    out = torch.zeros(n, c, math.ceil(h / 2), math.ceil(w / 2), dtype=torch.float64)
    for (i, j), pos in windows(h, w, kernel, stride, pad, True):
        ys, xs = zip(*pos)
        wv, xv = weight[:, :, list(ys), list(xs)], x[:, :, list(ys), list(xs)]
        out[:, :, i, j] = (wv * xv).sum(-1) / wv.sum(-1)
    return out


@pytest.mark.parametrize('name', TYPES)
def test_shapes_gradients_bf16_and_channels_last(name):
    torch.manual_seed(0)
    m = perturb(create_pooling(name, C))
    for h, w in ((1, 1), (5, 7), (2, 3), (8, 8)):
        x = torch.randn(2, C, h, w, requires_grad=True)
        y = m(x)
        assert y.shape == (2, C, math.ceil(h / 2), math.ceil(w / 2)) and y.dtype == torch.float32
        y.square().sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    learned = {'lip': 'logit.norm3.weight', 'guided': 'gamma'}.get(name)
    if learned is not None:  # the importance is learned
        assert m.get_parameter(learned).grad.abs().sum() > 0
    x = torch.randn(2, C, 9, 11)
    ref = m(x)
    xc = x.contiguous(memory_format=torch.channels_last)
    yc = m(xc)
    assert yc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(yc, ref, rtol=1e-5, atol=1e-5)
    y16 = m.to(torch.bfloat16)(x.bfloat16())
    assert y16.dtype == torch.bfloat16 and (y16.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05
    with torch.autocast('cpu', dtype=torch.bfloat16):
        z = m.float()(x)
    assert torch.isfinite(z).all() and z.shape == ref.shape


def test_lip_uniform_logits_is_average_pooling_exactly_and_weighted_otherwise():
    torch.manual_seed(0)
    m = create_pooling('lip', C)
    for shape in ((2, C, 7, 9), (1, C, 1, 1), (2, C, 2, 5), (2, C, 16, 16)):
        x = torch.randn(shape) * 3
        assert torch.equal(m(x), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))
        xc = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(m(xc), F.avg_pool2d(xc, 3, 2, 1, count_include_pad=False))
    perturb(m)
    x = torch.randn(2, C, 7, 9)
    with torch.no_grad(), record(m) as maps:
        y = m(x)
        logits = m.logits(x)
    assert 0 < logits.min() and logits.max() < 12 and logits.std() > 0.1
    torch.testing.assert_close(y.double(), naive_weighted_pool(x, logits.exp(), 3, 2, 1), rtol=1e-5, atol=1e-5)
    assert (y - F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)).abs().max() > 1e-2
    # the recorded importance: channel mean of exp(logit - max over the map)
    expected = (logits - logits.amax((2, 3), keepdim=True)).exp().mean(1, keepdim=True)
    torch.testing.assert_close(maps['LIP'], expected)


def test_softpool_matches_a_naive_loop_and_is_stable_for_large_activations():
    torch.manual_seed(0)
    m = create_pooling('softpool', C)
    for scale, shift in ((1.0, 0.0), (60.0, 500.0)):  # exp(500) overflows float32 without the max shift
        x = torch.randn(2, C, 7, 5) * scale + shift
        ref = torch.zeros(2, C, 4, 3, dtype=torch.float64)
        for (i, j), pos in windows(7, 5, 2, 2, 0, True):
            ys, xs = zip(*pos)
            v = x.double()[:, :, list(ys), list(xs)]
            ref[:, :, i, j] = (torch.softmax(v, -1) * v).sum(-1)
        with record(m) as maps:
            y = m(x)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * scale)
        expected = (x - x.amax((2, 3), keepdim=True)).exp().mean(1, keepdim=True)
        torch.testing.assert_close(maps['SoftPool'], expected)


@pytest.mark.parametrize('attention', ['cbam', 'coord'])
def test_guided_pool_uses_the_attention_map_against_a_naive_reference(attention):
    torch.manual_seed(0)
    x = torch.randn(2, C, 9, 6)
    m = create_pooling('guided', C, attention=dict(type=attention, reduction=2)).eval()
    assert torch.equal(m(x), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))  # gamma = 0: average pooling
    with torch.no_grad():
        m.gamma.fill_(1.7)
    with record(m.attention) as inner:  # the map the attention module itself records
        m.attention(x)
    a = inner[type(m.attention).__name__]
    assert a.shape == (2, 1, 9, 6) and a.std() > 0
    with record(m) as maps:
        y = m(x)
    torch.testing.assert_close(y.double(), naive_weighted_pool(x, a.pow(1.7), 3, 2, 1), rtol=1e-5, atol=1e-5)
    w = a.pow(1.7)
    torch.testing.assert_close(maps['AttentionGuidedPool'], w / w.amax((2, 3), keepdim=True))
    torch.testing.assert_close(maps['attention'], a)  # the inner module still records under its own name
    y.sum().backward()  # the weights are trained: gradients reach gamma and the attention module
    assert m.gamma.grad.abs() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.attention.parameters())
    plain = create_pooling('guided', C, attention='simam', identity_init=False)
    with record(plain.attention) as inner:
        plain.attention(x)
    torch.testing.assert_close(plain(x).double(), naive_weighted_pool(x, inner['SimAM'], 3, 2, 1),
                               rtol=1e-5, atol=1e-5)


def test_bad_input_names_what_is_wrong():
    with pytest.raises(ConfigError, match=r"Unknown pooling type 'lipp'.*'lip'"):
        create_pooling('lipp', C)
    with pytest.raises(ConfigError, match=r"'se' records a map of shape \(1, 6\).*cbam, coord"):
        create_pooling('guided', C, attention='se')
    with pytest.raises(ConfigError, match=r"Unknown attention type 'cbma'.*'cbam'"):
        create_pooling('guided', C, attention='cbma')
    for name in TYPES:
        m = create_pooling(name, C)
        with pytest.raises(ValueError, match=r'expects input \(N, 6, H, W\), got \(2, 5, 4, 4\)'):
            m(torch.randn(2, 5, 4, 4))
        with pytest.raises(ValueError, match=r'at least 1x1, got \(2, 6, 0, 4\)'):
            m(torch.randn(2, C, 0, 4))
    with pytest.raises(ConfigError, match="'layer1' has no stride-2"):
        ResNet(**TINY, downsample=dict(type='lip', places=('stem', 'layer1')))
    with pytest.raises(ConfigError, match=r"place 'layr3'.*'layer3'"):
        ResNet(**TINY, downsample=dict(type='lip', places=('layr3',)))
    with pytest.raises(ConfigError, match="'layer4' has no stride-2 operation: layer4 is dilated"):
        ResNet(**TINY, output_stride=16, downsample=dict(type='lip', places=('stem', 'layer4')))
    with pytest.raises(ConfigError, match="'layer4' has no stride-2 operation: layer4 is not built"):
        ResNet(**TINY, out_indices=(0, 1), downsample=dict(type='lip', places=('layer4',)))
    with pytest.raises(ConfigError, match=r"Unknown pooling type 'softpol'.*'softpool'"):
        ResNet(**TINY, downsample=dict(type='softpol'))


def test_resnet_downsample_loads_plain_weights_equals_avg_records_and_trains(tmp_path):
    torch.manual_seed(0)
    plain = ResNet(**TINY).eval()
    torch.save(plain.state_dict(), tmp_path / 'plain.pth')
    lip = ResNet(**TINY, downsample=dict(type='lip'), pretrained=str(tmp_path / 'plain.pth')).eval()
    report = lip.pretrained_report
    pool_modules = ('maxpool', 'layer2.0.pool', 'layer2.0.downsample_pool', 'layer3.0.pool',
                    'layer3.0.downsample_pool', 'layer4.0.pool', 'layer4.0.downsample_pool')
    assert report.unexpected == [] and report.missing
    assert {k.split('.logit.')[0] for k in report.missing} == set(pool_modules)
    assert sorted(report.loaded) == sorted(plain.state_dict())  # every conv / norm key kept its name and shape
    # at identity init the LIP network is the average-pooling network with the same weights, bit for bit
    avg = ResNet(**TINY, downsample=dict(type='avg'), pretrained=str(tmp_path / 'plain.pth')).eval()
    x = torch.randn(2, 3, 45, 37)
    with record(lip) as maps:
        out = lip(x)
    assert all(torch.equal(a, b) for a, b in zip(out, avg(x)))
    assert [o.shape[2:] for o in out] == [o.shape[2:] for o in plain(x)]
    assert set(maps) == set(pool_modules) and maps['maxpool'].shape == (2, 1, 23, 19)
    assert all(torch.equal(v, torch.ones_like(v)) for v in maps.values())  # uniform importance at init
    # the stride moved from the convs to the downsamplers; plain-ResNet names untouched
    assert lip.layer2[0].conv1.stride == (1, 1) and lip.layer2[0].downsample[0].stride == (1, 1)
    assert lip.layer2[0].stride == 2 and plain.layer2[0].conv1.stride == (2, 2)
    # one training step: the loss falls on a repeated batch and the LIP logits learn
    lip.train()
    opt = torch.optim.SGD(lip.parameters(), lr=0.05)
    losses = []
    for _ in range(3):
        loss = lip(x)[-1].square().mean()
        opt.zero_grad()
        loss.backward()
        assert lip.layer3[0].pool.logit.norm3.weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert lip.maxpool.logit.norm3.weight.abs().sum() > 0


def test_resnet_downsample_other_types_and_training_options():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 33, 33)
    for cfg in (dict(type='softpool'), dict(type='guided', attention='cbam', places=('layer3',))):
        m = ResNet(**TINY, downsample=cfg)
        assert [o.shape[2:] for o in m(x)] == [(9, 9), (5, 5), (3, 3), (2, 2)]
    m = ResNet(depth=50, base_channels=8, downsample=dict(type='lip'), output_stride=16, frozen_stages=1,
               norm_eval=True, out_indices=(1, 3))
    assert m.downsample_places == ('stem', 'layer2', 'layer3') and m.layer4[0].pool is None
    assert [o.shape[2:] for o in m(x)] == [(5, 5), (3, 3)]
    assert not any(p.requires_grad for p in m.maxpool.parameters())  # the stem downsampler is frozen with it
    assert all(p.requires_grad for p in m.layer2[0].pool.parameters())
    m.train()
    assert not m.maxpool.training and m.layer2[0].pool.training and not m.layer2[0].bn1.training
