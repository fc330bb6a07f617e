"""uint8 batches, normalisation inside the model, and the Pipeline's tensor conversion.

The batch contract (docs/design.md): ``images`` (N, 3, H, W) uint8 padded with 0; the model owns mean/std and
normalises on its device. A checkpoint plus its config must infer exactly as the float32 pipeline did before.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
from mmengine.config import Config
from torch import nn

from attnkit import build_model
from attnkit.data import Pipeline, collate, pad_to_multiple, read_image
from attnkit.data.normalize import IMAGENET_MEAN, IMAGENET_STD, ImageNormalizer, image_sizes
from attnkit.data.single_image import prepare_image
from attnkit.engine.checkpoint import load_model, save_atomic, save_safetensors
from attnkit.engine.utils import to_device
from attnkit.errors import ConfigError, DataError

STRIDES = (8, 16, 32)
RANGES = ((-1, 16), (16, 32), (32, 1e8))
DETECTOR = dict(type='Detector', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3)),
                neck=dict(type='FPN', out_channels=16, num_outs=3),
                head=dict(type='FCOSHead', feat_channels=16, stacked_convs=1, strides=STRIDES,
                          regress_ranges=RANGES, score_thr=0.0))  # every box kept: the comparison sees them all
SEGMENTOR = dict(type='Segmentor', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3),
                                                 output_stride=8),
                 decode_head=dict(type='danet', in_index=3, channels=16))


class _Given(nn.Module):
    """Stands in for the normaliser: the reference feeds images normalised the old way."""

    def forward(self, images: torch.Tensor, sizes: Any = None) -> torch.Tensor:
        return images


def _old_batch(path: str, pipeline: Pipeline) -> torch.Tensor:
    """The batch as the float32 pipeline made it before: ``(pixels - mean*255) / (std*255)`` per sample, then
    padded with 0.0 to a multiple of 32 — (1, 3, H', W') float32."""
    out = pipeline(read_image(path))
    img = out['image'].float()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1) * 255.0
    return pad_to_multiple([(img - mean) / std], 32, 0.0)


@pytest.mark.parametrize('task, model_cfg, pipeline, suffix', [
    ('detection', DETECTOR, [dict(type='ResizeShortLong', short=48, long=80)], '.safetensors'),
    ('segmentation', SEGMENTOR, [dict(type='RescaleKeepRatio', scale=(80, 40))], '.pth'),
])
def test_checkpoint_and_config_infer_as_the_float_pipeline_did(tmp_path, demo_data, task, model_cfg, pipeline,
                                                              suffix):
    """A real JPEG resized to a size that needs padding: the checkpoint + config (the infer path: uint8 batch,
    model normalises, padding re-zeroed) gives exactly the old float32 pipeline's input and predictions."""
    torch.manual_seed(0)
    cfg = Config(dict(model=model_cfg, data=dict(val=dict(dataset=dict(pipeline=pipeline)))))
    classes = ['background', 'circle', 'square', 'triangle', 'star']
    model = build_model(cfg.model, metainfo={'classes': classes}).eval()
    ckpt = str(tmp_path / f'model{suffix}')
    if suffix == '.safetensors':
        save_safetensors(model.state_dict(), model.metainfo, ckpt)
    else:
        save_atomic({'model': model.state_dict(), 'meta': model.metainfo}, ckpt)
    loaded = load_model(cfg, ckpt)
    assert not any('normalizer' in k for k in loaded.state_dict())  # mean/std come from the config

    path = os.path.join(demo_data['img_dir'], '000013.jpg')
    test_pipeline = Pipeline(pipeline)
    _, batch = prepare_image(path, test_pipeline)
    assert batch['images'].dtype == torch.uint8
    h, w = batch['metas'][0]['img_size']
    assert (h, w) != tuple(batch['images'].shape[-2:])  # the image is padded: the padding must read 0 again
    old = _old_batch(path, test_pipeline)
    assert torch.equal(loaded.normalizer(batch['images'], image_sizes(batch)), old)

    with torch.no_grad():
        new_pred = loaded(batch)[0]
        model.normalizer = _Given()
        old_pred = model({**batch, 'images': old})[0]
    assert new_pred.keys() == old_pred.keys()
    for key in new_pred:
        assert torch.equal(new_pred[key], old_pred[key]), key
    if task == 'detection':
        assert len(new_pred['boxes']) > 0


def test_model_built_with_other_mean_std_uses_them(demo_data):
    mean, std = (10.0, 100.0, 200.0), (2.0, 30.0, 60.0)
    cfg = Config(dict(model=dict(SEGMENTOR, normalize=dict(mean=mean, std=std))))
    torch.manual_seed(0)
    model = build_model(cfg.model, metainfo={'classes': ['a', 'b']}).eval()
    torch.manual_seed(0)
    default = build_model(SEGMENTOR, metainfo={'classes': ['a', 'b']}).eval()
    assert model.normalizer.mean.tolist() == list(mean) and model.normalizer.std.tolist() == list(std)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    expected = (images.float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalizer(images), expected, rtol=0, atol=1e-6)
    metas = [{'img_size': (32, 32), 'ori_size': (32, 32)}] * 2
    with torch.no_grad():
        ours = model.predict_logits(expected)
        torch.testing.assert_close(model.predict_logits(model.normalizer(images)), ours)
        assert not torch.allclose(default.predict_logits(default.normalizer(images)), ours)
        assert torch.equal(model({'images': images, 'metas': metas})[0]['sem_seg'], ours[0].argmax(0))
    with pytest.raises(ConfigError, match='normalize.std'):
        build_model(dict(SEGMENTOR, normalize=dict(mean=mean, std=(1.0, 0.0, 1.0))), metainfo={'classes': ['a']})
    with pytest.raises(ConfigError, match='unknown key'):
        build_model(dict(SEGMENTOR, normalize=dict(mean=mean, scale=1.0)), metainfo={'classes': ['a']})


