"""The evaluator contract shared by every metric."""
from __future__ import annotations

from typing import Any

import torch


class BaseEvaluator:
    """Accumulates per-sample records and/or summed statistics; computes metrics over all of them.

    Two kinds of state, both independent of the number of processes once merged:

    - ``self.results``: one picklable record per sample, appended by ``process`` in the order the samples
      come. In a multi-process run the engine gathers every process's records and puts them back in
      **dataset order** (sample 0, 1, 2, ...) before ``compute``, so a metric that breaks ties by record
      order (VOC AP) gives the same number on any number of processes.
    - :meth:`sum_state`: tensors whose sum over processes is the state (e.g. a K×K confusion matrix).
      The engine sums them across processes and hands the sums back through :meth:`load_sum_state`.
      Memory then does not grow with the number of samples.

    ``compute`` runs once, on the main process; the engine broadcasts its result to the others.

    Args:
        dataset: the dataset being evaluated (for class names, ground truth files, ...).
    """

    def __init__(self, dataset: Any = None) -> None:
        self.dataset = dataset
        self.results: list[Any] = []

    def reset(self) -> None:
        """Forget everything processed so far (called by the engine before each evaluation)."""
        self.results = []

    def process(self, batch: dict[str, Any], predictions: list[Any]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """Metrics over ``self.results`` (and the summed state); the primary metric is the first key."""
        raise NotImplementedError

    def summary(self) -> str:
        """A human-readable table (e.g. per class); empty by default."""
        return ''

    def sum_state(self) -> dict[str, torch.Tensor]:
        """Tensors to be summed over processes (name → tensor of a fixed shape); none by default."""
        return {}

    def load_sum_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take the sums over all processes of the tensors of :meth:`sum_state` (CPU tensors)."""
        if state:
            raise NotImplementedError(f'{type(self).__name__} returns sum_state() but does not load it.')

    def num_samples(self) -> int:
        """How many samples have been processed (after merging: over all processes)."""
        return len(self.results)
