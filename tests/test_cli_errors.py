"""Every failure of the ``attnkit`` command is one line on stderr, exit code 2, under 300 characters, naming the
file or key; ``import attnkit`` changes no environment variable.

The bad invocations run as separate processes: ONE driver process (shared by the whole module) imports attnkit
once, then forks a child per command line that runs ``attnkit.cli.main(argv)`` (or, for a line starting with
``-m attnkit``, the ``attnkit/__main__.py`` entry point through ``runpy``, as ``python -m`` does) with its own
stderr (a fresh interpreter per line would cost ~6-14 s of imports each on the 2-core test machine). A fresh
``python -m attnkit`` interpreter is tested in test_cli.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import engine_toy

TESTS = os.path.dirname(os.path.abspath(__file__))

DRIVER = r'''
import json, os, sys
import attnkit, attnkit.cli, attnkit.engine  # imported once; every child starts with them
cases = json.load(open(sys.argv[1]))
results = []
for argv in cases:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: stderr into the pipe, stdout discarded
        os.close(r)
        os.dup2(w, 2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        try:
            if argv[:2] == ['-m', 'attnkit']:  # what `python -m attnkit ARGS` runs: attnkit/__main__.py
                import runpy
                sys.argv = ['attnkit', *argv[2:]]
                runpy.run_module('attnkit', run_name='__main__', alter_sys=True)
                code = 0
            else:
                code = attnkit.cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    results.append({'argv': argv, 'code': os.waitstatus_to_exitcode(status), 'stderr': err})
json.dump(results, open(sys.argv[2], 'w'))
'''


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=TESTS + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1',
                NO_ALBUMENTATIONS_UPDATE='1', HF_HUB_OFFLINE='1')


def run_cli_lines(tmp: Path, cases: list[list[str]]) -> list[dict[str, Any]]:
    """``[{'argv', 'code', 'stderr'}]`` of each command line, each run in its own process."""
    (tmp / 'cases.json').write_text(json.dumps(cases))
    proc = subprocess.run([sys.executable, '-c', DRIVER, str(tmp / 'cases.json'), str(tmp / 'results.json')],
                          env=_env(), cwd=str(tmp), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / 'results.json').read_text())


def assert_one_line_error(result: dict[str, Any], *fragments: str) -> str:
    lines = result['stderr'].strip().splitlines()
    assert result['code'] == 2, result
    assert len(lines) == 1, f"{result['argv']}: {result['stderr']}"
    line = lines[0]
    assert line.startswith('error: ') and len(line) < 300, line
    for fragment in fragments:
        assert fragment in line, f'{fragment!r} not in {line!r}'
    return line


@pytest.fixture(scope='module')
def toy(tmp_path_factory) -> dict[str, str]:
    """A toy config, its checkpoint (one short training run) and an image."""
    tmp = tmp_path_factory.mktemp('cli_errors')
    cfg = tmp / 'toy.py'
    cfg.write_text(engine_toy.toy_config_text(str(tmp / 'work'),
                                              schedule="dict(by_epoch=True, max_epochs=1, warmup_iters=0)"))
    sys.path.insert(0, TESTS)
    from attnkit import cli
    assert cli.main(['train', str(cfg)]) == 0
    image = tmp / 'x.png'
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    return {'tmp': str(tmp), 'cfg': str(cfg), 'ckpt': str(tmp / 'work' / 'latest.pth'), 'image': str(image)}


def _config(tmp: Path, name: str, **sections: str) -> str:
    path = tmp / name
    path.write_text(engine_toy.toy_config_text(str(tmp / f'work_{name}'), **sections))
    return str(path)


@pytest.fixture(scope='module')
def driven(toy, tmp_path_factory) -> dict[str, Any]:
    """Every command line of this module that runs in a forked child, run by ONE driver process: the bad
    invocations table (argv, expected fragments), the full-disk training run, the ``-m attnkit`` line; with their
    results and the paths the tests look at afterwards."""
    tmp_path = tmp_path_factory.mktemp('cli_errors_driven')
    cfg, ckpt = toy['cfg'], toy['ckpt']
    a_file = tmp_path / 'a_file.txt'
    a_file.write_text('not a folder')
    foreign = tmp_path / 'my_data'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    out_dir = tmp_path / 'results_dir'
    out_dir.mkdir()
    loader = ("dict(train=dict(dataset=dict(type='ToyRegressionDataset', length=8), batch_size=4), "
              "vall=dict(dataset=dict(type='ToyRegressionDataset', length=4), batch_size=2))")
    table: list[tuple[list[str], tuple[str, ...]]] = [
        (['train', 'missing_config.py'], ('missing_config.py',)),
        (['train', cfg, '--cfg-options', 'batch_size=abc'], ("'batch_size'", 'data.train.batch_size')),
        (['train', cfg, '--cfg-options', 'data.train.batch_size=abc'], ('data.train.batch_size', "'abc'", cfg)),
        (['train', cfg, '--cfg-options', 'data.train.batchsize=4'], ('data.train.batchsize', "'batch_size'")),
        (['train', cfg, '--cfg-options', 'data.train.num_wrkers=0'], ('data.train.num_wrkers', "'num_workers'")),
        (['train', cfg, '--cfg-options', 'data.train.shufle=False'], ('data.train.shufle', "'shuffle'")),
        (['train', cfg, '--cfg-options', 'data.vall.batch_size=2'], ("'vall'", "'val'")),
        (['train', cfg, '--cfg-options', 'optimizer.lr=0.1'], ("'optimizer'", 'optim.optimizer')),
        (['train', cfg, '--cfg-options', 'runtime.sed=1'], ('runtime.sed', "'seed'")),
        (['train', cfg, '--cfg-options', 'no_equals_sign'], ('--cfg-options', 'KEY=VALUE')),
        (['train', _config(tmp_path, 'evaluater.py', evaluater="dict(type='ToyMetric')")],
         ('evaluater.py', "'evaluater'", "'evaluator'")),
        (['train', _config(tmp_path, 'optimizer.py', optimizer="dict(type='SGD', lr=0.1)")],
         ('optimizer.py', "'optimizer'", 'optim.optimizer')),
        (['train', _config(tmp_path, 'vall.py', data=loader)], ('vall.py', 'data.vall', "'val'")),
        (['train', _config(tmp_path, 'dataloader.py', train_dataloader='dict(batch_size=2)')],
         ("'train_dataloader'", 'data.train')),
        (['train', cfg, '--work-dir', str(a_file / 'work')], (str(a_file),)),
        (['train'], ('config',)),
        (['train', cfg, '--resume', '/no/such.pth'], ('/no/such.pth',)),
        (['test', cfg, ckpt, '--out', str(out_dir)], (str(out_dir), 'folder')),
        (['test', cfg, str(tmp_path / 'none.pth')], ('none.pth',)),
        (['test', cfg, ckpt, '--cfg-options', 'data.val.num_workers=-1'], ('data.val.num_workers', '-1')),
        (['infer', cfg, ckpt, str(tmp_path / 'missing.png')], ('missing.png',)),
        (['infer', cfg, ckpt, toy['image'], '--out', str(a_file)], (str(a_file),)),
        (['data', 'demo', '--out', str(foreign), '--num-train', '2', '--num-val', '1', '--size', '32'],
         (str(foreign),)),
        (['data', 'demo', '--num-train', 'abc'], ('--num-train', "'abc'")),
        (['nosuchcommand'], ('nosuchcommand',)),
    ]
    # a checkpoint write that fails: the temporary checkpoint file is /dev/full ('No space left on device')
    full_cfg = _config(tmp_path, 'full.py', schedule="dict(by_epoch=True, max_epochs=1, warmup_iters=0)")
    full_work = tmp_path / 'work_full.py'
    full_work.mkdir()
    os.symlink('/dev/full', full_work / 'latest.pth.tmp')
    full_disk = ['train', full_cfg]
    python_m = [['-m', 'attnkit', 'train', cfg, '--cfg-options', option]
                for option in ('data.train.batch_size=abc', 'data.train.shufle=0')]
    argvs = [argv for argv, _ in table] + [full_disk] + python_m
    results = run_cli_lines(tmp_path, argvs)
    assert [r['argv'] for r in results] == argvs
    return {'table': table, 'results': results[:len(table)], 'full_disk': results[len(table)],
            'full_work': full_work, 'python_m': results[len(table) + 1:], 'foreign': foreign}


def test_bad_invocations_are_one_line_naming_the_key_or_file(driven):
    for result, (argv, fragments) in zip(driven['results'], driven['table'], strict=True):
        assert result['argv'] == argv
        assert_one_line_error(result, *fragments)
    foreign = driven['foreign']
    assert (foreign / 'notes.txt').read_text() == 'mine' and os.listdir(foreign) == ['notes.txt']


def test_python_m_attnkit_bad_option_value_is_one_line(driven):
    """The same through the ``python -m attnkit`` entry point (attnkit/__main__.py run as ``__main__``, in a forked
    driver child): a value of the wrong type and a typo. A fresh ``python -m attnkit`` interpreter's exit code and
    single stderr line: tests/test_cli.py::test_python_m_attnkit_exit_code_and_no_traceback."""
    for result, fragments in zip(driven['python_m'], (('data.train.batch_size', "'abc'"), ('shufle', "'shuffle'")),
                                 strict=True):
        assert_one_line_error(result, *fragments)


def test_full_disk_while_writing_a_checkpoint_is_one_line_naming_the_work_dir(driven):
    """A checkpoint write that fails (here: the temporary checkpoint file is /dev/full, 'No space left on device')."""
    result, work = driven['full_disk'], driven['full_work']
    lines = result['stderr'].strip().splitlines()
    assert result['code'] == 2 and 'Traceback' not in result['stderr'], result['stderr']
    assert lines[-1].startswith('error: ') and len(lines[-1]) < 300, lines[-1]
    assert str(work) in lines[-1] and 'checkpoint' in lines[-1], lines[-1]


def test_import_changes_no_environment_variable():
    """``import attnkit`` leaves os.environ as it was (no HF_HUB_OFFLINE), and a local Hugging Face encoder still
    loads without any offline flag (the network is blocked in that process: nothing is fetched)."""
    code = r'''
import os, socket, sys, tempfile
def no_network(*args, **kwargs):
    raise OSError('network access attempted')
socket.socket.connect = no_network
socket.create_connection = no_network
import cv2  # OpenCV's own loader extends LD_LIBRARY_PATH on import: not attnkit's doing
before = dict(os.environ)
import attnkit
from attnkit.tasks.vqa.text import build_question_encoder, build_tokenizer
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
assert 'HF_HUB_OFFLINE' not in os.environ and 'TRANSFORMERS_OFFLINE' not in os.environ
assert 'NO_ALBUMENTATIONS_UPDATE' not in os.environ  # set only around attnkit's own albumentations import
from transformers import BertConfig, BertModel, BertTokenizerFast
d = tempfile.mkdtemp()
words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'what', 'color', 'is', 'it']
BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(d)
BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)).save_pretrained(d)
meta = {'answers': ['a', 'b'], 'tokenizer': dict(type='hf', path=d, max_len=8)}
batch = build_tokenizer(meta['tokenizer'])(['what color is it'])
encoder = build_question_encoder(dict(type='hf', path=d), meta)
out = encoder(batch['input_ids'], batch['attention_mask'])
assert out.shape[0] == 1 and out.shape[-1] == 16, out.shape
print('OK', tuple(out.shape))
'''
    env = {k: v for k, v in os.environ.items()
           if k not in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'NO_ALBUMENTATIONS_UPDATE')}
    env.update(OMP_NUM_THREADS='1', PYTHONPATH=TESTS)
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'OK' in proc.stdout, proc.stderr[-3000:]
