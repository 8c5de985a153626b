"""A run logging to a remote MLflow server survives the server going away mid-run.

Lightning's MLFlowLogger raises once MLflow's client gives up on an unreachable server, and the run dies with
its metrics. `FallbackMLFlowLogger` checks, on the first failed call, whether the server still answers; when it
does not, the run goes on in the local store (`paths.mlflow_uri`, where `make mlflow-ui` shows it), in a run
tagged with the server run's id, and says so. When the run ends and the server answers again, the local run is
uploaded into the server run; otherwise `make mlflow-upload` does it later (`upload_offline_runs`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

from core.tracking import server_answers, store_lock

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


class _FallbackClient:
    """An MlflowClient whose run methods go to the server until it stops answering, then to a local run."""

    def __init__(self, server: MlflowClient, logger: FallbackMLFlowLogger) -> None:
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


class FallbackMLFlowLogger(MLFlowLogger):
    """MLFlowLogger for a tracking server, falling back to the local store when the server goes away mid-run.

    `request_retries` and `request_timeout` bound how long one call waits for a lost server (MLflow's defaults,
    7 retries with exponential backoff, stall a run for minutes); environment variables set by the user win.
    """

    def __init__(
        self,
        experiment_name: str,
        tracking_uri: str,
        *,
        local_tracking_uri: str,
        local_artifact_location: str | None = None,
        request_retries: int = 2,
        request_timeout: int = 10,
        **kwargs: Any,
    ) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(request_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(request_timeout))
        super().__init__(experiment_name=experiment_name, tracking_uri=tracking_uri, **kwargs)
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.local_tracking_uri = local_tracking_uri
        self.local_artifact_location = local_artifact_location
        self._client: _FallbackClient | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        server = super().experiment  # creates the experiment and run on the server
        if self._client is None:
            self._client = _FallbackClient(server, self)
        return self._client

    @property
    def offline_run_id(self) -> str | None:
        """The local run standing in for the server run, once the server has gone away."""
        return self._client.local_run_id if self._client else None

    def finalize(self, status: str = "success") -> None:
        super().finalize(status)
        if self.offline_run_id is None:
            return
        if server_answers(self.tracking_uri):
            upload_offline_run(MlflowClient(self.local_tracking_uri), self.offline_run_id)
            log.info(
                "MLflow server %s is back: local run %s uploaded into run %s",
                self.tracking_uri,
                self.offline_run_id,
                self.run_id,
            )
        else:
            log.warning(
                "MLflow server %s is still unreachable: this run's later metrics and artifacts are in the "
                "local store %s, run %s; upload them with `make mlflow-upload` when it is back",
                self.tracking_uri,
                self.local_tracking_uri,
                self.offline_run_id,
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
