"""Train any task: `python experiments/train.py experiment=exp3_dcgan_hardhat_tricks [overrides]`.

Composes conf/train.yaml, builds datamodule, model, callbacks, MLflow logger and Trainer with
`hydra.utils.instantiate`, fits, logs the config and the last and best checkpoints to the same MLflow run, and
returns `optimized_metric` so that sweepers can optimise it: the run's best value when the best checkpoint monitors
it (`selection.metric`, which `optimized_metric` follows unless overridden), else its last value.

The MLflow lifecycle around the run (docs/tracking.md): the experiment is marked as a model-training one
with a description (the experiment's `experiment_description`: the paper section it reproduces); the datasets are recorded as run inputs
(`training.callbacks.LogDatasets`); system metrics are sampled while it trains (`system_metrics`); at the
end the trained model (the best checkpoint, else the last) is logged as an MLflow model with its signature and input
example (the task's pyfunc where it has one: `make serve` serves it), its ONNX export beside it (`log_model`), and
registered under the task's name (`register`). A task whose datamodule holds a test split is then evaluated once
on it with that checkpoint (`evaluate_test_split`).

A sweep trial (conf/sweep/*.yaml) that already FINISHED under its resumed sweep's parent run, with the same
overrides, is not trained again: the entry returns its logged value (`training.sweeps.finished_trial`).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from core import config
from core.checkpoints import (
    CHECKPOINTS_DIR,
    PROJECT_GLOBALS,
    RUN_ID_FILE,
    NoCheckpoint,
    find_checkpoint,
    load_checkpoint,
)
from core.errors import UserError
from core.metric_names import TEST_CHECKPOINT_TAG
from core.mlflow_store import (
    check_local_store,
    describe_experiment,
    end_if_running,
    server_answers,
    store_lock,
    system_metrics_sampler,
)
from core.registry import (
    log_onnx_model,
    log_pyfunc_model,
    log_pytorch_model,
    tensor_signature,
)
from experiments import log, user_errors
from training.callbacks import BestCheckpoint, LogDatasets, last_checkpoint_path
from training.mlflow_logging import log_artifact, log_params, log_text, set_tags
from training.sweeps import finished_trial


def resume_point(ckpt_path: str | None, log_dir: Path, task_name: str) -> tuple[str | None, str | None, str | None]:
    """The checkpoint to resume from, its MLflow run id, and the checkpoint folder the resumed run goes on writing in
    (`_continued_folder`; None: a new one, as for any run). "last" means the last.ckpt of the task's newest run
    (`core.checkpoints.find_checkpoint`; always "last", whatever the tools' default: resuming continues a run).

    The file is read once with the safe loader (`core.checkpoints`) before Lightning opens it: a missing file,
    a non-checkpoint or one whose pickle asks for code is a UserError here, before any training starts."""
    if ckpt_path is None:
        return None, None, None
    if ckpt_path == "last":
        try:
            path = find_checkpoint(log_dir, task_name, "last", key="ckpt_path")
        except NoCheckpoint as exc:
            raise UserError(f"ckpt_path=last: {exc} — nothing to resume") from None
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise UserError(f"ckpt_path={path}: file not found")
    checkpoint = load_checkpoint(path, key="ckpt_path")
    log.info("resuming from %s", path)
    run_id_file = path.parent.parent / RUN_ID_FILE
    run_id = run_id_file.read_text().strip() if run_id_file.exists() else None
    return str(path), run_id, _continued_folder(checkpoint, path)


def _continued_folder(checkpoint: dict, path: Path) -> str | None:
    """The folder a run resumed from `path` goes on writing its checkpoints in: `path`'s own folder, when `path` is
    the last.ckpt of a run's `checkpoints/` (the run's mlflow_run_id beside it), that folder can be written, and it
    is the folder the checkpoint's ModelCheckpoints saved into — spelled as they saved it, since Lightning restores a
    ModelCheckpoint's best score and files only for the very same `dirpath` string. Then best.ckpt stays the best of
    all the run's epochs; in a new folder it would hold the best of the resumed epochs alone, and the tools would
    take it as the newest. None otherwise (a checkpoint outside a run folder, a moved run, best.ckpt or an older
    epoch's file): a new folder, as any run, and nothing of the old one is touched."""
    folder = path.parent
    last = folder / "last.ckpt"
    if folder.name != CHECKPOINTS_DIR or not (folder.parent / RUN_ID_FILE).is_file():
        return None
    if not last.exists() or last.resolve() != path.resolve() or not os.access(folder, os.W_OK):
        return None
    for state in (checkpoint.get("callbacks") or {}).values():
        saved = state.get("dirpath") if isinstance(state, dict) else None
        if isinstance(saved, str) and Path(saved).is_dir() and Path(saved).samefile(folder):
            return saved
    return None


MIN_FREE_BYTES = 200 * 2**20


def check_output_dir(output_dir: Path) -> None:
    """Fail before training, not at the first checkpoint, when the run folder cannot take files."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to the run folder {output_dir}: {exc} — set paths.log_dir to a writable folder"
        ) from exc
    free = shutil.disk_usage(output_dir).free
    if free < MIN_FREE_BYTES:
        raise UserError(
            f"only {free / 2**20:.0f} MiB free under {output_dir}; checkpoints need more — free space or move paths.log_dir"
        )


def check_tracking_server(tracking_uri: str) -> None:
    """A remote MLflow server that does not answer is an error within seconds, not a hang in retries."""
    if tracking_uri.startswith(("http://", "https://")) and not server_answers(tracking_uri):
        raise UserError(
            f"MLflow server {tracking_uri} is unreachable; start it with `make mlflow-server`, "
            "or log locally with logger=mlflow"
        )


def trained_checkpoint(callbacks: list[pl.Callback], trainer: pl.Trainer) -> Path | None:
    """The checkpoint whose model is logged: best.ckpt when the run keeps one, else last.ckpt (None: neither)."""
    best = next((c for c in callbacks if isinstance(c, BestCheckpoint) and c.best_model_path), None)
    if best is not None:
        return Path(best.best_model_path)
    last = last_checkpoint_path(trainer)
    return Path(last) if last else None


def servable(model: pl.LightningModule, checkpoint: Path) -> tuple[torch.nn.Module, np.ndarray, object] | None:
    """What is logged as the MLflow model of a trained `model`: its class's `servable(checkpoint)` (the network in
    eval mode, a float32 input example of batch 2, the task's `export_onnx`; each task documents its shapes), or None
    when the task has none or no tensor-graph model (the dlib face descriptor)."""
    build = getattr(type(model), "servable", None)
    return build(checkpoint) if build is not None else None


def log_trained_model(cfg: DictConfig, model: pl.LightningModule, checkpoint: Path, run_id: str) -> str | None:
    """Log the model of `checkpoint` to run `run_id` and return the URI of its servable model (tagged `model.uri`):
    the task's pyfunc (its class's `pyfunc(checkpoint, work_dir)`, `core.registry.log_pyfunc_model`: photos or a
    count in, boxes or images out) with the ONNX export of the network beside it (`log_onnx_model`); for a task
    without one, the network in the PyTorch flavour with its ONNX export (`log_pytorch_model`). None when the task
    has no tensor-graph model (the dlib face descriptor)."""
    import tempfile

    what = servable(model, checkpoint)
    if what is None:
        log.warning("%s has no tensor-graph model (dlib backbone?): no MLflow model logged", type(model).__name__)
        return None
    module, example, export_onnx = what
    pyfunc = getattr(type(model), "pyfunc", None)
    tracking_uri = cfg.logger.tracking_uri
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / f"{cfg.task_name}.onnx"
        entry = export_onnx(checkpoint, onnx_path, key="the trained checkpoint")
        metadata = {"task": cfg.task_name, "checkpoint": checkpoint.name, "onnx": dict(entry)}
        if pyfunc is None:
            uri = log_pytorch_model(tracking_uri, run_id, module, example, onnx_path=onnx_path, metadata=metadata)
        else:
            uri = log_pyfunc_model(tracking_uri, run_id, pyfunc(checkpoint, Path(tmp)), metadata=metadata)
            log_onnx_model(tracking_uri, run_id, onnx_path, tensor_signature(module, example), metadata=metadata)
    log.info("logged the model of %s as %s (ONNX beside it)", checkpoint.name, uri)
    return uri


def evaluate_test_split(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule, callbacks: list, logger
) -> list[dict[str, float]]:
    """Evaluate the run's checkpoint (`trained_checkpoint`: best.ckpt, else last.ckpt) once on the test split with
    Lightning's `trainer.test`, into the same MLflow run (the module's `test_step` hooks log `test/...`), and tag
    the run with the checkpoint's file name (`test.checkpoint`). Nothing selects on these figures: they come after
    fitting, best.ckpt and early stopping are done, and the sweep value is read before (`_fit`).

    Runs only when the datamodule says it holds a test split (`has_test_split`) and the module has a `test_step`;
    skipped with a warning under several processes (DDP shards would each count a part), when the MLflow server
    went away mid-run, or without a checkpoint. Returns Lightning's list of logged test metrics ([] when skipped)."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    if not getattr(datamodule, "has_test_split", False) or not is_overridden("test_step", model):
        return []
    checkpoint = trained_checkpoint(callbacks, trainer)
    if trainer.world_size > 1 or checkpoint is None or getattr(logger, "offline_run_id", None):
        why = (
            f"{trainer.world_size} processes"
            if trainer.world_size > 1
            else "no checkpoint was written"
            if checkpoint is None
            else "the MLflow server is away"
        )
        log.warning("test split not evaluated (%s): the run has no test/ figures", why)
        return []
    log.info("evaluating %s on the test split", checkpoint)

    class CheckpointEpoch(pl.Callback):
        """Logs `epoch` beside the test figures as the checkpoint's own (0-based) epoch: Lightning would log the
        epoch count the restored checkpoint holds, one past any epoch trained."""

        def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            pl_module.log("epoch", float(trainer.current_epoch - 1), logger=True)

    trainer.callbacks.append(CheckpointEpoch())
    try:
        with torch.serialization.safe_globals(list(PROJECT_GLOBALS)):
            results = trainer.test(
                model, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False, weights_only=True
            )
    finally:
        trainer.callbacks.pop()
    if trainer.is_global_zero:
        set_tags(trainer, {TEST_CHECKPOINT_TAG: checkpoint.name})
        for name, value in sorted(results[0].items() if results else []):
            log.info("%s = %.4g", name, value)
    return results


