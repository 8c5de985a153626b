"""Shared fixtures: compose the real configs with a temporary MLflow store and log folder."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from pathlib import Path

import pytest

import core  # noqa: F401  (offline switches)
from core import offline

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ML_PLAYGROUND_SHARED_DATA", REPO.parent / "shared" / "data"))


def needs_shared_data(*parts: str):
    """Skip unless ../shared/data (or $ML_PLAYGROUND_SHARED_DATA) holds the given sub-path."""
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"real data not present: {path} (see ../shared/data/README.md)")


# Every test, and every process a test starts (they inherit the variable and import `core`), runs with sockets
# limited to loopback and Unix sockets: a library that reaches for the network at run time (weights, fonts,
# telemetry, update checks) fails the test that triggered it (core/offline.py).
os.environ[offline.LOOPBACK_ONLY] = "1"
offline.limit_sockets_to_loopback()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One generated-data folder for the whole session (the synthetic sets are deterministic)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def store(tmp_path, data_dir) -> dict:
    """Overrides that send logs, checkpoints and MLflow to a temporary folder."""
    return {
        "paths.log_dir": str(tmp_path / "logs"),
        "paths.mlflow_dir": str(tmp_path),
        "paths.data_dir": str(data_dir),
        "paths.cache_dir": str(data_dir / "cache"),
    }


def compose(config_name: str, overrides: dict | list[str]):
    """Compose conf/<config_name>.yaml like the Hydra entry does, with the hydra node resolvable."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict, read_write

    items = [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, dict) else list(overrides)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=items, return_hydra_config=True)
    output_dir = Path(cfg.hydra.run.dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in the entry, where the job's config has no hydra node
        if "paths" in cfg and OmegaConf.is_interpolation(cfg.paths, "output_dir"):  # not when a test gave one
            # `${hydra:runtime.output_dir}` reads the global HydraConfig, which the next compose() replaces: this
            # config keeps its own folder (the entry has one config per process), else a test that composes two runs
            # reads the second one's folder through the first one's config
            cfg.paths.output_dir = str(output_dir)
    return cfg


def mlflow_runs(tracking_dir: Path, experiment: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tracking_dir}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client, client.search_runs([exp.experiment_id])


# The 2-step YOLO runs of the tests, with the optimizer recipe their expected values were measured with (a step every
# 16 images, 3 warm-up epochs), whatever the cpu_small profile's own recipe.
FAST = {
    "debug": "fast",
    "profile.detector_imgsz": 160,
    "data.batch_size": 8,
    "data.num_workers": 0,
    "model.nbs": 16,
    "model.warmup_epochs": 3.0,
    "data.test_fraction": 0,  # the trained detectors the tests compare were measured on all 32 training scenes
}


def _is_local(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def no_network():
    """Refuse (and record) every connection or name lookup that leaves the machine; loopback and Unix sockets pass."""
    attempts: list = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guard(address):
        if isinstance(address, tuple) and not _is_local(address[0]):
            attempts.append(address)
            raise OSError(f"test: network access refused: {address}")

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            attempts.append(host)
            raise socket.gaierror(f"test: name lookup refused: {host}")
        return getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", lambda self, address: (guard(address), connect(self, address))[1])
        mp.setattr(socket.socket, "connect_ex", lambda self, address: (guard(address), connect_ex(self, address))[1])
        mp.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        yield attempts


@pytest.fixture(scope="session")
def yolo_trained(tmp_path_factory):
    """One 2-step YOLO face-mask run on 40 synthetic images at 160 px, from scratch, with the network refused
    throughout; trained once per session for test_yolo, test_eval_facemask and test_export_facemask."""
    from experiments.train import train

    root = tmp_path_factory.mktemp("yolo")
    store = {
        "paths.log_dir": str(root / "logs"),
        "paths.mlflow_dir": str(root),
        "paths.data_dir": str(root / "data"),
        "paths.cache_dir": str(root / "cache"),
    }
    with no_network() as attempts:
        metric = train(
            compose(
                "train",
                {
                    "experiment": "yolo_facemask",
                    **store,
                    **FAST,
                    "data.generate.images": 40,
                    "model.pretrained": "null",
                },
            )
        )
    checkpoint = next((root / "logs" / "yolo_facemask").rglob("checkpoints/last.ckpt"))
    return {
        "root": root,
        "store": store,
        "metric": metric,
        "checkpoint": checkpoint,
        "attempts": attempts,
        "voc": root / "data" / "synthetic" / "facemask-voc",
    }
