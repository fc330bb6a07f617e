"""The answer-bag auxiliary VQA loss (issue 18): complete per-image bags from the annotations, the pooled BCE against
a hand computation, training through the Trainer with gradients into the grid's 1x1 conv, a multi-task branch, and
aux_loss=None leaving the model as it was."""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import pytest
import torch

from attnkit.builder import build_dataset, build_model
from attnkit.config import load_config
from attnkit.engine import Trainer, load_model
from attnkit.errors import ConfigError, DataError
from attnkit.tasks.vqa.answer_bag import AnswerBagLoss, pool_cells

TINY_MODEL = dict(type='VQAModel', backbone=dict(type='ResNet', depth=18, base_channels=4, out_indices=(1,)),
                  question_encoder=dict(type='gru', embed_dim=8, hidden_dim=8, dropout=0.0),
                  head=dict(type='mcan', dim=16, heads=2, ffn=16, depth=1, flat_hidden=16, out_dim=16, dropout=0.0))
BAG = dict(type='answer_bag', weight=1.0, pool='lse', r=5.0, answer_types=('other',))


def _split(paths, split, **kw):
    cfg = dict(type='VQAv2Dataset', img_dir=paths['img_dir'], img_name_template='{image_id:06d}.jpg',
               questions_file=paths[f'vqa_{split}_questions'], annotations_file=paths[f'vqa_{split}_annotations'],
               pipeline=[dict(type='Resize', height=32, width=32)], answer_min_count=1)
    cfg.update(kw)
    metainfo = cfg.pop('metainfo', None)
    return build_dataset(cfg, metainfo=metainfo)


@pytest.fixture(scope='module')
def train_set(demo_data):
    return _split(demo_data, 'train')


def _hand_bags(paths):
    """image id -> {multiple_choice_answer of each of its questions}, and answer -> answer_type, from the raw files."""
    with open(paths['vqa_train_questions']) as f:
        image_of = {q['question_id']: q['image_id'] for q in json.load(f)['questions']}
    with open(paths['vqa_train_annotations']) as f:
        anns = json.load(f)['annotations']
    bags, types = defaultdict(set), {}
    for a in anns:
        bags[image_of[a['question_id']]].add(a['multiple_choice_answer'])
        types.setdefault(a['multiple_choice_answer'], a['answer_type'])
    return bags, types


def test_bags_are_complete_per_image_whatever_the_batch(demo_data, train_set):
    ds = train_set
    answers = ds.metainfo['answers']
    bags, types = _hand_bags(demo_data)
    assert ds.metainfo['answer_types'] == [types[a] for a in answers]  # each demo answer has one type
    assert {ds.records[i]['image_id'] for i in range(len(ds))} == set(bags)
    for image_id, bag in bags.items():
        assert {answers[i] for i in ds.answer_bags[image_id]} == bag
    # one question of an image in the batch: its row still holds the answers of ALL that image's questions
    first_q = {}
    for i, r in enumerate(ds.records):
        first_q.setdefault(r['image_id'], i)
    a, b = list(first_q.values())[:2]
    batch = ds.collate([ds[b], ds[a], ds[a + 1]])  # image of b, then two questions of a's image
    assert batch['answer_bag'].dtype == torch.bool and batch['answer_bag'].shape == (2, len(answers))
    assert batch['image_index'].tolist() == [0, 1, 1]
    for row, index in ((0, b), (1, a)):
        got = {answers[k] for k in batch['answer_bag'][row].nonzero().flatten().tolist()}
        assert got == bags[ds.records[index]['image_id']] and len(got) > 1
    # a mirrored view gets the bag with the flip's words swapped (here shape names, to have something to swap)
    flip = _split(demo_data, 'train', flip_prob=1.0, flip_words={'circle': 'square', 'square': 'circle'})
    swap = {'circle': 'square', 'square': 'circle'}
    with_circle = next(i for i in first_q.values() if 'circle' in bags[ds.records[i]['image_id']])
    got = flip.collate([flip[with_circle]])['answer_bag'][0]
    assert {answers[k] for k in got.nonzero().flatten().tolist()} == \
        {swap.get(x, x) for x in bags[ds.records[with_circle]['image_id']]}


def _bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


