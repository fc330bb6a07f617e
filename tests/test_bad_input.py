"""No silent wrong input: 16-bit images and label maps, config typos, duplicate VQA ids, paths that leave the
image folder, and files a dataset lists but that do not exist."""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

import engine_toy
from attnkit.builder import build_dataset
from attnkit.config import check_config, load_config
from attnkit.data import read_image, read_label_png
from attnkit.errors import ConfigError, DataError
from attnkit.tasks.segmentation import FolderSegmentation, VOCSegmentation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------ 16-bit files
def test_16bit_grayscale_png_scales_to_8_bits_instead_of_white(tmp_path):
    values = np.array([[0, 128, 255], [1, 200, 254]], np.uint16)
    wide = values * 257  # the 8-bit values widened exactly as 16-bit tools do
    wide[1, 2] = 65535 - 100  # rounds to 255 (v / 257 = 254.6)
    Image.fromarray(wide).save(tmp_path / 'g16.png')
    with Image.open(tmp_path / 'g16.png') as im:
        assert im.mode == 'I;16'
    image = read_image(tmp_path / 'g16.png')
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    expected = values.astype(np.uint8)
    expected[1, 2] = 255
    np.testing.assert_array_equal(image[..., 0], expected)
    assert (image[..., 0] == image[..., 2]).all()


def test_16bit_rgb_png_keeps_the_high_byte(tmp_path):
    rgb = np.stack([np.full((4, 5), 40000), np.full((4, 5), 1000), np.full((4, 5), 65535)], -1).astype(np.uint16)
    cv2.imwrite(str(tmp_path / 'rgb16.png'), rgb[..., ::-1])  # cv2 writes BGR
    image = read_image(tmp_path / 'rgb16.png')
    np.testing.assert_array_equal(image[0, 0], [40000 >> 8, 1000 >> 8, 255])


def test_16bit_label_map_keeps_its_values_so_the_range_check_fires(tmp_path):
    img_dir, ann_dir = tmp_path / 'img', tmp_path / 'ann'
    img_dir.mkdir()
    ann_dir.mkdir()
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(img_dir / 'a.png')
    Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], np.uint16)).save(ann_dir / 'a.png')
    label = read_label_png(ann_dir / 'a.png')
    assert label.dtype == np.int64
    ds = FolderSegmentation(str(img_dir), str(ann_dir), classes=['x', 'y', 'z'], img_suffix='.png')
    np.testing.assert_array_equal(ds[0]['mask'].numpy(), [[0, 1, 2], [2, 1, 0]])
    Image.fromarray(np.array([[0, 1, 257], [2, 1, 0]], np.uint16)).save(ann_dir / 'a.png')  # 257 % 256 = 1
    np.testing.assert_array_equal(read_label_png(ann_dir / 'a.png')[0], [0, 1, 257])
    with pytest.raises(DataError, match=r"a\.png.*\[257\]"):
        ds[0]


# ------------------------------------------------------------------------------------------------ config typos
def _write(tmp: Path, name: str, **sections: str) -> str:
    path = tmp / name
    path.write_text(engine_toy.toy_config_text(str(tmp / 'work'), **sections))
    return str(path)


LOADER = ("dict(train=dict(dataset=dict(type='ToyRegressionDataset'), batch_size=4, {extra}), "
          "val=dict(dataset=dict(type='ToyRegressionDataset'), batch_size=2))")


