"""The Lightning logger for a remote MLflow server that a run outlives: `logger=mlflow_server`.

The server's calls go through `core.server_fallback.FallbackClient`, which moves the run into the local store when
the server stops answering; `finalize` uploads it when the server is back (else `make mlflow-upload` does).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mlflow import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

from core.mlflow_store import server_answers
from core.server_fallback import FallbackClient, upload_offline_run

log = logging.getLogger(__name__)


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
        self._client: FallbackClient | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        server = super().experiment  # creates the experiment and run on the server
        if self._client is None:
            self._client = FallbackClient(server, self)
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
