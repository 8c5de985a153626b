"""Branches that the short test runs never reached (issue 19): exp3's tricks inside `training_step`, YOLO's
warm-up, nominal-batch accumulation and close-mosaic switch over a 3-epoch run, and the `ddp` profile with
sync-BN, bf16 and channels_last on."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from tests.conftest import compose


# -- (a) exp3: the tricks reach the losses -------------------------------------------------------------------
def _one_dcgan_step(experiment: str, store: dict, monkeypatch, batch: int = 512) -> dict:
    """One D and one G update of the experiment's model on a fixed real batch; returns what D saw and the
    targets every BCE got, in call order: D on real, D on fake, G's loss on D(G(z))."""
    cfg = compose("train", {"experiment": experiment, "debug": "fast", **store})
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="partial", quality=None)
    real = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    seen: dict = {"d_inputs": [], "g_outputs": [], "targets": []}
    model.discriminator.register_forward_hook(lambda m, args, out: seen["d_inputs"].append(args[0].detach()))
    model.generator.register_forward_hook(lambda m, args, out: seen["g_outputs"].append(out.detach()))
    bce = F.binary_cross_entropy_with_logits

    def spy(logits, targets, *args, **kwargs):
        seen["targets"].append(targets.detach().clone())
        return bce(logits, targets, *args, **kwargs)

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", spy)
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, torch.utils.data.DataLoader(real, batch_size=batch))
    seen["real"] = real
    return seen


def test_exp3_training_step_applies_instance_noise_and_noisy_labels(store, monkeypatch):
    """conf/experiment/exp3_dcgan_hardhat_tricks.yaml: N(0, 0.1) instance noise on the real images only, real
    labels 0.7 + 0.5·N(0, 1), fake labels 0 + 0.3·N(0, 1) per sample; G's targets stay 1 (non-saturating loss)."""
    seen = _one_dcgan_step("exp3_dcgan_hardhat_tricks", store, monkeypatch)
    d_real, d_fake = seen["d_inputs"][:2]
    noise = d_real - seen["real"]
    # 512·3·64·64 = 6.3M draws: the sample mean and std are within 0.0002 of N(0, 0.1)'s
    assert noise.mean().item() == pytest.approx(0.0, abs=2e-4) and noise.std().item() == pytest.approx(0.1, rel=2e-3)
    assert torch.equal(d_fake, seen["g_outputs"][0])  # instance_noise_on: real — the fakes go in clean
    real_t, fake_t, g_t = seen["targets"]
    # 512 labels: the mean's standard error is 0.5/√512 = 0.022 and 0.3/√512 = 0.013; the std's ~3%
    assert real_t.mean().item() == pytest.approx(0.7, abs=0.07) and real_t.std().item() == pytest.approx(0.5, rel=0.1)
    assert fake_t.mean().item() == pytest.approx(0.0, abs=0.04) and fake_t.std().item() == pytest.approx(0.3, rel=0.1)
    assert torch.equal(g_t, torch.ones(512))


def test_exp1_training_step_uses_clean_inputs_and_hard_labels(store, monkeypatch):
    """The contrast: without the tricks D sees the real batch unchanged and the targets are exactly 1 and 0."""
    seen = _one_dcgan_step("exp1_dcgan_fruits", store, monkeypatch)
    assert torch.equal(seen["d_inputs"][0], seen["real"]) and torch.equal(seen["d_inputs"][1], seen["g_outputs"][0])
    real_t, fake_t, g_t = seen["targets"]
    assert torch.equal(real_t, torch.ones(512)) and torch.equal(fake_t, torch.zeros(512))
    assert torch.equal(g_t, torch.ones(512))


# -- (b) YOLO: warm-up, nominal-batch accumulation and close-mosaic over 3 epochs ------------------------------
def _mosaic_p(transforms) -> float | None:
    """The probability of ultralytics' Mosaic in a (nested) Compose, None when there is none."""
    from ultralytics.data.augment import Mosaic

    for t in getattr(transforms, "transforms", []):
        if isinstance(t, Mosaic):
            return t.p
        if (p := _mosaic_p(t)) is not None:
            return p
    return None


def _tiny_yolo(store: dict, **overrides) -> dict:
    """The yolo_facemask entry's overrides for a run of seconds: debug=fast, 64 px, 40 built-in scenes (32 to
    train on, no test split), from scratch; `overrides` (dotted keys) on top."""
    return {
        "experiment": "yolo_facemask",
        "debug": "fast",
        "profile.detector_imgsz": 64,
        "data.generate.images": 40,  # 32 training images
        "data.test_fraction": 0,  # the batch counts below are of 32 training images; test_yolo tests the test split
        "model.pretrained": "null",
        **overrides,
        **store,
    }


