"""timm attention checkpoints load into attnkit: seresnet50 (exact outputs), ecaresnet50d (ECA + body), CBAM.

Every timm model here is built with random weights (``pretrained=False``); nothing is downloaded.
"""
from __future__ import annotations

import logging

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import EcaModule, SEModule as TimmSE
from timm.layers.cbam import CbamModule
from timm.layers.helpers import make_divisible as timm_make_divisible
from torch import nn

from attnkit.attention import CBAMModule, ECAModule, SEModule, create_attention
from attnkit.attention._layout import make_divisible
from attnkit.backbones import ResNet
from attnkit.errors import CheckpointError, ConfigError

ALL = (True, True, True, True)
SE_TIMM = dict(type='se', layout='timm', stages=ALL)


def randomise(model: nn.Module) -> nn.Module:
    """Non-trivial norms (affine + running statistics) and attention weights, so that a wrong mapping shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif name.endswith('.se') or isinstance(m, (TimmSE, CbamModule, EcaModule)):
                for p in m.parameters():
                    if p.dim() > 1:  # conv weights (BN handled above)
                        p.normal_(0, 0.1)
                    elif p.dim() == 1 and p.shape[0] > 1:  # fc biases
                        p.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope='module')
def seresnet50(tmp_path_factory) -> tuple[nn.Module, dict[str, str]]:
    """A random timm seresnet50 and its state dict saved as .pth and .safetensors."""
    model = randomise(timm.create_model('seresnet50', pretrained=False))
    folder = tmp_path_factory.mktemp('seresnet50')
    sd = model.state_dict()
    torch.save(sd, folder / 'seresnet50.pth')
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / 'seresnet50.safetensors'))
    return model, {'pth': str(folder / 'seresnet50.pth'), 'safetensors': str(folder / 'seresnet50.safetensors')}


def test_seresnet50_loads_and_matches_timm(seresnet50, caplog) -> None:
    timm_model, files = seresnet50
    with caplog.at_level(logging.INFO, logger='attnkit.backbones'):
        ours = ResNet(50, attention=SE_TIMM, pretrained=files['pth']).eval()
    report = ours.pretrained_report
    blocks = [f'layer{i + 1}.{j}.attn' for i, n in enumerate((3, 4, 6, 3)) for j in range(n)]
    assert report.attention_loaded == blocks and report.attention_identity == []
    assert sorted(report.missing) == sorted(f'{b}.gamma' for b in blocks)  # only attnkit's own gamma
    assert sorted(report.unexpected) == ['fc.bias', 'fc.weight'] and report.skipped == {}
    attn = [m for m in ours.modules() if isinstance(m, SEModule)]
    assert len(attn) == 16 and all(m.identity_init and float(m.gamma.detach()) == 1.0 for m in attn)
    assert any('16 attention modules loaded from the file' in r.getMessage() for r in caplog.records)
    sd = timm_model.state_dict()
    assert torch.equal(ours.layer3[2].attn.fc1.weight, sd['layer3.2.se.fc1.weight'])
    assert torch.equal(ours.layer4[0].attn.fc2.bias, sd['layer4.0.se.fc2.bias'])

    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = timm_model.forward_features(x)
        out = ours(x)[-1]
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
        # The same function, not just close: in float64 the two networks agree to rounding.
        ref64 = timm_model.double().forward_features(x.double())
        out64 = ours.double()(x.double())[-1]
    timm_model.float()
    assert float((out64 - ref64).abs().max()) < 1e-9


def test_seresnet50_safetensors_equals_pth(seresnet50) -> None:
    timm_model, files = seresnet50
    a = ResNet(50, attention=SE_TIMM, pretrained=files['pth']).state_dict()
    b = ResNet(50, attention=SE_TIMM, pretrained=files['safetensors']).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sd = timm_model.state_dict()
    assert all(torch.equal(b[k.replace('.se.', '.attn.')], v) for k, v in sd.items() if not k.startswith('fc.'))


def test_layout_mismatch_says_which_layout(seresnet50, tmp_path) -> None:
    with pytest.raises(CheckpointError) as err:
        ResNet(50, attention=dict(type='se', stages=ALL), pretrained=seresnet50[1]['pth'])
    msg = str(err.value)
    assert "'layer1.0.attn.fc1.weight': (16, 256, 1, 1) in the file, (16, 256) in the model" in msg
    assert "layout='timm'" in msg
    tiny = dict(depth=18, base_channels=8)
    torch.save(ResNet(**tiny, attention=dict(type='se', stages=ALL)).state_dict(), tmp_path / 'old.pth')
    with pytest.raises(CheckpointError, match="attnkit's attention layout.*layout='attnkit'"):
        ResNet(**tiny, attention=dict(type='se', layout='timm', stages=ALL), pretrained=str(tmp_path / 'old.pth'))


def test_gamma_rule_per_module(tmp_path, seresnet50) -> None:
    """Attention in the file keeps its function (gamma 1, or the file's gamma); attention absent stays identity."""
    sd = {k: v for k, v in seresnet50[0].state_dict().items()
          if not (k.startswith('layer4.') and '.se.' in k) and not k.startswith('layer3.5.se.')}
    torch.save(sd, tmp_path / 'partial.pth')
    model = ResNet(50, attention=SE_TIMM, out_indices=(2, 3), pretrained=str(tmp_path / 'partial.pth'))
    report = model.pretrained_report
    identity = ['layer3.5.attn'] + [f'layer4.{j}.attn' for j in range(3)]
    assert report.attention_identity == identity and len(report.attention_loaded) == 12
    for name, m in model.named_modules():
        if isinstance(m, SEModule):
            assert float(m.gamma.detach()) == (0.0 if name in identity else 1.0), name
    x = torch.randn(1, 1024, 4, 4)
    assert torch.equal(model.layer3[5].attn(x), x)  # still the exact identity

    # attnkit checkpoints (Linear layout) hold gamma: the trained value is loaded, not reset to 1.
    tiny = dict(depth=18, base_channels=8, attention=dict(type='se', stages=ALL))
    src = ResNet(**tiny, identity_init=True)
    with torch.no_grad():
        for i, m in enumerate(m for m in src.modules() if isinstance(m, SEModule)):
            m.gamma.fill_(0.1 * (i + 1))
    torch.save(src.state_dict(), tmp_path / 'attnkit.pth')
    loaded = ResNet(**tiny, pretrained=str(tmp_path / 'attnkit.pth'))
    assert loaded.pretrained_report.missing == [] and len(loaded.pretrained_report.attention_loaded) == 8
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), loaded.state_dict().values()))


