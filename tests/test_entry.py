"""The train entry as a user runs it: subprocesses of experiments/train.py, and faults injected in-process."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.metric_names import GAN_LOSS_KINDS, GAN_NETS, QUALITY, gan_loss, gan_loss_std
from tests.conftest import REPO, compose, mlflow_runs


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        **kwargs,
    )


def _overrides(store: dict) -> list[str]:
    return [f"{k}={v}" for k, v in store.items()]


def _epoch_rows(tracking_dir: Path, task: str) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...] in logging order} of DCGAN's epoch-end metrics
    (training.callbacks.EpochMetrics) in the one run of `task`: a duplicated or missing epoch shows as an
    extra or missing row."""
    client, [run] = mlflow_runs(tracking_dir, task)
    names = [gan_loss(net, kind) for net in GAN_NETS for kind in GAN_LOSS_KINDS] + [gan_loss_std(n) for n in GAN_NETS]
    names += [key for key in run.data.metrics if key.startswith(QUALITY)]
    assert f"{QUALITY}kid" in names, sorted(run.data.metrics)
    return {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] for key in names}


def test_sweep_runs_a_grid_grouped_in_one_mlflow_experiment(store, tmp_path):
    result = _run(
        [
            "experiment=exp3_dcgan_hardhat_tricks",
            "sweep=grid",
            "debug=fast",
            "data.batch_size=8",
            *_overrides(store),
        ]
    )  # the command line narrows the grid to 2 points
    assert result.returncode == 0, result.stderr[-3000:]
    client, runs = mlflow_runs(tmp_path, "exp3_dcgan_hardhat_tricks-sweep")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]  # the sweep's one row in the UI
    runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 2
    assert sorted(float(r.data.params["model.lr"]) for r in runs) == [1e-4, 2e-4]
    assert {r.data.params["data.batch_size"] for r in runs} == {"8"}
    assert len({r.data.tags["sweep"] for r in runs}) == 1  # one tag groups the sweep's runs
    assert all("quality/fid" in r.data.metrics for r in runs)
    assert {r.info.run_name for r in runs} == {"bs8-lr0.0001", "bs8-lr0.0002"}
    hydra_files = {a.path.split("/")[-1] for a in client.list_artifacts(runs[0].info.run_id, "config/hydra")}
    assert {"config.yaml", "overrides.yaml"} <= hydra_files  # the job's .hydra folder, logged by the entry


def test_bad_override_and_missing_data_give_clear_messages(store):
    result = _run(["experiment=exp1_dcgan_fruits", "model.not_a_key=1", *_overrides(store)])
    assert result.returncode != 0 and "not_a_key" in result.stderr and "Traceback" not in result.stderr
    result = _run(
        ["experiment=exp1_dcgan_fruits", "data=fruits360_real", "paths.shared_data=/nowhere", *_overrides(store)]
    )
    assert result.returncode == 2
    assert "data folder not found: /nowhere/fruits360/Training" in result.stderr and "Traceback" not in result.stderr


