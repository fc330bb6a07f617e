"""Two CPU processes (accelerate launch, gloo) train like one process with the same global batch."""
import json
import os
import socket
import subprocess
import sys

import torch

import engine_toy
from attnkit.config import load_config
from attnkit.engine import Trainer

TESTS = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def config(tmp_path, name, batch_size):
    path = tmp_path / name
    path.write_text(engine_toy.toy_config_text(
        str(tmp_path / name[:-3]),
        # 16 training samples: 4 global batches of 4; 7 validation samples: not divisible by 2 processes
        data=(f"dict(train=dict(dataset=dict(type='ToyRegressionDataset', length=16), batch_size={batch_size}), "
              f"val=dict(dataset=dict(type='ToyRegressionDataset', length=7, seed=1), batch_size=2))"),
        schedule="dict(by_epoch=True, max_epochs=2, warmup_iters=2, policy='step', milestones=(1,))"))
    return str(path)


def test_two_processes_match_one_process(tmp_path):
    one = Trainer(load_config(config(tmp_path, 'one.py', batch_size=4)))
    metrics_one = one.train()

    env = dict(os.environ, ACCELERATE_USE_CPU='1', PYTHONPATH=TESTS + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
           '--main_process_port', str(free_port()), '-m', 'attnkit', 'train', config(tmp_path, 'two.py', batch_size=2)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    two = torch.load(tmp_path / 'two' / 'latest.pth', weights_only=True)
    ref = torch.load(tmp_path / 'one' / 'latest.pth', weights_only=True)
    assert two['iter'] == ref['iter'] == 8
    assert len(two['rng']) == 2  # one random state per process
    # model-side randomness (dropout) is seeded per process: the states differ
    assert not torch.equal(two['rng'][0]['torch'], two['rng'][1]['torch'])
    for key, value in ref['model'].items():
        assert torch.allclose(value, two['model'][key], atol=1e-5, rtol=0), key
    with open(tmp_path / 'two' / 'log.jsonl') as f:
        vals = [r for r in map(json.loads, f) if r['mode'] == 'val']
    assert [v['count'] for v in vals] == [7, 7]  # gathered from both processes: no duplicate, no drop
    assert abs(vals[-1]['neg_mse'] - metrics_one['neg_mse']) < 1e-5