@pytest.mark.parametrize('sections,fragments', [
    (dict(evaluater="dict(type='ToyMetric')"), ("'evaluater'", "'evaluator'")),
    (dict(optimizer="dict(type='SGD', lr=0.1)"), ("'optimizer'", 'optim.optimizer')),
    (dict(optim_wrapper="dict(optimizer=dict(type='SGD'))"), ("'optim_wrapper'", 'optim')),
    (dict(val_evaluator="dict(type='ToyMetric')"), ("'val_evaluator'", 'evaluator')),
    (dict(param_scheduler="[]"), ("'param_scheduler'", 'schedule')),
    (dict(modle="dict(type='ToyModel')"), ("'modle'", "'model'")),
    (dict(data="dict(train=dict(dataset=dict(type='ToyRegressionDataset')), vall=None)"), ('data.vall', "'val'")),
    (dict(data=LOADER.format(extra='batchsize=4')), ('data.train.batchsize', "'batch_size'")),
    (dict(data=LOADER.format(extra='num_wrkers=0')), ('data.train.num_wrkers', "'num_workers'")),
    (dict(data=LOADER.format(extra='shufle=False')), ('data.train.shufle', "'shuffle'")),
    (dict(data=LOADER.format(extra="drop_last='yes'")), ('data.train.drop_last', "'yes'")),
    (dict(runtime="dict(mixed_precison='bf16')"), ('runtime.mixed_precison', "'mixed_precision'")),
])
def test_config_typos_are_errors_naming_the_key_and_the_closest_name(tmp_path, sections, fragments):
    path = _write(tmp_path, 'typo.py', **sections)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for fragment in fragments + ('typo.py',):
        assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize('options,fragments', [
    ({'data.train.batchsize': 4}, ('data.train.batchsize', "'batch_size'")),
    ({'data.train.num_wrkers': 0}, ('num_wrkers', "'num_workers'")),
    ({'data.train.shufle': False}, ('shufle', "'shuffle'")),
    ({'data.train.batch_size': 'abc'}, ('data.train.batch_size', "'abc'")),
    ({'data.vall.batch_size': 2}, ("'vall'", "'val'")),
    ({'batch_size': 4}, ("'batch_size'", 'data.train.batch_size')),
    ({'optimizer.lr': 0.1}, ("'optimizer'", 'optim.optimizer')),
    ({'evaluater.type': 'ToyMetric'}, ("'evaluater'", "'evaluator'")),
])
def test_cfg_options_typos_and_bad_values_are_errors(tmp_path, options, fragments):
    path = _write(tmp_path, 'ok.py')
    with pytest.raises(ConfigError) as info:
        load_config(path, options)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_config_variables_are_allowed_and_every_shipped_config_loads(tmp_path):
    path = _write(tmp_path, 'vars.py', data_root="'data/x/'", train_pipeline='[]', img_size='64',
                  text_model="'bert'", _private="1")
    cfg = load_config(path, {'data.train.batch_size': 8, 'data.train.shuffle': False, 'work_dir': 'w'})
    assert cfg.data.train.batch_size == 8 and cfg.data_root == 'data/x/'
    with pytest.warns(UserWarning, match=r"'data_root' is a variable.*changes nothing"):
        load_config(path, {'data_root': 'elsewhere/'})
    configs = [p for p in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
               if '_base_' not in p]
    assert len(configs) >= 15
    for p in configs:
        load_config(p)


def test_trainer_checks_a_config_built_in_code(tmp_path):
    from attnkit.engine import Trainer
    cfg = Config.fromstring(engine_toy.toy_config_text(str(tmp_path / 'w')), '.py')
    cfg.merge_from_dict({'data.train.num_wrkers': 0})
    with pytest.raises(ConfigError, match=r"data\.train\.num_wrkers.*'num_workers'"):
        Trainer(cfg)
    with pytest.raises(ConfigError, match=r"'evaluater'.*'evaluator'"):
        check_config({'model': {}, 'evaluater': {}})


# ------------------------------------------------------------------------------------------------ VQA files
def _vqa(root: Path, questions: list, annotations: list | None, template: str = '{image_id:06d}.jpg',
         images: tuple = (1, 2)) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / 'img').mkdir(exist_ok=True)
    for i in images:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'img' / f'{i:06d}.jpg')
    (root / 'q.json').write_text(json.dumps({'data_subtype': 'train', 'questions': questions}))
    cfg = dict(type='VQAv2Dataset', questions_file=str(root / 'q.json'), img_dir=str(root / 'img'),
               img_name_template=template, pipeline=[dict(type='Resize', height=8, width=8)], answer_min_count=1)
    if annotations is not None:
        (root / 'a.json').write_text(json.dumps({'annotations': annotations}))
        cfg['annotations_file'] = str(root / 'a.json')
    return cfg


