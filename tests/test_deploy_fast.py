"""The inference fast path (attnkit.deploy): BN folding, identity-attention removal, bf16 detection, ``--fast``
through the command line, and ``attnkit bench deploy --smoke``."""
from __future__ import annotations

import copy
import json
import os
import re

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from attnkit import build_model
from attnkit.builder import build_backbone
from attnkit.attention import insert
from attnkit.attention.base import AttentionModule
from attnkit.attention.insert import attachments
from attnkit.deploy import cpu_bf16_units, fold_batch_norms, prepare_fast
from attnkit.deploy.attention_fast import InferenceGate
from attnkit.errors import ConfigError

from _norms import randomise_norms

CLASSES = ['circle', 'square', 'triangle', 'star']


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    """max |a - b| <= tol relative to the larger of 1 and max |a| (random BN statistics grow activations to ~1e2)."""
    return a.shape == b.shape and bool((a - b).abs().max() <= tol * max(1.0, a.abs().max().item()))


def _set_gammas(model: nn.Module, names_values: dict[str, float]) -> None:
    with torch.no_grad():
        for name, value in names_values.items():
            model.get_submodule(name).gamma.fill_(value)


def _attention_names(model: nn.Module) -> set[str]:
    """Attention modules, eager or in their inference form (prepare_fast swaps se/eca/cbam/gc/coord)."""
    return {n for n, m in model.named_modules() if isinstance(m, (AttentionModule, InferenceGate))}


def _norms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d))]


# ------------------------------------------------------------------ folding units
@pytest.mark.parametrize('norm', ['bn', 'frozen'])
@pytest.mark.parametrize('bias', [False, True])
def test_conv_norm_folding_matches_the_unfolded_layers(norm, bias):
    torch.manual_seed(0)
    layer = nn.BatchNorm2d(6) if norm == 'bn' else FrozenBatchNorm2d(6)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=bias), layer, nn.ReLU()).eval()
    randomise_norms(model)
    x = torch.randn(2, 3, 9, 7)
    expected = model(x)
    report = fold_batch_norms(model)
    assert report.folded_norms == ['1'] and isinstance(model[1], nn.Identity) and model[0].bias is not None
    assert torch.allclose(model(x), expected, atol=1e-5)
    # by hand: conv(x) * s + (b - mean) * s + beta with s = weight / sqrt(var + eps)
    assert not _norms(model)


def test_norms_that_cannot_be_folded_are_kept_with_a_reason():
    batch_stats = nn.BatchNorm2d(4, track_running_stats=False)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), batch_stats, nn.BatchNorm2d(4)).eval()
    report = fold_batch_norms(model)
    assert report.folded_norms == []
    assert 'batch statistics' in report.kept_norms['1'] and 'no convolution' in report.kept_norms['2']


def test_attention_between_conv_and_norm_blocks_folding_attention_after_norm_moves():
    """An attached module after a conv keeps its BN; one after a BN stays attached to the Identity."""
    from attnkit.backbones.resnet import ResNet
    torch.manual_seed(0)
    net = ResNet(18, base_channels=8, out_indices=(3,)).eval()
    insert(net, dict(type='se', after=['layer2.0.conv2', 'layer3.1.bn2'], reduction=2), identity_init=False)
    randomise_norms(net)
    x = torch.randn(1, 3, 64, 64)
    expected = net(x)[0]
    fast, report = prepare_fast(copy.deepcopy(net), bf16=False)
    assert 'layer2.0.bn2' in report.fold.kept_norms and 'attention runs between' in report.fold.kept_norms[
        'layer2.0.bn2']
    assert 'layer3.1.bn2' in report.fold.folded_norms
    kept = {a.target_name for a in attachments(fast)}
    assert kept == {'layer2.0.conv2', 'layer3.1.bn2'}  # both still attached (bn2 is an Identity now)
    assert _close(fast(x)[0], expected)


# ------------------------------------------------------------------ task models
def _detector(attention: dict | None = None, **backbone) -> nn.Module:
    cfg = dict(type='Detector',
               backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3), attention=attention,
                             identity_init=True, **backbone),
               neck=dict(type='FPN', out_channels=16, num_outs=3),
               head=dict(type='FCOSHead', feat_channels=16, stacked_convs=2, strides=(8, 16, 32),
                         regress_ranges=((-1, 16), (16, 32), (32, 1e8)), score_thr=0.0, max_per_img=50))
    return build_model(cfg, metainfo={'classes': CLASSES})


