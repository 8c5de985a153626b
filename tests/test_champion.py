"""The registry's `champion`: `make register` gives the alias to the best registered model (real data before built-in,
full scale before demo-scale, then the selection metric), says why, and every tool takes the champion's checkpoint
by default — not the newest run's, which may be a quick built-in one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from core.checkpoints import RUN_ID_FILE, tool_checkpoint
from core.registry import MODEL_URI_TAG

TASK = "yolo_facemask"


def _run(client, experiment_id: str, *, real: bool, fitness: float, caps: str = "none") -> str:
    import mlflow

    run = client.create_run(experiment_id)
    params = {"selection.metric": "val/fitness", "selection.mode": "max"}
    params.update({"data.generate": "None"} if real else {"data.generate._target_": "synthetic.facemask.generate"})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    client.log_metric(run.info.run_id, "best/val/fitness", fitness)
    client.set_tag(run.info.run_id, "profile.caps", caps)

    class Model(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_id=run.info.run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=Model(), pip_requirements=[])
    client.set_tag(run.info.run_id, MODEL_URI_TAG, info.model_uri)
    client.set_terminated(run.info.run_id)
    time.sleep(0.01)  # distinct start times
    return run.info.run_id


def _checkpoint_folder(log_dir: Path, run_id: str, name: str) -> Path:
    folder = log_dir / TASK / "runs" / name / "checkpoints"
    folder.mkdir(parents=True)
    (folder.parent / RUN_ID_FILE).write_text(run_id)
    (folder / "best.ckpt").write_bytes(b"weights")
    return folder / "best.ckpt"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    experiment_id = client.create_experiment(TASK, artifact_location=str(tmp_path / "artifacts"))
    return uri, client, experiment_id, tmp_path / "logs"


def test_champion_goes_to_real_data_and_tools_take_its_checkpoint(store, capsys):
    from experiments.register import register_and_promote

    uri, client, experiment_id, log_dir = store
    real = _run(client, experiment_id, real=True, fitness=0.52)
    real_ckpt = _checkpoint_folder(log_dir, real, "real")
    register_and_promote(uri, real, TASK)
    assert f"{TASK}@champion is version 1 (real data, full scale, best/val/fitness 0.5200)" in capsys.readouterr().out

    built_in = _run(client, experiment_id, real=False, fitness=0.75)  # newer, higher figure, on easy built-in data
    _checkpoint_folder(log_dir, built_in, "built_in")
    register_and_promote(uri, built_in, TASK)
    out = capsys.readouterr().out
    assert f"{TASK}@champion stays version 1 (real data" in out and "ranks before version 2 (built-in data" in out
    assert client.get_model_version_by_alias(TASK, "champion").version == 1

    cfg = OmegaConf.create({"ckpt": None, "paths": {"log_dir": str(log_dir), "mlflow_uri": uri}})
    assert tool_checkpoint(cfg, TASK, "make yolo-facemask") == real_ckpt  # not the newest run's

    better = _run(client, experiment_id, real=True, fitness=0.61)
    better_ckpt = _checkpoint_folder(log_dir, better, "better")
    register_and_promote(uri, better, TASK)
    assert "is version 3 (real data, full scale, best/val/fitness 0.6100): it ranks before version 1" in (
        capsys.readouterr().out
    )
    assert tool_checkpoint(cfg, TASK, "make yolo-facemask") == better_ckpt
    demo = _run(client, experiment_id, real=True, fitness=0.9, caps="max_epochs 100 → 5")
    register_and_promote(uri, demo, TASK)
    assert client.get_model_version_by_alias(TASK, "champion").version == 3  # full scale before demo-scale


def test_without_a_champion_tools_take_the_newest_finished_run(store):
    uri, client, experiment_id, log_dir = store
    first = _checkpoint_folder(log_dir, _run(client, experiment_id, real=True, fitness=0.5), "first")
    time.sleep(0.02)
    newest = _checkpoint_folder(log_dir, _run(client, experiment_id, real=False, fitness=0.1), "newest")
    assert first != newest
    cfg = OmegaConf.create({"ckpt": None, "paths": {"log_dir": str(log_dir), "mlflow_uri": uri}})
    assert tool_checkpoint(cfg, TASK, "make yolo-facemask") == newest