def train(cfg: DictConfig) -> float | None:
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    check_output_dir(output_dir)
    check_tracking_server(cfg.logger.tracking_uri)
    check_local_store(cfg.logger.tracking_uri)
    done = finished_trial(cfg)  # a resumed sweep's trial that finished before: its value, not a new training
    if done is not None:
        run, value = done
        log.info(
            "sweep trial %s finished in run %s (%s = %s): not trained again",
            cfg.tags["sweep.trial"],
            run,
            cfg.optimized_metric,
            value,
        )
        return value
    ckpt_path, run_id, checkpoint_dir = resume_point(cfg.ckpt_path, Path(cfg.paths.log_dir), cfg.task_name)

    datamodule = instantiate(cfg.data, _convert_="partial")
    model = instantiate(cfg.model, _convert_="partial")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # a callback config may build nothing (no best checkpoint without a monitor, no early stopping without patience)
    callbacks = [callback for c in cfg.callbacks.values() if (callback := instantiate(c)) is not None]
    if checkpoint_dir is not None:  # a resumed run goes on writing its checkpoints where they are (resume_point)
        default = os.path.realpath(Path(cfg.paths.output_dir) / CHECKPOINTS_DIR)  # as ModelCheckpoint spells a dirpath
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath == default:
                callback.dirpath = checkpoint_dir
    callbacks.append(LogDatasets())
    with store_lock(cfg.logger.tracking_uri):
        logger = instantiate(cfg.logger, run_id=run_id)
        _ = logger.experiment  # creates the store, experiment and run now, one process at a time
    try:
        return _fit(cfg, datamodule, model, callbacks, logger, ckpt_path, run_id)
    except BaseException as exc:
        # An interrupted or failed training ends its own run (KILLED for Ctrl-C, SIGTERM and exits, FAILED for an
        # error) when Lightning did not: an interrupt outside `fit`, or a launcher stopping its worker.
        status = "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit) else "FAILED"
        if rank_zero_only.rank == 0 and getattr(logger, "run_id", None):
            end_if_running(cfg.logger.tracking_uri, logger.run_id, status)
        raise


