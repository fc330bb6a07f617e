"""TimmBackbone: timm features_only models as attnkit backbones, attention by timm's module names, pretrained
weights from a file or the local Hugging Face cache (never downloaded), and the configs that use it.

Every model is tiny and built from scratch (no download)."""
import os

import pytest
import timm
import torch
from torch import nn

from attnkit.attention import attachments, insert
from attnkit.backbones import TimmBackbone
from attnkit.builder import build_backbone, build_model
from attnkit.config import load_config
from attnkit.errors import CheckpointError, ConfigError

CONVNEXT = dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1))
RESNET = dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64))
# family -> (model name, tiny widths, out_indices at strides 8/16/32, attention after timm module names)
FAMILIES = {
    'seresnet': ('seresnet18', RESNET, (2, 3, 4), ['layer2.*.bn2', 'layer3.*', 'layer4']),
    'convnext': ('convnext_tiny', CONVNEXT, (1, 2, 3), ['stages.1', 'stages.2', 'stages.3']),
    'efficientnet': ('test_efficientnet', {}, (2, 3, 4), ['blocks.2', 'blocks.3.*']),
    'regnet': ('regnetx_002', dict(depth=6, wa=8.0, w0=8, wm=2.0, group_size=8), (2, 3, 4), ['s2', 's3.*']),
}


def timm_features(name, kwargs, out_indices):
    return timm.create_model(name, features_only=True, out_indices=out_indices, pretrained=False, **kwargs)


