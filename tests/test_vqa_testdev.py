"""VQA v2 test-dev: questions say "test-dev2015", images are test2015/COCO_test2015_*.jpg; results file for the server."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from attnkit.builder import build_dataset
from attnkit.config import load_config
from attnkit.data.demo import generate_demo_data
from attnkit.engine import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def testdev(tmp_path_factory):
    """Demo data, plus a test-dev split laid out exactly as the official files (3 images, their questions)."""
    paths = generate_demo_data(tmp_path_factory.mktemp('demo'), num_train=12, num_val=4, size=64, seed=1)
    root = tmp_path_factory.mktemp('vqav2')
    with open(paths['vqa_val_questions']) as f:
        val = json.load(f)
    image_ids = sorted({q['image_id'] for q in val['questions']})[:3]
    questions = [dict(q) for q in val['questions'] if q['image_id'] in image_ids]
    official = {'info': {'description': 'This is v2.0 of the VQA dataset.'}, 'task_type': 'Open-Ended',
                'data_type': 'mscoco', 'license': {}, 'data_subtype': 'test-dev2015', 'questions': questions}
    (root / 'v2_OpenEnded_mscoco_test-dev2015_questions.json').write_text(json.dumps(official))
    (root / 'test2015').mkdir()
    for image_id in image_ids:
        shutil.copy(os.path.join(paths['img_dir'], f'{image_id:06d}.jpg'),
                    root / 'test2015' / f'COCO_test2015_{image_id:012d}.jpg')
    return paths, root, questions


def test_shipped_testdev_config_finds_every_test2015_image(testdev):
    paths, root, questions = testdev
    cfg = load_config('configs/vqa/mcan_r50_gru_vqav2_testdev.py', {
        'data.test.dataset.questions_file': str(root / 'v2_OpenEnded_mscoco_test-dev2015_questions.json'),
        'data.test.dataset.img_dir': str(root / 'test2015')})
    train = build_dataset(dict(type='VQAv2Dataset', questions_file=paths['vqa_train_questions'],
                               annotations_file=paths['vqa_train_annotations'], img_dir=paths['img_dir'],
                               img_name_template='{image_id:06d}.jpg', answer_min_count=1))
    # the old code named the files after the questions' subtype: every image "missing" (COCO_test-dev2015_...)
    dataset = build_dataset(cfg.data.test.dataset, metainfo=train.metainfo)
    assert dataset.question_subtype == 'test-dev2015' and dataset.subtype == 'test2015'
    assert len(dataset) == len(questions)
    first = questions[0]['image_id']
    assert dataset.image_path(first) == str(root / 'test2015' / f'COCO_test2015_{first:012d}.jpg')


def test_testdev_results_file_through_the_cli(testdev, tmp_path, capsys, monkeypatch):
    paths, root, questions = testdev
    opts = {'work_dir': str(tmp_path / 'work'), 'schedule.max_epochs': 1, 'schedule.warmup_iters': 1,
            'data.train.batch_size': 8, 'data.train.num_workers': 0, 'runtime.tensorboard': False,
            'runtime.report': False, 'data.val': None, 'model.backbone.pretrained': None,
            'model.backbone.base_channels': 8, 'model.question_encoder.embed_dim': 16,
            'model.question_encoder.hidden_dim': 32, 'model.head.dim': 32, 'model.head.ffn': 64,
            'model.head.depth': 1, 'model.head.flat_hidden': 32, 'model.head.out_dim': 64,
            'data.train.dataset.img_dir': paths['img_dir'],
            'data.train.dataset.questions_file': paths['vqa_train_questions'],
            'data.train.dataset.annotations_file': paths['vqa_train_annotations'],
            'data.train.dataset.pipeline': [dict(type='Resize', height=64, width=64)]}
    torch.manual_seed(0)
    trainer = Trainer(load_config('configs/demo/mcan_r18_gru_shapes.py', opts))
    trainer.train()
    answers = set(trainer.train_dataset.metainfo['answers'])
    # a test-dev config as configs/vqa/mcan_r50_gru_vqav2_testdev.py writes it, on top of the trained demo config
    config = tmp_path / 'mcan_demo_testdev.py'
    config.write_text(
        f"_base_ = [{os.path.join(ROOT, 'configs/demo/mcan_r18_gru_shapes.py')!r}]\n"
        "data = dict(test=dict(_delete_=True, dataset=dict(type='VQAv2Dataset', "
        f"questions_file={str(root / 'v2_OpenEnded_mscoco_test-dev2015_questions.json')!r}, annotations_file=None, "
        f"img_dir={str(root / 'test2015')!r}, img_name_template='COCO_{{subtype}}_{{image_id:012d}}.jpg', "
        "pipeline=[dict(type='Resize', height=64, width=64)]), batch_size=4, num_workers=0))\n")
    out = tmp_path / 'vqav2_test-dev2015_results.json'
    from attnkit import cli
    argv = ['test', str(config), str(tmp_path / 'work' / 'latest.pth'),
            '--out', str(out), '--cfg-options', *[f'{k}={v}' for k, v in opts.items() if k.startswith('model.')]]
    monkeypatch.chdir(ROOT)
    code = cli.main(argv)
    assert code == 0, capsys.readouterr().err[-2000:]
    rows = json.loads(out.read_text())
    assert sorted(r['question_id'] for r in rows) == sorted(q['question_id'] for q in questions)
    assert all(set(r) == {'question_id', 'answer'} and r['answer'] in answers for r in rows)
