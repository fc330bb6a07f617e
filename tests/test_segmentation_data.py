"""Segmentation data: datasets, transforms (image/mask alignment), palette PNGs, mIoU, bad input."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.data import Pipeline
from attnkit.errors import DataError
from attnkit.evaluation.miou import IoUMetric, confusion_matrix
from attnkit.tasks.segmentation import FolderSegmentation, VOCSegmentation, voc_palette
from attnkit.tasks.segmentation.transforms import RandomCropCatMax, RandomResizeRatio

PALETTE = voc_palette(256)
CLASSES = ['background', 'circle', 'square', 'triangle', 'star']


def _label_png(path: str, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8))
    img.putpalette([v for rgb in PALETTE for v in rgb])
    img.save(path)


def _blocks(h: int, w: int, seed: int = 0, block: int = 8, k: int = 5) -> np.ndarray:
    """A label map of ``block``-pixel squares of random classes, some ignore squares."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, k, size=(h // block + 1, w // block + 1))
    grid[rng.random(grid.shape) < 0.1] = 255
    return np.kron(grid, np.ones((block, block), np.int64))[:h, :w].astype(np.uint8)


def _write_voc(root: str, labels: list[np.ndarray], split: str = 'train') -> None:
    for d in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    ids = []
    for i, lab in enumerate(labels):
        sid = f'{i:06d}'
        ids.append(sid)
        Image.fromarray(_paint(lab)).save(os.path.join(root, 'JPEGImages', sid + '.jpg'), quality=95)
        _label_png(os.path.join(root, 'SegmentationClass', sid + '.png'), lab)
    with open(os.path.join(root, 'ImageSets/Segmentation', split + '.txt'), 'w') as f:
        f.write('\n'.join(ids) + '\n')


def _paint(labels: np.ndarray) -> np.ndarray:
    """An RGB image whose colour encodes the label (ignore = white)."""
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]] + [[255, 255, 255]] * 251,
                       np.uint8)
    return colours[labels]


def _decode(image: np.ndarray) -> np.ndarray:
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 255, 255]], float)
    dist = ((image[..., None, :].astype(float) - colours) ** 2).sum(-1)
    lut = np.array([0, 1, 2, 3, 4, 255])
    return lut[dist.argmin(-1)]


RAW: dict = {}  # the pipeline returns the uint8 pixel values (the model normalises)


# ---------------------------------------------------------------------------------------------- mIoU
def test_miou_hand_computed_with_ignore_and_absent_class() -> None:
    gt = np.array([[0, 0, 1, 1],
                   [0, 255, 1, 2],
                   [2, 2, 255, 2]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 3, 0, 2],
                     [2, 1, 3, 2]])  # predictions under ignore pixels (3, 3) never count
    cm = confusion_matrix(pred, gt, num_classes=5)
    assert cm.dtype == np.int64 and cm.shape == (5, 5)
    # gt0: pred 0,1,0 ; gt1: 1,1,0 ; gt2: 2,2,1,2
    expected = np.zeros((5, 5), np.int64)
    expected[0, 0], expected[0, 1] = 2, 1
    expected[1, 1], expected[1, 0] = 2, 1
    expected[2, 2], expected[2, 1] = 3, 1
    np.testing.assert_array_equal(cm, expected)

    class _DS:
        metainfo = {'classes': ['a', 'b', 'c', 'd', 'e']}
    metric = IoUMetric(dataset=_DS())
    metric.results = [cm]
    res = metric.compute()
    iou0 = 2 / (3 + 3 - 2)
    iou1 = 2 / (3 + 4 - 2)
    iou2 = 3 / (4 + 3 - 3)
    assert list(res)[0] == 'mIoU'
    assert res['IoU.a'] == pytest.approx(iou0) and res['IoU.b'] == pytest.approx(iou1)
    assert res['IoU.c'] == pytest.approx(iou2)
    # class 3 ('d') is never in GT and never predicted (its only prediction sits on an ignore pixel): NaN
    assert np.isnan(res['IoU.d']) and np.isnan(res['IoU.e'])
    assert res['mIoU'] == pytest.approx((iou0 + iou1 + iou2) / 3)
    assert res['mAcc'] == pytest.approx((2 / 3 + 2 / 3 + 3 / 4) / 3)
    assert res['aAcc'] == pytest.approx(7 / 10)
    assert 'nan' in metric.summary() and 'triangle' not in metric.summary()


