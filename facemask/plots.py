"""The evaluation plots YOLO users expect, drawn by ultralytics' own plotting code from one validation epoch.

What `yolo val` (and the final validation of `yolo train`) writes with `plots=True`: the precision-recall curve and
the F1, precision and recall against confidence (`ultralytics.utils.metrics.ap_per_class(plot=True)`), the confusion
matrix as counts and normalised per true class (`ConfusionMatrix.plot`), and the first three validation batches
with the ground truth (`val_batch{i}_labels.jpg`) beside the predictions (`val_batch{i}_pred.jpg`,
`ultralytics.utils.plotting.plot_images`). The file names are ultralytics'.

`DetectionMetrics` (yolo_detector.py) keeps a `ValidationSnapshot` of every epoch, which costs a copy of three
batches; the drawing, a few seconds, happens only when `write_plots` is called.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CURVE_FILES = ("BoxPR_curve.png", "BoxF1_curve.png", "BoxP_curve.png", "BoxR_curve.png")
CONFUSION_FILES = ("confusion_matrix.png", "confusion_matrix_normalized.png")
PLOTTED_BATCHES = 3  # ultralytics' validator draws batches 0, 1 and 2
PLOTTED_IMAGES = 16  # plot_images' max_subplots: a 4 × 4 grid per batch


@dataclass
class ValidationSnapshot:
    """One validation epoch, enough to draw its plots later.

    `stats`: ultralytics' concatenated matching statistics (`tp` bool (N, 10) at IoU 0.50:0.95, `conf` (N,),
    `pred_cls` (N,), `target_cls` (M,), `target_img`) of N detections and M ground-truth boxes; `confusion`:
    ultralytics' detection confusion matrix, (classes + 1)², indexed [predicted, true], the last row and column
    "background"; `batches`: the first `PLOTTED_BATCHES` batches, each {`img` uint8 (B, 3, H, W) letterboxed,
    `labels` (`batch_idx`, `cls`, `bboxes` normalised xywh), `preds` (`batch_idx`, `cls`, `conf`, `bboxes` xywh in
    letterboxed pixels), `im_file`}, at most `PLOTTED_IMAGES` images each."""

    names: list[str]
    stats: dict[str, np.ndarray]
    confusion: np.ndarray
    batches: list[dict] = field(default_factory=list)


def plotted_batch(batch: dict, detections: list[dict[str, torch.Tensor]], limit: int = PLOTTED_IMAGES) -> dict:
    """The first `limit` images of a validation batch (`img` float in [0, 1]) and their detections after NMS
    (ultralytics' dicts, `bboxes` xyxy in letterboxed pixels), on the CPU, in `plot_images`' layout."""
    from ultralytics.utils import ops

    k = min(len(batch["im_file"]), limit)
    mine = batch["batch_idx"] < k
    labels = {
        "batch_idx": batch["batch_idx"][mine].cpu(),
        "cls": batch["cls"][mine].view(-1).cpu(),
        "bboxes": batch["bboxes"][mine].cpu(),
    }
    kept = detections[:k]
    preds = {
        "batch_idx": torch.cat([torch.full_like(d["conf"], i) for i, d in enumerate(kept)]).cpu(),
        "cls": torch.cat([d["cls"] for d in kept]).cpu(),
        "conf": torch.cat([d["conf"] for d in kept]).cpu(),
        "bboxes": ops.xyxy2xywh(torch.cat([d["bboxes"] for d in kept])).cpu(),
    }
    # uint8 as the loader gave it (exact: the float image is uint8 / 255): a quarter of the memory
    img = (batch["img"][:k] * 255).round().to(torch.uint8).cpu()
    return {"img": img, "labels": labels, "preds": preds, "im_file": list(batch["im_file"][:k])}


def prediction_grid(batch: dict, names: list[str], conf: float = 0.25) -> np.ndarray:
    """A `plotted_batch`'s images with their predictions at confidence ≥ `conf`, boxes labelled with class and score:
    ultralytics' `plot_images` (the drawing of its val_batch*_pred.jpg), as an (H, W, 3) uint8 RGB grid, at most
    1920 px a side. A few hundredths of a second: cheap enough for every epoch."""
    from ultralytics.utils.plotting import plot_images

    labelled = dict(enumerate(names))
    _ship_unicode_font(labelled)
    return plot_images(
        labels={k: v.clone() for k, v in batch["preds"].items()},
        images=batch["img"].float() / 255,
        paths=batch["im_file"],
        names=labelled,
        save=False,
        conf_thres=conf,
        threaded=False,
    )


def write_plots(snapshot: ValidationSnapshot, folder: str | Path) -> list[Path]:
    """Draw the snapshot's PR, F1, P and R curves, both confusion matrices and its validation batches (labels and
    predictions) into `folder` (created) with ultralytics' plotting functions; returns the files written, sorted.

    The curves need at least one ground-truth box (ultralytics draws none otherwise). Predictions are shown at
    confidence ≥ 0.25 (`plot_images`' threshold); the confusion matrix counts those with confidence > the
    validation `conf` and matches at IoU > 0.45, as ultralytics' validator does."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = dict(enumerate(snapshot.names))
    _ship_unicode_font(names)
    with plt.style.context("default"):  # ultralytics' look, not core.figures' grid and spines
        _draw(snapshot, folder, names)
    written = {*CURVE_FILES, *CONFUSION_FILES} | {
        f"val_batch{i}_{kind}.jpg" for i in range(len(snapshot.batches)) for kind in ("labels", "pred")
    }
    return sorted(folder / name for name in written if (folder / name).is_file())


def _draw(snapshot: ValidationSnapshot, folder: Path, names: dict[int, str]) -> None:
    from ultralytics.utils.metrics import ConfusionMatrix, ap_per_class
    from ultralytics.utils.plotting import plot_images

    s = snapshot.stats
    if len(s["target_cls"]):
        ap_per_class(
            s["tp"], s["conf"], s["pred_cls"], s["target_cls"], plot=True, save_dir=folder, names=names, prefix="Box"
        )
    matrix = ConfusionMatrix(names=names)
    matrix.matrix = snapshot.confusion.copy()
    for normalize in (True, False):
        matrix.plot(normalize=normalize, save_dir=folder)
    for i, batch in enumerate(snapshot.batches):
        images = batch["img"].float() / 255
        for kind in ("labels", "preds"):
            plot_images(
                labels={k: v.clone() for k, v in batch[kind].items()},
                images=images.clone(),
                paths=batch["im_file"],
                fname=folder / f"val_batch{i}_{'labels' if kind == 'labels' else 'pred'}.jpg",
                names=names,
                threaded=False,  # the files must exist before they are logged
            )


def clear_plots(folder: str | Path) -> None:
    """Remove the files `write_plots` writes (and nothing else) from `folder`, so that no plot of an earlier run
    stays beside the new ones."""
    folder = Path(folder)
    for name in (*CURVE_FILES, *CONFUSION_FILES):
        (folder / name).unlink(missing_ok=True)
    for path in folder.glob("val_batch*_*.jpg"):
        path.unlink()


def _ship_unicode_font(names: dict[int, str]) -> None:
    # ultralytics' Annotator wants Arial.Unicode.ttf for non-ASCII class names and downloads it when it is absent
    # (core.offline ships Arial.ttf only): matplotlib's DejaVu Sans stands in, as it does for Arial.ttf.
    if str(names).isascii():
        return
    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    target = USER_CONFIG_DIR / "Arial.Unicode.ttf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", target)
