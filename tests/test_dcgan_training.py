"""The DCGAN experiments end to end through the real configs, entry and MLflow store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from experiments.train import train
from tests.conftest import REPO, compose, mlflow_runs

DCGAN_EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("exp*_dcgan_*.yaml"))


def test_the_three_paper_experiments_exist():
    assert DCGAN_EXPERIMENTS == ["exp1_dcgan_fruits", "exp2_dcgan_hardhat", "exp3_dcgan_hardhat_tricks"]


@pytest.mark.parametrize("experiment", DCGAN_EXPERIMENTS)
def test_experiment_composes_with_the_paper_settings(experiment, store):
    cfg = compose("train", {"experiment": experiment, "trainer": "gpu", **store})
    paper = {  # batch, lr, epochs, generator layers (../shared/PAPER-NOTES.md)
        "exp1_dcgan_fruits": (64, 1e-4, 1000, 5),
        "exp2_dcgan_hardhat": (64, 1e-4, 800, 5),
        "exp3_dcgan_hardhat_tricks": (8, 2e-4, 200, 6),
    }[experiment]
    assert (cfg.data.batch_size, cfg.model.lr, cfg.trainer.max_epochs, cfg.model.generator.num_layers) == paper
    assert cfg.model.generator.width_multiplier == 1.0 and cfg.data.max_images is None


@pytest.mark.parametrize("experiment", DCGAN_EXPERIMENTS)
def test_the_default_profile_gives_the_discriminator_a_quarter_of_the_paper_width(experiment, store):
    """trainer=cpu_small: G at 1/8 of the paper's width, D at 1/4 (8→128 channels); at 1/8 D's 4→64 channels cannot
    tell the built-in fruits' modes apart and exp1's G draws one blob for every z."""
    from dcgan.nets import Discriminator

    cfg = compose("train", {"experiment": experiment, **store})
    assert (cfg.model.generator.width_multiplier, cfg.model.discriminator.width_multiplier) == (0.125, 0.25)
    convs = [m for m in Discriminator(**cfg.model.discriminator).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 128]


# KID, FID, coverage, recall and diversity of each experiment's debug=fast run: seeds, data and deterministic=True fix every
# number, so a change in the data, the nets, their init, the sampling or the metric moves them (measured on CPU,
# torch 2 / torchmetrics 1). Two steps at lr 2e-4 barely move G: a change inside the training step can stay within 0.1% (removing exp3's
# instance noise did), which tests/test_training_branches.py checks instead.
DEBUG_RUN_QUALITY = {  # KID, FID, coverage, recall, diversity
    "exp1_dcgan_fruits": (1.2250334024429321, 20.02505111694336, 0.0, 0.0, 0.0004765529626103257),
    "exp2_dcgan_hardhat": (0.1004616841673851, 2.304536819458008, 0.0, 0.0, 0.0007079767190953655),
    "exp3_dcgan_hardhat_tricks": (0.10033096373081207, 2.301910400390625, 0.0, 0.0, 0.00010841677246112881),
}


@pytest.mark.parametrize("experiment", DCGAN_EXPERIMENTS)
def test_experiment_trains_and_logs_to_mlflow(experiment, store, tmp_path):
    cfg = compose("train", {"experiment": experiment, "debug": "fast", **store})
    kid = train(cfg)  # the experiment's monitor: the best (lowest) KID, here of the one epoch
    expected_kid, expected_fid, *expected_diversity, expected_spread = DEBUG_RUN_QUALITY[experiment]
    expected_diversity = tuple(expected_diversity)
    assert kid == pytest.approx(expected_kid, rel=1e-3)

    client, runs = mlflow_runs(tmp_path, experiment)
    assert len(runs) == 1
    run = runs[0]
    for key in (
        "train/d_loss",
        "train/g_loss",
        "train/d_real",
        "train/d_fake",
        "train/d_loss_epoch",
        "train/g_loss_last",
        "quality/fid",
        "quality/kid",
        "quality/coverage",
        "quality/recall",
        "quality/precision",
        "quality/density",
        "quality/diversity",
        "stability/g_loss_std",
    ):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "train/d_loss")) == 2  # per step
    assert run.data.metrics["quality/kid"] == kid  # one epoch: its KID is the best, which the entry returns
    assert run.data.metrics["quality/fid"] == pytest.approx(expected_fid, rel=1e-3)
    # the diversity measures beside KID, on the same 32 features (k = 5): two steps from the init cover no real image
    assert (run.data.metrics["quality/coverage"], run.data.metrics["quality/recall"]) == expected_diversity
    # and G's samples, two steps from the init, nearly one image: their spread a thousandth of the real images'
    assert run.data.metrics["quality/diversity"] == pytest.approx(expected_spread, rel=1e-3)
    assert run.data.params["model.lr"] == str(cfg.model.lr)
    # debug=fast forces 1 epoch (no cap) and tightens the width and image caps: recorded as tags and params
    assert run.data.tags["profile"] == "debug=fast"
    assert run.data.tags["profile.caps"] == "width_multiplier 1.0 → 0.0625, max_images all → 128"
    assert (run.data.params["epochs"], run.data.params["trainer.max_epochs"]) == (str(cfg.epochs), "1")
    grid_path = client.download_artifacts(run.info.run_id, "samples/epoch_0001.png", str(tmp_path / "dl"))
    from PIL import Image

    grid = np.asarray(Image.open(grid_path))
    assert grid.shape == (2 + 4 * 66, 2 + 8 * 66, 3)  # 32 samples, 8 per row, 2 px padding
    assert grid.std() > 5  # not blank
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples", "figures", "checkpoints", "config", "history.json"} <= artifacts
    from dcgan.module import DCGAN
    from tests.test_checkpoint_trust import assert_plain_checkpoint

    model = assert_plain_checkpoint(next(Path(cfg.paths.output_dir).rglob("last.ckpt")), DCGAN)
    assert model.hparams.lr == cfg.model.lr and type(model.hparams.generator) is dict  # plain containers only


def _weights(cfg) -> dict[str, torch.Tensor]:
    last = next(Path(cfg.paths.output_dir).rglob("last.ckpt"))
    return torch.load(last, map_location="cpu", weights_only=True)["state_dict"]


def test_same_seed_gives_bit_identical_runs(store):
    overrides = {"experiment": "exp3_dcgan_hardhat_tricks", "debug": "fast", "trainer.max_epochs": 2, **store}
    first = compose("train", overrides)
    train(first)
    second = compose("train", overrides)
    train(second)
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = compose("train", {**overrides, "seed": 7})
    train(other)
    c = _weights(other)
    assert not torch.equal(a["generator.project.0.weight"], c["generator.project.0.weight"])


def test_resume_from_last_continues_the_same_run_and_matches_an_uninterrupted_one(store, tmp_path):
    base = {"experiment": "exp1_dcgan_fruits", "debug": "fast", **store}
    full = compose("train", {**base, "trainer.max_epochs": 3, "task_name": "uninterrupted"})
    train(full)

    first = compose("train", {**base, "trainer.max_epochs": 2, "task_name": "resumed"})
    train(first)
    resumed = compose("train", {**base, "trainer.max_epochs": 3, "task_name": "resumed", "ckpt_path": "last"})
    train(resumed)

    a, b = _weights(full), _weights(first)  # the resumed run went on in the first run's checkpoint folder
    assert all(torch.equal(a[k], b[k]) for k in a)
    client, runs = mlflow_runs(tmp_path, "resumed")
    assert len(runs) == 1  # the resumed run continued the same MLflow run
    # one row per epoch (step = 1-based epoch): a duplicated or a missing epoch after the resume fails
    epochs = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/g_loss_epoch")]
    assert sorted(epochs) == [1, 2, 3]


def test_resume_without_a_checkpoint_is_a_clear_error(store):
    from core.errors import UserError

    cfg = compose(
        "train",
        {"experiment": "exp1_dcgan_fruits", "debug": "fast", "ckpt_path": "last", "task_name": "never_ran", **store},
    )
    with pytest.raises(UserError, match="nothing to resume"):
        train(cfg)


class PoisonWeightsAtEpoch(pl.Callback):
    """Test helper: makes the generator's weights NaN when the given epoch starts (simulated divergence)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.generator.project[0].weight.fill_(float("nan"))


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(store):
    from dcgan.module import NonFiniteLoss

    cfg = compose(
        "train",
        {
            "experiment": "exp1_dcgan_fruits",
            "debug": "fast",
            "trainer.max_epochs": 3,
            "+callbacks.poison._target_": "tests.test_dcgan_training.PoisonWeightsAtEpoch",
            "+callbacks.poison.epoch": 1,
            **store,
        },
    )
    with pytest.raises(NonFiniteLoss, match="non-finite loss at epoch 1"):
        train(cfg)
    last = next(Path(cfg.paths.output_dir).rglob("last.ckpt"))
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 0  # the checkpoint of the last good epoch, not of the diverged state
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def _fruits_from(training: Path, store: dict):
    """exp1 at debug size on a Fruits-360-layout folder (`data=fruits360_real` pointed at it)."""
    return compose(
        "train",
        {
            "experiment": "exp1_dcgan_fruits",
            "debug": "fast",
            "data": "fruits360_real",
            "data.root": str(training),
            **store,
        },
    )


