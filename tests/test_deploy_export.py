"""``attnkit export``: every attention module, a tiny detector / segmentor / VQA model exported to ONNX (and the
segmentor to torch.export) give PyTorch's outputs; bad input is one clear line."""
from __future__ import annotations

import os
import re
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import attnkit.attention  # noqa: F401 - registers the attention modules
from attnkit import cli
from attnkit.attention.base import AttentionModule
from attnkit.builder import build_model
from attnkit.deploy.export import (ExportError, check_attention_export, check_size, example_inputs, export_onnx,
                                   export_torch, require_packages)
from attnkit.deploy.wrappers import wrap_for_export
from attnkit.errors import ConfigError
from attnkit.registry import ATTENTION

TOL = 1e-4
CLASSES = ['circle', 'square', 'triangle', 'star']
DETECTOR = dict(type='Detector',
                backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3),
                              attention=dict(type='cbam', stages=(False, True, True, True))),
                neck=dict(type='FPN', out_channels=16, num_outs=3),
                # nms_pre below the 64 positions x 4 classes of the stride-8 level: the top-k path is used
                head=dict(type='FCOSHead', feat_channels=16, stacked_convs=1, strides=(8, 16, 32),
                          regress_ranges=((-1, 16), (16, 32), (32, 1e8)), nms_pre=50, score_thr=0.05))
SEGMENTOR = dict(type='Segmentor',
                 backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3), output_stride=8,
                               attention=dict(type='se', stages=(False, False, True, True))),
                 decode_head=dict(type='danet', in_index=3, channels=16))
VQA_META = {'answers': ['yes', 'no', '2'], 'tokenizer': {'type': 'word', 'max_len': 8},
            'question_vocab': ['<pad>', '<unk>', 'what', 'shape', 'is', 'in', 'the']}
VQA = dict(type='VQAModel', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(2,)),
           question_encoder=dict(type='gru', embed_dim=8, hidden_dim=16),
           head=dict(type='mcan', dim=32, heads=4, ffn=64, depth=1, flat_hidden=32, out_dim=64, dropout=0.0))


def _session(path: str) -> ort.InferenceSession:
    return ort.InferenceSession(path, providers=['CPUExecutionProvider'])


def _run(session: ort.InferenceSession, *inputs: torch.Tensor) -> list[np.ndarray]:
    return session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)})


# ------------------------------------------------------------------ attention modules
@pytest.mark.parametrize('name', sorted(ATTENTION.module_dict))
def test_every_attention_module_exports_at_two_sizes(name):
    diffs = check_attention_export(name, channels=16, sizes=((8, 8), (12, 10)))
    assert len(diffs) == 2 and max(diffs) < TOL, diffs


class _DataDependentGate(AttentionModule):
    """Branches in Python on a value of the input: torch.export cannot trace it."""

    def attend(self, x):
        return x * 2 if x.mean() > 0 else x


def test_a_module_that_cannot_export_is_named(tmp_path, capsys):
    from attnkit.engine.checkpoint import save_atomic
    ATTENTION.register_module('datagate', module=_DataDependentGate)
    try:
        with pytest.raises(ExportError, match=r"attention module 'datagate' cannot be exported to ONNX: .*"
                                              r"(data-dependent|GuardOnDataDependent)"):
            check_attention_export('datagate', channels=8)
        # inside a model, through the command line: one line naming the module, where it sits and why
        backbone = dict(SEGMENTOR['backbone'], attention=dict(type='datagate', stages=(False, False, False, True)))
        cfg = tmp_path / 'gate.py'
        cfg.write_text(f'model = {dict(SEGMENTOR, backbone=backbone)!r}\nmetainfo = dict(classes={CLASSES!r})\n')
        torch.manual_seed(0)
        model = build_model(dict(SEGMENTOR, backbone=backbone), metainfo={'classes': CLASSES})
        save_atomic({'model': model.state_dict(), 'meta': model.metainfo}, str(tmp_path / 'gate.pth'))
        capsys.readouterr()
        assert cli.main(['export', str(cfg), str(tmp_path / 'gate.pth'), '--format', 'torch.export',
                         '--size', '32', '32']) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("error: attention module 'datagate' (backbone.layer4.0.attn) cannot be exported "
                                 'to torch.export: '), err
        assert 'data-dependent' in err[0] or 'GuardOnDataDependent' in err[0], err
        assert not (tmp_path / 'gate.pt2').exists()
    finally:
        ATTENTION.module_dict.pop('datagate', None)


