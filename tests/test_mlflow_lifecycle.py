"""The MLflow lifecycle of a training run: the model (the generator's pyfunc) logged with its signature, input
example and ONNX export and loaded back, the dataset inputs, system metrics, the experiment's description and kind, the Model Registry
(`register=true` and experiments/register.py), and a sweep as one parent run with a child run per trial."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from core.checkpoints import load_module
from core.mlflow_store import PARENT_RUN_ENV, PARENT_RUN_TAG
from core.registry import MODEL_URI_TAG, ONNX_MODEL_URI_TAG
from experiments.train import train
from tests.conftest import compose, mlflow_runs
from training.sweeps import SweepParentRun

TASK = "exp1_dcgan_fruits"
# The hand-made Fruits-360-style folder: 2 classes × 6 JPEGs, and one file that is not an image.
KEPT = [f"{fruit}/{k:02d}_100.jpg" for fruit in ("Apple", "Banana") for k in range(6)]
BROKEN = "Banana/99_100.jpg"


def _fruits(root: Path) -> Path:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(3)
    for name in KEPT:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (100, 100), "white")
        ImageDraw.Draw(image).ellipse((20, 20, 80, 80), fill=tuple(int(v) for v in rng.integers(60, 200, 3)))
        image.save(path, quality=95)
    (root / BROKEN).write_bytes(b"not a jpeg")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """One debug run of exp1 on the hand-made folder, logging its model and registering it, with system
    metrics sampled every 0.1 s: (the store folder, the composed config)."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    store = {
        "paths.log_dir": str(tmp / "logs"),
        "paths.mlflow_dir": str(tmp),
        "paths.data_dir": str(data_dir),
        "paths.cache_dir": str(tmp / "cache"),
    }
    cfg = compose(
        "train",
        {
            "experiment": TASK,
            "debug": "fast",
            "data": "fruits360_real",
            "data.root": str(_fruits(tmp / "fruits" / "Training")),
            "log_model": True,
            "register": True,
            "system_metrics.sampling_interval": 0.1,
            **store,
        },
    )
    train(cfg)
    return tmp, cfg


def _run(tmp: Path):
    client, runs = mlflow_runs(tmp, TASK)
    assert len(runs) == 1
    return client, runs[0]


def test_the_logged_model_loads_back_and_predicts_what_the_trained_generator_does(trained):
    tmp, cfg = trained
    client, run = _run(tmp)
    best = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    from dcgan.module import DCGAN
    from dcgan.serving import noise, to_uint8

    generator = load_module(DCGAN, best, quality=None).generator.eval()
    z = noise(7, 3, generator.latent_dim)  # batch 3 ≠ 2
    with torch.no_grad():
        expected = generator(torch.from_numpy(z)).numpy()

    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    model = mlflow.pyfunc.load_model(run.data.tags[MODEL_URI_TAG])  # the servable model: the generator's pyfunc
    signature = model.metadata.signature
    assert signature.inputs.to_dict() == [
        {"type": "long", "name": "count", "required": True},
        {"type": "long", "name": "seed", "required": True},
    ]
    assert [c["name"] for c in signature.outputs.to_dict()] == ["request", "index", "png"]
    got = model.predict(pd.DataFrame({"count": [3], "seed": [7]}))
    images = [
        cv2.imdecode(np.frombuffer(base64.b64decode(png), np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for png in got["png"]
    ]
    np.testing.assert_array_equal(np.stack(images), to_uint8(expected))

    onnx_model = mlflow.pyfunc.load_model(run.data.tags[ONNX_MODEL_URI_TAG])
    assert onnx_model.metadata.signature.inputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 128)}}
    ]
    np.testing.assert_allclose(onnx_model.predict(z)["images"], expected, rtol=0, atol=1e-4)  # dcgan_onnx's tolerance
    for uri in (run.data.tags[MODEL_URI_TAG], run.data.tags[ONNX_MODEL_URI_TAG]):
        logged = client.get_logged_model(uri.removeprefix("models:/"))
        assert (logged.experiment_id, logged.source_run_id) == (run.info.experiment_id, run.info.run_id)
        assert logged.artifact_location.startswith(str(tmp / "mlruns"))  # the store's files, not ./mlruns
    assert model.metadata.metadata["checkpoint"] == "best.ckpt"
    assert model.metadata.metadata["onnx"]["input"] == "z"


