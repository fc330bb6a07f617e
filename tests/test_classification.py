"""The classification task end to end: datasets on real files (and their bad-input messages), the metrics against
references computed another way, training through the Trainer, `attnkit test` in a subprocess, `attnkit infer`, and
mixup batches that repeat across runs with DataLoader workers."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from attnkit.builder import build_dataset, build_evaluator, build_model
from attnkit.errors import DataError

SHAPES = ['circle', 'square', 'star', 'triangle']  # ImageFolder's classes: the sorted folder names


def _crops(demo_data, split):
    """{class: [crop files]} of the demo classification split, listed here without the dataset code."""
    root = demo_data[f'cls_{split}_dir']
    return {c: sorted(os.path.join(root, c, f) for f in os.listdir(os.path.join(root, c)))
            for c in sorted(os.listdir(root))}


def test_image_folder_on_the_demo_split_and_empty_class_warning(demo_data, tmp_path):
    with open(demo_data['meta']) as f:
        meta = json.load(f)
    crops = _crops(demo_data, 'train')
    train = build_dataset(dict(type='ImageFolder', root=demo_data['cls_train_dir']))
    assert train.classes == SHAPES
    assert len(train) == sum(meta['counts']['train']['crops_per_class'].values()) == sum(map(len, crops.values()))
    assert train.class_counts() == [meta['counts']['train']['crops_per_class'][c] for c in SHAPES]
    with open(demo_data['coco_train_json']) as f:  # one crop per annotated object, class = its shape
        coco = json.load(f)
    names = {c['id']: c['name'] for c in coco['categories']}
    assert train.class_counts() == [sum(names[a['category_id']] == c for a in coco['annotations']) for c in SHAPES]
    sample = train[len(crops['circle'])]  # the first square
    assert sample['image'].dtype == torch.uint8 and tuple(sample['image'].shape) == (3, 32, 32)
    assert int(sample['label']) == 1 and sample['meta']['file'] == crops['square'][0]
    # the val folder is read with the training classes, even where a class has no crop there
    val = build_dataset(dict(type='ImageFolder', root=demo_data['cls_val_dir']), metainfo=train.metainfo)
    assert val.classes == SHAPES
    assert [os.path.basename(os.path.dirname(r[0])) for r in val.records] == [SHAPES[r[1]] for r in val.records]

    root = tmp_path / 'folder'
    shutil.copytree(demo_data['cls_train_dir'], root)
    (root / 'hexagon').mkdir()
    (root / 'zigzag' / 'deeper').mkdir(parents=True)
    with pytest.warns(UserWarning, match=r"2 class folder\(s\) have no images: 'hexagon', 'zigzag'"):
        ds = build_dataset(dict(type='ImageFolder', root=str(root)))
    assert ds.classes == ['circle', 'hexagon', 'square', 'star', 'triangle', 'zigzag'] and len(ds) == len(train)
    with pytest.raises(DataError, match=r"class folder 'hexagon' is not one of the 4 classes"):
        build_dataset(dict(type='ImageFolder', root=str(root)), metainfo=train.metainfo)


def test_csv_and_json_lists_and_the_unknown_label_message(demo_data, tmp_path):
    crops = _crops(demo_data, 'train')
    rel = lambda p: os.path.relpath(p, demo_data['cls_train_dir'])  # noqa: E731
    good = tmp_path / 'good.csv'
    good.write_text('file,label\n' + ''.join(f'{rel(crops[c][0])},{c}\n' for c in SHAPES))
    ds = build_dataset(dict(type='ClassificationList', ann_file=str(good), img_dir=demo_data['cls_train_dir'],
                            classes=SHAPES))
    assert [int(ds[i]['label']) for i in range(4)] == [0, 1, 2, 3] and not ds.multi_label

    bad = tmp_path / 'bad.csv'
    bad.write_text('file,label\n' + f'{rel(crops["circle"][0])},circle\n' + f'{rel(crops["square"][0])},sqaure\n')
    with pytest.raises(DataError) as err:
        build_dataset(dict(type='ClassificationList', ann_file=str(bad), img_dir=demo_data['cls_train_dir']),
                      metainfo={'classes': SHAPES})
    msg = str(err.value)
    assert "unknown label 'sqaure' in row 3 of" in msg and 'bad.csv' in msg and rel(crops['square'][0]) in msg
    assert "closest: 'square'" in msg and 'known labels: circle, square, star, triangle' in msg

    multi = tmp_path / 'multi.json'
    multi.write_text(json.dumps({'classes': SHAPES, 'samples': [
        {'file': rel(crops['star'][0]), 'labels': ['star', 'circle']}, {'file': rel(crops['circle'][0]),
                                                                          'label': 'circle'}]}))
    ds = build_dataset(dict(type='ClassificationList', ann_file=str(multi), img_dir=demo_data['cls_train_dir']))
    assert ds.multi_label and ds[0]['label'].tolist() == [1, 0, 1, 0] and ds[1]['label'].tolist() == [1, 0, 0, 0]


def test_multi_label_voc_matches_the_coco_annotations_and_bce_ignores_difficult(demo_data):
    voc = build_dataset(dict(type='VOCMultiLabel', root=demo_data['voc_root'],
                             split_file=demo_data['voc_train_list'], classes=('circle', 'square', 'triangle', 'star'),
                             pipeline=[dict(type='Resize', height=32, width=32)]))
    with open(demo_data['coco_train_json']) as f:
        coco = json.load(f)
    present = {}
    for a in coco['annotations']:
        present.setdefault(a['image_id'], set()).add(a['category_id'] - 1)
    targets = voc.targets()
    assert len(targets) == 12
    for i, t in enumerate(targets):  # VOC marks small objects difficult: -1 (ignored), never 0, where COCO has one
        assert set(torch.nonzero(t != 0).flatten().tolist()) == present[i + 1]
    coco_ds = build_dataset(dict(type='CocoMultiLabel', ann_file=demo_data['coco_train_json'],
                                 img_dir=demo_data['img_dir']))
    assert torch.equal(coco_ds.targets() != 0, targets != 0)

    model = build_model(dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18, base_channels=8,
                                                                   out_indices=(3,)), head=dict(type='linear')),
                        metainfo=voc.metainfo)
    assert model.multi_label
    labels = torch.tensor([[1., 0., -1., 0.], [0., 1., 1., -1.]])
    images = torch.randn(2, 3, 32, 32)
    loss = model.loss(images, labels)['loss']
    logits = model.logits(images)
    keep = labels >= 0
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], labels[keep])
    torch.testing.assert_close(loss, ref)

    # evaluation: sigmoid scores into MultiLabelMAP over the classes with positives
    model.eval()
    batch = voc.collate([voc[i] for i in range(len(voc))])
    preds = model(batch)
    assert preds[0]['label'].dtype == torch.bool and preds[0]['topk'].shape == (4,)
    metric = build_evaluator(dict(type='MultiLabelMAP'), dataset=voc)
    metric.process(batch, preds)
    got = metric.compute()
    assert got['num_classes'] == int(((targets == 1).sum(0) > 0).sum())
    scores = torch.stack([p['scores'] for p in preds]).float()
    assert got['mAP'] == pytest.approx(_reference_map(targets.float(), scores), abs=1e-9)
    with pytest.raises(Exception, match="use evaluator=dict\\(type='MultiLabelMAP'\\)"):
        build_evaluator(dict(type='Accuracy'), dataset=voc)
    # multi-label mixup: an entry ignored in either mixed image stays out of the loss
    mixed = build_model(dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18, base_channels=8,
                                                                   out_indices=(3,)), head=dict(type='linear'),
                             mixup=dict(mixup_alpha=1.0)), metainfo=voc.metainfo)
    _, soft, valid = mixed.mixup(images, labels, seed=0)
    assert torch.equal(valid, (labels >= 0) & (labels >= 0).flip(0)) and soft.shape == (2, 4)
    assert torch.isfinite(mixed.loss(images, labels, seed=0)['loss'])


def test_accuracy_and_map_against_references():
    from attnkit.evaluation.classification import Accuracy, MultiLabelMAP
    g = torch.Generator().manual_seed(0)
    n, k = 60, 6
    scores = (torch.rand(n, k, generator=g) * 4).round() / 4  # coarse scores: many ties
    labels = torch.randint(0, k, (n,), generator=g)
    acc = Accuracy(topk=(1, 3))
    acc.process({'labels': labels}, [{'scores': s} for s in scores])
    metrics = acc.compute()
    for top in (1, 3):  # reference: the class order argsort gives (stable: lower index first among ties)
        order = [sorted(range(k), key=lambda c: (-float(s[c]), c)) for s in scores]
        hits = [int(labels[i]) in order[i][:top] for i in range(n)]
        assert metrics[f'top{top}'] == pytest.approx(sum(hits) / n)

    targets = (torch.rand(n, k, generator=g) < 0.3).float()
    targets[torch.rand(n, k, generator=g) < 0.1] = -1  # ignored entries
    targets[:, 5] = torch.where(targets[:, 5] == 1, 0.0, targets[:, 5])  # a class without positives
    mp = MultiLabelMAP()
    mp.process({'labels': targets}, [{'scores': s} for s in scores])
    got = mp.compute()
    assert got['num_classes'] == 5 and got['mAP'] == pytest.approx(_reference_map(targets, scores), abs=1e-9)


def _reference_map(targets: torch.Tensor, scores: torch.Tensor) -> float:
    """Mean over the classes with positives of the average precision (sklearn's, or a hand loop without sklearn);
    targets (N, K) in {1, 0, -1 = ignored}, scores (N, K)."""
    try:
        from sklearn.metrics import average_precision_score
    except ImportError:  # pragma: no cover - the hand loop below is the reference then
        average_precision_score = None
    aps = []
    for c in range(targets.shape[1]):
        keep = targets[:, c] >= 0
        y, s = targets[keep, c].numpy(), scores[keep, c].numpy()
        if y.sum() == 0:
            continue
        if average_precision_score is not None:
            aps.append(average_precision_score(y, s))
        else:  # precision at each distinct threshold, weighted by the recall it adds
            ap, prev = 0.0, 0.0
            for t in sorted(set(s.tolist()), reverse=True):
                sel = s >= t
                tp = float((y[sel] == 1).sum())
                ap += (tp / y.sum() - prev) * tp / sel.sum()
                prev = tp / y.sum()
            aps.append(ap)
    return float(np.mean(aps))


def _config(demo_data, work_dir, iters):
    from mmengine.config import Config
    pipe = [dict(type='Resize', height=32, width=32)]
    aug = [dict(type='HorizontalFlip', p=0.5), dict(type='RandomRotate90', p=0.5)]
    return Config(dict(
        task='classification',
        model=dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(3,)),
                   head=dict(type='linear'), topk=3),
        data=dict(train=dict(dataset=dict(type='ImageFolder', root=demo_data['cls_train_dir'], pipeline=aug),
                             batch_size=11, num_workers=0),
                  # the 12-image fixture has ~33 train crops and ~17 val crops (no star): score the train crops
                  val=dict(dataset=dict(type='ImageFolder', root=demo_data['cls_train_dir'], pipeline=pipe),
                           batch_size=40, num_workers=0)),
        evaluator=dict(type='Accuracy', topk=(1, 2)),
        runtime=dict(tensorboard=False, log_interval=1, report=False),
        optim=dict(optimizer=dict(type='AdamW', lr=3e-3, weight_decay=0.0)),
        schedule=dict(by_epoch=False, max_iters=iters, warmup_iters=1, policy='constant'),
        train_cfg=dict(eval_interval=iters, checkpoint_interval=iters),
        work_dir=str(work_dir),
    ))


def test_trains_through_the_trainer_then_cli_test_and_infer(demo_data, tmp_path, capsys):
    from attnkit.engine import Trainer
    from attnkit.registry import INFERENCERS
    iters = 30
    cfg = _config(demo_data, tmp_path / 'work', iters)
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    chance = max(trainer.train_dataset.class_counts()) / len(trainer.train_dataset)  # majority class: ~1/3
    metrics = trainer.train()
    assert list(metrics)[:3] == ['top1', 'top2', 'mean_class_acc']
    assert metrics['top1'] >= chance + 0.3, (metrics, chance)
    with open(tmp_path / 'work' / 'log.jsonl') as f:
        losses = [r['loss'] for r in map(json.loads, f) if r.get('mode') == 'train']
    assert len(losses) == iters and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses

    out = tmp_path / 'metrics.json'
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE='1', HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'attnkit', 'test', str(tmp_path / 'work' / 'config.py'),
                           str(tmp_path / 'work' / 'model.safetensors'), '--device', 'cpu', '--out', str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text())['top1'] == pytest.approx(metrics['top1'])
    assert 'top-1 %' in proc.stdout  # the per-class summary

    crop = _crops(demo_data, 'val')['square'][0]
    files = INFERENCERS.get('ImageClassifier')(trainer.unwrapped_model, cfg, [crop], str(tmp_path / 'pics'))
    printed = capsys.readouterr().out
    assert [os.path.basename(f) for f in files] == [os.path.basename(crop)[:-4] + s for s in ('_cls.png', '_cls.json')]
    top = json.loads(open(files[1]).read())['topk']
    assert len(top) == 3 and f"1. {top[0]['class']}" in printed
    # a pooling head that records where it looked gets its heat map (attnpool: (N, heads, H, W), heads averaged)
    pooled = build_model(dict(cfg.model, head=dict(type='attnpool', feat_size=2)), metainfo=trainer.metainfo)
    cfg.data.val.dataset.pipeline = [dict(type='Resize', height=64, width=64)]  # a 2x2 map at stride 32
    files = INFERENCERS.get('ImageClassifier')(pooled, cfg, [crop], str(tmp_path / 'pics'))
    assert [os.path.basename(f)[len(os.path.basename(crop)) - 4:] for f in files] == [
        '_cls_1.png', '_cls_1.json', '_attn_head_1.png']  # numbered: the first picture keeps its name
    from PIL import Image
    assert Image.open(files[2]).size[1] == 192  # the 32-px crop enlarged for the picture


def test_mixup_batches_repeat_across_runs_with_workers(demo_data):
    from attnkit.data.randomness import sample_seed
    from attnkit.engine.data import ShardedBatchSampler, build_train_loader
    ds = build_dataset(dict(type='ImageFolder', root=demo_data['cls_train_dir'],
                            pipeline=[dict(type='RandomResizedCrop', size=(32, 32), scale=(0.5, 1.0)),
                                      dict(type='HorizontalFlip', p=0.5)]))
    model = build_model(dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18, base_channels=8,
                                                                   out_indices=(3,)), head=dict(type='linear'),
                             label_smoothing=0.1, mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0)),
                        metainfo=ds.metainfo)

    def run(workers, epoch=0):
        sampler = ShardedBatchSampler(len(ds), 8, seed=3)
        out = []
        for batch in build_train_loader(ds, sampler, workers, seed=3, epoch=epoch):
            seed = batch['metas'][0]['batch_seed']
            assert seed == sample_seed(3, epoch, ('batch', *(m['index'] for m in batch['metas'])))
            plain = model.normalizer(batch['images'])
            images, target, _ = model.mixup(plain.clone(), batch['labels'], seed)
            out.append((images, target, plain))
        return out

    first, second, inline = run(2), run(2), run(0)
    assert len(first) == -(-len(ds) // 8) >= 3
    for a, b, c in zip(first, second, inline):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    for images, target, plain in first[:-1]:  # full batches of 8: mixed (images changed, targets no longer one-hot)
        assert not torch.equal(images, plain) and target.shape == (8, 4)
        assert ((target > 0.05).sum(1) >= 2).any()
    assert not torch.equal(first[0][0], run(0, epoch=1)[0][0])  # another epoch draws anew