@pytest.mark.slow  # 3 epochs of a YOLO run on CPU: about a minute alone, several on a shared machine
def test_yolo_three_epochs_warm_up_accumulate_and_close_mosaic(store, monkeypatch):
    """SGD, nbs 16 at batch 8 (accumulate 2), 4 batches × 3 epochs, warm-up min(3, epochs − 1) = 2 epochs = 8
    iterations, close_mosaic 1. Reference: ultralytics/engine/trainer.py `_do_train` (warm-up by np.interp over
    the first nw iterations, optimizer step when ni − last_opt_step ≥ accumulate) and `_close_dataloader_mosaic`."""
    from experiments.train import train
    from facemask.detector import YoloDetector

    steps, groups, mosaic = [], [], []
    step, epoch_start = YoloDetector.training_step, YoloDetector.on_train_epoch_start

    def training_step(self, batch, batch_idx):
        before = self._last_opt_step
        step(self, batch, batch_idx)
        ni = batch_idx + self.trainer.num_training_batches * self.current_epoch
        if self._last_opt_step != before:
            steps.append(ni)
        groups.append({g["param_group"]: (g["lr"], g["momentum"]) for g in self.optimizers().optimizer.param_groups})

    def on_train_epoch_start(self):
        epoch_start(self)
        mosaic.append((self.trainer.datamodule.hyp.mosaic, _mosaic_p(self.trainer.datamodule.train_set.transforms)))

    monkeypatch.setattr(YoloDetector, "training_step", training_step)
    monkeypatch.setattr(YoloDetector, "on_train_epoch_start", on_train_epoch_start)
    overrides = {
        "data.batch_size": 8,  # 32 training images: 4 batches
        "data.num_workers": 0,
        "model.optimizer": "SGD",
        "model.nbs": 16,
        "model.close_mosaic": 1,
        "trainer.max_epochs": 3,
        "trainer.limit_train_batches": 4,
    }
    train(compose("train", _tiny_yolo(store, **overrides)))

    # accumulate = round(interp(ni, [0, 8], [1, nbs / batch = 2])): 1 for ni 0–3, 2 from ni 4 (round half to even)
    assert steps == [0, 1, 2, 3, 5, 7, 9, 11]
    lr0, lrf, nw = 0.01, 0.01, 8

    def lf(epoch: int) -> float:  # linear decay to lrf over 3 epochs
        return (1 - epoch / 3) * (1 - lrf) + lrf

    for ni, seen in enumerate(groups):
        epoch = ni // 4
        if ni <= nw:
            weight_lr = np.interp(ni, [0, nw], [0.0, lr0 * lf(epoch)])
            bias_lr = np.interp(ni, [0, nw], [0.1, lr0 * lf(epoch)])  # warmup_bias_lr 0.1 for SGD
            momentum = np.interp(ni, [0, nw], [0.8, 0.937])
        else:
            weight_lr = bias_lr = lr0 * lf(epoch)
            momentum = 0.937
        assert seen["weight"] == pytest.approx((weight_lr, momentum), rel=1e-9), ni
        assert seen["bn"] == pytest.approx((weight_lr, momentum), rel=1e-9), ni
        assert seen["bias"] == pytest.approx((bias_lr, momentum), rel=1e-9), ni
    assert len(groups) == 12
    assert mosaic == [(1.0, 1.0), (1.0, 1.0), (0.0, 0.0)]  # off for the last close_mosaic = 1 epoch


# -- (c) the ddp profile with its GPU settings on ----------------------------------------------------------------
def test_ddp_profile_builds_a_trainer_with_sync_bn_bf16_and_a_channels_last_model(store, monkeypatch):
    """trainer=ddp as composed (sync_batchnorm, bf16-mixed from gpu, channels_last), only moved to 2 CPU devices
    because this machine has no GPU; the entry's Trainer and model are caught at `fit` (SyncBatchNorm runs on GPUs
    only, so the processes are not started here; tests/test_scale_out.py runs DDP itself)."""
    from pytorch_lightning.plugins.precision import MixedPrecision
    from pytorch_lightning.strategies import DDPStrategy

    from experiments.train import train

    caught = {}

    def fit(self, model, **kwargs):
        caught.update(trainer=self, model=model)

    monkeypatch.setattr(pl.Trainer, "fit", fit)
    overrides = {
        "experiment": "exp3_dcgan_hardhat_tricks",
        "debug": "fast",
        "trainer": "ddp",
        "trainer.accelerator": "cpu",
        "trainer.devices": 2,
        "optimized_metric": "null",
        **store,
    }
    cfg = compose("train", overrides)
    assert (cfg.trainer.sync_batchnorm, cfg.trainer.precision, cfg.channels_last) == (True, "bf16-mixed", True)
    assert train(cfg) is None
    trainer, model = caught["trainer"], caught["model"]
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2
    assert trainer.strategy._ddp_kwargs == {"find_unused_parameters": True}
    assert isinstance(trainer.precision_plugin, MixedPrecision) and trainer.precision_plugin.precision == "bf16-mixed"
    # Lightning converts the BatchNorm layers when the strategy sets up the model: all of them become SyncBatchNorm
    batch_norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    synced = trainer.strategy._layer_sync.apply(model)
    assert batch_norms == 10 and sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()) == 10
    convs = [p for name, p in model.named_parameters() if p.dim() == 4]
    assert len(convs) == 10 and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


# -- (d) YOLO under bf16 autocast: trained in bf16, measured in fp32 ----------------------------------------------
def test_yolo_trains_under_bf16_autocast_and_validates_in_fp32(store, monkeypatch):
    """trainer.precision=bf16-mixed (cpu_real's choice on a CPU with AMX, and the gpu profile's): the training
    losses are computed under autocast, validation's forward, loss and NMS in fp32, so mAP does not depend on the
    training precision (bf16 keeps 8 significant bits of a box coordinate)."""
    from ultralytics.nn.tasks import DetectionModel

    from experiments.train import train
    from facemask.detector import DetectionMetrics

    calls, seen_preds = [], []
    loss, update = DetectionModel.loss, DetectionMetrics.update

    def spy_loss(self, batch, preds=None):
        calls.append((self.training, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return loss(self, batch, preds)

    def spy_update(self, preds, batch):
        seen_preds.append(preds[0].dtype)
        return update(self, preds, batch)

    monkeypatch.setattr(DetectionModel, "loss", spy_loss)
    monkeypatch.setattr(DetectionMetrics, "update", spy_update)
    train(compose("train", _tiny_yolo(store, **{"trainer.precision": "bf16-mixed"})))
    training = {c for c in calls if c[0]}
    validation = {c[1] for c in calls if not c[0]}
    assert training == {(True, True, torch.bfloat16)}
    assert validation == {False} and set(seen_preds) == {torch.float32}
