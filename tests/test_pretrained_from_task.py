"""A task checkpoint (an image classifier's, saved as the Trainer saves it) as ``pretrained=`` of the backbone of
every task: only ``backbone.*`` is taken, the rest is dropped and reported, inserted attention keeps its trained
weights and gamma; a checkpoint of another backbone stops with the first mismatched key and both shapes."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from attnkit import build_model, load_config
from attnkit.attention.base import AttentionModule
from attnkit.backbones import ResNet
from attnkit.backbones.timm_backbone import TimmBackbone
from attnkit.engine.checkpoint import save_atomic, save_safetensors
from attnkit.errors import CheckpointError

CBAM = dict(type='cbam', stages=(False, True, True, True), reduction=4)
TINY = dict(depth=18, base_channels=8, attention=CBAM)
ATTENTION = ['layer2.0.attn', 'layer2.1.attn', 'layer3.0.attn', 'layer3.1.attn', 'layer4.0.attn', 'layer4.1.attn']
ROOT = Path(__file__).resolve().parent.parent
FROM_CLS = ROOT / 'configs/demo/fcos_r18-cbam_fpn_shapes_from-cls.py'
CLS_CONFIG = ROOT / 'configs/demo/cls_r18-cbam_shapes.py'


class TinyClassifier(nn.Module):
    """What ImageClassifier's state dict looks like: ``backbone.*``, ``neck.*``, ``head.*``."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int = 4) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Conv2d(channels, 16, 1)
        self.head = nn.Linear(16, num_classes)


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Every tensor random (positive running variances), attention gammas distinct non-zero values."""
    torch.manual_seed(seed)
    with torch.no_grad():
        gammas = 0
        for name, tensor in model.state_dict().items():
            if name.endswith('gamma'):
                gammas += 1
                tensor.fill_(0.1 * gammas + seed / 100)
            elif name.endswith('running_var'):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith('num_batches_tracked'):
                tensor.fill_(7)
            else:
                tensor.normal_(0.0, 0.2)
    return model


def _trained_classifier(seed: int = 0, **backbone) -> TinyClassifier:
    """A "trained" classifier: random tensors, attention gammas distinct non-zero values."""
    cfg = dict(TINY, identity_init=True, out_indices=(3,))
    cfg.update(backbone)
    net = ResNet(**cfg)
    return _randomise(TinyClassifier(net, net.out_channels[-1]), seed)


def _save_like_trainer(model: nn.Module, work_dir: Path, ema: nn.Module | None = None) -> tuple[Path, Path]:
    """``latest.pth`` (the Trainer's layout) and ``model.safetensors`` (EMA weights when given, with metainfo)."""
    meta = {'classes': ['circle', 'square', 'triangle', 'star']}
    work_dir.mkdir(parents=True, exist_ok=True)
    ema_state = {'state': ema.state_dict(), 'updates': 5, 'momentum': 0.5} if ema is not None else None
    save_atomic({'model': model.state_dict(), 'meta': meta, 'optimizer': {'state': {}, 'param_groups': []},
                 'scheduler': {}, 'ema': ema_state, 'scaler': None, 'rng': [], 'epoch': 3, 'iter': 30,
                 'iter_in_epoch': 0, 'best': {'name': 'top1', 'value': 0.9}, 'evaluated_iter': 30,
                 'config': "model = dict(type='ImageClassifier')"}, work_dir / 'latest.pth')
    save_safetensors((ema or model).state_dict(), meta, work_dir / 'model.safetensors')
    return work_dir / 'latest.pth', work_dir / 'model.safetensors'


def _gammas(model: nn.Module) -> dict[str, float]:
    return {n: float(m.gamma.detach()) for n, m in model.named_modules() if isinstance(m, AttentionModule)}


def _assert_backbone_equal(loaded: nn.Module, source: nn.Module) -> None:
    """Every tensor of ``loaded`` equals the source backbone's tensor of the same name (an attention ``gamma`` the
    source was built without aside)."""
    theirs = source.state_dict()
    mine = {k: v for k, v in loaded.state_dict().items() if k in theirs or not k.endswith('.gamma')}
    assert set(mine) <= set(theirs)
    for key, value in mine.items():
        assert torch.equal(value, theirs[key]), key


def test_classifier_checkpoint_loads_backbone_keeps_attention_reports_head(tmp_path, caplog) -> None:
    raw = _trained_classifier(0)
    ema = _trained_classifier(1)  # the EMA weights differ from the raw ones: the .pth must give the EMA's
    plain_pth, _ = _save_like_trainer(raw, tmp_path / 'plain')
    ema_pth, ema_safetensors = _save_like_trainer(raw, tmp_path / 'ema', ema=ema)
    gammas = _gammas(ema.backbone)
    assert sorted(gammas) == ATTENTION and len(set(gammas.values())) > 1 and 0.0 not in gammas.values()

    for path, source in ((plain_pth, raw), (ema_pth, ema), (ema_safetensors, ema)):
        with caplog.at_level(logging.INFO, logger='attnkit.backbones'):
            caplog.clear()
            net = ResNet(**TINY, out_indices=(1, 2, 3), pretrained=str(path))
        _assert_backbone_equal(net, source.backbone)
        report = net.pretrained_report
        assert report.prefix == 'backbone.'
        assert sorted(report.dropped) == ['head.bias', 'head.weight', 'neck.bias', 'neck.weight']
        assert report.missing == [] and report.unexpected == [] and len(report.loaded) == len(net.state_dict())
        assert report.attention_loaded == ATTENTION and report.attention_identity == []
        assert _gammas(net) == _gammas(source.backbone)
        messages = [r.getMessage() for r in caplog.records]
        assert any('dropped 4 keys outside the backbone: head.* (2), neck.* (2)' in m for m in messages), messages
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        # the function is kept, attention included: same features as the classifier's backbone
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(net.eval()(x)[-1], source.backbone.eval()(x)[-1], atol=1e-5)


def test_attention_trained_without_gamma_keeps_its_function(tmp_path) -> None:
    """A classifier trained from scratch has no gamma (identity_init=False); loaded with pretrained= (identity_init
    True) the modules get gamma = 1, i.e. the classifier's function, not the identity."""
    source = _trained_classifier(2, identity_init=False)
    assert not any(k.endswith('gamma') for k in source.state_dict())
    path, _ = _save_like_trainer(source, tmp_path)
    net = ResNet(**TINY, out_indices=(3,), pretrained=str(path))
    assert net.pretrained_report.attention_loaded == ATTENTION
    assert all(float(m.gamma.detach()) == 1.0 for m in net.modules() if isinstance(m, AttentionModule))
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x)[0], source.backbone.eval()(x)[0], atol=1e-5)


