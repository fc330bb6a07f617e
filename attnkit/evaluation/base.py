"""The evaluator contract shared by every metric."""
from __future__ import annotations

from typing import Any


class BaseEvaluator:
    """Accumulates one record per sample, computes metrics over all of them.

    ``process`` appends picklable records to ``self.results``; in a multi-process run the engine replaces
    ``self.results`` with the records of all processes (each sample exactly once) before ``compute``.

    Args:
        dataset: the dataset being evaluated (for class names, ground truth files, ...).
    """

    def __init__(self, dataset: Any = None) -> None:
        self.dataset = dataset
        self.results: list[Any] = []

    def reset(self) -> None:
        self.results = []

    def process(self, batch: dict[str, Any], predictions: list[Any]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """Metrics over ``self.results``; the primary metric is the first key."""
        raise NotImplementedError

    def summary(self) -> str:
        """A human-readable table (e.g. per class); empty by default."""
        return ''
