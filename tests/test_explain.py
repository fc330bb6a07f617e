"""attnkit explain: rollout, the agreement and faithfulness numbers against hand computations, and the command end to
end on a tiny trained detector (PNGs, the HTML page, --eval's JSON, bad input)."""
from __future__ import annotations

import base64
import json
import os
import re

import numpy as np
import pytest
import torch
from torch import nn

from attnkit import cli
from attnkit.explain import (area_fraction, attention_rollout, deletion_insertion, energy_inside, explain_images,
                             pointing_hit)

CLASSES = ['circle', 'square', 'triangle', 'star']


def test_rollout_of_two_layers_is_the_product_of_residual_averaged_maps():
    g = torch.Generator().manual_seed(0)
    a1 = torch.rand(3, 5, 5, generator=g).softmax(-1)  # (heads, L, L), rows sum to 1
    a2 = torch.rand(3, 5, 5, generator=g).softmax(-1)
    eye = np.eye(5)
    m1 = 0.5 * eye + 0.5 * a1.numpy().mean(0)
    m2 = 0.5 * eye + 0.5 * a2.numpy().mean(0)
    expected = (m2 / m2.sum(1, keepdims=True)) @ (m1 / m1.sum(1, keepdims=True))
    got = attention_rollout([a1, a2]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), np.ones(5), atol=1e-5)  # still a distribution over input tokens
    raw = attention_rollout([a1, a2], residual=0.0).numpy()
    np.testing.assert_allclose(raw, a2.numpy().mean(0) @ a1.numpy().mean(0), rtol=1e-5, atol=1e-6)


def test_energy_pointing_game_and_hit_match_a_hand_computation():
    amap = np.array([[0, 1, 2, 0],
                     [0, 3, 4, 0],
                     [1, 0, 0, 0],
                     [0, 0, 0, 5]], np.float32)
    box = np.zeros((4, 4), bool)
    box[0:2, 1:3] = True  # holds 1 + 2 + 3 + 4 = 10 of the total 16
    assert energy_inside(amap, box) == pytest.approx(10 / 16)
    assert pointing_hit(amap, box) == 0.0  # the maximum (5) is at (3, 3), outside
    assert area_fraction(box) == pytest.approx(4 / 16)
    assert energy_inside(np.ones((4, 4)), box) == pytest.approx(area_fraction(box))  # the uniform map's score
    # min-max normalisation: a gate of 0.5 + amap / 10 is the same contrast as amap (its offset does not count)
    assert energy_inside(0.5 + amap / 10, box) == pytest.approx(10 / 16)
    assert energy_inside(0.5 + amap / 10, box, normalize=False) == pytest.approx((0.5 * 4 + 1.0) / (0.5 * 16 + 1.6))
    valid = np.ones((4, 4), bool)
    valid[3, 3] = False  # an ignored pixel counts for neither the map nor the area
    assert energy_inside(amap, box, valid) == pytest.approx(10 / 11)
    assert pointing_hit(amap, box, valid) == 1.0  # the maximum among valid pixels is 4 at (1, 2)
    assert area_fraction(box, valid) == pytest.approx(4 / 15)


def _object_scene(size=32):
    image = torch.full((3, size, size), 40.0)
    mask = np.zeros((size, size), bool)
    mask[8:16, 10:18] = True  # 64 of 1024 pixels
    image[:, 8:16, 10:18] = 250.0
    return image, mask


def test_deletion_curve_of_a_linear_score_matches_the_hand_computed_auc():
    image, mask = _object_scene()
    m = torch.from_numpy(mask)

    def kept(images):  # the fraction of the object's pixels still bright
        return (images[:, 0][:, m] > 200).float().mean(1)
    d, _, curve, _ = deletion_insertion(kept, image, mask.astype(np.float32), steps=16)
    # the object is 1/16 of the image and ranked first: 1 before step 1, 0 from step 1 on
    np.testing.assert_allclose(curve, [1.0] + [0.0] * 16)
    assert d == pytest.approx(0.5 / 16)


