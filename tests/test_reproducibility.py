"""One rule for randomness: a sample's augmentation is a function of (seed, epoch, sample index) only.

End to end on the demo detector with its random flips and 90-degree turns: the same seed gives the same
weights with 0 and 2 loader workers, and a training run killed with SIGKILL and resumed through the CLI ends
where the uninterrupted run ends.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from attnkit.config import load_config
from attnkit.data import Pipeline, SeededDataset, epoch_random, sample_random, sample_seed
from attnkit.engine import Trainer
from attnkit.errors import ConfigError
from attnkit.engine.data import ShardedBatchSampler, build_train_loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_FCOS = os.path.join(REPO, 'configs', 'demo', 'fcos_r18-cbam_fpn_shapes.py')


def fcos_config(tmp_path, demo_data, name, workers, seed=0, schedule=None, train_cfg=None):
    """The demo FCOS config (its random flips and turns on) over the 64-px test demo data, batch 4."""
    schedule = schedule or "dict(by_epoch=True, max_epochs=2, warmup_iters=2, policy='cosine', min_lr_ratio=0.01)"
    train_cfg = train_cfg or "dict(eval_interval=0, checkpoint_interval=1)"
    text = f"""_base_ = [{DEMO_FCOS!r}]
data = dict(
    train=dict(dataset=dict(ann_file={demo_data['coco_train_json']!r}, img_dir={demo_data['img_dir']!r}),
               batch_size=4, num_workers={workers}),
    val=None)