def test_a_killed_run_resumes_from_its_last_checkpoint(store, tmp_path):
    args = [
        "experiment=exp1_dcgan_fruits",
        "debug=fast",
        "trainer.limit_train_batches=1.0",
        "trainer.max_epochs=4",
        "model.quality.every_n_epochs=1",  # the auto cadence picks epochs by wall time: compared epoch by epoch
        *_overrides(store),
    ]
    reference = _run([*args, "task_name=uninterrupted"])
    assert reference.returncode == 0, reference.stderr[-3000:]

    task_dir = Path(store["paths.log_dir"]) / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *args, "task_name=killed"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300

    def second_epoch_saved() -> bool:  # last.ckpt is re-linked only once the new checkpoint is fully written
        return any(os.readlink(p).startswith("epoch=1") for p in task_dir.rglob("last.ckpt") if p.is_symlink())

    while time.time() < deadline and not second_epoch_saved():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: after epoch 2's checkpoint, before the end
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    resumed = _run([*args, "task_name=killed", "ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def final_weights(task):
        last = max((Path(store["paths.log_dir"]) / task).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
        state = torch.load(last, map_location="cpu", weights_only=True)
        assert state["epoch"] == 3
        return state["state_dict"]

    a, b = final_weights("uninterrupted"), final_weights("killed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    client, runs = mlflow_runs(tmp_path, "killed")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    # each epoch once, at step 1..4, with the uninterrupted run's values: whether the kill fell before or after
    # epoch 2's metrics reached MLflow, the resumed run writes exactly the ones missing
    killed, reference = _epoch_rows(tmp_path, "killed"), _epoch_rows(tmp_path, "uninterrupted")
    assert [step for step, _ in killed[gan_loss("g", "epoch")]] == [1, 2, 3, 4]
    assert killed == reference


def test_a_disk_filling_up_mid_run_is_a_clear_error_and_the_run_resumes(store, tmp_path, monkeypatch, capsys):
    from experiments import user_errors
    from experiments.train import train

    save = torch.save

    def disk_full_at_epoch_1(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 1:
            Path(f).write_bytes(bytes(1024))  # the part written before the disk filled
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return save(obj, f, *args, **kwargs)

    overrides = {
        "experiment": "exp1_dcgan_fruits",
        "debug": "fast",
        "trainer.max_epochs": 3,
        "model.quality.every_n_epochs": 1,  # compared epoch by epoch: not the wall-time cadence
        **store,
    }
    monkeypatch.setattr(torch, "save", disk_full_at_epoch_1)
    with pytest.raises(SystemExit) as stopped, user_errors():
        train(compose("train", overrides))
    assert stopped.value.code == 2
    assert "disk full while writing" in capsys.readouterr().err

    monkeypatch.undo()  # space freed
    [last] = (Path(store["paths.log_dir"]) / "exp1_dcgan_fruits").rglob("last.ckpt")
    assert not list(last.parent.glob(".*.tmp"))  # the partly written file is gone
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # the last complete one
    train(compose("train", {**overrides, "ckpt_path": "last"}))
    client, runs = mlflow_runs(tmp_path, "exp1_dcgan_fruits")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    train(compose("train", {**overrides, "task_name": "uninterrupted"}))
    resumed, reference = _epoch_rows(tmp_path, "exp1_dcgan_fruits"), _epoch_rows(tmp_path, "uninterrupted")
    # one row per epoch (step = 1-based epoch): epoch 1, whose checkpoint failed, is logged once, by the resumed
    # run that repeated it, with the values an uninterrupted run logs
    assert [step for step, _ in resumed[gan_loss("g", "epoch")]] == [1, 2, 3]
    assert resumed == reference


def test_a_run_stopped_between_a_checkpoint_and_its_metrics_resumes_with_each_epoch_once(store, tmp_path, monkeypatch):
    """The other window: epoch 1's checkpoint is written and the run stops before epoch 1's metrics reach MLflow
    (they are written when epoch 2 starts); the resumed run starts at epoch 2 and must write them from the
    checkpoint, once."""
    from experiments.train import train
    from training.callbacks import EpochSeed

    seed = EpochSeed.on_train_epoch_start

    def stop_at_epoch_2(self, trainer, module):  # EpochSeed runs before the module's callbacks (EpochMetrics)
        if trainer.current_epoch == 2:
            raise RuntimeError("stopped after epoch 1's checkpoint")
        seed(self, trainer, module)

    overrides = {
        "experiment": "exp1_dcgan_fruits",
        "debug": "fast",
        "trainer.max_epochs": 3,
        "model.quality.every_n_epochs": 1,  # compared epoch by epoch: not the wall-time cadence
        **store,
    }
    monkeypatch.setattr(EpochSeed, "on_train_epoch_start", stop_at_epoch_2)
    with pytest.raises(RuntimeError, match="stopped after epoch 1"):
        train(compose("train", overrides))
    [last] = (Path(store["paths.log_dir"]) / "exp1_dcgan_fruits").rglob("last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1
    # epoch 1 (step 2) is in its checkpoint only
    assert [step for step, _ in _epoch_rows(tmp_path, "exp1_dcgan_fruits")[gan_loss("g", "epoch")]] == [1]

    monkeypatch.undo()
    train(compose("train", {**overrides, "ckpt_path": "last"}))
    train(compose("train", {**overrides, "task_name": "uninterrupted"}))
    resumed, reference = _epoch_rows(tmp_path, "exp1_dcgan_fruits"), _epoch_rows(tmp_path, "uninterrupted")
    assert [step for step, _ in resumed[gan_loss("g", "epoch")]] == [1, 2, 3]
    assert resumed == reference
