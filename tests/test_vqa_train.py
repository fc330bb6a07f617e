"""The demo VQA configs through the Trainer: train, evaluate, reload the checkpoint (vocabularies inside), infer."""
import os

import pytest
import torch

from attnkit.config import load_config
from attnkit.data.demo import generate_demo_data
from attnkit.engine import Trainer, load_model
from attnkit.registry import INFERENCERS


def _options(paths, work_dir):
    """Point a demo config at a small generated demo set and shrink the model."""
    opts = {'work_dir': str(work_dir), 'schedule.max_epochs': 1, 'schedule.warmup_iters': 1,
            'data.train.batch_size': 8, 'data.train.num_workers': 0, 'data.val.num_workers': 0,
            'runtime.tensorboard': False, 'train_cfg.eval_interval': 1, 'train_cfg.checkpoint_interval': 1}
    for split in ('train', 'val'):
        opts[f'data.{split}.dataset.img_dir'] = paths['img_dir']
        opts[f'data.{split}.dataset.questions_file'] = paths[f'vqa_{split}_questions']
        opts[f'data.{split}.dataset.annotations_file'] = paths[f'vqa_{split}_annotations']
        opts[f'data.{split}.dataset.pipeline'] = [dict(type='Resize', height=64, width=64)]
    return opts


TINY = {'model.backbone.base_channels': 8, 'model.question_encoder.embed_dim': 16,
        'model.question_encoder.hidden_dim': 32, 'model.head.dim': 32, 'model.head.ffn': 64, 'model.head.depth': 1,
        'model.head.flat_hidden': 32, 'model.head.out_dim': 64}


@pytest.fixture(scope='module')
def demo_paths(tmp_path_factory):
    return generate_demo_data(tmp_path_factory.mktemp('demo'), num_train=12, num_val=4, size=64, seed=1)


def _check_trained(trainer, cfg, metrics, work, paths, capsys, use_image: bool) -> None:
    """After ``trainer.train()``: metrics, the checkpoint's vocabularies, reloading it and inferring with it."""
    assert list(metrics)[0] == 'accuracy' and 0.0 <= metrics['accuracy'] <= 1.0
    assert metrics['num_questions'] == len(trainer._eval_datasets['val'])
    ckpt = torch.load(work / 'latest.pth', weights_only=True)
    assert ckpt['meta']['answers'] == trainer.train_dataset.metainfo['answers']
    assert ckpt['meta']['question_vocab'][:2] == ['<pad>', '<unk>']
    model = load_model(cfg, work / 'latest.pth')
    assert model.use_image == use_image
    files = INFERENCERS.get('VQAModel')(model, cfg, [os.path.join(paths['img_dir'], '000013.jpg')],
                                        str(work / 'pics'), question='how many objects are there?')
    assert os.path.isfile(files[0])
    assert '  1. ' in capsys.readouterr().out


def test_demo_config_trains_saves_vocab_and_infers(tmp_path, demo_paths, capsys):
    """The question-only demo config; the MCAN demo config goes through the same checks in the two-stage test
    below (its stage 2), so it is trained once."""
    config = 'configs/demo/qonly_gru_shapes.py'
    opts = _options(demo_paths, tmp_path / 'work')
    opts.update({k: v for k, v in TINY.items() if 'backbone' not in k})
    cfg = load_config(config, opts)
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    _check_trained(trainer, cfg, trainer.train(), tmp_path / 'work', demo_paths, capsys, use_image=False)


def _stage1_options(paths, work_dir):
    opts = {'work_dir': str(work_dir), 'schedule.max_iters': 2, 'schedule.warmup_iters': 1,
            'data.train.batch_size': 4, 'runtime.tensorboard': False, 'train_cfg.eval_interval': 2,
            'train_cfg.checkpoint_interval': 2, 'model.backbone.base_channels': 8, 'model.decode_head.channels': 32}
    for split in ('train', 'val'):
        opts[f'data.{split}.dataset.root'] = paths['voc_root']
    return opts


def test_two_stage_demo_recipe_loads_the_segmentation_backbone(tmp_path, demo_paths, capsys):
    """Stage 1 (segmentation on the demo masks) writes model.safetensors; stage 2 (VQA, the MCAN demo config) starts
    from its backbone, trains, saves its vocabularies, reloads and infers."""
    from safetensors.torch import load_file

    stage1 = load_config('configs/demo/fcn_r18_shapes_vqa-backbone.py', _stage1_options(demo_paths, tmp_path / 's1'))
    torch.manual_seed(0)
    Trainer(stage1).train()
    weights = tmp_path / 's1' / 'model.safetensors'
    seg = load_file(str(weights))
    opts = _options(demo_paths, tmp_path / 's2')
    opts.update(TINY)
    opts['model.backbone.pretrained'] = str(weights)
    cfg = load_config('configs/demo/mcan_r18_gru_shapes.py', opts)
    trainer = Trainer(cfg)
    backbone = trainer.model.backbone if hasattr(trainer.model, 'backbone') else trainer.model.module.backbone
    for name, value in backbone.state_dict().items():
        assert torch.equal(value.cpu(), seg['backbone.' + name]), name  # every backbone tensor comes from stage 1
    assert trainer.sampler.members is not None  # group_by='image': questions of one image batched together
    _check_trained(trainer, cfg, trainer.train(), tmp_path / 's2', demo_paths, capsys, use_image=True)


def test_stage2_without_stage1_says_what_to_run(tmp_path, demo_paths):
    opts = _options(demo_paths, tmp_path / 's2')
    opts['model.backbone.pretrained'] = str(tmp_path / 'missing' / 'model.safetensors')
    with pytest.raises(Exception, match='missing/model.safetensors'):
        Trainer(load_config('configs/demo/mcan_r18_gru_shapes.py', opts))
