"""A training run's MLflow logging through its trainer's Lightning logger: params, tags, texts, figures, images,
artifacts and dataset records, on rank 0 only. (Metrics go through `self.log`.)"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# Lightning's own rank_zero_only (pytorch_lightning re-exports this object and sets its rank), imported from the
# small lightning_utilities package: the tools that only log a run (monitor-facemask, eval-lfw …) never import
# pytorch_lightning, whose import chain (lightning_fabric → torchmetrics → torchvision.models → torch._dynamo)
# took 3.0 s of a 6-second monitor call. The Lightning callbacks that write here live in training.callbacks.
from lightning_utilities.core.rank_zero import rank_zero_only

from core.mlflow_store import FolderDataset

if not hasattr(rank_zero_only, "rank"):  # what lightning_fabric sets on import (its _get_rank); Lightning's strategies
    # set it again when they start. Without Lightning loaded, the @rank_zero_only helpers below would raise.
    rank_zero_only.rank = next(
        (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK") if k in os.environ), 0
    )

if TYPE_CHECKING:
    from pytorch_lightning.loggers import MLFlowLogger

log = logging.getLogger(__name__)


def mlflow_logger(trainer: Any) -> MLFlowLogger | None:
    """The trainer's MLflow logger, or None when the run logs elsewhere (benchmarks, bare tests)."""
    from pytorch_lightning.loggers import MLFlowLogger  # a trainer exists: Lightning is loaded

    for logger in getattr(trainer, "loggers", []) or []:
        if isinstance(logger, MLFlowLogger):
            return logger
    return None


@rank_zero_only
def log_image(trainer: Any, image: np.ndarray, artifact_file: str) -> None:
    """Log an HxWx3 uint8 RGB image as `artifact_file` (e.g. 'samples/epoch_0001.png'; PNG or JPEG by its
    extension). Encoded by OpenCV and logged as an artifact: MLflow's `log_image` encodes through PIL at its
    default compression, 61 ms for a DCGAN sample grid against OpenCV's 5, every epoch."""
    import cv2

    logger = mlflow_logger(trainer)
    if logger is None:
        return
    folder, name = os.path.split(artifact_file)
    ok, encoded = cv2.imencode(os.path.splitext(name)[1] or ".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise ValueError(f"OpenCV cannot encode {artifact_file}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(encoded.tobytes())
        logger.experiment.log_artifact(logger.run_id, str(path), folder or None)


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


# Params that differ in every run by construction: its timestamped name, and every value inside the run's own folder
# (paths.output_dir, trainer.default_root_dir, callbacks.*.dirpath). As params they make every pair of runs differ,
# and the MLflow compare page's parallel-coordinates plot opens on the first three differing params by name; the
# run's config/resolved.yaml artifact keeps them, and the run folder is the `output_dir` tag.
PER_RUN_PARAMS = ("logger.run_name",)


OUTPUT_DIR_TAG = "output_dir"


def per_run_params(flat: dict[str, str], output_dir: str | None) -> set[str]:
    """The keys of `flat` (dotted config keys → str values) that name this run only: `PER_RUN_PARAMS`, and those whose
    value is `output_dir` or a path inside it."""
    inside = (output_dir, f"{output_dir}/") if output_dir else ()
    return {
        k for k, v in flat.items() if k in PER_RUN_PARAMS or (inside and (v == inside[0] or v.startswith(inside[1])))
    }


@rank_zero_only
def log_params(trainer: Any, config: dict) -> None:
    """Log a resolved config as MLflow params with dotted keys (`flatten`), 100 per call, without the per-run ones
    (`per_run_params`); the run folder becomes the `output_dir` tag."""
    from mlflow.entities import Param

    logger = mlflow_logger(trainer)
    if logger is None:
        return
    flat = flatten(config)
    output_dir = (config.get("paths") or {}).get("output_dir")
    skipped = per_run_params(flat, output_dir)
    if output_dir:
        logger.experiment.set_tag(logger.run_id, OUTPUT_DIR_TAG, str(output_dir))
    params = [Param(k, v) for k, v in flat.items() if k not in skipped]
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


@rank_zero_only
def log_dataset(trainer: Any, dataset: FolderDataset) -> None:
    """Record `dataset` as an input of the trainer's MLflow run (`MlflowClient.log_inputs`, what `mlflow.log_input`
    does for the active run): an `mlflow.data.meta_dataset.MetaDataset` whose source is the folder, digest
    `dataset.digest` and profile the counts; the input tags hold the context (`mlflow.data.context`) and the
    counts; the file list, counts, report and skipped files go to `datasets/<name>-<context>.json`."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    logger = mlflow_logger(trainer)
    if logger is None:
        return

    class _Counted(MetaDataset):  # the counts as the dataset's profile (a JSON string), shown by the UI's dataset panel
        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(dict(dataset.counts))}

    meta = _Counted(LocalArtifactDatasetSource(str(dataset.source)), name=dataset.name, digest=dataset.digest)
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, dataset.context)]
    tags += [InputTag(key, str(value)) for key, value in dataset.counts.items()]
    logger.experiment.log_inputs(logger.run_id, datasets=[DatasetInput(meta._to_mlflow_entity(), tags)])
    record = {
        "source": str(dataset.source),
        "digest": dataset.digest,
        "counts": dict(dataset.counts),
        "report": dataset.report,
        "skipped": list(dataset.skipped),
        "files": list(dataset.files),
    }
    logger.experiment.log_dict(
        logger.run_id, record, f"datasets/{dataset.name.replace('/', '_')}-{dataset.context}.json"
    )
