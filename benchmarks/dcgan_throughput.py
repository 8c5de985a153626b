"""Images/s of the Lightning DCGAN training step vs a plain PyTorch loop with the same nets, batch and data.

    python -m benchmarks.dcgan_throughput [--batch 64] [--steps 30] [--width 0.25] [--layers 5] [--device cpu]

Both paths train from the same in-memory uint8 tensor (the datamodule's cache), take one D and one G step per
batch, and are timed over the same number of steps after the same warm-up, in one process.
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import core  # noqa: F401
from dcgan.data import GANImageDataModule, to_unit_range
from dcgan.module import DCGAN


def nets_config(args) -> dict:
    return {
        "generator": {"num_layers": args.layers, "width_multiplier": args.width},
        "discriminator": {"width_multiplier": args.width},
        "lr": 2e-4,
        "quality": None,
        "sample_every_n_epochs": 10**9,
    }


class StepTimer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.steps = warmup, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.steps == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()
        self.steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.seconds = time.perf_counter() - self.start

    @staticmethod
    def _sync(module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize()


def lightning_images_per_second(images: torch.Tensor, args) -> float:
    torch.manual_seed(0)
    model = DCGAN(**nets_config(args))
    datamodule = GANImageDataModule(root=".", batch_size=args.batch)
    datamodule.images = images  # the decoded cache, as after setup()
    timer = StepTimer(args.warmup)
    trainer = pl.Trainer(
        accelerator=args.device,
        devices=1,
        max_steps=(args.warmup + args.steps) * 2,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        precision=args.precision,
    )
    trainer.fit(model, datamodule=datamodule)
    return args.steps * args.batch / timer.seconds


def plain_images_per_second(images: torch.Tensor, args) -> float:
    torch.manual_seed(0)
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    model = DCGAN(**nets_config(args)).to(device)
    g, d = model.generator, model.discriminator
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.9, 0.999))
    loader = DataLoader(TensorDataset(images), batch_size=args.batch, shuffle=True, drop_last=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    step, start = 0, None
    while step < args.warmup + args.steps:
        for (batch,) in loader:
            if step == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if step == args.warmup + args.steps:
                break
            real = to_unit_range(batch.to(device, non_blocking=True))
            with autocast:
                fake = g(torch.randn(real.shape[0], g.latent_dim, device=device))
                logits_real, logits_fake = d(real), d(fake.detach())
                d_loss = F.binary_cross_entropy_with_logits(
                    logits_real, torch.ones_like(logits_real)
                ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            with autocast:
                logits_gen = d(fake)
                g_loss = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            step += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--width", type=float, default=0.25, help="fraction of the paper's channel widths")
    parser.add_argument("--layers", type=int, default=5, choices=[5, 6])
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args()

    images = torch.randint(0, 256, (args.images, 3, 64, 64), dtype=torch.uint8)
    # alternate the order so neither path always runs on a warmer machine
    plain_a = plain_images_per_second(images, args)
    lightning = lightning_images_per_second(images, args)
    plain_b = plain_images_per_second(images, args)
    plain = (plain_a + plain_b) / 2
    print(
        f"device={args.device} precision={args.precision} batch={args.batch} width={args.width} layers={args.layers} steps={args.steps}"
    )
    print(f"plain PyTorch loop : {plain:8.1f} images/s  (runs: {plain_a:.1f}, {plain_b:.1f})")
    print(f"Lightning DCGAN    : {lightning:8.1f} images/s")
    print(f"ratio Lightning/plain: {lightning / plain:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