def test_other_backbone_names_first_mismatched_key_and_both_shapes(tmp_path) -> None:
    path, _ = _save_like_trainer(_trained_classifier(0), tmp_path / 'r18')
    r50 = ResNet(depth=50, base_channels=8, attention=CBAM)
    ckpt = {k.removeprefix('backbone.'): v for k, v in torch.load(path, weights_only=True)['model'].items()}
    differ = [k for k, v in r50.state_dict().items() if k in ckpt and ckpt[k].shape != v.shape]
    assert differ[0] == 'layer1.0.conv1.weight'
    with pytest.raises(CheckpointError) as err:
        ResNet(depth=50, base_channels=8, attention=CBAM, pretrained=str(path))
    msg = str(err.value)
    assert '\n' not in msg and str(path) in msg
    assert "'layer1.0.conv1.weight': (8, 8, 3, 3) in the file, (8, 8, 1, 1) in the model" in msg
    assert f'{len(differ) - 1} more tensors differ' in msg
    assert 'ResNet-18 (base_channels=8)' in msg and 'ResNet-50 (base_channels=8)' in msg
    with pytest.raises(CheckpointError,
                       match=r"'conv1\.weight': \(8, 3, 7, 7\) in the file, \(16, 3, 7, 7\) in the model"):
        ResNet(depth=18, base_channels=16, attention=CBAM, pretrained=str(path))
    # same shapes, more blocks: ResNet-18 weights in a ResNet-34
    with pytest.raises(CheckpointError, match='layer1 has 2 blocks in the checkpoint and 3 in the model'):
        ResNet(depth=34, base_channels=8, attention=CBAM, pretrained=str(path))
    # a task checkpoint without backbone
    torch.save({'model': {'head.weight': torch.zeros(4, 16), 'neck.weight': torch.zeros(16, 8, 1, 1)}},
               tmp_path / 'headless.pth')
    with pytest.raises(CheckpointError, match=r"share no parameter name with the model: the file has no "
                                              r"'backbone\.\*' keys.*head\.\* \(1\), neck\.\* \(1\)"):
        ResNet(**TINY, pretrained=str(tmp_path / 'headless.pth'))


