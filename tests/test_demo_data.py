"""The shapes demo data: determinism, and that the COCO, VOC and VQA v2 files agree with each other."""
import filecmp
import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from attnkit.data import demo as demo_mod
from attnkit.data.demo import generate_demo_data, main
from attnkit.data.demo_formats import voc_palette
from attnkit.errors import DataError

CLASSES = ['circle', 'square', 'triangle', 'star']
COLOURS = ['red', 'green', 'blue', 'yellow', 'purple']


def _files(root):
    out = []
    for d, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return sorted(out)


def _load(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


_NUMBERS = {'zero': '0', 'none': '0', 'one': '1', 'two': '2', 'three': '3', 'four': '4'}


def _normalise(ans):
    """The parts of the official VQA answer normalisation the generator relies on."""
    words = re.sub(r'[.?!,]', '', ans.lower()).split()
    return ' '.join(_NUMBERS.get(w, w) for w in words if w not in ('a', 'an', 'the'))


@pytest.fixture(scope='module')
def second_copy(demo_data, tmp_path_factory):
    """The same arguments generated again, through the command-line entry point."""
    out = tmp_path_factory.mktemp('demo_copy') / 'demo'
    assert main(['--out-dir', str(out), '--num-train', '12', '--num-val', '6', '--size', '64', '--seed', '0']) == 0
    return str(out)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(demo_data, second_copy, tmp_path):
    files = _files(demo_data['root'])
    assert files == _files(second_copy)
    objects = sum(len(_load(demo_data[f'coco_{s}_json'])['annotations']) for s in ('train', 'val'))
    # meta, jpg/xml/png per image, 4 lists, 2 COCO, 4 VQA, one classification crop (cls/) per object
    assert len(files) == 1 + 18 * 3 + 4 + 2 + 4 + objects
    match, mismatch, errors = filecmp.cmpfiles(demo_data['root'], second_copy, files, shallow=False)
    assert mismatch == [] and errors == []
    other = generate_demo_data(tmp_path / 'seed1', num_train=3, num_val=1, size=64, seed=1)
    for name in ('000001.jpg', '000002.jpg', '000003.jpg'):
        assert not filecmp.cmp(os.path.join(demo_data['img_dir'], name), os.path.join(other['img_dir'], name),
                               shallow=False)


def test_coco_loads_with_consistent_counts_and_masks_inside_boxes(demo_data):
    meta = _load(demo_data['meta'])
    assert meta['classes'] == CLASSES and meta['colours'] == COLOURS
    ann_ids = set()
    for split, ids in (('train', range(1, 13)), ('val', range(13, 19))):
        coco = COCO(demo_data[f'coco_{split}_json'])
        assert sorted(coco.getImgIds()) == list(ids)
        assert [(c['id'], c['name']) for c in coco.loadCats(coco.getCatIds())] == list(enumerate(CLASSES, 1))
        assert len(coco.getAnnIds()) == meta['counts'][split]['objects']
        per_image = Counter(a['image_id'] for a in coco.anns.values())
        assert set(per_image) == set(ids) and set(per_image.values()) <= {1, 2, 3, 4}
        for img in coco.imgs.values():
            assert img['file_name'] == f"{img['id']:06d}.jpg" and img['width'] == img['height'] == 64
            assert os.path.isfile(os.path.join(demo_data['img_dir'], img['file_name']))
        for a in coco.anns.values():
            assert a['id'] not in ann_ids and a['iscrowd'] == 0
            ann_ids.add(a['id'])
            x, y, w, h = a['bbox']
            assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= 64 and y + h <= 64
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a['segmentation'])
            mask = coco.annToMask(a).astype(bool)
            ys, xs = np.nonzero(mask)
            assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h
            # the box is tight: the polygon reaches every side, and its pixel count is the area
            assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x, y, x + w - 1, y + h - 1)
            assert mask.sum() == a['area']
            labels = np.asarray(Image.open(os.path.join(demo_data['seg_dir'], f"{a['image_id']:06d}.png")))
            assert set(np.unique(labels[mask])) <= {a['category_id'], 255}
            assert (labels[mask] == a['category_id']).mean() > 0.3


