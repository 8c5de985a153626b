"""The Lightning loggers of a run: `BufferedMLFlowLogger` for the local store (`logger=mlflow`) and, for a remote
MLflow server that a run outlives, `FallbackMLFlowLogger` (`logger=mlflow_server`).

The server's calls go through `core.server_fallback.FallbackClient`, which moves the run into the local store when
the server stops answering; `finalize` uploads it when the server is back (else `make mlflow-upload` does).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from mlflow import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from core.mlflow_store import server_answers
from core.server_fallback import FallbackClient, upload_offline_run

log = logging.getLogger(__name__)


class MetricBatchingClient:
    """An MlflowClient whose metric-only `log_batch` calls are held and written together, in one `log_batch` per
    run (MLflow splits it at its batch limit), at most every `flush_every_s` seconds and at `flush()`. Any other use
    of the client (a read, a tag, ending the run) writes the held rows first, so what it sees and what the store
    ends with are what the plain client gives. Rows keep the step and timestamp of their call."""

    def __init__(self, client: MlflowClient, flush_every_s: float) -> None:
        self._client, self.flush_every_s = client, flush_every_s
        self._held: dict[str, list[Any]] = {}  # run id -> mlflow.entities.Metric rows not yet in the store
        self._written_at = time.monotonic()

    def log_batch(self, run_id: str, metrics=(), params=(), tags=(), **kwargs: Any) -> Any:
        if params or tags or kwargs:
            self.flush()
            return self._client.log_batch(run_id, metrics=metrics, params=params, tags=tags, **kwargs)
        self._held.setdefault(run_id, []).extend(metrics)
        if time.monotonic() - self._written_at >= self.flush_every_s:
            self.flush()
        return None

    def flush(self) -> None:
        self._written_at = time.monotonic()
        while self._held:
            run_id, rows = self._held.popitem()
            self._client.log_batch(run_id, metrics=rows)

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._client, name)


class BufferedMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, whose metric rows reach the store together (`MetricBatchingClient`): at most every
    `flush_every_s` seconds and at `flush()`, instead of in one write per `log_metrics` call; reading the run or
    ending it (`finalize`, which Lightning calls at the end of each fit and test and when a run fails) writes them
    first.

    Why: every write to a local SQLite store is a transaction of its own (about 8 ms on this CPU), and Lightning's
    step logging, every `trainer.log_every_n_steps` steps, made three of them in each 2-s epoch of the built-in
    DCGAN. An epoch's own values are written at once (`training.callbacks.EpochMetrics` calls `flush()`), so a run
    killed between two writes loses at most `flush_every_s` seconds of step rows, never an epoch's values.
    """

    def __init__(self, *args: Any, flush_every_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mlflow_client = MetricBatchingClient(self._mlflow_client, flush_every_s)

    @rank_zero_only
    def flush(self) -> None:
        """Write the metric rows held since the last write."""
        self._mlflow_client.flush()


class FallbackMLFlowLogger(MLFlowLogger):
    """MLFlowLogger for a tracking server, falling back to the local store when the server goes away mid-run.

    `request_retries` and `request_timeout` bound how long one call waits for a lost server (MLflow's defaults,
    7 retries with exponential backoff, stall a run for minutes); environment variables set by the user win.
    Its rows are not held as `BufferedMLFlowLogger` holds them: `flush_every_s` other than None is a ValueError.
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
        flush_every_s: float | None = None,
        **kwargs: Any,
    ) -> None:
        if flush_every_s is not None:
            raise ValueError(
                "logger.flush_every_s: a server's calls are not held (the fallback must see each one fail to move "
                "the run to the local store); set it to null"
            )
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
