"""A Hydra multirun as one MLflow parent run with a child per trial (`SweepParentRun`, the `hydra.callbacks` of
conf/sweep/*.yaml), the best trial copied to the parent, and the resume of an interrupted sweep: its rerun reopens
the parent (`SweepParentRun`) and each trial that finished there returns its logged value (`finished_trial`)."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

# Lightning's own rank_zero_only (pytorch_lightning re-exports this object and sets its rank), imported from the
# small lightning_utilities package: the tools that only log a run (monitor-facemask, eval-lfw …) never import
# pytorch_lightning, whose import chain (lightning_fabric → torchmetrics → torchvision.models → torch._dynamo)
# took 3.0 s of a 6-second monitor call. The Lightning callbacks that write here live in training.callbacks.
from lightning_utilities.core.rank_zero import rank_zero_only

from core.errors import UserError
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

COMMAND_TAG = "sweep.command"  # on a parent: the sweep's command-line overrides, sorted, space-separated
TRIAL_TAG = "sweep.trial"  # on a child: its trial's overrides as Hydra's job.override_dirname (conf/sweep/*.yaml)
RESUMED_TAG = "sweep.resumed"  # on a parent: how many times a rerun reopened it
FINISHED = "attributes.status = 'FINISHED'"


def sweep_command(config: Any) -> str:
    """The sweep's command-line overrides (`hydra.overrides.task`), sorted and space-separated: what names "the
    same command" for a resume. Hydra's own overrides (`hydra/launcher=…`) are not in it: a sweep may resume under
    another launcher."""
    from omegaconf import OmegaConf

    return " ".join(sorted(OmegaConf.select(config, "hydra.overrides.task", default=None) or []))


def _children(client: Any, parent_run_id: str, experiment_id: str, finished: bool = False) -> list[Any]:
    query = f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'" + (f" AND {FINISHED}" if finished else "")
    return client.search_runs([experiment_id], filter_string=query, max_results=5000)


def _value(run: Any, metric: str) -> float | None:
    """A trial's `best/<metric>` (its best checkpoint's value), else its last `metric`; None when neither or NaN."""
    metrics = run.data.metrics
    value = metrics.get(f"best/{metric}", metrics.get(metric))
    return value if value is not None and value == value else None


def finished_trial(cfg: Any) -> tuple[str, float] | None:
    """The run id and value of the FINISHED child run of this trial's sweep parent (tag `mlflow.parentRunId`) with
    the same overrides (tag `sweep.trial`), so that a resumed sweep returns that value to its sweeper without
    training; None when resuming is off (`sweep_resume`), the run is no sweep trial, or no such child logged
    `optimized_metric`. The value is `best/<optimized_metric>`, else the metric's last value: what the entry
    returned when the trial trained (experiments/train.py)."""
    from mlflow import MlflowClient

    tags = cfg.get("tags") or {}
    parent, trial, metric = tags.get(PARENT_RUN_TAG), tags.get(TRIAL_TAG), cfg.get("optimized_metric")
    if not cfg.get("sweep_resume") or not parent or trial is None or not metric:
        return None
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    if experiment is None:
        return None
    for run in _children(client, parent, experiment.experiment_id, finished=True):
        if run.data.tags.get(TRIAL_TAG) == trial and (value := _value(run, metric)) is not None:
            return run.info.run_id, float(value)
    return None


def best_child(client: Any, parent_run_id: str, experiment_id: str, metric: str, mode: str) -> Any | None:
    """The FINISHED child run of `parent_run_id` with the best `best/<metric>` (its best checkpoint's value), else
    `metric` (its last value), `mode` "min" or "max"; None when no finished child logged either. A resumed sweep's
    parent also holds the trials its interruption stopped: they are not candidates."""
    children = _children(client, parent_run_id, experiment_id, finished=True)
    scored = [(v, run) for run in children if (v := _value(run, metric)) is not None]  # NaN never wins
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


def check_search_space(config: Any) -> None:
    """Raise UserError when the sweep's sweeper has no parameters: no experiment named, or the experiment has no
    conf/sweep_space/<experiment>/<sweep>.yaml. `config` is the multirun's, with its hydra node."""
    from omegaconf import OmegaConf

    sweeper = OmegaConf.select(config, "hydra.sweeper", default=None)
    if sweeper is None or sweeper.get("params"):
        return
    choice = OmegaConf.select(config, "hydra.runtime.choices.sweep", default="grid")
    experiment = OmegaConf.select(config, "hydra.runtime.choices.experiment", default=None)
    if experiment is None:
        raise UserError(f"sweep={choice}: name the experiment to sweep (experiment=<name>)")
    raise UserError(
        f"sweep={choice}: experiment={experiment} has no search space: add conf/sweep_space/{experiment}/{choice}.yaml"
    )


def _interrupted_parent(client: Any, experiment_id: str, command: str) -> Any | None:
    """The newest sweep parent run of `experiment_id` tagged with `command` (`sweep.command`) when it did not end
    FINISHED, else None (a finished sweep's rerun is a new sweep)."""
    parents = client.search_runs(
        [experiment_id], filter_string="tags.`sweep.parent` = 'true'", order_by=["attributes.start_time DESC"]
    )
    newest = next((run for run in parents if run.data.tags.get(COMMAND_TAG) == command[:5000]), None)
    return newest if newest is not None and newest.info.status != "FINISHED" else None


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
    stays RUNNING.

    Resume (`sweep_resume: true` in conf/sweep/*.yaml): the parent is tagged with the sweep's command-line overrides
    (`sweep.command`, `sweep_command`). A rerun of the same command whose newest parent of that command did not end
    FINISHED (FAILED, KILLED, or RUNNING after a SIGKILL) reopens it instead of creating one: RUNNING again, its
    trials still RUNNING ended KILLED, its `failed_trials` tag cleared, `sweep.resumed` counted. Each trial then asks
    `finished_trial` whether it finished under that parent, and if so returns that value without training. Two runs
    of the same command at the same time share the parent of the first.

    At the sweep's start, a sweeper without parameters (no conf/sweep_space/<experiment>/<sweep>.yaml,
    `check_search_space`) prints its one-line error and exits with status 2: Hydra turns an exception raised in a
    callback into a warning and would go on with one trial."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self._tracking_uri: str | None = None  # the parent's store, as on_multirun_start found it
        self._failed: list[str] = []

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        try:
            check_search_space(config)
        except UserError as error:  # Hydra turns a callback's exception into a warning and would sweep nothing
            log.error("%s", error)
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        uri = config.logger.tracking_uri
        with store_lock(uri):
            client = MlflowClient(uri)
            experiment_id = _experiment_id(client, config.logger.experiment_name, config.logger.artifact_location)
        command = sweep_command(config)
        resumed = _interrupted_parent(client, experiment_id, command) if config.get("sweep_resume") else None
        if resumed is not None:
            self.run_id = resumed.info.run_id
            client.update_run(self.run_id, status="RUNNING")
            killed = end_running_children(client, self.run_id, experiment_id)
            if "failed_trials" in resumed.data.tags:
                client.delete_tag(self.run_id, "failed_trials")
            client.set_tag(self.run_id, RESUMED_TAG, str(int(resumed.data.tags.get(RESUMED_TAG, "0")) + 1))
            log.info(
                "resuming sweep parent run %s (%s, was %s): its finished trials are not trained again%s",
                self.run_id,
                resumed.info.run_name,
                resumed.info.status,
                f"; trials left RUNNING ended KILLED: {', '.join(killed)}" if killed else "",
            )
        else:
            sweep_dir = str(config.hydra.sweep.dir)
            tags = {"sweep": sweep_dir, "sweep.parent": "true", COMMAND_TAG: command[:5000]}
            run = client.create_run(experiment_id, run_name=f"sweep-{Path(sweep_dir).name}", tags=tags)
            self.run_id = run.info.run_id
            log.info("sweep parent run %s in experiment %r", self.run_id, config.logger.experiment_name)
        self._tracking_uri = uri
        os.environ[PARENT_RUN_ENV] = self.run_id
        atexit.register(self.end_unfinished)

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
