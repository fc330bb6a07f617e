"""Multi-task training: the task-mixing sampler, the Trainer on the demo data with all three tasks, exact mid-epoch
resume, `attnkit test` printing every task's metrics, and export-branch loading into the single-task model."""
import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

from attnkit import cli
from attnkit.config import load_config
from attnkit.engine import Trainer
from attnkit.engine.task_sampler import TaskBatchSampler
from attnkit.errors import CheckpointError, ConfigError

SIZES = {'a': 400, 'b': 100, 'c': 25}


@pytest.mark.parametrize('mode,temperature,expected', [
    ('round_robin', 1.0, {'a': 1 / 3, 'b': 1 / 3, 'c': 1 / 3}),
    ('proportional', 1.0, {'a': 400 / 525, 'b': 100 / 525, 'c': 25 / 525}),
    # p_t ∝ n_t^(1/T), T = 2: sqrt(400) : sqrt(100) : sqrt(25) = 20 : 10 : 5
    ('temperature', 2.0, {'a': 20 / 35, 'b': 10 / 35, 'c': 5 / 35}),
])
def test_sampler_mixes_tasks_as_configured(mode, temperature, expected):
    n = 1000
    sampler = TaskBatchSampler(SIZES, batch_size=1, mode=mode, temperature=temperature, seed=3, num_batches=n)
    ranges = {t: range(sampler.offsets[t], sampler.offsets[t] + SIZES[t]) for t in SIZES}
    counts = Counter()
    for batch in sampler:
        owners = {t for t in SIZES for i in batch if i in ranges[t]}
        assert len(owners) == 1  # one task per batch
        counts[owners.pop()] += 1
    assert len(sampler) == n and sum(counts.values()) == n
    for task, p in expected.items():
        if mode == 'round_robin':  # tasks in turn: exact
            assert abs(counts[task] - n * p) <= 1, (task, counts)
        else:  # independent draws: within 4 binomial standard deviations
            tol = 4 * math.sqrt(n * p * (1 - p))
            assert abs(counts[task] - n * p) <= tol, (task, counts[task], n * p, tol)


def test_sampler_is_deterministic_sharded_and_covers_each_task():
    sizes = {'det': 10, 'vqa': 7}
    one = TaskBatchSampler(sizes, batch_size={'det': 4, 'vqa': 2}, mode='proportional', seed=5)
    # per-task batch counts n_t: ceil(10 / 4) = 3, ceil(7 / 2) = 4 -> 7 batches per epoch by default
    assert len(one) == 7 and one.task_batches == {'det': 3, 'vqa': 4}
    one.set_epoch(2)
    batches = list(one)
    assert batches == list(one)  # a function of (seed, epoch): what a mid-epoch resume relies on
    one.set_epoch(3)
    assert list(one) != batches
    # a pass over a task's data visits every sample once before any repeats
    one.set_epoch(0)
    det = [i for b in one for i in b if i < 10]
    assert len(set(det[:10])) == min(10, len(det))
    # two processes with batch b take the two halves of one process's batch 2b, the same task in every step
    whole = TaskBatchSampler(sizes, batch_size={'det': 4, 'vqa': 2}, mode='temperature', temperature=2, seed=1)
    r0 = TaskBatchSampler(sizes, batch_size={'det': 2, 'vqa': 1}, mode='temperature', temperature=2, seed=1,
                          world_size=2, rank=0)
    r1 = TaskBatchSampler(sizes, batch_size={'det': 2, 'vqa': 1}, mode='temperature', temperature=2, seed=1,
                          world_size=2, rank=1)
    assert len(r0) == len(r1) == len(whole)
    assert [a + b for a, b in zip(r0, r1)] == list(whole)
    with pytest.raises(ConfigError, match="Did you mean 'round_robin'"):
        TaskBatchSampler(sizes, 1, mode='round-robin')
    with pytest.raises(ConfigError, match='missing'):
        TaskBatchSampler(sizes, {'det': 2})


