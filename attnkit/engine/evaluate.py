"""The evaluation loop shared by ``Trainer.evaluate`` and ``attnkit test``: disjoint shares, gathered results."""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from .data import build_eval_loader
from .utils import to_device

__all__ = ['evaluate']


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, evaluator: Any, accelerator: Any, batch_size: int = 1,
             num_workers: int = 0, channels_last: bool = False, progress: bool = False) -> dict[str, float]:
    """Run ``model`` over ``dataset`` and compute ``evaluator``'s metrics over all processes.

    Each process takes samples ``rank, rank + world, ...`` (no padding, not prepared by accelerate), feeds
    ``model(batch)`` (eval mode, autocast as configured) to ``evaluator.process``; the records of all
    processes are gathered (``accelerate.utils.gather_object``) into ``evaluator.results`` and every
    process calls ``compute()``, so each sample counts exactly once whatever the dataset size.

    Args:
        model: the unwrapped task model (or its EMA copy).
        dataset: the evaluation dataset.
        evaluator: a :class:`attnkit.evaluation.BaseEvaluator`.
        accelerator: the ``accelerate.Accelerator`` (device, process group, autocast).
        batch_size, num_workers: loader settings per process.
        channels_last: feed images as channels_last.
        progress: show a progress bar on the main process.

    Returns:
        ``evaluator.compute()``; ``evaluator.results`` holds the gathered records afterwards.
    """
    from accelerate.utils import gather_object
    loader = build_eval_loader(dataset, batch_size, num_workers, accelerator.num_processes,
                               accelerator.process_index, pin_memory=accelerator.device.type == 'cuda')
    was_training = model.training
    model.eval()
    evaluator.reset()
    iterator = loader
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm
        iterator = tqdm(loader, desc='eval', leave=False, dynamic_ncols=True)
    try:
        for batch in iterator:
            batch = to_device(batch, accelerator.device, channels_last)
            with accelerator.autocast():
                predictions = model(batch)
            evaluator.process(batch, predictions)
    finally:
        model.train(was_training)
    if accelerator.num_processes > 1:
        evaluator.results = list(gather_object(list(evaluator.results)))
    if len(evaluator.results) != len(dataset):
        warnings.warn(f'{type(evaluator).__name__} holds {len(evaluator.results)} records for '
                      f'{len(dataset)} samples (expected one record per sample).')
    return dict(evaluator.compute())