def randomise_norms(model: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode outputs depend on every buffer being copied."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize('family', sorted(FAMILIES))
@pytest.mark.parametrize('with_attention', [False, True])
def test_features_equal_timm_features_model(family, with_attention):
    name, kwargs, out_indices, after = FAMILIES[family]
    torch.manual_seed(0)
    ref = timm_features(name, kwargs, out_indices).eval()
    randomise_norms(ref)
    attention = dict(type='cbam', after=after, reduction=4) if with_attention else None
    ours = TimmBackbone(name, out_indices=out_indices, attention=attention, identity_init=True, **kwargs).eval()
    result = ours.model.load_state_dict(ref.state_dict(), strict=False)
    assert result.unexpected_keys == []
    inserted = {k for k in ours.model.state_dict() if k not in ref.state_dict()}
    assert set(result.missing_keys) == inserted and bool(inserted) == with_attention
    if with_attention:
        assert len(ours.places) >= 2 and len(attachments(ours)) == len(ours.places)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert isinstance(got, tuple) and len(got) == len(out_indices)
    for e, g, c, s in zip(expected, got, ours.out_channels, ours.strides):
        assert g.shape == (2, c, 64 // s, 64 // s)
        assert (e - g).abs().max().item() <= 1e-6
    assert ours.strides == (8, 16, 32)


def test_insert_on_a_timm_model_is_identity_at_init_and_trains():
    torch.manual_seed(0)
    model = timm.create_model('resnet18', pretrained=False, **RESNET).eval()
    randomise_norms(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    places = insert(model, dict(type='cbam', after=['layer2.*.bn2', 'layer4'], reduction=4), identity_init=True)
    assert [p.target for p in places] == ['layer2.0.bn2', 'layer4']
    assert [p.channels for p in places] == [16, 64]
    with torch.no_grad():
        after = model(x)
    assert (after - before).abs().max().item() == 0.0
    model.train()
    model(x).square().mean().backward()
    for att in attachments(model):
        grads = [p.grad for p in att.attention.parameters()]
        assert all(g is not None for g in grads)
        assert att.attention.gamma.grad.abs().sum() > 0  # the residual gate learns from step 0


def test_pretrained_file_formats_and_report(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model('convnext_tiny', pretrained=False, **CONVNEXT).eval()
    randomise_norms(full)
    torch.save(full.state_dict(), tmp_path / 'full.pth')
    from safetensors.torch import save_file
    save_file(full.state_dict(), str(tmp_path / 'full.safetensors'))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # a reference computed another way: timm's own forward_intermediates on the full model
        expected = full.forward_intermediates(x, indices=(1, 2, 3), intermediates_only=True)
    for file in ('full.pth', 'full.safetensors'):
        ours = TimmBackbone('convnext_tiny', out_indices=(1, 2, 3), pretrained=str(tmp_path / file), **CONVNEXT)
        report = ours.pretrained_report
        assert report.missing == [] and report.file == str(tmp_path / file)
        assert sorted(report.unexpected) == sorted(k for k in full.state_dict() if k.startswith('head.'))
        with torch.no_grad():
            got = ours.eval()(x)
        assert all((e - g).abs().max().item() <= 1e-6 for e, g in zip(expected, got))
    # a TimmBackbone's own state dict (model.* keys) and a features model's load too; attention is added after the
    # load with identity_init (default when pretrained is given), so outputs are still the pretrained network's
    torch.save(ours.state_dict(), tmp_path / 'backbone.pth')
    torch.save(timm_features('convnext_tiny', CONVNEXT, (1, 2, 3)).state_dict(), tmp_path / 'features.pth')
    with_attn = TimmBackbone('convnext_tiny', out_indices=(1, 2, 3), pretrained=str(tmp_path / 'backbone.pth'),
                             attention=dict(type='se', after=['stages.*']), **CONVNEXT).eval()
    assert with_attn.pretrained_report.unexpected == [] and len(with_attn.places) == 4
    with torch.no_grad():
        got = with_attn(x)
    assert all((e - g).abs().max().item() <= 1e-6 for e, g in zip(expected, got))
    feats = TimmBackbone('convnext_tiny', out_indices=(1, 2, 3), pretrained=str(tmp_path / 'features.pth'),
                         **CONVNEXT)
    assert feats.pretrained_report.missing == [] and feats.pretrained_report.unexpected == []


def hub_layout(cache, repo: str):
    """The file the CheckpointError asks for, and the refs file next to it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    return folder / 'snapshots' / 'main' / 'model.safetensors', folder / 'refs' / 'main'


def test_timm_uri_reads_only_the_local_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))
    repo = timm.models.get_pretrained_cfg('convnext_tiny').hf_hub_id
    weights, ref = hub_layout(tmp_path / 'hub', repo)
    with pytest.raises(CheckpointError) as err:
        TimmBackbone('convnext_tiny', pretrained='timm://convnext_tiny', **CONVNEXT)
    message = str(err.value)
    assert str(weights) in message and str(ref) in message and f'https://huggingface.co/{repo}/' in message
    assert '\n' not in message
    torch.manual_seed(0)
    full = timm.create_model('convnext_tiny', pretrained=False, **CONVNEXT)
    weights.parent.mkdir(parents=True)
    ref.parent.mkdir(parents=True)
    from safetensors.torch import save_file
    save_file(full.state_dict(), str(weights))
    ref.write_text('main')
    ours = TimmBackbone('convnext_tiny', pretrained='timm://convnext_tiny', **CONVNEXT)
    assert ours.pretrained_report.file == str(weights)
    assert torch.equal(ours.model.stem_0.weight, full.stem[0].weight)
    assert torch.equal(ours.model.stages_3.blocks[0].mlp.fc2.weight, full.stages[3].blocks[0].mlp.fc2.weight)
    with pytest.raises(CheckpointError, match="no Hugging Face weights named 'convnext_tiny.nope'"):
        TimmBackbone('convnext_tiny', pretrained='timm://convnext_tiny.nope', **CONVNEXT)


def test_bad_inputs_give_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"timm has no model 'convnext_tinny'\. Closest timm names: convnext_tiny"):
        TimmBackbone('convnext_tinny')
    with pytest.raises(ConfigError, match=r'out_indices .* in 0\.\.3 \(its 4 feature levels\), got \(2, 4\)'):
        TimmBackbone('convnext_tiny', out_indices=(2, 4), **CONVNEXT)
    with pytest.raises(ConfigError, match=r"does not take these arguments .*unexpected keyword argument 'widths'"):
        TimmBackbone('convnext_tiny', widths=(1, 2), **CONVNEXT)
    with pytest.raises(ConfigError, match=r"pretrained must be a file path or 'timm://<model>' \(e\.g\. 'timm://resnet18'\)"):
        TimmBackbone('resnet18', pretrained=True, **RESNET)
    with pytest.raises(ConfigError, match=r"attention must be a dict like"):
        TimmBackbone('resnet18', attention='cbam', **RESNET)
    with pytest.raises(ConfigError, match=r"frozen_stages .* must be in -1\.\.4"):
        TimmBackbone('convnext_tiny', frozen_stages=5, **CONVNEXT)
    with pytest.raises(ConfigError, match=r"'stages\.9' matches no module .* Closest module names: 'stages\.[0-3]'"):
        TimmBackbone('convnext_tiny', attention=dict(type='cbam', after=['stages.9']), **CONVNEXT)
    # a checkpoint of another architecture: wider ConvNeXt (first mismatched key, both shapes) and a ResNet
    torch.save(timm.create_model('convnext_tiny', dims=(16, 32, 64, 128), depths=(1, 1, 1, 1)).state_dict(),
               tmp_path / 'wide.pth')
    with pytest.raises(CheckpointError, match=r"'stem_0\.weight' has shape \(16, 3, 4, 4\) in the file and "
                                              r"\(8, 3, 4, 4\) in the model"):
        TimmBackbone('convnext_tiny', pretrained=str(tmp_path / 'wide.pth'), **CONVNEXT)
    torch.save(timm.create_model('resnet18', **RESNET).state_dict(), tmp_path / 'resnet.pth')
    with pytest.raises(CheckpointError, match=r'share no tensor name with timm .convnext_tiny.'):
        TimmBackbone('convnext_tiny', pretrained=str(tmp_path / 'resnet.pth'), **CONVNEXT)
    torch.save(timm.create_model('resnet18', **RESNET).state_dict(), tmp_path / 'r18.pth')
    with pytest.raises(CheckpointError, match=r"lack \d+ of timm 'resnet34'.* first 'layer1\.1\."):
        TimmBackbone('resnet34', out_indices=(1, 2), pretrained=str(tmp_path / 'r18.pth'), layers=(2, 2, 2, 2),
                     channels=RESNET['channels'])
    with pytest.raises(CheckpointError, match='does not exist'):
        TimmBackbone('resnet18', pretrained=str(tmp_path / 'nothing.pth'), **RESNET)


def test_frozen_stages_and_norm_eval():
    model = TimmBackbone('resnet18', out_indices=(2, 3, 4), frozen_stages=2, norm_eval=False,
                         attention=dict(type='se', after=['layer2.*.bn2', 'layer3.*.bn2']), **RESNET)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    stems = {n for n in frozen if n.startswith(('model.conv1.', 'model.bn1.'))}
    assert stems == {'model.conv1.weight', 'model.bn1.weight', 'model.bn1.bias'}
    layers = {n.split('.')[1] for n in frozen}
    assert layers == {'conv1', 'bn1', 'layer1', 'layer2'}  # attention attached in layer2 is frozen with it
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith('model.layer3'))
    assert any('attn' in n for n in frozen) and any('attn' in n and p.requires_grad
                                                    for n, p in model.named_parameters())
    model.train()
    assert not model.model.bn1.training and not model.model.layer2[0].bn1.training
    assert model.model.layer3[0].bn1.training
    model(torch.randn(2, 3, 64, 64))[-1].mean().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert model.model.layer3[0].conv1.weight.grad is not None
    norm_eval = TimmBackbone('convnext_tiny', out_indices=(1, 2, 3), norm_eval=True, **CONVNEXT).train()
    assert norm_eval.model.stages_1.blocks[0].training  # no batch norm in ConvNeXt: nothing to keep in eval
    bn = TimmBackbone('resnet18', out_indices=(1,), norm_eval=True, **RESNET).train()
    assert bn.training and not any(m.training for m in bn.modules() if isinstance(m, nn.BatchNorm2d))


def test_registered_and_built_by_name():
    model = build_backbone(dict(type='TimmBackbone', model_name='resnet18', out_indices=(1, 2), **RESNET))
    assert isinstance(model, TimmBackbone) and model.out_channels == (8, 16) and model.strides == (4, 8)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """An HF cache with tiny weights under the names timm://convnext_tiny and timm://resnet50d refer to."""
    from safetensors.torch import save_file
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))
    for name, kwargs in (('convnext_tiny', CONVNEXT), ('resnet50d', RESNET)):
        weights, ref = hub_layout(tmp_path / 'hub', timm.models.get_pretrained_cfg(name).hf_hub_id)
        weights.parent.mkdir(parents=True)
        ref.parent.mkdir(parents=True)
        ref.write_text('main')
        save_file(timm.create_model(name, **kwargs).state_dict(), str(weights))
    return tmp_path


def demo_detection_options(paths, work_dir):
    ds = {'ann_file': paths['coco_train_json'], 'img_dir': paths['img_dir']}
    return {'data.train.dataset.ann_file': paths['coco_train_json'], 'data.train.dataset.img_dir': ds['img_dir'],
            'data.val.dataset.ann_file': paths['coco_val_json'], 'data.val.dataset.img_dir': ds['img_dir'],
            'data.train.batch_size': 4, 'data.val.batch_size': 6, 'data.train.num_workers': 0,
            'data.val.num_workers': 0, 'runtime.log_interval': 1, 'runtime.tensorboard': False,
            'train_cfg.eval_interval': 2, 'train_cfg.checkpoint_interval': 2, 'work_dir': str(work_dir)}


def test_demo_config_trains_with_attnkit_train(demo_data, tmp_path, capsys):
    from attnkit import cli
    paths = demo_data
    config = 'configs/demo/fcos_timm-r18_fpn_shapes.py'
    cfg = load_config(config)
    model = build_model(cfg.model, metainfo={'classes': ['circle', 'square', 'triangle', 'star']})
    assert model.backbone.strides == (8, 16, 32) and model.backbone.out_channels == (64, 128, 256)
    assert [p.target for p in model.backbone.places] == [f'layer{i}.{j}.bn2' for i in (2, 3, 4) for j in (0, 1)]
    options = demo_detection_options(paths, tmp_path / 'work')
    options.pop('work_dir')
    options.update({'schedule.by_epoch': False, 'schedule.max_epochs': None, 'schedule.max_iters': 2,
                    'schedule.warmup_iters': 0, 'model.backbone.channels': (8, 16, 32, 64),
                    'model.neck.out_channels': 16, 'model.head.feat_channels': 16, 'model.head.stacked_convs': 1})
    argv = ['train', config, '--work-dir', str(tmp_path / 'work'), '--cfg-options']
    argv += [f'{k}={v}'.replace(' ', '') for k, v in options.items()]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert 'final: AP=' in capsys.readouterr().out
    assert os.path.isfile(tmp_path / 'work' / 'latest.pth')


def test_fcos_convnext_config_builds_and_trains_on_demo_data(demo_data, fake_hub, tmp_path):
    from attnkit.engine import Trainer
    paths = demo_data
    cfg = load_config('configs/detection/fcos_convnext-t-cbam_fpn_1x_coco.py', {
        **demo_detection_options(paths, tmp_path / 'det'), 'model.backbone.dims': CONVNEXT['dims'],
        'model.backbone.depths': CONVNEXT['depths'], 'model.neck.out_channels': 16, 'model.head.feat_channels': 16,
        'model.head.stacked_convs': 1, 'schedule.max_iters': 2, 'schedule.by_epoch': False,
        'schedule.max_epochs': None, 'schedule.warmup_iters': 0})
    cfg.data.train.dataset.pipeline = []
    cfg.data.val.dataset.pipeline = []
    model = build_model(cfg.model, metainfo={'classes': ['a', 'b', 'c', 'd']})
    backbone = model.backbone
    assert backbone.pretrained_report.missing == [] and len(backbone.places) == 4
    assert model.neck is not None and backbone.strides == (8, 16, 32)
    weights = hub_layout(fake_hub / 'hub', timm.models.get_pretrained_cfg('convnext_tiny').hf_hub_id)[0]
    assert backbone.pretrained_report.file == str(weights)
    trainer = Trainer(cfg)
    metrics = trainer.train()
    assert 'AP' in metrics and trainer.iter == 2


def test_deeplabv3plus_timm_config_builds_and_trains_on_demo_data(demo_data, fake_hub, tmp_path):
    from attnkit.engine import Trainer
    paths = demo_data
    voc = paths['voc_root']
    seg = load_config('configs/segmentation/deeplabv3plus_timm-resnet50d_voc12aug.py', {
        'data.train.dataset.root': voc, 'data.val.dataset.root': voc,
        'data.train.dataset.split_file': 'ImageSets/Segmentation/train.txt',
        'data.val.dataset.split_file': 'ImageSets/Segmentation/val.txt', 'data.train.dataset.ann_dir': 'SegmentationClass',
        'data.train.batch_size': 2, 'data.val.batch_size': 2, 'data.train.num_workers': 0, 'data.val.num_workers': 0,
        'model.backbone.layers': RESNET['layers'], 'model.backbone.channels': RESNET['channels'],
        'model.neck.out_channels': 16, 'model.decode_head.channels': 16, 'model.decode_head.c1_channels': 8,
        'model.auxiliary_head.channels': 8, 'schedule.max_iters': 2, 'schedule.warmup_iters': 0,
        'train_cfg.eval_interval': 2, 'train_cfg.checkpoint_interval': 2, 'runtime.tensorboard': False,
        'work_dir': str(tmp_path / 'seg')})
    seg.data.train.dataset.pipeline = [dict(type='RandomCropCatMax', height=64, width=64)]
    seg.data.val.dataset.pipeline = []
    segmentor = build_model(seg.model, metainfo={'classes': ['background', 'a', 'b', 'c', 'd']})
    assert segmentor.backbone.strides == (4, 8, 8, 8)
    assert segmentor.backbone.out_channels == tuple(c * 4 for c in RESNET['channels'])
    assert segmentor.backbone.pretrained_report.missing == []
    weights = hub_layout(fake_hub / 'hub', timm.models.get_pretrained_cfg('resnet50d').hf_hub_id)[0]
    assert segmentor.backbone.pretrained_report.file == str(weights)
    trainer = Trainer(seg)
    metrics = trainer.train()
    assert list(metrics)[0] == 'mIoU' and trainer.iter == 2


def test_vqa_config_trains_on_demo_data(demo_data, fake_hub, tmp_path):
    from attnkit.engine import Trainer
    opts = {'model.backbone.dims': CONVNEXT['dims'], 'model.backbone.depths': CONVNEXT['depths'],
            'model.question_encoder.embed_dim': 16, 'model.question_encoder.hidden_dim': 16, 'model.head.dim': 16,
            'model.head.ffn': 32, 'model.head.depth': 1, 'model.head.heads': 2, 'model.head.flat_hidden': 16,
            'model.head.out_dim': 32, 'schedule.by_epoch': False, 'schedule.max_epochs': None,
            'schedule.max_iters': 2, 'schedule.warmup_iters': 0, 'schedule.milestones': (),
            'train_cfg.eval_interval': 2, 'train_cfg.checkpoint_interval': 2, 'runtime.mixed_precision': 'no',
            'runtime.tensorboard': False, 'work_dir': str(tmp_path / 'work'), 'data.train.dataset.answer_min_count': 1}
    for split in ('train', 'val'):
        opts.update({f'data.{split}.dataset.img_dir': demo_data['img_dir'], f'data.{split}.batch_size': 8,
                     f'data.{split}.num_workers': 0, f'data.{split}.dataset.img_name_template': '{image_id:06d}.jpg',
                     f'data.{split}.dataset.questions_file': demo_data[f'vqa_{split}_questions'],
                     f'data.{split}.dataset.annotations_file': demo_data[f'vqa_{split}_annotations'],
                     f'data.{split}.dataset.pipeline': [dict(type='Resize', height=64, width=64)]})
    cfg = load_config('configs/vqa/mcan_convnext-t_gru_vqav2.py', opts)
    trainer = Trainer(cfg)
    backbone = getattr(trainer.model, 'module', trainer.model).backbone
    assert backbone.strides == (32,) and backbone.pretrained_report.missing == []
    frozen = {n.split('.')[1] for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {'stem_0', 'stem_1', 'stages_0'}
    metrics = trainer.train()
    assert list(metrics)[0] == 'accuracy' and trainer.iter == 2