def _det_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g)
    meta = {'ori_size': (64, 64), 'img_size': (64, 64), 'scale_factor': (1.0, 1.0)}
    return {'images': images, 'metas': [dict(meta), dict(meta)]}


def test_detector_identity_attention_folded_trained_attention_kept():
    torch.manual_seed(0)
    model = _detector(dict(type='cbam', stages=(False, True, True, True))).eval()
    randomise_norms(model)
    trained = {'backbone.layer3.0.attn': 0.3, 'backbone.layer4.1.attn': -0.2}
    _set_gammas(model, trained)
    batch = _det_batch()
    with torch.no_grad():
        expected = model(batch)
        feats = model.extract_feats(model.normalizer(batch['images']))
        raw = model.head(feats)
    fast, report = prepare_fast(copy.deepcopy(model), bf16=False)
    assert sorted(report.fold.kept_attention) == sorted(trained)
    assert len(report.fold.folded_attention) == 6 - 2 and _attention_names(fast) == set(trained)
    assert report.attention_forms == {name: 'cbam' for name in trained}
    assert not _norms(fast) and not report.fold.kept_norms  # stem, blocks and downsample all folded
    assert report.channels_last and not report.bf16 and report.bf16_reason
    got = fast(batch)
    with torch.no_grad():
        fast_raw = fast.head(fast.extract_feats(fast.normalizer(batch['images'])))
    for a, b in zip(raw, fast_raw):
        for x, y in zip(a, b):
            assert _close(x, y)
    for e, g in zip(expected, got):
        assert len(e['boxes']) == 50
        assert torch.equal(e['labels'], g['labels'])
        assert torch.allclose(e['boxes'], g['boxes'], atol=1e-3) and torch.allclose(e['scores'], g['scores'],
                                                                                    atol=1e-5)


def test_frozen_bn_backbone_and_identity_mhsa_with_stride_become_plain_layers():
    """FrozenBatchNorm2d folds like BatchNorm2d; a stride-2 MHSA with gamma 0 becomes its 2x2 average pool."""
    torch.manual_seed(0)
    model = _detector(norm='frozen_bn', self_attention=dict(type='mhsa', heads=2, stages=(False, False, True, True))
                      ).eval()
    randomise_norms(model)
    batch = _det_batch()
    with torch.no_grad():
        expected = model.extract_feats(model.normalizer(batch['images']))
    fast, report = prepare_fast(copy.deepcopy(model), bf16=False)
    assert all(isinstance(fast.backbone.get_submodule(f'layer{i}.{j}.sa'), nn.Identity) for i in (3, 4) for j in (0, 1))
    after_sa = [f'backbone.layer{i}.{j}.bn2' for i in (3, 4) for j in (0, 1)]  # sa replaced conv2: nothing to fold into
    assert report.fold.kept_norms == {n: 'no convolution directly before it' for n in after_sa}
    assert _norms(fast) == after_sa and len(report.fold.folded_norms) == len(_norms(model)) - 4
    with torch.no_grad():
        got = fast.extract_feats(fast.normalizer(batch['images']))
    for e, g in zip(expected, got):
        assert _close(e, g)
    # a bottleneck's stride-2 MHSA (BoTNet) computes the 2x2 average pool of its input while gamma is 0
    from attnkit.attention import MHSA
    from attnkit.deploy import fold_identity_attention
    seq = nn.Sequential(MHSA(8, heads=2, stride=2, identity_init=True)).eval()
    x = torch.randn(1, 8, 7, 6)
    expected = seq(x)
    assert fold_identity_attention(seq).folded_attention == ['0'] and isinstance(seq[0], nn.AvgPool2d)
    assert seq(x).shape == (1, 8, 4, 3) and torch.allclose(seq(x), expected, atol=1e-6)


def _segmentor(head: dict, **extra) -> nn.Module:
    cfg = dict(type='Segmentor', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3),
                                               output_stride=8), decode_head=head, num_classes=5, **extra)
    return build_model(cfg)


