"""A detector's recall by ground-truth face size on a VOC folder: which faces it misses, small or large.

A face's size is the geometric mean of its box's width and height, sqrt(w·h), in the image's pixels (COCO bins
objects by area, which this is the square root of). Each image's detections are matched one to one to its
ground-truth boxes by IoU (Hungarian assignment, IoU ≥ `iou`), once whatever the class (`found`: the face is
detected) and once within each class (`correct`: detected with its mask class).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from core.errors import UserError

SIZE_BINS = (16, 32, 64, 128)  # edges in px: <16, 16–32, 32–64, 64–128, ≥128


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of boxes x0, y0, x1, y1 (N, 4) and (M, 4)."""
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def matched(truth: np.ndarray, detections: np.ndarray, iou: float) -> np.ndarray:
    """Which of `truth`'s boxes ((N, 4) x0 y0 x1 y1) a detection ((M, 4)) matches one to one at IoU ≥ `iou`."""
    from scipy.optimize import linear_sum_assignment

    hit = np.zeros(len(truth), bool)
    if len(truth) and len(detections):
        overlaps = _iou(truth, detections)
        rows, cols = linear_sum_assignment(-overlaps)
        hit[rows[overlaps[rows, cols] >= iou]] = True
    return hit


def bin_labels(edges: Sequence[float]) -> list[str]:
    """'<16', '16-32', …, '>=128' for edges (16, 32, 64, 128)."""
    edges = [int(e) if float(e).is_integer() else e for e in edges]
    return [f"<{edges[0]}", *(f"{a}-{b}" for a, b in zip(edges, edges[1:])), f">={edges[-1]}"]


def recall_by_size(
    voc: str | Path,
    detector: Callable[[np.ndarray], np.ndarray],
    names: Sequence[str],
    edges: Sequence[float] = SIZE_BINS,
    iou: float = 0.5,
) -> dict[str, dict[str, float | int | None]]:
    """`size_recall` over every image of the VOC folder `voc` (images/ and annotations/), its boxes matched to
    `names` (the detector's class names; boxes of other classes are left out). UserError naming `voc` for a folder
    without images/ and annotations/."""
    from core.images import read_rgb
    from core.voc import pair_voc

    voc = Path(voc)
    if not (voc / "images").is_dir() or not (voc / "annotations").is_dir():
        raise UserError(f"voc={voc}: a VOC folder holds images/ and annotations/")

    def samples() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for pair in pair_voc(voc / "images", voc / "annotations").pairs:
            objects = [o for o in pair.annotation.objects if o.name in names]
            if objects:
                truth = np.array([[o.xmin, o.ymin, o.xmax, o.ymax] for o in objects], np.float64)
                yield read_rgb(pair.image), truth, np.array([list(names).index(o.name) for o in objects])

    return size_recall(samples(), detector, edges, iou)


def size_recall(
    samples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    detector: Callable[[np.ndarray], np.ndarray],
    edges: Sequence[float] = SIZE_BINS,
    iou: float = 0.5,
) -> dict[str, dict[str, float | int | None]]:
    """{bin label: {"faces", "found", "correct", "recall", "recall_low", "recall_high", "class_recall"}} of
    `detector` (RGB (H, W, 3) uint8 → (N, 6) x0 y0 x1 y1 conf class) over `samples`: (RGB image, its faces' boxes
    (M, 4) x0 y0 x1 y1 px, their class indices (M,)). Recalls are shares 0–1 (None for a bin without faces);
    `recall_low`/`recall_high` its 95 % Wilson interval (`core.intervals`), wide where a bin holds few faces."""
    from core.intervals import wilson_interval

    labels = bin_labels(edges)
    counts = {label: [0, 0, 0] for label in labels}
    for rgb, truth, classes in samples:
        found = detector(rgb)
        hit = matched(truth, found[:, :4], iou)
        correct = np.zeros(len(truth), bool)
        for cls in np.unique(classes):
            mine = classes == cls
            correct[mine] = matched(truth[mine], found[found[:, 5] == cls][:, :4], iou)
        sizes = np.sqrt(np.clip(truth[:, 2] - truth[:, 0], 0, None) * np.clip(truth[:, 3] - truth[:, 1], 0, None))
        for size, h, c in zip(np.digitize(sizes, edges), hit, correct):
            row = counts[labels[size]]
            row[0], row[1], row[2] = row[0] + 1, row[1] + int(h), row[2] + int(c)
    rows = {}
    for label, (faces, found, correct) in counts.items():
        low, high = (round(v, 4) for v in wilson_interval(found, faces)) if faces else (None, None)
        rows[label] = {
            "faces": faces,
            "found": found,
            "correct": correct,
            "recall": round(found / faces, 4) if faces else None,
            "recall_low": low,
            "recall_high": high,
            "class_recall": round(correct / faces, 4) if faces else None,
        }
    return rows
