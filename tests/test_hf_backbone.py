"""HFBackbone (transformers AutoBackbone from a local dir), SimpleFeaturePyramid and their configs.

Tiny models are written with ``save_pretrained`` to temporary directories: nothing is downloaded.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import (AutoConfig, BeitConfig, BeitForImageClassification, BertConfig, ConvNextConfig,
                          ConvNextForImageClassification, Dinov2Config, Dinov2Model, ResNetConfig, ResNetModel,
                          SwinConfig, SwinModel)

from attnkit import build_model
from attnkit.attention import attachments
from attnkit.backbones import HFBackbone
from attnkit.config import load_config
from attnkit.errors import CheckpointError, ConfigError
from attnkit.necks import SimpleFeaturePyramid

DINO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14,
            image_size=28)
STAGES = dict(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])


def _hf_backbone(path, hf_indices):
    """transformers' own backbone class for the saved dir (AutoBackbone's mapping), loaded by transformers."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING
    config = AutoConfig.from_pretrained(path, out_indices=hf_indices)
    return MODEL_FOR_BACKBONE_MAPPING[type(config)].from_pretrained(path, config=config).eval()


def _save(model, path):
    model.eval().save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope='module')
def dirs(tmp_path_factory):
    """Tiny model dirs laid out as the Hub's (full models: 'swin.'/'convnext.' prefixes, classifiers)."""
    root = tmp_path_factory.mktemp('hf')
    torch.manual_seed(0)
    dinov2 = Dinov2Model(Dinov2Config(**DINO))
    torch.manual_seed(1)
    convnext = ConvNextForImageClassification(ConvNextConfig(**STAGES, num_labels=3))
    torch.manual_seed(2)
    swin = SwinModel(SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2,
                                image_size=32))
    torch.manual_seed(3)
    resnet = ResNetModel(ResNetConfig(embedding_size=8, **STAGES))
    torch.manual_seed(4)
    beit = BeitForImageClassification(BeitConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                 intermediate_size=64, patch_size=16, image_size=32, num_labels=3))
    out = {name: _save(m, root / name) for name, m in
           [('dinov2', dinov2), ('convnext', convnext), ('swin', swin), ('resnet', resnet), ('beit', beit)]}
    out['models'] = {'dinov2': dinov2, 'beit': beit}
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(str(root / 'bert'))
    out['bert'] = str(root / 'bert')
    (root / 'weights_only').mkdir()
    (root / 'weights_only' / 'model.safetensors').write_bytes(b'')
    out['weights_only'] = str(root / 'weights_only')
    return out


