"""ResNet options: output stride / dilation, multi-grid, freezing, norms, self-attention, config errors."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from attnkit import build_backbone
from attnkit.backbones import ResNet
from attnkit.errors import ConfigError
from attnkit.registry import ATTENTION


@ATTENTION.register_module('_test_zero_conv', force=True)
class _ZeroConv(nn.Module):
    """Test-only attention whose conv and norm start at zero: the backbone must not re-initialise them."""

    def __init__(self, channels: int, *, identity_init: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        for p in self.parameters():
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv(x))


def _tiny(**kw) -> ResNet:
    torch.manual_seed(0)
    return ResNet(**{'depth': 50, 'base_channels': 8, **kw})


@pytest.mark.parametrize('depth', [18, 50])
@pytest.mark.parametrize('output_stride,strides', [(32, (4, 8, 16, 32)), (16, (4, 8, 16, 16)), (8, (4, 8, 8, 8))])
def test_output_stride_shapes(depth: int, output_stride: int, strides: tuple[int, ...]) -> None:
    model = _tiny(depth=depth, output_stride=output_stride).eval()
    assert model.strides == strides
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape[-2:]) for o in outs] == [(64 // s, 96 // s) for s in strides]
    assert [o.shape[1] for o in outs] == list(model.out_channels)


def test_output_stride_8_matches_torchvision_dilation(tmp_path) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    torch.save(tv.state_dict(), tmp_path / 'r50.pth')
    ours = ResNet(50, output_stride=8, out_indices=(3,), pretrained=str(tmp_path / 'r50.pth')).eval()
    assert [b.conv2.dilation[0] for b in ours.layer3] == [1] + [2] * 5
    assert [b.conv2.dilation[0] for b in ours.layer4] == [2, 4, 4]
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        ref = nn.Sequential(*list(tv.children())[:-2])(x)
        (out,) = ours(x)
    assert out.shape == ref.shape == (1, 2048, 6, 6)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_multi_grid() -> None:
    model = _tiny(output_stride=16, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in model.layer4] == [2, 4, 8]
    assert [b.conv2.padding[0] for b in model.layer4] == [2, 4, 8]
    assert model(torch.randn(1, 3, 64, 64))[3].shape[-2:] == (4, 4)
    with pytest.raises(ConfigError, match='3 entries'):
        _tiny(multi_grid=(1, 2))


def test_frozen_stages() -> None:
    model = _tiny(frozen_stages=1).train()
    frozen_names = ('conv1', 'bn1', 'layer1')
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.split('.')[0] not in frozen_names), name
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer2[0].bn1.training and model.training
    stats = model.layer1[0].bn1.running_mean.clone()
    live = model.layer2[0].bn1.running_mean.clone()
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert torch.equal(model.layer1[0].bn1.running_mean, stats)  # frozen stage: eval-mode BN
    assert not torch.equal(model.layer2[0].bn1.running_mean, live)
    assert model.conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is not None
    model.eval().train()  # switching back keeps frozen parts in eval mode
    assert not model.layer1[0].bn1.training


def test_norm_eval_keeps_statistics() -> None:
    model = _tiny(norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    before = [m.running_mean.clone() for m in bns]
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bns))
    assert all(p.grad is not None for p in model.parameters())  # still trainable


@pytest.mark.parametrize('norm,cls', [('frozen_bn', FrozenBatchNorm2d), ('gn', nn.GroupNorm),
                                      ('syncbn', nn.SyncBatchNorm)])
def test_norms(norm: str, cls: type) -> None:
    model = _tiny(depth=18, norm=norm)
    assert isinstance(model.bn1, cls) and isinstance(model.layer4[0].downsample[1], cls)
    outs = model.train()(torch.randn(2, 3, 32, 32))
    assert outs[3].shape == (2, 64, 1, 1)


def test_frozen_bn_equals_eval_bn(tmp_path) -> None:
    bn_model = _tiny(depth=18).eval()
    for m in bn_model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    torch.save(bn_model.state_dict(), tmp_path / 'w.pth')
    frozen = _tiny(depth=18, norm='frozen_bn', pretrained=str(tmp_path / 'w.pth')).train()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(frozen(x), bn_model(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_inserted_modules_keep_their_own_init() -> None:
    model = _tiny(depth=18, attention=dict(type='_test_zero_conv', stages=(True,) * 4),
                  self_attention=dict(type='_test_zero_conv', stages=(False, True, False, False)))
    inserted = [(k, p) for k, p in model.named_parameters() if '.attn.' in k or '.sa.' in k]
    assert len(inserted) == 8 * 4 + 2 * 4 and all(float(p.detach().abs().sum()) == 0 for _, p in inserted)
    assert float(model.layer1[0].conv1.weight.detach().std()) > 0  # the ResNet's own convs are initialised


def test_zero_init_residual() -> None:
    for depth, last in ((18, 'bn2'), (50, 'bn3')):
        model = _tiny(depth=depth, zero_init_residual=True)
        blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
        assert all(float(getattr(b, last).weight.detach().abs().sum()) == 0 for b in blocks)
        assert float(model.bn1.weight.detach().sum()) == 8


def test_self_attention_replaces_conv2(tmp_path) -> None:
    """BoTNet: mhsa in place of the 3x3 conv; the stride-2 first block passes stride=2."""
    cfg = dict(type='mhsa', stages=(False, False, True, True), heads=4)
    model = _tiny(self_attention=cfg)
    for layer, expect in ((model.layer2, False), (model.layer3, True), (model.layer4, True)):
        for j, block in enumerate(layer):
            assert (block.sa is not None) == expect and (block.conv2 is None) == expect
            if expect:
                assert block.sa.heads == 4 and block.sa.channels == block.conv1.out_channels
                assert block.sa.stride == (2 if j == 0 else 1)
    x = torch.randn(1, 3, 64, 48)
    outs = model(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 12), (8, 6), (4, 3), (2, 2)]
    outs[3].sum().backward()
    assert all(p.grad is not None for k, p in model.named_parameters() if '.sa.' in k)
    # A plain ResNet's weights load: the replaced conv2 weights are unused, the sa parameters are new.
    torch.save(_tiny().state_dict(), tmp_path / 'w.pth')
    loaded = _tiny(self_attention=cfg, pretrained=str(tmp_path / 'w.pth'))
    rep = loaded.pretrained_report
    assert rep.unexpected and all(k.split('.')[2] == 'conv2' and k[:6] in ('layer3', 'layer4') for k in rep.unexpected)
    assert rep.missing and all('.sa.' in k for k in rep.missing)
    assert all(b.sa.identity_init for b in loaded.layer4)
    assert loaded._is_unused_key('layer4.0.conv2.weight') and not loaded._is_unused_key('layer2.0.conv2.weight')


def test_out_indices_subset_builds_needed_stages() -> None:
    model = _tiny(out_indices=(1, 2))
    assert not hasattr(model, 'layer4') and model.out_channels == (64, 128) and model.strides == (8, 16)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [(64, 8, 8), (128, 4, 4)]


def test_channels_last_and_bf16() -> None:
    model = _tiny(in_channels=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 64, 64).to(memory_format=torch.channels_last)
    with torch.no_grad():
        outs = model(x)
        assert all(o.is_contiguous(memory_format=torch.channels_last) for o in outs)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    assert all(o.dtype == torch.bfloat16 for o in low)
    torch.testing.assert_close(low[3].float(), outs[3], rtol=0.1, atol=0.1 * float(outs[3].abs().max()))


def test_resnext_registered_defaults() -> None:
    model = build_backbone(dict(type='ResNeXt', depth=50, base_channels=16, width_per_group=16))
    assert model.layer1[0].conv2.groups == 32 and model.layer1[0].conv2.out_channels == 128
    with pytest.raises(ConfigError, match='width_per_group'):
        build_backbone(dict(type='ResNeXt', depth=50, base_channels=8))  # int(8 * 4 / 64) * 32 == 0


@pytest.mark.parametrize('kwargs,match', [
    (dict(depth=42), 'depth'),
    (dict(out_indices=(3, 1)), 'out_indices'),
    (dict(out_indices=(4,)), 'out_indices'),
    (dict(output_stride=4), 'output_stride'),
    (dict(norm='bn2d'), 'norm'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(depth=18, groups=32, width_per_group=4), 'groups=1'),
    (dict(attention=dict(type='se', stages=(True, False))), '4 entries'),
    (dict(attention=dict(type='se', position='before')), 'position'),
    (dict(attention=dict(stages=(True,) * 4)), "'type'"),
    (dict(attention=dict(type='no_such_attention')), 'no_such_attention'),
    (dict(self_attention=dict(type='mhsa', position='after_block')), 'position'),
    (dict(attention=dict(type='se', reductoin=4)), 'reductoin'),
])
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _tiny(**kwargs)
