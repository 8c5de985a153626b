"""The one way to MLflow for each kind of run, and small helpers around the store and the server.

Training runs (experiments/train.py) log through the trainer's Lightning logger: metrics with `self.log` in the
modules (`lightning_modules.callbacks.EpochMetrics` where `self.log` cannot, see there), and params, tags, texts,
figures and other artifacts through the helpers here (rank 0 only). Tool runs (every other entry in experiments/)
log through `log_tool_run` only: one MLflow run per call, where a failing tracking store is a warning and the tool's
result stands.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import requests
from hydra.experimental.callback import Callback

# Lightning's own rank_zero_only (pytorch_lightning re-exports this object and sets its rank), imported from the
# small lightning_utilities package: the tools that only log a run (monitor-facemask, eval-lfw …) never import
# pytorch_lightning, whose import chain (lightning_fabric → torchmetrics → torchvision.models → torch._dynamo)
# took 3.0 s of a 6-second monitor call. The Lightning callbacks that write here live in lightning_modules.callbacks.
from lightning_utilities.core.rank_zero import rank_zero_only

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


def _use_tool_experiment(cfg: Any) -> None:
    """Point MLflow's fluent API at the project's store (`cfg.paths.mlflow_uri`) and the tool's experiment (named
    `cfg.task_name`), creating it with the project's artifact location (`cfg.paths.mlflow_artifacts`) on first use.
    Raises whatever the store raises (MlflowException, OSError, …): `log_tool_run` turns that into a warning."""
    import mlflow

    mlflow.set_tracking_uri(cfg.paths.mlflow_uri)
    if mlflow.get_experiment_by_name(cfg.task_name) is None:
        mlflow.create_experiment(
            cfg.task_name, artifact_location=cfg.paths.mlflow_artifacts, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
        )
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


STORE_WAIT_S = 30.0  # how long a training waits for a local store that another program holds locked


def check_local_store(tracking_uri: str, wait_s: float = STORE_WAIT_S) -> None:
    """Before a training writes to a local SQLite store: raise UserError, in one line naming the file and what helps,
    when the file is not an SQLite database or is damaged, when another program holds it locked for more than
    `wait_s` seconds, or when its schema is not the one the installed MLflow writes (a store of an older MLflow:
    `mlflow db upgrade`; of a newer one: that MLflow). The check opens the file read-only, so a store it refuses is
    left as it was. A missing file (a new store) and a server URI pass."""
    import sqlite3

    from core.errors import UserError

    if not tracking_uri.startswith("sqlite:///"):
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    if not database.is_file():
        return
    other = "or point paths.mlflow_dir at another folder"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=wait_s)) as db:
            checked = db.execute("PRAGMA quick_check").fetchone()
            if not checked or checked[0] != "ok":
                raise sqlite3.DatabaseError(checked[0] if checked else "no answer to quick_check")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revision = (
                db.execute("SELECT version_num FROM alembic_version").fetchone()
                if "alembic_version" in tables
                else None
            )
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise UserError(
                f"MLflow store {database} is locked by another program (waited {wait_s:.0f} s): close it, {other}"
            ) from exc
        raise UserError(f"MLflow store {database} cannot be read ({exc}): move it aside, {other}") from exc
    except sqlite3.DatabaseError as exc:
        raise UserError(
            f"MLflow store {database} is damaged or not a database ({exc}): move it aside, {other}"
        ) from exc
    if not tables:
        return  # an empty database: MLflow creates its tables
    import mlflow
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    scripts = ScriptDirectory.from_config(_get_alembic_config(tracking_uri))
    head, found = scripts.get_current_head(), revision[0] if revision else None
    if found == head:
        return
    known = found is not None and any(r.revision == found for r in scripts.walk_revisions())
    if known:
        raise UserError(
            f"MLflow store {database} was written by an older MLflow (schema {found}; MLflow {mlflow.__version__} "
            f"writes {head}): back it up and run `mlflow db upgrade sqlite:///{database}`, {other}"
        )
    raise UserError(
        f"MLflow store {database} was written by a newer MLflow (schema {found or 'unversioned'}, unknown to MLflow "
        f"{mlflow.__version__}): use that MLflow, {other}"
    )


# ---- experiment metadata -----------------------------------------------------------------------------------
# The tags MLflow's UI reads: the experiment's description (its "notes") and its kind. An experiment without a
# kind is guessed by the UI, which may open it in the GenAI view; "custom_model_development" opens the
# model-training view (mlflow/server/js: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT).
DESCRIPTION_TAG = "mlflow.note.content"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def describe_experiment(client: Any, experiment_id: str, description: str | None) -> None:
    """Mark the experiment as a model-training one (`mlflow.experimentKind`) and give it `description` (Markdown,
    `mlflow.note.content`) when it has none yet: a description edited in the UI is kept.

    MLflow 3.17's UI opens an experiment in the view its workflow type names (the link's `workflowType`, else the
    browser's stored choice), not by this tag: `experiments/mlflow_ui.py` prints links that name it."""
    tags = client.get_experiment(experiment_id).tags
    if tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    if description and not tags.get(DESCRIPTION_TAG):
        client.set_experiment_tag(experiment_id, DESCRIPTION_TAG, description)


