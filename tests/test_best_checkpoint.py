"""The monitored best checkpoint beside last.ckpt: which epoch it holds, what the train entry returns and logs,
early stopping on the same metric, and which file the tools take by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.checkpoints import DEFAULT_CHECKPOINT, find_checkpoint
from experiments.train import train
from tests.conftest import compose, mlflow_runs

TASK = "exp1_dcgan_fruits"


@pytest.fixture
def scripted_kid(monkeypatch):
    """Replace the FID/KID measurement by a script: epoch k's `quality/kid` is `values[k]` (exact in float32)."""
    from dcgan.quality import SampleQuality

    values: list[float] = []
    calls = iter(range(100))

    def compute(self, fake):
        kid = values[next(calls)]
        return {"fid": 100 * kid, "kid": kid, "kid_std": 0.0}

    monkeypatch.setattr(SampleQuality, "compute", compute)
    return values


def _checkpoints(cfg) -> Path:
    return Path(cfg.paths.output_dir) / "checkpoints"


def test_best_ckpt_holds_the_epoch_of_the_lowest_kid_the_entry_returns_it_and_patience_stops(
    store, tmp_path, scripted_kid, monkeypatch
):
    import pytorch_lightning as pl

    # lowest KID at epoch 1; epoch 2 is worse, so patience=1 stops there (epoch 3 would have been better still)
    scripted_kid[:] = [0.5, 0.25, 0.375, 0.125, 0.0625]
    dumps, save_checkpoint = [], pl.Trainer.save_checkpoint

    def counted(trainer, filepath, *args, **kwargs):
        dumps.append(Path(filepath).name)
        return save_checkpoint(trainer, filepath, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", counted)
    every_epoch = {"model.quality.every_n_epochs": 1}  # one scripted KID per epoch
    cfg = compose(
        "train", {"experiment": TASK, "debug": "fast", "trainer.max_epochs": 5, "patience": 1, **every_epoch, **store}
    )
    assert (cfg.selection.metric, cfg.selection.mode, cfg.optimized_metric) == ("quality/kid", "min", "quality/kid")

    assert train(cfg) == 0.25  # the best epoch's value, not the last one's (0.375)

    folder = _checkpoints(cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "epoch=2-step=12.ckpt", "last.ckpt"]
    # best.ckpt is written before the epoch's own file, so that file (what resuming reads) holds this epoch's best
    assert dumps == ["best.ckpt", "epoch=0-step=4.ckpt", "best.ckpt", "epoch=1-step=8.ckpt", "epoch=2-step=12.ckpt"]
    assert torch.load(folder / "best.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 2  # stopped early
    log_dir = cfg.paths.log_dir
    assert DEFAULT_CHECKPOINT == "best"
    assert find_checkpoint(log_dir, TASK) == find_checkpoint(log_dir, TASK, "best") == folder / "best.ckpt"
    assert find_checkpoint(log_dir, TASK, "last") == folder / "last.ckpt"  # what resuming takes

    client, runs = mlflow_runs(tmp_path, TASK)
    metrics = runs[0].data.metrics
    assert (metrics["best/quality/kid"], metrics["best/epoch"], metrics["quality/kid"]) == (0.25, 1.0, 0.375)
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "checkpoints")}
    assert artifacts == {"checkpoints/best.ckpt", "checkpoints/last.ckpt"}


def _callbacks(store: dict, **overrides) -> list:
    from hydra.utils import instantiate

    cfg = compose("train", {"experiment": TASK, **overrides, **store})
    return [instantiate(c) for c in cfg.callbacks.values()]


def test_each_experiment_monitors_its_metric_and_the_sweep_value_follows_it(store):
    from training.callbacks import BestCheckpoint

    expected = {
        "exp1_dcgan_fruits": ("quality/kid", "min"),
        "exp2_dcgan_hardhat": ("quality/kid", "min"),
        "exp3_dcgan_hardhat_tricks": ("quality/kid", "min"),
        "vgg16_faces": ("val/acc", "max"),
        "vgg16_faces_paper": ("val/acc", "max"),
        "yolo_facemask": ("val/fitness", "max"),
    }
    for experiment, (metric, mode) in expected.items():
        cfg = compose("train", {"experiment": experiment, **store})
        assert (cfg.selection.metric, cfg.selection.mode, cfg.optimized_metric, cfg.patience) == (
            metric,
            mode,
            metric,
            None,
        )
    best = [c for c in _callbacks(store) if isinstance(c, BestCheckpoint)]
    assert [(b.monitor, b.mode, b.filename, b.save_top_k, b.save_last) for b in best] == [
        ("quality/kid", "min", "best", 1, None)
    ]


def test_without_a_monitor_or_patience_those_callbacks_are_left_out(store):
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    built = _callbacks(store, **{"selection.metric": "null"})
    assert [built[0], built[2]] == [None, None]  # best_checkpoint, early_stopping
    kept = [c for c in built if isinstance(c, ModelCheckpoint)]
    assert [(c.monitor, c.save_last) for c in kept] == [(None, "link")]  # the last/resume checkpoint, unchanged
    stop = _callbacks(store, patience=3)[2]
    assert isinstance(stop, EarlyStopping) and (stop.monitor, stop.mode, stop.patience) == ("quality/kid", "min", 3)


