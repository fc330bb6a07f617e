"""recalibrate_batchnorm: running statistics become the equal-weight average of the batch statistics, computed
here by hand; weights, other modules' modes and the momentum are untouched."""
import torch
from torch import nn

from attnkit.engine.precise_bn import recalibrate_batchnorm


def test_running_statistics_are_the_average_of_the_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU())
    model.train()
    for _ in range(3):  # stale statistics from "training"
        model(torch.randn(2, 3, 8, 8) * 5 + 3)
    weights = {k: v.clone() for k, v in model.state_dict().items() if 'running' not in k and 'num_batches' not in k}
    batches = [torch.randn(4, 3, 8, 8) * (i + 1) for i in range(3)]
    assert recalibrate_batchnorm(model, batches) == 3
    feats = [model[0](b) for b in batches]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).reshape(4, -1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, var, atol=1e-4, rtol=1e-5)
    assert bn.momentum == 0.1 and model.training and model[2].training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    # nothing to average: the statistics stay
    before = bn.running_mean.clone()
    assert recalibrate_batchnorm(model, []) == 0
    assert torch.equal(bn.running_mean, before)
