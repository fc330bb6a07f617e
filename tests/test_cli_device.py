"""``attnkit test`` / ``attnkit infer`` ``--device``: a chosen device runs, an unavailable one is a one-line error."""
from __future__ import annotations

import os

import pytest
import torch

from attnkit import build_model
from attnkit.engine.checkpoint import save_atomic
from attnkit.engine.utils import resolve_device
from attnkit.errors import ConfigError

CONFIG = """
task = 'segmentation'
metainfo = dict(classes=['background', 'circle', 'square', 'triangle', 'star'])
model = dict(type='Segmentor',
             backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3), output_stride=8),
             decode_head=dict(type='danet', in_index=3, channels=16))
voc = dict(type='VOCSegmentation', root={root!r}, pipeline=[], metainfo=metainfo)
data = dict(val=dict(dataset=dict(voc, split_file='ImageSets/Segmentation/val.txt'), batch_size=6, num_workers=0))
evaluator = dict(type='IoUMetric')
runtime = dict(tensorboard=False)
"""


def _unavailable_cuda() -> str:
    """A CUDA device this machine does not have ('cuda' without a GPU, one index past the last with GPUs)."""
    return f'cuda:{torch.cuda.device_count()}' if torch.cuda.is_available() else 'cuda'


@pytest.fixture(scope='module')
def model_files(tmp_path_factory, demo_data):
    """A config file, a checkpoint of its (untrained) model, and a real demo JPEG."""
    from attnkit import load_config
    tmp = tmp_path_factory.mktemp('device')
    cfg_path = tmp / 'seg.py'
    cfg_path.write_text(CONFIG.format(root=demo_data['voc_root']))
    cfg = load_config(str(cfg_path))
    torch.manual_seed(0)
    model = build_model(cfg.model, metainfo=dict(cfg.metainfo))
    ckpt = tmp / 'model.pth'
    save_atomic({'model': model.state_dict(), 'meta': model.metainfo}, str(ckpt))
    image = os.path.join(demo_data['img_dir'], '000013.jpg')
    return str(cfg_path), str(ckpt), image, tmp



def test_infer_and_test_on_the_cpu_through_the_command_line(model_files, run_cli):
    cfg, ckpt, image, tmp = model_files
    out = tmp / 'out'
    code, stdout, stderr = run_cli('infer', cfg, ckpt, image, '--out', str(out), '--device', 'cpu')
    assert code == 0, stderr
    written = stdout.split()
    assert any(f.endswith('_mask.png') for f in written) and all(os.path.isfile(f) for f in written)
    code, stdout, stderr = run_cli('test', cfg, ckpt, '--device', 'cpu')
    assert code == 0, stderr
    assert 'mIoU' in stdout and '6 images' in stdout


def test_unavailable_device_is_a_one_line_error(model_files, run_cli):
    cfg, ckpt, image, tmp = model_files
    device = _unavailable_cuda()
    code, _, stderr = run_cli('infer', cfg, ckpt, image, '--out', str(tmp / 'none'), '--device', device)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: --device {device}:'), stderr
    assert not os.path.exists(tmp / 'none')  # refused before any work
    for argv in (['test', cfg, ckpt, '--device', device], ['infer', cfg, ckpt, image, '--device', 'nodevice']):
        code, _, stderr = run_cli(*argv)
        err = stderr.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and err[0].startswith('error: --device '), err


def test_resolve_device_default_and_checks():
    assert resolve_device(None).type == ('cuda' if torch.cuda.is_available() else 'cpu')
    assert resolve_device('cpu') == torch.device('cpu')
    with pytest.raises(ConfigError, match='CUDA|cuda'):
        resolve_device(_unavailable_cuda())
    with pytest.raises(ConfigError, match='not a device name'):
        resolve_device('gpu0')