def test_miou_class_predicted_but_absent_from_gt_counts_as_zero() -> None:
    gt = np.zeros((2, 2), np.int64)
    pred = np.array([[0, 1], [0, 0]])
    metric = IoUMetric(num_classes=3)
    metric.results = [confusion_matrix(pred, gt, 3)]
    res = metric.compute()
    assert res['IoU.1'] == 0.0 and np.isnan(res['IoU.2'])
    assert res['mIoU'] == pytest.approx((3 / 4 + 0.0) / 2)


def test_miou_process_accumulates_per_image_matrices_from_dataset_gt(tmp_path) -> None:
    labels = [_blocks(40, 56, seed=1), _blocks(32, 32, seed=2)]
    _write_voc(str(tmp_path), labels)
    ds = VOCSegmentation(str(tmp_path), 'ImageSets/Segmentation/train.txt',
                         pipeline=[dict(type='RescaleKeepRatio', scale=64)], metainfo={'classes': CLASSES})
    batch = ds.collate([ds[0], ds[1]])
    assert batch['images'].shape[-2:] == (64, 96)  # short side 64 (64x90, 64x64), padded to 32
    metric = IoUMetric(dataset=ds)
    preds = [{'sem_seg': torch.from_numpy(lab.astype(np.int64)).clamp(max=4)} for lab in labels]
    metric.process(batch, preds)
    assert metric.num_samples() == 2 and metric.sum_state()['confusion'].shape == (5, 5)  # one summed matrix
    res = metric.compute()
    assert res['mIoU'] == pytest.approx(1.0) and res['aAcc'] == pytest.approx(1.0)
    with pytest.raises(DataError, match='000001'):  # prediction of the wrong size names the file
        metric.process({'metas': batch['metas'][1:]}, [{'sem_seg': torch.zeros(5, 5, dtype=torch.long)}])


# ------------------------------------------------------------------------------------------ datasets
def test_palette_png_reads_class_indices_not_colours(tmp_path) -> None:
    labels = _blocks(24, 40, seed=3)
    _write_voc(str(tmp_path), [labels])
    with Image.open(tmp_path / 'SegmentationClass' / '000000.png') as im:
        assert im.mode == 'P'
    ds = VOCSegmentation(str(tmp_path), 'ImageSets/Segmentation/train.txt', metainfo={'classes': CLASSES})
    sample = ds[0]
    assert sample['mask'].dtype == torch.int64
    np.testing.assert_array_equal(sample['mask'].numpy(), labels)
    meta = sample['meta']
    assert meta['ori_size'] == (24, 40) and meta['img_size'] == (24, 40) and meta['scale_factor'] == (1.0, 1.0)
    assert ds.metainfo['classes'] == CLASSES and ds.metainfo['palette'][1] == [128, 0, 0]


def test_folder_dataset_reduce_zero_label_and_missing_mask(tmp_path) -> None:
    img_dir, ann_dir = tmp_path / 'img', tmp_path / 'ann'
    img_dir.mkdir()
    ann_dir.mkdir()
    lab = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    Image.fromarray(_paint(np.zeros((2, 3), np.uint8))).save(img_dir / 'a.png')
    Image.fromarray(lab).save(ann_dir / 'a.png')
    ds = FolderSegmentation(str(img_dir), str(ann_dir), classes=['x', 'y', 'z'], img_suffix='.png',
                            reduce_zero_label=True)
    np.testing.assert_array_equal(ds[0]['mask'].numpy(), [[255, 0, 1], [2, 255, 0]])
    Image.fromarray(_paint(np.zeros((2, 3), np.uint8))).save(img_dir / 'b.png')
    with pytest.raises(DataError, match=r"b\.png"):
        FolderSegmentation(str(img_dir), str(ann_dir), classes=['x', 'y', 'z'], img_suffix='.png')


def test_bad_labels_raise_data_error_naming_the_file(tmp_path) -> None:
    _write_voc(str(tmp_path), [_blocks(16, 16, k=5), _blocks(16, 16)])
    # label value 7 with only 5 classes
    bad = _blocks(16, 16)
    bad[3, 3] = 7
    _label_png(str(tmp_path / 'SegmentationClass' / '000000.png'), bad)
    # label map of another size than its image
    _label_png(str(tmp_path / 'SegmentationClass' / '000001.png'), _blocks(16, 20))
    ds = VOCSegmentation(str(tmp_path), 'ImageSets/Segmentation/train.txt', metainfo={'classes': CLASSES})
    with pytest.raises(DataError, match=r"000000\.png.*\[7\]"):
        ds[0]
    with pytest.raises(DataError, match=r"000001\.png.*20x16.*16x16"):
        ds[1]
    os.remove(tmp_path / 'SegmentationClass' / '000001.png')
    with pytest.raises(DataError, match=r"train\.txt.*1 listed label file.*000001\.png"):
        VOCSegmentation(str(tmp_path), 'ImageSets/Segmentation/train.txt', metainfo={'classes': CLASSES})