# ---- datasets ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FolderDataset:
    """One split of an image folder as a run used it, for `log_dataset` (a datamodule's `dataset_inputs()`).

    `files`: the paths of the images used, relative to `source` (POSIX, in the datamodule's order); `context`:
    "training" or "validation"; `counts`: name → number (images, boxes, skipped …); `report`: a JSON-serialisable
    report of the conversion that produced the split (VOC → YOLO), `skipped`: the files left out, with why."""

    name: str
    source: Path
    files: tuple[str, ...]
    context: str
    counts: Mapping[str, int] = field(default_factory=dict)
    report: Mapping[str, Any] | None = None
    skipped: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """The MD5 hex digest (32 characters; MLflow keeps up to 36) of the sorted file list, one path per line
        ("a.png\\nb.png\\n"): it changes when a file is added, removed or renamed, not when one is re-encoded."""
        return hashlib.md5("".join(f"{f}\n" for f in sorted(self.files)).encode(), usedforsecurity=False).hexdigest()


def dataset_name(root: str | Path) -> str:
    """A folder's name for MLflow's dataset list: its last two parts ("fruits360/Training")."""
    root = Path(root)
    return f"{root.parent.name}/{root.name}" if root.parent.name else root.name


def folder_files(root: Path, files: Sequence[str | Path]) -> tuple[str, ...]:
    """`files` relative to `root` as POSIX strings (a file outside `root` keeps its full path)."""
    root = Path(root)
    out = []
    for f in files:
        f = Path(f)
        out.append(f.relative_to(root).as_posix() if f.is_relative_to(root) else f.as_posix())
    return tuple(out)


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


