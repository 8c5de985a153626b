"""The one way to MLflow for each kind of run, and small helpers around the store and the server.

Training runs (experiments/train.py) log through the trainer's Lightning logger: metrics with `self.log` in the
modules (`log_epoch_metrics` where `self.log` cannot, see there), and params, tags, texts, figures and other
artifacts through the helpers here (rank 0 only). Tool runs (every other entry in experiments/) log through
`log_tool_run` only: one MLflow run per call, where a failing tracking store is a warning and the tool's result
stands.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from core.metric_names import EPOCH

log = logging.getLogger(__name__)


def mlflow_logger(trainer: Any) -> MLFlowLogger | None:
    """The trainer's MLflow logger, or None when the run logs elsewhere (benchmarks, bare tests)."""
    for logger in getattr(trainer, "loggers", []) or []:
        if isinstance(logger, MLFlowLogger):
            return logger
    return None


@rank_zero_only
def log_image(trainer: Any, image: np.ndarray, artifact_file: str) -> None:
    """Log an HxWx3 uint8 image as `artifact_file` (e.g. 'samples/epoch_0001.png')."""
    logger = mlflow_logger(trainer)
    if logger is not None:
        logger.experiment.log_image(logger.run_id, image, artifact_file=artifact_file)


@rank_zero_only
def log_figure(trainer: Any, figure: Any, artifact_file: str) -> None:
    """Log a matplotlib figure and close it."""
    import matplotlib.pyplot as plt

    logger = mlflow_logger(trainer)
    if logger is not None:
        logger.experiment.log_figure(logger.run_id, figure, artifact_file)
    plt.close(figure)