def test_normalizer_keeps_channels_last_zeroes_padding_and_refuses_float() -> None:
    norm = ImageNormalizer()
    images = torch.randint(0, 256, (2, 3, 8, 10), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    out = norm(images, [(5, 7), None])
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    assert (out[0, :, 5:] == 0).all() and (out[0, :, :, 7:] == 0).all() and (out[0, :, :5, :7] != 0).any()
    torch.testing.assert_close(out[1], norm(images[1:])[0])  # no size: nothing zeroed
    with pytest.raises(DataError, match='uint8'):
        norm(images.float())
    sd = nn.Sequential(norm).state_dict()
    assert sd == {}  # non-persistent: checkpoints do not carry mean/std


def test_image_sizes_follow_image_index() -> None:
    batch = {'images': torch.zeros(2, 3, 32, 32, dtype=torch.uint8), 'image_index': torch.tensor([1, 1, 0]),
             'metas': [{'img_size': (20, 30)}, {'img_size': (20, 30)}, {'img_size': (32, 16)}]}
    assert image_sizes(batch) == [(32, 16), (20, 30)]
    assert image_sizes({'images': batch['images']}) is None
    assert image_sizes(dict(batch, metas=[{'img_size': (32, 32)}] * 3)) is None  # nothing padded: nothing to zero


def test_batch_crossing_to_the_device_is_uint8(tmp_path, demo_data) -> None:
    """A real training step: the model receives uint8 images (channels_last when the run asks for it)."""
    from attnkit.engine import Trainer
    paths = demo_data
    ds = dict(type='CocoDetection', ann_file=paths['coco_train_json'], img_dir=paths['img_dir'],
              pipeline=[dict(type='HorizontalFlip', p=0.5)])
    cfg = Config(dict(task='detection', model=DETECTOR,
                      data=dict(train=dict(dataset=ds, batch_size=2, num_workers=0)),
                      runtime=dict(tensorboard=False, channels_last=True),
                      schedule=dict(by_epoch=False, max_iters=1, warmup_iters=0, policy='constant'),
                      train_cfg=dict(eval_interval=10, checkpoint_interval=10)))
    trainer = Trainer(cfg, work_dir=str(tmp_path / 'work'))
    seen: list[torch.Tensor] = []
    trainer.unwrapped_model.register_forward_pre_hook(lambda m, args: seen.append(args[0]['images']))
    trainer.train()
    assert len(seen) == 1
    assert seen[0].dtype == torch.uint8 and seen[0].is_contiguous(memory_format=torch.channels_last)
    moved = to_device(collate([{'image': torch.zeros(3, 5, 7, dtype=torch.uint8), 'meta': {}}]), torch.device('cpu'),
                      channels_last=True)
    assert moved['images'].dtype == torch.uint8 and moved['images'].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('size', [(1, 1), (1, 5), (5, 1), (3, 7), (7, 4)])
@pytest.mark.parametrize('transforms', [
    [dict(type='RandomRotate90', p=1.0)],
    [dict(type='HorizontalFlip', p=1.0), dict(type='VerticalFlip', p=1.0)],
    [dict(type='RandomRotate90', p=1.0), dict(type='HorizontalFlip', p=0.5), dict(type='Transpose', p=0.5)],
])
def test_pipeline_tensors_from_flipped_and_rotated_tiny_images(size, transforms) -> None:
    """Flips and rotations leave negative strides, which ``np.ascontiguousarray`` keeps on size-1 dimensions:
    the tensors still come out (uint8 image, int64 mask) with the image and mask pixels moved together."""
    h, w = size
    image = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    mask = (np.arange(h * w) % 5).astype(np.uint8).reshape(h, w)
    pipe = Pipeline(transforms)
    for seed in range(4):
        pipe.compose.set_random_seed(seed)
        out = pipe(image, mask=mask)
        img, m = out['image'], out['mask']
        assert img.dtype == torch.uint8 and img.shape[0] == 3 and img.is_contiguous()
        assert m.dtype == torch.int64 and tuple(m.shape) == tuple(img.shape[1:]) == out['img_size']
        # every pixel keeps its colour triple, and its mask value travels with it
        colours = img.permute(1, 2, 0).reshape(-1, 3).numpy()
        flat = (colours[:, 0].astype(int) // 3)  # pixel index in the original image
        assert np.array_equal(colours, image.reshape(-1, 3)[flat])
        assert np.array_equal(m.reshape(-1).numpy(), mask.reshape(-1)[flat])


def test_pipeline_mean_std_moved_to_the_model() -> None:
    with pytest.raises(ConfigError, match='model.normalize'):
        Pipeline([], mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    with pytest.raises(ConfigError, match='uint8'):
        Pipeline([dict(type='Normalize')])(np.zeros((4, 4, 3), np.uint8))
