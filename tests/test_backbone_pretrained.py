"""Pretrained loading: file formats, prefixes, torchvision:// cache, and the errors for bad files."""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from attnkit.backbones import ResNet, read_state_dict
from attnkit.errors import CheckpointError
from attnkit.attention import SEModule

TINY = dict(depth=18, base_channels=8)


def _source(**kw) -> dict[str, torch.Tensor]:
    """A random tiny ResNet-18 state dict plus a classifier, as torchvision would save it."""
    torch.manual_seed(0)
    model = ResNet(**TINY, **kw)
    for p in model.parameters():
        p.data.normal_()
    sd = dict(model.state_dict())
    sd['fc.weight'] = torch.randn(10, 64)
    sd['fc.bias'] = torch.randn(10)
    return sd


def _assert_loaded(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for k, v in own.items():
        if k in sd:
            assert torch.equal(v, sd[k]), k


def test_raw_pth_loads_every_tensor(tmp_path) -> None:
    sd = _source()
    torch.save(sd, tmp_path / 'w.pth')
    model = ResNet(**TINY, pretrained=str(tmp_path / 'w.pth'))
    _assert_loaded(model, sd)
    assert model.pretrained_report.missing == []
    assert sorted(model.pretrained_report.unexpected) == ['fc.bias', 'fc.weight']


def test_nested_and_prefixed_checkpoints(tmp_path) -> None:
    sd = _source()
    torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}, 'epoch': 3}, tmp_path / 'ddp.pt')
    _assert_loaded(ResNet(**TINY, pretrained=str(tmp_path / 'ddp.pt')), sd)
    # A whole task-model checkpoint: only backbone.* keys are used, neck/head keys are ignored.
    full = {f'backbone.{k}': v for k, v in sd.items()}
    full['neck.conv.weight'] = torch.randn(3, 3)
    torch.save({'model': full, 'meta': {'classes': ['a']}}, tmp_path / 'det.pth')
    model = ResNet(**TINY, pretrained=str(tmp_path / 'det.pth'))
    _assert_loaded(model, sd)
    assert 'neck.conv.weight' not in model.pretrained_report.unexpected


def test_safetensors(tmp_path) -> None:
    sd = _source()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / 'w.safetensors'))
    _assert_loaded(ResNet(**TINY, pretrained=str(tmp_path / 'w.safetensors')), sd)


def test_shape_mismatch_names_key_and_shapes(tmp_path) -> None:
    torch.save(_source(), tmp_path / 'w.pth')
    with pytest.raises(CheckpointError) as err:
        ResNet(depth=18, base_channels=16, pretrained=str(tmp_path / 'w.pth'))
    msg = str(err.value)
    assert "'conv1.weight'" in msg and '(8, 3, 7, 7)' in msg and '(16, 3, 7, 7)' in msg and 'w.pth' in msg


@pytest.mark.parametrize('name,content', [
    ('garbage.pth', b'\x00\x01 not a checkpoint at all \xff' * 10),
    ('garbage.safetensors', b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": broken'),
    ('empty.pth', b''),
])
def test_malformed_file_names_the_file(tmp_path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=name.replace('.', r'\.')):
        ResNet(**TINY, pretrained=str(tmp_path / name))


@pytest.mark.parametrize('obj,what', [
    ([torch.zeros(1)], 'list'),
    ({'epoch': 3, 'optimizer': {}}, "'epoch'"),
    ({}, 'empty'),
])
def test_not_a_state_dict(tmp_path, obj, what: str) -> None:
    torch.save(obj, tmp_path / 'x.pth')
    with pytest.raises(CheckpointError, match=what) as err:
        read_state_dict(tmp_path / 'x.pth')
    assert 'x.pth' in str(err.value)


def test_unrelated_weights_and_missing_file(tmp_path) -> None:
    torch.save({'encoder.weight': torch.zeros(2)}, tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='share no parameter name'):
        ResNet(**TINY, pretrained=str(tmp_path / 'other.pth'))
    with pytest.raises(CheckpointError, match='does not exist'):
        ResNet(**TINY, pretrained=str(tmp_path / 'nope.pth'))


def test_torchvision_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    expected = tmp_path / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    with pytest.raises(CheckpointError) as err:
        ResNet(**TINY, pretrained='torchvision://resnet18')
    msg = str(err.value)
    assert str(expected) in msg and 'https://download.pytorch.org/models/resnet18-f37072fd.pth' in msg
    assert 'never downloads' in msg
    sd = _source()
    expected.parent.mkdir(parents=True)
    torch.save(sd, expected)
    model = ResNet(**TINY, pretrained='torchvision://resnet18')
    _assert_loaded(model, sd)
    assert model.pretrained_report.file == str(expected)
    with pytest.raises(CheckpointError, match='IMAGENET1K_V1'):  # lists the tags that exist
        ResNet(**TINY, pretrained='torchvision://resnet18.IMAGENET9K')
    with pytest.raises(CheckpointError, match='resnet50'):  # lists the ResNet-family names
        ResNet(**TINY, pretrained='torchvision://resnot18')


def test_missing_and_unexpected_keys_are_logged(tmp_path, caplog) -> None:
    sd = _source()
    sd['layer9.weird'] = torch.zeros(1)
    torch.save(sd, tmp_path / 'w.pth')
    cfg = dict(type='se', stages=(False, False, True, True))
    with caplog.at_level(logging.INFO, logger='attnkit.backbones'):
        model = ResNet(**TINY, attention=cfg, pretrained=str(tmp_path / 'w.pth'))
    attn_keys = sorted(k for k in model.state_dict() if '.attn.' in k)
    assert sorted(model.pretrained_report.missing) == attn_keys and len(attn_keys) == 4 * 5  # fc1, fc2, gamma
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any('layer3.0.attn.fc1.weight' in m and 'as expected' in m for m in infos)
    assert any('fc.weight' in m and 'as expected' in m for m in infos)
    assert len(warnings) == 1 and 'layer9.weird' in warnings[0] and 'fc.weight' not in warnings[0]


def test_identity_init_follows_pretrained(tmp_path) -> None:
    torch.save(_source(), tmp_path / 'w.pth')
    cfg = dict(type='se', stages=(True, True, True, True))
    with_pt = ResNet(**TINY, attention=cfg, pretrained=str(tmp_path / 'w.pth'))
    without = ResNet(**TINY, attention=cfg)
    forced = ResNet(**TINY, attention=cfg, pretrained=str(tmp_path / 'w.pth'), identity_init=False)
    attn = [m for m in with_pt.modules() if isinstance(m, SEModule)]
    assert len(attn) == 8 and all(m.identity_init and float(m.gamma.detach()) == 0.0 for m in attn)
    assert not any(m.identity_init for m in without.modules() if isinstance(m, SEModule))
    assert not any(m.identity_init for m in forced.modules() if isinstance(m, SEModule))


def test_frozen_stages_survive_loading(tmp_path) -> None:
    sd = _source()
    torch.save(sd, tmp_path / 'w.pth')
    model = ResNet(**TINY, frozen_stages=2, pretrained=str(tmp_path / 'w.pth'))
    _assert_loaded(model, sd)
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {k for k, _ in model.named_parameters() if k.split('.')[0] in ('conv1', 'bn1', 'layer1', 'layer2')}