@rank_zero_only
def log_artifact(trainer: Any, path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file or a whole folder."""
    logger = mlflow_logger(trainer)
    if logger is None:
        return
    path = Path(path)
    if path.is_dir():
        logger.experiment.log_artifacts(logger.run_id, str(path), artifact_path)
    else:
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict → {"model.lr": "0.0002", ...}: Hydra's override syntax, so params read as overrides."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]  # MLflow's limit on a param value
    return flat


@rank_zero_only
def log_params(trainer: Any, config: dict) -> None:
    """Log a resolved config as MLflow params with dotted keys (`flatten`), 100 per call."""
    from mlflow.entities import Param

    logger = mlflow_logger(trainer)
    if logger is None:
        return
    params = [Param(k, v) for k, v in flatten(config).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per call
        logger.experiment.log_batch(logger.run_id, params=params[start : start + 100])


@rank_zero_only
def set_tags(trainer: Any, tags: dict[str, Any]) -> None:
    """Set run tags (str values): unlike params they may change, e.g. when a resumed run sees other data."""
    logger = mlflow_logger(trainer)
    if logger is not None:
        for key, value in tags.items():
            logger.experiment.set_tag(logger.run_id, key, str(value))


def log_epoch_metrics(trainer: Any, epoch: int, metrics: Mapping[str, Any]) -> None:
    """Write `metrics` (name → float or 0-d tensor) and `epoch` (0-based, as the `epoch` metric) to every logger
    of the trainer now, at step `epoch + 1`: the module's one route for epoch-end metrics `self.log` cannot take.

    Why not `self.log`: Lightning hands epoch-end values to the loggers only after the monitoring callbacks'
    `on_train_epoch_end` (pytorch_lightning/loops/fit_loop.py: `update_train_epoch_metrics` comes last), that
    is after ModelCheckpoint has written the epoch's checkpoint. A run killed in between resumes from that
    checkpoint with the epoch's metrics never in MLflow. Called from the module's `on_train_epoch_end`, this
    writes them before the checkpoint exists. The step is the 1-based epoch, so each epoch's values sit at
    one step whatever the number of batches. Loggers log on rank 0 only (their `log_metrics` is rank-zero)."""
    values = {EPOCH: epoch, **{key: float(value) for key, value in metrics.items()}}
    for logger in getattr(trainer, "loggers", []) or []:
        logger.log_metrics(values, step=epoch + 1)


@rank_zero_only
def log_text(trainer: Any, text: str, artifact_file: str) -> None:
    """Log `text` as the artifact `artifact_file` (e.g. 'config/resolved.yaml')."""
    logger = mlflow_logger(trainer)
    if logger is not None:
        logger.experiment.log_text(logger.run_id, text, artifact_file)


def log_dict(trainer: Any, data: dict, artifact_file: str) -> None:
    """Log a JSON/YAML-serialisable dict (label maps, reports)."""
    logger = mlflow_logger(trainer)
    if logger is not None and rank_zero_only.rank == 0:
        logger.experiment.log_dict(logger.run_id, data, artifact_file)


def write_temp_and_log(trainer: Any, name: str, write: Any, artifact_path: str | None = None) -> None:
    """Let `write(path)` produce a file in a temp dir, then log it (for formats MLflow cannot take in memory)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        write(path)
        log_artifact(trainer, path, artifact_path)


def _use_tool_experiment(cfg: Any) -> None:
    """Point MLflow's fluent API at the project's store (`cfg.paths.mlflow_uri`) and the tool's experiment (named
    `cfg.task_name`), creating it with the project's artifact location (`cfg.paths.mlflow_artifacts`) on first use.
    Raises whatever the store raises (MlflowException, OSError, …): `log_tool_run` turns that into a warning."""
    import mlflow

    mlflow.set_tracking_uri(cfg.paths.mlflow_uri)
    if mlflow.get_experiment_by_name(cfg.task_name) is None:
        mlflow.create_experiment(cfg.task_name, artifact_location=cfg.paths.mlflow_artifacts)
    mlflow.set_experiment(cfg.task_name)


def log_tool_run(
    cfg: Any,
    run_name: str | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    dicts: Mapping[str, Any] | None = None,
    files: Sequence[str | Path] = (),
) -> str | None:
    """Log one run of a tool (every entry of experiments/ but train) as one MLflow run: the one funnel for tools.

    The run, named `run_name` (MLflow picks a name when None), goes to the experiment `cfg.task_name` of the store
    `cfg.paths.mlflow_uri` and holds `params` (values logged as str), `metrics` (name → number), `dicts`
    ({artifact file, e.g. "report.json": JSON-serialisable value}), `files` (paths logged at the artifact root)
    and the resolved config as `config/resolved.yaml`.

    A tool's result is what it prints and writes, so the store cannot lose it: when the store fails (unreachable,
    locked, a rejected name), the run ends FAILED and the failure is one warning in the log, not a traceback.
    Call it after the result is written. Returns the run id, or None when the logging failed."""
    import mlflow
    from omegaconf import OmegaConf

    try:
        _use_tool_experiment(cfg)
        with mlflow.start_run(run_name=run_name) as run:
            if params:
                mlflow.log_params(dict(params))
            if metrics:
                mlflow.log_metrics(dict(metrics))
            for artifact_file, value in (dicts or {}).items():
                mlflow.log_dict(value, artifact_file)
            for path in files:
                mlflow.log_artifact(str(path))
            mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
    except Exception as exc:  # noqa: BLE001  (whatever the store raised: the result stands without it)
        message = str(exc).strip().splitlines()
        log.warning(
            "MLflow logging failed, so this result is not in the tracking store (%s): %s: %s",
            cfg.paths.mlflow_uri,
            type(exc).__name__,
            message[0] if message else "",
        )
        return None
    return run.info.run_id


def server_answers(tracking_uri: str, timeout: float = 5) -> bool:
    """Whether an MLflow server's /health endpoint answers within `timeout` seconds."""
    try:
        requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except requests.RequestException:
        return False
    return True


def store_lock(tracking_uri: str) -> contextlib.AbstractContextManager:
    """Processes sharing one local SQLite store must not create its tables or experiments at once."""
    if not tracking_uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock

    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{database}.lock")