@pytest.mark.parametrize('head,trained', [
    (dict(type='danet', in_index=3, channels=16), {'decode_head.pam': 0.5}),  # pam trained, cam still identity
    (dict(type='deeplabv3plus', channels=16, c1_channels=8), {}),
])
def test_segmentor_logits_and_masks_unchanged(head, trained):
    torch.manual_seed(0)
    extra = dict(neck=dict(type='ASPP', out_channels=16, dilations=(1, 2, 3))) if head['type'] == 'deeplabv3plus' \
        else {}
    model = _segmentor(head, **extra).eval()
    randomise_norms(model)
    _set_gammas(model, trained)
    images = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    metas = [{'ori_size': (64, 48), 'img_size': (64, 48)}] * 2
    with torch.no_grad():
        logits = model.encode_decode(model.normalizer(images))
        masks = model({'images': images, 'metas': metas})
    fast, report = prepare_fast(copy.deepcopy(model), bf16=False)
    assert not _norms(fast), report.fold.kept_norms
    if head['type'] == 'danet':
        assert report.fold.folded_attention == ['decode_head.cam'] and report.fold.kept_attention == ['decode_head.pam']
    with torch.no_grad():
        fast_logits = fast.encode_decode(fast.normalizer(images))
    assert _close(fast_logits, logits)
    for a, b in zip(masks, fast({'images': images, 'metas': metas})):
        assert torch.equal(a['sem_seg'], b['sem_seg'])


def test_vqa_answers_and_logits_unchanged():
    torch.manual_seed(0)
    meta = {'answers': ['yes', 'no', '2', '3'], 'tokenizer': {'type': 'word', 'max_len': 8},
            'question_vocab': ['<pad>', '<unk>', 'how', 'many', 'red']}
    cfg = dict(type='VQAModel', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(3,),
                                              attention=dict(type='gc'), identity_init=True),
               question_encoder=dict(type='gru', embed_dim=8, hidden_dim=16),
               head=dict(type='mcan', dim=32, heads=4, ffn=64, depth=1, flat_hidden=32, out_dim=64, dropout=0.0))
    model = build_model(cfg, metainfo=meta).eval()
    randomise_norms(model)
    _set_gammas(model, {'backbone.layer4.0.attn': 0.7})
    batch = {'images': torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8,
                                     generator=torch.Generator().manual_seed(3)),
             'input_ids': torch.tensor([[2, 3, 4], [2, 3, 0], [4, 2, 3]]),
             'attention_mask': torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]]), 'question_ids': [1, 2, 3]}
    with torch.no_grad():
        logits = model.forward_logits(batch)['logits']
        answers = model(batch)
    fast, report = prepare_fast(copy.deepcopy(model), bf16=False)
    assert report.fold.kept_attention == ['backbone.layer4.0.attn'] and len(report.fold.folded_attention) == 5
    with torch.no_grad():
        assert _close(fast.forward_logits(batch)['logits'], logits)
    for a, b in zip(answers, fast(batch)):
        assert a['answer'] == b['answer'] and torch.equal(a['answer_ids'], b['answer_ids'])


def test_bf16_detection_and_forced_bf16_runs_under_autocast(tmp_path):
    with_units = tmp_path / 'amx'
    with_units.write_text('processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n')
    without = tmp_path / 'avx2'
    without.write_text('processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n')
    native, why = cpu_bf16_units(str(with_units))
    assert native and 'avx512_bf16' in why and 'amx_bf16' in why
    native, why = cpu_bf16_units(str(without))
    assert not native and 'lacks' in why
    torch.manual_seed(0)
    model = _segmentor(dict(type='fcn', in_index=3, channels=16, num_convs=1)).eval()
    dtypes = []
    model.decode_head.conv_seg.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    metas = [{'ori_size': (32, 32), 'img_size': (32, 32)}]
    with torch.no_grad():
        fp32 = model.encode_decode(model.normalizer(images))
    fast, report = prepare_fast(model, bf16=True)
    # the reason says the setting overrode the detection only where this CPU has no bf16 units
    assert report.bf16 and ('bf16=True requested' in report.bf16_reason) == (not cpu_bf16_units()[0])
    fast({'images': images, 'metas': metas})
    assert dtypes == [torch.float32, torch.bfloat16]
    with pytest.raises(ConfigError, match='prepared already'):
        prepare_fast(fast)
    with pytest.raises(ConfigError, match="bf16 must be True, False or 'auto'"):
        prepare_fast(_segmentor(dict(type='fcn', in_index=3, channels=16)), bf16='yes')
    assert fp32.dtype == torch.float32