def test_the_dataset_input_holds_the_folder_its_file_list_digest_counts_and_skipped_file(trained):
    tmp, cfg = trained
    client, run = _run(tmp)
    [dataset_input] = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    listing = "".join(f"{name}\n" for name in sorted(KEPT))  # the 12 decoded files, not the broken one
    assert dataset.digest == hashlib.md5(listing.encode()).hexdigest()
    assert dataset.name == "fruits/Training"
    assert dataset.source_type == "local"
    tags = {t.key: t.value for t in dataset_input.tags}
    assert tags == {"mlflow.data.context": "training", "images": "12", "skipped": "1"}
    assert dataset.profile == '{"images": 12, "skipped": 1}'
    record = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/datasets/fruits_Training-training.json")
    assert record["skipped"] == [str(Path(cfg.data.root) / BROKEN)]
    assert record["files"] == KEPT


def test_system_metrics_and_the_experiment_description_and_kind(trained):
    tmp, cfg = trained
    client, run = _run(tmp)
    system = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system
    tags = client.get_experiment(run.info.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's model-training view
    assert tags["mlflow.note.content"] == cfg.experiment_description
    assert "§3.2.1" in tags["mlflow.note.content"]


def _register_config(tmp: Path, **overrides):
    return compose("register", {"paths.mlflow_dir": str(tmp), "paths.log_dir": str(tmp / "logs"), **overrides})


def test_register_true_and_the_register_entry_add_versions_with_the_run_metrics(trained):
    from experiments.register import register

    tmp, cfg = trained
    client, run = _run(tmp)
    [first] = client.search_model_versions(f"name = '{TASK}'")
    assert (first.version, first.run_id) == (1, run.info.run_id)  # register=true in the training run
    assert first.tags["quality/kid"] == repr(run.data.metrics["quality/kid"])
    assert first.tags["best/quality/kid"] == repr(run.data.metrics["best/quality/kid"])

    version = register(_register_config(tmp, task=TASK))  # the task's best finished run: the only one
    assert (version.name, version.version, version.run_id) == (TASK, 2, run.info.run_id)
    assert register(_register_config(tmp, run_id=run.info.run_id, name="fruit-generator")).version == 1

    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    request = pd.DataFrame({"count": [2], "seed": [0]})
    registered = mlflow.pyfunc.load_model(f"models:/{TASK}/2").predict(request)
    from_run = mlflow.pyfunc.load_model(run.data.tags[MODEL_URI_TAG]).predict(request)
    pd.testing.assert_frame_equal(registered, from_run)


def test_register_names_a_missing_task_or_run(trained):
    from core.errors import UserError
    from experiments.register import register

    tmp, _ = trained
    with pytest.raises(UserError, match="task=never_trained: no MLflow experiment"):
        register(_register_config(tmp, task="never_trained"))
    with pytest.raises(UserError, match="run_id=0123abc: no such run"):
        register(_register_config(tmp, run_id="0123abc"))
    with pytest.raises(UserError, match="^task: name the training task"):
        register(_register_config(tmp))


def test_a_sweep_is_one_parent_run_with_a_child_per_trial_and_the_best_trial_on_it(
    store, tmp_path, monkeypatch, request
):
    """The sweep's Hydra callback around two trials, run in-process as Hydra's basic launcher runs them; the
    second trial's KID is scripted lower, so it is the best (KID: lower is better)."""
    import atexit

    from omegaconf import open_dict

    from dcgan.quality import SampleQuality

    kids = iter([0.5, 0.25])
    monkeypatch.setattr(SampleQuality, "compute", lambda self, fake: {"fid": 1.0, "kid": next(kids), "kid_std": 0.0})
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    trial = {"experiment": TASK, "sweep": "grid", "debug": "fast", "data.batch_size": 8, **store}
    sweep_config = compose("train", trial)
    callback = SweepParentRun()
    request.addfinalizer(lambda: atexit.unregister(callback.end_unfinished))  # when an assertion fails before the end
    start_config = sweep_config.copy()
    with open_dict(start_config):  # what Hydra passes: the config with its hydra node
        start_config.hydra = {"sweep": {"dir": str(tmp_path / "sweep")}}
    callback.on_multirun_start(start_config)
    parent_id = os.environ[PARENT_RUN_ENV]
    results = [train(compose("train", {**trial, "model.lr": lr})) for lr in (1e-4, 2e-4)]
    callback.on_multirun_end(sweep_config)

    assert results == [0.5, 0.25]
    assert PARENT_RUN_ENV not in os.environ
    client, runs = mlflow_runs(tmp_path, f"{TASK}-sweep")
    [parent] = [r for r in runs if r.info.run_id == parent_id]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(runs) == 3 and len(children) == 2
    assert parent.info.status == "FINISHED" and "mlflow.parentRunId" not in parent.data.tags
    assert parent.info.run_name == "sweep-sweep"
    best = next(r for r in children if r.data.params["model.lr"] == "0.0002")
    assert parent.data.metrics == {"best/quality/kid": 0.25}
    assert parent.data.params == best.data.params  # model.lr 0.0002, data.batch_size 8, …
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.tags["best_run_name"] == "bs8-lr0.0002"


def test_a_failed_trial_ends_the_sweep_parent_failed_with_the_trial_named(store, tmp_path, monkeypatch, request):
    """Hydra's basic sweeper raises after a batch with a failed trial, without calling on_multirun_end: the parent
    must not stay RUNNING. A completed trial leaves it running; each failed one ends it FAILED and is named."""
    import atexit

    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import open_dict

    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    config = compose("train", {"experiment": TASK, "sweep": "grid", "debug": "fast", **store})
    start_config = config.copy()
    with open_dict(start_config):
        start_config.hydra = {"sweep": {"dir": str(tmp_path / "sweep")}}
    callback = SweepParentRun()
    callback.on_multirun_start(start_config)
    request.addfinalizer(lambda: atexit.unregister(callback.end_unfinished))
    parent_id = os.environ.pop(PARENT_RUN_ENV)
    client, _ = mlflow_runs(tmp_path, f"{TASK}-sweep")

    callback.on_job_end(config, JobReturn(overrides=["model.lr=0.0001"], status=JobStatus.COMPLETED))
    assert client.get_run(parent_id).info.status == "RUNNING"
    for overrides in (["model.lr=0.0002", "data.batch_size=8"], ["model.lr=0.0004"]):
        failed = JobReturn(overrides=overrides, status=JobStatus.FAILED)
        failed.return_value = RuntimeError("non-finite loss")
        callback.on_job_end(config, failed)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["failed_trials"] == "model.lr=0.0002 data.batch_size=8; model.lr=0.0004"


def test_a_sweep_that_exits_before_its_end_leaves_no_parent_running(store, tmp_path, monkeypatch):
    """A trial's UserError exits the process (status 2) before Hydra calls on_job_end or on_multirun_end: the
    callback's atexit handler, run here in a child process that exits that way, ends the parent FAILED."""
    import subprocess
    import sys

    script = f"""
import sys
from omegaconf import open_dict
from training.sweeps import SweepParentRun
from tests.conftest import compose
config = compose("train", {{"experiment": {TASK!r}, "sweep": "grid", "debug": "fast", **{store!r}}})
with open_dict(config):
    config.hydra = {{"sweep": {{"dir": {str(tmp_path / "sweep")!r}}}}}
callback = SweepParentRun()
callback.on_multirun_start(config)
print(callback.run_id, flush=True)
sys.exit(2)
"""
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 2, done.stderr[-2000:]
    parent_id = done.stdout.split()[-1]
    client, _ = mlflow_runs(tmp_path, f"{TASK}-sweep")
    assert client.get_run(parent_id).info.status == "FAILED"
    assert "ended FAILED: the sweep stopped before its end" in done.stderr


def test_log_model_defaults_on_except_under_debug_overlays(store):
    def logs_model(overrides: dict) -> bool:
        return compose("train", {"experiment": TASK, **overrides, **store}).log_model

    assert logs_model({}) is True
    assert logs_model({"debug": "fast"}) is False
    assert logs_model({"debug": "fast", "log_model": True}) is True  # the command line wins over the overlay
    assert logs_model({"log_model": False}) is False


@pytest.mark.parametrize(("interrupt", "status"), [(KeyboardInterrupt, "KILLED"), (RuntimeError, "FAILED")])
def test_an_interrupted_or_failed_training_ends_its_run(interrupt, status, store, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, an exit) where Lightning does not end the run itself ends it KILLED; an error, FAILED."""
    import pytorch_lightning as pl

    def stop(self, *args, **kwargs):
        raise interrupt("stopped")

    monkeypatch.setattr(pl.Trainer, "fit", stop)
    with pytest.raises(interrupt):
        train(compose("train", {"experiment": TASK, "debug": "fast", **store}))
    _, runs = mlflow_runs(tmp_path, TASK)
    assert [r.info.status for r in runs] == [status]


def test_a_stopped_sweep_ends_the_trials_its_workers_left_running(store, tmp_path, monkeypatch):
    """A parallel launcher's worker killed on Ctrl-C cannot end its trial's run: the sweep's exit handler ends every
    trial of its parent still RUNNING, KILLED, and leaves the finished ones as they are."""
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    config = compose("train", {"experiment": TASK, "sweep": "grid", "debug": "fast", **store})
    from omegaconf import open_dict

    with open_dict(config):
        config.hydra = {"sweep": {"dir": str(tmp_path / "sweep")}}
    callback = SweepParentRun()
    callback.on_multirun_start(config)
    client, _ = mlflow_runs(tmp_path, f"{TASK}-sweep")
    experiment_id = client.get_run(callback.run_id).info.experiment_id
    tags = {PARENT_RUN_TAG: callback.run_id}
    running = client.create_run(experiment_id, run_name="bs8-lr0.0001", tags=tags).info.run_id
    finished = client.create_run(experiment_id, run_name="bs8-lr0.0002", tags=tags).info.run_id
    client.set_terminated(finished, "FINISHED")
    other = client.create_run(experiment_id, run_name="another sweep's trial", tags={PARENT_RUN_TAG: "x"})
    callback.end_unfinished()
    status = {run_id: client.get_run(run_id).info.status for run_id in (callback.run_id, running, finished)}
    assert status == {callback.run_id: "FAILED", running: "KILLED", finished: "FINISHED"}
    assert client.get_run(other.info.run_id).info.status == "RUNNING"


def test_log_image_writes_the_rgb_pixels_as_png_and_jpeg(tmp_path):
    from types import SimpleNamespace

    from pytorch_lightning.loggers import MLFlowLogger

    from training.mlflow_logging import log_image

    logger = MLFlowLogger(
        experiment_name="images",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "a"),
    )
    trainer = SimpleNamespace(loggers=[logger])
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :10, 0] = 255  # red on the left, as RGB
    image[:, 20:, 2] = 200  # blue on the right
    log_image(trainer, image, "samples/epoch_0001.png")
    log_image(trainer, image, "figure.jpg")
    client = logger.experiment
    png = client.download_artifacts(logger.run_id, "samples/epoch_0001.png", str(tmp_path / "dl"))
    assert np.array_equal(cv2.imread(png)[..., ::-1], image)  # lossless, and in RGB order
    jpeg = cv2.imread(client.download_artifacts(logger.run_id, "figure.jpg", str(tmp_path / "dl")))[..., ::-1]
    assert np.abs(jpeg.astype(int) - image).mean() < 8 and jpeg[10, 5, 0] > 200 and jpeg[10, 25, 2] > 150