# ------------------------------------------------------------------ detector
def _detector(head: dict | None = None):
    torch.manual_seed(0)
    cfg = dict(DETECTOR, head=dict(DETECTOR['head'], **(head or {})))
    return build_model(cfg, metainfo={'classes': CLASSES}).eval()


def _eager_detections(model, images):
    h, w = images.shape[-2:]
    metas = [{'img_size': (h, w), 'ori_size': (h, w)} for _ in range(images.shape[0])]
    with torch.no_grad():
        return model({'images': images, 'metas': metas})


RETINA = dict(type='RetinaHead', feat_channels=16, stacked_convs=1, strides=(8, 16, 32), ratios=(0.5, 1.0),
              octave_base_scale=2, scales_per_octave=1, nms_pre=50, score_thr=0.005)  # untrained: scores ~0.01


@pytest.mark.parametrize('head', [None, RETINA], ids=['fcos', 'retinanet'])
def test_detector_wrapper_gives_the_detectors_detections(head):
    """The export wrapper (branch-free candidate selection, one NMS over the batch) = Detector.forward in eval."""
    torch.manual_seed(0)
    model = (_detector() if head is None else
             build_model(dict(DETECTOR, head=head), metainfo={'classes': CLASSES}).eval())
    images = torch.cat([example_inputs(model, 'detection', (64, 64))[0],
                        torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)])
    with torch.no_grad():
        boxes, scores, labels, index = wrap_for_export(model)(images)
    for i, ref in enumerate(_eager_detections(model, images)):
        mine = index == i
        assert 0 < len(ref['boxes']) == int(mine.sum())
        assert torch.equal(labels[mine], ref['labels'])
        assert torch.allclose(boxes[mine], ref['boxes'], atol=1e-5)
        assert torch.allclose(scores[mine], ref['scores'], atol=1e-6)


def test_detector_onnx_has_nms_and_matches_pytorch(tmp_path):
    model = _detector()
    inputs = example_inputs(model, 'detection', (64, 64))
    path = export_onnx(model, 'detection', (64, 64), tmp_path / 'det.onnx')
    assert 'NonMaxSuppression' in {n.op_type for n in onnx.load(path).graph.node}
    boxes, scores, labels, index = _run(_session(path), *inputs)
    ref = _eager_detections(model, inputs[0])[0]
    assert len(ref['boxes']) > 1 and boxes.shape == tuple(ref['boxes'].shape)
    np.testing.assert_array_equal(labels, ref['labels'].numpy())
    np.testing.assert_array_equal(index, np.zeros(len(labels)))
    np.testing.assert_allclose(boxes, ref['boxes'].numpy(), atol=TOL)
    np.testing.assert_allclose(scores, ref['scores'].numpy(), atol=TOL)


def test_size_not_divisible_by_the_stride_names_the_nearest_sizes():
    with pytest.raises(ConfigError, match=r'largest FPN stride .*\(32\).*nearest valid sizes: 64 96 or 64 128'):
        check_size(_detector(), (64, 100))
    assert check_size(_detector(), (96, 128)) == (96, 128)


# ------------------------------------------------------------------ segmentor
@pytest.fixture(scope='module')
def segmentor():
    torch.manual_seed(0)
    return build_model(SEGMENTOR, metainfo={'classes': ['background'] + CLASSES}).eval()


def _seg_logits(model, images):
    with torch.no_grad():
        return model.predict_logits(model.normalizer(images))


def test_segmentor_onnx_matches_pytorch(segmentor, tmp_path):
    inputs = example_inputs(segmentor, 'segmentation', (64, 64))
    (logits,) = _run(_session(export_onnx(segmentor, None, (64, 64), tmp_path / 'seg.onnx')), *inputs)
    ref = _seg_logits(segmentor, inputs[0])
    assert logits.shape == (1, 5, 64, 64)
    np.testing.assert_allclose(logits, ref.numpy(), atol=TOL)
    with pytest.raises(ConfigError, match=r"backbone's output stride \(8\).*nearest valid sizes: 56 64 or 64 64"):
        check_size(segmentor, (60, 64))


