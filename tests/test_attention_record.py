"""attnkit.attention.record(): map shapes, consistency with the outputs, and nothing kept outside."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.attention import AttentionModule, create_attention, record
from attnkit.registry import ATTENTION

C, N, H, W = 8, 2, 5, 7
HEADS = {'mhsa': 4}
SELF_ATTENTION = ('nonlocal', 'mhsa', 'danet_pam', 'criss_cross')


def expected_shapes(name: str, query: bool) -> dict[str, tuple[int, ...]]:
    if name in ('se', 'eca'):
        return {'': (N, C)}
    if name == 'cbam':
        return {'': (N, 1, H, W), '.channel': (N, C)}
    if name in ('coord', 'simam', 'gc'):
        return {'': (N, 1, H, W)}
    if name == 'danet_cam':
        return {'': (N, C, C)}
    heads = HEADS.get(name, 1)
    return {'': (N, heads, H, W) if query else (N, heads, H * W, H * W)}


@pytest.mark.parametrize('query', [None, (2, 3)])
@pytest.mark.parametrize('name', [n for n in sorted(ATTENTION.module_dict) if not n.startswith('_')])  # '_': test stand-ins
def test_map_shapes_in_a_model(name, query):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, C, 1), create_attention(name, C))
    with record(model, query=query) as maps:
        model(torch.randn(N, 3, H, W))
    assert {k: tuple(v.shape) for k, v in maps.items()} == \
        {'1' + suffix: shape for suffix, shape in expected_shapes(name, query is not None).items()}
    assert all(not v.requires_grad for v in maps.values())


@pytest.mark.parametrize('name', SELF_ATTENTION)
def test_self_attention_maps_are_distributions_and_query_is_a_row(name):
    torch.manual_seed(0)
    m = create_attention(name, C)
    x = torch.randn(N, C, H, W)
    with record(m) as full, torch.no_grad():
        y_full = m(x)
    with record(m, query=(2, 3)) as one, torch.no_grad():
        y_one = m(x)
    key = type(m).__name__
    torch.testing.assert_close(full[key].sum(-1), torch.ones(full[key].shape[:-1]))
    torch.testing.assert_close(one[key].flatten(2), full[key][:, :, 2 * W + 3])
    assert torch.equal(y_full, y_one)  # recording does not change the output
    if name == 'criss_cross':  # only the row and the column of the query are attended
        cross = torch.zeros(H, W, dtype=torch.bool)
        cross[2, :] = cross[:, 3] = True
        assert (one[key][:, :, ~cross] == 0).all() and (one[key][:, :, cross] > 0).all()


def test_relative_query_and_bad_query():
    m = create_attention('danet_pam', C)
    with record(m, query=(0.5, 1.0)) as maps:
        m(torch.randn(1, C, 4, 6))
    with record(m, query=(2, 5)) as same:
        m(torch.randn(1, C, 4, 6))
    assert maps['PositionAttention'].shape == same['PositionAttention'].shape == (1, 1, 4, 6)
    with pytest.raises(ValueError, match='outside the 4-pixel extent'):
        with record(m, query=(4, 0)):
            m(torch.randn(1, C, 4, 6))


def test_cam_map_matches_paper_form():
    torch.manual_seed(0)
    m = create_attention('danet_cam', C)
    x = torch.randn(1, C, 3, 4) * 0.3
    with record(m) as maps:
        m(x)
    xs = x.reshape(1, C, 12)
    energy = xs @ xs.transpose(1, 2)
    torch.testing.assert_close(maps['ChannelAttention'], torch.softmax(-energy, -1))


def test_gc_and_se_maps_are_the_weights_used():
    torch.manual_seed(0)
    model = nn.Sequential(create_attention('gc', C), create_attention('se', C))
    with record(model) as maps:
        model(torch.randn(N, C, H, W))
    torch.testing.assert_close(maps['0'].sum((1, 2, 3)), torch.ones(N))
    assert ((maps['1'] > 0) & (maps['1'] < 1)).all()


def test_nothing_kept_outside_the_context():
    torch.manual_seed(0)
    names = [n for n in sorted(ATTENTION.module_dict) if not n.startswith('_')]  # '_' = test-only stand-ins
    model = nn.Sequential(*[create_attention(name, C) for name in names])
    x = torch.randn(1, C, H, W)
    with record(model) as maps:
        model(x)
    kept = dict(maps)
    assert len(kept) == len(model) + 1  # + cbam's channel map
    model(x)  # a forward after the context adds nothing and stores nothing on the modules
    assert maps.keys() == kept.keys() and all(torch.equal(maps[k], kept[k]) for k in kept)
    for m in model.modules():
        if isinstance(m, AttentionModule):
            assert m._recorder is None
            assert not any(isinstance(v, torch.Tensor) for k, v in vars(m).items() if not k.startswith('_'))


def test_context_restores_on_error():
    m = create_attention('se', C)
    with pytest.raises(RuntimeError):
        with record(m):
            raise RuntimeError('boom')
    assert m._recorder is None
