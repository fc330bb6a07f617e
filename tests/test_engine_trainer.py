"""The Trainer end to end on a toy regression task: learning, checkpoints, resume, precision, failures."""
import json
import os

import pytest
import torch
from safetensors import safe_open

import engine_toy
from attnkit import cli
from attnkit.config import load_config
from attnkit.engine import NonFiniteLossError, Trainer


def write_cfg(tmp_path, name='toy.py', **over):
    path = tmp_path / name
    path.write_text(engine_toy.toy_config_text(str(tmp_path / 'work'), **over))
    return str(path)


def read_log(work_dir):
    with open(os.path.join(work_dir, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


def params_of(trainer):
    return {k: v.detach().clone() for k, v in trainer.unwrapped_model.state_dict().items()}


def assert_same_params(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


def test_training_learns_and_writes_outputs(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(write_cfg(tmp_path, runtime="dict(seed=0, channels_last=True, log_interval=1, tensorboard=True)"))
    trainer = Trainer(cfg)
    metrics = trainer.train()
    work = trainer.work_dir
    log = read_log(work)
    train_losses = [r['loss'] for r in log if r['mode'] == 'train']
    vals = [r for r in log if r['mode'] == 'val']
    assert len(train_losses) == 12 and sum(train_losses[-3:]) < 0.5 * sum(train_losses[:3])
    assert [v['iter'] for v in vals] == [4, 8, 12] and all(v['count'] == 7 for v in vals)  # 7 val samples, once each
    assert list(metrics) == ['neg_mse', 'count'] and metrics['neg_mse'] == vals[-1]['neg_mse']
    for name in ('latest.pth', 'best.pth', 'model.safetensors', 'config.py'):
        assert os.path.isfile(os.path.join(work, name)), name
    assert any(f.startswith('events.out.tfevents') for _, _, fs in os.walk(os.path.join(work, 'tb')) for f in fs)
    ckpt = torch.load(os.path.join(work, 'latest.pth'), weights_only=True)
    assert {'model', 'meta', 'optimizer', 'scheduler', 'rng', 'epoch', 'iter', 'iter_in_epoch', 'best',
            'config'} <= set(ckpt)
    assert ckpt['iter'] == 12 and ckpt['epoch'] == 3 and ckpt['meta'] == {'classes': ['value'], 'scale': 1}
    best = torch.load(os.path.join(work, 'best.pth'), weights_only=True)
    assert best['best']['value'] == max(v['neg_mse'] for v in vals)
    with safe_open(os.path.join(work, 'model.safetensors'), framework='pt') as f:
        assert json.loads(f.metadata()['meta']) == ckpt['meta']
        assert torch.equal(f.get_tensor('fc.weight'), ckpt['model']['fc.weight'])
    assert 'lr=0.05' in open(os.path.join(work, 'config.py')).read().replace(' ', '')


def test_resume_mid_epoch_matches_uninterrupted_run(tmp_path):
    over = dict(schedule="dict(by_epoch=False, max_iters=10, warmup_iters=3, policy='cosine')",
                data=("dict(train=dict(dataset=dict(type='ToyRegressionDataset', length=16), batch_size=3), "
                      "val=dict(dataset=dict(type='ToyRegressionDataset', length=5, seed=1), batch_size=2))"),
                train_cfg="dict(eval_interval=0, checkpoint_interval=7, ema=dict(momentum=0.2))")
    straight = Trainer(load_config(write_cfg(tmp_path, 'a.py', **over)), work_dir=str(tmp_path / 'a'))
    straight.train()

    class Interrupt(Exception):
        pass

    def stop_at_7(trainer):
        if trainer.iter == 7:
            raise Interrupt
    path = write_cfg(tmp_path, 'b.py', **over)
    first = Trainer(load_config(path), work_dir=str(tmp_path / 'b'))
    first.hooks.append(stop_at_7)
    with pytest.raises(Interrupt):
        first.train()
    ckpt = torch.load(tmp_path / 'b' / 'latest.pth', weights_only=True)
    assert (ckpt['iter'], ckpt['epoch'], ckpt['iter_in_epoch']) == (7, 1, 1)  # 6 batches per epoch
    assert cli.main(['train', path, '--work-dir', str(tmp_path / 'b'), '--resume']) == 0
    a = torch.load(tmp_path / 'a' / 'latest.pth', weights_only=True)
    b = torch.load(tmp_path / 'b' / 'latest.pth', weights_only=True)
    assert b['iter'] == 10
    # the second run continued at iteration 8 (a fresh run would log iterations 2, 4, 6 again)
    assert [r['iter'] for r in read_log(str(tmp_path / 'b')) if r['mode'] == 'train'] == [2, 4, 6, 8, 10]
    assert_same_params(a['model'], b['model'], 1e-6)
    assert_same_params(a['ema']['state'], b['ema']['state'], 1e-6)
    assert a['optimizer']['param_groups'][0]['lr'] == pytest.approx(b['optimizer']['param_groups'][0]['lr'])


def test_gradient_accumulation_equals_larger_batch(tmp_path):
    def data(bs):
        return (f"dict(train=dict(dataset=dict(type='ToyRegressionDataset', length=16), batch_size={bs}), "
                f"val=None)")
    big = Trainer(load_config(write_cfg(tmp_path, 'big.py', data=data(4))), work_dir=str(tmp_path / 'big'))
    big.train()
    acc = Trainer(load_config(write_cfg(tmp_path, 'acc.py', data=data(2), optim=(
        "dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4), accumulate_steps=2)"))),
        work_dir=str(tmp_path / 'acc'))
    acc.train()
    assert acc.iter == big.iter == 12
    assert_same_params(params_of(big), params_of(acc), 1e-5)


def test_interrupted_save_keeps_loadable_latest(tmp_path, monkeypatch):
    import attnkit.engine.checkpoint as ckmod
    real_save = torch.save
    calls = []

    def dying_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:  # the second checkpoint dies half-way through writing
            with open(f, 'wb') as fh:
                fh.write(b'PK\x03\x04 truncated')
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(ckmod.torch, 'save', dying_save)
    trainer = Trainer(load_config(write_cfg(tmp_path, train_cfg="dict(eval_interval=0, checkpoint_interval=1)")))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    monkeypatch.setattr(ckmod.torch, 'save', real_save)
    latest = os.path.join(trainer.work_dir, 'latest.pth')
    ckpt = torch.load(latest, weights_only=True)
    assert ckpt['iter'] == 4 and ckpt['epoch'] == 1
    assert not os.path.exists(latest + '.tmp')


def _nan_cfg(tmp_path, nan_at, optimizer, max_nonfinite=10, name='c.py'):
    return load_config(write_cfg(
        tmp_path, name=name, schedule="dict(by_epoch=False, max_iters=8, warmup_iters=0, policy='constant')",
        data=(f"dict(train=dict(dataset=dict(type='ToyRegressionDataset', length=16, nan_at={nan_at!r}), "
              "batch_size=4, shuffle=False), val=None)"),
        optim=f"dict(optimizer={optimizer})",
        train_cfg=f"dict(eval_interval=0, checkpoint_interval=2, max_nonfinite_steps={max_nonfinite})"))


@pytest.mark.parametrize('optimizer', ["dict(type='AdamW', lr=0.01)",  # fused: skipped on the device
                                       "dict(type='SGD', lr=0.05, momentum=0.9)"])  # flag read on the host
def test_nonfinite_step_is_skipped_and_training_goes_on(tmp_path, optimizer):
    """A batch with a NaN target: its step is skipped (weights, momentum and step count untouched), the
    other steps train as usual, and every checkpoint stays finite."""
    trainer = Trainer(_nan_cfg(tmp_path, (10,), optimizer))
    seen = []
    trainer.hooks.append(lambda t: seen.append({k: v.detach().clone() for k, v in
                                                t.unwrapped_model.state_dict().items()}))
    trainer.train()
    assert trainer.iter == 8 and int(trainer._nonfinite_total) == 2  # batch 2 of both epochs
    for it in (2, 6):  # the weights after iteration 3 (index 2) and 7 equal those after 2 and 6
        for key in seen[it]:
            assert torch.equal(seen[it][key], seen[it - 1][key]), (it, key)
    for it in (1, 3, 5, 7):
        assert not torch.equal(seen[it]['fc.weight'], seen[it - 1]['fc.weight'])
    ckpt = torch.load(os.path.join(trainer.work_dir, 'latest.pth'), weights_only=True)
    assert ckpt['iter'] == 8 and all(torch.isfinite(v).all() for v in ckpt['model'].values())


def test_nonfinite_steps_stop_after_limit_and_keep_last_finite_checkpoint(tmp_path):
    # samples 8..15 are NaN: iterations 3 and 4 of epoch 0 are skipped; with a limit of 2 training stops there
    trainer = Trainer(_nan_cfg(tmp_path, tuple(range(8, 16)), "dict(type='AdamW', lr=0.01)", max_nonfinite=2))
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    msg = str(info.value)
    assert 'in 2 consecutive steps up to iteration 4' in msg and 'loss=nan' in msg and 'loss_mse=nan' in msg
    assert 'latest.pth (iteration 2) is kept' in msg
    ckpt = torch.load(os.path.join(trainer.work_dir, 'latest.pth'), weights_only=True)
    assert ckpt['iter'] == 2 and all(torch.isfinite(v).all() for v in ckpt['model'].values())
    assert all(torch.isfinite(p).all() for p in trainer.unwrapped_model.parameters())


def test_bf16_training_on_cpu(tmp_path):
    trainer = Trainer(load_config(write_cfg(tmp_path, schedule="dict(by_epoch=True, max_epochs=1, warmup_iters=0)")),
                      mixed_precision='bf16')
    dtypes = []
    trainer.unwrapped_model.conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    metrics = trainer.train()
    assert trainer.accelerator.mixed_precision == 'bf16'
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert trainer.unwrapped_model.conv.weight.dtype == torch.float32  # master weights stay fp32
    assert metrics['count'] == 7 and metrics['neg_mse'] == metrics['neg_mse']


def test_cfg_options_reach_trainer_and_early_stopping(tmp_path, capsys):
    path = write_cfg(tmp_path, schedule="dict(by_epoch=True, max_epochs=6, warmup_iters=0)",
                     train_cfg="dict(eval_interval=1, checkpoint_interval=1, keep_ckpts=2, "
                               "early_stopping=dict(patience=2))")
    code = cli.main(['train', path, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                     'optim.optimizer.lr=0.0', 'data.train.batch_size=8'])
    assert code == 0
    ckpt = torch.load(tmp_path / 'w' / 'latest.pth', weights_only=True)
    assert ckpt['optimizer']['param_groups'][0]['initial_lr'] == 0.0
    # lr 0: no improvement after the first evaluation -> stops after 1 + patience epochs of 2 iterations
    assert ckpt['epoch'] == 3 and ckpt['iter'] == 6
    assert sorted(f for f in os.listdir(tmp_path / 'w') if f.endswith('.pth')) == [
        'best.pth', 'epoch_2.pth', 'epoch_3.pth', 'latest.pth']
    assert torch.load(tmp_path / 'w' / 'best.pth', weights_only=True)['iter'] == 2
    out = capsys.readouterr().out
    assert 'Early stopping' in out and 'toy summary: 7 samples' in out and 'neg_mse' in out


def test_checkpoint_is_written_before_evaluation_and_resume_runs_the_missed_one(tmp_path, monkeypatch):
    """An evaluation that fails (a missing val image, a metric bug) loses no training: the epoch's checkpoint is
    already on disk, and --resume runs the evaluation that did not finish before training on."""
    import engine_toy
    cfg = write_cfg(tmp_path, schedule="dict(by_epoch=True, max_epochs=2, warmup_iters=0)",
                    train_cfg="dict(eval_interval=1, checkpoint_interval=1)")
    real_compute = engine_toy.ToyMetric.compute

    def broken(self):
        raise RuntimeError('evaluation failed')
    monkeypatch.setattr(engine_toy.ToyMetric, 'compute', broken)
    trainer = Trainer(load_config(cfg))
    with pytest.raises(RuntimeError, match='evaluation failed'):
        trainer.train()
    ckpt = torch.load(os.path.join(trainer.work_dir, 'latest.pth'), weights_only=True)
    assert ckpt['iter'] == 4 and ckpt['epoch'] == 1 and ckpt['evaluated_iter'] == -1

    monkeypatch.setattr(engine_toy.ToyMetric, 'compute', real_compute)
    resumed = Trainer(load_config(cfg), resume=True)
    resumed.train()
    vals = [r for r in read_log(resumed.work_dir) if r['mode'] == 'val']
    assert [v['iter'] for v in vals] == [4, 8]  # the missed evaluation first, then the next epoch's
    assert torch.load(os.path.join(trainer.work_dir, 'best.pth'), weights_only=True)['iter'] in (4, 8)
