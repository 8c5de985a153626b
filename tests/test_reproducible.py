"""A seeded run gives the same numbers wherever the checkout lives and whatever caches it holds: a short exp1 in two
folders, the second holding built-in images and a decoded-image cache written by another version of the generator,
logs identical values for every metric at every step."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from experiments.train import train
from synthetic import MANIFEST
from tests.conftest import compose

TASK = "exp1_dcgan_fruits"


def _overrides(root: Path) -> dict:
    return {
        "experiment": TASK,
        "debug": "fast",
        "trainer.max_epochs": 3,
        "model.quality.every_n_epochs": 1,  # the auto cadence picks epochs by wall time
        "paths.log_dir": str(root / "logs"),
        "paths.mlflow_dir": str(root),
        "paths.data_dir": str(root / "data"),
        "paths.cache_dir": str(root / ".cache"),
    }


def _every_value(root: Path) -> dict:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name(TASK).experiment_id])
    keys = sorted(k for k in run.data.metrics if not k.startswith("system/"))  # the machine's load, not the run's
    return {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)] for k in keys}


def _stale_data(root: Path) -> None:
    """The built-in fruits as an older generator left them: other pixels, a manifest without the generator's version,
    and their decoded-image cache warm."""
    cfg = compose("train", _overrides(root))
    from hydra.utils import instantiate

    data = instantiate(cfg.data, _convert_="partial")
    data.prepare_data()
    folder = Path(cfg.data.root)
    for image in sorted(folder.rglob("*.jpg"))[::3]:
        pixels = cv2.imread(str(image))
        cv2.imwrite(str(image), np.ascontiguousarray(pixels[:, ::-1]))  # mirrored: what another drawing gives
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.pop("version", None)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    data.setup("fit")  # warms the decoded cache with the stale pixels
    assert any(Path(cfg.paths.cache_dir, "decoded").glob("decoded-*.npz"))


def test_two_checkouts_one_with_stale_caches_log_identical_values(tmp_path):
    fresh, used = tmp_path / "fresh clone", tmp_path / "long-used" / "checkout"
    _stale_data(used)
    train(compose("train", _overrides(fresh)))
    train(compose("train", _overrides(used)))
    a, b = _every_value(fresh), _every_value(used)
    assert "quality/kid" in a and "train/g_loss" in a and len(a["quality/kid"]) == 3
    assert a == b