def test_a_bad_monitor_setting_is_a_user_error():
    from core.errors import UserError
    from training.callbacks import best_checkpoint, early_stopping

    with pytest.raises(
        UserError, match=r"^selection.mode='lowest': must be max \(higher is better\) or min \(lower is better\)$"
    ):
        best_checkpoint("ckpts", "val/acc", "lowest")
    with pytest.raises(UserError, match=r"^patience=-1: must be null \(no early stopping\) or ≥ 0 epochs$"):
        early_stopping("val/acc", "max", -1)


def test_a_resumed_run_keeps_its_best_epoch_and_the_tools_take_it(store, tmp_path, scripted_kid):
    """Resuming continues the run in its own checkpoint folder: an epoch after the resume that is worse than the
    best before it does not become best.ckpt, the entry returns the run's best, and the tools take that file."""
    # best at epoch 2, the last one before the resume; epoch 3 (0.25) is worse than it but better than epoch 1, the
    # best an epoch file written before its epoch's best would remember
    scripted_kid[:] = [0.5, 0.375, 0.125, 0.25, 0.4375]
    base = {"experiment": TASK, "debug": "fast", "model.quality.every_n_epochs": 1, **store}
    first = compose("train", {**base, "trainer.max_epochs": 3})
    assert train(first) == 0.125
    log_dir = first.paths.log_dir
    folder = find_checkpoint(log_dir, TASK, "last").parent
    resumed = compose("train", {**base, "trainer.max_epochs": 5, "ckpt_path": "last"})
    assert train(resumed) == 0.125  # not 0.25, the best of the resumed epochs alone

    assert find_checkpoint(log_dir, TASK) == folder / "best.ckpt"  # the run's own folder, which the resume went on in
    assert torch.load(folder / "best.ckpt", map_location="cpu", weights_only=True)["epoch"] == 2
    assert find_checkpoint(log_dir, TASK, "last") == folder / "last.ckpt"
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 4
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "epoch=4-step=20.ckpt", "last.ckpt"]
    client, runs = mlflow_runs(tmp_path, TASK)
    assert len(runs) == 1
    assert (runs[0].data.metrics["best/quality/kid"], runs[0].data.metrics["best/epoch"]) == (0.125, 2.0)


def test_a_resume_from_another_file_than_a_runs_last_ckpt_writes_a_new_folder_and_touches_no_file(
    store, tmp_path, scripted_kid
):
    """Only a run's own last.ckpt is continued in place: a copy outside logs/ or the run's best.ckpt starts a new
    checkpoint folder, and the file resumed from stays as it was."""
    import hashlib
    import shutil

    scripted_kid[:] = [0.5, 0.25, 0.375, 0.125, 0.0625, 0.03125]
    base = {"experiment": TASK, "debug": "fast", **store}
    train(compose("train", {**base, "trainer.max_epochs": 2}))
    folder = find_checkpoint(store["paths.log_dir"], TASK, "last").parent
    elsewhere = tmp_path / "elsewhere" / "last.ckpt"
    elsewhere.parent.mkdir()
    shutil.copyfile(folder / "last.ckpt", elsewhere)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (elsewhere, folder / "best.ckpt")}

    for resumed_from in before:
        cfg = compose("train", {**base, "trainer.max_epochs": 3, "ckpt_path": str(resumed_from)})
        train(cfg)
        assert sorted(p.name for p in _checkpoints(cfg).iterdir()) == ["best.ckpt", "epoch=2-step=12.ckpt", "last.ckpt"]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before
    assert sorted(p.name for p in elsewhere.parent.iterdir()) == ["last.ckpt"] and not elsewhere.is_symlink()
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"]


def test_the_quality_pass_runs_on_its_cadence_and_best_ckpt_is_among_the_evaluated_epochs(
    store, tmp_path, scripted_kid
):
    """every_n_epochs=2 over 5 epochs: the pass runs after 0-based epochs 0, 1, 3 and 4 (the first, every second,
    the last); the epochs it skips log no quality/kid, and best.ckpt holds the best evaluated one."""
    scripted_kid[:] = [0.5, 0.125, 0.375, 0.25]  # the four passes' values, in order
    cfg = compose(
        "train",
        {"experiment": TASK, "debug": "fast", "trainer.max_epochs": 5, "model.quality.every_n_epochs": 2, **store},
    )
    assert train(cfg) == 0.125
    assert torch.load(_checkpoints(cfg) / "best.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    client, runs = mlflow_runs(tmp_path, TASK)
    history = client.get_metric_history(runs[0].info.run_id, "quality/kid")
    epochs = {m.step: m.value for m in client.get_metric_history(runs[0].info.run_id, "epoch")}
    assert [(epochs[m.step], m.value) for m in history] == [(0, 0.5), (1, 0.125), (3, 0.375), (4, 0.25)]


def test_auto_cadence_keeps_the_quality_pass_within_its_budget():
    """auto: the first and last epochs always; between them a pass only when the passes so far plus one more stay
    within 5 % of the training time. 1-s epochs and 0.16-s passes: a pass every 4th epoch at most."""
    from core.errors import UserError
    from dcgan.quality import QualityCadence

    cadence, ran = QualityCadence("auto"), []
    for epoch in range(12):
        cadence.add_training(1.0)
        if cadence.due(epoch, last=epoch == 11):
            ran.append(epoch)
            cadence.add_pass(0.16)
    assert ran == [0, 6, 9, 11]  # 0.32 s ≤ 0.05·7 s after epoch 6, 0.48 ≤ 0.05·10 after epoch 9, then the last
    assert QualityCadence(3).due(2, False) and not QualityCadence(3).due(3, False)
    with pytest.raises(UserError, match=r"every_n_epochs=0: must be auto or a whole number >= 1"):
        QualityCadence(0)