@pytest.mark.parametrize('pool', ['lse', 'max', 'mean'])
@pytest.mark.parametrize('reduction', ['num_answers', 'mean'])
def test_loss_equals_a_hand_computed_pooled_bce(pool, reduction):
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(3, 2, 2, 3, generator=g)  # M=3 images, C=2, 2x3 cells
    answer_ids = [1, 3]  # K=2 of a 4-answer vocabulary
    loss_fn = AnswerBagLoss(2, answer_ids, pool=pool, r=2.0, reduction=reduction)
    with torch.no_grad():
        loss_fn.conv.weight.copy_(torch.tensor([[1.0, -0.5], [0.25, 2.0]]).view(2, 2, 1, 1))
        loss_fn.conv.bias.copy_(torch.tensor([0.1, -0.3]))
    bags = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)  # image 1: no scored answer
    total, images = 0.0, 0
    for m in range(3):
        y = [float(bags[m, a]) for a in answer_ids]
        if sum(y) == 0:
            continue  # an image without a scored answer in its bag is left out
        images += 1
        for k in range(2):
            w, b = loss_fn.conv.weight[k].detach().flatten().tolist(), float(loss_fn.conv.bias[k].detach())
            cells = [w[0] * float(grid[m, 0, i, j]) + w[1] * float(grid[m, 1, i, j]) + b
                     for i in range(2) for j in range(3)]
            z = {'max': max(cells), 'mean': sum(cells) / 6,
                 'lse': 0.5 * math.log(sum(math.exp(2.0 * c) for c in cells) / 6)}[pool]
            total += _bce(z, y[k])
    expected = total / images / (2 if reduction == 'mean' else 1)
    assert float(loss_fn(grid, bags).detach()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(DataError, match='3 images'):
        loss_fn(grid, bags[:2])


def test_lse_pooling_tends_to_max_and_to_mean():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    top, avg = x.flatten(2).amax(2), x.flatten(2).mean(2)
    # max - log(16)/r <= lse <= max: within 2.8e-3 of the max at r=1e3, 2.8e-5 at r=1e5
    for r, ref, tol in ((1e3, top, 3e-3), (1e5, top, 3e-5), (1e-3, avg, 2e-3), (1e-5, avg, 2e-5)):
        assert torch.allclose(pool_cells(x, 'lse', r), ref, atol=tol), r
    lse = pool_cells(x, 'lse', 5.0)
    assert (lse < top).all() and (lse > avg).all()  # strictly between for cells that differ
    assert torch.equal(pool_cells(x, 'max'), top) and torch.equal(pool_cells(x, 'mean'), avg)


def test_config_errors_name_the_valid_choices(train_set):
    meta = train_set.metainfo
    for bad, words in ((dict(BAG, type='answer_bags'), ("'answer_bag'",)), (dict(BAG, pool='lsee'), ("'lse'", 'max')),
                       (dict(BAG, wieght=1.0), ("'weight'",)), (dict(BAG, r=0), ('r ',)),
                       (dict(BAG, answer_types=('colour',)), ('other', 'yes/no'))):
        with pytest.raises(ConfigError) as err:
            build_model(dict(TINY_MODEL, aux_loss=bad), metainfo=meta)
        assert all(w in str(err.value) for w in words), str(err.value)
    old = {k: v for k, v in meta.items() if k != 'answer_types'}  # a checkpoint from before answer types
    with pytest.raises(ConfigError, match='answer_types'):
        build_model(dict(TINY_MODEL, aux_loss=BAG), metainfo=old)
    with pytest.raises(ConfigError, match='use_image'):
        build_model(dict({k: v for k, v in TINY_MODEL.items() if k != 'backbone'}, use_image=False, aux_loss=BAG),
                    metainfo=meta)


def test_off_by_default_and_on_leaves_the_vqa_path_unchanged(train_set):
    ds = train_set
    meta = ds.metainfo
    batch = ds.collate(ds.__getitems__(list(range(24))))
    torch.manual_seed(0)
    plain = build_model(TINY_MODEL, metainfo=meta)
    torch.manual_seed(0)
    off = build_model(dict(TINY_MODEL, aux_loss=None), metainfo=meta)
    torch.manual_seed(0)
    on = build_model(dict(TINY_MODEL, aux_loss=BAG), metainfo=meta)
    sd_plain, sd_on = plain.state_dict(), on.state_dict()
    assert list(off.state_dict()) == list(sd_plain)
    assert sorted(set(sd_on) - set(sd_plain)) == ['answer_bag.conv.bias', 'answer_bag.conv.weight']
    assert all(torch.equal(sd_on[k], v) for k, v in sd_plain.items())  # the conv is built last: same init
    other = [i for i, t in enumerate(meta['answer_types']) if t == 'other']
    assert on.answer_bag.conv.weight.shape[0] == len(other) == 9  # 4 shapes + 5 colours
    plain.train(), on.train()
    out_plain, out_on = plain(batch), on(batch)
    assert sorted(out_plain) == ['loss', 'loss_cls'] and sorted(out_on) == ['loss', 'loss_bag', 'loss_cls']
    assert torch.equal(out_on['loss_cls'], out_plain['loss'])
    assert torch.allclose(out_on['loss'], out_plain['loss'] + out_on['loss_bag'])
    plain.eval(), on.eval()  # the same BatchNorm statistics: one training forward each
    with torch.no_grad():
        p0, p1 = plain(batch), on(batch)
    assert [p['answer'] for p in p0] == [p['answer'] for p in p1]
    assert all(torch.equal(a['scores'], b['scores']) for a, b in zip(p0, p1))
    # the bag loss alone reaches the 1x1 conv and the backbone, not the fusion head
    on.train().zero_grad()
    grid = on.image_grid(on.normalizer(batch['images']))
    on.answer_bag(grid, batch['answer_bag']).backward()
    assert on.answer_bag.conv.weight.grad.abs().sum() > 0
    assert on.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in on.head.parameters())
    with pytest.raises(DataError, match='answer_bag'):
        on.train()(dict((k, v) for k, v in batch.items() if k != 'answer_bag'))


