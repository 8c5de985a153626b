"""Register a trained model in the MLflow Model Registry: `python experiments/register.py task=<task> [run_id=<id>]`
(`make register TASK=<task> [RUN=<run id>]`, conf/register.yaml).

The model is the one a training run logged (`log_model`, experiments/train.py); it becomes a new version of the
registered model named after the task, with the run's metrics as version tags, and `mlflow models` can serve it
(`models:/<task>/<version>`). Without `run_id` the run is the task's best finished run that logged a model, among
the runs on the same data as its newest one (a metric on another dataset is not comparable): the best value of its
monitored metric (`best/<selection.metric>`, in its `selection.mode`), else its newest.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from core.errors import UserError
from core.registry import MODEL_URI_TAG, register_run_model
from experiments import log, user_errors
from reporting import mlflow_runs

# The params that name where a run's data came from (the built-in sets are generated under data_dir, real ones
# are folders under ../shared/data or the user's).
DATA_SOURCE_PARAMS = ("data.root", "data.voc_root", "data._target_")


def _data_source(run) -> tuple:
    return tuple(run.data.params.get(key) for key in DATA_SOURCE_PARAMS)


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
    newest = runs[0]
    runs = [r for r in runs if _data_source(r) == _data_source(newest)]
    best, mode = mlflow_runs.selection(newest)  # `best/<selection.metric>`
    scored = [(r.data.metrics[best], r) for r in runs if best in r.data.metrics]
    scored = [(v, r) for v, r in scored if v == v]  # NaN never wins
    if not scored:
        return newest
    return (min if mode == "min" else max)(scored, key=lambda item: item[0])[1]


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
    version = register_run_model(cfg.tracking_uri, run.info.run_id, cfg.name or task)
    log.info("run %s (%s) → %s version %s", run.info.run_id, run.info.run_name, version.name, version.version)
    print(
        f"registered run {run.info.run_id} as {version.name} version {version.version}: models:/{version.name}/{version.version}"
    )
    return version


@hydra.main(version_base="1.3", config_path="../conf", config_name="register")
def main(cfg: DictConfig) -> None:
    with user_errors():
        register(cfg)


if __name__ == "__main__":
    main()
