"""Detection data for YOLO: a VOC folder converted once to the YOLO layout, then ultralytics' own dataset,
augmentation (mosaic, HSV, flips, letterbox) and collate function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from core.errors import UserError
from core.mlflow_store import FolderDataset, dataset_name, folder_files
from facemask.augment import FaceZoom
from facemask.voc_to_yolo import ConversionReport, convert_voc

STRIDE = 32  # the largest stride of every YOLO detection model: image sizes are padded to a multiple of it


class YoloDataModule(pl.LightningDataModule):
    """`voc_root` (images/ + annotations/) → `yolo_dir` (converted in `prepare_data`, reused when unchanged).

    `augment` overrides ultralytics' augmentation defaults (e.g. `{mosaic: 0.5, fliplr: 0.5}`); `zoom` is
    `facemask.augment.FaceZoom`'s arguments (`{p: 0.7, max_fraction: 0.8, max_zoom: 8}`; None or p 0: off), the
    zoom into one face that teaches large faces from photos of small ones; `max_images`
    caps the training images (ultralytics' `fraction`); batches are ultralytics' dicts with uint8 `img`.
    `keep_difficult`: VOC's difficult objects become labels (default: left out, and ignored by validation).
    `test_fraction`: the share of images held out as the test split (`facemask.voc_to_yolo`: fixed by file name,
    whatever the seed), served by `test_dataloader` and evaluated once after training; 0: no test split.
    """

    def __init__(
        self,
        voc_root: str,
        yolo_dir: str,
        classes: Sequence[str],
        imgsz: int = 640,
        batch_size: int = 16,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        unknown_classes: str = "error",
        keep_difficult: bool = False,
        max_images: int | None = None,
        augment: dict | None = None,
        zoom: dict | None = None,
        generate: Callable[[], object] | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.voc_root = Path(voc_root)
        self.yolo_dir = Path(yolo_dir)
        self.classes = list(classes)
        self.imgsz = imgsz
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.unknown_classes = unknown_classes
        self.keep_difficult = keep_difficult
        self.max_images = max_images
        self.augment = dict(augment or {})
        self.zoom = FaceZoom(**zoom) if zoom else None
        self.generate = generate
        self.num_workers = num_workers
        self.seed = seed
        self.data: dict | None = None
        self.report: ConversionReport | None = None

    def prepare_data(self) -> None:
        if self.generate is not None:
            self.generate()
        if not self.voc_root.is_dir():
            raise UserError(
                f"face-mask data folder not found: {self.voc_root} — point data.voc_root at a folder with "
                "images/ and annotations/ (docs/facemask.md)"
            )
        self.report = convert_voc(
            self.voc_root,
            self.yolo_dir,
            self.classes,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            unknown_classes=self.unknown_classes,
            keep_difficult=self.keep_difficult,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        from ultralytics.cfg import get_cfg
        from ultralytics.data import build_yolo_dataset
        from ultralytics.data.utils import check_det_dataset

        self.data = check_det_dataset(str(self.yolo_dir / "data.yaml"), autodownload=False)
        self.hyp = get_cfg(overrides={"imgsz": self.imgsz, "seed": self.seed, **self.augment})
        train_images = len(list((self.yolo_dir / "images" / "train").glob("*.png")))
        fraction = min(1.0, self.max_images / train_images) if self.max_images and train_images else 1.0
        self.train_set = (
            build_yolo_dataset(
                self.hyp, self.data["train"], self.batch_size, self.data, mode="train", stride=STRIDE, fraction=fraction
            )
            if train_images
            else None
        )
        if self.train_set is not None and self.zoom is not None:
            self.zoom.insert_into(self.train_set)

        def evaluation_set(split: str):  # val and test: ultralytics' val mode, rectangular batches, every image
            return build_yolo_dataset(
                self.hyp,
                self.data[split],
                self.batch_size * 2,
                self.data,
                mode="val",
                rect=True,
                stride=STRIDE,
                fraction=1.0,
            )

        self.val_set = evaluation_set("val")
        self.test_set = evaluation_set("test") if self.data.get("test") else None

    @property
    def has_test_split(self) -> bool:
        """Whether the data holds a test split (`test_fraction` > 0), which the training entry evaluates once."""
        return self.test_fraction > 0

    def dataset_inputs(self) -> list[FolderDataset]:
        """The converted training, validation and test images as used (after `setup`; training: after `max_images`),
        with the VOC conversion report and the source files it skipped, for the run's MLflow dataset inputs."""
        report = self.report.to_dict() if self.report else None
        skipped = ()
        if self.report:
            r = self.report
            skipped = tuple(
                f"{why}: {name}"
                for why, names in (
                    ("xml without image", r.xml_without_image),
                    ("image without xml", r.image_without_xml),
                    ("unreadable image", r.unreadable_images),
                    ("unreadable xml", r.unreadable_xml),
                    ("ambiguous", r.ambiguous),
                )
                for name in names
            )
        inputs = []
        splits = [("training", self.train_set), ("validation", self.val_set)]
        if self.test_set is not None:
            splits.append(("test", self.test_set))
        for context, dataset in splits:
            files = folder_files(self.yolo_dir, dataset.im_files if dataset is not None else [])
            inputs.append(
                FolderDataset(
                    name=dataset_name(self.voc_root),
                    source=self.voc_root,
                    files=files,
                    context=context,
                    counts={"images": len(files), "skipped": len(skipped)},
                    report=report,
                    skipped=skipped,
                )
            )
        return inputs

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise UserError(f"{self.yolo_dir} has no training images (val_fraction={self.val_fraction})")
        from ultralytics.data import build_dataloader

        # ultralytics' loader: workers persist across epochs, and reset() re-forks them when the dataset changes
        self._train_loader = build_dataloader(
            self.train_set,
            self.batch_size,
            self.num_workers,
            shuffle=True,
            drop_last=len(self.train_set) % self.batch_size == 1,  # BatchNorm needs 2+
            device=self.trainer.strategy.root_device if self.trainer else "cpu",
        )
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise UserError(f"{self.yolo_dir} has no test split (data.test_fraction={self.test_fraction})")
        return self._evaluation_loader(self.test_set)

    def _evaluation_loader(self, dataset) -> DataLoader:
        from ultralytics.data import build_dataloader

        # rect batches have one letterbox shape per batch, in the order ultralytics sorted them: no shuffle
        return build_dataloader(
            dataset,
            self.batch_size * 2,
            self.num_workers,
            shuffle=False,
            device=self.trainer.strategy.root_device if self.trainer else "cpu",
        )

    def close_mosaic(self) -> None:
        """Switch mosaic off for the last epochs (ultralytics' `close_mosaic`), keeping the zoom, and re-fork the
        loader's workers."""
        self.train_set.close_mosaic(hyp=self.hyp)  # rebuilds the transforms: the zoom goes back in
        if self.zoom is not None:
            self.zoom.insert_into(self.train_set)
        self._train_loader.reset()
