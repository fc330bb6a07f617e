#!/usr/bin/env python
"""Cross-check attnkit's readers against real public dataset files that nobody here made.

    python tools/check_fixtures.py [FIXTURES_DIR]      # default: ../shared/fixtures

FIXTURES_DIR holds ``voc2007/000001.{jpg,xml}`` (Pascal VOC2007 image 000001) and ``vqav2/``
(three real VQA v2 train2014 questions, their ten answers each, and the COCO images). The check lays the
VOC files out in the devkit layout in a temporary folder, reads them with ``VOCDetection``, reads the VQA
files with ``VQAv2Dataset`` (images, answer vocabulary, soft targets), and prints what it read. It exits non-zero if a reader disagrees with the values written in the files.
This is a check run beside the project, not a unit test: a user's clone has no fixtures folder.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')


def check_voc(fixtures: Path) -> list[str]:
    from attnkit.tasks.detection.datasets.voc import VOCDetection

    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / 'VOC2007'
        for sub in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
            (root / sub).mkdir(parents=True)
        shutil.copy(fixtures / 'voc2007/000001.jpg', root / 'JPEGImages/000001.jpg')
        shutil.copy(fixtures / 'voc2007/000001.xml', root / 'Annotations/000001.xml')
        (root / 'ImageSets/Main/test.txt').write_text('000001\n')
        ds = VOCDetection(str(root), str(root / 'ImageSets/Main/test.txt'), pipeline=[])
        sample = ds[0]
        boxes = [[round(v, 3) for v in b] for b in sample['boxes'].tolist()]
        labels = [ds.classes[i] for i in sample['labels'].tolist()]
        print(f'VOC 000001: size {sample["meta"]["ori_size"]}, objects {labels}, boxes (0-based xyxy) {boxes}')
        tree = ET.parse(fixtures / 'voc2007/000001.xml')
        for obj, box, label in zip(tree.findall('object'), boxes, labels):
            bb = obj.find('bndbox')
            x1, y1, x2, y2 = (float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
            if label != obj.find('name').text or max(abs(a - b) for a, b in zip(box, [x1 - 1, y1 - 1, x2, y2])) > 1e-3:
                problems.append(f'VOC object {obj.find("name").text}: read {label} {box}, file says {x1, y1, x2, y2}')
        size = tree.find('size')
        if tuple(sample['meta']['ori_size']) != (int(size.find('height').text), int(size.find('width').text)):
            problems.append(f'VOC image size {sample["meta"]["ori_size"]} differs from the XML size')
    return problems


def check_vqa(fixtures: Path) -> list[str]:
    from attnkit.tasks.vqa.dataset import VQAv2Dataset

    problems = []
    d = fixtures / 'vqav2'
    ds = VQAv2Dataset(str(d / 'questions.json'), str(d / 'annotations.json'), img_dir=str(d),
                      answer_min_count=1)
    answers = ds.metainfo['answers']
    print(f'VQA: {len(ds)} questions, answer vocabulary ({len(answers)}): {answers}')
    questions = json.loads((d / 'questions.json').read_text())['questions']
    annotations = {a['question_id']: a for a in json.loads((d / 'annotations.json').read_text())['annotations']}
    for i, q in enumerate(questions):
        sample = ds[i]
        scores = sample['answer_scores']
        top = answers[int(scores.argmax())]
        print(f'  {q["question_id"]} {q["question"]!r}: image {tuple(sample["image"].shape)}, '
              f'best soft target {top!r} = {float(scores.max()):.2f}')
        given = [a['answer'] for a in annotations[q['question_id']]['answers']]
        if top not in [g.lower() for g in given]:
            problems.append(f'VQA question {q["question_id"]}: best target {top!r} not among answers {given}')
    return problems


def main(argv: list[str]) -> int:
    fixtures = Path(argv[0] if argv else Path(__file__).resolve().parent.parent.parent / 'shared/fixtures')
    if not fixtures.is_dir():
        print(f'error: fixtures folder {fixtures} does not exist', file=sys.stderr)
        return 2
    problems = check_voc(fixtures) + check_vqa(fixtures)
    for p in problems:
        print('MISMATCH:', p)
    print('all readers agree with the fixture files' if not problems else f'{len(problems)} mismatches')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
