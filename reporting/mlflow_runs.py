"""Reading finished runs back from the MLflow store: the newest run of an experiment, a sweep's runs as a
table, metric histories and artifacts. `make report` and the notebooks both read through here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run

from core.images import read_rgb
from core.metric_names import GAN_LOSS_KINDS, GAN_NETS, gan_loss
from core.offline import PROJECT_ROOT  # importing core applies the offline switches (no telemetry)

os.environ.setdefault(
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
)  # a bar per downloaded file would bury the report's log

FINISHED = "attributes.status = 'FINISHED'"
SWEEP_SUFFIX = "-sweep"  # conf/sweep/*.yaml log a sweep's runs to the experiment "<task>-sweep"


def default_tracking_uri() -> str:
    """The project's local store, or $ML_PLAYGROUND_MLFLOW_URI (tests and notebooks point it elsewhere)."""
    return os.environ.get("ML_PLAYGROUND_MLFLOW_URI", f"sqlite:///{PROJECT_ROOT}/mlflow.db")


def connect(tracking_uri: str) -> mlflow.MlflowClient:
    """A client on the store; also points `mlflow.search_runs` at it."""
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def latest_run(client: mlflow.MlflowClient, experiment: str, filter_string: str = "") -> Run | None:
    """The newest finished run of `experiment` (optionally also matching `filter_string`, e.g. a tag), or None."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = f"{FINISHED} AND {filter_string}" if filter_string else FINISHED
    runs = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def sweep_experiments(client: mlflow.MlflowClient) -> list[str]:
    """Names of the experiments that hold sweeps, sorted."""
    return sorted(e.name for e in client.search_experiments(filter_string=f"name LIKE '%{SWEEP_SUFFIX}'"))


def sweep_table(
    experiment: str, metric: str, params: tuple[str, ...] = ("data.batch_size", "model.lr")
) -> pd.DataFrame:
    """One row per finished run of the newest sweep (runs sharing the newest `sweep` tag) in `experiment`:
    columns `params` (numbers), `metric`, `run_id`. Empty when the experiment or the metric is missing.

    Parameter names are matched with '.' or '/' as separator (Lightning's MLflow logger flattens with '/')."""
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=FINISHED, output_format="pandas")
    columns = {f"params.{p}": p for p in params} | {f"params.{p.replace('.', '/')}": p for p in params}
    runs = runs.rename(columns=columns)
    needed = [*params, f"metrics.{metric}"]
    if runs.empty or any(c not in runs.columns for c in needed):
        return pd.DataFrame(columns=[*params, metric, "run_id"])
    if "tags.sweep" in runs.columns and runs["tags.sweep"].notna().any():
        runs = runs[runs["tags.sweep"] == runs.loc[runs["start_time"].idxmax(), "tags.sweep"]]
    table = runs[[*needed, "run_id"]].rename(columns={f"metrics.{metric}": metric}).dropna()
    for p in params:
        table[p] = pd.to_numeric(table[p])
    return table.sort_values(list(params)).reset_index(drop=True)


def metric_history(client: mlflow.MlflowClient, run_id: str, key: str) -> pd.DataFrame:
    """Every logged value of `key` in step order: columns step, value (empty when never logged)."""
    rows = [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]
    frame = pd.DataFrame(rows, columns=["step", "timestamp", "value"])
    return frame.sort_values(["step", "timestamp"]).drop(columns="timestamp").reset_index(drop=True)


def gan_history(client: mlflow.MlflowClient, run_id: str) -> dict[str, list[float]]:
    """The per-epoch D and G losses of a DCGAN run, in the shape `figures.gan_loss_curves` takes."""
    return {
        f"{net}_loss_{kind}": metric_history(client, run_id, gan_loss(net, kind))["value"].tolist()
        for net in GAN_NETS
        for kind in GAN_LOSS_KINDS
    }


def artifact_paths(client: mlflow.MlflowClient, run_id: str, folder: str) -> list[str]:
    """Files directly inside an artifact folder of the run, sorted (empty when the folder is absent)."""
    return sorted(a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir)


def newest_artifact(client: mlflow.MlflowClient, run_id: str, folder: str) -> str | None:
    """The last file of an artifact folder by name (samples/epoch_0005.png after epoch_0004.png), or None."""
    paths = artifact_paths(client, run_id, folder)
    return paths[-1] if paths else None


def download(client: mlflow.MlflowClient, run_id: str, artifact_path: str, dst_dir: str | Path) -> Path | None:
    """Download one artifact (file or folder) into `dst_dir`; None when the run has no such artifact."""
    parent = str(Path(artifact_path).parent)
    if artifact_path not in {a.path for a in client.list_artifacts(run_id, None if parent == "." else parent)}:
        return None
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, artifact_path, str(dst)))


def load_image(client: mlflow.MlflowClient, run_id: str, artifact_path: str) -> np.ndarray | None:
    """A logged image as an HxWx3 uint8 RGB array; None when the run has no such artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download(client, run_id, artifact_path, tmp)
        return None if path is None else read_rgb(path)


def load_json(client: mlflow.MlflowClient, run_id: str, artifact_path: str) -> dict | list | None:
    """A logged JSON artifact (log_dict), or None when absent."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download(client, run_id, artifact_path, tmp)
        return None if path is None else json.loads(path.read_text())
