"""`make sweep EXPERIMENT=<name>`: the entry's multirun over each task's own search space (conf/sweep_space/), one
MLflow parent run with a child per trial, and the resume of an interrupted sweep (training.sweeps)."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from core.errors import UserError
from core.mlflow_store import PARENT_RUN_ENV, PARENT_RUN_TAG
from tests.conftest import REPO, mlflow_runs
from training.sweeps import COMMAND_TAG, SweepParentRun, check_search_space

# The entry, as `python -m experiments.train` runs it, with Lightning's Trainer.fit wrapped: each trial that trains
# appends its learning rate to $TRAINED_LOG, and the $FAIL_AT-th trial to train fails (an interruption in the middle
# of the sweep, at a known trial).
ENTRY = """
import json, os, runpy
import pytorch_lightning as pl
fit = pl.Trainer.fit
def counted(trainer, model, *args, **kwargs):
    with open(os.environ["TRAINED_LOG"], "a+") as log:
        log.seek(0)
        number = len(log.readlines()) + 1
        log.write(json.dumps(float(model.hparams.get("lr", model.hparams.get("lr0")))) + "\\n")
    if os.environ.get("FAIL_AT") == str(number):
        raise RuntimeError("trial stopped")
    return fit(trainer, model, *args, **kwargs)
