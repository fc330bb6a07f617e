"""runtime.channels_last on the CPU with convolutions whose channels_last backward corrupts memory (oneDNN's strided
1x1 backward with 2-6 input channels, torch 2.14 on AVX2): the Trainer trains in NCHW instead and says which
layers; without such layers it keeps channels_last."""
from __future__ import annotations

import warnings

import pytest
import torch

from attnkit.builder import build_backbone
from attnkit.config import load_config
from attnkit.engine import Trainer
from attnkit.engine.utils import channels_last_unsafe_convs


def test_unsafe_convs_are_the_narrow_strided_1x1s():
    # ResNet-18 base 4: only layer2's downsample (4 -> 8 channels, stride 2) has < 8 inputs; layer3's has 8
    assert channels_last_unsafe_convs(build_backbone(dict(type='ResNet', depth=18, base_channels=4))) == [
        'layer2.0.downsample.0']
    assert channels_last_unsafe_convs(build_backbone(dict(type='ResNet', depth=18, base_channels=8))) == []
    # 3x3 strided and 1x1 unstrided narrow convs, and grouped ones, are not matched
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, stride=2), torch.nn.Conv2d(4, 8, 1),
                                torch.nn.Conv2d(4, 8, 1, stride=2, groups=4), torch.nn.Conv2d(6, 6, 1, stride=(1, 2)))
    assert channels_last_unsafe_convs(model) == ['3']


def _tiny_vqa_config(tmp_path, demo_data, base_channels: int):
    opts = {'work_dir': str(tmp_path / f'work{base_channels}'), 'schedule.by_epoch': False, 'schedule.max_iters': 2,
            'schedule.warmup_iters': 1, 'data.train.batch_size': 16, 'data.train.num_workers': 0,
            'data.val.num_workers': 0, 'runtime.tensorboard': False, 'runtime.report': False,
            'runtime.channels_last': True, 'train_cfg.eval_interval': 100, 'train_cfg.checkpoint_interval': 100,
            'model.backbone.base_channels': base_channels, 'model.question_encoder.embed_dim': 16,
            'model.question_encoder.hidden_dim': 16, 'model.head.dim': 16, 'model.head.ffn': 32,
            'model.head.depth': 1, 'model.head.flat_hidden': 16, 'model.head.out_dim': 32,
            'model.backbone.out_indices': (2,)}
    for split in ('train', 'val'):
        opts[f'data.{split}.dataset.img_dir'] = demo_data['img_dir']
        opts[f'data.{split}.dataset.questions_file'] = demo_data[f'vqa_{split}_questions']
        opts[f'data.{split}.dataset.annotations_file'] = demo_data[f'vqa_{split}_annotations']
    return load_config('configs/demo/mcan_r18_gru_shapes_scratch.py', opts)


def test_trainer_trains_a_narrow_resnet_in_nchw_and_says_why(tmp_path, demo_data):
    cfg = _tiny_vqa_config(tmp_path, demo_data, base_channels=4)
    with pytest.warns(UserWarning, match=r'channels_last=True is ignored .* backbone\.layer2\.0\.downsample\.0'):
        trainer = Trainer(cfg)
    assert trainer.channels_last is False
    trainer.train()  # with channels_last this backward corrupted the heap (abort) on the AVX2 CPU
    assert trainer.iter == 2
    stem = trainer.unwrapped_model.backbone.conv1.weight
    assert stem.is_contiguous() and not stem.is_contiguous(memory_format=torch.channels_last)


def test_trainer_keeps_channels_last_without_narrow_strided_convs(tmp_path, demo_data):
    cfg = _tiny_vqa_config(tmp_path, demo_data, base_channels=8)
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='runtime.channels_last')
        trainer = Trainer(cfg)
    assert trainer.channels_last is True
    assert trainer.unwrapped_model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
