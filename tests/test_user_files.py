"""No user file is lost: ``attnkit infer`` never overwrites an input or an earlier output, and ``attnkit data demo``
removes only the files it wrote itself."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit import build_model
from attnkit.data.demo import generate_demo_data
from attnkit.data.outputs import OutputNames
from attnkit.engine.checkpoint import save_safetensors

DETECTOR = dict(type='Detector', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3)),
                neck=dict(type='FPN', out_channels=16, num_outs=3),
                head=dict(type='FCOSHead', feat_channels=16, stacked_convs=1, strides=(8, 16, 32),
                          regress_ranges=((-1, 16), (16, 32), (32, 1e8))))
SEGMENTOR = dict(type='Segmentor', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(3,)),
                 decode_head=dict(type='fcn', in_index=0, channels=8))


def _digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _image(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return str(path)


def _checkpoint(tmp: Path, model_cfg: dict, classes: list[str]) -> tuple[str, str]:
    """A config file naming ``model_cfg`` and a model.safetensors of that model (random weights)."""
    torch.manual_seed(0)
    meta = {'classes': classes}
    model = build_model(model_cfg, metainfo=meta)
    ckpt = tmp / 'model.safetensors'
    save_safetensors(model.state_dict(), meta, str(ckpt))
    cfg = tmp / 'model_cfg.py'
    cfg.write_text(f'model = {model_cfg!r}\n')
    return str(cfg), str(ckpt)


def test_infer_cli_never_overwrites_an_input_or_an_earlier_output(tmp_path, capsys):
    cfg, ckpt = _checkpoint(tmp_path, DETECTOR, ['a', 'b'])
    a, b = tmp_path / 'a', tmp_path / 'b'
    inputs = [_image(a / 'x.png', 0), _image(b / 'x.png', 1), _image(a / 'x_pred.png', 2)]
    before = {p: _digest(p) for p in inputs}
    argv = ['infer', cfg, ckpt, *inputs, '--out', str(a)]
    from attnkit import cli
    capsys.readouterr()
    code = cli.main(argv)
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr[-3000:]
    assert {p: _digest(p) for p in inputs} == before  # the inputs are untouched (a/x.png, a/x_pred.png above all)
    written = stdout.split()
    names = sorted(os.path.basename(f) for f in written)
    # a/x.png: x_pred.png is an input -> number 1; b/x.png (same stem) -> 2; a/x_pred.png -> x_pred_pred.png
    assert names == ['x_pred_1.json', 'x_pred_1.png', 'x_pred_2.json', 'x_pred_2.png', 'x_pred_pred.json',
                     'x_pred_pred.png']
    assert all(os.path.dirname(f) == str(a) for f in written)
    with Image.open(a / 'x_pred_1.png') as im:
        assert im.size == (64, 48)  # a drawing of the image, not the image itself
    assert isinstance(json.loads((a / 'x_pred_2.json').read_text()), list)
    first = {f: _digest(f) for f in written}

    # the same command again: earlier outputs are kept, the new ones take the next free numbers
    assert cli.main(argv) == 0
    assert {f: _digest(f) for f in written} == first and {p: _digest(p) for p in inputs} == before
    assert sorted(os.listdir(a)) == sorted(['x.png', 'x_pred.png'] + names + [
        'x_pred_3.json', 'x_pred_3.png', 'x_pred_4.json', 'x_pred_4.png', 'x_pred_pred_1.json',
        'x_pred_pred_1.png'])


def test_segmentation_infer_gives_every_file_of_an_image_one_free_number(tmp_path):
    from attnkit.registry import INFERENCERS
    torch.manual_seed(0)
    model = build_model(SEGMENTOR, metainfo={'classes': ['bg', 'fg']}).eval()
    out = tmp_path / 'out'
    inputs = [_image(out / 'x_seg.png', 0), _image(tmp_path / 'x.png', 1)]
    before = {p: _digest(p) for p in inputs}
    (out / 'x_mask_1.png').write_bytes(b'earlier output')
    files = INFERENCERS.get('Segmentor')(model, {}, inputs, str(out))
    names = [os.path.basename(f) for f in files]
    # x.png: x_seg.png is an input and x_mask_1.png exists -> both of its files take number 2
    assert names == ['x_seg_seg.png', 'x_seg_mask.png', 'x_seg_2.png', 'x_mask_2.png']
    assert {p: _digest(p) for p in inputs} == before
    assert (out / 'x_mask_1.png').read_bytes() == b'earlier output'


def test_output_names_skip_inputs_links_and_claimed_names(tmp_path):
    (tmp_path / 'x_vqa.png').write_bytes(b'1')
    os.symlink(tmp_path / 'elsewhere.png', tmp_path / 'x_vqa_1.png')  # a dangling link is still a name in use
    (tmp_path / 'sub').mkdir()
    names = OutputNames(tmp_path, inputs=[str(tmp_path / 'sub' / '..' / 'x_vqa_2.png')])  # another spelling
    assert os.path.basename(names.claim('x', '_vqa.png')) == 'x_vqa_3.png'
    assert os.path.basename(names.claim('x', '_vqa.png')) == 'x_vqa_4.png'
    assert names.number('y', ('_seg.png', '_mask.png')) == 0


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob('*') if p.is_file()}


def test_data_demo_rewrite_keeps_the_users_files(tmp_path, capsys):
    out = tmp_path / 'demo'
    generate_demo_data(out, num_train=2, num_val=1, size=32)
    mine = {'notes.txt': 'my notes', 'voc/JPEGImages/mine.jpg': 'my picture', 'coco/extra.json': '{}'}
    for rel, text in mine.items():
        (out / rel).write_text(text)
    demo_files = _files(out) - set(mine)
    meta = json.loads((out / 'meta.json').read_text())
    assert sorted(meta['files']) == sorted(demo_files - {'meta.json'})

    from attnkit import cli
    code = cli.main(['data', 'demo', '--out', str(out), '--num-train', '3', '--num-val', '1', '--size', '32'])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert all((out / rel).read_text() == text for rel, text in mine.items())
    assert sorted(os.listdir(out / 'voc' / 'JPEGImages')) == ['000001.jpg', '000002.jpg', '000003.jpg',
                                                              '000004.jpg', 'mine.jpg']
    assert json.loads((out / 'meta.json').read_text())['args']['num_train'] == 3
    assert os.listdir(tmp_path) == ['demo']  # no temporary folder left

    # a data set written before meta.json listed its files: the files of its layout go, the user's stay
    meta = json.loads((out / 'meta.json').read_text())
    del meta['files']
    (out / 'meta.json').write_text(json.dumps(meta))
    shutil.rmtree(out / 'cls')  # such a generator wrote no classification crops either (they came later)
    generate_demo_data(out, num_train=1, num_val=1, size=32)
    assert all((out / rel).read_text() == text for rel, text in mine.items())
    assert sorted(os.listdir(out / 'voc' / 'JPEGImages')) == ['000001.jpg', '000002.jpg', 'mine.jpg']
    assert _files(out) - set(mine) == {'meta.json'} | set(json.loads((out / 'meta.json').read_text())['files'])


def test_data_demo_refuses_a_meta_json_that_lists_files_outside_the_folder(tmp_path):
    from attnkit.errors import DataError
    out = tmp_path / 'demo'
    generate_demo_data(out, num_train=1, num_val=1, size=32)
    victim = tmp_path / 'victim.txt'
    victim.write_text('keep')
    meta = json.loads((out / 'meta.json').read_text())
    meta['files'].append('../victim.txt')
    (out / 'meta.json').write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"victim\.txt"):
        generate_demo_data(out, num_train=2, num_val=1, size=32)
    assert victim.read_text() == 'keep'
    # a meta.json some other tool wrote: not a demo data set, nothing is deleted
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'meta.json').write_text(json.dumps({'name': 'my data set', 'files': ['a.jpg']}))
    (other / 'a.jpg').write_text('mine')
    with pytest.raises(DataError, match=r"other.*did not write"):
        generate_demo_data(other, num_train=1, num_val=1, size=32)
    assert (other / 'a.jpg').read_text() == 'mine'


def test_data_demo_rewrite_never_overwrites_a_user_file_where_the_new_layout_writes(tmp_path):
    from attnkit.errors import DataError
    out = tmp_path / 'demo'
    generate_demo_data(out, num_train=2, num_val=1, size=32)
    before = _files(out)
    user = out / 'voc' / 'JPEGImages' / '000004.jpg'  # not written by the 3-image data set; the 4-image one would
    user.write_text('USER FILE')
    with pytest.raises(DataError, match=r"000004\.jpg.*not written by the demo generator"):
        generate_demo_data(out, num_train=3, num_val=1, size=32)
    assert user.read_text() == 'USER FILE'
    assert _files(out) == before | {'voc/JPEGImages/000004.jpg'}  # nothing removed, meta.json still there
    assert os.listdir(tmp_path) == ['demo']


def test_test_out_refuses_the_config_or_the_checkpoint(tmp_path):
    from attnkit import cli
    cfg = tmp_path / 'c.py'
    cfg.write_text('x = 1\n')
    ckpt = tmp_path / 'm.pth'
    ckpt.write_bytes(b'weights')
    for target in (ckpt, cfg):
        assert cli.main(['test', str(cfg), str(ckpt), '--out', str(target)]) == 2
    assert ckpt.read_bytes() == b'weights' and cfg.read_text() == 'x = 1\n'


def test_work_dir_error_only_for_files_inside_the_work_dir(tmp_path):
    from attnkit.cli import _work_dir_error
    from attnkit.errors import AttnkitError
    work = str(tmp_path / 'exp1')
    inside = _work_dir_error(OSError(28, 'No space left on device', os.path.join(work, 'latest.pth.tmp')), work)
    assert isinstance(inside, AttnkitError) and 'latest.pth.tmp' in str(inside)
    sibling = OSError(2, 'No such file or directory', str(tmp_path / 'exp10' / 'data.json'))  # a prefix, not inside
    assert _work_dir_error(sibling, work) is sibling
    timeout = TimeoutError('The client socket has timed out')  # no file: not the work dir's fault
    assert _work_dir_error(timeout, work) is timeout