def test_segmentor_torch_export_dynamic_sizes(segmentor, tmp_path):
    path = export_torch(segmentor, None, (64, 64), tmp_path / 'seg.pt2', dynamic=True)
    program = torch.export.load(path).module()
    for batch, size in ((1, (64, 64)), (2, (48, 80))):
        images = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8)
        with torch.no_grad():
            out = program(images)
        assert out.shape == (batch, 5, *size)
        torch.testing.assert_close(out, _seg_logits(segmentor, images), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ VQA
def test_vqa_dynamic_onnx_matches_pytorch_at_other_lengths_and_sizes(tmp_path):
    torch.manual_seed(0)
    model = build_model(VQA, metainfo=VQA_META).eval()
    path = export_onnx(model, None, (64, 64), tmp_path / 'vqa.onnx', dynamic=True)
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ['images', 'input_ids', 'attention_mask']
    for batch, size, question in ((1, (64, 64), 'what shape is in the image?'), (3, (32, 48), 'what is')):
        inputs = example_inputs(model, 'vqa', size, batch=batch, question=question)
        (scores,) = _run(session, *inputs)
        with torch.no_grad():
            ref = model.forward_logits({'images': inputs[0], 'input_ids': inputs[1],
                                        'attention_mask': inputs[2]})['logits'].sigmoid()
        assert scores.shape == (batch, 3)
        np.testing.assert_allclose(scores, ref.numpy(), atol=TOL)


# ------------------------------------------------------------------ command line
SEG_CONFIG = """
task = 'segmentation'
metainfo = dict(classes=['background', 'circle', 'square', 'triangle', 'star'])
model = dict(type='Segmentor',
             backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3), output_stride=8,
                           attention=dict(type='cbam', stages=(False, False, True, True))),
             decode_head=dict(type='fcn', in_index=3, channels=16, num_convs=1))
voc = dict(type='VOCSegmentation', root={root!r}, pipeline=[], metainfo=metainfo)
data = dict(train=dict(dataset=dict(voc, split_file='ImageSets/Segmentation/train.txt'), batch_size=4,
                       num_workers=0),
            val=dict(dataset=dict(voc, split_file='ImageSets/Segmentation/val.txt'), batch_size=6, num_workers=0))
evaluator = dict(type='IoUMetric')
optim = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0))
schedule = dict(by_epoch=False, max_iters=2, warmup_iters=0, policy='constant')
train_cfg = dict(eval_interval=100, checkpoint_interval=2)
runtime = dict(tensorboard=False, log_interval=1)
"""


@pytest.fixture(scope='module')
def trained_segmentor(tmp_path_factory, demo_data):
    """A config and the checkpoint of a 2-iteration training run on the demo data."""
    tmp = tmp_path_factory.mktemp('export_cli')
    cfg = tmp / 'seg.py'
    cfg.write_text(SEG_CONFIG.format(root=demo_data['voc_root']))
    assert cli.main(['train', str(cfg), '--work-dir', str(tmp / 'work')]) == 0
    return str(cfg), str(tmp / 'work' / 'latest.pth'), tmp


def test_cli_exports_and_prints_the_check(trained_segmentor, demo_data, capsys):
    cfg, ckpt, tmp = trained_segmentor
    out = tmp / 'seg.onnx'
    image = os.path.join(demo_data['img_dir'], '000013.jpg')
    capsys.readouterr()
    code = cli.main(['export', cfg, ckpt, '--size', '64', '64', '--out', str(out), '--image', image])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert f'wrote {out} (onnx, segmentation, images 1x3x64x64 uint8' in stdout, stdout
    check = re.search(r'check: max \|onnxruntime - pytorch\| = (\S+) \(same shapes\); pytorch [\d.]+ ms, '
                      r'onnxruntime [\d.]+ ms', stdout)
    assert check and float(check.group(1)) < TOL, stdout
    code = cli.main(['export', cfg, ckpt, '--size', '60', '64'])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith('error: --size 60 64 is not divisible by') and '56 64 or 64 64' in lines[0], lines


def test_cli_bad_format_and_missing_package(trained_segmentor, capsys, monkeypatch):
    cfg, ckpt, _ = trained_segmentor
    assert cli.main(['export', cfg, ckpt, '--format', 'onx']) == 2
    err = capsys.readouterr().err.strip()
    assert "'onx'" in err and "did you mean 'onnx'" in err and 'valid formats: onnx, torch.export' in err, err
    monkeypatch.setitem(sys.modules, 'onnxscript', None)  # import onnxscript -> ImportError
    assert cli.main(['export', cfg, ckpt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'onnxscript' in err[0] and "pip install 'attnkit[deploy]'" in err[0], err
    with pytest.raises(ExportError, match='onnxscript'):
        require_packages('onnx')
    require_packages('torch.export')  # needs nothing beyond torch