def test_ecaresnet50d_eca_and_body_load(tmp_path) -> None:
    timm_model = randomise(timm.create_model('ecaresnet50d', pretrained=False))
    sd = timm_model.state_dict()
    torch.save(sd, tmp_path / 'ecaresnet50d.pth')
    ours = ResNet(50, attention=dict(type='eca', stages=ALL), pretrained=str(tmp_path / 'ecaresnet50d.pth')).eval()
    report = ours.pretrained_report
    own = ours.state_dict()
    eca = [k for k in sd if '.se.' in k]
    assert len(eca) == 16 and all(torch.equal(own[k.replace('.se.', '.attn.')], sd[k]) for k in eca)
    assert len(report.attention_loaded) == 16 and all(float(m.gamma.detach()) == 1.0 for m in ours.modules()
                                                          if isinstance(m, ECAModule))
    # Which keys load: every block conv/norm, the layer1 shortcut (timm's pool is the identity there) ...
    body = [k for k in sd if k.startswith('layer') and '.downsample.' not in k and '.se.' not in k]
    assert all(torch.equal(own[k], sd[k]) for k in body)
    assert torch.equal(own['layer1.0.downsample.0.weight'], sd['layer1.0.downsample.1.weight'])
    assert torch.equal(own['layer1.0.downsample.1.running_var'], sd['layer1.0.downsample.2.running_var'])
    # ... and which do not: the deep stem and the average-pool shortcuts of layer2..4.
    stem = {k for k in sd if k.split('.')[0] in ('conv1', 'bn1')}
    pooled = {k for k in sd if '.downsample.' in k and not k.startswith('layer1.')}
    assert set(report.skipped) == stem | pooled and len(stem) == 18 and len(pooled) == 18
    assert not torch.equal(own['bn1.running_var'], sd['bn1.running_var'])
    lacking = {k for k in report.missing if not k.endswith('.gamma')}
    assert lacking == {k for k in own if not k.endswith('num_batches_tracked') and (
        k.split('.')[0] in ('conv1', 'bn1') or ('.downsample.' in k and not k.startswith('layer1.')))}
    # Where the mapping loads, the function is timm's: layer1 (ECA + avg-down shortcut at stride 1) agrees.
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.layer1(x), timm_model.layer1(x), rtol=1e-5, atol=1e-5)