def test_detector_segmentor_and_vqa_backbones_take_the_classifier(tmp_path) -> None:
    # the demo classifier (configs/demo/cls_r18-cbam_shapes.py, trained from scratch: its CBAM has no gamma) into the
    # demo detector fine-tuned from it: the same backbone (R18, base 32, CBAM in layers 2-4)
    cls_cfg, det_cfg = load_config(CLS_CONFIG), load_config(FROM_CLS)
    assert det_cfg.model.backbone.pretrained == 'work_dirs/cls_r18-cbam_shapes/best.pth'
    for key in ('type', 'depth', 'base_channels', 'attention', 'groups', 'width_per_group'):
        assert cls_cfg.model.backbone.get(key) == det_cfg.model.backbone.get(key), key
    classes = ['circle', 'square', 'star', 'triangle']
    classifier = _randomise(build_model(cls_cfg.model, metainfo={'classes': classes}), 3).eval()
    path, _ = _save_like_trainer(classifier, tmp_path)
    det_cfg = load_config(FROM_CLS, {'model.backbone.pretrained': str(path)})
    detector = build_model(det_cfg.model, metainfo={'classes': classes}).eval()
    _assert_backbone_equal(detector.backbone, classifier.backbone)
    report = detector.backbone.pretrained_report
    assert report.attention_loaded == ATTENTION and report.missing == [f'{a}.gamma' for a in ATTENTION]
    assert report.dropped == [k for k in classifier.state_dict() if not k.startswith('backbone.')] != []
    assert set(_gammas(detector.backbone).values()) == {1.0}  # the classifier's function, not the identity
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(detector.backbone(x)[-1], classifier.backbone(x)[-1], atol=1e-4)

    # dilated segmentation backbone (output stride 8) and the VQA image backbone, from the tiny classifier
    tiny = _trained_classifier(4)
    path, _ = _save_like_trainer(tiny, tmp_path / 'tiny')
    segmentor = build_model(dict(type='Segmentor', backbone=dict(type='ResNet', **TINY, output_stride=8,
                                                                 pretrained=str(path)),
                                 decode_head=dict(type='fcn', in_index=3, channels=8)),
                            metainfo={'classes': ['bg', 'a', 'b']})
    assert segmentor.backbone.strides == (4, 8, 8, 8) and segmentor.backbone.layer4[1].conv2.dilation == (4, 4)
    _assert_backbone_equal(segmentor.backbone, tiny.backbone)
    meta = {'answers': ['yes', 'no', '2'], 'tokenizer': {'type': 'word', 'max_len': 8},
            'question_vocab': ['<pad>', '<unk>', 'how', 'many']}
    vqa = build_model(dict(type='VQAModel',
                           backbone=dict(type='ResNet', **TINY, out_indices=(0, 2), pretrained=str(path)),
                           question_encoder=dict(type='gru', embed_dim=8, hidden_dim=16),
                           head=dict(type='mcan', dim=32, heads=4, ffn=64, depth=1, flat_hidden=32, out_dim=64,
                                     dropout=0.0)), metainfo=meta)
    _assert_backbone_equal(vqa.backbone, tiny.backbone)
    for model in (segmentor, vqa):
        report = model.backbone.pretrained_report
        want = ATTENTION if hasattr(model.backbone, 'layer4') else ATTENTION[:4]
        assert report.attention_loaded == want and sorted(report.dropped) == [
            'head.bias', 'head.weight', 'neck.bias', 'neck.weight']
        assert _gammas(model.backbone) == {k: v for k, v in _gammas(tiny.backbone).items() if k in want}


def test_timm_backbone_takes_a_task_checkpoint_with_its_attention(tmp_path) -> None:
    spec = dict(model_name='resnet18', out_indices=(2, 3), attention=dict(type='cbam', after=['layer2.*']))
    torch.manual_seed(5)
    source = TimmBackbone(**spec, identity_init=True)
    with torch.no_grad():
        for name, tensor in source.state_dict().items():
            if name.endswith('gamma'):
                tensor.fill_(0.3)
    path, _ = _save_like_trainer(TinyClassifier(source, 256), tmp_path)
    net = TimmBackbone(**spec, pretrained=str(path))
    _assert_backbone_equal(net, source)
    report = net.pretrained_report
    assert report.attention_loaded == ['model.layer2.0.attn', 'model.layer2.1.attn'] and report.unexpected == []
    assert report.prefix == 'backbone.' and sorted(report.dropped) == ['head.bias', 'head.weight', 'neck.bias',
                                                                      'neck.weight']
    assert float(net.model.layer2[1].attn.gamma.detach()) == pytest.approx(0.3)


