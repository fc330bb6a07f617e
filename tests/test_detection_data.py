"""Detection data: boxes stay on their objects under the transforms; bad annotations give clear errors."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.data import Pipeline
from attnkit.errors import DataError
from attnkit.tasks.detection import CocoDetection, VOCDetection

# draw filled boxes of distinct colours, transform, look at the pixels inside/outside the transformed boxes
_BOXES = np.array([[8, 10, 40, 30], [50, 20, 90, 60], [20, 40, 35, 58]], np.float32)
_COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def _box_image(h=64, w=96):
    img = np.full((h, w, 3), 128, np.uint8)
    for (x1, y1, x2, y2), c in zip(_BOXES.astype(int), _COLOURS):
        img[y1:y2, x1:x2] = c
    return img


RAW: dict = {}  # the pipeline returns the uint8 pixel values (the model normalises)


@pytest.mark.parametrize('transforms', [
    [dict(type='HorizontalFlip', p=1.0)],
    [dict(type='ResizeShortLong', short=48, long=80)],
    [dict(type='ResizeShortLong', short=[96, 112], long=1000), dict(type='HorizontalFlip', p=1.0)],
    [dict(type='RandomRelativeCrop', scale=(0.5, 0.8), p=1.0)],
])
def test_boxes_stay_aligned_with_image(transforms):
    from attnkit.data.randomness import epoch_random, sample_random
    pipe = Pipeline(transforms, boxes=True, min_visibility=0.3, **RAW)
    for seed in range(3):
        # albumentations 2.x draws from its own generator: the pipeline seeds it inside a sample_random scope
        # (seeding random/numpy alone left the crop's draws, and whether any box survived, to chance)
        with epoch_random(0, 0), sample_random(seed):
            out = pipe(_box_image(), boxes=_BOXES, labels=np.arange(3), ignore=np.array([False, True, False]))
        img = out['image'].permute(1, 2, 0).numpy()
        h, w = out['img_size']
        assert img.shape[:2] == (h, w)
        assert len(out['boxes']) >= 1
        for box, label, ig in zip(out['boxes'].numpy(), out['labels'].tolist(), out['ignore'].tolist()):
            assert ig == (label == 1)  # the ignore flag travels with its box
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            inner = img[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1]
            assert inner.size and np.abs(inner - _COLOURS[label]).max() < 40, (transforms, box)
            # just outside each side (where inside the image and not another box) is grey background
            cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
            for y, x in ((cy, int(x1) - 2), (cy, int(np.ceil(x2)) + 1), (int(y1) - 2, cx), (int(np.ceil(y2)) + 1, cx)):
                if 0 <= x < w and 0 <= y < h:
                    assert not np.allclose(img[y, x], _COLOURS[label], atol=40), (transforms, box, (x, y))


def test_resize_short_long_limits_and_scale_factor(tmp_path):
    Image.fromarray(_box_image(60, 200)).save(tmp_path / '1.jpg')
    _write_coco(tmp_path, [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 20, 20], 'iscrowd': 0}],
                width=200, height=60)
    ds = CocoDetection(str(tmp_path / 'ann.json'), str(tmp_path),
                       pipeline=[dict(type='ResizeShortLong', short=120, long=300)])
    s = ds[0]
    assert s['meta']['img_size'] == (90, 300)  # the long side limit wins: scale 1.5
    assert s['meta']['scale_factor'] == pytest.approx((1.5, 1.5)) and s['meta']['ori_size'] == (60, 200)
    assert s['boxes'].tolist() == [pytest.approx([15, 15, 45, 45])]
    batch = ds.collate([s, s])
    assert batch['images'].shape == (2, 3, 96, 320) and batch['metas'][0]['pad_size'] == (96, 320)


def _write_coco(root, anns, width=64, height=48, cats=({'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}), n=1):
    images = [{'id': i + 1, 'file_name': f'{i + 1}.jpg', 'width': width, 'height': height} for i in range(n)]
    (root / 'ann.json').write_text(json.dumps({'images': images, 'annotations': anns, 'categories': list(cats)}))


def test_coco_boxes_clipped_zero_area_dropped_with_one_warning(tmp_path):
    anns = [{'id': 1, 'image_id': 1, 'category_id': 2, 'bbox': [50, 30, 100, 100], 'iscrowd': 0},  # clipped
            {'id': 2, 'image_id': 1, 'category_id': 1, 'bbox': [5, 5, 0, 10], 'iscrowd': 0},  # zero width
            {'id': 3, 'image_id': 1, 'category_id': 1, 'bbox': [80, 5, 10, 10], 'iscrowd': 0},  # outside
            {'id': 4, 'image_id': 2, 'category_id': 1, 'bbox': [1, 1, 10, 0], 'iscrowd': 0}]  # zero height
    _write_coco(tmp_path, anns, n=3)
    for i in (1, 2, 3):
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / f'{i}.jpg')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ds = CocoDetection(str(tmp_path / 'ann.json'), str(tmp_path))
    msgs = [str(w.message) for w in caught if 'zero area' in str(w.message)]
    assert len(msgs) == 1 and 'dropped 3 box' in msgs[0] and 'annotation id 2' in msgs[0]
    assert ds.get_ann_info(0)['boxes'].tolist() == [[50, 30, 64, 48]]
    assert ds[0]['labels'].tolist() == [1]
    assert len(ds) == 3 and len(ds[2]['boxes']) == 0  # images without objects are kept ...
    with pytest.warns(UserWarning, match='dropped 3'):
        assert len(CocoDetection(str(tmp_path / 'ann.json'), str(tmp_path), filter_empty=True)) == 1  # ... or not


def test_coco_unknown_category_and_missing_image(tmp_path):
    _write_coco(tmp_path, [{'id': 17, 'image_id': 1, 'category_id': 9, 'bbox': [1, 1, 5, 5], 'iscrowd': 0}])
    with pytest.raises(DataError, match=r"category_id 9.*annotation id 17.*ann\.json"):
        CocoDetection(str(tmp_path / 'ann.json'), str(tmp_path))
    _write_coco(tmp_path, [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [1, 1, 5, 5], 'iscrowd': 0}])
    with pytest.raises(DataError, match="not one of the model's classes"):
        CocoDetection(str(tmp_path / 'ann.json'), str(tmp_path), metainfo={'classes': ['a', 'z']})
    with pytest.raises(DataError, match=r"ann\.json.*1 listed image file\(s\) do not exist.*1\.jpg"):
        CocoDetection(str(tmp_path / 'ann.json'), str(tmp_path), metainfo={'classes': ['b', 'a']})  # at build
    (tmp_path / '1.jpg').write_bytes(b'not a jpeg')
    ds = CocoDetection(str(tmp_path / 'ann.json'), str(tmp_path), metainfo={'classes': ['b', 'a']})
    assert ds.cat_ids == [2, 1] and ds.get_ann_info(0)['labels'].tolist() == [1]
    with pytest.raises(DataError, match=r"1\.jpg.*cannot be read"):
        ds[0]


def _write_voc(root, objects, name='000001', size=(48, 64)):
    (root / 'Annotations').mkdir(exist_ok=True)
    (root / 'JPEGImages').mkdir(exist_ok=True)
    (root / 'ImageSets' / 'Main').mkdir(parents=True, exist_ok=True)
    objs = ''.join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, d, b in objects)
    (root / 'Annotations' / f'{name}.xml').write_text(
        f"<annotation><size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>{objs}</annotation>")
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(root / 'JPEGImages' / f'{name}.jpg')
    (root / 'ImageSets' / 'Main' / 'train.txt').write_text(f'{name}\n')


def test_voc_coordinates_difficult_and_0712(tmp_path):
    y07, y12 = tmp_path / 'VOC2007', tmp_path / 'VOC2012'
    for r in (y07, y12):
        r.mkdir()
    _write_voc(y07, [('dog', 0, (1, 1, 10, 20)), ('cat', 1, (5, 5, 30, 30)), ('dog', 0, (30, 30, 100, 100))])
    _write_voc(y12, [('cat', 0, (2, 3, 4, 5))], name='2008_000001')
    ds = VOCDetection([(str(y07), 'ImageSets/Main/train.txt'), (str(y12), 'ImageSets/Main/train.txt')],
                      classes=['cat', 'dog'])
    assert len(ds) == 2 and ds.metainfo == {'classes': ['cat', 'dog']}
    info = ds.get_ann_info(0)
    # 1-based inclusive -> x1 = xmin - 1, x2 = xmax; the last box is clipped to the 64x48 image
    assert info['boxes'].tolist() == [[0, 0, 10, 20], [4, 4, 30, 30], [29, 29, 64, 48]]
    assert info['labels'].tolist() == [1, 0, 1] and info['ignore'].tolist() == [False, True, False]
    s = ds[1]
    assert s['meta']['id'] == '2008_000001' and s['boxes'].tolist() == [[1, 2, 4, 5]]


def test_voc_unknown_class_names_file_and_object(tmp_path):
    _write_voc(tmp_path, [('dog', 0, (1, 1, 10, 20)), ('unicorn', 0, (5, 5, 30, 30))])
    with pytest.raises(DataError, match=r"'unicorn'.*object #1.*000001\.xml"):
        VOCDetection(str(tmp_path), 'ImageSets/Main/train.txt', classes=['cat', 'dog'])
    with pytest.raises(DataError, match=r"nope\.txt.*does not exist"):
        VOCDetection(str(tmp_path), 'ImageSets/Main/nope.txt')
