"""FPN: output shapes/strides for every extra-level mode, top-down wiring, attention on outputs, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit import build_neck
from attnkit.errors import ConfigError
from attnkit.necks import FPN

IN_CHANNELS = (8, 16, 32, 64)
IN_STRIDES = (4, 8, 16, 32)


def _inputs(size: tuple[int, int] = (64, 80), channels=IN_CHANNELS, strides=IN_STRIDES) -> list[torch.Tensor]:
    torch.manual_seed(0)
    h, w = size
    return [torch.randn(2, c, -(-h // s), -(-w // s)) for c, s in zip(channels, strides)]


def _half(n: int) -> int:  # size after a 3x3 stride-2 conv with padding 1 (or a 1x1 stride-2 pool)
    return (n - 1) // 2 + 1


@pytest.mark.parametrize('mode', [False, 'on_input', 'on_lateral', 'on_output', True])
def test_shapes_and_strides_per_extra_mode(mode) -> None:
    fpn = FPN(IN_CHANNELS[1:], 16, num_outs=5, add_extra_convs=mode, in_strides=IN_STRIDES[1:])
    outs = fpn(_inputs()[1:])
    assert fpn.strides == (8, 16, 32, 64, 128) and fpn.out_channels == (16,) * 5
    sizes = [(8, 10), (4, 5), (2, 3)]
    sizes += [(_half(sizes[-1][0]), _half(sizes[-1][1]))]
    sizes += [(_half(sizes[-1][0]), _half(sizes[-1][1]))]
    assert [tuple(o.shape) for o in outs] == [(2, 16, *s) for s in sizes]
    assert len(fpn.extra_convs) == (0 if mode is False else 2)
    if mode in ('on_input', True):
        assert fpn.extra_convs[0].in_channels == 64
    elif mode:
        assert fpn.extra_convs[0].in_channels == 16


def test_extra_levels_by_pooling_and_on_output_relu() -> None:
    x = _inputs()[1:]
    pool = FPN(IN_CHANNELS[1:], 16, num_outs=5)
    outs = pool(x)
    assert torch.equal(outs[3], F.max_pool2d(outs[2], 1, stride=2)) and torch.equal(outs[4], outs[3][..., ::2, ::2])
    fcos = FPN(IN_CHANNELS[1:], 16, num_outs=5, add_extra_convs='on_output', relu_before_extra_convs=True)
    outs = fcos(x)
    torch.testing.assert_close(outs[3], fcos.extra_convs[0](outs[2]))
    torch.testing.assert_close(outs[4], fcos.extra_convs[1](F.relu(outs[3])))
    no_relu = FPN(IN_CHANNELS[1:], 16, num_outs=5, add_extra_convs='on_output')
    no_relu.load_state_dict(fcos.state_dict())
    torch.testing.assert_close(no_relu(x)[4], fcos.extra_convs[1](outs[3]))


@pytest.mark.parametrize('mode', ['nearest', 'bilinear'])
def test_top_down_sum(mode: str) -> None:
    """P_i = fpn_conv(lateral_i + upsample(lateral_{i+1} + upsample(...))), on odd input sizes."""
    x = _inputs(size=(61, 75))
    fpn = FPN(IN_CHANNELS, 16, num_outs=4, upsample_mode=mode)
    outs = fpn(x)
    lat = [conv(t) for conv, t in zip(fpn.lateral_convs, x)]
    kw = {} if mode == 'nearest' else {'align_corners': False}
    for i in (2, 1, 0):
        lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode=mode, **kw)
    for out, conv, la, src in zip(outs, fpn.fpn_convs, lat, x):
        assert out.shape[-2:] == src.shape[-2:]
        torch.testing.assert_close(out, conv(la))


def test_start_and_end_level() -> None:
    fpn = FPN(IN_CHANNELS, 16, num_outs=2, start_level=1, end_level=2, in_strides=IN_STRIDES)
    outs = fpn(_inputs())
    assert fpn.strides == (8, 16) and [o.shape[-1] for o in outs] == [10, 5]
    assert len(fpn.lateral_convs) == 2 and fpn.lateral_convs[0].in_channels == 16
    retina = FPN(IN_CHANNELS, 16, num_outs=5, start_level=1, add_extra_convs='on_input', in_strides=IN_STRIDES)
    assert retina.strides == (8, 16, 32, 64, 128) and len(retina(_inputs())) == 5
    assert FPN(IN_CHANNELS, 16, num_outs=4).strides is None


@pytest.mark.parametrize('att', ['se', 'cbam'])
def test_attention_on_every_output(att: str) -> None:
    x = _inputs()[1:]
    torch.manual_seed(0)
    plain = FPN(IN_CHANNELS[1:], 16, num_outs=5, add_extra_convs='on_output')
    neck = build_neck(dict(type='FPN', in_channels=IN_CHANNELS[1:], out_channels=16, num_outs=5,
                           add_extra_convs='on_output', attention=dict(type=att)))
    assert len(neck.attn) == 5 and len({id(m) for m in neck.attn}) == 5  # one module per level, not shared
    assert all(m.channels == 16 and not m.identity_init for m in neck.attn)
    missing, unexpected = neck.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith('attn.') for k in missing)
    ref, outs = plain(x), neck(x)
    # Each level is its own module applied to the plain FPN output (extra levels read the pre-attention
    # last output, as in the plain FPN).
    for i in range(5):
        torch.testing.assert_close(outs[i], neck.attn[i](ref[i]))
        assert not torch.allclose(outs[i], ref[i])
    ident = FPN(IN_CHANNELS[1:], 16, num_outs=5, add_extra_convs='on_output',
                attention=dict(type=att, identity_init=True))
    ident.load_state_dict(plain.state_dict(), strict=False)
    for a, b in zip(ident(x), ref):
        assert torch.equal(a, b)


def test_channels_last_kept() -> None:
    x = [t.to(memory_format=torch.channels_last) for t in _inputs()[1:]]
    fpn = FPN(IN_CHANNELS[1:], 16, num_outs=5, add_extra_convs='on_output').to(memory_format=torch.channels_last)
    assert all(o.is_contiguous(memory_format=torch.channels_last) for o in fpn(x))


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_outs=2), 'num_outs'),
    (dict(num_outs=3, end_level=1), 'num_outs'),
    (dict(num_outs=3, start_level=4), 'start_level'),
    (dict(num_outs=5, add_extra_convs='on_top'), 'add_extra_convs'),
    (dict(num_outs=4, upsample_mode='cubic'), 'upsample_mode'),
    (dict(num_outs=4, in_strides=(8, 16)), 'in_strides'),
    (dict(num_outs=4, attention=dict(type='sqeeze')), 'sqeeze'),
])
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FPN(IN_CHANNELS, 16, **kwargs)


def test_wrong_inputs() -> None:
    fpn = FPN(IN_CHANNELS, 16, num_outs=4)
    with pytest.raises(ValueError, match='4 input maps'):
        fpn(_inputs()[1:])
    with pytest.raises(ValueError, match=r'channels \(8, 16, 32, 64\)'):
        fpn(_inputs(channels=(8, 16, 32, 32)))