def _fit(cfg, datamodule, model, callbacks, logger, ckpt_path, run_id) -> float | None:
    """Build the Trainer, log the run's config, fit, log the trained model; returns the optimized metric."""
    output_dir = Path(cfg.paths.output_dir)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)

    if trainer.is_global_zero:  # under DDP the other ranks log nothing (their logger has no experiment)
        description = cfg.experiment_description
        describe_experiment(logger.experiment, logger.experiment_id, description)
        (output_dir / RUN_ID_FILE).write_text(logger.run_id)
        bites = config.caps_that_bite(cfg)  # the profile's caps that lower what the experiment asks
        if bites:
            log.info("%s", config.describe_bites(cfg))  # "trainer=cpu_small caps max_epochs 1000 → 5, …"
        set_tags(trainer, {"profile": cfg.profile.name, "profile.caps": ", ".join(map(str, bites)) or "none"})
        if run_id is None:
            log_params(trainer, OmegaConf.to_container(cfg, resolve=True))
        log_text(trainer, OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
        hydra_dir = output_dir / ".hydra"
        if hydra_dir.is_dir():
            log_artifact(trainer, hydra_dir, "config/hydra")
        log.info(
            "MLflow run %s in experiment %r (%s)", logger.run_id, cfg.logger.experiment_name, cfg.logger.tracking_uri
        )

    sampler = None
    if cfg.system_metrics.enabled and trainer.is_global_zero:
        sampler = system_metrics_sampler(
            cfg.logger.tracking_uri, logger.run_id, cfg.system_metrics.sampling_interval, resume=run_id is not None
        )
    # Lightning reads ckpt_path itself: weights_only=True explicitly (also when TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    # is set), under the same allow-list as core.checkpoints
    try:
        with torch.serialization.safe_globals(list(PROJECT_GLOBALS)):
            trainer.fit(
                torch.compile(model) if cfg.compile else model,
                datamodule=datamodule,
                ckpt_path=ckpt_path,
                weights_only=True,
            )
    finally:
        if sampler is not None:
            sampler.finish()

    if trainer.is_global_zero and (cfg.log_model or cfg.register):
        checkpoint = trained_checkpoint(callbacks, trainer)
        if getattr(logger, "offline_run_id", None):  # logger=mlflow_server, and the server went away mid-run
            log.warning("the MLflow server is away: no MLflow model logged; the checkpoint is %s", checkpoint)
        elif checkpoint is None:
            log.warning("no checkpoint was written: no MLflow model logged")
        elif log_trained_model(cfg, model, checkpoint, logger.run_id) and cfg.register:
            from experiments.register import register_and_promote  # the registry's champion rule

            register_and_promote(cfg.logger.tracking_uri, logger.run_id, cfg.task_name)

    optimized = optimized_value(cfg, callbacks, trainer)  # read before the test run replaces the logged metrics
    evaluate_test_split(trainer, model, datamodule, callbacks, logger)
    return optimized


def optimized_value(cfg: DictConfig, callbacks: list, trainer: pl.Trainer) -> float | None:
    """The value of `optimized_metric` that the entry returns for sweepers (None when it is unset): its best
    value when the best checkpoint monitors it, else its last logged value. Raises UserError when it was never logged."""
    if cfg.optimized_metric:
        best = next((c for c in callbacks if isinstance(c, BestCheckpoint) and c.monitor == cfg.optimized_metric), None)
        if best is not None and best.best_model_score is not None:
            return float(best.best_model_score)  # the run's best value (its best.ckpt), not its last epoch's
        value = trainer.callback_metrics.get(cfg.optimized_metric)
        if value is None:
            raise UserError(
                f"optimized_metric {cfg.optimized_metric!r} was not logged; logged: {sorted(trainer.callback_metrics)}"
            )
        return float(value)
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # a launcher's own handler (submitit's) is kept
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with user_errors():
        return train(cfg)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a launcher or `kill` stopping the training) as an exit, so that the run is ended in its store."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()
