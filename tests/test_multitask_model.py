"""MultiTaskModel (issue 15): one shared backbone pass for all branches, routing, loss weighting (fixed and
uncertainty), single-task export equal to the branch, no shared tensors, and the errors for bad input."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save as safetensors_save
from test_encoder_refactor import RANGES, STRIDES, VQA_META, fill_weights

from attnkit.builder import build_model
from attnkit.engine.checkpoint import check_state_dict, load_weights
from attnkit.errors import CheckpointError, ConfigError, DataError

GRU = dict(type='gru', embed_dim=8, hidden_dim=8, dropout=0.0)
MCAN = dict(type='mcan', dim=16, heads=2, ffn=32, depth=1, flat_hidden=16, out_dim=32, dropout=0.0)
BRANCHES = dict(
    det=dict(task='detection', in_indices=(1, 2, 3), neck=dict(type='FPN', out_channels=8, num_outs=3),
             head=dict(type='FCOSHead', feat_channels=8, stacked_convs=1, strides=STRIDES, regress_ranges=RANGES,
                       score_thr=0.0)),
    seg=dict(task='segmentation', neck=dict(type='ASPP', out_channels=8, dilations=(1, 2)),
             decode_head=dict(type='fcn', in_index=3, channels=8, num_convs=1, dropout=0.0),
             auxiliary_head=dict(type='fcn', in_index=2, channels=4, num_convs=1, dropout=0.0, loss_weight=0.4,
                                 loss_name='loss_aux')),
    vqa=dict(task='vqa', in_indices=(0, 2), grid_fusion='concat', question_encoder=GRU, head=MCAN))
META = {'tasks': {'det': {'classes': ['a', 'b']}, 'seg': {'classes': ['bg', 'a', 'b']}, 'vqa': VQA_META}}


def multitask(branches=BRANCHES, meta=META, **kwargs):
    cfg = dict(type='MultiTaskModel', backbone=dict(type='ResNet', depth=18, base_channels=4,
                                                    out_indices=(0, 1, 2, 3), attention=dict(type='se')),
               branches=branches, **kwargs)
    return build_model(cfg, metainfo=meta)


def full_batch() -> dict:
    """Two 64x64 images with boxes, masks and three questions: every task's fields in one batch."""
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[2, 3, 0, 0], [2, 4, 3, 0], [4, 0, 0, 0]])
    return {'images': torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g),
            'metas': [{'ori_size': (64, 64), 'img_size': (64, 64), 'scale_factor': (1.0, 1.0)}] * 2,
            'boxes': [torch.tensor([[4., 6., 40., 30.]]), torch.tensor([[8., 8., 20., 24.], [30., 30., 60., 62.]])],
            'labels': [torch.tensor([1]), torch.tensor([0, 1])],
            'masks': torch.randint(0, 3, (2, 64, 64), generator=g),
            'input_ids': ids, 'attention_mask': ids > 0, 'image_index': torch.tensor([0, 1, 1]),
            'question_ids': [7, 8, 9], 'answer_scores': torch.rand(3, 3, generator=g)}


def flat(preds) -> list[torch.Tensor]:
    """All tensors of a list of prediction dicts, in order."""
    return [v for p in preds for v in p.values() if isinstance(v, torch.Tensor)]