# ------------------------------------------------------------------ command line
CONFIG = """
task = 'segmentation'
metainfo = dict(classes=['background', 'circle', 'square', 'triangle', 'star'])
model = dict(type='Segmentor',
             backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3), output_stride=8,
                           attention=dict(type='cbam'), identity_init=True),
             decode_head=dict(type='danet', in_index=3, channels=16))
voc = dict(type='VOCSegmentation', root={root!r}, pipeline=[], metainfo=metainfo)
data = dict(val=dict(dataset=dict(voc, split_file='ImageSets/Segmentation/val.txt'), batch_size=3, num_workers=0))
evaluator = dict(type='IoUMetric')
runtime = dict(tensorboard=False)
"""


@pytest.fixture(scope='module')
def seg_files(tmp_path_factory, demo_data):
    """A DANet config on the demo VOC split and a checkpoint with random BN statistics and some trained gammas."""
    from attnkit import load_config
    from attnkit.engine.checkpoint import save_atomic
    tmp = tmp_path_factory.mktemp('fast_cli')
    cfg_path = tmp / 'seg.py'
    cfg_path.write_text(CONFIG.format(root=demo_data['voc_root']))
    cfg = load_config(str(cfg_path))
    torch.manual_seed(0)
    model = build_model(cfg.model, metainfo=dict(cfg.metainfo))
    randomise_norms(model)
    _set_gammas(model, {'backbone.layer3.1.attn': 0.4, 'decode_head.pam': 0.8})
    _balance_classes(model, demo_data['img_dir'])
    ckpt = tmp / 'model.pth'
    save_atomic({'model': model.state_dict(), 'meta': model.metainfo}, str(ckpt))
    return str(cfg_path), str(ckpt), tmp


def _balance_classes(model: nn.Module, img_dir: str) -> None:
    """Shift the classifier's biases by each class's median logit on demo images, so that every class wins
    somewhere (a random network otherwise predicts one class everywhere and every metric is 0)."""
    import numpy as np
    from PIL import Image
    names = sorted(os.listdir(img_dir))[:6]
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(os.path.join(img_dir, n)).convert('RGB')).copy())
                          .permute(2, 0, 1) for n in names])
    seen = []
    hook = model.decode_head.conv_seg.register_forward_hook(lambda m, a, out: seen.append(out))
    model.eval()
    with torch.no_grad():
        model.encode_decode(model.normalizer(images))
        hook.remove()
        model.decode_head.conv_seg.bias -= seen[0].transpose(0, 1).flatten(1).median(dim=1).values



def test_test_command_fast_gives_the_eager_metrics(seg_files, run_cli):
    cfg, ckpt, tmp = seg_files
    eager = run_cli('test', cfg, ckpt, '--device', 'cpu', '--out', str(tmp / 'eager.json'))
    fast = run_cli('test', cfg, ckpt, '--device', 'cpu', '--fast', '--out', str(tmp / 'fast.json'))
    assert eager[0] == 0 and fast[0] == 0, eager[2] + fast[2]
    assert 'fast path on cpu' in fast[2] and 'identity attention modules removed' in fast[2]
    assert '1 through the native CPU kernel' in fast[2]  # the trained CBAM (layer3.1) in the subprocess
    assert 'mIoU' in eager[1] and 'mIoU' in fast[1]
    m_eager, m_fast = (json.loads((tmp / f'{m}.json').read_text()) for m in ('eager', 'fast'))
    assert m_eager['mIoU'] > 0.05 and m_eager['aAcc'] > 0.05  # a non-trivial prediction: every pixel counts
    if 'bf16 off' in fast[2]:  # fp32 fast path: the same metrics to 3 digits
        assert {k: round(v, 3) for k, v in m_eager.items()} == {k: round(v, 3) for k, v in m_fast.items()}
    else:  # a CPU with bf16 units: the fast path autocasts to bf16; the bound is 0.005 per metric
        assert 'bf16 on' in fast[2] and cpu_bf16_units()[0]
        assert m_eager.keys() == m_fast.keys()
        assert all(abs(m_eager[k] - m_fast[k]) <= 0.005 for k in m_eager), (m_eager, m_fast)