def _class_folder(root: Path, images: int) -> Path:
    """A Fruits-360-style Training/<class>/ folder of `images` 100x100 JPEGs (a coloured disc on white)."""
    from PIL import Image, ImageDraw

    folder = root / "Training" / "Plum 1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(10)
    for k in range(images):
        image = Image.new("RGB", (100, 100), "white")
        r, (cx, cy) = int(rng.integers(25, 40)), (int(v) for v in rng.integers(40, 60, 2))
        ImageDraw.Draw(image).ellipse(
            (cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.integers(60, 200, 3))
        )
        image.save(folder / f"{k}_100.jpg", quality=95)
    return root / "Training"


def test_a_class_folder_smaller_than_the_quality_sample_finishes_with_adapted_kid_and_flagged_fid(store, tmp_path):
    training = _class_folder(tmp_path / "fruits", 20)  # fewer than debug=fast's 32 quality samples
    cfg = _fruits_from(training, store)
    with pytest.warns(UserWarning, match="FID from 20 samples, not more than its 64 feature dimensions"):
        kid = train(cfg)
    client, runs = mlflow_runs(tmp_path, "exp1_dcgan_fruits")
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["quality/kid"] == kid == pytest.approx(0.8817136883735657, rel=1e-3)  # seeds fixed
    assert run.data.metrics["quality/fid"] == pytest.approx(15.4390230178833, rel=1e-3)  # logged, though flagged
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("quality.")}
    assert tags == {
        "quality.real_samples": "20",
        "quality.generated_samples": "32",
        "quality.kid_subset_size": "20",
        "quality.prdc_nearest_k": "5",
        "quality.fid_trustworthy": "false",
    }
    assert next(Path(cfg.paths.output_dir).rglob("last.ckpt")).is_file()


def test_a_failing_quality_metric_is_a_warning_and_the_run_keeps_its_checkpoint(store, tmp_path, monkeypatch):
    from dcgan.quality import SampleQuality

    def broken(self, fake):
        raise RuntimeError("linalg failure")

    monkeypatch.setattr(SampleQuality, "compute", broken)
    cfg = compose("train", {"experiment": "exp1_dcgan_fruits", "debug": "fast", "optimized_metric": "null", **store})
    with pytest.warns(UserWarning, match="FID/KID failed at epoch 1 .*linalg failure"):
        train(cfg)
    run = mlflow_runs(tmp_path, "exp1_dcgan_fruits")[1][0]
    assert run.info.status == "FINISHED" and "quality/fid" not in run.data.metrics
    assert run.data.tags["quality.error"] == "epoch 1: RuntimeError: linalg failure"
    assert next(Path(cfg.paths.output_dir).rglob("last.ckpt")).is_file()


def test_quality_metric_needs_two_real_images_and_says_so_before_training(store, tmp_path):
    from core.errors import UserError

    training = _class_folder(tmp_path / "fruits", 1)
    cfg = _fruits_from(training, store)
    with pytest.raises(UserError, match="need at least 2 real and 2 generated images; the data has 1 real image"):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))
