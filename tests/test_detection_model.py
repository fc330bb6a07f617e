"""Detection heads and model: finite losses without objects, ignore boxes never positive, post-processing in
original pixels, and training through the Trainer on demo data, then test + pictures."""
import os

import pytest
import torch

from attnkit import build_head, build_model
from attnkit.heads.detection.fcos import level_points
from attnkit.heads.detection.utils import postprocess

STRIDES = (8, 16, 32)
RANGES = ((-1, 16), (16, 32), (32, 1e8))


def _feats(n=2, c=16, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, size // s, size // s, generator=g) for s in STRIDES]


def _heads():
    return [build_head(dict(type='FCOSHead', num_classes=3, in_channels=16, feat_channels=16, stacked_convs=2,
                            strides=STRIDES, regress_ranges=RANGES)),
            build_head(dict(type='RetinaHead', num_classes=3, in_channels=16, feat_channels=16, stacked_convs=2,
                            strides=STRIDES, octave_base_scale=2, norm='GN')),
            build_head(dict(type='RetinaHead', num_classes=3, in_channels=16, feat_channels=16, stacked_convs=1,
                            strides=STRIDES, loss_bbox='giou'))]


@pytest.mark.parametrize('idx', [0, 1, 2])
def test_losses_finite_with_an_image_without_objects(idx):
    torch.manual_seed(0)
    head = _heads()[idx]
    feats = [f.requires_grad_() for f in _feats()]
    boxes = [torch.tensor([[4., 6., 30., 40.], [20., 20., 60., 50.]]), torch.zeros(0, 4)]
    labels = [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.long)]
    ignore = [torch.tensor([False, True]), torch.zeros(0, dtype=torch.bool)]
    losses = head.loss(feats, boxes, labels, ignore)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    # a batch with no object at all: finite, zero box losses, still a graph
    empty = head.loss(_feats(), [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2, None)
    assert torch.isfinite(empty['loss_cls']) and empty['loss_cls'] > 0 and empty['loss_bbox'] == 0
    sum(empty.values()).backward()


def test_fcos_targets_ignore_box_not_positive_and_excluded():
    head = _heads()[0]
    pts = level_points([(8, 8), (4, 4), (2, 2)], STRIDES, torch.device('cpu'))
    points = torch.cat(pts)
    level_ids = torch.cat([torch.full((len(p),), i) for i, p in enumerate(pts)])
    boxes = torch.tensor([[0., 0., 24., 24.], [32., 32., 64., 64.]])
    labels, assigned, excluded = head.get_targets(points, level_ids, boxes, torch.tensor([1, 2]),
                                                  torch.tensor([False, True]))
    inside_ignore = (points[:, 0] > 32) & (points[:, 1] > 32)
    assert (labels[inside_ignore] == 3).all() and excluded[inside_ignore].all()
    pos = labels < 3
    assert pos.any() and (labels[pos] == 1).all() and (assigned[pos] == boxes[0]).all()
    assert not excluded[pos].any()
    # the object centred at (12, 12) with max distance <= 16 goes to stride 8 (regress range -1..16)
    assert (level_ids[pos] == 0).all()


def test_retinanet_targets_ignore_box_not_positive():
    head = _heads()[1]
    anchors = torch.cat(head.anchor_generator([(8, 8), (4, 4), (2, 2)], torch.device('cpu')))
    boxes = torch.tensor([[0., 0., 24., 24.], [32., 32., 64., 64.]])
    labels, _, valid = head.get_targets(anchors, boxes, torch.tensor([1, 2]), torch.tensor([False, True]))
    assert (labels == 1).sum() >= 1 and not (labels == 2).any()
    from torchvision.ops import box_iou
    near_ignore = box_iou(boxes[1:], anchors)[0] >= 0.5
    assert near_ignore.any() and not valid[near_ignore].any()


def test_postprocess_threshold_classwise_nms_and_original_pixels():
    scores = torch.zeros(4, 2)
    scores[0, 0], scores[1, 0], scores[2, 1], scores[3, 1] = 0.9, 0.8, 0.7, 0.01
    boxes = torch.tensor([[10., 10., 50., 50.], [12., 12., 50., 50.], [10., 10., 50., 50.], [0., 0., 5., 5.]])
    meta = {'scale_factor': (2.0, 4.0), 'ori_size': (12, 30), 'img_size': (48, 60)}
    out = postprocess([scores], [boxes], meta, score_thr=0.05, nms_pre=10, iou_thr=0.5, max_per_img=10)
    # box 1 is suppressed by box 0 (same class); box 2 overlaps box 0 but is another class; box 3 is below the threshold
    assert out['labels'].tolist() == [0, 1] and out['scores'].tolist() == pytest.approx([0.9, 0.7])
    assert out['boxes'][0].tolist() == pytest.approx([5, 2.5, 25, 12])  # /scale_factor, y clipped to 12
    assert len(postprocess([scores], [boxes], meta, score_thr=0.05, nms_pre=10, iou_thr=0.5,
                           max_per_img=1)['boxes']) == 1


def test_detector_channels_last_and_bf16_autocast():
    torch.manual_seed(0)
    cfg = dict(type='Detector', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3),
                                              attention=dict(type='cbam')),
               neck=dict(type='FPN', out_channels=16, num_outs=3),
               head=dict(type='FCOSHead', feat_channels=16, stacked_convs=1, strides=STRIDES, regress_ranges=RANGES))
    model = build_model(cfg, metainfo={'classes': ['a', 'b']}).to(memory_format=torch.channels_last)
    assert model.head.num_classes == 2 and model.head.cls_logits.in_channels == 16
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)  # the batch contract: uint8 pixels
    feats = model.extract_feats(model.normalizer(images))
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats)
    batch = {'images': images, 'boxes': [torch.tensor([[4., 4., 40., 30.]]), torch.zeros(0, 4)],
             'labels': [torch.tensor([1]), torch.zeros(0, dtype=torch.long)],
             'ignore': [torch.tensor([False]), torch.zeros(0, dtype=torch.bool)],
             'metas': [{'ori_size': (32, 32), 'img_size': (64, 64), 'scale_factor': (2.0, 2.0)}] * 2}
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model(batch)
    assert losses['loss'].dtype == torch.float32 and torch.isfinite(losses['loss'])
    model.eval()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        preds = model(batch)
    assert len(preds) == 2 and preds[0]['boxes'].dtype == torch.float32
    assert (preds[0]['boxes'] <= 32).all()