def test_voc_xml_uses_one_based_boxes_matching_coco(demo_data):
    coco = COCO(demo_data['coco_val_json'])
    with open(demo_data['voc_val_list']) as f:
        names = f.read().split()
    with open(demo_data['voc_seg_val_list']) as f:
        assert f.read().split() == names == [f'{i:06d}' for i in range(13, 19)]
    seen_difficult = Counter()
    for name in names:
        root = ET.parse(os.path.join(demo_data['ann_dir'], name + '.xml')).getroot()
        assert root.findtext('filename') == name + '.jpg'
        assert [root.findtext(f'size/{t}') for t in ('width', 'height', 'depth')] == ['64', '64', '3']
        objs = root.findall('object')
        anns = coco.loadAnns(coco.getAnnIds(imgIds=int(name)))
        assert len(objs) == len(anns)
        for o, a in zip(objs, anns):
            assert o.findtext('name') == CLASSES[a['category_id'] - 1]
            assert o.findtext('pose') == 'Unspecified' and o.findtext('truncated') == '0'
            xmin, ymin, xmax, ymax = (int(o.findtext(f'bndbox/{t}')) for t in ('xmin', 'ymin', 'xmax', 'ymax'))
            x, y, w, h = a['bbox']
            assert (xmin - 1, ymin - 1, xmax, ymax) == (x, y, x + w, y + h)
            difficult = o.findtext('difficult')
            assert difficult == ('1' if min(w, h) < 10 else '0')
            seen_difficult[difficult] += 1
    assert seen_difficult['0'] > 0


def test_label_pngs_are_voc_palette_images(demo_data):
    values = set()
    for i in range(1, 19):
        img = Image.open(os.path.join(demo_data['seg_dir'], f'{i:06d}.png'))
        assert img.mode == 'P' and img.size == (64, 64)
        assert img.getpalette()[:3 * 6] == voc_palette()[:3 * 6]  # 0 black, 1 (128,0,0), 2 (0,128,0) ...
        assert img.getpalette()[3 * 255:3 * 256] == [224, 224, 192]
        arr = np.asarray(img)
        values |= set(np.unique(arr).tolist())
        border = arr == 255
        assert 0 < border.mean() < 0.3  # outlines only
    assert values == {0, 1, 2, 3, 4, 255}


def test_vqa_files_follow_v2_schema_and_agree_with_the_boxes(demo_data):
    for split in ('train', 'val'):
        q = _load(demo_data[f'vqa_{split}_questions'])
        a = _load(demo_data[f'vqa_{split}_annotations'])
        assert {'info', 'task_type', 'data_type', 'data_subtype', 'questions'} <= set(q)
        assert {'info', 'data_type', 'data_subtype', 'annotations'} <= set(a)
        assert q['data_subtype'] == a['data_subtype'] == split
        coco = COCO(demo_data[f'coco_{split}_json'])
        qids = [x['question_id'] for x in q['questions']]
        assert len(qids) == len(set(qids)) == len(a['annotations'])
        per_image = Counter(x['image_id'] for x in q['questions'])
        assert set(per_image) == set(coco.getImgIds()) and set(per_image.values()) <= set(range(8, 13))
        texts = Counter((x['image_id'], x['question']) for x in q['questions'])
        assert max(texts.values()) == 1  # never the same question twice about one image
        questions = {x['question_id']: x for x in q['questions']}
        for ann in a['annotations']:
            qu = questions[ann['question_id']]
            assert qu['image_id'] == ann['image_id']
            assert ann['answer_type'] in ('yes/no', 'number', 'other')
            answers = ann['answers']
            assert [x['answer_id'] for x in answers] == list(range(1, 11))
            assert all(x['answer_confidence'] in ('yes', 'maybe', 'no') for x in answers)
            canon = ann['multiple_choice_answer']
            agree = sum(_normalise(x['answer']) == canon for x in answers)
            assert agree >= 9, (canon, answers)  # at most one wrong answer in ten
            labels = [CLASSES[x['category_id'] - 1] for x in coco.loadAnns(coco.getAnnIds(imgIds=qu['image_id']))]
            text = qu['question'].lower()
            if text in ('how many objects are there?', 'how many shapes are there?'):
                assert canon == str(len(labels))
            elif m := re.fullmatch(r'how many (\w+)s are there\?', text):
                assert canon == str(labels.count(m[1])) and ann['answer_type'] == 'number'
            elif m := re.fullmatch(r'what color is the (\w+)\?', text):
                assert labels.count(m[1]) == 1 and canon in COLOURS
            elif re.fullmatch(r'what shape is the \w+ object\?', text):
                assert canon in labels
            elif text.startswith('is there a') or text.startswith('is the'):
                assert canon in ('yes', 'no') and ann['answer_type'] == 'yes/no'