model = dict(backbone=dict(base_channels=8), neck=dict(out_channels=16), head=dict(feat_channels=16, stacked_convs=1))
runtime = dict(seed={seed}, log_interval=1, tensorboard=False, channels_last=False)
schedule = dict(_delete_=True, **{schedule})
train_cfg = {train_cfg}
work_dir = {str(tmp_path / name)!r}
"""
    path = tmp_path / f'{name}.py'
    path.write_text(text)
    return str(path)


def weights(path):
    return torch.load(path, weights_only=True)['model']


def max_diff(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())


class DrawDataset:
    """Each sample: draws of albumentations (through a Pipeline), numpy, random and torch."""

    def __init__(self):
        self.pipeline = Pipeline([dict(type='HorizontalFlip', p=0.5), dict(type='RandomBrightnessContrast', p=1.0)])
        self.image = (np.arange(8 * 8 * 3) % 251).astype(np.uint8).reshape(8, 8, 3)

    def __len__(self):
        return 12

    def __getitem__(self, i):
        import random
        out = self.pipeline(self.image)
        return torch.cat([out['image'].float().flatten()[:16],
                          torch.tensor([np.random.rand(), random.random(), float(torch.rand(()))])])


def test_sample_draws_depend_on_seed_epoch_index_only():
    ds = DrawDataset()
    a = SeededDataset(ds, seed=3, epoch=0)
    assert torch.equal(a[5], SeededDataset(ds, seed=3, epoch=0)[5])  # reproducible
    assert not torch.equal(a[5], SeededDataset(ds, seed=3, epoch=1)[5])  # another epoch: other draws
    assert not torch.equal(a[5], SeededDataset(ds, seed=4, epoch=0)[5])  # another seed
    assert not torch.equal(a[5], a[6])  # another sample
    # order of loading (another worker or process) changes nothing
    forward = [a[i] for i in range(12)]
    backward = [a[i] for i in reversed(range(12))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward))
    # outside the scope, the global generators are untouched
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _ = a[1]
    assert torch.equal(torch.rand(3), expected)


def test_kth_sample_differs_between_ranks_and_epochs_and_not_between_worker_counts():
    ds = DrawDataset()

    def kth_samples(rank, epoch, workers):
        sampler = ShardedBatchSampler(len(ds), 2, world_size=2, rank=rank, seed=0)
        loader = build_train_loader(ds, sampler, workers, seed=0, epoch=epoch)
        loader.collate_fn = lambda samples: torch.stack(samples)
        return torch.cat(list(loader))

    r0, r1 = kth_samples(0, 0, 0), kth_samples(1, 0, 0)
    assert r0.shape == r1.shape == (6, 19)
    assert all(not torch.equal(r0[k], r1[k]) for k in range(6))
    assert all(not torch.equal(r0[k], kth_samples(0, 1, 0)[k]) for k in range(6))
    assert torch.equal(r0, kth_samples(0, 0, 2))  # two workers: the very same draws


def test_nested_scope_keys_shared_draws():
    with epoch_random(0, 2):
        with sample_random(7) as outer:
            with sample_random(('image', 11)) as inner:
                assert inner == sample_seed(0, 2, ('image', 11))
            assert outer == sample_seed(0, 2, 7)
    with sample_random(7) as none:  # no epoch scope: nothing is seeded
        assert none is None


def test_same_seed_same_weights_with_0_and_2_workers(tmp_path, demo_data):
    runs = {}
    for name, workers, seed in (('w0', 0, 0), ('w2', 2, 0), ('s1', 0, 1)):
        trainer = Trainer(load_config(fcos_config(tmp_path, demo_data, name, workers, seed=seed)))
        trainer.train()
        runs[name] = weights(os.path.join(trainer.work_dir, 'latest.pth'))
    print(f"same seed, 0 vs 2 workers: max |dparam| = {max_diff(runs['w0'], runs['w2']):.3g}")
    assert max_diff(runs['w0'], runs['w2']) <= 1e-6
    assert max_diff(runs['w0'], runs['s1']) > 1e-3  # the seed matters (initial weights and augmentation)


def _train_cli(config, *extra, **popen):
    env = dict(os.environ, OMP_NUM_THREADS='1', NO_ALBUMENTATIONS_UPDATE='1', HF_HUB_OFFLINE='1')
    return subprocess.Popen([sys.executable, '-m', 'attnkit', 'train', config, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path, demo_data):
    # 3 iterations per epoch, a checkpoint every 2 iterations: the kill lands mid-epoch
    schedule = "dict(by_epoch=False, max_iters=12, warmup_iters=2, policy='cosine', min_lr_ratio=0.01)"
    train_cfg = "dict(eval_interval=0, checkpoint_interval=2)"
    full = fcos_config(tmp_path, demo_data, 'full', 2, schedule=schedule, train_cfg=train_cfg)
    killed = fcos_config(tmp_path, demo_data, 'killed', 2, schedule=schedule, train_cfg=train_cfg)
    proc = _train_cli(full)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]

    latest = tmp_path / 'killed' / 'latest.pth'
    proc = _train_cli(killed)
    deadline = time.time() + 600
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    state = torch.load(latest, weights_only=True)
    assert 0 < state['iter'] < 12 and state['iter_in_epoch'] != 0, (state['iter'], state['iter_in_epoch'])

    proc = _train_cli(killed, '--resume')
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert f"Resumed from {latest}" in out
    a, b = weights(tmp_path / 'full' / 'latest.pth'), weights(latest)
    assert torch.load(latest, weights_only=True)['iter'] == 12
    print(f"SIGKILL at iteration {state['iter']} + --resume vs uninterrupted: max |dparam| = {max_diff(a, b):.3g}")
    assert max_diff(a, b) <= 1e-6


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_sigint_sigterm_save_interrupted_and_exit_with_one_line(tmp_path, demo_data, signum):
    schedule = "dict(by_epoch=False, max_iters=400, warmup_iters=2, policy='cosine', min_lr_ratio=0.01)"
    cfg = fcos_config(tmp_path, demo_data, 'int', 2, schedule=schedule, train_cfg="dict(eval_interval=0, "
                      "checkpoint_interval=1000)")
    log = tmp_path / 'int' / 'log.jsonl'
    proc = _train_cli(cfg, start_new_session=True)
    deadline = time.time() + 300
    while (not log.exists() or log.read_text().count('\n') < 2) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if signum == signal.SIGINT:  # Ctrl-C in a terminal: the whole process group, loader workers included
        os.killpg(proc.pid, signum)
    else:  # `kill PID`, a scheduler's stop: the main process only
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    lines = [line for line in err.strip().splitlines() if line.startswith('error:') or 'Traceback' in line]
    assert proc.returncode == 128 + signum, err[-2000:]
    assert 'Traceback' not in err, err[-2000:]
    assert len(lines) == 1 and len(lines[0]) < 300 and 'interrupted.pth' in lines[0], lines
    state = torch.load(tmp_path / 'int' / 'interrupted.pth', weights_only=True)
    assert 2 <= state['iter'] < 400
    assert torch.load(tmp_path / 'int' / 'latest.pth', weights_only=True)['iter'] == state['iter']


def test_vqa_flip_is_keyed_by_image_whatever_worker_batch_or_rank_loads_it(demo_data):
    """The question-aware flip (and the image's augmentation) is one draw per (seed, epoch, image): questions of
    one image agree, and the draws do not change with the number of workers, the batching or the rank."""
    from attnkit.builder import build_dataset
    ds = build_dataset(dict(type='VQAv2Dataset', img_dir=demo_data['img_dir'], img_name_template='{image_id:06d}.jpg',
                            pipeline=[dict(type='Resize', height=32, width=32), dict(type='ColorJitter', p=1.0)],
                            questions_file=demo_data['vqa_train_questions'],
                            annotations_file=demo_data['vqa_train_annotations'], answer_min_count=1, flip_prob=0.5))

    def views(world, workers, epoch=0):
        seen = {}
        for rank in range(world):
            sampler = ShardedBatchSampler(len(ds), 8, world_size=world, rank=rank, seed=0)
            for batch in build_train_loader(ds, sampler, workers, seed=0, epoch=epoch):
                for meta, k in zip(batch['metas'], batch['image_index'].tolist()):
                    seen.setdefault(meta['image_id'], set()).add(
                        (meta['flipped'], float(batch['images'][k].float().sum())))
        return seen

    one = views(1, 0)
    assert all(len(v) == 1 for v in one.values())  # every question of an image saw the same view
    flips = [next(iter(v))[0] for v in one.values()]
    assert 0 < sum(flips) < len(flips)  # the flip is drawn: some images flipped, some not
    assert views(1, 2) == one and views(2, 0) == one
    assert views(1, 0, epoch=1) != one


def test_vqa_view_per_batch_gives_each_batch_of_an_image_a_new_view(demo_data):
    """view_per='batch' with the image-capped sampler (2 questions of an image per batch): the questions of an
    image inside one batch share one view, the batches holding the same image get different views (the default
    'epoch' gives all of them one), and the views do not change with the number of loader workers."""
    from attnkit.builder import build_dataset
    from attnkit.engine.question_sampler import build_batch_sampler

    def views(view_per, workers):
        ds = build_dataset(dict(type='VQAv2Dataset', img_dir=demo_data['img_dir'], img_name_template='{image_id:06d}.jpg',
                                pipeline=[dict(type='Resize', height=32, width=32), dict(type='ColorJitter', p=1.0)],
                                questions_file=demo_data['vqa_train_questions'], view_per=view_per,
                                annotations_file=demo_data['vqa_train_annotations'], answer_min_count=1))
        sampler = build_batch_sampler(len(ds), 8, groups=ds.group_keys('image'), max_per_group=2)
        sizes = {}
        for key in ds.group_keys('image'):
            sizes[key] = sizes.get(key, 0) + 1
        per_batch, per_image = [], {}
        for batch in build_train_loader(ds, sampler, workers, seed=0, epoch=0):
            sums = [float(img.float().sum()) for img in batch['images']]
            assert len(sums) == len({m['image_id'] for m in batch['metas']})  # one view per image in a batch
            per_batch.append(sums)
            for meta, k in zip(batch['metas'], batch['image_index'].tolist()):
                per_image.setdefault(meta['image_id'], set()).add(sums[k])
        return per_batch, per_image, sizes

    _, epoch_images, sizes = views('epoch', 0)
    assert all(len(v) == 1 for v in epoch_images.values())
    batch_batches, batch_images, _ = views('batch', 0)
    # an image with n questions sits in ceil(n / 2) batches (no batch holds two of its chunks): as many views
    assert {k: len(v) for k, v in batch_images.items()} == {k: -(-n // 2) for k, n in sizes.items()}
    assert views('batch', 2)[0] == batch_batches
    with pytest.raises(ConfigError, match="view_per must be 'epoch' or 'batch', got 'question'"):
        views('question', 0)
