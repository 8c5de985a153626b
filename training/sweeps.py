"""A Hydra multirun as one MLflow parent run with a child per trial (`SweepParentRun`, the `hydra.callbacks` of
conf/sweep/*.yaml), the best trial copied to the parent."""

from __future__ import annotations

import atexit
import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

# Lightning's own rank_zero_only (pytorch_lightning re-exports this object and sets its rank), imported from the
# small lightning_utilities package: the tools that only log a run (monitor-facemask, eval-lfw …) never import
# pytorch_lightning, whose import chain (lightning_fabric → torchmetrics → torchvision.models → torch._dynamo)
# took 3.0 s of a 6-second monitor call. The Lightning callbacks that write here live in training.callbacks.
from lightning_utilities.core.rank_zero import rank_zero_only

from core.mlflow_store import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    PARENT_RUN_ENV,
    PARENT_RUN_TAG,
    end_running_children,
    server_answers,
    store_lock,
)

if not hasattr(rank_zero_only, "rank"):  # what lightning_fabric sets on import (its _get_rank); Lightning's strategies
    # set it again when they start. Without Lightning loaded, the @rank_zero_only helpers below would raise.
    rank_zero_only.rank = next(
        (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK") if k in os.environ), 0
    )

log = logging.getLogger(__name__)


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
    best trial's params and value to the parent (`best/<optimized_metric>`, by `selection.mode`, see `best_child`;
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
            best_child(client, self.run_id, parent.info.experiment_id, metric, config.selection.mode)
            if metric
            else None
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
