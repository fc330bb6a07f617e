"""tools/vqa_step_cost.py: times real training steps of a config and reports the images per step that the
Trainer's sampler gives (checked against the sampler and the dataset's image ids by hand)."""
from __future__ import annotations

import importlib.util
import os
import re
import statistics

import pytest

from attnkit.builder import build_dataset
from attnkit.config import load_config
from attnkit.engine.question_sampler import build_batch_sampler

TOOL = os.path.join(os.path.dirname(__file__), '..', 'tools', 'vqa_step_cost.py')


def _tool():
    spec = importlib.util.spec_from_file_location('vqa_step_cost', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tiny_config(demo_data, tmp_path_factory):
    path = tmp_path_factory.mktemp('step_cost') / 'tiny_vqa.py'
    path.write_text(f"""
data = dict(train=dict(dataset=dict(type='VQAv2Dataset', img_dir={demo_data['img_dir']!r},
    img_name_template='{{image_id:06d}}.jpg', questions_file={demo_data['vqa_train_questions']!r},
    annotations_file={demo_data['vqa_train_annotations']!r}, answer_min_count=1,
    pipeline=[dict(type='Resize', height=48, width=48)])))
model = dict(type='VQAModel', backbone=dict(type='ResNet', depth=18, base_channels=4, out_indices=(1,)),
             question_encoder=dict(type='gru', embed_dim=8, hidden_dim=8, dropout=0.0),
             head=dict(type='mcan', dim=16, heads=2, ffn=16, depth=1, flat_hidden=16, out_dim=16, dropout=0.0))
""")
    return str(path)


def _images_per_step_by_hand(config: str, batch: int, cap: int | None, steps: int) -> float:
    dataset = build_dataset(load_config(config)['data']['train']['dataset'])
    sampler = build_batch_sampler(len(dataset), batch, groups=dataset.group_keys('image'), max_per_group=cap,
                                  drop_last=True)
    sampler.set_epoch(0)
    counts = [len({dataset.records[i]['image_id'] for i in b}) for _, b in zip(range(steps), iter(sampler))]
    return statistics.mean(counts)


@pytest.mark.parametrize('cap', [2, None], ids=['max2', 'grouped'])
def test_step_cost_reports_the_samplers_images_per_step(tiny_config, capsys, cap):
    argv = [tiny_config, '--img-size', '32', '--batch', '8', '--steps', '1']
    if cap:
        argv += ['--max-per-group', str(cap)]
    assert _tool().main(argv) == 0
    out = capsys.readouterr().out
    match = re.search(r'([\d.]+) s per step, ([\d.]+) images per step', out)
    assert match, out
    assert float(match.group(1)) > 0
    assert float(match.group(2)) == pytest.approx(_images_per_step_by_hand(tiny_config, 8, cap, 3), abs=0.05)