# ---- system metrics ----------------------------------------------------------------------------------------
def system_metrics_monitor(tracking_uri: str, run_id: str, sampling_interval: float, resume: bool = False) -> Any:
    """MLflow's `SystemMetricsMonitor` for a run the Lightning logger created (what `log_system_metrics=True` on
    `mlflow.start_run` starts for fluent runs): CPU %, memory, disk and network, and GPU utilisation and memory
    when pynvml (NVIDIA) or pyrsmi (ROCm) finds one, as `system/*` metrics every `sampling_interval` seconds.
    Started here; call `.finish()` after training. `resume`: continue the step count of a resumed run."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=sampling_interval, resume_logging=resume, tracking_uri=tracking_uri
    )
    monitor.start()
    return monitor


# ---- models ------------------------------------------------------------------------------------------------
MODEL_URI_TAG = "model.uri"  # the run's logged PyTorch model (models:/<model id>), read by `register_run_model`
ONNX_MODEL_URI_TAG = "model.onnx_uri"


def use_store(tracking_uri: str) -> None:
    """Point MLflow's fluent API (model logging, registry) at `tracking_uri`, also for the registry."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def pinned_requirements() -> list[str]:
    """The pip requirements of a logged model, pinned to the installed versions: given, MLflow does not infer them
    (which loads the model in a subprocess for seconds per run)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "numpy", "mlflow")]


def log_pytorch_model(
    tracking_uri: str,
    run_id: str,
    module: Any,
    example: np.ndarray,
    *,
    name: str = "model",
    onnx_path: str | Path | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Log `module` (a torch.nn.Module in eval mode: one float32 tensor in, one tensor out) to run `run_id` as an
    MLflow model `name` of the PyTorch flavour, serialised with `torch.export` ("pt2": loading runs no pickled code)
    with the signature inferred from `example` (a float32 array, batch first) and its output, and `example` as the
    input example (of the PyTorch model); with `onnx_path`, the ONNX file of the same weights beside it as `<name>-onnx` (ONNX flavour,
    same signature). Both are logged models of the run's experiment, their files under its artifact location.
    The model URIs are tagged on the run (`model.uri`, `model.onnx_uri`). Returns the PyTorch
    model's URI (models:/<model id>). Raises whatever MLflow or torch.export raise."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    use_store(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    # MLflow creates the logged model in the fluent API's current experiment, not the run's: without this it
    # would go to the store's Default experiment, its files to ./mlruns of the working directory
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, output)
    requirements = pinned_requirements()
    # The input example is written as JSON after a deep copy and a cast per value (a detector's image batch: 11 s
    # each time, profiled), so only the PyTorch model, which torch.export traces with it, gets it; the ONNX model
    # has the same signature.
    info = mlflow.pytorch.log_model(
        module,
        name=name,
        run_id=run_id,
        signature=signature,
        input_example=example,
        serialization_format="pt2",
        pip_requirements=requirements,
        metadata=dict(metadata or {}),
    )
    client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    if onnx_path is not None:
        import onnx

        onnx_info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name=f"{name}-onnx",
            run_id=run_id,
            signature=signature,
            pip_requirements=[*requirements, f"onnx=={onnx.__version__}"],
            metadata=dict(metadata or {}),
        )
        client.set_tag(run_id, ONNX_MODEL_URI_TAG, onnx_info.model_uri)
    return info.model_uri


def register_run_model(tracking_uri: str, run_id: str, name: str) -> Any:
    """Register the PyTorch model logged by run `run_id` (its `model.uri` tag) in the Model Registry as a new
    version of `name`, with the run's metrics as version tags (name → value as text) and the run id as
    `source_run`. Returns the `ModelVersion`. Raises UserError when the run logged no model."""
    import mlflow

    from core.errors import UserError

    use_store(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(run_id)
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise UserError(f"run {run_id} logged no model (train with log_model=true): nothing to register")
    tags = {key: repr(float(value)) for key, value in run.data.metrics.items()}
    version = mlflow.register_model(model_uri, name, tags={**tags, "source_run": run_id})
    log.info("registered %s as %s version %s", model_uri, name, version.version)
    return version


# ---- sweeps ------------------------------------------------------------------------------------------------
PARENT_RUN_ENV = "ML_PLAYGROUND_SWEEP_PARENT_RUN"  # the sweep's parent run id, read by each trial's logger tags
PARENT_RUN_TAG = "mlflow.parentRunId"


def end_if_running(tracking_uri: str, run_id: str, status: str) -> bool:
    """End the run `run_id` with `status` ("KILLED" or "FAILED") when it is still RUNNING; returns whether it was.
    A store that fails is a warning: this runs on the way out of an interrupted or failed process."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri)
        if client.get_run(run_id).info.status != "RUNNING":
            return False
        client.set_terminated(run_id, status)
    except Exception as exc:  # noqa: BLE001  (on the way out: the store's failure must not hide why the run stopped)
        log.warning("run %s could not be ended %s: %s: %s", run_id, status, type(exc).__name__, exc)
        return False
    log.warning("run %s ended %s", run_id, status)
    return True


def end_running_children(client: Any, parent_run_id: str, experiment_id: str, status: str = "KILLED") -> list[str]:
    """End every run of `experiment_id` whose `mlflow.parentRunId` is `parent_run_id` and that is still RUNNING with
    `status`: the trials of a sweep whose processes were stopped before they could end their own runs (a joblib
    worker killed by the launcher on Ctrl-C). Returns their run names."""
    running = client.search_runs(
        [experiment_id],
        f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=5000,
    )
    for run in running:
        client.set_terminated(run.info.run_id, status)
    return [run.info.run_name for run in running]


def best_child(client: Any, parent_run_id: str, experiment_id: str, metric: str, mode: str) -> Any | None:
    """The child run of `parent_run_id` with the best `best/<metric>` (its best checkpoint's value), else `metric`
    (its last value), `mode` "min" or "max"; None when no child logged either."""
    children = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'")

    def value(run: Any) -> float | None:
        metrics = run.data.metrics
        return metrics.get(f"best/{metric}", metrics.get(metric))

    scored = [(v, run) for run in children if (v := value(run)) is not None and v == v]  # NaN never wins
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda item: item[0])[1]


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment `name`, created (as a model-training experiment) when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(
        name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
    )


