"""Scale-out on existing engines: Lightning DDP, Hydra's launchers, an MLflow tracking server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
from mlflow import MlflowClient

from core.errors import UserError
from core.mlflow_store import server_answers
from tests.conftest import REPO, compose, mlflow_runs

TRAIN = [sys.executable, "-m", "experiments.train"]
# trainer=ddp as on a GPU node (bf16-mixed, channels_last), but two gloo processes on this CPU: only sync BatchNorm
# is off, as torch's SyncBatchNorm runs on GPUs only (tests/test_training_branches.py checks the profile turns it on)
DDP_ON_CPU = [
    "debug=fast",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.sync_batchnorm=false",
    "data.num_workers=0",
]


def _args(store: dict) -> list[str]:
    return [f"{k}={v}" for k, v in store.items()]


def test_dcgan_trains_under_ddp_with_two_cpu_processes(store, tmp_path):
    result = subprocess.run(
        [*TRAIN, "experiment=exp3_dcgan_hardhat_tricks", *DDP_ON_CPU, *_args(store)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    client, runs = mlflow_runs(tmp_path, "exp3_dcgan_hardhat_tricks")
    assert len(runs) == 1  # rank 1 opened no run of its own
    run = runs[0]
    assert run.data.params["trainer.strategy"] == "ddp_find_unused_parameters_true"
    assert (run.data.params["trainer.precision"], run.data.params["channels_last"]) == ("bf16-mixed", "True")
    assert {"train/d_loss", "train/g_loss", "quality/fid"} <= set(run.data.metrics)
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert grids == ["samples/epoch_0001.png"]  # written once, by rank 0


def test_face_classifier_trains_under_ddp_with_two_cpu_processes(store, tmp_path):
    result = subprocess.run(
        [
            *TRAIN,
            "experiment=vgg16_faces",
            "model.backbone=vgg16",
            *DDP_ON_CPU,
            "data.image_size=32",
            "data.views=2",
            *_args(store),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    _, runs = mlflow_runs(tmp_path, "vgg16_faces")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(metrics)
    # two steps from a random head predict one identity (carol) for every face: the accuracy over both ranks'
    # halves of the 32 validation faces (8 per identity) is exactly 8/32, in bf16 as in fp32 (the single run's)
    assert metrics["val/acc"] == 0.25
    assert [metrics[f"val_class/{k}/recall"] for k in ("0_alice", "1_bob", "2_carol", "3_dave")] == [0, 0, 1, 0]
    assert (runs[0].data.params["trainer.precision"], runs[0].data.params["channels_last"]) == ("bf16-mixed", "True")


@pytest.mark.parametrize("launcher", ["parallel", "slurm"])
def test_launcher_configs_compose(launcher, store):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(
            "train",
            overrides=[f"hydra/launcher={launcher}", "sweep=grid", *_args(store)],
            return_hydra_config=True,
        )
    target = cfg.hydra.launcher._target_
    assert target.endswith("JoblibLauncher" if launcher == "parallel" else "SlurmLauncher")
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1


def test_parallel_launcher_runs_a_two_point_sweep(store, tmp_path):
    result = subprocess.run(
        [
            *TRAIN,
            "experiment=exp1_dcgan_fruits",
            "sweep=grid",
            "hydra/launcher=parallel",
            "debug=fast",
            "data.batch_size=64",
            *_args(store),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    _, runs = mlflow_runs(tmp_path, "exp1_dcgan_fruits-sweep")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]  # the sweep's one row in the UI
    runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["model.lr"] for r in runs) == ["0.0001", "0.0002"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path, port: int) -> Iterator[subprocess.Popen]:
    """A real `mlflow server` on 127.0.0.1:port with its store in `folder`, up until the block ends."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder}/server.db",
            "--artifacts-destination",
            str(folder / "server-artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not server_answers(f"http://127.0.0.1:{port}", timeout=1):
            time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_runs_log_to_a_real_mlflow_server(store, tmp_path):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    with mlflow_server(tmp_path, port):
        result = subprocess.run(
            [
                *TRAIN,
                "experiment=exp1_dcgan_fruits",
                "debug=fast",
                "logger=mlflow_server",
                f"logger.tracking_uri={uri}",
                *_args(store),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("exp1_dcgan_fruits").experiment_id])
        assert len(runs) == 1 and "quality/fid" in runs[0].data.metrics
        assert "samples" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}  # through the server
        assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local store


class KillServerAfterFirstEpoch(pl.Callback):
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0:
            os.killpg(self.pid, signal.SIGKILL)


def test_a_server_lost_mid_run_leaves_the_run_in_the_local_store_until_uploaded(store, tmp_path, monkeypatch, caplog):
    from core.server_fallback import OFFLINE_COPY_OF, pending_offline_runs
    from experiments.train import train
    from experiments.upload_offline_runs import upload

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    with mlflow_server(tmp_path, port) as server:
        cfg = compose(
            "train",
            {
                "experiment": "exp1_dcgan_fruits",
                "debug": "fast",
                "trainer.max_epochs": 3,
                "logger": "mlflow_server",
                "logger.tracking_uri": uri,
                "+callbacks.kill_server._target_": f"{__name__}.KillServerAfterFirstEpoch",
                "+callbacks.kill_server.pid": server.pid,
                **store,
            },
        )
        train(cfg)  # the server dies after epoch 0; the run still finishes
    assert "stopped answering" in caplog.text and "still unreachable" in caplog.text

    local = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [stand_in] = pending_offline_runs(local)
    assert stand_in.info.status == "FINISHED"
    assert {m.value for m in local.get_metric_history(stand_in.info.run_id, "epoch")} >= {1, 2}
    server_run_id = stand_in.data.tags[OFFLINE_COPY_OF]

    with pytest.raises(UserError, match="still unreachable"):
        upload(compose("upload_offline_runs", store))
    with mlflow_server(tmp_path, port):  # back, on the same store
        client = MlflowClient(tracking_uri=uri)
        assert 2 not in {m.value for m in client.get_metric_history(server_run_id, "epoch")}
        assert upload(compose("upload_offline_runs", store)) == [server_run_id]
        run = client.get_run(server_run_id)
        assert run.info.status == "FINISHED"
        assert {m.value for m in client.get_metric_history(server_run_id, "epoch")} == {0, 1, 2}
        assert "checkpoints/last.ckpt" in {a.path for a in client.list_artifacts(server_run_id, "checkpoints")}
    assert pending_offline_runs(local) == []


def test_unreachable_server_is_a_clear_error_within_seconds(store):
    from experiments.train import train

    cfg = compose(
        "train",
        {
            "experiment": "exp1_dcgan_fruits",
            "debug": "fast",
            "logger": "mlflow_server",
            "logger.tracking_uri": f"http://127.0.0.1:{_free_port()}",
            **store,
        },
    )
    start = time.time()
    with pytest.raises(UserError, match="unreachable.*make mlflow-server"):
        train(cfg)
    assert time.time() - start < 15


def test_unwritable_run_folder_is_a_clear_error_before_training(store, tmp_path):
    from experiments.train import check_output_dir

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write to the run folder"):
        check_output_dir(blocker / "run")
