"""Callbacks every task shares."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torch import Tensor

from core import tracking
from core.checkpoints import BEST_FILENAME
from core.errors import UserError
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
    """Log the final last.ckpt, and the best checkpoint when the run keeps one (`BestCheckpoint`), to the run's
    MLflow artifacts under checkpoints/ (before the logger closes the run)."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        if last:
            tracking.log_artifact(trainer, last, "checkpoints")
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, BestCheckpoint) and callback.best_model_path:
                tracking.log_artifact(trainer, callback.best_model_path, "checkpoints")


MODES = ("min", "max")


class BestCheckpoint(ModelCheckpoint):
    """`checkpoints/best.ckpt`: the epoch with the best value of `monitor` so far (`mode` "max" or "min"), beside
    the unmonitored ModelCheckpoint that keeps the latest epoch and `last.ckpt` (resume). One file, overwritten when
    an epoch improves on the best (save_top_k=1; an epoch whose value is NaN never counts as better).

    `best_model_score` (Lightning's) is the best value, `best_epoch` the 0-based epoch it was reached at (None
    before the first save); both survive a resume into the same checkpoint folder. At the end of fitting both go
    to the run's loggers as `best/<monitor>` and `best/epoch` (e.g. `best/val/fitness`).
    """

    def __init__(self, dirpath: str, monitor: str, mode: str = "max", filename: str = BEST_FILENAME) -> None:
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=monitor, mode=mode, save_top_k=1, auto_insert_metric_name=False
        )
        self.best_epoch: int | None = None

    def _update_best_and_save(
        self, current: Tensor, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]
    ) -> None:
        # Lightning calls this only for an epoch that enters the top 1, i.e. a new best: remember its epoch
        super()._update_best_and_save(current, trainer, monitor_candidates)
        self.best_epoch = int(monitor_candidates["epoch"])

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # ultralytics serialises an epoch's checkpoint once and writes the bytes as last.pt and, when the epoch is the
        # best, as best.pt. The same here: when the epoch's checkpoint was just written (by the ModelCheckpoint
        # before this one), best.ckpt is a copy of that file, not a second dump (0.3 s an epoch for the 40 MB face-mask
        # checkpoint, 30 ms to copy). The copy holds this callback's state as it was before this epoch's update, as
        # the epoch's own file does; resuming reads that file, and best.ckpt is read for its weights.
        source = self._this_steps_checkpoint(trainer)
        if source is None:
            super()._save_checkpoint(trainer, filepath)
            return
        if trainer.is_global_zero:  # as Lightning's CheckpointIO writes: rank 0 only
            partial = Path(f"{filepath}.partial")
            shutil.copyfile(source, partial)
            os.replace(partial, filepath)  # a reader never sees half a best.ckpt
        trainer.strategy.barrier("BestCheckpoint.copy")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:  # as Lightning's ModelCheckpoint._save_checkpoint does
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _this_steps_checkpoint(self, trainer: pl.Trainer) -> Path | None:
        """The full checkpoint of this very step that a ModelCheckpoint before this one in the callback order has
        written (Lightning keeps their order; the configs put the latest-epoch one first), else None."""
        for callback in trainer.checkpoint_callbacks:
            if callback is self:
                return None
            saved = getattr(callback, "_last_checkpoint_saved", "")
            if (
                isinstance(callback, ModelCheckpoint)
                and not callback.save_weights_only
                and callback._last_global_step_saved == trainer.global_step
                and saved
                and Path(saved).is_file()
            ):
                return Path(saved)
        return None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:  # as Lightning restores best_model_score
            self.best_epoch = state_dict.get("best_epoch")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.best_model_score is None or self.best_epoch is None:
            return
        metrics = {f"best/{self.monitor}": float(self.best_model_score), "best/epoch": float(self.best_epoch)}
        for logger in trainer.loggers:
            logger.log_metrics(metrics)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"monitor.mode={mode!r}: must be max (higher is better) or min (lower is better)")


def best_checkpoint(dirpath: str, monitor: str | None, mode: str = "max") -> BestCheckpoint | None:
    """The run's `BestCheckpoint` on `monitor` (config: `monitor.metric`, `monitor.mode`), or None when the
    experiment monitors nothing (then the tools fall back to last.ckpt). Raises UserError for a mode other than
    "max" or "min"."""
    if monitor is None:
        return None
    _check_mode(mode)
    return BestCheckpoint(dirpath=dirpath, monitor=monitor, mode=mode)


def early_stopping(monitor: str | None, mode: str = "max", patience: int | None = None) -> EarlyStopping | None:
    """Lightning's EarlyStopping: stop after `patience` validation checks (epochs here) without an improvement of
    `monitor`, or None (no early stopping) when `patience` is null or nothing is monitored. A monitored metric
    that was not logged ends the run with Lightning's error (strict). Raises UserError for a negative patience or a
    mode other than "max"/"min"."""
    if patience is None or monitor is None:
        return None
    _check_mode(mode)
    if patience < 0:
        raise UserError(f"patience={patience}: must be null (no early stopping) or ≥ 0 epochs")
    return EarlyStopping(monitor=monitor, mode=mode, patience=patience)