def multitask_config_text(paths, work_dir, tasks=('det', 'seg', 'vqa')):
    """A tiny MultiTaskModel (ResNet-18 of base width 8) on the 64 px demo data, round-robin task batches."""
    img_dir = paths['img_dir']
    datasets = {
        'det': (f"dict(type='CocoDetection', ann_file={str(paths['coco_train_json'])!r}, img_dir={str(img_dir)!r}, "
                "pipeline=[dict(type='HorizontalFlip', p=0.5)], filter_empty=True)",
                f"dict(type='CocoDetection', ann_file={str(paths['coco_val_json'])!r}, img_dir={str(img_dir)!r}, "
                "pipeline=[])"),
        'seg': ("dict(seg_split, split_file='ImageSets/Segmentation/train.txt', "
                "pipeline=[dict(type='HorizontalFlip', p=0.5)])",
                "dict(seg_split, split_file='ImageSets/Segmentation/val.txt', pipeline=[])"),
        'vqa': (f"dict(vqa_split, questions_file={str(paths['vqa_train_questions'])!r}, "
                f"annotations_file={str(paths['vqa_train_annotations'])!r}, answer_min_count=1, flip_prob=0.5)",
                f"dict(vqa_split, questions_file={str(paths['vqa_val_questions'])!r}, "
                f"annotations_file={str(paths['vqa_val_annotations'])!r})"),
    }
    branches = {
        'det': ("dict(task='detection', in_indices=(1, 2, 3), neck=dict(type='FPN', out_channels=16, num_outs=3, "
                "start_level=0), head=dict(type='FCOSHead', feat_channels=16, stacked_convs=1, strides=(8, 16, 32), "
                "regress_ranges=((-1, 16), (16, 32), (32, 1e8))))"),
        'seg': ("dict(task='segmentation', in_indices=(0, 1, 2, 3), neck=dict(type='FPN', out_channels=16, "
                "num_outs=4, start_level=0), decode_head=dict(type='fcn', in_index=1, channels=8, num_convs=1))"),
        'vqa': ("dict(task='vqa', in_indices=(0, 2), grid_fusion='concat', question_encoder=dict(type='gru', "
                "embed_dim=16, hidden_dim=16), head=dict(type='mcan', dim=16, heads=2, ffn=32, depth=1, "
                "flat_hidden=16, glimpses=1, out_dim=32))"),
    }
    batch = {'det': 4, 'seg': 4, 'vqa': 16}
    return f"""
seg_split = dict(type='VOCSegmentation', root={str(paths['voc_root'])!r},
                 metainfo=dict(classes=['background', 'circle', 'square', 'triangle', 'star']))
vqa_split = dict(type='VQAv2Dataset', img_dir={str(img_dir)!r}, img_name_template='{{image_id:06d}}.jpg',
                 pipeline=[dict(type='Resize', height=64, width=64)])
data = dict(
    train=dict(dataset=dict(type='MultiTaskDataset', tasks=dict({', '.join(f'{t}={datasets[t][0]}' for t in tasks)})),
               sampler=dict(mode='round_robin'), batch_size={ {t: batch[t] for t in tasks} },
               group_by={ {t: 'image' for t in tasks if t == 'vqa'} }, num_workers=0),
    val=dict(dataset=dict(type='MultiTaskDataset', tasks=dict({', '.join(f'{t}={datasets[t][1]}' for t in tasks)})),
             batch_size={ {t: 8 for t in tasks} }))
evaluator = dict(det=dict(type='CocoMetric'), seg=dict(type='IoUMetric'), vqa=dict(type='VQAAccuracy'))
model = dict(type='MultiTaskModel', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3)),
             branches=dict({', '.join(f'{t}={branches[t]}' for t in tasks)}))
optim = dict(optimizer=dict(type='AdamW', lr=1e-3), grad_clip=dict(max_norm=10.0))
schedule = dict(by_epoch=False, max_iters=4, warmup_iters=0, policy='cosine')
runtime = dict(seed=0, log_interval=1, tensorboard=False, report=False)
train_cfg = dict(eval_interval=0, checkpoint_interval=2, best_metric={{'det/AP': 1, 'seg/mIoU': 1}})
work_dir = {str(work_dir)!r}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def read_log(work_dir):
    with open(os.path.join(work_dir, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_multitask_trains_resumes_tests_and_exports(tmp_path, demo_data):
    torch.manual_seed(0)
    cfg_a = write(tmp_path, 'a.py', multitask_config_text(demo_data, tmp_path / 'a'))
    straight = Trainer(load_config(cfg_a))
    metrics = straight.train()
    log = read_log(straight.work_dir)
    train = [r for r in log if r['mode'] == 'train']
    # round robin: det, seg, vqa, det; each iteration logs its own task's losses under <task>/
    assert [r['iter'] for r in train] == [1, 2, 3, 4]
    assert [sorted({k.split('/')[0] for k in r if '/' in k}) for r in train] == [['det'], ['seg'], ['vqa'], ['det']]
    assert all(r['loss'] > 0 and math.isfinite(r['loss']) for r in train)
    for key in ('det/AP', 'seg/mIoU', 'vqa/accuracy'):
        assert key in metrics
    ckpt = torch.load(os.path.join(straight.work_dir, 'best.pth'), weights_only=True)
    assert ckpt['best']['value'] == pytest.approx(metrics['det/AP'] + metrics['seg/mIoU'])
    assert list(ckpt['meta']['tasks']) == ['det', 'seg', 'vqa']

    # exact resume mid-epoch: stop after 2 of the epoch's 14 batches, resume, weights equal the straight run
    class Stop(Exception):
        pass

    def stop_at_2(trainer):
        if trainer.iter == 2:
            raise Stop
    cfg_b = write(tmp_path, 'b.py', multitask_config_text(demo_data, tmp_path / 'b'))
    first = Trainer(load_config(cfg_b))
    first.hooks.append(stop_at_2)
    with pytest.raises(Stop):
        first.train()
    latest = tmp_path / 'b' / 'latest.pth'
    ckpt = torch.load(latest, weights_only=True)
    assert (ckpt['iter'], ckpt['epoch'], ckpt['iter_in_epoch']) == (2, 0, 2)
    resumed = Trainer(load_config(cfg_b), resume=True)
    resumed.train()
    a = torch.load(tmp_path / 'a' / 'latest.pth', weights_only=True)['model']
    b = torch.load(latest, weights_only=True)['model']
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k

    # resuming with another set of branches is refused, naming them
    cfg_c = write(tmp_path, 'c.py', multitask_config_text(demo_data, tmp_path / 'b', tasks=('det', 'seg')))
    with pytest.raises(CheckpointError, match=r'branches det, seg, vqa.*not in the config: vqa'):
        Trainer(load_config(cfg_c), resume=True)

    # `attnkit test` prints every task's metrics: the numbers of the training run's final evaluation
    env = dict(os.environ, OMP_NUM_THREADS='1', NO_ALBUMENTATIONS_UPDATE='1')
    out = subprocess.run([sys.executable, '-m', 'attnkit', 'test', cfg_b, str(latest), '--device', 'cpu'],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = dict(line.split('|') for line in out.stdout.splitlines() if '|' in line and '/' in line)
    printed = {k.strip(): float(v) for k, v in printed.items()}
    for key in ('det/AP', 'seg/mIoU', 'vqa/accuracy'):
        assert printed[key] == pytest.approx(metrics[key], abs=1e-4), key

    # export-branch writes a checkpoint the single-task Segmentor loads; it predicts as the branch does
    from attnkit.engine import load_model
    from attnkit.builder import build_dataset
    assert cli.main(['multitask', 'export-branch', cfg_b, str(latest), '--branch', 'seg',
                     '--out', str(tmp_path / 'seg')]) == 0
    cfg = load_config(cfg_b)
    multi = load_model(cfg, str(latest))
    single_cfg = load_config(str(tmp_path / 'seg' / 'model_config.py'))  # the equivalent single-task model
    assert single_cfg.model.type == 'Segmentor'
    single = load_model(single_cfg, str(tmp_path / 'seg' / 'model.safetensors'))
    val = build_dataset(cfg.data.val.dataset, metainfo=multi.metainfo).task_view('seg')
    batch = val.collate([val[0], val[1]])
    with torch.no_grad():
        got = single(batch)
        want = multi(batch)
    assert len(got) == 2 and all(torch.equal(g['sem_seg'], w['sem_seg']) for g, w in zip(got, want))
    # attnkit infer: boxes, mask and answer of one backbone pass drawn on one picture (+ a JSON of them)
    from PIL import Image
    from attnkit.registry import INFERENCERS
    image = os.path.join(demo_data['img_dir'], sorted(os.listdir(demo_data['img_dir']))[0])
    files = INFERENCERS.get('MultiTaskModel')(multi, cfg, [image], str(tmp_path / 'infer'),
                                              question='what shape is in the image?')
    assert [os.path.basename(f) for f in files] == [os.path.basename(image)[:-4] + s
                                                   for s in ('_multitask.png', '_multitask.json')]
    assert Image.open(files[0]).size[0] >= Image.open(image).size[0]
    with open(files[1]) as f:
        drawn = json.load(f)
    assert {'det', 'seg', 'vqa'} <= set(drawn)
    assert drawn['vqa']['answers'][0]['answer'] in multi.metainfo['tasks']['vqa']['answers']
    # the same on the fast path (attnkit infer --fast): predict_all runs under its no_grad and autocast; fp32 draws
    # the same answer, bf16 (forced: emulated where the CPU has no bf16 units) runs with its weights stored in bf16
    import copy
    from attnkit.deploy import prepare_fast
    for bf16 in (False, True):
        fast, report = prepare_fast(copy.deepcopy(multi), bf16=bf16)
        assert (report.bf16_weights > 0) == bf16
        files = INFERENCERS.get('MultiTaskModel')(fast, cfg, [image], str(tmp_path / f'infer_fast_{bf16}'),
                                                  question='what shape is in the image?')
        with open(files[1]) as f:
            fast_drawn = json.load(f)
        assert {'det', 'seg', 'vqa'} <= set(fast_drawn)
        if not bf16:
            assert fast_drawn['vqa']['answers'][0]['answer'] == drawn['vqa']['answers'][0]['answer']

    from attnkit.tasks.multitask.export import export_branch_checkpoint
    with pytest.raises(ConfigError, match="No branch 'segm' in the config. Did you mean 'seg'"):
        export_branch_checkpoint(cfg, str(latest), 'segm', str(tmp_path / 'x'))


def test_multitask_dataset_tags_routes_and_rejects_conflicting_classes(demo_data):
    from attnkit.builder import build_dataset
    from attnkit.errors import DataError
    classes = ['background', 'circle', 'square', 'triangle', 'star']
    seg = dict(type='VOCSegmentation', root=str(demo_data['voc_root']), pipeline=[],
               split_file='ImageSets/Segmentation/train.txt', metainfo=dict(classes=classes))
    det = dict(type='CocoDetection', ann_file=str(demo_data['coco_train_json']), img_dir=str(demo_data['img_dir']),
               pipeline=[])
    ds = build_dataset(dict(type='MultiTaskDataset', tasks=dict(det=det, seg=[seg, seg])))
    assert ds.sizes == {'det': 12, 'seg': 24} and ds.offsets == {'det': 0, 'seg': 12}
    assert ds.metainfo['tasks']['seg']['classes'] == classes
    assert ds.metainfo['tasks']['det']['classes'] == ['circle', 'square', 'triangle', 'star']
    # a sample carries its task; the batch is the task dataset's own batch plus 'task'
    assert ds[11]['task'] == 'det' and ds[12]['task'] == 'seg'
    batch = ds.collate(ds.__getitems__([12, 30]))
    assert batch['task'] == 'seg' and batch['masks'].shape[0] == 2 and 'boxes' not in batch
    assert torch.equal(batch['images'][1], ds.datasets['seg'][18]['image'])  # 30 = seg offset 12 + 18
    with pytest.raises(DataError, match='one task'):
        ds.collate(ds.__getitems__([0, 12]))
    # two datasets of one branch with other class lists, and a val split against the training metainfo
    swapped = dict(seg, metainfo=dict(classes=['background', 'square', 'circle', 'triangle', 'star']))
    with pytest.raises(ConfigError, match=r"Task 'seg': conflicting classes .* same names in another order"):
        build_dataset(dict(type='MultiTaskDataset', tasks=dict(seg=[seg, swapped])))
    with pytest.raises(ConfigError, match=r"Task 'seg': conflicting classes .*metainfo it was given"):
        build_dataset(dict(type='MultiTaskDataset', tasks=dict(seg=swapped)), metainfo=ds.metainfo)
    with pytest.raises(ConfigError, match="task 'segm' is not a branch .* did you mean 'seg'"):
        build_dataset(dict(type='MultiTaskDataset', tasks=dict(segm=seg)), metainfo=ds.metainfo)
    # a single-task evaluator on multi-task data is refused with the per-task form to use
    from attnkit.engine.evaluate import build_split_evaluator
    with pytest.raises(ConfigError, match=r'one evaluator per task, evaluator=dict\(det=dict'):
        build_split_evaluator(dict(type='IoUMetric'), ds)