def test_fast_attention_option_picks_the_attention_form(seg_files, run_cli):
    """``--fast-attention eager`` keeps the trained modules, the default swaps in the inference forms; same metrics."""
    cfg, ckpt, tmp = seg_files
    runs = {mode: run_cli('test', cfg, ckpt, '--device', 'cpu', '--fast', '--fast-dtype', 'fp32', '--fast-attention',
                          mode, '--out', str(tmp / f'attn_{mode}.json')) for mode in ('fast', 'eager')}
    assert all(r[0] == 0 for r in runs.values()), runs
    assert re.search(r'[1-9]\d* attention modules in inference form', runs['fast'][2]), runs['fast'][2]
    assert 'attention modules eager (no inference forms)' in runs['eager'][2], runs['eager'][2]
    metrics = [json.loads((tmp / f'attn_{m}.json').read_text()) for m in ('fast', 'eager')]
    assert {k: round(v, 4) for k, v in metrics[0].items()} == {k: round(v, 4) for k, v in metrics[1].items()}
    code, _, err = run_cli('test', cfg, ckpt, '--fast', '--fast-attention', 'fused')
    assert code == 2 and "invalid choice: 'fused'" in err


def test_infer_command_fast_writes_the_same_masks(seg_files, demo_data):
    import numpy as np
    from PIL import Image

    from attnkit import cli
    cfg, ckpt, tmp = seg_files
    image = os.path.join(demo_data['img_dir'], '000013.jpg')
    out = {}
    for mode in ('eager', 'fast'):
        argv = ['infer', cfg, ckpt, image, '--out', str(tmp / mode), '--device', 'cpu']
        assert cli.main(argv + (['--fast', '--fast-dtype', 'fp32'] if mode == 'fast' else [])) == 0
        masks = [f for f in os.listdir(tmp / mode) if f.endswith('_mask.png')]
        assert len(masks) == 1
        out[mode] = np.asarray(Image.open(tmp / mode / masks[0]))
    assert np.array_equal(out['eager'], out['fast'])


