"""Callbacks every task shares."""
from __future__ import annotations

import pytorch_lightning as pl

from core import tracking
from core.seeds import epoch_seed


class EpochSeed(pl.Callback):
    """Re-seed every RNG at the start of each epoch with `core.seeds.epoch_seed(seed, epoch)`.

    An epoch's shuffling, noise and augmentation then depend only on its number, so a run resumed from an
    epoch-end checkpoint continues exactly as the uninterrupted run would have.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)


class LogLastCheckpoint(pl.Callback):
    """Log the final last.ckpt to the run's MLflow artifacts under checkpoints/ (before the logger closes the run)."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        if last:
            tracking.log_artifact(trainer, last, "checkpoints")