def test_deletion_and_insertion_prefer_the_object_mask_to_a_random_map():
    """A tiny model made here (bright-blob detector: 5x5 mean filter, max pool, sigmoid) scores the scene;
    the map that is exactly the object mask must delete faster and insert faster than random maps."""
    image, mask = _object_scene()
    model = nn.Sequential(nn.Conv2d(3, 1, 5, padding=2, bias=False), nn.AdaptiveMaxPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.fill_(1 / 75)

    def score(images):
        return torch.sigmoid((model(images)[:, 0] - 150.0) / 20.0)
    d_mask, i_mask, _, _ = deletion_insertion(score, image, mask.astype(np.float32), steps=16)
    rng = np.random.default_rng(0)
    randoms = [deletion_insertion(score, image, rng.random(mask.shape), steps=16)[:2] for _ in range(3)]
    assert d_mask < min(d for d, _ in randoms) - 0.2, (d_mask, randoms)
    assert i_mask > max(i for _, i in randoms) + 0.1, (i_mask, randoms)


@pytest.fixture(scope='module')
def tiny_detector(tmp_path_factory, demo_data):
    """A CBAM detector trained for two iterations on the demo data: its work dir config and checkpoint."""
    from attnkit.config import load_config
    from attnkit.engine import Trainer
    tmp = tmp_path_factory.mktemp('explain')
    p = demo_data
    opts = {'work_dir': str(tmp / 'work'), 'model.backbone.base_channels': 8, 'model.neck.out_channels': 16,
            'model.head.feat_channels': 16, 'model.head.stacked_convs': 1, 'model.head.score_thr': 0.0,
            'schedule.by_epoch': False, 'schedule.max_epochs': None, 'schedule.max_iters': 2,
            'schedule.warmup_iters': 1, 'train_cfg.eval_interval': 100, 'train_cfg.checkpoint_interval': 2,
            'runtime.tensorboard': False, 'runtime.report': False, 'data.train.batch_size': 4}
    for split in ('train', 'val'):
        opts.update({f'data.{split}.dataset.ann_file': p[f'coco_{split}_json'],
                     f'data.{split}.dataset.img_dir': p['img_dir'], f'data.{split}.num_workers': 0})
    cfg = load_config('configs/demo/fcos_r18-cbam_fpn_shapes.py', opts)
    torch.manual_seed(0)
    Trainer(cfg).train()
    return str(tmp / 'work' / 'config.py'), str(tmp / 'work' / 'latest.pth'), tmp, p


def test_explain_command_writes_every_view_and_one_self_contained_page(tiny_detector, capsys):
    cfg, ckpt, tmp, p = tiny_detector
    image = os.path.join(p['img_dir'], '000013.jpg')
    out = tmp / 'out'
    code = cli.main(['explain', cfg, ckpt, image, '--out', str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]
    pngs = sorted((out / '000013').glob('*.png'))
    names = [f.name for f in pngs]
    # CBAM in layer2..4 (2 blocks each): a spatial map and a channel chart per block, plus prediction and 2 CAMs
    assert sum('_attention_backbone_layer' in n for n in names) == 6, names
    assert sum('_channel_backbone_layer' in n for n in names) == 6, names
    assert any('_gradcam_' in n for n in names) and any('_gradcam++_' in n for n in names)
    assert any('_prediction_' in n for n in names)
    for f in pngs:
        assert f.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    page = (out / 'explain.html').read_text()
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(pngs)  # every view, embedded (no file reference)
    assert {base64.b64decode(e) for e in embedded} == {f.read_bytes() for f in pngs}
    assert 'backbone.layer3.1.attn' in page and 'Grad-CAM' in page
    assert 'src="/' not in page and "src='" not in page


def test_explain_eval_writes_the_table_with_the_uniform_baseline(tiny_detector, capsys):
    cfg, ckpt, tmp, p = tiny_detector
    out = tmp / 'eval'
    assert cli.main(['explain', '--eval', cfg, ckpt, '--num-images', '2', '--steps', '4', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / 'interpretability.json').read_text())
    rows = {(r['module'], r['method']): r for r in doc['rows']}
    assert doc['task'] == 'detection' and doc['num_images'] == 2
    assert ('backbone.layer2.0.attn', 'attention') in rows and (None, 'gradcam') in rows and (None, 'random') in rows
    # the uniform baseline: the ground-truth boxes' area fraction over the same images, computed here again
    from attnkit.builder import build_dataset
    from attnkit.config import load_config
    ds = build_dataset(load_config(cfg).data.val.dataset)
    areas = []
    for i in range(2):
        s = ds[i]
        m = np.zeros(tuple(s['meta']['img_size']), bool)
        for x1, y1, x2, y2 in s['boxes'].numpy():
            m[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = True
        areas.append(m.mean())
    for r in doc['rows']:
        assert r['area_fraction'] == pytest.approx(np.mean(areas), abs=1e-4)
        assert r['images'] == 2
    for key in ('energy', 'hit_rate', 'deletion_auc', 'insertion_auc'):
        assert rows[('backbone.layer2.0.attn', 'attention')][key] is not None
    assert rows[(None, 'random')]['energy'] is None and rows[(None, 'random')]['deletion_auc'] is not None
    assert 'uniform' in printed and 'backbone.layer4.1.attn' in printed
    assert doc['best_attention']['method'] == 'attention'


def test_bad_input_is_a_one_line_error_naming_what_is_wrong(tiny_detector, capsys):
    cfg, ckpt, tmp, p = tiny_detector
    image = os.path.join(p['img_dir'], '000013.jpg')
    broken = tmp / 'broken.png'
    broken.write_text('not an image')

    def one_line(argv, *fragments):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: '), err
        for f in fragments:
            assert f in err[0], err[0]
    one_line(['explain', cfg, ckpt, str(broken), '--out', str(tmp / 'x')], 'broken.png', 'cannot be read')
    one_line(['explain', cfg, ckpt, str(tmp / 'none.jpg')], 'none.jpg', 'does not exist')
    one_line(['explain', cfg, ckpt, image, '--target', 'box:999', '--out', str(tmp / 'x')],
             'box:999', 'available targets: box:0 (')
    one_line(['explain', cfg, ckpt, image, '--target', 'class:unicorn', '--out', str(tmp / 'x')],
             'class:unicorn', 'available targets')
    one_line(['explain', cfg, ckpt, image, '--target', 'bx:1'], "'box'")
    one_line(['explain', '--eval', cfg, ckpt, image], 'give no IMAGE')


def test_model_without_attention_still_gets_grad_cam_and_says_so(tmp_path, demo_data):
    from attnkit import build_model
    torch.manual_seed(0)
    model = build_model(dict(type='Segmentor', backbone=dict(type='ResNet', depth=18, base_channels=8,
                                                             out_indices=(0, 1, 2, 3)),
                             decode_head=dict(type='fcn', in_index=3, channels=8)),
                        metainfo={'classes': ['background'] + CLASSES})
    image = os.path.join(demo_data['img_dir'], '000013.jpg')
    model.train()  # as a training run lends it: the mode and the parameters' gradients come back unchanged
    grad = torch.full_like(model.decode_head.conv_seg.weight, 0.5)
    model.decode_head.conv_seg.weight.grad = grad
    res = explain_images(model, [image], str(tmp_path), task='segmentation', target='pixel:10,20')
    assert model.training and model.decode_head.conv_seg.weight.grad is grad
    assert model.backbone.conv1.weight.grad is None
    kinds = [v['kind'] for v in res[0]['views']]
    assert kinds == ['prediction', 'gradcam', 'gradcam++']
    assert res[0]['notes'] == ['No attention module was found in this model: only gradient saliency is shown.']
    assert 'No attention module was found' in res[0]['html'].read_text()
    assert res[0]['target'] == 'pixel:10,20'


def test_self_attention_views_per_head_and_rollout_over_stacked_layers(tmp_path, demo_data):
    from attnkit import build_model
    torch.manual_seed(0)
    model = build_model(dict(type='Segmentor', backbone=dict(
        type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3),
        self_attention=dict(type='mhsa', stages=(False, False, False, True), heads=2)),
        decode_head=dict(type='fcn', in_index=3, channels=8)), metainfo={'classes': ['background'] + CLASSES})
    image = os.path.join(demo_data['img_dir'], '000013.jpg')
    res = explain_images(model, [image], tmp_path, task='segmentation', html=False)
    views = res[0]['views']
    heads = [(v['module'], v['head']) for v in views if v['kind'] == 'self_attention']
    assert heads == [('backbone.layer4.0.sa', 'mean'), ('backbone.layer4.0.sa', 0), ('backbone.layer4.0.sa', 1),
                     ('backbone.layer4.1.sa', 'mean'), ('backbone.layer4.1.sa', 0), ('backbone.layer4.1.sa', 1)]
    assert [v['kind'] for v in views].count('rollout') == 1
    assert res[0]['html'] is None and all(v['png'].is_file() for v in views)
