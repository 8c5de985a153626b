"""Small helpers around the run's MLflow logger, so modules log artifacts one way (rank 0 only)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
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
