"""A trained face-mask detector evaluated on a VOC folder by its own validation step.

Every image of the folder is converted as for training (`YoloDataModule` with `val_fraction=1.0`: the same clipping
and conversion report) and validated by one Lightning `validate` pass, so the figures are the ones logged as
`val/*` in training: ultralytics' NMS, mAP and box/cls/dfl losses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytorch_lightning as pl

from core.metric_names import VAL, YOLO_LOSSES
from facemask.data import YoloDataModule
from facemask.plots import clear_plots

if TYPE_CHECKING:
    from facemask.detector import YoloDetector


@dataclass(frozen=True)
class FolderEvaluation:
    """One VOC folder's evaluation (`evaluate_folder`).

    `map50`, `map50_95`: ultralytics' mAP at IoU 0.5 and averaged over IoU 0.50:0.95, in [0, 1]; `ap50`: AP at IoU
    0.5 by class name, None for a class with no ground-truth box; `images`: images evaluated; `precision`,
    `recall`: ultralytics' mean precision and recall at the confidence of best mean F1; `losses`: the box, cls and
    dfl losses (`YOLO_LOSSES`) as in `val/*`; `imgsz`: the input size (px); `conversion`: the VOC→YOLO conversion
    report's one-line summary; `plots`: the plot files written ([] when none were asked for)."""

    map50: float
    map50_95: float
    ap50: dict[str, float | None]
    images: int
    precision: float
    recall: float
    losses: dict[str, float]
    imgsz: int
    conversion: str
    plots: list[Path] = field(default_factory=list)

    def result(self) -> dict:
        """{"map50", "map50_95", "ap50", "images"}: the evaluation's headline figures (JSON-ready)."""
        return {"map50": self.map50, "map50_95": self.map50_95, "ap50": self.ap50, "images": self.images}

    def report(self, checkpoint: Path, voc: Path) -> dict:
        """`result()` with precision, recall, losses, the checkpoint, the folder, imgsz, the conversion summary and
        the plot paths (JSON-ready)."""
        return {
            **self.result(),
            "precision": self.precision,
            "recall": self.recall,
            "losses": self.losses,
            "checkpoint": str(checkpoint),
            "voc": str(voc),
            "imgsz": self.imgsz,
            "conversion": self.conversion,
            "plots": [str(path) for path in self.plots],
        }

    def metrics(self, ap50_names: dict[str, str]) -> dict[str, float]:
        """The figures to track: mAPs, precision, recall, losses, images and, for each `ap50_names` entry
        (metric name → class name) whose class has an AP, that AP50."""
        return {
            "map50": self.map50,
            "map50_95": self.map50_95,
            "precision": self.precision,
            "recall": self.recall,
            **self.losses,
            "images": self.images,
            **{key: self.ap50[name] for key, name in ap50_names.items() if self.ap50[name] is not None},
        }


def test_split_view(
    voc: Path, work_dir: str | Path, names: list[str], test_fraction: float, unknown_classes: str
) -> Path:
    """A VOC folder (`images/` and `annotations/` of symbolic links) holding the photos of `voc` that training with
    `data.test_fraction=test_fraction` holds out as its test split: those `facemask.voc_to_yolo.convert_voc` puts in
    `images/test` (fixed by file name, whatever the seed and val_fraction). Written under `work_dir` beside the
    conversion it reads; UserError from the conversion (see `convert_voc`), and for a folder too small to hold out a
    test split."""
    from core.errors import UserError
    from core.outputs import output_name
    from core.voc import pair_voc
    from facemask.voc_to_yolo import convert_voc

    key = hashlib.sha1(str(voc).encode()).hexdigest()[:10]
    converted = Path(work_dir) / f"{voc.name}-{key}-test{test_fraction:g}"
    convert_voc(voc, converted, names, test_fraction=test_fraction, unknown_classes=unknown_classes)
    held_out = {path.stem for path in (converted / "images" / "test").glob("*.png")}
    if not held_out:
        raise UserError(f"voc={voc}: no test split at test_fraction={test_fraction}")
    view = converted.with_name(f"{converted.name}-view")
    for sub in ("images", "annotations"):
        (view / sub).mkdir(parents=True, exist_ok=True)
        for old in (view / sub).iterdir():
            old.unlink()
    for pair in pair_voc(voc / "images", voc / "annotations").pairs:
        if output_name(pair.image.name, "").as_posix() in held_out:
            (view / "images" / pair.image.name).symlink_to(pair.image.resolve())
            (view / "annotations" / pair.xml.name).symlink_to(pair.xml.resolve())
    return view


def voc_datamodule(
    voc: Path, work_dir: str | Path, names: list[str], imgsz: int, batch_size: int, unknown_classes: str
) -> YoloDataModule:
    """Every image of the VOC folder `voc` as validation data for a model of class `names`, letterboxed to `imgsz`
    px in batches of `batch_size`. Converted (`prepare_data`) into `work_dir/<voc name>-<SHA-1 of its path, 10 hex
    digits>`, which a later evaluation of the same folder reuses; `unknown_classes` ("error" or "drop") is the
    converter's choice for a class not in `names` (UserError for any other value)."""
    key = hashlib.sha1(str(voc).encode()).hexdigest()[:10]
    return YoloDataModule(
        str(voc),
        str(Path(work_dir) / f"{voc.name}-{key}"),
        names,
        imgsz=imgsz,
        batch_size=batch_size,
        val_fraction=1.0,
        unknown_classes=unknown_classes,
    )


def evaluate_folder(
    module: YoloDetector,
    voc: Path,
    *,
    work_dir: str | Path,
    imgsz: int,
    batch_size: int,
    unknown_classes: str,
    root_dir: str | Path,
    plots_dir: Path,
    plots: bool = True,
) -> FolderEvaluation:
    """Validate `module` on every image of the VOC folder `voc` (`images/` and `annotations/`) at `imgsz` px.

    The folder is converted by `voc_datamodule` (`work_dir`, `batch_size`, `unknown_classes`: see there);
    `root_dir` is the trainer's default root. The plot files of an earlier evaluation are removed from `plots_dir`
    (`clear_plots`) and, with `plots`, ultralytics' plots written there. UserError from the conversion for a folder
    it cannot read or a class it refuses."""
    data = voc_datamodule(voc, work_dir, module.names, imgsz, batch_size, unknown_classes)
    data.prepare_data()
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(root_dir),
    )
    (logged,) = trainer.validate(module, datamodule=data, verbose=False)
    metrics = module.last_metrics
    # ultralytics' box, cls and dfl losses on the folder: as val/* in training, and unlike an untrained model's
    # mAP never all zero, so they show that an evaluation saw the same images, letterbox and weights
    losses = {name: float(logged[f"{VAL}{name}"]) for name in YOLO_LOSSES}
    clear_plots(plots_dir)  # only the files write_plots writes: no plot of an earlier evaluation is logged
    return FolderEvaluation(
        map50=metrics["map50"],
        map50_95=metrics["map50_95"],
        ap50=metrics["ap50"],
        images=metrics["images"],
        precision=metrics["precision"],
        recall=metrics["recall"],
        losses=losses,
        imgsz=imgsz,
        conversion=data.report.summary(),
        plots=module.write_plots(plots_dir) if plots else [],
    )
