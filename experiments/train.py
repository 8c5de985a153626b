"""Train any task: `python experiments/train.py experiment=exp3_dcgan_hardhat_tricks [overrides]`.

Composes conf/train.yaml, builds datamodule, model, callbacks, MLflow logger and Trainer with
`hydra.utils.instantiate`, fits, logs the config and the last and best checkpoints to the same MLflow run, and
returns `optimized_metric` so that sweepers can optimise it: the run's best value when the best checkpoint monitors
it (`monitor.metric`, which `optimized_metric` follows unless overridden), else its last value.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from core import config, tracking
from core.checkpoints import PROJECT_GLOBALS, RUN_ID_FILE, NoCheckpoint, find_checkpoint, load_checkpoint
from core.errors import UserError
from experiments import log, user_errors
from lightning_modules.callbacks import BestCheckpoint


def resume_point(ckpt_path: str | None, log_dir: Path, task_name: str) -> tuple[str | None, str | None]:
    """The checkpoint to resume from and its MLflow run id. "last" means the last.ckpt of the task's newest run
    (`core.checkpoints.find_checkpoint`; always "last", whatever the tools' default: resuming continues a run).

    The file is read once with the safe loader (`core.checkpoints`) before Lightning opens it: a missing file,
    a non-checkpoint or one whose pickle asks for code is a UserError here, before any training starts."""
    if ckpt_path is None:
        return None, None
    if ckpt_path == "last":
        try:
            path = find_checkpoint(log_dir, task_name, "last", key="ckpt_path")
        except NoCheckpoint as exc:
            raise UserError(f"ckpt_path=last: {exc} — nothing to resume") from None
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise UserError(f"ckpt_path={path}: file not found")
    load_checkpoint(path, key="ckpt_path")
    log.info("resuming from %s", path)
    run_id_file = path.parent.parent / RUN_ID_FILE
    return str(path), run_id_file.read_text().strip() if run_id_file.exists() else None


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
    if tracking_uri.startswith(("http://", "https://")) and not tracking.server_answers(tracking_uri):
        raise UserError(
            f"MLflow server {tracking_uri} is unreachable; start it with `make mlflow-server`, "
            "or log locally with logger=mlflow"
        )


def train(cfg: DictConfig) -> float | None:
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    check_output_dir(output_dir)
    check_tracking_server(cfg.logger.tracking_uri)
    ckpt_path, run_id = resume_point(cfg.ckpt_path, Path(cfg.paths.log_dir), cfg.task_name)

    datamodule = instantiate(cfg.data, _convert_="partial")
    model = instantiate(cfg.model, _convert_="partial")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # a callback config may build nothing (no best checkpoint without a monitor, no early stopping without patience)
    callbacks = [callback for c in cfg.callbacks.values() if (callback := instantiate(c)) is not None]
    with tracking.store_lock(cfg.logger.tracking_uri):
        logger = instantiate(cfg.logger, run_id=run_id)
        _ = logger.experiment  # creates the store, experiment and run now, one process at a time
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)

    if trainer.is_global_zero:  # under DDP the other ranks log nothing
        (output_dir / RUN_ID_FILE).write_text(logger.run_id)
        bites = config.caps_that_bite(cfg)  # the profile's caps that lower what the experiment asks
        if bites:
            log.info("%s", config.describe_bites(cfg))  # "trainer=cpu_small caps max_epochs 1000 → 5, …"
        tracking.set_tags(trainer, {"profile": cfg.profile.name, "profile.caps": ", ".join(map(str, bites)) or "none"})
        if run_id is None:
            tracking.log_params(trainer, OmegaConf.to_container(cfg, resolve=True))
        tracking.log_text(trainer, OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
        hydra_dir = output_dir / ".hydra"
        if hydra_dir.is_dir():
            tracking.log_artifact(trainer, hydra_dir, "config/hydra")
        log.info(
            "MLflow run %s in experiment %r (%s)", logger.run_id, cfg.logger.experiment_name, cfg.logger.tracking_uri
        )

    # Lightning reads ckpt_path itself: weights_only=True explicitly (also when TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    # is set), under the same allow-list as core.checkpoints
    with torch.serialization.safe_globals(list(PROJECT_GLOBALS)):
        trainer.fit(
            torch.compile(model) if cfg.compile else model,
            datamodule=datamodule,
            ckpt_path=ckpt_path,
            weights_only=True,
        )

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
    with user_errors():
        return train(cfg)


if __name__ == "__main__":
    main()
