"""Parameter groups, learning-rate schedules and EMA of attnkit.engine."""

import pytest
import torch
from torch import nn

from attnkit.engine import LRFactor, ModelEMA, build_optimizer, build_scheduler, param_groups
from attnkit.errors import ConfigError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.backbone_extra = nn.Linear(2, 2)  # shares the text prefix 'backbone' but not the module prefix
        self.head = nn.Linear(4, 2)
        self.head.rel_pos_h = nn.Parameter(torch.zeros(3, 4))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _groups_by_param(groups):
    return {name: g for g in groups for name in g['param_names']}


def test_param_groups_lr_mult_no_decay_and_frozen():
    net = Net()
    groups = param_groups(net, lr=0.1, weight_decay=1e-4, lr_mult={'backbone': 0.1},
                          no_decay=('norm', 'bias', 'pos'))
    by_name = _groups_by_param(groups)
    assert 'frozen.weight' not in by_name and 'frozen.bias' not in by_name
    assert by_name['backbone.0.weight']['lr'] == pytest.approx(0.01)
    assert by_name['backbone.0.weight']['weight_decay'] == 1e-4
    for name in ('backbone.1.weight', 'backbone.1.bias', 'backbone.0.bias'):   # BN (by type) and biases
        assert by_name[name]['weight_decay'] == 0.0 and by_name[name]['lr'] == pytest.approx(0.01), name
    assert by_name['backbone_extra.weight']['lr'] == pytest.approx(0.1)        # prefix matches whole names only
    assert by_name['head.rel_pos_h']['weight_decay'] == 0.0                   # position table
    assert by_name['head.weight']['weight_decay'] == 1e-4 and by_name['head.weight']['lr'] == 0.1
    # every trainable parameter exactly once
    names = [n for g in groups for n in g['param_names']]
    assert sorted(names) == sorted(n for n, p in net.named_parameters() if p.requires_grad)


def test_build_optimizer_types_and_errors():
    net = Net()
    opt = build_optimizer(net, {'optimizer': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0.05},
                                'lr_mult': {'head': 2.0}})
    assert isinstance(opt, torch.optim.AdamW)
    lrs = {g['name']: g['lr'] for g in opt.param_groups}
    assert lrs['x2/decay'] == pytest.approx(2e-3) and lrs['x1/no_decay'] == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="'AdamW'"):
        build_optimizer(net, {'optimizer': {'type': 'AdamWW', 'lr': 1e-3}})
    with pytest.raises(ConfigError, match='momentumm'):
        build_optimizer(net, {'optimizer': {'type': 'SGD', 'lr': 1e-3, 'momentumm': 0.9}})


def test_lr_factor_warmup_and_policies():
    step = LRFactor(max_iters=100, policy='step', milestones=(60, 90), gamma=0.1, warmup_iters=10,
                    warmup_ratio=0.001)
    assert step(0) == pytest.approx(0.001)
    assert step(5) == pytest.approx(0.001 + 0.999 * 0.5)
    assert step(10) == 1.0 and step(59) == 1.0
    assert step(60) == pytest.approx(0.1) and step(95) == pytest.approx(0.01)
    cos = LRFactor(max_iters=100, policy='cosine', min_lr_ratio=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(100) == pytest.approx(0.1)
    assert cos(50) == pytest.approx(0.1 + 0.9 * 0.5)
    poly = LRFactor(max_iters=100, policy='poly', power=0.9)
    assert poly(50) == pytest.approx(0.5 ** 0.9) and poly(100) == pytest.approx(0.0)
    with pytest.raises(ConfigError, match='policy'):
        LRFactor(max_iters=10, policy='exp')


def test_scheduler_by_epoch_milestones_in_iterations():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, dict(by_epoch=True, max_epochs=3, warmup_iters=0, policy='step',
                                      milestones=(2,), gamma=0.5), iters_per_epoch=4)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    assert lrs == [1.0] * 8 + [0.5] * 4
    # the scheduler state loads with weights_only (plain numbers only)
    import io
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)['last_epoch'] == 12


def test_ema_update_math_and_buffers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(net, momentum=0.25)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net.train()
    net(torch.randn(8, 3))  # changes BN running stats
    ema.update(net)
    assert torch.allclose(ema.module[0].weight, 0.75 * before + 0.25 * net[0].weight)
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)
    assert not any(p.requires_grad for p in ema.module.parameters())
    state = ema.state_dict()
    other = ModelEMA(net, momentum=0.25)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.module[0].weight, ema.module[0].weight)


def test_sharded_batches_match_one_process_and_pad_evenly():
    from attnkit.engine.data import ShardedBatchSampler
    one = ShardedBatchSampler(10, 4, world_size=1, rank=0, seed=3)
    ranks = [ShardedBatchSampler(10, 2, world_size=2, rank=r, seed=3) for r in range(2)]
    for s in (one, *ranks):
        s.set_epoch(1)
    b1, b_r0, b_r1 = list(one), list(ranks[0]), list(ranks[1])
    assert len(b_r0) == len(b_r1) == len(one) == 3          # every process runs the same number of steps
    for full, r0, r1 in zip(b1[:2], b_r0, b_r1):             # full global batches: exactly split
        assert full == r0 + r1
    assert b1[2] == b_r0[2] + b_r1[2]                        # remainder of 2 splits 1 + 1
    assert sorted(i for b in b1 for i in b) == list(range(10))
    one.set_epoch(2)
    assert list(one) != b1                                   # a new order each epoch, same for every process
    padded = [list(ShardedBatchSampler(9, 2, world_size=2, rank=r, seed=0)) for r in range(2)]
    assert [len(b) for b in padded[0]] == [len(b) for b in padded[1]] == [2, 2, 1]
    assert set(i for p in padded for b in p for i in b) == set(range(9))  # nothing dropped (one sample twice)


def test_grouped_batches_keep_each_group_together_and_split_like_one_process():
    from attnkit.engine.data import ShardedBatchSampler
    groups = [7, 3, 7, 5, 3, 7, 9, 5, 1, 9, 3]  # e.g. the image id of each VQA question
    one = ShardedBatchSampler(11, 4, seed=2, groups=groups)
    one.set_epoch(0)
    order = [i for b in one for i in b]
    assert sorted(order) == list(range(11))
    seen = [groups[i] for i in order]
    runs = [k for j, k in enumerate(seen) if j == 0 or seen[j - 1] != k]
    assert sorted(runs) == sorted(set(groups))  # each group is one contiguous run: shuffled as a whole
    assert [order.index(i) for i in (0, 2, 5)] == sorted(order.index(i) for i in (0, 2, 5))  # order inside kept
    orders = set()
    for epoch in range(6):
        one.set_epoch(epoch)
        orders.add(tuple(i for b in one for i in b))
    assert len(orders) > 1  # the group order changes with the epoch
    ranks = [ShardedBatchSampler(11, 2, world_size=2, rank=r, seed=2, groups=groups) for r in range(2)]
    one.set_epoch(0)
    assert [a + b for a, b in zip(*(list(r) for r in ranks))][:2] == list(one)[:2]
    with pytest.raises(ValueError, match='3 group keys for 11 samples'):
        ShardedBatchSampler(11, 4, groups=[1, 2, 3])
