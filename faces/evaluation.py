"""Measuring face detectors on a labelled VOC folder: precision and recall at an IoU threshold, recall per
ground-truth class, and speed.

Detections are matched to ground truth per image in the VOC/COCO way: best score first, each detection
to the unmatched face it overlaps most, a hit when that IoU reaches the threshold. Every VOC object
counts as a face (the face-mask set's classes say what the face wears, not whether it is one), and the
detectors are class-agnostic, so per-class figures are recalls.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from core.errors import UserError
from datamodules.images import IMAGE_SUFFIXES, read_rgb
from datamodules.voc import read_voc
from faces import Detection, FaceDetector


@dataclass
class LabelledImage:
    path: Path
    boxes: np.ndarray  # (N, 4) left, top, right, bottom, clipped to the image
    classes: list[str]


def read_voc_folder(folder: str | Path, limit: int | None = None) -> list[LabelledImage]:
    """`folder/annotations/*.xml` with their images in `folder/images/` (sorted by name; first `limit`)."""
    folder = Path(folder)
    annotations = sorted((folder / "annotations").glob("*.xml"))
    if not (folder / "images").is_dir() or not annotations:
        raise UserError(f"VOC={folder}: expected images/ and annotations/*.xml inside (PASCAL VOC layout)")
    images = {p.stem: p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    labelled = []
    for xml in annotations[:limit]:
        if xml.stem not in images:
            raise UserError(f"{xml} has no image {xml.stem}.* in {folder / 'images'}")
        voc = read_voc(xml)
        boxes = np.array([[o.xmin, o.ymin, o.xmax, o.ymax] for o in voc.objects], np.float32).reshape(-1, 4)
        if voc.width and voc.height:  # some sets write xmax = width + 1
            boxes = np.clip(boxes, 0, [voc.width, voc.height, voc.width, voc.height])
        labelled.append(LabelledImage(images[xml.stem], boxes, [o.name for o in voc.objects]))
    return labelled


@dataclass
class DetectorRun:
    """One detector's detections on each image, and the seconds each `detect` call took."""

    detector: str
    detections: list[list[Detection]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return len(self.seconds) / max(sum(self.seconds), 1e-9)


def run_detector(detector: FaceDetector, images: Sequence[LabelledImage], progress: bool = True) -> DetectorRun:
    """Detect on every image in this process, timing `detect` alone (decoding excluded; one warm-up call
    first, so a model's loading is not counted)."""
    from tqdm.auto import tqdm

    run = DetectorRun(detector.name)
    pixels = [read_rgb(image.path) for image in images]
    detector.detect(pixels[0])
    for rgb in tqdm(pixels, desc=f"{detector.name}", unit="img", disable=not progress, leave=False):
        start = time.perf_counter()
        run.detections.append(detector.detect(rgb))
        run.seconds.append(time.perf_counter() - start)
    return run


def match(detections: Sequence[Detection], truth: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, int]:
    """Which ground-truth boxes are found (bool per box), and the number of false detections."""
    found = np.zeros(len(truth), bool)
    if not detections:
        return found, 0
    if not len(truth):
        return found, len(detections)
    predicted = torch.tensor([[d.left, d.top, d.right, d.bottom] for d in sorted(detections, key=lambda d: -d.score)], dtype=torch.float32)
    iou = box_iou(predicted, torch.from_numpy(truth)).numpy()
    false = 0
    for row in iou:
        candidates = np.where(found, -1.0, row)
        best = int(candidates.argmax())
        if candidates[best] >= iou_threshold:
            found[best] = True
        else:
            false += 1
    return found, false


def scores(run: DetectorRun, images: Sequence[LabelledImage], iou_thresholds: Sequence[float]) -> dict[str, float]:
    """precision@t, recall@t and recall_<class>@t for each threshold t, images_per_s and faces."""
    row: dict[str, float] = {"faces": sum(len(i.boxes) for i in images), "detections": sum(map(len, run.detections)),
                             "images_per_s": run.images_per_second}
    classes = sorted({c for image in images for c in image.classes})
    for t in iou_thresholds:
        hits, false = [], 0
        for detections, image in zip(run.detections, images):
            found, wrong = match(detections, image.boxes, t)
            hits.extend(zip(image.classes, found))
            false += wrong
        true = sum(found for _, found in hits)
        row[f"precision@{t}"] = true / max(1, true + false)
        row[f"recall@{t}"] = true / max(1, len(hits))
        for name in classes:
            of_class = [found for c, found in hits if c == name]
            row[f"recall_{name}@{t}"] = sum(of_class) / len(of_class)
    return row