# ------------------------------------------------------------------ benchmark
def test_bench_deploy_smoke_writes_the_table(tmp_path, capsys):
    from attnkit.benchmarks import deploy
    out = tmp_path / 'deploy.md'
    out_json = tmp_path / 'deploy.json'
    assert deploy.main(['--smoke', '--only', 'fcn_512', '--only', 'attention', '--out', str(out),
                        '--json', str(out_json)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out.split('[bench deploy] attention ...\n', 1)[1]
    rows = [line for line in text.splitlines() if line.startswith('| FCN')]
    assert len(rows) == 4, text  # torchvision, attnkit eager, fast, ONNX Runtime
    assert '| torchvision lraspp_mobilenet_v3_large eager |' in rows[0] and '| 1.00 |' in rows[0]
    assert '| ONNX Runtime |' in rows[3]
    assert '| attnkit fast |' in rows[2]
    # fp32 (a CPU without bf16 units): the same pixels; bf16 autocast (the fast path's choice on a CPU with
    # avx512_bf16/AMX) rounds near-ties of this random network differently: most pixels still agree
    fcn_notes = next(line for line in text.splitlines() if line.startswith('- fcn_512: fast path on cpu'))
    agree = float(rows[2].split(' % pixels equal')[0].rsplit('| ', 1)[1])
    assert ('bf16 on' in fcn_notes) == cpu_bf16_units()[0]
    assert agree == 100.0 if 'bf16 off' in fcn_notes else agree >= 90.0, (fcn_notes, rows[2])
    assert 'Machine:' in text and 'threads' in text and 'Load before' in text
    for kind in ('plain', 'cbam', 'se', 'gc'):
        assert f'| {kind} | fast |' in text
    for kind in ('cbam', 'se', 'gc'):  # the default (inference forms) and the modules as trained
        assert f'| {kind} | fast, eager attention |' in text
        assert f'{kind}: fast path on cpu:' in text and f'attention modules in inference form ({kind} 6)' in text

    # machine efficiency: FLOPs counted by torch's counter equal a count by hand (conv hooks), rates follow
    report = json.loads(out_json.read_text())
    peak = report['peak']
    assert peak['n'] in (1024, 2048, 4096) and peak['gflops'] > 0 and peak['seconds'] < 5
    assert f"Measured fp32 peak: {peak['gflops']:.1f} GFLOP/s (torch.mm {peak['n']}×{peak['n']} fp32" in text
    (case,) = report['cases']
    model, batch = deploy._attnkit_model_and_batch(deploy.cases(tiny=True)['fcn_512'])
    by_hand = []

    def conv_flops(m, args, out):
        by_hand.append(2 * out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_flops)
    with torch.no_grad():
        model(batch)
    assert case['flops']['attnkit'] == sum(by_hand) > 0
    for variant, row in case['rows'].items():
        assert row['gflops_per_s'] == pytest.approx(row['flops'] / row['median_s'] / 1e9)
        assert row['pct_of_peak'] == pytest.approx(100 * row['gflops_per_s'] / peak['gflops'])
        line = next(r for r in rows if f'| {variant} |' in r)
        assert line.endswith(f"| {row['flops'] / 1e9:.3g} | {row['gflops_per_s']:.1f} | {row['pct_of_peak']:.0f} |")
    assert case['rows']['attnkit fast']['flops'] == case['flops']['attnkit']
    assert set(report['attention']['rows']) == {f'{k} {v}' for k in ('cbam', 'se', 'gc')
                                                for v in ('fast', 'fast, tails unfused', 'fast, eager attention')} | \
        {'plain fast'} | {f'{k} fast, stock ops (no native kernel)' for k in ('cbam', 'se', 'gc')}
    for kind in ('cbam', 'se', 'gc'):  # these forms run through the native kernels
        assert '6 through the native CPU kernel' in next(line for line in text.splitlines()
                                                         if line.startswith(f'- {kind}: fast path'))
    # the smoke backbone's blocks (after_conv3, the default) fuse cbam and se with their additions; gc ('add') not
    for kind, fused in (('cbam', True), ('se', True), ('gc', False)):
        assert ('6 fused with the residual addition' in next(
            line for line in text.splitlines() if line.startswith(f'- {kind}: fast path'))) == fused
        row = report['attention']['rows'][f'{kind} fast']
        assert row['attention_s'] is not None and row['attention_s'] < row['median_s']
    assert deploy._compare('detection', [{'boxes': torch.ones(2, 4), 'labels': torch.tensor([1, 2])}],
                           [{'boxes': torch.ones(2, 4) + 1e-3, 'labels': torch.tensor([1, 2])}]) == \
        '2 boxes, labels equal, max |box diff| 1.0e-03 px'
    with pytest.raises(ConfigError, match="'fcos_512'"):
        deploy.main(['--only', 'fcos512'])


def test_attention_table_times_compiled_forms_inside_their_calls():
    """--compile-attention-only: the cbam forms compiled alone (no whole-backbone compile) get a row with the
    time inside them (a timer round the compiled call: forward hooks would break its graph); that time is part
    of the whole call and of the same order as the eager forms' (not the 30x of a broken graph)."""
    from attnkit.benchmarks import deploy
    table = deploy.attention_overhead(iters=3, warmup=1, compile='attention', tiny=True, kinds=('cbam',))
    rows = table['rows']
    assert set(rows) == {'plain fast', 'cbam fast', 'cbam fast, stock ops (no native kernel)',
                         'cbam fast, tails unfused', 'cbam fast, eager attention', 'cbam fast, compiled attention'}
    compiled = rows['cbam fast, compiled attention']
    assert 0 < compiled['attention_s'] < compiled['median_s']
    assert compiled['attention_s'] < 5 * rows['cbam fast, eager attention']['attention_s']
    assert any(note.startswith('cbam fast, compiled attention: compile (first call)') for note in table['notes'])


def test_compile_option_compiles_the_model_and_keeps_the_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1)).eval()
    randomise_norms(model)
    x = torch.randn(1, 3, 16, 16)
    expected = model(x)
    fast, report = prepare_fast(model, bf16=False, compile=True)
    assert report.compiled == ['(whole model)'] and 'compiled: (whole model)' in report.summary()
    got = fast(x)
    assert not got.requires_grad and _close(got, expected)