def test_cbam_round_trip_against_timm() -> None:
    torch.manual_seed(0)
    for channels in (48, 256):
        ref = randomise(CbamModule(channels))
        ours = create_attention('cbam', channels, layout='timm').eval()
        ours.load_state_dict(ref.state_dict(), strict=True)  # same names, shapes and tensors
        assert ours.channel['fc1'].out_channels == make_divisible(channels / 16, 1) == round(channels / 16)
        x = torch.randn(2, channels, 9, 7)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
            xc = x.to(memory_format=torch.channels_last)
            torch.testing.assert_close(ours(xc), ref(x), rtol=1e-5, atol=1e-5)
        ours.train(), ref.train()  # batch statistics in the spatial BatchNorm: still the same function
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_cbam_resnet18_from_timm(tmp_path) -> None:
    """timm's resnet18 with CBAM blocks (block_args attn_layer='cbam') loads into attnkit's ResNet-18."""
    timm_model = randomise(timm.create_model('resnet18', pretrained=False, block_args=dict(attn_layer='cbam')))
    torch.save(timm_model.state_dict(), tmp_path / 'cbam18.pth')
    ours = ResNet(18, attention=dict(type='cbam', layout='timm', stages=ALL),
                  pretrained=str(tmp_path / 'cbam18.pth')).eval()
    assert len(ours.pretrained_report.attention_loaded) == 8
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = timm_model.forward_features(x)
        torch.testing.assert_close(ours(x)[-1], ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_other_architecture_names_first_mismatch(tmp_path) -> None:
    torch.save(timm.create_model('resnet18', pretrained=False).state_dict(), tmp_path / 'resnet18.pth')
    with pytest.raises(CheckpointError) as err:
        ResNet(50, attention=SE_TIMM, pretrained=str(tmp_path / 'resnet18.pth'))
    msg = str(err.value)
    assert "shape mismatch for 'layer1.0.conv1.weight': (64, 64, 3, 3) in the file, (64, 64, 1, 1) in the model" \
        in msg and 'resnet18.pth' in msg


@pytest.mark.parametrize('channels', [1, 3, 7, 8, 24, 64, 100, 200, 256, 1000, 2048])
def test_timm_layout_sizes_follow_timm(channels: int) -> None:
    se = create_attention('se', channels, layout='timm')
    assert se.fc1.weight.shape == TimmSE(channels).fc1.weight.shape
    cbam = create_attention('cbam', channels, layout='timm')
    assert {k: v.shape for k, v in cbam.state_dict().items() if k != 'gamma'} == \
        {k: v.shape for k, v in CbamModule(channels).state_dict().items()}
    eca = create_attention('eca', channels, layout='timm')
    assert eca.conv.weight.shape == EcaModule(channels).conv.weight.shape
    for ratio in (1 / 16, 1 / 8, 0.25):
        for divisor in (1, 8):
            assert make_divisible(channels * ratio, divisor) == timm_make_divisible(channels * ratio, divisor,
                                                                                    round_limit=0.)


def test_layout_option_errors_and_default() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'timm'"):
        create_attention('se', 64, layout='tim')
    assert isinstance(create_attention('cbam', 64).fc1, nn.Linear)  # default: attnkit's layout, unchanged
    assert isinstance(create_attention('se', 64).fc1, nn.Linear)
    assert isinstance(CBAMModule(64, layout='timm').spatial['conv']['bn'], nn.BatchNorm2d)
