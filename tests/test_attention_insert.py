"""attnkit.attention.insert(): attention placed by module name in any network, one mechanism with the ResNet."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from attnkit.attention import attachments, detach, insert, reattach, replace_module
from attnkit.backbones import ResNet
from attnkit.errors import ConfigError


def _tv_resnet18() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    for m in model.modules():  # non-trivial statistics so that a wrong placement shows in the outputs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_torchvision_resnet_unchanged_at_init_and_attention_learns():
    model = _tv_resnet18()
    x = torch.randn(2, 3, 64, 64)
    before = model(x)
    state = copy.deepcopy(model.state_dict())
    places = insert(model, dict(type='cbam', after=['layer2.*', 'layer4'], reduction=4))
    assert [(p.target, p.where, p.module_name, p.channels) for p in places] == [
        ('layer2.0', 'after', 'layer2.0.attn', 128), ('layer2.1', 'after', 'layer2.1.attn', 128),
        ('layer4', 'after', 'layer4_attn', 512)]  # layer4 is a Sequential: its module sits on the model
    assert (model(x) - before).abs().max().item() == 0.0
    # the network's own keys are unchanged: a plain torchvision state dict loads, only attention keys missing
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and missing and all('attn' in k for k in missing)
    model.train()
    model(x).logsumexp(1).sum().backward()
    for p in places:
        gamma = model.get_submodule(p.module_name).gamma
        assert gamma.grad is not None and gamma.grad.abs().item() > 0


def test_a_trained_module_changes_the_output_where_it_sits():
    model = _tv_resnet18()
    x = torch.randn(1, 3, 64, 64)
    feats = {}
    model.layer3.register_forward_hook(lambda m, a, o: feats.setdefault('layer3', o))
    insert(model, dict(type='se', after='layer3.1.bn2', name='attn'), identity_init=False)
    attn = model.layer3[1].attn
    assert attn.channels == 256  # read from the BatchNorm, no dry forward
    block = model.layer3[1]
    inp = torch.randn(1, 256, 4, 4)
    out = block.relu(block.bn1(block.conv1(inp)))
    expected = block.relu(attn(block.bn2.__class__.__mro__[2].forward(block.bn2, block.conv2(out))) + inp)
    torch.testing.assert_close(block(inp), expected)


def test_pattern_semantics_and_closest_names():
    model = _tv_resnet18()
    places = insert(model, dict(type='eca', after=['layer1.**']))
    names = [p.target for p in places]
    assert 'layer1.0' in names and 'layer1.0.conv1' in names and 'layer1.1.bn2' in names
    assert all(n.startswith('layer1.') for n in names)  # '**' needs at least one segment: not 'layer1' itself
    with pytest.raises(ConfigError, match=r"'layer5\.\*' matches no module of ResNet.*'layer4'"):
        insert(model, dict(type='se', after=['layer5.*']))
    with pytest.raises(ConfigError, match='exactly one of after=, before=, replace='):
        insert(model, dict(type='se'))
    with pytest.raises(ConfigError, match="Unknown attention type 'sex'"):
        insert(model, dict(type='sex', after='layer1'))


def test_before_and_replace():
    model = _tv_resnet18()
    x = torch.randn(1, 3, 64, 64)
    ref = model(x)
    before = insert(model, dict(type='gc', before='layer3.0.conv1'))
    assert before[0].channels == 128 and before[0].module_name == 'layer3.0.conv1_attn_before'
    assert (model(x) - ref).abs().max().item() == 0.0
    # BoTNet-style: a 3x3 conv replaced by self-attention, stride carried over
    rep = insert(model, dict(type='mhsa', replace='layer4.0.conv2', heads=4), identity_init=False)
    assert rep[0].module_name == 'layer4.0.conv2' and model.layer4[0].conv2.channels == 512
    assert model(x).shape == (1, 10)
    with pytest.raises(ConfigError, match='256->512 convolution cannot be replaced'):
        insert(model, dict(type='mhsa', replace='layer4.0.conv1'))


def test_dry_forward_finds_channels_and_rejects_tokens():
    class TokenNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
            self.mix = nn.Linear(6, 6)

        def forward(self, x):
            x = self.stem(x)
            return self.mix(x.flatten(2).transpose(1, 2))

    net = TokenNet()
    places = insert(net, dict(type='simam', after='stem'))  # a Sequential: channels from one dry forward
    assert places[0].channels == 6 and places[0].module_name == 'stem_attn'
    with pytest.raises(ConfigError, match=r"output of 'mix' has shape \(1, 4096, 6\), not an \(N, C, H, W\)"):
        insert(net, dict(type='se', after='mix'))


def test_resnet_option_is_insert():
    """ResNet(attention=...) equals a plain ResNet with the same modules inserted by name."""
    torch.manual_seed(0)
    option = ResNet(18, base_channels=8, attention=dict(type='se', stages=(False, True, False, True)),
                    identity_init=False).eval()
    plain = ResNet(18, base_channels=8).eval()
    insert(plain, dict(type='se', after=['layer2.*.bn2', 'layer4.*.bn2'], name='attn'), identity_init=False)
    assert plain.state_dict().keys() == option.state_dict().keys()
    plain.load_state_dict(option.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(option(x), plain(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [a.module_name for a in attachments(option)] == [a.module_name for a in attachments(plain)] == [
        'layer2.0.attn', 'layer2.1.attn', 'layer4.0.attn', 'layer4.1.attn']


def test_module_replacement_keeps_attention():
    torch.manual_seed(0)
    model = ResNet(18, base_channels=8, attention=dict(type='cbam'), identity_init=False).eval()
    x = torch.randn(1, 3, 64, 64)
    ref = model(x)[-1]
    # a conversion that rebuilds norm layers loses the class swap; reattach() restores it from the owner's record
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model)).eval()
    assert reattach(converted) == 6  # layer2..layer4 x 2 blocks
    converted_forward = converted.layer2[0].bn2
    assert converted_forward._attnkit_after[0] is converted.layer2[0].attn
    # replace_module moves the attachment to the new module
    copied = copy.deepcopy(model)
    torch.testing.assert_close(copied(x)[-1], ref)
    old = copied.layer3[1].bn2
    new = nn.BatchNorm2d(old.num_features).eval()
    new.load_state_dict(old.state_dict())
    replace_module(copied, 'layer3.1.bn2', new)
    torch.testing.assert_close(copied(x)[-1], ref)
    # detach removes the module and its key; the target runs as before without it
    removed = detach(copied, 'layer3.1.attn')
    assert 'layer3.1.attn.channel.fc1.weight' not in copied.state_dict() and removed.channels == 32
    assert type(copied.layer3[1].bn2) is nn.BatchNorm2d
    with pytest.raises(ConfigError, match="'layer3.1.attn' is not an attention module attached"):
        detach(copied, 'layer3.1.attn')


def test_export_and_deepcopy_keep_inserted_attention():
    torch.manual_seed(0)
    model = ResNet(18, base_channels=8, out_indices=(3,), attention=dict(type='se'), identity_init=False).eval()
    x = torch.randn(1, 3, 64, 64)
    ref = model(x)[0]
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x)[0], ref)
    assert any('attn' in name for name in program.state_dict)
