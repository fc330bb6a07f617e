"""Segmentation heads, the Segmentor (losses, whole/slide/TTA inference, padding undone) and an end-to-end run."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnkit import build_model, load_config
from attnkit.heads.segmentation import seg_cross_entropy

CLASSES = ['background', 'circle', 'square', 'triangle', 'star']
META = {'classes': CLASSES}
TINY_BACKBONE = dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3), output_stride=8)

HEADS = {
    'fcn': dict(decode_head=dict(type='fcn', in_index=3, channels=16)),
    'danet': dict(decode_head=dict(type='danet', in_index=3, channels=16)),
    'ccnet': dict(decode_head=dict(type='ccnet', in_index=3, channels=16)),
    'deeplabv3plus': dict(neck=dict(type='ASPP', in_index=3, out_channels=16, dilations=(1, 2, 3)),
                          decode_head=dict(type='deeplabv3plus', in_index=3, channels=16, c1_channels=8)),
    'semantic_fpn': dict(backbone=dict(TINY_BACKBONE, output_stride=32),
                         neck=dict(type='FPN', out_channels=16, num_outs=4),
                         decode_head=dict(type='semantic_fpn', channels=8)),
}


def _model(name: str = 'fcn', **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = dict(type='Segmentor', backbone=TINY_BACKBONE)
    cfg.update(HEADS[name])
    cfg.update(kwargs)
    return build_model(cfg, metainfo=META)


def _batch(n: int = 2, h: int = 64, w: int = 64) -> dict:
    """Images whose colour encodes the label of 8x8 blocks (learnable), top rows ignored."""
    g = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, 5, (n, h // 8, w // 8), generator=g)
    masks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)
    colours = torch.tensor([[-1.0, -1, -1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])
    images = colours[masks].permute(0, 3, 1, 2) + 0.1 * torch.randn(n, 3, h, w, generator=g)
    images = (128 + 60 * images).round().clamp(0, 255).to(torch.uint8)  # uint8 pixels: the model normalises
    masks[:, :4] = 255
    metas = [{'img_size': (h, w), 'ori_size': (h, w)} for _ in range(n)]
    return {'images': images.contiguous(), 'masks': masks, 'metas': metas}


@pytest.mark.parametrize('name', list(HEADS))
def test_heads_train_and_predict(name: str) -> None:
    model = _model(name, auxiliary_head=dict(type='fcn', in_index=2, channels=8, num_convs=1, concat_input=False,
                                             loss_weight=0.4, loss_name='loss_aux'))
    model.train()
    batch = _batch()
    losses = model(batch)
    assert torch.isfinite(losses['loss'])
    assert losses['loss'].item() == pytest.approx(sum(v for k, v in losses.items() if k != 'loss').item(), rel=1e-5)
    assert 'loss_seg' in losses and 'loss_aux' in losses
    losses['loss'].backward()
    assert model.decode_head.conv_seg.weight.grad is not None
    if name == 'danet':
        assert {'loss_seg_pam', 'loss_seg_cam'} <= set(losses)
    model.eval()
    batch['metas'] = [{'img_size': (50, 60), 'ori_size': (100, 120)}, {'img_size': (64, 64), 'ori_size': (64, 64)}]
    preds = model(batch)
    assert preds[0]['sem_seg'].shape == (100, 120) and preds[1]['sem_seg'].shape == (64, 64)
    assert preds[0]['sem_seg'].dtype == torch.long and int(preds[0]['sem_seg'].max()) < 5


def test_danet_attention_starts_as_identity_and_aux_only_in_training() -> None:
    model = _model('danet')
    head = model.decode_head
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(head.pam(x), x)
    torch.testing.assert_close(head.cam(x), x)
    feats = model.backbone(torch.randn(1, 3, 64, 64))
    head.train()
    assert set(head(feats)) == {'seg', 'pam', 'cam'}
    head.eval()
    assert set(head(feats)) == {'seg'}


def test_ccnet_applies_one_shared_attention_recurrently() -> None:
    model = _model('ccnet')
    calls = []
    model.decode_head.cca.register_forward_hook(lambda m, i, o: calls.append(1))
    model.eval()
    model.encode_decode(torch.randn(1, 3, 64, 64))
    assert len(calls) == 2
    assert sum(1 for n, _ in model.decode_head.named_modules() if n.endswith('cca')) == 1


def test_cross_entropy_ignore_and_class_weights() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, 0] = 255
    weight = torch.tensor([1.0, 2.0, 0.5])
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    torch.testing.assert_close(seg_cross_entropy(logits, target, class_weight=weight), expected)
    all_ignored = seg_cross_entropy(logits, torch.full_like(target, 255))
    assert all_ignored.item() == 0.0
    all_ignored.backward()
    assert torch.isfinite(logits.grad).all()


def test_slide_inference_equals_whole_when_the_window_covers_the_image() -> None:
    whole = _model('danet')
    slide = _model('danet', test_mode='slide', crop_size=(96, 96), stride=(64, 64))
    slide.load_state_dict(whole.state_dict())
    whole.eval()
    slide.eval()
    images = torch.randn(2, 3, 64, 96)
    torch.testing.assert_close(slide.predict_logits(images), whole.predict_logits(images))
    # overlapping windows: every pixel is covered, the result has the full size and stays close to whole
    slide.crop_size, slide.stride = (64, 64), (32, 32)
    out = slide.predict_logits(images)
    assert out.shape == (2, 5, 64, 96) and torch.isfinite(out).all()


def test_padding_is_removed_before_resizing_to_the_original_size() -> None:
    model = _model('fcn')
    scores = torch.zeros(5, 64, 64)
    scores[2, :40, :48] = 1.0   # the real image (img_size 40x48): class 2
    scores[4, 40:, :] = 5.0     # padding: class 4 must not leak into the prediction
    scores[4, :, 48:] = 5.0
    labels = model.postprocess(scores, {'img_size': (40, 48), 'ori_size': (80, 96)})
    assert labels.shape == (80, 96) and (labels == 2).all()


def test_postprocess_labels_are_the_first_maximum_on_ties() -> None:
    model = _model('fcn')
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (5, 33, 47), generator=g).float()  # many ties between classes
    labels = model.postprocess(scores, {'img_size': (33, 47), 'ori_size': (33, 47)})
    ref = torch.from_numpy(scores.numpy().argmax(0))  # numpy: the first maximum
    assert torch.equal(labels, ref) and labels.dtype == torch.long


def test_flip_and_multiscale_tta_average_probabilities() -> None:
    model = _model('fcn', tta_flip=True, tta_scales=(0.5, 1.0))
    model.eval()
    images = torch.randn(1, 3, 64, 64)
    probs = model.predict_logits(images)
    assert probs.shape == (1, 5, 64, 64)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 64, 64))
    with torch.no_grad():
        p1 = model.encode_decode(images).softmax(1)
        p2 = model.encode_decode(images.flip(-1)).softmax(1).flip(-1)
        small = F.interpolate(images, scale_factor=0.5, mode='bilinear')
        p3 = F.interpolate(model.encode_decode(small), size=(64, 64), mode='bilinear').softmax(1)
        p4 = F.interpolate(model.encode_decode(small.flip(-1)).flip(-1), size=(64, 64), mode='bilinear').softmax(1)
    torch.testing.assert_close(probs, (p1 + p2 + p3 + p4) / 4)


def test_a_few_steps_fit_a_batch() -> None:
    model = _model('danet')
    model.train()
    batch = _batch(2, 64, 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(12):
        loss = model(batch)['loss']
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_end_to_end_trainer_evaluate_and_infer(demo_data, tmp_path) -> None:
    from attnkit.engine import Trainer, load_model
    from attnkit.registry import INFERENCERS
    voc = demo_data['voc_root']
    cfg = load_config('configs/demo/danet_r18-d8_shapes.py', {
        'data_root': voc,
        'data.train.dataset.root': voc, 'data.val.dataset.root': voc,
        'data.train.batch_size': 4, 'data.val.batch_size': 4,
        'model.backbone.base_channels': 8, 'model.decode_head.channels': 16,
        'schedule.max_iters': 4, 'schedule.warmup_iters': 0,
        'train_cfg.eval_interval': 4, 'train_cfg.checkpoint_interval': 4,
        'runtime.log_interval': 2, 'runtime.tensorboard': False,
    })
    cfg.data.train.dataset.pipeline = [dict(type='RandomCropCatMax', height=64, width=64),
                                       dict(type='HorizontalFlip', p=0.5)]
    cfg.work_dir = str(tmp_path / 'work')
    metrics = Trainer(cfg).train()
    assert list(metrics)[0] == 'mIoU' and 0.0 <= metrics['mIoU'] <= 1.0
    assert os.path.isfile(tmp_path / 'work' / 'model.safetensors')
    model = load_model(cfg, str(tmp_path / 'work' / 'model.safetensors'))
    assert model.metainfo['classes'] == CLASSES
    image = os.path.join(voc, 'JPEGImages', '000013.jpg')
    files = INFERENCERS.get('Segmentor')(model, cfg, [image], str(tmp_path / 'pics'), attn_point=(10, 20))
    names = [os.path.basename(f) for f in files]
    assert '000013_seg.png' in names and '000013_mask.png' in names
    assert '000013_attn_decode_head_pam.png' in names
    from PIL import Image
    with Image.open(tmp_path / 'pics' / '000013_mask.png') as im:
        assert im.mode == 'P' and im.size == (64, 64)
        assert int(np.asarray(im).max()) < 5
