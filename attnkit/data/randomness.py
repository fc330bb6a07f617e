"""One rule for the randomness of the data path: every draw is a function of ``(seed, epoch, sample key)``.

A training sample's augmentation must not depend on which DataLoader worker or which process loads it, nor on
whether the run was resumed. So the engine wraps the training dataset in :class:`SeededDataset`, which opens a
:func:`sample_random` scope around every ``dataset[index]``. Inside the scope:

* :class:`attnkit.data.Pipeline` re-seeds its albumentations ``Compose`` (albumentations 2.x draws from its own
  generators, which seeding numpy/torch/random does not reach) from :func:`current_seed`;
* Python's ``random``, numpy's global generator and torch's CPU generator are seeded from the same key (and
  restored afterwards), so a hand-written transform that draws from them is covered too;
* a dataset that shares one draw between several samples (the VQA dataset loads an image once for all of its
  questions in a batch) opens a nested scope keyed by what is shared (the image id): :func:`sample_random`
  with ``key=('image', image_id)`` derives the seed from the same ``(seed, epoch)``.

Outside any scope (inference, a dataset used by hand) nothing is seeded and transforms draw as usual.
"""
from __future__ import annotations

import contextlib
import random
import threading
from typing import Any, Hashable, Iterator, Sequence

import numpy as np
import torch

__all__ = ['sample_seed', 'sample_random', 'current_seed', 'epoch_random', 'SeededDataset', 'rank_seed']

_STATE = threading.local()


def _key_words(key: Hashable) -> list[int]:
    """A key as a list of non-negative 32-bit words (ints directly, strings by a stable hash)."""
    if isinstance(key, tuple):
        return [w for part in key for w in _key_words(part)]
    if isinstance(key, (bool, np.bool_)):
        return [int(key)]
    if isinstance(key, (int, np.integer)):
        k = int(key)
        return [k & 0xFFFFFFFF, (k >> 32) & 0xFFFFFFFF, int(k < 0)]
    data = str(key).encode()
    return [int.from_bytes(data[i:i + 4].ljust(4, b'\0'), 'little') for i in range(0, len(data), 4)] + [len(data)]


def sample_seed(seed: int, epoch: int, key: Hashable) -> int:
    """A 63-bit seed from ``(seed, epoch, key)`` (numpy ``SeedSequence``: well mixed, stable across platforms).

    Args:
        seed: ``runtime.seed``.
        epoch: the training epoch (0-based).
        key: the sample index, or a tuple such as ``('image', image_id)`` for a draw shared by several samples.
    """
    words = _key_words((int(seed), int(epoch))) + [0x5EED] + _key_words(key)
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2 ** 63 - 1)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s model-side randomness (dropout, drop-path): distinct per rank."""
    return sample_seed(seed, -1, ('rank', int(rank))) % (2 ** 32)


def current_seed() -> int | None:
    """The seed of the innermost :func:`sample_random` scope, or None outside every scope."""
    stack = getattr(_STATE, 'stack', None)
    return stack[-1][2] if stack else None


@contextlib.contextmanager
def epoch_random(seed: int, epoch: int) -> Iterator[None]:
    """Set the ``(seed, epoch)`` that nested :func:`sample_random` scopes derive their seeds from."""
    stack = getattr(_STATE, 'epochs', None)
    if stack is None:
        stack = _STATE.epochs = []
    stack.append((int(seed), int(epoch)))
    try:
        yield
    finally:
        stack.pop()


@contextlib.contextmanager
def sample_random(key: Hashable) -> Iterator[int | None]:
    """Seed every random draw inside the scope from ``(seed, epoch, key)`` of the enclosing :func:`epoch_random`.

    Python's ``random``, numpy's global generator and torch's CPU generator are seeded on entry and restored on
    exit (so model-side randomness in the same process is untouched); :func:`current_seed` returns the seed for
    generators of their own (albumentations). Without an enclosing ``epoch_random`` the scope does nothing and
    yields None.
    """
    epochs = getattr(_STATE, 'epochs', None)
    if not epochs:
        yield None
        return
    seed, epoch = epochs[-1]
    value = sample_seed(seed, epoch, key)
    stack = getattr(_STATE, 'stack', None)
    if stack is None:
        stack = _STATE.stack = []
    saved = (random.getstate(), np.random.get_state(), torch.random.default_generator.get_state())
    random.seed(value)
    np.random.seed(value % (2 ** 32))
    torch.random.default_generator.manual_seed(value)
    stack.append((seed, epoch, value))
    try:
        yield value
    finally:
        stack.pop()
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.random.default_generator.set_state(saved[2])


class SeededDataset(torch.utils.data.Dataset):
    """``dataset`` whose every sample is drawn inside ``sample_random(index)`` under ``(seed, epoch)``.

    Everything else (``collate``, ``metainfo``, ``group_keys``, ...) is forwarded to the wrapped dataset.
    ``__getitems__`` of the wrapped dataset (batched reading) runs inside the epoch scope with each sample's
    scope left to the dataset (it knows which draws its samples share).

    Args:
        dataset: a map-style dataset.
        seed: ``runtime.seed``; epoch: the epoch the draws belong to.
    """

    def __init__(self, dataset: Any, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with epoch_random(self.seed, self.epoch), sample_random(int(index)):
            return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        inner = getattr(self.dataset, '__getitems__', None)
        if inner is None:
            return [self[i] for i in indices]
        with epoch_random(self.seed, self.epoch):
            return inner(list(indices))

    def __getattr__(self, name: str) -> Any:
        if name == 'dataset':  # not yet set (unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
