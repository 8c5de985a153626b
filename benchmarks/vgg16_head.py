"""Seconds per head-training epoch with cached backbone features against a full frozen-backbone forward
pass every epoch, on the same data in one run, for VGG16 and for dlib's ResNet face descriptor.

    python benchmarks/vgg16_head.py [--image-size 224] [--per-identity 30] [--epochs 3] [--root FOLDER]

Data: the built-in synthetic identities (generated into a temporary folder), or `--root` (an identity
folder of face crops). An epoch here is one pass of head training over every training image (forward,
cross-entropy, backward, optimiser step), timed without Lightning's own per-epoch work, as wall-clock
and as this process's CPU time (all threads; robust to other load on the machine); the fastest of
`--epochs` epochs counts. The cache build (once) is reported apart from the per-epoch times.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import core  # noqa: F401  (offline switches)
from faces.classifier import FaceClassifier
from faces.data import FaceIdentityDataModule
from synthetic import make_identities


def head_epoch(model: FaceClassifier, loader, optimizer, logits) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds of one epoch, where `logits(x)` is the model's entry for what the
    loader serves (`model` for images, `model.head_logits` for features); CPU time stays meaningful on a
    shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.train()
    for x, y, _ in loader:
        loss = F.cross_entropy(logits(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(backbone: str, root: Path, image_size: int, epochs: int, cache_dir: Path) -> None:
    def datamodule(serves: str) -> FaceIdentityDataModule:
        dm = FaceIdentityDataModule(
            str(root),
            image_size=image_size,
            views=1,
            min_images=5,
            batch_size=32,
            augment={"hflip": 0.5, "rotate": 10},
            cache_dir=str(cache_dir),
            seed=0,
            serves=serves,
            features={"backbone": backbone},
        )
        dm.setup()
        return dm

    uncached = datamodule("images")
    model = FaceClassifier(backbone=backbone, image_size=image_size, class_names=uncached.class_names)
    optimizer = model.configure_optimizers()
    loader = uncached.train_dataloader()  # uint8 crops: the backbone runs in every step
    head_epoch(model, loader, optimizer, model)  # warm-up (allocations, thread pools)
    full = [head_epoch(model, loader, optimizer, model) for _ in range(epochs)]

    cached = datamodule("features")
    _ = (
        cached.extractor
    )  # its own frozen backbone (same spec as the model's), built before the clock as the model's was
    start = time.perf_counter()
    loader = cached.train_dataloader()  # extracts and caches the features of every file once
    build = time.perf_counter() - start
    head_epoch(model, loader, optimizer, model.head_logits)
    head = [head_epoch(model, loader, optimizer, model.head_logits) for _ in range(epochs)]

    (full_wall, full_cpu), (head_wall, head_cpu) = min(full), min(head)
    print(
        f"{backbone:12s} {len(cached.train_files):4d} train images at {image_size} px | cache build (once): {build:7.2f} s"
    )
    print(
        f"{'':12s} wall s/epoch: full forward {full_wall:8.3f}, cached features {head_wall:8.4f} -> {full_wall / head_wall:7.1f}x faster"
    )
    print(
        f"{'':12s}  CPU s/epoch: full forward {full_cpu:8.3f}, cached features {head_cpu:8.4f} -> {full_cpu / head_cpu:7.1f}x faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="an identity folder of face crops (default: synthetic identities)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--per-identity", type=int, default=30, help="synthetic images per identity (4 identities)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant (the fastest is reported)")
    parser.add_argument("--backbones", nargs="+", default=["vgg16", "dlib_resnet"])
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or make_identities(Path(tmp) / "faces", seed=0, identities=4, per_identity=args.per_identity)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; data: {root}")
        for backbone in args.backbones:
            compare(backbone, root, args.image_size, args.epochs, Path(tmp) / f"cache-{backbone}")


if __name__ == "__main__":
    main()
