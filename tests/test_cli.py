"""The attnkit command line: subcommands, option passing, and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

import engine_toy
from attnkit import cli

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A config and the checkpoint of one short training run."""
    tmp = tmp_path_factory.mktemp('cli')
    path = tmp / 'toy.py'
    path.write_text(engine_toy.toy_config_text(str(tmp / 'work'),
                                               schedule="dict(by_epoch=True, max_epochs=1, warmup_iters=0)"))
    assert cli.main(['train', str(path)]) == 0
    return str(path), str(tmp / 'work' / 'latest.pth'), tmp


def one_line_error(capsys, argv, *fragments):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith('error: '), err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    return err[0]


def test_train_config_errors_are_one_line(trained, capsys):
    cfg, _, _ = trained
    one_line_error(capsys, ['train', cfg, '--cfg-options', 'model.backbone.depth=18'], "'backbone'", 'model')
    one_line_error(capsys, ['train', cfg, '--cfg-options', 'runtime.sed=1'], 'runtime.sed', "'seed'")
    one_line_error(capsys, ['train', cfg, '--cfg-options', 'model.type=ToyModle'], "'ToyModel'")
    one_line_error(capsys, ['train', cfg, '--cfg-options', 'data.train.dataset.data_root=/no/such/dir'],
                   '/no/such/dir', 'does not exist')
    one_line_error(capsys, ['train', cfg, '--resume', '/no/such.pth'], '/no/such.pth')
    one_line_error(capsys, ['train', 'missing_config.py'], 'missing_config.py')


def test_test_command_metrics_and_wrong_checkpoint(trained, capsys):
    cfg, ckpt, tmp = trained
    out = tmp / 'metrics.json'
    assert cli.main(['test', cfg, ckpt, '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'neg_mse' in printed and 'toy summary: 7 samples' in printed
    metrics = json.loads(out.read_text())
    assert list(metrics) == ['neg_mse', 'count'] and metrics['count'] == 7
    safetensors = os.path.join(os.path.dirname(ckpt), 'model.safetensors')
    assert cli.main(['test', cfg, safetensors]) == 0
    assert f"{metrics['neg_mse']:.4f}" in capsys.readouterr().out  # same weights in both files
    line = one_line_error(capsys, ['test', cfg, ckpt, '--cfg-options', 'model.width=8'],
                          f'checkpoint {ckpt} was written for another model', 'conv.weight')
    assert 'missing keys' in line and 'unexpected' in line
    one_line_error(capsys, ['test', cfg, str(tmp / 'nothing.pth')], 'nothing.pth', 'does not exist')


def test_infer_unknown_model_type_and_missing_image(trained, capsys):
    cfg, ckpt, tmp = trained
    image = tmp / 'x.png'
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    one_line_error(capsys, ['infer', cfg, ckpt, str(image)], "'ToyModel'", 'inferencer')
    one_line_error(capsys, ['infer', cfg, ckpt, str(tmp / 'none.png')], 'none.png')


def test_data_demo_passes_only_given_options(monkeypatch, capsys):
    import attnkit.data.demo as demo
    calls = []
    monkeypatch.setattr(demo, 'generate_demo_data', lambda *a, **k: calls.append((a, k)) or {'train': 'x'})
    assert cli.main(['data', 'demo', '--out', 'd', '--num-train', '3']) == 0
    assert cli.main(['data', 'demo']) == 0
    assert calls == [(('d',), {'num_train': 3}), ((), {})]
    assert 'train: x' in capsys.readouterr().out


def test_bench_dispatch_passes_arguments(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType('attnkit.benchmarks.fakekind')
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, 'attnkit.benchmarks.fakekind', fake)
    assert cli.main(['bench', 'fakekind', '--repeats', '3', 'x']) == 0
    assert seen == [['--repeats', '3', 'x']]
    one_line_error(capsys, ['bench', 'nosuchkind'], "'nosuchkind'")


def test_python_m_attnkit_exit_code_and_no_traceback(trained):
    cfg, _, _ = trained
    env = dict(os.environ, PYTHONPATH=TESTS + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-m', 'attnkit', 'train', cfg, '--cfg-options', 'optim.optimizer.type=SGDD'],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 300, proc.stderr  # nothing else on stderr in a fresh interpreter
    assert lines[-1].startswith('error: ') and "'SGD'" in lines[-1] and 'Traceback' not in proc.stderr, proc.stderr