def test_multitask_vqa_branch_with_the_bag_loss(train_set):
    ds = train_set
    branch = dict(task='vqa', question_encoder=TINY_MODEL['question_encoder'], head=TINY_MODEL['head'],
                  aux_loss=dict(BAG, weight=0.5))
    model = build_model(dict(type='MultiTaskModel', backbone=TINY_MODEL['backbone'], branches=dict(vqa=branch)),
                        metainfo={'tasks': {'vqa': ds.metainfo}})
    batch = dict(ds.collate(ds.__getitems__(list(range(12)))), task='vqa')
    out = model.train()(batch)
    vqa = model.branches['vqa']
    with torch.no_grad():
        grid = vqa.image_grid(feats=model.shared_features(batch))
        expected = vqa.answer_bag(grid, batch['answer_bag'])
    assert torch.allclose(out['vqa/loss_bag'], expected)
    assert torch.allclose(out['vqa/loss'], out['vqa/loss_cls'] + 0.5 * out['vqa/loss_bag'])
    out['loss'].backward()
    assert vqa.answer_bag.conv.weight.grad.abs().sum() > 0


def test_bag_config_trains_through_the_trainer_and_reloads(tmp_path, demo_data, vqa_accuracy_by_hand):
    """configs/demo/mcan_r18_gru_shapes_scratch_bag.py, tiny: 3 iterations, the 1x1 conv gets gradients every
    step, the log has loss_bag, the checkpoint has the conv and the answer types, and reloads for inference."""
    opts = {'work_dir': str(tmp_path / 'work'), 'schedule.by_epoch': False, 'schedule.max_iters': 3,
            'schedule.warmup_iters': 1, 'data.train.batch_size': 16, 'data.train.num_workers': 0,
            'data.val.num_workers': 0, 'runtime.tensorboard': False, 'runtime.log_interval': 1,
            'train_cfg.eval_interval': 3, 'train_cfg.checkpoint_interval': 3,
            'model.backbone.base_channels': 8, 'model.question_encoder.embed_dim': 16,
            'model.question_encoder.hidden_dim': 16, 'model.head.dim': 16, 'model.head.ffn': 32,
            'model.head.depth': 1, 'model.head.flat_hidden': 16, 'model.head.out_dim': 32}
    for split in ('train', 'val'):
        opts[f'data.{split}.dataset.img_dir'] = demo_data['img_dir']
        opts[f'data.{split}.dataset.questions_file'] = demo_data[f'vqa_{split}_questions']
        opts[f'data.{split}.dataset.annotations_file'] = demo_data[f'vqa_{split}_annotations']
    cfg = load_config('configs/demo/mcan_r18_gru_shapes_scratch_bag.py', opts)
    assert cfg['model']['aux_loss']['type'] == 'answer_bag' and cfg['model']['head']['type'] == 'mcan'
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    grads = []
    trainer.unwrapped_model.answer_bag.conv.weight.register_hook(lambda g: grads.append(float(g.abs().sum())))
    metrics = trainer.train()
    assert len(grads) == 3 and all(g > 0 for g in grads)
    # the evaluator's figure against the trained model's answers scored by hand on the raw annotations file
    expected, count = vqa_accuracy_by_hand(trainer.unwrapped_model, trainer._eval_datasets['val'],
                                           demo_data['vqa_val_annotations'], 8)
    assert count == metrics['num_questions']
    assert metrics['accuracy'] == pytest.approx(expected, abs=1e-6)
    with open(os.path.join(trainer.work_dir, 'log.jsonl')) as f:
        train_log = [r for r in map(json.loads, f) if r.get('mode') == 'train']
    assert len(train_log) == 3 and all(r['loss_bag'] > 0 for r in train_log)
    assert all(r['loss'] == pytest.approx(r['loss_cls'] + r['loss_bag'], rel=1e-4) for r in train_log)
    ckpt = torch.load(tmp_path / 'work' / 'latest.pth', weights_only=True)
    assert ckpt['meta']['answer_types'] == trainer.train_dataset.metainfo['answer_types']
    assert 'answer_bag.conv.weight' in ckpt['model']
    model = load_model(cfg, tmp_path / 'work' / 'latest.pth')
    assert torch.equal(model.answer_bag.conv.weight, ckpt['model']['answer_bag.conv.weight'])


