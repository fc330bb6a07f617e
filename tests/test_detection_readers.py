"""Detection readers on bad input: one DataError line (< 300 characters) naming the file, the record and the fault."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from attnkit.errors import DataError
from attnkit.tasks.detection import CocoDetection, VOCDetection

_CATS = [{'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}]


def _coco(tmp_path, anns=(), images=None, cats=_CATS, drop=(), touch=True):
    images = images if images is not None else [{'id': 1, 'file_name': '1.jpg', 'width': 64, 'height': 48}]
    data = {'images': images, 'annotations': list(anns), 'categories': cats}
    for key in drop:
        data.pop(key)
    (tmp_path / 'ann.json').write_text(json.dumps(data))
    if touch:
        for img in images:
            if '..' not in img['file_name']:
                (tmp_path / img['file_name']).write_bytes(b'')
    return str(tmp_path / 'ann.json')


def _raises(call, *patterns, limit=300):
    """The DataError of ``call()``: one line, under ``limit`` characters, matching every pattern."""
    with pytest.raises(DataError) as info:
        call()
    msg = str(info.value)
    assert '\n' not in msg and len(msg) < limit, msg
    for p in patterns:
        assert p in msg, (p, msg)
    return msg


def test_coco_bbox_of_strings(tmp_path):
    ann = _coco(tmp_path, [{'id': 7, 'image_id': 1, 'category_id': 1, 'bbox': ['1', '2', 'x', '4'], 'iscrowd': 0}])
    _raises(lambda: CocoDetection(ann, str(tmp_path)), 'ann.json', 'annotation id 7', 'bbox', "'x'")
    # numeric strings are not numbers either (JSON has numbers): refused, not silently converted
    ann = _coco(tmp_path, [{'id': 8, 'image_id': 1, 'category_id': 1, 'bbox': ['1', '2', '3', '4'], 'iscrowd': 0}])
    _raises(lambda: CocoDetection(ann, str(tmp_path)), 'annotation id 8', 'four numbers')
    ann = _coco(tmp_path, [{'id': 9, 'image_id': 1, 'category_id': 1, 'bbox': [1, 2, float('nan'), 4]}])
    _raises(lambda: CocoDetection(ann, str(tmp_path)), 'annotation id 9')


def test_coco_file_without_categories(tmp_path):
    ann = _coco(tmp_path, [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [1, 2, 3, 4]}], drop=('categories',))
    _raises(lambda: CocoDetection(ann, str(tmp_path)), 'ann.json', "no 'categories' list")
    ann = _coco(tmp_path, drop=('images',))
    _raises(lambda: CocoDetection(ann, str(tmp_path)), "no 'images' list")


def test_coco_non_utf8_and_invalid_json_messages_stay_short(tmp_path):
    path = tmp_path / 'ann.json'
    body = json.dumps({'images': [{'id': 1, 'file_name': 'caf\u00e9.jpg'}] * 2000, 'categories': _CATS},
                      ensure_ascii=False)
    path.write_bytes(body.encode('latin-1'))  # 'é' as the single byte 0xe9: not UTF-8
    msg = _raises(lambda: CocoDetection(str(path), str(tmp_path)), 'ann.json', 'not UTF-8', '0xe9')
    assert 'caf' not in msg  # the file's content is not printed
    path.write_text(body[:5000])  # cut short
    _raises(lambda: CocoDetection(str(path), str(tmp_path)), 'ann.json', 'not valid JSON', 'line 1')


def test_coco_file_name_outside_the_image_folder(tmp_path):
    img_dir = tmp_path / 'images'
    img_dir.mkdir()
    ann = _coco(tmp_path, images=[{'id': 3, 'file_name': '../../../etc/passwd', 'width': 10, 'height': 10}])
    _raises(lambda: CocoDetection(ann, str(img_dir)), 'image id 3', 'ann.json', "'../../../etc/passwd'",
            'leaves the image folder')
    ann = _coco(tmp_path, images=[{'id': 4, 'file_name': '/etc/passwd', 'width': 10, 'height': 10}], touch=False)
    _raises(lambda: CocoDetection(ann, str(img_dir)), 'image id 4', 'leaves the image folder')


def test_coco_missing_images_counted_when_built(tmp_path):
    images = [{'id': i, 'file_name': f'{i:03d}.jpg', 'width': 8, 'height': 8} for i in range(10)]
    ann = _coco(tmp_path, images=images, touch=False)
    for i in (0, 4, 5, 6, 9):  # five of ten exist
        (tmp_path / f'{i:03d}.jpg').write_bytes(b'')
    _raises(lambda: CocoDetection(ann, str(tmp_path)), 'ann.json', '5 listed image file(s) do not exist',
            '001.jpg', '002.jpg', '003.jpg', 'and 2 more', limit=400)  # 4 full paths (long pytest tmp dirs)
    for i in (1, 2, 3, 7, 8):
        (tmp_path / f'{i:03d}.jpg').write_bytes(b'')
    assert len(CocoDetection(ann, str(tmp_path))) == 10


def test_coco_annotation_of_unlisted_image(tmp_path):
    ann = _coco(tmp_path, [{'id': 5, 'image_id': 42, 'category_id': 1, 'bbox': [1, 2, 3, 4]}])
    _raises(lambda: CocoDetection(ann, str(tmp_path)), 'ann.json', 'annotations[0] (id 5)', 'image_id 42')


def _voc(root, difficult, name='000001', write_image=True):
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        os.makedirs(root / sub, exist_ok=True)
    objs = ''.join(f"<object><name>dog</name><difficult>{d}</difficult><bndbox><xmin>{1 + 5 * k}</xmin>"
                   f"<ymin>1</ymin><xmax>{4 + 5 * k}</xmax><ymax>9</ymax></bndbox></object>"
                   for k, d in enumerate(difficult))
    (root / 'Annotations' / f'{name}.xml').write_text(
        f"<annotation><size><width>64</width><height>48</height></size>{objs}</annotation>")
    if write_image:
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / 'JPEGImages' / f'{name}.jpg')
    with open(root / 'ImageSets' / 'Main' / 'train.txt', 'a') as f:
        f.write(f'{name}\n')


def test_voc_difficult_as_float_and_garbage(tmp_path):
    _voc(tmp_path, ['1.0', '0.0', ' 1 ', '0', ''])
    ds = VOCDetection(str(tmp_path), 'ImageSets/Main/train.txt', classes=['dog'])
    assert ds.get_ann_info(0)['ignore'].tolist() == [True, False, True, False, False]
    bad = tmp_path / 'bad'
    _voc(bad, ['0', 'yes'])
    _raises(lambda: VOCDetection(str(bad), 'ImageSets/Main/train.txt', classes=['dog']),
            '<difficult>', "'yes'", 'object #1', '000001.xml', 'expected 0 or 1')
    worse = tmp_path / 'worse'
    _voc(worse, ['2'])
    _raises(lambda: VOCDetection(str(worse), 'ImageSets/Main/train.txt', classes=['dog']), "'2'", 'object #0')


def test_voc_missing_images_counted_when_built(tmp_path):
    _voc(tmp_path, ['0'], name='000001')
    _voc(tmp_path, ['0'], name='000002', write_image=False)
    _raises(lambda: VOCDetection(str(tmp_path), 'ImageSets/Main/train.txt', classes=['dog']),
            'train.txt', '1 listed image file(s) do not exist', '000002.jpg')


def test_voc_image_id_outside_the_folder(tmp_path):
    _voc(tmp_path, ['0'])
    with open(tmp_path / 'ImageSets' / 'Main' / 'train.txt', 'a') as f:
        f.write('../../../etc/passwd\n')
    _raises(lambda: VOCDetection(str(tmp_path), 'ImageSets/Main/train.txt', classes=['dog']),
            'train.txt', "'../../../etc/passwd", 'line 2', 'leaves the image folder', limit=400)  # 2 long tmp paths


def test_coco_annotation_without_id_or_category_is_one_line(tmp_path):
    import json
    from attnkit.errors import DataError
    from attnkit.tasks.detection.datasets.coco import CocoDetection
    (tmp_path / 'a.jpg').write_bytes(b'')
    for missing in ('id', 'category_id'):
        ann = {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 4, 4], 'area': 16, 'iscrowd': 0}
        del ann[missing]
        path = tmp_path / f'no_{missing}.json'
        path.write_text(json.dumps({'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 8, 'height': 8}],
                                    'annotations': [ann], 'categories': [{'id': 1, 'name': 'x'}]}))
        with pytest.raises(DataError) as info:
            CocoDetection(str(path), str(tmp_path))
        msg = str(info.value)
        assert path.name in msg and missing in msg and '\n' not in msg and len(msg) < 300, msg
