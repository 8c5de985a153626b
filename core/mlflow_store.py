"""The MLflow store and tool runs: tool runs (`log_tool_run`: one MLflow run per call of every entry but training,
where a failing store is a warning and the tool's result stands), the local store's check before a training writes,
experiment descriptions and kinds, dataset records, system metrics, and ending runs a stopped process left running."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger(__name__)


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
    steps: Mapping[str, Sequence[tuple[int, float]]] | None = None,
) -> str | None:
    """Log one run of a tool (every entry of experiments/ but train) as one MLflow run: the one funnel for tools.

    The run, named `run_name` (MLflow picks a name when None), goes to the experiment `cfg.task_name` of the store
    `cfg.paths.mlflow_uri` and holds `params` (values logged as str), `metrics` (name → number), `dicts`
    ({artifact file, e.g. "report.json": JSON-serialisable value}), `files` (paths logged at the artifact root),
    `steps` (name → [(step, value), …]: a metric's series, e.g. per minute) and the resolved config as
    `config/resolved.yaml`.

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
            for name, series in (steps or {}).items():
                for step, value in series:
                    mlflow.log_metric(name, float(value), step=int(step))
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
    left as it was; only a hot journal, left by a writer killed mid-transaction, is first rolled back, as SQLite's
    recovery does on any write connection. A missing file (a new store) and a server URI pass."""
    import sqlite3

    from core.errors import UserError

    if not tracking_uri.startswith("sqlite:///"):
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    if not database.is_file():
        return
    other = "or point paths.mlflow_dir at another folder"
    try:
        if database.with_name(f"{database.name}-journal").exists():
            # a writer killed mid-transaction leaves a hot rollback journal, which a read-only connection cannot
            # roll back ("attempt to write a readonly database"); a read-write one rolls it back on its first read,
            # as MLflow's own first connection would, and the store is back at its last committed transaction
            with contextlib.closing(sqlite3.connect(f"file:{database}?mode=rw", uri=True, timeout=wait_s)) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
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


# ---- system metrics ----------------------------------------------------------------------------------------
def system_metrics_sampler(tracking_uri: str, run_id: str, sampling_interval: float, resume: bool = False) -> Any:
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


def use_store(tracking_uri: str) -> None:
    """Point MLflow's fluent API (model logging, registry) at `tracking_uri`, also for the registry."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


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