def test_train_test_infer_on_demo_data(tmp_path, demo_data):
    from mmengine.config import Config

    from attnkit.engine import Trainer
    from attnkit.registry import INFERENCERS
    paths = demo_data  # 12 train / 6 val images, 64 px
    ds = lambda split, pipe: dict(type='CocoDetection', ann_file=paths[f'coco_{split}_json'],  # noqa: E731
                                  img_dir=paths['img_dir'], pipeline=pipe)
    cfg = Config(dict(
        task='detection',
        model=dict(type='Detector', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3),
                                                  attention=dict(type='cbam', stages=(False, True, True, True))),
                   neck=dict(type='FPN', out_channels=16, num_outs=3),
                   head=dict(type='FCOSHead', feat_channels=16, stacked_convs=1, strides=STRIDES,
                             regress_ranges=RANGES)),
        data=dict(train=dict(dataset=ds('train', [dict(type='HorizontalFlip', p=0.5)]), batch_size=4, num_workers=0),
                  val=dict(dataset=ds('val', []), batch_size=6, num_workers=0)),
        evaluator=dict(type='CocoMetric'),
        runtime=dict(tensorboard=False, log_interval=1),
        optim=dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0)),
        schedule=dict(by_epoch=False, max_iters=3, warmup_iters=1, policy='constant'),
        train_cfg=dict(eval_interval=3, checkpoint_interval=3),
    ))
    torch.manual_seed(0)
    trainer = Trainer(cfg, work_dir=str(tmp_path / 'work'))
    before = {k: v.clone() for k, v in trainer.unwrapped_model.head.state_dict().items()}
    metrics = trainer.train()
    assert list(metrics)[0] == 'AP' and 0.0 <= metrics['AP'] <= 1.0
    assert trainer.last_eval_count == 6
    after = trainer.unwrapped_model.head.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert os.path.isfile(tmp_path / 'work' / 'latest.pth')

    # fine-tuning on other classes: everything but the classifier comes from the checkpoint
    with pytest.warns(UserWarning, match='cls_logits'):
        tuned = build_model(dict(cfg.model, init_from=str(tmp_path / 'work' / 'latest.pth')),
                            metainfo={'classes': ['x', 'y', 'z']})
    assert sorted(tuned.init_report['skipped_shape']) == ['head.cls_logits.bias', 'head.cls_logits.weight']
    trained = trainer.unwrapped_model.state_dict()
    assert torch.equal(tuned.state_dict()['head.bbox_pred.weight'], trained['head.bbox_pred.weight'])

    model = trainer.unwrapped_model.eval()
    images = [os.path.join(paths['img_dir'], '000013.jpg')]
    files = INFERENCERS.get('Detector')(model, cfg, images, str(tmp_path / 'out'))
    png = [f for f in files if f.endswith('.png')]
    assert len(png) == 1 and os.path.isfile(png[0])
    from PIL import Image
    assert Image.open(png[0]).size == (64, 64)
