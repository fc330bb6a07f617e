"""The ``Encoder`` refactor (issue 15) keeps the task models' state-dict keys and outputs.

tests/fixtures/encoder_refactor.pt holds the outputs of tiny Detector / Segmentor / VQAModel configs computed by
the model code from BEFORE the refactor, with weights set by :func:`fill_weights` (a seeded generator keyed by
state-dict name, so no weight file is stored). Each test rebuilds the model, fills the same weights (the set of
keys and shapes must be unchanged for that) and compares every output to 1e-6.

Re-write the fixture only from code known to be right: ``python tests/test_encoder_refactor.py --write``.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

from attnkit.builder import build_model

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'encoder_refactor.pt')
STRIDES = (8, 16, 32)
RANGES = ((-1, 16), (16, 32), (32, 1e8))
VQA_META = {'answers': ['yes', 'no', '2'], 'tokenizer': {'type': 'word', 'max_len': 8},
            'question_vocab': ['<pad>', '<unk>', 'how', 'many', 'red']}
MCAN = dict(type='mcan', dim=16, heads=2, ffn=32, depth=1, flat_hidden=16, out_dim=32, dropout=0.0)
GRU = dict(type='gru', embed_dim=8, hidden_dim=8, dropout=0.0)

CASES = {
    'detector_fpn': (dict(type='Detector',
                          backbone=dict(type='ResNet', depth=18, base_channels=4, out_indices=(1, 2, 3),
                                        attention=dict(type='cbam', reduction=4)),
                          neck=dict(type='FPN', out_channels=8, num_outs=3),
                          head=dict(type='FCOSHead', feat_channels=8, stacked_convs=1, strides=STRIDES,
                                    regress_ranges=RANGES, score_thr=0.0)),
                     {'classes': ['a', 'b']}),
    'segmentor_aspp_aux': (dict(type='Segmentor',
                                backbone=dict(type='ResNet', depth=18, base_channels=4, out_indices=(0, 1, 2, 3),
                                              output_stride=8),
                                neck=dict(type='ASPP', out_channels=8, dilations=(1, 2)),
                                decode_head=dict(type='fcn', in_index=3, channels=8, num_convs=1, dropout=0.0),
                                auxiliary_head=dict(type='fcn', in_index=2, channels=4, num_convs=1, dropout=0.0,
                                                    loss_weight=0.4, loss_name='loss_aux')),
                           {'classes': ['bg', 'a', 'b']}),
    'segmentor_danet': (dict(type='Segmentor',
                             backbone=dict(type='ResNet', depth=18, base_channels=4, out_indices=(0, 1, 2, 3),
                                           output_stride=8),
                             decode_head=dict(type='danet', in_index=3, channels=8,
                                              pam=dict(type='danet_pam', reduction=4), cam=dict(type='danet_cam'),
                                              aux_weight=0.5, dropout=0.0)),
                        {'classes': ['bg', 'a', 'b']}),
    'vqa_concat': (dict(type='VQAModel',
                        backbone=dict(type='ResNet', depth=18, base_channels=4, out_indices=(0, 2)),
                        grid_fusion='concat', question_encoder=GRU, head=MCAN), VQA_META),
    'vqa_fpn_level': (dict(type='VQAModel',
                           backbone=dict(type='ResNet', depth=18, base_channels=4, out_indices=(1, 2, 3)),
                           neck=dict(type='FPN', out_channels=8, num_outs=3), neck_level=0,
                           question_encoder=GRU, head=MCAN), VQA_META),
    'classifier_fpn': (dict(type='ImageClassifier',
                            backbone=dict(type='ResNet', depth=18, base_channels=4, out_indices=(1, 2, 3)),
                            neck=dict(type='FPN', out_channels=8, num_outs=3), head=dict(type='linear')),
                       {'classes': ['a', 'b', 'c']}),
}


@torch.no_grad()
def fill_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Overwrite every float tensor of the state dict from a generator seeded once, in sorted-key order.

    Conv/linear weights ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.1), biases and running means ~ N(0, 0.1),
    running variances ~ U(0.5, 1.5), scalars (attention ``gamma``) ~ N(0, 0.5): non-degenerate outputs with every
    attention path switched on.
    """
    g = torch.Generator().manual_seed(seed)
    for key, value in sorted(model.state_dict().items()):
        if not value.is_floating_point():
            continue
        if value.numel() == 1:
            new = torch.randn(value.shape, generator=g) * 0.5
        elif key.endswith('running_var'):
            new = torch.rand(value.shape, generator=g) + 0.5
        elif value.dim() > 1:
            new = torch.randn(value.shape, generator=g) / (value[0].numel() ** 0.5)
        elif key.endswith('weight'):
            new = 1.0 + 0.1 * torch.randn(value.shape, generator=g)
        else:
            new = 0.1 * torch.randn(value.shape, generator=g)
        value.copy_(new)