# ---------------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize('transforms', [
    [dict(type='RandomResizeRatio', ratio_range=(0.5, 2.0))],
    [dict(type='RandomResizeRatio', ratio_range=(0.5, 2.0), base_size=(400, 96))],
    [dict(type='RandomCropCatMax', height=80, width=112, cat_max_ratio=0.75)],
    [dict(type='HorizontalFlip', p=1.0)],
    [dict(type='PadIfNeeded', min_height=128, min_width=160, position='top_left', border_mode=0, fill=0,
          fill_mask=255)],
    [dict(type='RandomResizeRatio', ratio_range=(0.5, 2.0)), dict(type='RandomCropCatMax', height=64, width=64),
     dict(type='HorizontalFlip', p=0.5),
     dict(type='PadIfNeeded', min_height=64, min_width=64, position='top_left', border_mode=0, fill=0,
          fill_mask=255)],
])
def test_mask_and_image_stay_aligned(transforms) -> None:
    labels = _blocks(96, 128, seed=5, block=16)
    image = _paint(labels)
    pipe = Pipeline(transforms, **RAW)
    for seed in range(4):
        pipe.compose.set_random_seed(seed)
        out = pipe(image, mask=labels)
        img = out['image'].permute(1, 2, 0).numpy().round().clip(0, 255).astype(np.uint8)
        mask = out['mask'].numpy()
        assert img.shape[:2] == mask.shape and out['img_size'] == mask.shape
        decoded = _decode(img)
        pad = (img.sum(-1) == 0) & (mask == 255)  # padding: black image, ignore label
        labelled = (mask != 255) & ~pad
        p = np.pad(mask, 1, mode='edge')
        interior = labelled & (p[:-2, 1:-1] == mask) & (p[2:, 1:-1] == mask) & (p[1:-1, :-2] == mask) & \
            (p[1:-1, 2:] == mask)
        agree = (decoded[interior] == mask[interior]).mean()
        assert agree > 0.99, f'{transforms}: only {agree:.3f} of interior pixels agree with the image'
        assert (decoded[labelled] == mask[labelled]).mean() > 0.9
        ignore_white = (decoded[(mask == 255) & ~pad] == 255).mean() if ((mask == 255) & ~pad).any() else 1.0
        assert ignore_white > 0.9


def test_padding_writes_255_into_the_label() -> None:
    labels = np.zeros((20, 30), np.uint8)
    out = Pipeline([dict(type='PadIfNeeded', min_height=32, min_width=32, position='top_left', border_mode=0,
                         fill=0, fill_mask=255)], **RAW)(_paint(labels), mask=labels)
    assert (out['mask'][20:, :] == 255).all() and (out['mask'][:, 30:] == 255).all()
    assert (out['mask'][:20, :30] == 0).all()


def test_random_resize_ratio_range_and_base_size() -> None:
    t = RandomResizeRatio(ratio_range=(0.5, 2.0), base_size=(2048, 512))
    sizes = set()
    for seed in range(20):
        t.set_random_seed(seed)
        out = t(image=np.zeros((375, 500, 3), np.uint8), mask=np.zeros((375, 500), np.uint8))
        h, w = out['mask'].shape
        assert out['image'].shape[:2] == (h, w)
        assert 256 - 1 <= h <= 1024 + 1 and abs(w / h - 500 / 375) < 0.02
        sizes.add(h)
    assert len(sizes) > 10


def test_cat_max_ratio_redraws_crops_dominated_by_one_class() -> None:
    labels = np.zeros((100, 100), np.uint8)
    labels[:, :50] = 1  # a 40-px crop is mixed (< 75 % of one class) only for 20 < x < 40
    image = _paint(labels)

    def dominated(ratio: float) -> float:
        t = RandomCropCatMax(40, 40, cat_max_ratio=ratio)
        t.set_random_seed(0)
        fracs = []
        for _ in range(60):
            m = t(image=image, mask=labels)['mask']
            fracs.append(np.bincount(m.ravel(), minlength=2).max() / m.size >= 0.75)
        return float(np.mean(fracs))

    assert dominated(1.0) > 0.5  # most random crops are (nearly) one class
    assert dominated(0.75) < 0.1