def test_pretrain_finetune_tool_reads_runs_and_tabulates(tmp_path) -> None:
    """tools/pretrain_finetune_demo.py without training: finished runs (log.jsonl + done.json) are reused and the
    table holds mean ± sample std of the final evaluations and the fine-tuned arm's time with its pre-training."""
    import importlib.util
    import json

    tool = ROOT / 'tools/pretrain_finetune_demo.py'
    spec = importlib.util.spec_from_file_location('pretrain_finetune_demo', tool)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    figures = {'cls': ([0.9, 0.95], 60.0), 'finetune': ([0.5, 0.7], 120.0), 'scratch': ([0.4, 0.41], 240.0)}
    runs: dict[str, list] = {'classifier': [], 'finetune': [], 'scratch': []}
    for arm, (values, wall) in figures.items():
        for seed, value in enumerate(values):
            work = tmp_path / f'{arm}_s{seed}'
            work.mkdir()
            name = 'top1' if arm == 'cls' else 'AP'
            lines = [{'mode': 'train', 'iter': 5, 'loss': 1.0},
                     {'mode': 'val', 'epoch': 1, 'iter': 5, 'count': 9, name: 0.0, 'AP50': 0.0},
                     {'mode': 'val', 'epoch': 2, 'iter': 10, 'count': 9, name: value, 'AP50': value + 0.1}]
            (work / 'log.jsonl').write_text('\n'.join(json.dumps(r) for r in lines) + '\n')
            (work / 'done.json').write_text(json.dumps({'config': arm, 'options': ['x=1'], 'wall_s': wall}))
            run = demo.train(arm, work, seed, ['x=1'], force=False)  # reused: no subprocess
            assert run['reused'] and run['metrics'][name] == value
            if arm == 'finetune':
                run['pretrain_wall_s'] = figures['cls'][1]
            runs['classifier' if arm == 'cls' else arm].append(run)
    text = demo.table(runs, 'top1')
    rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]] for line in text.splitlines()[2:]}
    assert rows['from scratch'][:3] == ['0.405 ± 0.007', '0.505 ± 0.007', '4.0']
    assert rows['classification pre-training -> fine-tune'][0] == '0.600 ± 0.141'  # stdev([0.5, 0.7]) = 0.1414
    assert rows['classification pre-training -> fine-tune'][2] == '3.0'  # (120 + 60) s
    assert rows['(pre-training alone; its top1)'][0] == '0.925 ± 0.035'


def test_a_checkpoint_loads_without_the_backbone_pretraining_file(tmp_path) -> None:
    """``attnkit test/infer`` path (load_model): a config whose backbone names a pre-training weights file (the VQA
    demo's stage 1) loads a trained checkpoint when that file is gone; the structure the file implied (identity
    attention with a gamma) is kept and every weight comes from the checkpoint."""
    from mmengine.config import Config

    from attnkit.engine import load_model
    pretrained = tmp_path / 'stage1.safetensors'
    source = ResNet(depth=18, base_channels=8)
    save_safetensors(source.state_dict(), {}, str(pretrained))
    cfg = Config(dict(model=dict(
        type='Segmentor', decode_head=dict(type='fcn', in_index=3, channels=8, num_convs=1),
        backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3), output_stride=8,
                      pretrained=str(pretrained), attention=dict(type='se', stages=(False, False, True, True))))))
    torch.manual_seed(0)
    model = _randomise(build_model(cfg.model, metainfo={'classes': ['a', 'b']}), 1)
    assert _gammas(model)  # identity init because a pretrained file was given
    ckpt = tmp_path / 'model.safetensors'
    save_safetensors(model.state_dict(), model.metainfo, str(ckpt))
    pretrained.unlink()
    loaded = load_model(cfg, ckpt)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert cfg.model.backbone.pretrained == str(pretrained)  # the user's config is not changed
    with pytest.raises(CheckpointError, match='stage1.safetensors'):  # building for training still needs it
        build_model(cfg.model, metainfo={'classes': ['a', 'b']})