def _ann(qid: int, answer: str) -> dict:
    return {'question_id': qid, 'answer_type': 'other', 'answers': [{'answer': answer}] * 10}


QS = [{'image_id': 1, 'question': 'What colour?', 'question_id': 10},
      {'image_id': 2, 'question': 'How many?', 'question_id': 11}]


def test_duplicate_question_ids_are_errors_naming_the_file_and_the_id(tmp_path):
    dup = QS + [{'image_id': 2, 'question': 'Is it red?', 'question_id': 10}]
    with pytest.raises(DataError, match=r"q\.json.*question_id 10 appears twice.*records 0 and 2"):
        build_dataset(_vqa(tmp_path / 'q', dup, [_ann(10, 'red'), _ann(11, '2')]))
    with pytest.raises(DataError, match=r"a\.json.*question_id 11 appears twice"):
        build_dataset(_vqa(tmp_path / 'a', QS, [_ann(10, 'red'), _ann(11, '2'), _ann(11, '3')]))
    bad_id = [{'image_id': 'one', 'question': 'What?', 'question_id': 12}]
    with pytest.raises(DataError, match=r"q\.json.*record 0.*image_id 'one'"):
        build_dataset(_vqa(tmp_path / 'b', bad_id, [_ann(12, 'x')]))
    ds = build_dataset(_vqa(tmp_path / 'ok', QS, [_ann(10, 'red'), _ann(11, '2')]))
    assert [r['question_id'] for r in ds.records] == [10, 11]


def test_vqa_image_names_must_stay_inside_the_image_folder_and_exist(tmp_path):
    cfg = _vqa(tmp_path / 'esc', QS, [_ann(10, 'red'), _ann(11, '2')], template='../{image_id:06d}.jpg')
    with pytest.raises(DataError, match=r"question_id 10.*'\.\./000001\.jpg' leaves the image folder"):
        build_dataset(cfg)
    cfg = _vqa(tmp_path / 'miss', QS, [_ann(10, 'red'), _ann(11, '2')], images=(1,))
    with pytest.raises(DataError, match=r"q\.json.*1 listed image.*000002\.jpg"):
        build_dataset(cfg)


# ------------------------------------------------------------------------------------------------ segmentation
def _voc(root: Path, ids: list[str]) -> None:
    for d in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        (root / d).mkdir(parents=True, exist_ok=True)
    for sid in ('000001', '000002'):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / 'JPEGImages' / f'{sid}.jpg')
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / 'SegmentationClass' / f'{sid}.png')
    (root / 'ImageSets/Segmentation/train.txt').write_text(''.join(f'{i}\n' for i in ids))


def test_voc_split_ids_must_stay_inside_and_every_listed_file_exists(tmp_path):
    root = tmp_path / 'VOC'
    _voc(root, ['000001', '../../outside'])
    (tmp_path / 'outside.jpg').write_bytes(b'')
    with pytest.raises(DataError, match=r"line 2 of .*train\.txt.*'\.\./\.\./outside\.jpg' leaves the image folder"):
        VOCSegmentation(str(root), 'ImageSets/Segmentation/train.txt', metainfo={'classes': ['bg']})
    _voc(root, ['000001', '000002', '000003', '000004'])
    with pytest.raises(DataError, match=r"train\.txt': 2 listed image file.*000003\.jpg.*000004\.jpg"):
        VOCSegmentation(str(root), 'ImageSets/Segmentation/train.txt', metainfo={'classes': ['bg']})
    _voc(root, ['000001', '000002'])
    os.remove(root / 'SegmentationClass' / '000002.png')
    with pytest.raises(DataError, match=r"train\.txt': 1 listed label file.*000002\.png"):
        VOCSegmentation(str(root), 'ImageSets/Segmentation/train.txt', metainfo={'classes': ['bg']})