def test_vqa_answers_are_balanced_so_question_only_guessing_scores_low(tmp_path):
    paths = generate_demo_data(tmp_path / 'demo', num_train=100, num_val=1, size=64)
    anns = _load(paths['vqa_train_annotations'])['annotations']
    questions = {x['question_id']: x['question'] for x in _load(paths['vqa_train_questions'])['questions']}
    yes_no = Counter(x['multiple_choice_answer'] for x in anns if x['answer_type'] == 'yes/no')
    assert abs(yes_no['yes'] - yes_no['no']) <= 0.1 * sum(yes_no.values())
    colours = Counter(x['multiple_choice_answer'] for x in anns if x['question_type'] == 'what color is the')
    assert set(colours) == set(COLOURS) and max(colours.values()) <= 0.3 * sum(colours.values())  # uniform: 0.2
    # the best question-only guess: the most frequent answer for each question's first three words
    by_prefix = {}
    for x in anns:
        key = ' '.join(questions[x['question_id']].lower().split()[:3])
        by_prefix.setdefault(key, Counter())[x['multiple_choice_answer']] += 1
    prior = sum(max(c.values()) for c in by_prefix.values()) / len(anns)
    assert prior < 0.45
    kinds = Counter(x['question_type'] for x in anns)
    assert len(kinds) >= 6  # colour, shape, relations, counts, existence all occur


def test_cache_reuses_matching_data_and_force_or_new_args_regenerate(tmp_path):
    out = tmp_path / 'demo'
    generate_demo_data(out, num_train=2, num_val=1, size=64)
    meta = os.path.join(out, 'meta.json')
    before = os.stat(meta)
    paths = generate_demo_data(out, num_train=2, num_val=1, size=64)
    assert paths['root'] == str(out) and os.stat(meta).st_ino == before.st_ino
    assert os.stat(meta).st_mtime_ns == before.st_mtime_ns
    generate_demo_data(out, num_train=2, num_val=1, size=64, force=True)
    assert os.stat(meta).st_ino != before.st_ino
    generate_demo_data(out, num_train=3, num_val=1, size=64)
    assert _load(meta)['args'] == {'num_train': 3, 'num_val': 1, 'size': 64, 'seed': 0}
    assert len(os.listdir(os.path.join(out, 'voc', 'JPEGImages'))) == 4
    assert os.listdir(tmp_path) == ['demo']  # no temporary or old folders left behind


def test_data_from_other_generator_code_is_rewritten(tmp_path, monkeypatch):
    out = tmp_path / 'demo'
    generate_demo_data(out, num_train=2, num_val=1, size=64)
    meta = os.path.join(out, 'meta.json')
    before = os.stat(meta).st_ino
    assert _load(meta)['generator_fingerprint'] == demo_mod.generator_fingerprint()
    generate_demo_data(out, num_train=2, num_val=1, size=64)
    assert os.stat(meta).st_ino == before  # same code: reused
    monkeypatch.setattr(demo_mod, 'generator_fingerprint', lambda: 'renderer-changed')
    generate_demo_data(out, num_train=2, num_val=1, size=64)
    assert os.stat(meta).st_ino != before and _load(meta)['generator_fingerprint'] == 'renderer-changed'


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = []

    def failing(paths, split, *args):
        calls.append(split)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_mod, '_write_split', failing)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_data(tmp_path / 'demo', num_train=2, num_val=1, size=64)
    assert calls == ['train'] and os.listdir(tmp_path) == []


def test_refuses_to_overwrite_a_foreign_folder_and_checks_arguments(tmp_path):
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('keep me')
    with pytest.raises(DataError, match='not a demo data set'):
        generate_demo_data(foreign, num_train=2, num_val=1, size=64)
    assert (foreign / 'notes.txt').read_text() == 'keep me'
    with pytest.raises(ValueError, match='size'):
        generate_demo_data(tmp_path / 'x', num_train=2, num_val=1, size=8)