def test_one_backbone_pass_routing_and_exported_branches_equal_the_branches(tmp_path):
    model = multitask()
    fill_weights(model)
    sd = model.state_dict()
    assert {k.split('.')[0] for k in sd} == {'backbone', 'branches'}
    assert len(safetensors_save(dict(sd))) > 0  # safetensors refuses tensors that appear twice
    assert len({v.data_ptr() for v in sd.values() if v.numel()}) == sum(1 for v in sd.values() if v.numel())
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    batch = full_batch()

    # training: routed by batch['task'] (or task=), '<name>/' logs, the exported branch gives the same losses
    singles = {}
    for name in BRANCHES:
        model.train()
        losses = model({**batch, 'task': name})
        assert losses['loss'] is not None and losses[f'{name}/weight'] == 1.0
        assert all(k == 'loss' or k.startswith(f'{name}/') for k in losses)
        path = model.export_branch(name, str(tmp_path / f'{name}.safetensors'))
        state, meta = load_weights(path)
        assert meta == model.metainfo['tasks'][name]
        single = build_model(model.branch_config(name), metainfo=meta)
        check_state_dict(single, state, path)  # the same key set: strict load below
        single.load_state_dict(state)
        single.train()
        single_losses = single(batch)
        for key, value in single_losses.items():
            torch.testing.assert_close(losses[f'{name}/{key}'], value.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(losses['loss'], single_losses['loss'].detach(), rtol=1e-6, atol=1e-6)
        singles[name] = single.eval()

    model.eval()
    calls.clear()
    every = model.predict_all(batch)
    assert calls == [1] and sorted(every) == sorted(BRANCHES)
    assert len(every['det']) == 2 and every['seg'][0]['sem_seg'].shape == (64, 64) and len(every['vqa']) == 3
    for name, single in singles.items():
        single.load_state_dict(model.branch_state_dict(name))  # BN statistics as they are now in the branch
        with torch.no_grad():
            alone = single(batch)
            routed = model(batch, task=name)
        assert len(flat(every[name])) == len(flat(alone)) == len(flat(routed)) > 0
        for a, b, c in zip(flat(every[name]), flat(alone), flat(routed)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(a, c, rtol=0, atol=0)
    no_questions = {k: v for k, v in batch.items() if k not in ('input_ids', 'attention_mask')}
    assert sorted(model.predict_all(no_questions)) == ['det', 'seg']  # VQA only with questions


def test_uncertainty_weights_follow_kendall_and_receive_gradients():
    model = multitask(loss_weighting='uncertainty', loss_weights=dict(seg=2.0))
    with torch.no_grad():
        model.loss_weighting.log_vars['seg'].fill_(0.5)
    model.train()
    out = model(full_batch(), task='seg')
    raw, s = out['seg/loss'], 0.5
    assert out['loss'].item() == pytest.approx(math.exp(-s) * 2.0 * raw.item() + s, rel=1e-6)
    assert out['seg/weight'].item() == pytest.approx(2.0 * math.exp(-s)) and out['seg/log_var'].item() == s
    out['loss'].backward()
    log_vars = model.loss_weighting.log_vars
    # d/ds [exp(-s) w L + s] = 1 - exp(-s) w L; the other tasks' s get no gradient from a seg batch
    assert log_vars['seg'].grad.item() == pytest.approx(1 - math.exp(-s) * 2.0 * raw.item(), rel=1e-5)
    assert log_vars['det'].grad is None and log_vars['vqa'].grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    before = log_vars['seg'].item()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert log_vars['seg'].item() != before
    assert 'loss_weighting.log_vars.seg' in model.state_dict()
    # fixed weights: a plain multiplier
    fixed = multitask(loss_weights=dict(vqa=0.25)).train()
    out = fixed(full_batch(), task='vqa')
    assert out['loss'].item() == pytest.approx(0.25 * out['vqa/loss'].item(), rel=1e-6)


def test_bad_input_errors_name_what_is_wrong():
    with pytest.raises(ConfigError, match=r"unknown task 'detektion'.*Did you mean 'detection'.*Registered tasks: "
                                          r"detection, segmentation, vqa"):
        multitask(branches=dict(det=dict(BRANCHES['det'], task='detektion')), meta=None)
    with pytest.raises(ConfigError, match=r"metainfo has branches 'det', 'seg', 'vqa'.*missing 'cls'.*extra 'seg', "
                                          r"'vqa'"):
        multitask(branches=dict(det=BRANCHES['det'], cls=dict(BRANCHES['det'])))
    with pytest.raises(ConfigError, match="branch 'det' sets backbone"):
        multitask(branches=dict(det=dict(BRANCHES['det'], backbone=dict(type='ResNet'))), meta=None)
    with pytest.raises(ConfigError, match="loss_weights names 'segm'.*Did you mean 'seg'"):
        multitask(loss_weights=dict(segm=1.0))
    with pytest.raises(ConfigError, match="branch name 'a.b'"):
        multitask(branches={'a.b': BRANCHES['det']}, meta=None)
    two = multitask(branches=dict(det=BRANCHES['det'], seg=BRANCHES['seg']),
                    meta={'tasks': {k: META['tasks'][k] for k in ('det', 'seg')}})
    with pytest.raises(DataError, match=r"branch 'vqa', which this model does not have.*Branches: 'det', 'seg'"):
        two({**full_batch(), 'task': 'vqa'})
    with pytest.raises(DataError, match="no 'task'"):
        two(full_batch())
    with pytest.raises(CheckpointError, match=r"holds branches 'det', 'seg', 'vqa'.*missing none, extra 'vqa'"):
        two.load_state_dict(multitask().state_dict())
    with pytest.raises(ConfigError, match="no branch 'vqa'.*Branches: 'det', 'seg'"):
        two.export_branch('vqa', 'unused.safetensors')


def test_classification_branch_runs_on_the_shared_backbone_and_exports(tmp_path):
    branches = dict(cls=dict(task='classification', in_indices=(3,), head=dict(type='linear')), seg=BRANCHES['seg'])
    meta = {'tasks': {'cls': {'classes': ['x', 'y', 'z']}, 'seg': META['tasks']['seg']}}
    model = multitask(branches=branches, meta=meta)
    fill_weights(model)
    batch = {**full_batch(), 'labels': torch.tensor([2, 0])}
    model.train()
    losses = model(batch, task='cls')
    assert sorted(losses) == ['cls/loss', 'cls/loss_cls', 'cls/weight', 'loss']
    model.eval()
    every = model.predict_all(batch)
    single = build_model(model.branch_config('cls'), metainfo=meta['tasks']['cls'])
    single.load_state_dict(model.branch_state_dict('cls'))
    with torch.no_grad():
        alone = single.eval()(batch)
    assert len(flat(every['cls'])) == len(flat(alone)) == 6
    for a, b in zip(flat(every['cls']), flat(alone)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match='cannot use mixup'):
        multitask(branches=dict(cls=dict(branches['cls'], mixup=dict(mixup_alpha=0.8))),
                  meta={'tasks': {'cls': meta['tasks']['cls']}})


SHARED_FPN = dict(fpn=dict(type='FPN', in_indices=(1, 2, 3), out_channels=8, num_outs=3))
SHARED_BRANCHES = dict(
    det=dict(task='detection', inputs='fpn',
             head=dict(type='FCOSHead', feat_channels=8, stacked_convs=1, strides=STRIDES, regress_ranges=RANGES,
                       score_thr=0.0)),
    seg=dict(task='segmentation', inputs='fpn',
             decode_head=dict(type='fcn', in_index=0, channels=8, num_convs=1, dropout=0.0),
             auxiliary_head=dict(type='fcn', in_index=1, channels=4, num_convs=1, dropout=0.0, loss_weight=0.4,
                                 loss_name='loss_aux')),
    vqa=BRANCHES['vqa'])


def test_a_shared_neck_runs_once_for_its_branches_and_exports_as_their_own_neck(tmp_path):
    model = multitask(SHARED_BRANCHES, necks=SHARED_FPN)
    fill_weights(model)
    sd = model.state_dict()
    assert {k.split('.')[0] for k in sd} == {'backbone', 'necks', 'branches'}
    assert not any(k.startswith(('branches.det.neck', 'branches.seg.neck')) for k in sd)
    assert model.branches['det'].out_channels == (8, 8, 8) and model.branches['det'].strides == (8, 16, 32)
    neck_calls = []
    model.necks['fpn'].neck.register_forward_hook(lambda *a: neck_calls.append(1))
    batch = full_batch()

    # the FPN learns from both branches it feeds, not from the VQA branch (which reads the backbone)
    model.train()
    for name, fed in (('det', True), ('seg', True), ('vqa', False)):
        model.zero_grad()
        model({**batch, 'task': name})['loss'].backward()
        grads = [p.grad for p in model.necks['fpn'].parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads) == fed, name

    model.eval()
    neck_calls.clear()
    every = model.predict_all(batch)
    assert neck_calls == [1]  # one FPN pass for detection and segmentation
    for name in SHARED_BRANCHES:
        path = model.export_branch(name, str(tmp_path / f'{name}.safetensors'))
        state, meta = load_weights(path)
        config = model.branch_config(name)
        single = build_model(config, metainfo=meta)
        check_state_dict(single, state, path)
        single.load_state_dict(state)
        if name != 'vqa':
            assert config['neck']['type'] == 'FPN' and config['in_indices'] == (1, 2, 3) and 'inputs' not in config
            torch.testing.assert_close(single.neck.state_dict(), model.necks['fpn'].neck.state_dict(), rtol=0, atol=0)
        with torch.no_grad():
            alone = single.eval()(batch)
        assert len(flat(every[name])) == len(flat(alone)) > 0
        for a, b in zip(flat(every[name]), flat(alone)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_shared_neck_config_errors_name_what_is_wrong():
    with pytest.raises(ConfigError, match=r"inputs='fnp'.*Did you mean 'fpn'"):
        multitask({**SHARED_BRANCHES, 'det': {**SHARED_BRANCHES['det'], 'inputs': 'fnp'}}, necks=SHARED_FPN)
    with pytest.raises(ConfigError, match=r"branch 'seg' reads the shared neck 'fpn' and sets neck"):
        multitask({**SHARED_BRANCHES, 'seg': {**SHARED_BRANCHES['seg'], 'neck': dict(type='FPN', out_channels=8)}},
                  necks=SHARED_FPN)
    model = multitask(SHARED_BRANCHES, necks=SHARED_FPN)  # the neck's weights once, the seg aux head on layer3
    assert sum(k.startswith('necks.fpn.neck.') for k in model.state_dict()) == len(model.necks['fpn'].state_dict())
    assert model.branches['seg'].auxiliary_head.convs[0][0].weight.shape[1] == 16


def test_infer_timing_parts_bookkeeping():
    """``infer_timing --parts``: every top-level part (branches and necks one level deeper) is timed once per call
    without changing outputs; the table's medians skip the 3 warm-up calls and the rest is total minus parts;
    interleaved timing returns one median per function."""
    from torch import nn

    from attnkit.tasks.multitask.infer_timing import _interleaved_ms, _parts_table, time_parts

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Linear(4, 4)
            self.branches = nn.ModuleDict({'det': nn.ModuleDict({'head': nn.Linear(4, 2)})})

        def forward(self, x):
            return self.branches['det']['head'](self.backbone(x))

    model, x = Toy(), torch.randn(3, 4)
    expected = model(x)
    acc: dict[str, list[float]] = {}
    time_parts(model, acc)
    for _ in range(5):
        assert torch.equal(model(x), expected)
    assert sorted(acc) == ['backbone', 'branches.det.head'] and all(len(v) == 5 for v in acc.values())
    # 5 calls, 2 sub-calls of part 'a' per call: medians over calls 4 and 5 (ms) = (3 + 3, 5 + 5) -> 8 ms
    table = _parts_table({'a': [1e-3] * 6 + [3e-3, 3e-3, 5e-3, 5e-3], 'b': [2e-3] * 5}, calls=5, total_ms=20.0)
    assert table == [f"    {'a':40s} {8.0:7.2f} ms", f"    {'b':40s} {2.0:7.2f} ms",
                     f"    {'(outside the parts)':40s} {10.0:7.2f} ms"]
    counts = [0, 0]
    medians = _interleaved_ms([lambda: counts.__setitem__(0, counts[0] + 1),
                               lambda: counts.__setitem__(1, counts[1] + 1)], repeats=4)
    assert counts == [7, 7] and len(medians) == 2 and all(m >= 0 for m in medians)


def test_synthetic_label_spaces_build_the_real_data_configs_without_data(tmp_path):
    """``infer_timing --synthetic-labels``: the real-data configs (no COCO / VOC / VQA v2 here) build with their
    benchmarks' label-space sizes -- detection 80 classes, segmentation 21, VQA 3,129 answers and 13,002 question
    words -- so their heads have the real sizes; a classes list in the config wins; an unknown dataset type says
    which are known. The real multi-task config's segmentation branch reads the stride-8 level its FPN starts at."""
    from attnkit.config import load_config
    from attnkit.tasks.multitask.label_spaces import synthetic_metainfo
    from attnkit.tasks.multitask.param_count import build_with_train_metainfo

    multi = build_with_train_metainfo('configs/multitask/fcos-danet-mcan_r50-cbam_coco-voc-vqav2.py', synthetic=True)
    sizes = {name: {k: len(v) for k, v in meta.items() if isinstance(v, list)}
             for name, meta in multi.metainfo['tasks'].items()}
    assert sizes == {'det': {'classes': 80}, 'seg': {'classes': 21},
                     'vqa': {'answers': 3129, 'answer_types': 3129, 'question_vocab': 13002}}
    assert multi.branches['det'].num_classes == 80 and multi.branches['seg'].num_classes == 21
    assert multi.branches['vqa'].head.classifier.out_features == 3129
    assert multi.branches['seg'].strides[0] == 8  # P3: no stride-4 level computed and left unread
    fcos = build_with_train_metainfo('configs/detection/fcos_r50-cbam_fpn_1x_coco.py', synthetic=True)
    assert fcos.num_classes == 80
    demo = load_config('configs/demo/multitask_r18_shapes.py')
    assert synthetic_metainfo(demo)['tasks']['seg'] == {'classes': demo['seg_meta']['classes']}
    with pytest.raises(ValueError, match=r"no standard label space for dataset type 'FolderSegmentation' \(known: "
                                         r"CocoDetection, VOCDetection, VOCSegmentation, VQAv2Dataset\)"):
        synthetic_metainfo({'data': {'train': {'dataset': {'type': 'FolderSegmentation'}}}})