pl.Trainer.fit = counted
runpy.run_module("experiments.train", run_name="__main__", alter_sys=True)
"""


def _sweep(args: list[str], tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[float]]:
    """Run the entry on `args` in a subprocess; returns it and the learning rates of the trials that trained."""
    trained = tmp_path / f"trained-{len(list(tmp_path.glob('trained-*')))}.jsonl"
    trained.touch()
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != PARENT_RUN_ENV} | {"TRAINED_LOG": str(trained), **env},
    )
    return done, [json.loads(line) for line in trained.read_text().splitlines()]


def _store_args(store: dict) -> list[str]:
    return [f"{k}={v}" for k, v in store.items()]


def _parent_and_children(tmp_path: Path, experiment: str):
    client, runs = mlflow_runs(tmp_path, experiment)
    parents = [r for r in runs if PARENT_RUN_TAG not in r.data.tags]
    children = {p.info.run_id: [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == p.info.run_id] for p in parents}
    return client, parents, children


@pytest.mark.parametrize(
    ("experiment", "narrow", "lr_key", "metric"),
    [
        # 2 of the detector's 8 grid points: one batch size and input size, both learning rates; from scratch (a
        # clone has no COCO weights), on the built-in scenes
        (
            "yolo_facemask",
            ["data.batch_size=8", "detector_imgsz=160", "model.pretrained=null"],
            "model.lr0",
            "val/fitness",
        ),
        # 2 of the face classifier's 8: one batch size and dropout, both learning rates, on dlib's descriptor
        ("vgg16_faces", ["data.batch_size=32", "model.dropout=0.5"], "model.lr", "val/acc"),
    ],
)
def test_a_task_sweep_is_one_parent_run_with_a_child_per_trial(experiment, narrow, lr_key, metric, store, tmp_path):
    done, trained = _sweep(
        [f"experiment={experiment}", "sweep=grid", "debug=fast", *narrow, *_store_args(store)], tmp_path
    )
    assert done.returncode == 0, done.stderr[-4000:]
    _, [parent], children = _parent_and_children(tmp_path, f"{experiment}-sweep")
    trials = children[parent.info.run_id]
    grid = {"model.lr0": ["0.0007", "0.0028"], "model.lr": ["0.0001", "0.001"]}[lr_key]
    assert sorted(r.data.params[lr_key] for r in trials) == grid and len(trained) == 2
    assert {r.info.status for r in trials} == {"FINISHED"} and parent.info.status == "FINISHED"
    best = max(trials, key=lambda r: r.data.metrics[f"best/{metric}"])  # both tasks: higher is better
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics == {f"best/{metric}": best.data.metrics[f"best/{metric}"]}
    assert {(r.data.tags["sweep.rows"], r.data.tags["sweep.columns"]) for r in trials} == {("data.batch_size", lr_key)}
    if experiment == "yolo_facemask":  # "auto" would ignore lr0: the space names the optimizer
        assert {r.data.params["model.optimizer"] for r in trials} == {"AdamW"}
        assert {r.info.run_name for r in trials} == {"bs8-lr0.0007-px160", "bs8-lr0.0028-px160"}


def test_an_interrupted_grid_sweep_resumes_with_its_finished_trials_kept(store, tmp_path):
    """The second of two trials fails, which ends the sweep (Hydra's basic sweeper raises after the batch) with
    its parent FAILED; the same command again reopens that parent, takes the first trial's value from its FINISHED
    run without training it, and trains the second only."""
    args = ["experiment=vgg16_faces", "sweep=grid", "debug=fast", "data.batch_size=32", "model.dropout=0.5"]
    args += _store_args(store)
    first, trained = _sweep(args, tmp_path, FAIL_AT="2")
    assert first.returncode != 0 and trained == [1e-4, 1e-3]
    client, [parent], children = _parent_and_children(tmp_path, "vgg16_faces-sweep")
    assert parent.info.status == "FAILED"
    [kept] = [r for r in children[parent.info.run_id] if r.info.status == "FINISHED"]
    assert kept.data.params["model.lr"] == "0.0001"

    second, trained = _sweep(args, tmp_path)
    assert second.returncode == 0, second.stderr[-4000:]
    assert trained == [1e-3]  # the finished trial is not trained again
    assert f"finished in run {kept.info.run_id}" in second.stdout + second.stderr  # Hydra logs to stdout
    _, [resumed], children = _parent_and_children(tmp_path, "vgg16_faces-sweep")
    assert resumed.info.run_id == parent.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["sweep.resumed"] == "1" and "failed_trials" not in resumed.data.tags
    trials = {(r.data.params["model.lr"], r.info.status): r.info.run_id for r in children[parent.info.run_id]}
    assert set(trials) == {("0.0001", "FINISHED"), ("0.001", "FAILED"), ("0.001", "FINISHED")}
    assert trials["0.0001", "FINISHED"] == kept.info.run_id  # the same run: kept, not a copy
    best = client.get_run(resumed.data.tags["best_run_id"])  # the best of the finished trials, the reused one too
    values = [client.get_run(trials[lr, "FINISHED"]).data.metrics["best/val/acc"] for lr in ("0.0001", "0.001")]
    assert resumed.data.metrics["best/val/acc"] == max(values) == best.data.metrics["best/val/acc"]


def test_an_interrupted_optuna_sweep_resumes_by_replaying_its_finished_trials(store, tmp_path):
    """optuna 2.x has no storage that works beside mlflow's SQLAlchemy (conf/sweep/optuna.yaml), so the study lives in
    memory; its seeded sampler proposes the same trials on a rerun, the finished ones come back from MLflow."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optional extra: pip install -e '.[optuna]'")
    args = ["experiment=vgg16_faces", "sweep=optuna", "hydra.sweeper.n_trials=2", "debug=fast", *_store_args(store)]
    first, trained_first = _sweep(args, tmp_path, FAIL_AT="2")
    assert first.returncode != 0 and len(trained_first) == 2
    second, trained = _sweep(args, tmp_path)
    assert second.returncode == 0, second.stderr[-4000:]
    assert trained == trained_first[1:]  # the same second trial, trained this time; the first is not trained again
    _, [parent], children = _parent_and_children(tmp_path, "vgg16_faces-sweep")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.resumed"] == "1"
    statuses = sorted((float(r.data.params["model.lr"]), r.info.status) for r in children[parent.info.run_id])
    assert statuses == sorted([(trained_first[0], "FINISHED"), (trained_first[1], "FAILED"), (trained[0], "FINISHED")])


