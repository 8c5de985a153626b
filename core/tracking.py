"""Small helpers around MLflow: the run's logger (modules log artifacts one way, rank 0 only), the store, the server."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import requests
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only


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
def log_params(logger: MLFlowLogger, config: dict) -> None:
    """Log a resolved config as MLflow params with dotted keys."""
    from mlflow.entities import Param

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


@rank_zero_only
def log_text(trainer: Any, text: str, artifact_file: str) -> None:
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
