"""The one rule that turns a run's seed and an epoch number into that epoch's seed."""

from __future__ import annotations

import numpy as np


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch` (0-based) of a run seeded with `seed`: an int in [0, 2**32).

    Why one rule: every per-epoch random stream (the global RNGs re-seeded by `EpochSeed`, the data order of
    `EpochShuffle` and the face `ViewSampler`) must be distinct for each epoch, so epochs do not repeat one
    another, and must depend on nothing but (seed, epoch), so a run resumed from an epoch-end checkpoint draws
    exactly the streams the uninterrupted run would have (the bit-identical resume tests check this).

    Formula: the first 32-bit word of numpy's `SeedSequence([seed, epoch])` (its hash of the entropy pool). Unlike
    an affine mix such as `seed * 1000 + epoch` it has no structured collisions (seed 0 at epoch 1000 is not
    seed 1 at epoch 0), and 32 bits is what `pytorch_lightning.seed_everything` accepts, so the same value
    seeds torch generators and the global RNGs alike.

    Raises ValueError when `seed` or `epoch` is negative (SeedSequence takes non-negative entropy only).
    """
    if seed < 0 or epoch < 0:
        raise ValueError(f"epoch_seed takes non-negative seed and epoch, got seed={seed}, epoch={epoch}")
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint32)[0])
