"""DCGAN experiment 1 as `make exp1-dcgan` runs it, against a plain PyTorch loop doing the same training, in one run:

    python -m benchmarks.dcgan_epoch [--epochs 8] [hydra overrides for our entry, e.g. data=fruits360_real trainer=cpu_real]
    make bench-dcgan ARGS="--epochs 12"

Ours: `python -m experiments.train experiment=exp1_dcgan_fruits trainer.max_epochs=E <overrides>` in a child process,
the make target's path with everything on (FID/KID every epoch, the sample grid, MLflow metrics and system metrics,
checkpoints, loss curves, the logged model), its log folder and MLflow store in a temporary folder. The peer, in this
process: the same nets (`model` of our composed config, built by the same class), data (the datamodule's decoded
uint8 images), batch, optimiser settings and targets, in a plain loop (one D and one G step per batch, as
`DCGAN.training_step`) that writes the same fixed-noise grid (`DCGAN.sample_grid`) as a PNG every
`sample_every_n_epochs`, a checkpoint (both nets and optimisers) every epoch, and computes the same quality metric
(`dcgan.quality.SampleQuality` on the same fixed noise) at the same cadence (`dcgan.quality.QualityCadence`,
`model.quality.every_n_epochs`): a researcher who tracks quality computes it too, so the ratio measures the
framework, not the metric. No MLflow.

The plain loop runs before and after ours, and its epochs of both runs are its reference: this machine's speed
drifts from minute to minute, and bracketing ours keeps the drift out of the ratio.

Printed: s/epoch of each (benchmarks/common.py: epochs 2 … E−1; start-up and end excluded), how much of each epoch
was training steps (the seconds inside the batches: `EpochTimer`'s batch hooks for ours, the loop body after
fetching for the plain loop) and how much the rest (ours: FID/KID, MLflow, checkpoints, the grid; the plain loop:
its FID/KID, grid and checkpoint), the plain loop's quality seconds and passes, the steps' own speed ratio, every timing as one JSON line, and last `ratio …` = our
speed / the plain loop's (goal ≥ 0.95).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

import core  # noqa: F401  (offline switches, PROJECT_ROOT)
from benchmarks.common import compose, merge_overrides, per_epoch, print_ratio, steady_epoch_seconds, train_entry
from dcgan.data import to_unit_range

TARGET = ("experiment=exp1_dcgan_fruits",)


def plain_loop(cfg, out: Path) -> dict:
    """Train `cfg`'s DCGAN for `cfg.trainer.max_epochs` in a plain loop; return {"epoch_s", "steps_s" (the seconds
    inside its training steps, fetching excluded, as `EpochTimer` times ours), "quality_s" (its quality passes'
    seconds), "quality_passes", "images"}."""
    torch.manual_seed(int(cfg.seed))
    data = instantiate(cfg.data, _convert_="partial")
    data.prepare_data()
    data.setup("fit")
    model = instantiate(cfg.model, _convert_="partial")  # its nets, fixed grid noise and quality metric
    hp = model.hparams
    metric, cadence = model._quality["metric"], model._quality["cadence"]
    if metric is not None:
        metric.set_real(data.real_images(metric.num_samples))
    g, d = model.generator, model.discriminator
    opt_g = torch.optim.Adam(g.parameters(), lr=hp.lr, betas=tuple(hp.betas))
    opt_d = torch.optim.Adam(d.parameters(), lr=hp.lr, betas=tuple(hp.betas))
    loader = DataLoader(TensorDataset(data.images), batch_size=int(cfg.data.batch_size), shuffle=True, drop_last=True)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    starts, steps, quality_s = [], [], 0.0
    epochs = int(cfg.trainer.max_epochs)
    for epoch in range(epochs):
        starts.append(time.time())
        epoch_start = time.perf_counter()
        steps.append(0.0)
        for (batch,) in loader:
            step_start = time.perf_counter()
            real = to_unit_range(batch)
            fake = g(torch.randn(real.shape[0], g.latent_dim))
            logits_real, logits_fake = d(real), d(fake.detach())
            d_loss = F.binary_cross_entropy_with_logits(
                logits_real, torch.full_like(logits_real, hp.real_label_mean)
            ) + F.binary_cross_entropy_with_logits(logits_fake, torch.full_like(logits_fake, hp.fake_label_mean))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            logits_gen = d(fake)
            g_loss = F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            steps[-1] += time.perf_counter() - step_start
        if metric is not None:
            cadence.add_training(time.perf_counter() - epoch_start)
            if cadence.due(epoch, last=epoch + 1 == epochs):
                quality_start = time.perf_counter()
                metric.compute(model._quality_samples(metric.num_samples))
                cadence.add_pass(time.perf_counter() - quality_start)
                quality_s += time.perf_counter() - quality_start
        if (epoch + 1) % hp.sample_every_n_epochs == 0:
            cv2.imwrite(str(out / "samples" / f"epoch_{epoch + 1:04d}.png"), model.sample_grid()[..., ::-1])
        state = {"epoch": epoch, "generator": g.state_dict(), "discriminator": d.state_dict()}
        torch.save({**state, "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict()}, out / "last.pt")
    # timed as ours: epochs 2 … E−1
    passes = cadence.passes if cadence is not None else 0
    return {
        "epoch_s": steady_epoch_seconds(starts),
        "steps_s": steps[1:-1],
        "quality_s": quality_s,
        "quality_passes": passes,
        "images": len(data.images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each run (>= 3; E-2 are timed)")
    parser.add_argument(
        "--work-dir", type=Path, help="logs, MLflow store and the plain loop's files (default: temporary)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for our entry (the plain loop follows them)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        overrides = merge_overrides(
            [
                *TARGET,
                f"trainer.max_epochs={args.epochs}",  # as given: not lowered by the profile's epoch cap
                f"paths.log_dir={work / 'logs'}",
                f"paths.mlflow_dir={work}",
            ],
            args.overrides,
        )
        cfg = compose("train", overrides)
        # plain, ours, plain again: the reference brackets ours, so a drift of this machine's speed during the run
        # (epochs of the same loop vary by 30 % from one minute to the next here) biases the ratio less
        before = plain_loop(cfg, work / "plain")
        ours = train_entry(overrides, work)
        after = plain_loop(cfg, work / "plain")
        plain = {key: before[key] + after[key] for key in ("epoch_s", "steps_s")} | {
            "images": before["images"],
            "quality_s": before["quality_s"],
            "quality_passes": before["quality_passes"],
        }

    width = cfg.model.generator.width_multiplier
    print(
        f"\nDCGAN exp1 ({plain['images']} images, batch {cfg.data.batch_size}, width {width}), "
        f"epochs 2..{args.epochs - 1} timed"
    )
    print(f"  ours (make exp1-dcgan: FID/KID, grids, MLflow, checkpoints): {per_epoch(ours['epoch_s'])}")
    print(f"  plain PyTorch loop (FID/KID, grids, checkpoints): {per_epoch(plain['epoch_s'])}")
    print(
        f"  quality passes (model.quality.every_n_epochs={(cfg.model.quality or {}).get('every_n_epochs')}): "
        f"{plain['quality_passes']} of {args.epochs} epochs, {plain['quality_s']:.2f} s in all (plain loop)"
    )
    # where a gap comes from: the training steps themselves, or what each side does around them
    for name, run in (("ours", ours), ("plain", plain)):
        steps = statistics.median(run["steps_s"])
        rest = statistics.median(e - s for e, s in zip(run["epoch_s"], run["steps_s"]))  # epoch by epoch: less noisy
        print(f"  {name}: training steps {steps:.2f} s/epoch, the rest of the epoch {rest:.3f} s")
    step_ratio = statistics.median(plain["steps_s"]) / statistics.median(ours["steps_s"])
    print(f"  training steps alone, speed ours / plain: {step_ratio:.3f}x")
    print(json.dumps({"ours": ours, "plain": plain}, default=float))
    print_ratio(
        "DCGAN exp1 speed, ours / plain PyTorch per epoch",
        statistics.median(plain["epoch_s"]) / statistics.median(ours["epoch_s"]),
        0.95,
    )


if __name__ == "__main__":
    main()
