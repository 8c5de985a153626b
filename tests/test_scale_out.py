"""Scale-out on existing engines: Lightning DDP, Hydra's launchers, an MLflow tracking server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from core.errors import UserError
from tests.conftest import REPO, compose, mlflow_runs

TRAIN = [sys.executable, str(REPO / "experiments" / "train.py")]
# trainer=ddp as on a GPU node, but two gloo processes on this CPU
DDP_ON_CPU = ["debug=fast", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
              "trainer.sync_batchnorm=false", "data.num_workers=0", "channels_last=false"]


def _args(store: dict) -> list[str]:
    return [f"{k}={v}" for k, v in store.items()]


def test_dcgan_trains_under_ddp_with_two_cpu_processes(store, tmp_path):
    result = subprocess.run([*TRAIN, "experiment=exp3_dcgan_hardhat_tricks", *DDP_ON_CPU, *_args(store)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    client, runs = mlflow_runs(tmp_path, "exp3_dcgan_hardhat_tricks")
    assert len(runs) == 1  # rank 1 opened no run of its own
    run = runs[0]
    assert run.data.params["trainer.strategy"] == "ddp_find_unused_parameters_true"
    assert {"train/d_loss", "train/g_loss", "quality/fid"} <= set(run.data.metrics)
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert grids == ["samples/epoch_0001.png"]  # written once, by rank 0


def test_face_classifier_trains_under_ddp_with_two_cpu_processes(store, tmp_path):
    result = subprocess.run([*TRAIN, "experiment=vgg16_faces", *DDP_ON_CPU, *_args(store)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    _, runs = mlflow_runs(tmp_path, "vgg16_faces")
    assert len(runs) == 1
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(runs[0].data.metrics)
    assert 0.0 <= runs[0].data.metrics["val/acc"] <= 1.0


@pytest.mark.parametrize("launcher", ["parallel", "slurm"])
def test_launcher_configs_compose(launcher, store):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"hydra/launcher={launcher}", "sweep=dcgan_grid", *_args(store)],
                            return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    assert target.endswith("JoblibLauncher" if launcher == "parallel" else "SlurmLauncher")
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1


def test_parallel_launcher_runs_a_two_point_sweep(store, tmp_path):
    result = subprocess.run([*TRAIN, "experiment=exp1_dcgan_fruits", "sweep=dcgan_grid", "hydra/launcher=parallel",
                             "debug=fast", "data.batch_size=64", *_args(store)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    _, runs = mlflow_runs(tmp_path, "exp1_dcgan_fruits-sweep")
    assert sorted(r.data.params["model.lr"] for r in runs) == ["0.0001", "0.0002"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_runs_log_to_a_real_mlflow_server(store, tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"{uri}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        result = subprocess.run([*TRAIN, "experiment=exp1_dcgan_fruits", "debug=fast", "logger=mlflow_server",
                                 f"logger.tracking_uri={uri}", *_args(store)],
                                capture_output=True, text=True, cwd=REPO, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("exp1_dcgan_fruits").experiment_id])
        assert len(runs) == 1 and "quality/fid" in runs[0].data.metrics
        assert "samples" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}  # through the server
        assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local store
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_unreachable_server_is_a_clear_error_within_seconds(store):
    from experiments.train import train

    cfg = compose("train", {"experiment": "exp1_dcgan_fruits", "debug": "fast", "logger": "mlflow_server",
                            "logger.tracking_uri": f"http://127.0.0.1:{_free_port()}", **store})
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


def test_pickled_code_in_a_weights_file_is_refused(tmp_path):
    """Weight and checkpoint files load with weights_only=True: a pickle that would run code is refused."""
    import pickle

    import torch

    from lightning_modules.sample_quality import SampleQuality

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"weight": Exploit()}))
    with pytest.raises(pickle.UnpicklingError):
        SampleQuality(num_samples=8, feature_weights=str(evil))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)
    assert not (tmp_path / "pwned").exists()
