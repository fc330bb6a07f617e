"""The plain CNN + bag-of-words VQA baseline (configs/demo/cnn_bow_shapes.py): the head and the question bag
against a hand computation, and the config trained through the Trainer on real demo files."""
from collections import Counter

import pytest
import torch

from attnkit.attention.base import AttentionModule
from attnkit.config import load_config
from attnkit.engine import Trainer
from attnkit.heads.vqa import MulFusionHead
from attnkit.tasks.vqa.text import BagOfWordsQuestionEncoder


def test_bag_of_words_and_multiplicative_fusion_by_hand():
    torch.manual_seed(0)
    enc = BagOfWordsQuestionEncoder(vocab_size=20, embed_dim=8).eval()
    head = MulFusionHead(num_answers=5, img_channels=6, q_channels=8, dim=4, hidden=3).eval()
    ids = torch.tensor([[3, 7, 9, 0, 0], [5, 2, 0, 0, 0]])
    mask = ids != 0
    img = torch.randn(1, 6, 3, 2)  # one image shared by both questions
    out = head(img, enc(ids, mask), mask, image_index=torch.tensor([0, 0]))
    assert out['attention'] is None
    # by hand: mean of the words' embeddings, mean of the grid, ReLU(linear) each, product, MLP
    w = enc.embed.weight
    for i, words in enumerate([[3, 7, 9], [5, 2]]):
        bag = w[words].mean(0)
        u = torch.relu(head.q_proj[0](bag))
        v = torch.relu(head.img_proj[0](img[0].mean(dim=(1, 2))))
        c = head.classifier
        expected = c[4](torch.relu(c[1](u * v)))
        torch.testing.assert_close(out['logits'][i], expected, atol=1e-6, rtol=0)
    # a bag: the word order does not matter
    shuffled = torch.tensor([[9, 3, 7, 0, 0], [2, 5, 0, 0, 0]])
    again = head(img, enc(shuffled, shuffled != 0), shuffled != 0, image_index=torch.tensor([0, 0]))
    torch.testing.assert_close(again['logits'], out['logits'], atol=1e-6, rtol=0)


def test_baseline_config_trains_through_the_trainer(tmp_path, demo_data, vqa_accuracy_by_hand):
    opts = {'work_dir': str(tmp_path / 'work'), 'schedule.max_epochs': 1, 'schedule.warmup_iters': 1,
            'data.train.batch_size': 16, 'data.train.num_workers': 1, 'data.val.num_workers': 0,
            'runtime.tensorboard': False, 'runtime.report': False, 'train_cfg.eval_interval': 1,
            'train_cfg.checkpoint_interval': 1, 'model.backbone.base_channels': 8,
            'model.question_encoder.embed_dim': 16, 'model.head.dim': 32, 'model.head.hidden': 32,
            'data.train.group_by': 'image', 'data.train.max_per_group': 2}
    for split in ('train', 'val'):
        opts[f'data.{split}.dataset.img_dir'] = demo_data['img_dir']
        opts[f'data.{split}.dataset.questions_file'] = demo_data[f'vqa_{split}_questions']
        opts[f'data.{split}.dataset.annotations_file'] = demo_data[f'vqa_{split}_annotations']
    cfg = load_config('configs/demo/cnn_bow_shapes.py', opts)
    trainer = Trainer(cfg)
    model = trainer.unwrapped_model
    assert not any(isinstance(m, AttentionModule) for m in model.modules())  # a plain model: no attention at all
    # data.train.max_per_group reaches the Trainer's sampler: at most 2 questions of one image in any batch
    image_of = trainer.train_dataset.group_keys('image')
    batches = list(trainer.sampler)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 16 * len(batches) == 16 * (len(image_of) // 16)  # drop_last: full batches
    assert max(max(Counter(image_of[i] for i in b).values()) for b in batches) == 2
    metrics = trainer.train()
    # the accuracy another way: the trained model's answers scored against the raw annotation file
    expected, count = vqa_accuracy_by_hand(model, trainer._eval_datasets['val'], demo_data['vqa_val_annotations'])
    assert count == metrics['num_questions']
    assert metrics['accuracy'] == pytest.approx(expected, abs=1e-6)