@pytest.mark.parametrize('multitask', [False, True], ids=['vqa', 'multitask'])
def test_a_bag_trained_checkpoint_loads_into_the_config_without_the_bag(tmp_path, train_set, multitask):
    """The answer-bag conv is training-only: its weights are skipped (with a counted warning) when the config has no
    aux_loss; the answers are the bag model's; every other unexpected key still fails."""
    from attnkit.engine.checkpoint import save_safetensors
    from attnkit.errors import CheckpointError
    ds = train_set
    if multitask:
        def cfg_of(aux):
            branch = dict(task='vqa', question_encoder=TINY_MODEL['question_encoder'], head=TINY_MODEL['head'])
            if aux:
                branch['aux_loss'] = BAG
            return dict(model=dict(type='MultiTaskModel', backbone=TINY_MODEL['backbone'], branches=dict(vqa=branch)))
        meta = {'tasks': {'vqa': ds.metainfo}}
    else:
        def cfg_of(aux):
            return dict(model=dict(TINY_MODEL, **({'aux_loss': BAG} if aux else {})))
        meta = ds.metainfo
    torch.manual_seed(0)
    trained = build_model(cfg_of(True)['model'], metainfo=meta).eval()
    path = str(tmp_path / 'model.safetensors')
    save_safetensors(trained.state_dict(), trained.metainfo, path)
    with pytest.warns(UserWarning, match=r'2 weights of training-only parts .*answer_bag\.conv'):
        plain = load_model(cfg_of(False), path)
    assert not any('answer_bag' in k for k in plain.state_dict())
    batch = ds.collate(ds.__getitems__(list(range(12))))
    if multitask:
        batch['task'] = 'vqa'
    with torch.no_grad():
        got, expected = plain(batch), trained(batch)
    assert [g['answer'] for g in got] == [e['answer'] for e in expected]
    assert all(torch.equal(g['scores'], e['scores']) for g, e in zip(got, expected))
    # only the declared training-only parts are skipped
    state = dict(trained.state_dict(), **{'head.extra.weight': torch.zeros(1)})
    save_safetensors(state, trained.metainfo, path)
    with pytest.raises(CheckpointError, match='unexpected head.extra.weight'), pytest.warns(UserWarning):
        load_model(cfg_of(False), path)
    # the other way round: a checkpoint trained without the bag loads, for inference, into the config with it
    # (the conv keeps its initial values, unused in eval); the answers are the plain model's
    save_safetensors(plain.state_dict(), plain.metainfo, path)
    with pytest.warns(UserWarning, match=r'2 weights of training-only parts are not in the checkpoint.*answer_bag\.conv'):
        with_bag = load_model(cfg_of(True), path)
    with torch.no_grad():
        again = with_bag(batch)
    assert all(torch.equal(g['scores'], e['scores']) for g, e in zip(again, expected))
    # a missing weight outside the training-only parts still fails
    state = {k: v for k, v in plain.state_dict().items() if not k.endswith('classifier.weight')}
    save_safetensors(state, plain.metainfo, path)
    with pytest.raises(CheckpointError, match='missing keys'):
        load_model(cfg_of(True), path)
