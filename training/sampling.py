"""Shuffling that depends only on (seed, epoch), so a resumed run sees the batches an uninterrupted run would."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from core.seeds import epoch_seed


class EpochShuffle(Sampler[int]):
    """A random permutation per epoch drawn from its own generator seeded with `core.seeds.epoch_seed(seed, epoch)`.

    Lightning calls `set_epoch` before each epoch (as for DistributedSampler); the global RNG is untouched.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size
