"""GroupCapBatchSampler (attnkit/engine/question_sampler.py): batches that mix images, at most k questions of one
image per batch, every question once per epoch, sharded like ShardedBatchSampler."""
from collections import Counter

import pytest
import torch

from attnkit.engine.data import ShardedBatchSampler
from attnkit.engine.question_sampler import GroupCapBatchSampler, build_batch_sampler
from attnkit.errors import ConfigError


def _groups(n_groups=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 13, (n_groups,), generator=g).tolist()  # 1-12 questions per image, as the demo
    keys = [f'img{k}' for k, s in enumerate(sizes) for _ in range(s)]
    order = torch.randperm(len(keys), generator=g).tolist()  # questions of an image need not be adjacent
    return [keys[i] for i in order]


@pytest.mark.parametrize('cap', [1, 2, 3])
def test_at_most_cap_questions_per_image_over_1000_batches_and_each_question_once_per_epoch(cap):
    groups = _groups()
    n, b = len(groups), 32
    sampler = GroupCapBatchSampler(n, b, groups=groups, max_per_group=cap, seed=3)
    batches, epoch = [], 0
    while len(batches) < 1000:
        sampler.set_epoch(epoch)
        epoch_batches = list(sampler)
        assert len(epoch_batches) == len(sampler)
        flat = [i for bt in epoch_batches for i in bt]
        assert sorted(flat) == list(range(n))  # every question exactly once per epoch
        assert all(len(bt) == b for bt in epoch_batches[:-1])
        batches += epoch_batches
        epoch += 1
    worst = max(max(Counter(groups[i] for i in bt).values()) for bt in batches)
    assert worst == cap  # the cap holds in every batch, and is reached
    full = [bt for bt in batches if len(bt) == b]
    mean_images = sum(len({groups[i] for i in bt}) for bt in full) / len(full)
    assert mean_images >= b / cap * 0.95  # close to the b / cap distinct images the cap allows
    # grouped batches without a cap hold far fewer images
    plain = ShardedBatchSampler(n, b, groups=groups, seed=3)
    plain_images = sum(len({groups[i] for i in bt}) for bt in list(plain)[:-1]) / (len(plain) - 1)
    assert plain_images < mean_images
    sampler.set_epoch(0)
    again = GroupCapBatchSampler(n, b, groups=groups, max_per_group=cap, seed=3)
    assert list(again) == list(sampler) and list(again) != batches[len(sampler):2 * len(sampler)]


def test_shards_are_slices_of_the_single_process_batches_and_bad_options_raise():
    groups = _groups(80)
    n = len(groups)
    one = GroupCapBatchSampler(n, 16, groups=groups, max_per_group=2, seed=1, drop_last=True)
    ranks = [GroupCapBatchSampler(n, 8, world_size=2, rank=r, groups=groups, max_per_group=2, seed=1, drop_last=True)
             for r in range(2)]
    assert [a + c for a, c in zip(*[list(s) for s in ranks])] == list(one)
    assert all(len(bt) == 16 for bt in one)
    assert isinstance(build_batch_sampler(n, 8, groups=groups), ShardedBatchSampler)
    assert build_batch_sampler(n, 8, groups=groups, max_per_group=2).max_per_group == 2
    with pytest.raises(ConfigError, match='needs data.train.group_by'):
        build_batch_sampler(n, 8, max_per_group=2)
    with pytest.raises(ConfigError, match='max_per_group must be an integer'):
        build_batch_sampler(n, 8, groups=groups, max_per_group=0)
    with pytest.raises(ValueError, match='needs groups'):
        GroupCapBatchSampler(n, 8)
