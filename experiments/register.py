"""Register a trained model in the MLflow Model Registry: `python experiments/register.py task=<task> [run_id=<id>]`
(`make register TASK=<task> [RUN=<run id>]`, conf/register.yaml).

The model is the one a training run logged (`log_model`, experiments/train.py); it becomes a new version of the
registered model named after the task, with the run's metrics as version tags, and `mlflow models` can serve it
(`models:/<task>/<version>`). Without `run_id` the run is the task's best finished run that logged a model
(`reporting.mlflow_runs.champion_key`: real data first, then full scale, then the best value of its selection
metric `best/<selection.metric>` in its `selection.mode`, then the newest).

The registry alias `champion` (MLflow's aliases; stages are deprecated) goes to the better of the new version and
the current champion by the same key (`promote_champion`), and the tools take the champion's checkpoint by default
(`core.checkpoints.tool_checkpoint`). The entry says which version holds it and why.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from core.checkpoints import CHAMPION_ALIAS
from core.errors import UserError
from core.registry import MODEL_URI_TAG, register_run_model
from experiments import log, user_errors
from reporting import mlflow_runs


def best_run(client, task: str):
    """The task's best finished run with a logged model (see the module docstring). Raises UserError when the
    task has no experiment or no such run."""
    experiment = client.get_experiment_by_name(task)
    if experiment is None:
        raise UserError(f"task={task}: no MLflow experiment of that name — train it first (e.g. make exp1-dcgan)")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.status = 'FINISHED' and tags.`{MODEL_URI_TAG}` != ''",
        order_by=["attributes.start_time DESC"],
    )
    runs = [r for r in runs if r.data.tags.get(MODEL_URI_TAG)]
    if not runs:
        raise UserError(f"task={task}: no finished run logged a model (train with log_model=true)")
    return min(runs, key=mlflow_runs.champion_key)


def promote_champion(tracking_uri: str, name: str, version) -> str:
    """Give the alias `champion` of registered model `name` to `version` (an MLflow ModelVersion) when no version
    holds it or `version`'s run ranks before the champion's (`reporting.mlflow_runs.champion_key`); returns the line
    that says which version holds it now and why."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    new_run = client.get_run(version.run_id)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        current = None
    new = f"version {version.version} ({mlflow_runs.describe_for_champion(new_run)})"
    if current is not None and current.version != version.version:
        current_run = client.get_run(current.run_id)
        held = f"version {current.version} ({mlflow_runs.describe_for_champion(current_run)})"
        if mlflow_runs.champion_key(current_run) <= mlflow_runs.champion_key(new_run):
            return f"{name}@{CHAMPION_ALIAS} stays {held}: it ranks before {new}"
        why = f"it ranks before {held}"
    else:
        why = "the first registered version" if current is None else "it already held it"
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    return f"{name}@{CHAMPION_ALIAS} is {new}: {why}"


def register_and_promote(tracking_uri: str, run_id: str, name: str):
    """`core.registry.register_run_model`, then `promote_champion`; prints both lines and returns the version."""
    version = register_run_model(tracking_uri, run_id, name)
    print(
        f"registered run {run_id} as {version.name} version {version.version}: models:/{version.name}/{version.version}"
    )
    print(promote_champion(tracking_uri, version.name, version))
    return version


def register(cfg: DictConfig):
    """Register the model of `cfg.run_id`, else of the best run of `cfg.task`, as a new version of `cfg.name`
    (default: the task). Returns the `ModelVersion`. UserError for a missing task and run id, or an unknown run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(cfg.tracking_uri)
    if cfg.run_id:
        try:
            run = client.get_run(str(cfg.run_id))
        except MlflowException:
            raise UserError(f"run_id={cfg.run_id}: no such run in {cfg.tracking_uri}") from None
        task = cfg.task or client.get_experiment(run.info.experiment_id).name
    elif cfg.task:
        task = cfg.task
        run = best_run(client, task)
    else:
        raise UserError("task: name the training task whose model to register (make register TASK=<task>)")
    version = register_and_promote(cfg.tracking_uri, run.info.run_id, cfg.name or task)
    log.info("run %s (%s) → %s version %s", run.info.run_id, run.info.run_name, version.name, version.version)
    return version


@hydra.main(version_base="1.3", config_path="../conf", config_name="register")
def main(cfg: DictConfig) -> None:
    with user_errors():
        register(cfg)


if __name__ == "__main__":
    main()