class SweepParentRun(Callback):
    """A Hydra callback (`hydra.callbacks` in conf/sweep/*.yaml) that makes a multirun one MLflow parent run with
    one child run per trial, so that the UI shows the sweep as one row that opens into its trials.

    At the sweep's start it creates the parent run in the trials' experiment (`logger.experiment_name`, store
    `logger.tracking_uri`), named after the sweep folder, and puts its id in $ML_PLAYGROUND_SWEEP_PARENT_RUN,
    which the sweep config passes to each trial's logger as the `mlflow.parentRunId` tag. At its end it copies the
    best trial's params and value to the parent (`best/<optimized_metric>`, by `monitor.mode`, see `best_child`;
    tags `best_run_id`, `best_run_name`) and ends the parent FINISHED.

    A trial that fails ends the parent FAILED when it fails (tag `failed_trials`: the overrides of each failed trial,
    "; "-separated): Hydra's basic sweeper runs the rest of its batch and then raises without its multirun end, and
    Optuna's does so at its default `max_failure_rate` 0. A sweeper that goes on after failures (Optuna with a higher
    rate) still reaches the multirun end and ends the parent FINISHED with the best trial, the tag kept. A sweep that
    exits before either (a trial's one-line error exits the process with status 2, Ctrl-C) ends the parent FAILED in
    an atexit handler (`end_unfinished`), and with it every trial still RUNNING, KILLED (a parallel launcher's worker
    stopped before it could end its own run). A sweep process killed outright (SIGKILL) runs no handler: its parent
    stays RUNNING."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self._tracking_uri: str | None = None  # the parent's store, as on_multirun_start found it
        self._failed: list[str] = []

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        uri = config.logger.tracking_uri
        with store_lock(uri):
            client = MlflowClient(uri)
            experiment_id = _experiment_id(client, config.logger.experiment_name, config.logger.artifact_location)
        sweep_dir = str(config.hydra.sweep.dir)
        run = client.create_run(
            experiment_id, run_name=f"sweep-{Path(sweep_dir).name}", tags={"sweep": sweep_dir, "sweep.parent": "true"}
        )
        self.run_id, self._tracking_uri = run.info.run_id, uri
        os.environ[PARENT_RUN_ENV] = self.run_id
        atexit.register(self.end_unfinished)
        log.info("sweep parent run %s in experiment %r", self.run_id, config.logger.experiment_name)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        # run_id is None only when on_multirun_start did not run; launchers that run trials elsewhere (submitit,
        # joblib) pickle this callback, run_id and store included, into the trial's process
        if self.run_id is None or job_return.status != JobStatus.FAILED:
            return
        from mlflow import MlflowClient

        trial = " ".join(job_return.overrides or [])
        self._failed.append(trial)
        client = MlflowClient(self._tracking_uri)  # the parent's store, whatever store the trial itself logged to
        client.set_tag(self.run_id, "failed_trials", "; ".join(self._failed)[:5000])  # within MLflow's 8000 limit
        client.set_terminated(self.run_id, "FAILED")
        log.warning("sweep parent run %s ended FAILED: the trial %s failed", self.run_id, trial)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        if self.run_id is None:
            return
        client = MlflowClient(self._tracking_uri)
        metric = config.get("optimized_metric")
        parent = client.get_run(self.run_id)
        best = (
            best_child(client, self.run_id, parent.info.experiment_id, metric, config.monitor.mode) if metric else None
        )
        if best is not None:
            value = best.data.metrics.get(f"best/{metric}", best.data.metrics.get(metric))
            params = [Param(k, v) for k, v in best.data.params.items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params per call
                client.log_batch(self.run_id, params=params[start : start + 100])
            client.log_batch(self.run_id, metrics=[Metric(f"best/{metric}", float(value), int(time.time() * 1000), 0)])
            client.set_tag(self.run_id, "best_run_id", best.info.run_id)
            client.set_tag(self.run_id, "best_run_name", best.info.run_name)
            log.info("sweep best: %s (%s = %s)", best.info.run_name, metric, value)
        client.set_terminated(self.run_id, "FINISHED")
        atexit.unregister(self.end_unfinished)
        os.environ.pop(PARENT_RUN_ENV, None)

    def end_unfinished(self) -> None:
        """End the parent FAILED if it is still RUNNING (registered with atexit by `on_multirun_start`). A server
        that does not answer, or a SQLite store whose file is gone, is a warning: exit does not wait on MLflow's
        retries, nor create an empty store."""
        from mlflow import MlflowClient

        if self.run_id is None or self._tracking_uri is None:
            return
        uri = self._tracking_uri
        gone = (
            not server_answers(uri, timeout=2)
            if uri.startswith(("http://", "https://"))
            else uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()
        )
        if gone:
            log.warning("sweep parent run %s could not be ended FAILED: its store %s is gone", self.run_id, uri)
            return
        try:
            client = MlflowClient(uri)
            parent = client.get_run(self.run_id)
            if parent.info.status == "RUNNING":
                client.set_terminated(self.run_id, "FAILED")
                log.warning("sweep parent run %s ended FAILED: the sweep stopped before its end", self.run_id)
            killed = end_running_children(client, self.run_id, parent.info.experiment_id)
            if killed:
                log.warning("trials that did not end their runs, ended KILLED: %s", ", ".join(killed))
        except Exception as exc:  # noqa: BLE001  (at exit: a store that is gone is a warning, not a traceback)
            log.warning("sweep parent run %s could not be ended: %s: %s", self.run_id, type(exc).__name__, exc)