def _callback_config(store: dict, tmp_path: Path, overrides: list[str]):
    """The multirun config Hydra passes to callbacks at the sweep's start (its hydra node kept)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = compose("train", overrides=[*overrides, *_store_args(store)], return_hydra_config=True)
    with open_dict(config):
        config.hydra.sweep.dir = str(tmp_path / "sweep")
        config.hydra.overrides.task = [*overrides, *_store_args(store)]
    return config


def test_a_rerun_reopens_only_an_interrupted_parent_of_the_same_command(store, tmp_path, monkeypatch, request):
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    command = ["experiment=exp1_dcgan_fruits", "sweep=grid"]
    config = _callback_config(store, tmp_path, command)
    other = _callback_config(store, tmp_path, [*command, "epochs=2"])

    def start(cfg) -> str:
        callback = SweepParentRun()
        callback.on_multirun_start(cfg)
        request.addfinalizer(lambda: atexit.unregister(callback.end_unfinished))
        return callback.run_id

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    first = start(config)
    assert client.get_run(first).data.tags[COMMAND_TAG] == " ".join(sorted(config.hydra.overrides.task))
    client.set_terminated(first, "KILLED")
    assert start(config) == first  # interrupted: reopened
    assert client.get_run(first).info.status == "RUNNING"
    assert start(other) != first  # another command: another sweep
    client.set_terminated(first, "FINISHED")
    assert start(config) != first  # a finished sweep's rerun is a new sweep
    client.set_terminated(first, "FAILED")
    with open_dict(config):
        config.sweep_resume = False
    assert start(config) != first  # resuming off: every run is a new sweep


def test_an_experiment_without_a_search_space_is_a_one_line_error(store, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    config = _callback_config(store, tmp_path, ["sweep=grid"])  # no experiment: no conf/sweep_space/null/grid.yaml
    with pytest.raises(SystemExit) as stop:  # Hydra would turn a callback's UserError into a warning
        SweepParentRun().on_multirun_start(config)
    assert stop.value.code == 2 and PARENT_RUN_ENV not in os.environ
    assert capsys.readouterr().err == "error: sweep=grid: name the experiment to sweep (experiment=<name>)\n"
    with open_dict(config):
        config.hydra.runtime.choices.experiment = "yolo_facemask"
    with pytest.raises(
        UserError,
        match=r"^sweep=grid: experiment=yolo_facemask has no search space: add conf/sweep_space/yolo_facemask/grid.yaml$",
    ):
        check_search_space(config)


def test_the_report_draws_each_sweep_over_its_own_axes_with_the_best_cell_of_the_newest_sweep(tmp_path):
    """A face-mask sweep as its trials log it: batch size × lr0 × input size; the heat map's cells hold the best
    val/fitness over the input sizes (higher is better), of the newest parent only, a resumed trial included."""
    from mlflow import MlflowClient

    from reporting import mlflow_runs
    from reporting.report import sweep_figure, sweep_results

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("yolo_facemask-sweep")
    axes = {"sweep.rows": "data.batch_size", "sweep.columns": "model.lr0"}
    common = {"optimized_metric": "val/fitness", "selection.mode": "max"}

    def trial(parent: str, batch: int, lr: float, size: int, value: float, start: int) -> None:
        run = client.create_run(experiment, start_time=start, tags={PARENT_RUN_TAG: parent, **axes})
        params = {"data.batch_size": batch, "model.lr0": lr, "detector_imgsz": size, **common}
        for key, v in params.items():
            client.log_param(run.info.run_id, key, v)
        client.log_metric(run.info.run_id, "val/fitness", value)
        client.set_terminated(run.info.run_id, "FINISHED")

    older, newest = (client.create_run(experiment, start_time=t).info.run_id for t in (1_000, 2_000))
    trial(older, 8, 7e-4, 320, 0.99, 1_100)  # another sweep: not drawn
    trial(newest, 8, 7e-4, 256, 0.10, 1_500)  # finished before the interruption: kept by the resume
    trial(newest, 8, 7e-4, 320, 0.30, 2_100)
    trial(newest, 8, 2.8e-3, 256, 0.25, 2_200)
    trial(newest, 16, 7e-4, 256, 0.05, 2_300)
    mlflow_runs.connect(uri)
    metric, table = sweep_results(client, "yolo_facemask-sweep")
    assert metric == "val/fitness" and list(table.columns[:2]) == ["data.batch_size", "model.lr0"] and len(table) == 4
    fig, caption = sweep_figure(client, "yolo_facemask-sweep", metric, table)
    assert caption == "val/fitness by batch size and learning rate"
    ax, colorbar = fig.axes
    assert [t.get_text() for t in ax.texts] == ["0.3", "0.25", "0.05"]  # rows 8, 16 × columns 7e-4, 2.8e-3
    assert ax.get_xlabel() == "learning rate (model.lr0)" and "higher is better" in colorbar.get_ylabel()