class _Mixed(nn.Module):
    """conv -> linear, and a MultiheadAttention (whose packed input projection is no module) on the features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.fc(self.conv(x).flatten(2).transpose(1, 2))
        return self.mha(tokens, tokens, tokens, need_weights=False)[0]


def test_bf16_weights_are_stored_once_and_give_autocasts_bits():
    """cast_weights_bf16: convolution and linear weights (and biases) stored in bf16, MultiheadAttention's left
    as they are; under bf16 autocast the outputs are the same bits as with the fp32 weights that autocast casts
    at every call."""
    from attnkit.deploy import cast_weights_bf16
    torch.manual_seed(0)
    model = _Mixed().eval()
    cast = copy.deepcopy(model)
    assert cast_weights_bf16(cast) == 2
    assert cast.conv.weight.dtype == cast.conv.bias.dtype == cast.fc.weight.dtype == torch.bfloat16
    assert cast.mha.in_proj_weight.dtype == cast.mha.out_proj.weight.dtype == torch.float32
    x = torch.randn(2, 3, 6, 5)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.equal(model(x), cast(x))


def test_fast_path_runs_predict_all_under_its_autocast_with_bf16_weights():
    """A multi-task model on the bf16 fast path: its weights stored in bf16 (reported), and ``predict_all`` -- a
    method callers use besides ``forward`` -- runs under the same no_grad + autocast, so every branch predicts
    exactly what ``model(batch, task=name)`` predicts through the fast forward."""
    from test_encoder_refactor import fill_weights
    from test_multitask_model import BRANCHES, flat, full_batch, multitask
    model = multitask()
    fill_weights(model)
    fast, report = prepare_fast(model.eval(), bf16=True)
    assert report.bf16 and report.bf16_weights > 0 and f'{report.bf16_weights} layers with bf16 weights' in \
        report.summary()
    assert getattr(fast.predict_all, "_attnkit_fast", False)
    batch = full_batch()
    every = fast.predict_all(batch)
    assert sorted(every) == sorted(BRANCHES)
    for name in BRANCHES:
        routed = fast(batch, task=name)
        assert len(flat(every[name])) == len(flat(routed)) > 0
        for a, b in zip(flat(every[name]), flat(routed)):
            assert torch.equal(a, b), name
    # fp32 fast path: nothing cast
    _, report32 = prepare_fast(multitask().eval(), bf16=False)
    assert report32.bf16_weights == 0 and 'bf16 weights' not in report32.summary()


@pytest.mark.parametrize('name, message', [
    ('cuda', 'CUDA is not available on this machine' if not torch.cuda.is_available() else None),
    ('gpu0', "--device 'gpu0' is not a device name"),
    ('meta', 'only cpu and cuda are benchmarked'),
])
def test_bench_deploy_device_option_refuses_what_it_cannot_run(name, message):
    """``attnkit bench deploy --device``: one line naming the device and what is wrong, before any model is built."""
    from attnkit.benchmarks import deploy
    if message is None:  # a machine with CUDA: the device is accepted
        assert deploy._bench_device(name).type == 'cuda'
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        deploy.main(['--smoke', '--only', 'attention', '--device', name])
    assert deploy._bench_device('cpu') == torch.device('cpu')


def test_a_deep_copy_of_a_prepared_model_runs_the_copy():
    """The fast path's entry points hold the model, not a bound method: a deep copy of a prepared model (for EMA,
    for another thread, for a benchmark's instrumented twin) runs its own weights and hooks under the same no_grad
    and autocast, and leaves the original alone; a second prepare_fast of either is refused."""
    torch.manual_seed(0)
    model = build_backbone(dict(type='ResNet', depth=18, base_channels=8, attention=dict(type='se'))).eval()
    x = torch.randn(1, 3, 64, 64)
    fast, _ = prepare_fast(model, bf16=False)
    expected = fast(x)[-1]
    twin = copy.deepcopy(fast)
    seen = []
    twin.layer4.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.no_grad():
        twin.layer4[-1].conv2.weight.mul_(-1.0)
    out = twin(x)[-1]
    assert seen == [out.shape] and not torch.allclose(out, expected) and not out.requires_grad
    assert torch.equal(fast(x)[-1], expected) and len(seen) == 1
    for prepared in (fast, twin):
        with pytest.raises(ConfigError, match='prepared already'):
            prepare_fast(prepared)
