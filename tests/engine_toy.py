"""Tiny parts registered for the engine and CLI tests: a regression dataset, a model and a metric.

Importable as ``engine_toy`` (tests/ is on sys.path; subprocesses get PYTHONPATH=tests) so configs can
name it in ``custom_imports``.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from attnkit.errors import DataError
from attnkit.evaluation import BaseEvaluator
from attnkit.registry import DATASETS, METRICS, MODELS


@DATASETS.register_module()
class ToyRegressionDataset:
    """``length`` samples: an image (3, size, size) and a target = a fixed linear function of its channel means.

    Args:
        length: number of samples.
        size: image side.
        seed: generator seed (train and val use different seeds).
        data_root: if given, must exist (to test the missing-data error).
        nan_at: sample indices whose target is NaN (to test the non-finite-loss error).
    """

    def __init__(self, length: int = 16, size: int = 8, seed: int = 0, data_root: str | None = None,
                 nan_at: tuple = (), metainfo: dict | None = None) -> None:
        if data_root is not None and not os.path.isdir(data_root):
            raise DataError(f'ToyRegressionDataset: data_root {data_root!r} does not exist.')
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(length, 3, size, size, generator=g)
        w = torch.tensor([1.0, -2.0, 0.5])
        self.targets = self.images.mean(dim=(2, 3)) @ w + 0.3
        for i in nan_at:
            self.targets[i] = float('nan')
        self.metainfo = dict(metainfo or {'classes': ['value'], 'scale': 1})

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {'image': self.images[i], 'target': self.targets[i], 'meta': {'id': i}}

    @staticmethod
    def collate(samples: list[dict]) -> dict:
        return {'images': torch.stack([s['image'] for s in samples]),
                'targets': torch.stack([s['target'] for s in samples]),
                'metas': [s['meta'] for s in samples]}


@MODELS.register_module()
class ToyModel(nn.Module):
    """conv -> global pool -> linear (no BatchNorm); training: ``{'loss', 'loss_mse', 'loss_l1'}``;
    eval: one ``{'pred'}`` per image."""

    def __init__(self, width: int = 4, metainfo: dict | None = None) -> None:
        super().__init__()
        self.metainfo = metainfo
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.GroupNorm(1, width)
        self.fc = nn.Linear(width, 1)

    def forward(self, batch: dict):
        x = self.norm(self.conv(batch['images'])).mean(dim=(2, 3))
        pred = self.fc(x).squeeze(1).float()
        if self.training:
            mse = ((pred - batch['targets']) ** 2).mean()
            l1 = (pred - batch['targets']).abs().mean().detach()
            return {'loss': mse, 'loss_mse': mse.detach(), 'loss_l1': l1}
        return [{'pred': float(p)} for p in pred]


@METRICS.register_module()
class ToyMetric(BaseEvaluator):
    """``neg_mse`` (primary, higher is better) and ``count``; raises on a duplicated sample id."""

    def process(self, batch: dict, predictions: list) -> None:
        for meta, target, pred in zip(batch['metas'], batch['targets'], predictions):
            self.results.append({'id': meta['id'], 'err': (pred['pred'] - float(target)) ** 2})

    def compute(self) -> dict:
        ids = [r['id'] for r in self.results]
        if len(set(ids)) != len(ids):
            raise AssertionError(f'duplicated samples in evaluation: {sorted(ids)}')
        mse = sum(r['err'] for r in self.results) / max(len(self.results), 1)
        return {'neg_mse': -mse, 'count': float(len(self.results))}

    def summary(self) -> str:
        return f'toy summary: {len(self.results)} samples'


def toy_config_text(work_dir: str, **over) -> str:
    """A complete config file (as text) training ToyModel; keyword arguments replace whole sections."""
    sections = dict(
        custom_imports="dict(imports=['engine_toy'])",
        model="dict(type='ToyModel', width=4)",
        data=("dict(train=dict(dataset=dict(type='ToyRegressionDataset', length=16, seed=0), batch_size=4, "
              "num_workers=0), val=dict(dataset=dict(type='ToyRegressionDataset', length=7, seed=1), "
              "batch_size=2, num_workers=0))"),
        evaluator="dict(type='ToyMetric')",
        runtime="dict(seed=0, channels_last=False, log_interval=2, tensorboard=False)",
        optim="dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))",
        schedule="dict(by_epoch=True, max_epochs=3, warmup_iters=2, policy='step', milestones=(2,))",
        train_cfg="dict(eval_interval=1, checkpoint_interval=1)",
        work_dir=repr(work_dir),
    )
    sections.update(over)
    return '\n'.join(f'{k} = {v}' for k, v in sections.items()) + '\n'
