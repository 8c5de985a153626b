"""Unlabelled images for the DCGAN experiments: an image folder decoded once into a uint8 tensor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from core.images import decode_folder, find_images
from core.mlflow_store import FolderDataset, dataset_name, folder_files
from training.sampling import EpochShuffle


class GANImageDataModule(pl.LightningDataModule):
    """Reads `root` recursively (Fruits-360's `Training/<Class>/`, or a flat folder of scene images),
    optionally only the `classes` sub-folders, resizes to `image_size` and keeps the set in memory.

    Batches leave the loader as uint8 and become floats in [-1, 1] on the training device.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        image_size: int = 64,
        classes: Sequence[str] | None = None,
        max_images: int | None = None,
        generate: Callable[[], object] | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.batch_size = batch_size
        self.image_size = image_size
        self.classes = list(classes) if classes else None
        self.max_images = max_images
        self.generate = generate
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self.seed = seed
        self.images: torch.Tensor | None = None

    def prepare_data(self) -> None:
        if self.generate is not None:
            self.generate()

    def setup(self, stage: str | None = None) -> None:
        if self.images is not None:
            return
        files = find_images(self.root, self.classes)
        if self.max_images and len(files) > self.max_images:
            # an even spread over the sorted files keeps every class when the set is cut
            pick = np.linspace(0, len(files) - 1, self.max_images).round().astype(int)
            files = [files[i] for i in pick]
        resize = A.Resize(self.image_size, self.image_size, interpolation=cv2.INTER_AREA)
        decoded = decode_folder(
            files,
            lambda rgb: resize(image=rgb)["image"],
            cache_dir=self.cache_dir,
            cache_tag=f"gan|{self.image_size}|area",
        )
        self.skipped = decoded.skipped
        self.files = decoded.files
        self.images = torch.from_numpy(decoded.pixels).permute(0, 3, 1, 2).contiguous()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.images),
            batch_size=self.batch_size,
            sampler=EpochShuffle(len(self.images), self.seed),
            generator=torch.Generator().manual_seed(
                self.seed
            ),  # the loader's own seed draw leaves the global RNG alone
            drop_last=len(self.images) > self.batch_size,  # BatchNorm cannot take a last batch of one
            num_workers=self.num_workers,
        )

    def dataset_inputs(self) -> list[FolderDataset]:
        """The training images as used (after `setup`), for the run's MLflow dataset input."""
        return [
            FolderDataset(
                name=dataset_name(self.root),
                source=self.root,
                files=folder_files(self.root, self.files),
                context="training",
                counts={"images": len(self.files), "skipped": len(self.skipped)},
                skipped=tuple(self.skipped),
            )
        ]

    def real_images(self, count: int) -> torch.Tensor:
        """A fixed subset of the real images in [-1, 1] for the sample-quality metric."""
        pick = torch.linspace(0, len(self.images) - 1, min(count, len(self.images))).round().long()
        return to_unit_range(self.images[pick])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return to_unit_range(batch[0])


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [-1, 1] (the generator's tanh range)."""
    return images.float().div_(127.5).sub_(1.0)