def make_batch(kind: str, seed: int = 0) -> dict:
    """A fake collated batch of two 64x64 uint8 images for ``kind`` (detector, segmentor, classifier, vqa)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g)
    metas = [{'ori_size': (64, 64), 'img_size': (64, 64), 'scale_factor': (1.0, 1.0)}] * 2
    if kind == 'detector':
        return {'images': images, 'metas': metas,
                'boxes': [torch.tensor([[4., 6., 40., 30.], [30., 30., 60., 62.]]), torch.tensor([[8., 8., 20., 24.]])],
                'labels': [torch.tensor([0, 1]), torch.tensor([1])]}
    if kind == 'segmentor':
        return {'images': images, 'metas': metas, 'masks': torch.randint(0, 3, (2, 64, 64), generator=g)}
    if kind == 'classifier':
        return {'images': images, 'metas': metas, 'labels': torch.tensor([2, 0])}
    ids = torch.tensor([[2, 3, 0, 0], [2, 4, 3, 0], [4, 0, 0, 0]])  # 3 questions on 2 distinct images
    return {'images': images, 'input_ids': ids, 'attention_mask': ids > 0, 'image_index': torch.tensor([0, 1, 1]),
            'question_ids': [7, 8, 9], 'answer_scores': torch.rand(3, 3, generator=g)}


def outputs(name: str, model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """Training losses (one train-mode step, which also updates BN statistics), then eval-mode outputs."""
    out: dict[str, torch.Tensor] = {}
    model.train()
    for k, v in model(batch).items():
        out[f'train.{k}'] = v.detach()
    model.eval()
    with torch.no_grad():
        if name.startswith('detector'):
            feats = model.extract_feats(model.normalizer(batch['images']))
            out.update({f'feat{i}': f for i, f in enumerate(feats)})
            for i, p in enumerate(model(batch)):
                out.update({f'pred{i}.{k}': v for k, v in p.items()})
        elif name.startswith('segmentor'):
            logits = model.encode_decode(model.normalizer(batch['images']))
            out['logits'] = logits[..., ::4, ::4].contiguous()  # every 4th pixel keeps the fixture small
            out.update({f'pred{i}': p['sem_seg'].to(torch.uint8) for i, p in enumerate(model(batch))})
        elif name.startswith('classifier'):
            out['logits'] = model.logits(model.normalizer(batch['images']))
            for i, p in enumerate(model(batch)):
                out.update({f'pred{i}.{k}': v for k, v in p.items()})
        else:
            res = model.forward_logits(batch)
            out['logits'], out['attention'] = res['logits'], res['attention']
    return out


def run_case(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    cfg, meta = CASES[name]
    model = build_model(cfg, metainfo=meta)
    fill_weights(model)
    return model, outputs(name, model, make_batch(name.split('_')[0]))


def write_fixture() -> None:
    data = {}
    for name in CASES:
        model, out = run_case(name)
        data[name] = {'keys': list(model.state_dict()), 'outputs': out}
    torch.save(data, FIXTURE)
    print(FIXTURE, os.path.getsize(FIXTURE), 'bytes')


@pytest.fixture(scope='module')
def reference() -> dict:
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize('name', list(CASES))
def test_same_keys_and_outputs_as_before_the_refactor(name: str, reference: dict) -> None:
    model, out = run_case(name)
    ref = reference[name]
    assert list(model.state_dict()) == ref['keys']  # same names, same order (optimizer state stays valid)
    assert sorted(out) == sorted(ref['outputs'])
    for key, expected in ref['outputs'].items():
        got = out[key]
        assert got.shape == expected.shape and got.dtype == expected.dtype, key
        if expected.is_floating_point():
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6, msg=f'{name}: {key}')
        else:
            assert torch.equal(got, expected), f'{name}: {key}'


class PlainNeck(torch.nn.Module):
    """A user neck that takes no strides and declares an int width."""

    def __init__(self, in_channels, out_channels=6):
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.out_channels = out_channels

    def forward(self, feats):
        return [conv(f) for conv, f in zip(self.convs, feats)]


def test_encoder_contract_channels_strides_and_in_indices() -> None:
    from attnkit.errors import ConfigError
    from attnkit.tasks.encoder import Encoder, FeatureSpec, build_neck_on
    backbone = dict(type='ResNet', depth=18, base_channels=4, out_indices=(0, 1, 2, 3))
    enc = Encoder(backbone, dict(type='FPN', out_channels=8, num_outs=4), in_indices=(1, 2, 3))
    assert enc.feature_spec == FeatureSpec((4, 8, 16, 32), (4, 8, 16, 32))
    assert (enc.backbone_channels, enc.backbone_strides) == ((8, 16, 32), (8, 16, 32))
    assert enc.out_channels == (8,) * 4 and enc.strides == (8, 16, 32, 64)  # FPN got the strides
    feats = enc(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    # a neck that takes no in_strides gets none; its int width holds for each input map
    neck, spec = build_neck_on(dict(type=PlainNeck), FeatureSpec((4, 8), (4, 8)))
    assert spec == FeatureSpec((6, 6), None) and [c.in_channels for c in neck.convs] == [4, 8]
    # strides set in the config win
    neck, spec = build_neck_on(dict(type='ASPP', out_channels=8, dilations=(1,), in_strides=(2, 3)),
                               FeatureSpec((4, 8), (4, 8)))
    assert spec == FeatureSpec((4, 8), (2, 3))
    # an encoder without a backbone runs on given features: the same maps as the one with the backbone
    branch = Encoder(None, dict(type='FPN', out_channels=8, num_outs=4), in_indices=(1, 2, 3),
                     feature_spec=enc.feature_spec)
    assert branch.backbone is None and list(branch.state_dict()) == [k for k in enc.state_dict()
                                                                      if k.startswith('neck.')]
    branch.load_state_dict({k: v for k, v in enc.state_dict().items() if k.startswith('neck.')})
    images = torch.randn(2, 3, 32, 32)
    for a, b in zip(branch.encode(feats=enc.run_backbone(images)), enc.encode(images)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r'in_indices \(4,\).*gives 4 feature maps.*0..3'):
        Encoder(backbone, in_indices=(4,))
    with pytest.raises(ConfigError, match='no backbone of its own'):
        branch.encode(images)
    with pytest.raises(ConfigError, match='got 3 backbone feature maps, expected 4'):
        branch.encode(feats=enc.run_backbone(images)[:3])


if __name__ == '__main__' and '--write' in sys.argv:
    write_fixture()
