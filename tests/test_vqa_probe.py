"""The linear-probe and gradient-norm diagnostics of the VQA image grid (attnkit/tasks/vqa/probe.py,
grad_norms.py) on the demo data: labels against the generator's own scenes, the probe against features whose
answer is known, and the stage gradient norms against a direct computation."""
import json
import math

import numpy as np
import torch

from attnkit.builder import build_model
from attnkit.data.demo import _draw_image
from attnkit.data.demo_scene import CLASSES, COLOURS
from attnkit.tasks.vqa.dataset import VQAv2Dataset
from attnkit.tasks.vqa.grad_norms import stage_grad_norms
from attnkit.tasks.vqa.probe import cell_labels, model_grid, probe_grid


def _coco(demo_data):
    with open(demo_data['coco_train_json']) as f:
        train = json.load(f)
    with open(demo_data['coco_val_json']) as f:
        val = json.load(f)
    return {'images': train['images'] + val['images'], 'annotations': train['annotations'] + val['annotations'],
            'categories': train['categories']}


def test_cell_labels_match_the_generators_scenes_and_the_probe_reads_what_features_hold(demo_data):
    coco = _coco(demo_data)
    ids = [im['id'] for im in coco['images']]
    # one cell per pixel: the labels (shape from the category, colour read from the pixels) against the
    # generator's own instance map and object colours (COCO stores no colour)
    px = cell_labels(coco, demo_data['img_dir'], grid=(64, 64), min_cover=0.5)
    agree_shape = agree_colour = total = 0
    for m, image_id in enumerate(ids):
        scene, _, instances = _draw_image(0, image_id, 64)
        shape = np.zeros((64, 64), np.int64)
        colour = np.zeros((64, 64), np.int64)
        for k, obj in enumerate(scene.objects, start=1):
            shape[instances == k] = CLASSES.index(obj.shape) + 1
            colour[instances == k] = COLOURS.index(obj.colour) + 1
        agree_shape += int((px['shape'][m].numpy() == shape).sum())
        agree_colour += int((px['colour'][m].numpy() == colour).sum())
        total += shape.size
    assert px['shape_names'] == ['background', *CLASSES] and px['colour_names'] == ['background', *COLOURS]
    assert agree_shape / total > 0.98 and agree_colour / total > 0.98  # only object outlines may differ

    labels = cell_labels(coco, demo_data['img_dir'], grid=(8, 8))
    shape = labels['shape']  # (18, 8, 8)
    assert shape.shape == (len(ids), 8, 8) and 0 < (shape > 0).float().mean() < 0.6
    fit = 12 / len(ids)
    g = torch.Generator().manual_seed(0)
    # features that are a linear function of the labels (plus a little noise): the probe is exact
    proj = torch.randn(5, 16, generator=g)
    feats = (torch.nn.functional.one_hot(shape, 5).float() @ proj).permute(0, 3, 1, 2)
    feats = feats + 0.01 * torch.randn(feats.shape, generator=g)
    for objects_only in (False, True):
        r = probe_grid(feats, shape, 5, fit_fraction=fit, objects_only=objects_only)
        assert r['accuracy'] > 0.999
    # random features: the probe can only fall back on the most frequent label of the fitted images
    noise = torch.randn(len(ids), 16, 8, 8, generator=g)
    r = probe_grid(noise, shape, 5, fit_fraction=fit, l2=1.0)
    top = int(torch.bincount(shape[:12].flatten(), minlength=5).argmax())
    majority = float((shape[12:] == top).float().mean())
    assert math.isclose(r['majority'], majority, rel_tol=1e-6)
    assert abs(r['accuracy'] - majority) < 0.05, (r, majority)
    obj = shape[12:] > 0
    assert r['object_accuracy'] < 0.5 and math.isclose(
        r['object_majority'], float((shape[12:][obj] == int(torch.bincount(shape[:12][shape[:12] > 0]).argmax())
                                     ).float().mean()), rel_tol=1e-6)


def test_model_grid_and_stage_gradient_norms_on_a_tiny_vqa_model(demo_data):
    ds = VQAv2Dataset(demo_data['vqa_train_questions'], demo_data['vqa_train_annotations'],
                      img_dir=demo_data['img_dir'], img_name_template='{image_id:06d}.jpg', answer_min_count=1,
                      tokenizer=dict(type='word', min_count=1), pipeline=[dict(type='Resize', height=64, width=64)])
    torch.manual_seed(0)
    model = build_model(dict(type='VQAModel', backbone=dict(type='ResNet', depth=18, base_channels=8,
                                                            out_indices=(1,)),
                             question_encoder=dict(type='gru', embed_dim=16, hidden_dim=16),
                             head=dict(type='mcan', dim=16, heads=2, ffn=32, depth=1, flat_hidden=16, out_dim=32,
                                       dropout=0.0)), metainfo=ds.metainfo)
    batch = ds.collate(ds.__getitems__(list(range(16))))
    model.train()
    model(batch)['loss'].backward()
    norms = stage_grad_norms(model)
    assert list(norms) == ['stem', 'layer1', 'layer2', 'question_encoder', 'head']  # no layer3/4 (out_indices)
    by_hand = math.sqrt(sum(float(p.grad.pow(2).sum()) for n, p in model.named_parameters()
                            if n.startswith('backbone.layer2.') and p.grad is not None))
    assert norms['layer2'] > 0 and math.isclose(norms['layer2'], by_hand, rel_tol=1e-6)
    rel = stage_grad_norms(model, relative=True)
    w = math.sqrt(sum(float(p.pow(2).sum()) for n, p in model.named_parameters() if n.startswith('backbone.layer2.')))
    assert math.isclose(rel['layer2'], by_hand / w, rel_tol=1e-6)
    # the grid of the uint8 images, eval mode restored to train afterwards
    images = batch['images']
    grid = model_grid(model, images, batch_size=2)
    assert grid.shape == (len(images), 16, 8, 8) and model.training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(grid, model.image_grid(model.normalizer(images)))
