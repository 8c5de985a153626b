"""A run logging to a remote MLflow server survives the server going away mid-run: the MLflow side.

Lightning's MLFlowLogger raises once MLflow's client gives up on an unreachable server, and the run dies with
its metrics. `FallbackClient` checks, on the first failed call, whether the server still answers; when it does
not, the run goes on in the local store (`paths.mlflow_uri`, where `make mlflow-ui` shows it), in a run tagged
with the server run's id, and says so. When the run ends and the server answers again, the local run is uploaded
into the server run (`upload_offline_run`); otherwise `make mlflow-upload` does it later (`pending_offline_runs`).
The Lightning logger that uses it is `training.loggers.FallbackMLFlowLogger` (`logger=mlflow_server`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException

from core.mlflow_store import server_answers, store_lock

log = logging.getLogger(__name__)

OFFLINE_COPY_OF = "ml_playground.offline_copy_of"  # on a local run: the server run it stands in for
OFFLINE_SERVER = "ml_playground.offline_server"  # ... and that run's server
UPLOADED = "ml_playground.uploaded"
# MlflowClient methods that act on one run, its id first: they follow the run into the local store
RUN_METHODS = frozenset(
    {
        "log_batch",
        "log_metric",
        "log_param",
        "set_tag",
        "get_run",
        "set_terminated",
        "log_artifact",
        "log_artifacts",
        "log_image",
        "log_figure",
        "log_text",
        "log_dict",
    }
)


def local_experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    with store_lock(client.tracking_uri):
        experiment = client.get_experiment_by_name(name)
        return (
            experiment.experiment_id
            if experiment
            else client.create_experiment(name, artifact_location=artifact_location)
        )


class FallbackClient:
    """An MlflowClient whose run methods go to the server until it stops answering, then to a local run.

    `logger` says where the local run goes and what it stands in for: its `local_tracking_uri`,
    `local_artifact_location`, `experiment_name`, `tags` and the server run's `run_id` (a FallbackMLFlowLogger).
    A call the server refuses while it still answers raises as it would without the fallback."""

    def __init__(self, server: MlflowClient, logger: Any) -> None:
        self._server = server
        self._logger = logger
        self._local: MlflowClient | None = None
        self.local_run_id: str | None = None

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._server, name)
        if name not in RUN_METHODS:
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.local_run_id is None:
                try:
                    return method(*args, **kwargs)
                except (MlflowException, requests.RequestException) as exc:
                    if server_answers(self._server.tracking_uri):
                        raise  # the server refused the call itself: a real error
                    self._go_offline(exc)
            if "run_id" in kwargs:
                kwargs["run_id"] = self.local_run_id
            else:
                args = (self.local_run_id, *args[1:])
            return getattr(self._local, name)(*args, **kwargs)

        return call

    def _go_offline(self, exc: Exception) -> None:
        logger = self._logger
        self._local = MlflowClient(logger.local_tracking_uri)
        experiment_id = local_experiment_id(self._local, logger.experiment_name, logger.local_artifact_location)
        tags = {**(logger.tags or {}), OFFLINE_COPY_OF: logger.run_id, OFFLINE_SERVER: self._server.tracking_uri}
        self.local_run_id = self._local.create_run(experiment_id, tags=tags).info.run_id
        log.warning(
            "MLflow server %s stopped answering (%s). The run goes on logging into the local store %s "
            "(run %s); it is uploaded into server run %s when the server is back: at the end of this run, "
            "or by `make mlflow-upload`",
            self._server.tracking_uri,
            exc.__class__.__name__,
            logger.local_tracking_uri,
            self.local_run_id,
            logger.run_id,
        )


def upload_offline_run(local: MlflowClient, run_id: str) -> str:
    """Copy a local stand-in run's metric history, artifacts and end status into its server run; return that id."""
    run = local.get_run(run_id)
    server = MlflowClient(run.data.tags[OFFLINE_SERVER])
    server_run_id = run.data.tags[OFFLINE_COPY_OF]
    metrics = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in run.data.metrics
        for m in local.get_metric_history(run_id, key)
    ]
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per call
        server.log_batch(server_run_id, metrics=metrics[start : start + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(local.download_artifacts(run_id, "", tmp))
        if any(artifacts.iterdir()):
            server.log_artifacts(server_run_id, str(artifacts))
    if run.info.status != "RUNNING":
        server.set_terminated(server_run_id, run.info.status, end_time=run.info.end_time)
    local.set_tag(run_id, UPLOADED, "true")
    return server_run_id


def pending_offline_runs(local: MlflowClient) -> list[Run]:
    """Finished local stand-in runs not uploaded yet (a run still RUNNING may be resumed: it waits)."""
    return [
        run
        for run in local.search_runs(
            [e.experiment_id for e in local.search_experiments()],
            filter_string=f"tags.`{OFFLINE_COPY_OF}` != '' AND attributes.status != 'RUNNING'",
        )
        if run.data.tags.get(UPLOADED) != "true"
    ]
