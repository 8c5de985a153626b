"""Callbacks every task shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torch import Tensor

from core.checkpoints import BEST_FILENAME
from core.errors import UserError
from core.metric_names import EPOCH
from core.seeds import epoch_seed
from training.mlflow_logging import log_artifact, log_dataset, mlflow_logger


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
        last = last_checkpoint_path(trainer)
        if last:
            log_artifact(trainer, last, "checkpoints")
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, BestCheckpoint) and callback.best_model_path:
                log_artifact(trainer, callback.best_model_path, "checkpoints")


def last_checkpoint_path(trainer: pl.Trainer) -> str:
    """The run's last.ckpt (the ModelCheckpoint with `save_last`), or "" before it is written or without one."""
    keeper = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.save_last), None)
    return keeper.last_model_path if keeper is not None else ""


MODES = ("min", "max")


class BestCheckpoint(ModelCheckpoint):
    """`checkpoints/best.ckpt`: the epoch with the best value of `monitor` so far (`mode` "max" or "min"), beside
    the unmonitored ModelCheckpoint that keeps the latest epoch and `last.ckpt` (resume). One file, overwritten when
    an epoch improves on the best (save_top_k=1; an epoch whose value is NaN never counts as better).

    `best_model_score` (Lightning's) is the best value, `best_epoch` the 0-based epoch it was reached at (None
    before the first save); both survive a resume into the same checkpoint folder. At the end of fitting both go
    to the run's loggers as `best/<monitor>` and `best/epoch` (e.g. `best/val/fitness`).

    It must come before the latest-epoch ModelCheckpoint in the callback list (Lightning keeps the order of its
    checkpoint callbacks; conf/callbacks/default.yaml lists it first): that one's file, which resuming reads, then
    holds this epoch's best, not the one before it.
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
        raise UserError(f"selection.mode={mode!r}: must be max (higher is better) or min (lower is better)")


def best_checkpoint(dirpath: str, monitor: str | None, mode: str = "max") -> BestCheckpoint | None:
    """The run's `BestCheckpoint` on `monitor` (config: `selection.metric`, `selection.mode`), or None when the
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
    # strict=False: a metric on its own cadence (the DCGAN's quality pass) is absent from the epochs it skips, and
    # those epochs are not checks
    return EarlyStopping(monitor=monitor, mode=mode, patience=patience, strict=False)


class EpochMetrics(pl.Callback):
    """Epoch-end metrics that `self.log` cannot take, written to every logger of the trainer exactly once per
    epoch, at step `epoch + 1` (the 1-based epoch, so each epoch's values sit at one step whatever the number of
    batches), together with `epoch` (0-based, as the `epoch` metric), and only once the epoch's checkpoint exists.

    A module makes one in `__init__`, returns it from `configure_callbacks` and calls `stage(epoch, metrics)`
    (name → float or 0-d tensor) in its `on_train_epoch_end`.

    Why this order. Lightning runs the module's `on_train_epoch_end`, then the checkpoint callbacks' (which write
    the epoch's checkpoint), then hands `self.log`'s epoch values to the loggers
    (pytorch_lightning/loops/fit_loop.py, `_FitLoop.on_advance_end`). Writing to the loggers before the checkpoint
    logs an epoch twice when its checkpoint is never written (a full disk, a kill) and the resumed run repeats the
    epoch; writing after it (Lightning's way) loses the epoch when the run dies in between. Here the staged values
    are this callback's state, so they travel in the epoch's checkpoint, and they are written when the next epoch
    starts or training ends, i.e. after the checkpoint. A run resumed from a checkpoint whose values may not have
    been written yet (it died between the checkpoint and the next epoch) writes, at `on_train_start`, the values
    that MLflow does not already hold at that step. An epoch whose checkpoint was never written is logged by the
    resumed run that repeats it. Loggers log on rank 0 only (their `log_metrics` is rank-zero)."""

    def __init__(self) -> None:
        self.staged: dict[str, Any] | None = None  # {"epoch": int, "values": {name: float}}
        self._restored = False

    def stage(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Keep `metrics` of the 0-based `epoch` for the loggers; written after this epoch's checkpoint."""
        self.staged = {"epoch": epoch, "values": {EPOCH: float(epoch), **{k: float(v) for k, v in metrics.items()}}}
        self._restored = False

    def state_dict(self) -> dict[str, Any]:
        return {"staged": self.staged}  # plain ints and floats: loadable with weights_only=True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.staged = state_dict.get("staged")
        self._restored = self.staged is not None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.staged is not None and self._restored:
            self._write(trainer, missing_only=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: pl.Trainer, missing_only: bool = False) -> None:
        if self.staged is None:
            return
        step, values = self.staged["epoch"] + 1, dict(self.staged["values"])
        self.staged, self._restored = None, False
        logger = mlflow_logger(trainer)
        if missing_only and logger is not None and trainer.is_global_zero:
            # a row with this step and value may also come from Lightning's step logging (it adds `epoch` to
            # every row it logs): either way the value is there, and writing it again would be a duplicate
            values = {
                key: value
                for key, value in values.items()
                if not any(
                    m.step == step and m.value == value
                    for m in logger.experiment.get_metric_history(logger.run_id, key)
                )
            }
        if values:
            for each in getattr(trainer, "loggers", []) or []:
                each.log_metrics(values, step=step)
                if callable(getattr(each, "flush", None)):  # a logger that holds rows (BufferedMLFlowLogger)
                    each.flush()


class LogDatasets(pl.Callback):
    """Record the datamodule's `dataset_inputs()` (a list of `FolderDataset`) as the run's MLflow dataset inputs
    at the start of training, once its dataloaders exist (the face data decides what it skips there). A
    datamodule without the hook logs none."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        describe = getattr(trainer.datamodule, "dataset_inputs", None)
        if describe is None:
            return
        for dataset in describe():
            log_dataset(trainer, dataset)
