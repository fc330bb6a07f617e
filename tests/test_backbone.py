"""ResNet/ResNeXt equal torchvision's models given the same weights, with and without identity attention."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from attnkit import build_backbone
from attnkit.backbones import ResNet


ATTENTION_TYPES = ['se', 'cbam', 'gc', 'nonlocal']


def randomise_norms(model: nn.Module) -> None:
    """Non-trivial batch-norm statistics and affine parameters, so a mis-wired norm shows."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)


def torchvision_stages(tv: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """layer1..layer4 outputs of a torchvision ResNet."""
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    outs = []
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
        x = layer(x)
        outs.append(x)
    return outs

CASES = {  # name: (torchvision constructor, our kwargs)
    'resnet18': (torchvision.models.resnet18, dict(depth=18)),
    'resnet34': (torchvision.models.resnet34, dict(depth=34)),
    'resnet50': (torchvision.models.resnet50, dict(depth=50)),
    'resnet101': (torchvision.models.resnet101, dict(depth=101)),
    'resnet152': (torchvision.models.resnet152, dict(depth=152)),
    'resnext50_32x4d': (torchvision.models.resnext50_32x4d, dict(depth=50, groups=32, width_per_group=4)),
}


def _assert_stages_equal(ours: tuple[torch.Tensor, ...], ref: list[torch.Tensor]) -> None:
    assert len(ours) == len(ref) == 4
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, f'stage {i}'
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()), msg=f'stage {i}')


@pytest.fixture(scope='module')
def tv_weights(tmp_path_factory: pytest.TempPathFactory):
    """name -> (torchvision model in eval mode, path of its saved state dict); built lazily, once."""
    cache: dict[str, tuple[nn.Module, str]] = {}
    folder = tmp_path_factory.mktemp('tv')

    def get(name: str) -> tuple[nn.Module, str]:
        if name not in cache:
            torch.manual_seed(0)
            model = CASES[name][0]()
            randomise_norms(model)
            path = str(folder / f'{name}.pth')
            torch.save(model.state_dict(), path)
            for big in [k for k in cache if k in ('resnet101', 'resnet152')]:
                del cache[big]  # keep at most one big model in memory
            cache[name] = (model.eval(), path)
        return cache[name]
    return get


@pytest.mark.parametrize('name', list(CASES))
def test_matches_torchvision(name: str, tv_weights) -> None:
    tv, path = tv_weights(name)
    ours = ResNet(**CASES[name][1], pretrained=path).eval()
    # Same parameter/buffer names as torchvision, minus the classifier.
    assert set(ours.state_dict()) == set(tv.state_dict()) - {'fc.weight', 'fc.bias'}
    assert ours.pretrained_report.missing == []
    assert sorted(ours.pretrained_report.unexpected) == ['fc.bias', 'fc.weight']
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_stages_equal(ours(x), torchvision_stages(tv, x))
    expansion = 1 if CASES[name][1]['depth'] < 50 else 4
    assert ours.out_channels == tuple(64 * expansion * 2 ** i for i in range(4))
    assert ours.strides == (4, 8, 16, 32)


IDENTITY_CASES = [('resnet18', att, 'after_conv3') for att in ATTENTION_TYPES] + \
    [('resnet18', 'cbam', 'after_block'), ('resnet50', 'cbam', 'after_conv3'), ('resnet50', 'se', 'after_block')]


@pytest.mark.parametrize('name,att,position', IDENTITY_CASES)
def test_identity_attention_keeps_pretrained_outputs(name: str, att: str, position: str, tv_weights) -> None:
    tv, path = tv_weights(name)
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = torchvision_stages(tv, x)
    cfg = dict(type=att, stages=(True, True, True, True), position=position)
    ours = build_backbone(dict(type='ResNet', **CASES[name][1], attention=cfg, pretrained=path)).eval()
    blocks = [b for layer in (ours.layer1, ours.layer2, ours.layer3, ours.layer4) for b in layer]
    assert all(b.attn is not None and b.attn_position == position and b.attn.identity_init for b in blocks)
    assert all(b.attn.channels == getattr(b, 'bn3', b.bn2).num_features for b in blocks)
    # The attention parameters are the only keys missing from the torchvision file.
    report = ours.pretrained_report
    attn_keys = {k for k in ours.state_dict() if '.attn.' in k and not k.endswith('num_batches_tracked')}
    assert report.missing and set(report.missing) == attn_keys
    # Every module runs, at its place: after the addition + ReLU its input is >= 0; on the branch it is not.
    input_min: list[float] = []
    hooks = [b.attn.register_forward_hook(lambda m, args, out: input_min.append(float(args[0].min())))
             for b in blocks]
    with torch.no_grad():
        _assert_stages_equal(ours(x), ref)
    for h in hooks:
        h.remove()
    assert len(input_min) == len(blocks)
    assert (min(input_min) >= 0) == (position == 'after_block')


def test_attention_only_in_chosen_stages() -> None:
    torch.manual_seed(0)
    model = ResNet(50, base_channels=8, attention=dict(type='se', reduction=4, stages=(False, True, False, True)))
    has = [all(b.attn is not None for b in layer) for layer in (model.layer1, model.layer2, model.layer3, model.layer4)]
    none = [all(b.attn is None for b in layer) for layer in (model.layer1, model.layer2, model.layer3, model.layer4)]
    assert has == [False, True, False, True] and none == [True, False, True, False]
    assert model.layer2[0].attn.channels == 64  # on the block output (4 * 16 planes)
    assert model.layer2[0].attn.fc1.out_features == 16  # module kwargs (reduction) reach the module
    assert not model.layer2[0].attn.identity_init  # no pretrained weights: plain initialisation
