"""DCGAN as one LightningModule with manual optimisation; the paper's tricks are arguments, set in conf/.

Per step: one D update on real and generated images, then one G update (Lightning's GAN pattern, which
DDP and AMP handle; the paper's Keras code updated both from one forward pass). Per epoch: a fixed-noise
sample grid, FID/KID and the diversity measures precision/recall/density/coverage (Naeem et al. 2020) on a fixed
feature network, and the loss-fluctuation statistic the paper argues with.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torchvision.utils import make_grid

from core.errors import UserError
from core.metric_names import (
    GAN_LOSS_KINDS,
    GAN_NETS,
    QUALITY,
    QUALITY_TAG,
    SAMPLES_FOLDER,
    epoch_artifact,
    gan_loss,
    gan_loss_std,
)
from dcgan.nets import Discriminator, Generator, init_normal_002
from dcgan.quality import QualityCadence, SampleQuality
from training import callbacks
from training.mlflow_logging import log_dict, log_figure, log_image, set_tags


class NonFiniteLoss(UserError):
    """Training diverged; the last good checkpoint is kept."""


class DCGAN(pl.LightningModule):
    """The paper's three DCGAN experiments as one module (conf/experiment/exp{1,2,3}_*.yaml differ only in config).

    Batches: uint8 or float images (N, 3, 64, 64) scaled to [-1, 1] by the datamodule. Losses: sigmoid cross-entropy
    on D's logits (the paper's code), with its noisy labels as `real_label_*`/`fake_label_*` and its instance noise
    N(0, σ) on D's inputs. Logs per step `train/d_loss`, `train/g_loss`, `train/d_real`, `train/d_fake`; per epoch
    the epoch-mean and last-batch losses, a fixed-noise grid (`samples/`), FID/KID and precision/recall/density/
    coverage (`quality/`; `dcgan.quality`) and the
    loss-fluctuation statistic (`stability/`); names in `core.metric_names`. Raises `NonFiniteLoss` (a UserError)
    when a loss becomes NaN/inf, keeping the last good checkpoint; ValueError for unknown `instance_noise_on` or
    `weight_init` values.
    """

    @classmethod
    def servable(cls, checkpoint: Path) -> tuple[torch.nn.Module, np.ndarray, Callable] | None:
        """What the training entry logs as this task's MLflow model, rebuilt from `checkpoint`: (the generator in
        eval mode, an input example z float32 (2, latent_dim) drawn from N(0, 1), `dcgan.onnx.export_onnx`). The
        generator maps z (N, latent_dim) to images (N, 3, 64, 64) in [-1, 1]."""
        from core.checkpoints import load_module
        from dcgan.onnx import export_onnx

        generator = load_module(cls, checkpoint, key="the trained checkpoint", quality=None).generator.eval()
        example = np.random.default_rng(0).standard_normal((2, generator.latent_dim)).astype(np.float32)
        return generator, example, export_onnx

    @classmethod
    def pyfunc(cls, checkpoint: Path, work_dir: Path):
        """What the training entry logs as this task's servable MLflow model (`core.registry.PyfuncSpec`): a count
        and a seed in, base64 PNG images out (`dcgan.serving`); its weights written to `work_dir`."""
        from dcgan.serving import pyfunc_spec

        return pyfunc_spec(checkpoint, work_dir)

    def __init__(
        self,
        generator: dict,
        discriminator: dict,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),  # Keras' Adam defaults, as the paper's code; DCGAN's: (0.5, 0.999)
        weight_init: str = "default",  # "normal_0.02": DCGAN's N(0, 0.02)
        instance_noise_std: float = 0.0,  # Gaussian noise added to D's inputs
        instance_noise_on: str = "real",  # "real" (the paper's code) or "both" (its text)
        instance_noise_anneal_epochs: int | None = None,  # linear decay to 0 over this many epochs
        real_label_mean: float = 1.0,  # D's target for real images: mean + std·N(0, 1) per sample
        real_label_std: float = 0.0,
        fake_label_mean: float = 0.0,
        fake_label_std: float = 0.0,
        num_samples: int = 32,  # fixed noise vectors in the per-epoch grid
        sample_every_n_epochs: int = 1,
        fluctuation_window: int = 10,  # epochs over which the loss standard deviation is taken
        quality: dict | None = None,  # SampleQuality arguments and `every_n_epochs` (QualityCadence); None: no metric
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the entry logs the whole resolved config as params
        self.automatic_optimization = False
        if instance_noise_on not in ("real", "both"):
            raise ValueError(f"model.instance_noise_on must be 'real' or 'both', got {instance_noise_on!r}")
        self.generator = Generator(**generator)
        self.discriminator = Discriminator(**discriminator)
        if weight_init == "normal_0.02":
            self.apply(init_normal_002)
        elif weight_init != "default":
            raise ValueError(f"model.weight_init must be 'default' or 'normal_0.02', got {weight_init!r}")
        rng = torch.Generator().manual_seed(seed)
        self.register_buffer("fixed_z", torch.randn(num_samples, self.generator.latent_dim, generator=rng))
        quality = dict(quality or {})
        cadence = QualityCadence(quality.pop("every_n_epochs", "auto")) if quality else None
        # kept out of the state_dict
        self._quality = {"metric": SampleQuality(**quality) if quality else None, "cadence": cadence}
        self._epoch_start = 0.0
        self.history: dict[str, list[float]] = defaultdict(list)
        self._epoch_losses: list[torch.Tensor] = []
        self.epoch_metrics = callbacks.EpochMetrics()  # epoch-end values reach the loggers after the checkpoint

    def configure_callbacks(self) -> list[pl.Callback]:
        return [self.epoch_metrics]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent vectors (N, latent_dim) → generated images (N, 3, 64, 64) in [-1, 1]."""
        return self.generator(z)

    def configure_optimizers(self):
        hp = self.hparams
        return (
            torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=tuple(hp.betas)),
            torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr, betas=tuple(hp.betas)),
        )

    def _noise_std(self) -> float:
        hp = self.hparams
        if hp.instance_noise_anneal_epochs:
            return hp.instance_noise_std * max(0.0, 1 - self.current_epoch / hp.instance_noise_anneal_epochs)
        return hp.instance_noise_std

    def _targets(self, like: torch.Tensor, mean: float, std: float) -> torch.Tensor:
        return mean + std * torch.randn_like(like) if std else torch.full_like(like, mean)

    def training_step(self, real: torch.Tensor, batch_idx: int) -> None:
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], self.generator.latent_dim, device=self.device)
        fake = self.generator(z)
        std = self._noise_std()
        noisy_real = real + std * torch.randn_like(real) if std else real
        noisy_fake = fake + std * torch.randn_like(fake) if std and hp.instance_noise_on == "both" else fake

        self.toggle_optimizer(opt_d)
        logits_real = self.discriminator(noisy_real)
        logits_fake = self.discriminator(noisy_fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            logits_real, self._targets(logits_real, hp.real_label_mean, hp.real_label_std)
        ) + F.binary_cross_entropy_with_logits(
            logits_fake, self._targets(logits_fake, hp.fake_label_mean, hp.fake_label_std)
        )
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        logits_gen = self.discriminator(noisy_fake)
        g_loss = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self._epoch_losses.append(torch.stack([d_loss.detach(), g_loss.detach()]))
        if (
            self.global_step // 2
        ) % self.trainer.log_every_n_steps == 0:  # 2 optimizer steps per batch; logging syncs the device
            self.log_dict(
                {
                    "train/d_loss": d_loss,
                    "train/g_loss": g_loss,
                    "train/d_real": torch.sigmoid(logits_real).mean(),
                    "train/d_fake": torch.sigmoid(logits_fake).mean(),
                },
                on_step=True,
                on_epoch=False,
                prog_bar=True,
            )

    def on_fit_start(self) -> None:
        """Fit the sample-quality metric to the data before the first step: say what it adapted or flags (a
        warning, and `quality.*` tags on the MLflow run), or stop now when the data cannot support it."""
        metric = self._quality["metric"]
        if metric is not None:
            metric.to(self.device)
            settings = metric.set_real(self.trainer.datamodule.real_images(metric.num_samples).to(self.device))
            for note in metric.notes:
                rank_zero_warn(f"model.quality: {note}")
            set_tags(self.trainer, {f"{QUALITY_TAG}{k}": str(v).lower() for k, v in settings.items()})

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        train_seconds = time.perf_counter() - self._epoch_start
        losses = torch.stack(self._epoch_losses).cpu()  # checked once per epoch: no per-step device sync
        self._epoch_losses.clear()
        bad = (~torch.isfinite(losses)).any(1).nonzero()
        if len(bad):
            raise NonFiniteLoss(
                f"non-finite loss at epoch {self.current_epoch}, batch {int(bad[0])} (D {losses[bad[0, 0], 0]:.4g}, "
                f"G {losses[bad[0, 0], 1]:.4g}); the run stopped before this epoch's checkpoint, so the last good one "
                "is kept — lower model.lr or enable the tricks of exp3"
            )
        epoch_mean, last = losses.mean(0), losses[-1]
        for i, net in enumerate(GAN_NETS):
            self.history[f"{net}_loss_epoch"].append(float(epoch_mean[i]))
            self.history[f"{net}_loss_last"].append(float(last[i]))
        metrics = {
            gan_loss(net, kind): value[i]
            for kind, value in zip(GAN_LOSS_KINDS, (epoch_mean, last))
            for i, net in enumerate(GAN_NETS)
        }
        metrics.update(self.loss_fluctuation())
        metrics.update(self._quality_metrics(train_seconds))
        # self.log keeps them for callbacks (checkpoint monitor, a sweep's optimized_metric); the loggers get them
        # once this epoch's checkpoint is written (training.callbacks.EpochMetrics says why self.log cannot
        # do that).
        self.log_dict(metrics, on_epoch=True, logger=False)
        self.epoch_metrics.stage(self.current_epoch, metrics)
        if (self.current_epoch + 1) % self.hparams.sample_every_n_epochs == 0:
            log_image(self.trainer, self.sample_grid(), epoch_artifact(SAMPLES_FOLDER, self.current_epoch + 1))

    def _quality_metrics(self, train_seconds: float) -> dict[str, float]:
        """`quality/*` of this epoch's samples when the cadence (`model.quality.every_n_epochs`,
        `dcgan.quality.QualityCadence`) says it is due, else {}; {} with a warning when the metric fails: a metric is
        a measurement, and an error in it must not end the run before this epoch's checkpoint is written."""
        metric, cadence = self._quality["metric"], self._quality["cadence"]
        if metric is None:
            return {}
        max_epochs = self.trainer.max_epochs
        last = max_epochs is not None and max_epochs > 0 and self.current_epoch + 1 >= max_epochs
        cadence.add_training(train_seconds)
        if not cadence.due(self.current_epoch, last):
            return {}
        start = time.perf_counter()
        try:
            values = metric.compute(self._quality_samples(metric.num_samples))
            cadence.add_pass(time.perf_counter() - start)
            return {f"{QUALITY}{k}": v for k, v in values.items()}
        except Exception as exc:  # noqa: BLE001  (torchmetrics raises ValueError, RuntimeError, linalg errors)
            rank_zero_warn(
                f"model.quality: FID/KID failed at epoch {self.current_epoch + 1} and are not logged for it "
                f"({type(exc).__name__}: {exc}); training goes on"
            )
            set_tags(
                self.trainer,
                {f"{QUALITY_TAG}error": f"epoch {self.current_epoch + 1}: {type(exc).__name__}: {exc}"[:5000]},
            )
            return {}

    def loss_fluctuation(self) -> dict[str, float]:
        """{`stability/<net>_loss_std`: the standard deviation (population, numpy's default) of the epoch-mean D
        and G losses over the last `fluctuation_window` epochs}, in the losses' units (nats)."""
        window = self.hparams.fluctuation_window
        return {gan_loss_std(net): float(np.std(self.history[f"{net}_loss_epoch"][-window:])) for net in GAN_NETS}

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """The fixed-noise samples as one HxWx3 uint8 image, 8 per row."""
        was_training = self.generator.training
        self.generator.eval()
        images = self.generator(self.fixed_z)
        self.generator.train(was_training)
        grid = make_grid(images, nrow=8, padding=2, normalize=True, value_range=(-1, 1))
        return (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    @torch.no_grad()
    def _quality_samples(self, count: int) -> torch.Tensor:
        rng = torch.Generator().manual_seed(self.hparams.seed + 1)  # the same noise every epoch
        z = torch.randn(count, self.generator.latent_dim, generator=rng).to(self.device)
        was_training = self.generator.training
        self.generator.eval()
        fake = torch.cat([self.generator(chunk) for chunk in z.split(128)])
        self.generator.train(was_training)
        return fake

    def on_fit_end(self) -> None:
        if self.history["g_loss_epoch"] and self.trainer.is_global_zero:
            from core.figures import gan_loss_curves

            fig = gan_loss_curves(
                self.history,
                title=f"D and G loss per epoch ({self.trainer.logger.name if self.trainer.logger else 'dcgan'})",
                window=self.hparams.fluctuation_window,
            )
            log_figure(self.trainer, fig, "figures/loss_curves.png")
            log_dict(self.trainer, dict(self.history), "history.json")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["loss_history"] = dict(self.history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = defaultdict(list, {k: list(v) for k, v in checkpoint.get("loss_history", {}).items()})