# -- the backbone contract against transformers' own feature maps ---------------------------------------------
@pytest.mark.parametrize('family,out_indices,hf_indices,strides', [
    ('dinov2', (0, -1), [1, 2], (14, 14)),
    ('convnext', (0, 1, 2, 3), [1, 2, 3, 4], (4, 8, 16, 32)),
    ('swin', (1, 3), [2, 4], (8, 32)),
    ('beit', (-1,), [2], (16,)),
])
def test_maps_equal_transformers_feature_maps(dirs, family, out_indices, hf_indices, strides):
    backbone = HFBackbone(dirs[family], out_indices=out_indices).eval()
    reference = _hf_backbone(dirs[family], hf_indices)
    assert backbone.strides == strides
    assert backbone.pretrained_report is not None and backbone.pretrained_report.loaded
    x = torch.randn(2, 3, 56, 84) if family == 'dinov2' else torch.randn(2, 3, 64, 96)  # multiples of the strides
    with torch.no_grad():
        maps, ref = backbone(x), reference(pixel_values=x).feature_maps
    assert len(maps) == len(out_indices) == len(ref)
    for m, r, c, s in zip(maps, ref, backbone.out_channels, backbone.strides):
        assert m.shape == (2, c, x.shape[2] // s, x.shape[3] // s)
        assert (m - r).abs().max().item() <= 1e-6


def test_vit_grid_equals_the_patch_tokens_of_the_saved_model(dirs):
    """Independent reference: Dinov2Model's normed last hidden state, CLS dropped, tokens put on the grid."""
    backbone = HFBackbone(dirs['dinov2']).eval()
    x = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        grid = backbone(x)[-1]
        tokens = dirs['models']['dinov2'](pixel_values=x).last_hidden_state[:, 1:]  # (1, 4 * 6, 32)
    assert grid.shape == (1, 32, 4, 6)
    assert torch.allclose(grid, tokens.reshape(1, 4, 6, 32).permute(0, 3, 1, 2), atol=1e-6)
    registers = HFBackbone(config=dict(DINO, model_type='dinov2_with_registers', num_register_tokens=4)).eval()
    with torch.no_grad():
        maps = registers(x)[-1]
        registers.model.config.reshape_hidden_states = False  # transformers returns CLS + 4 registers + 24 tokens
        assert torch.equal(registers(x)[-1], maps)  # attnkit drops the 5 leading tokens itself


def test_sizes_not_a_multiple_of_the_patch_are_zero_padded_or_refused(dirs):
    backbone = HFBackbone(dirs['dinov2']).eval()
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        padded = backbone(F.pad(x, (0, 14 * 5 - 70, 0, 14 * 4 - 50)))[-1]
        grid = backbone(x)[-1]
    assert grid.shape == (1, 32, 4, 5)  # ceil(50 / 14), ceil(70 / 14): no pixel dropped
    assert torch.equal(grid, padded)
    strict = HFBackbone(dirs['dinov2'], pad_input=False)
    with pytest.raises(ValueError, match=r'50x70 is not a multiple of 14'):
        strict(x)


def test_config_builds_a_random_backbone_frozen_stages_and_unused_parameters(dirs):
    backbone = HFBackbone(config=dict(model_type='dinov2', **DINO), out_indices=(-1,), frozen_stages=1)
    emb, layers = backbone.model.embeddings, backbone.model.encoder.layer
    assert not any(p.requires_grad for p in emb.parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    backbone.train()
    assert not emb.training and not layers[0].training and layers[1].training
    loaded = HFBackbone(dirs['dinov2'])
    assert not torch.equal(backbone.model.embeddings.patch_embeddings.projection.weight,
                           loaded.model.embeddings.patch_embeddings.projection.weight)
    first = HFBackbone(config=dict(model_type='dinov2', **DINO), out_indices=(0,))  # layer 1 feeds no output
    frozen = {n for n, p in first.named_parameters() if not p.requires_grad}
    assert frozen == set(first.unused_parameters)
    assert 'model.embeddings.mask_token' in frozen and 'model.encoder.layer.1.mlp.fc1.weight' in frozen
    assert not any(n.startswith('model.encoder.layer.0.') for n in frozen)
    cnn = HFBackbone(dirs['convnext'], out_indices=(0, 1, 2, 3), frozen_stages=2)
    assert [any(p.requires_grad for p in s.parameters()) for s in cnn.model.encoder.stages] == [False, False, True,
                                                                                              True]


# -- attention insertion ----------------------------------------------------------------------------------------
@pytest.mark.parametrize('family,pattern', [('convnext', ['encoder.stages.1', 'encoder.stages.3']),
                                            ('resnet', ['encoder.stages.*'])])
def test_inserted_attention_is_identity_at_init_and_learns(dirs, family, pattern):
    backbone = HFBackbone(dirs[family], out_indices=(0, 1, 2, 3), attention=dict(type='cbam', after=pattern))
    reference = _hf_backbone(dirs[family], [1, 2, 3, 4])
    assert [p.target for p in backbone.places] == \
        (pattern if '*' not in pattern[0] else [f'encoder.stages.{i}' for i in range(4)])
    assert len(attachments(backbone)) == len(backbone.places)
    x = torch.randn(2, 3, 64, 64)
    backbone.eval()
    with torch.no_grad():
        for m, r in zip(backbone(x), reference(pixel_values=x).feature_maps):
            assert (m - r).abs().max().item() == 0.0
    backbone.train()
    sum(m.square().mean() for m in backbone(x)).backward()
    for place in backbone.places:
        attention = backbone.get_submodule(place.module_name)
        assert attention.gamma.grad is not None and attention.gamma.grad.abs().item() > 0
        assert all(p.grad is not None for p in attention.parameters())


def test_attention_on_token_outputs_and_unknown_names_are_config_errors(dirs):
    with pytest.raises(ConfigError, match=r"dinov2\) attention after='encoder.layer.1'.*tokens"):
        HFBackbone(dirs['dinov2'], attention=dict(type='se', after=['encoder.layer.1']))
    with pytest.raises(ConfigError, match=r"encoder.stages.9.*Closest module names: 'encoder.stages"):
        HFBackbone(dirs['convnext'], attention=dict(type='se', after=['encoder.stages.9']))


# -- bad input ----------------------------------------------------------------------------------------------------
def test_bad_model_dirs_and_indices_say_what_is_wrong(dirs, tmp_path):
    missing = str(tmp_path / 'checkpoints' / 'dinov2-small')
    with pytest.raises(CheckpointError, match=f"model_path '{missing}' does not exist.*huggingface-cli download"):
        HFBackbone(missing)
    with pytest.raises(CheckpointError, match=r'has no config.json \(found: model.safetensors\)'):
        HFBackbone(dirs['weights_only'])
    Dinov2Config(**DINO).save_pretrained(str(tmp_path / 'config_only'))
    with pytest.raises(CheckpointError, match=r"cannot load the dinov2 weights from .*config_only.*model.safetensors"):
        HFBackbone(str(tmp_path / 'config_only'))
    with pytest.raises(ConfigError) as info:
        HFBackbone(dirs['bert'])
    message = str(info.value)
    assert "model_type 'bert'" in message and 'AutoBackbone has no backbone' in message
    assert 'dinov2' in message and 'convnext' in message and '\n' not in message
    with pytest.raises(ConfigError, match=r'convnext has 4 stages.*use 0..3 or -4..-1'):
        HFBackbone(dirs['convnext'], out_indices=(1, 4))
    with pytest.raises(ConfigError, match=r"Did you mean 'dinov2'"):
        HFBackbone(config=dict(model_type='dinov3', hidden_size=32))
    with pytest.raises(ConfigError, match=r'frozen_stages must be in -1..2'):
        HFBackbone(dirs['dinov2'], frozen_stages=3)


# -- the simple feature pyramid ----------------------------------------------------------------------------------
def test_simple_pyramid_strides_shapes_and_patch14_resampling():
    neck = SimpleFeaturePyramid([32], 16, in_strides=[14])
    assert neck.strides == (4, 8, 16, 32) and neck.out_channels == (16,) * 4 and neck.grid_stride == 16
    grid = torch.randn(2, 32, 37, 37)  # a 512 image padded to 518, patch 14
    resampled = neck.resample(grid)
    assert resampled.shape[-2:] == (32, 32)  # round(37 * 14 / 16)
    assert torch.allclose(resampled, F.interpolate(grid, size=(32, 32), mode='bilinear', align_corners=False))
    outs = neck((torch.randn(2, 32, 5, 5), grid))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 512 // s, 512 // s) for s in neck.strides]
    fcos = SimpleFeaturePyramid([32], 8, in_strides=[16], scale_factors=(2, 1, 0.5), extra_levels=2, norm='gn')
    assert fcos.strides == (8, 16, 32, 64, 128)
    assert [o.shape[-1] for o in fcos((torch.randn(1, 32, 8, 10),))] == [20, 10, 5, 3, 2]
    with pytest.raises(ConfigError, match='in_strides'):
        SimpleFeaturePyramid([32], 16)
    with pytest.raises(ConfigError, match='scale_factors'):
        SimpleFeaturePyramid([32], 16, in_strides=[16], scale_factors=(1, 2))


def test_vqa_model_reads_the_vit_grid(dirs):
    meta = {'answers': ['yes', 'no', '2'], 'tokenizer': {'type': 'word', 'max_len': 8},
            'question_vocab': ['<pad>', '<unk>', 'how', 'many']}
    common = dict(type='VQAModel', question_encoder=dict(type='gru', embed_dim=8, hidden_dim=16),
                  head=dict(type='mcan', dim=16, heads=2, ffn=32, depth=1, flat_hidden=16, out_dim=32))
    model = build_model(dict(common, backbone=dict(type='HFBackbone', model_path=dirs['beit'])), metainfo=meta)
    batch = {'images': torch.randint(0, 255, (2, 3, 64, 42), dtype=torch.uint8),
             'input_ids': torch.tensor([[2, 3, 0], [2, 3, 1]]), 'attention_mask': torch.tensor([[1, 1, 0], [1, 1, 1]])}
    model.eval()
    out = model.forward_logits(batch)
    assert out['logits'].shape == (2, 3) and out['attention'].shape == (2, 4, 3)  # 64x42 padded to 64x48, / 16
    pyramid = build_model(dict(common, backbone=dict(type='HFBackbone', model_path=dirs['dinov2']),
                               neck=dict(type='SimpleFeaturePyramid', out_channels=16), neck_level=2),
                          metainfo=meta)
    assert pyramid.neck.strides == (4, 8, 16, 32)
    # patch 14: padded to 70x42, a 5x3 grid, resampled to stride 16: round(5 * 14 / 16) x round(3 * 14 / 16)
    assert pyramid.eval().forward_logits(batch)['attention'].shape == (2, 4, 3)


# -- the configs through the Trainer ----------------------------------------------------------------------------
RUN = {'schedule.max_iters': 2, 'schedule.warmup_iters': 0, 'train_cfg.eval_interval': 2,
       'train_cfg.checkpoint_interval': 2, 'runtime.tensorboard': False, 'runtime.report': False}
BY_ITER = {'schedule.by_epoch': False, 'schedule.max_epochs': None}  # for configs with epoch schedules


def _train(cfg):
    from attnkit.engine import Trainer
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    model = getattr(trainer.model, 'module', trainer.model)
    return trainer, model, trainer.train()


def test_semfpn_dinov2_config_trains(dirs, demo_data, tmp_path):
    voc = demo_data['voc_root']
    cfg = load_config('configs/segmentation/semfpn_dinov2-s14_voc12aug.py', {
        'model.backbone.model_path': dirs['dinov2'], 'model.neck.out_channels': 16, 'model.decode_head.channels': 16,
        'data.train.dataset.root': voc, 'data.val.dataset.root': voc, 'data.train.batch_size': 2,
        'data.train.dataset.split_file': 'ImageSets/Segmentation/train.txt',
        'data.train.dataset.ann_dir': 'SegmentationClass',
        'data.train.num_workers': 0, 'data.val.num_workers': 0, 'data.val.batch_size': 6, **RUN,
        'work_dir': str(tmp_path / 'work')})
    cfg.data.train.dataset.pipeline = [dict(type='RandomCropCatMax', height=64, width=64)]
    cfg.data.val.dataset.pipeline = []
    trainer, model, metrics = _train(cfg)
    assert type(model.backbone).__name__ == 'HFBackbone' and model.neck.strides == (4, 8, 16, 32)
    assert list(metrics)[0] == 'mIoU' and math.isfinite(metrics['mIoU'])
    assert (tmp_path / 'work' / 'model.safetensors').is_file()


def test_mcan_vit_config_trains_from_the_local_dir(dirs, demo_data, tmp_path, vqa_accuracy_by_hand):
    opts = {'model.backbone.model_path': dirs['beit'], 'model.question_encoder.embed_dim': 16,
            'model.question_encoder.hidden_dim': 16, 'model.head.dim': 16, 'model.head.ffn': 32,
            'model.head.depth': 1, 'model.head.heads': 2, 'model.head.flat_hidden': 16, 'model.head.out_dim': 32,
            **RUN, **BY_ITER, 'schedule.milestones': (), 'runtime.mixed_precision': 'no',
            'work_dir': str(tmp_path / 'work')}
    for split in ('train', 'val'):
        opts.update({f'data.{split}.dataset.img_dir': demo_data['img_dir'], f'data.{split}.batch_size': 8,
                     f'data.{split}.num_workers': 0, f'data.{split}.dataset.img_name_template': '{image_id:06d}.jpg',
                     f'data.{split}.dataset.questions_file': demo_data[f'vqa_{split}_questions'],
                     f'data.{split}.dataset.annotations_file': demo_data[f'vqa_{split}_annotations'],
                     f'data.{split}.dataset.pipeline': [dict(type='Resize', height=64, width=64)]})
    cfg = load_config('configs/vqa/mcan_vit-b16_gru_vqav2.py', opts)
    saved = dirs['models']['beit'].state_dict()
    from attnkit.engine import Trainer
    trainer = Trainer(cfg)
    model = getattr(trainer.model, 'module', trainer.model)
    weight = model.backbone.model.beit.embeddings.patch_embeddings.projection.weight
    assert torch.equal(weight.detach().cpu(), saved['beit.embeddings.patch_embeddings.projection.weight'])
    metrics = trainer.train()
    assert list(metrics)[0] == 'accuracy'
    # the same number another way: the trained model's answer to every val question, scored against the raw file
    expected, count = vqa_accuracy_by_hand(model, trainer._eval_datasets['val'], demo_data['vqa_val_annotations'], 8)
    assert count == metrics['num_questions']
    assert metrics['accuracy'] == pytest.approx(expected, abs=1e-6)


def test_fcos_detector_on_the_simple_pyramid(demo_data, tmp_path):
    cfg = load_config('configs/demo/fcos_r18-cbam_fpn_shapes.py', {
        'data.train.dataset.ann_file': demo_data['coco_train_json'], 'data.train.dataset.img_dir': demo_data['img_dir'],
        'data.val.dataset.ann_file': demo_data['coco_val_json'], 'data.val.dataset.img_dir': demo_data['img_dir'],
        'data.train.batch_size': 4, 'data.train.num_workers': 0, 'data.val.num_workers': 0,
        **RUN, **BY_ITER, 'model.head.feat_channels': 16, 'model.head.stacked_convs': 1,
        'work_dir': str(tmp_path / 'work')})
    cfg.model.backbone = dict(type='HFBackbone', config=dict(model_type='vitdet', hidden_size=32, num_hidden_layers=2,
                                                             num_attention_heads=2, mlp_ratio=2, patch_size=16,
                                                             image_size=64, pretrain_image_size=64))
    cfg.model.neck = dict(type='SimpleFeaturePyramid', out_channels=16, scale_factors=(2, 1, 0.5))
    trainer, model, metrics = _train(cfg)
    assert model.neck.strides == (8, 16, 32) == model.head.strides
    assert list(metrics)[0] == 'AP' and math.isfinite(metrics['AP'])
    with torch.no_grad():
        feats = model.extract_feats(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 12), (4, 6), (2, 3)]
