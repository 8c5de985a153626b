"""Measuring face detectors on a labelled VOC folder: precision and recall at an IoU threshold, recall per
ground-truth class, and speed.

Detections are matched to ground truth per image in the VOC/COCO way: best score first, each detection
to the unmatched face it overlaps most, a hit when that IoU reaches the threshold. Every VOC object
counts as a face (the face-mask set's classes say what the face wears, not whether it is one), and the
detectors are class-agnostic, so per-class figures are recalls. Objects VOC marks `<difficult>` follow PASCAL VOC:
they are no ground truth (not counted in recall), and a detection on one is neither a hit nor a false detection.
Images and xml are paired by `core.voc.pair_voc`: unpaired and ambiguous files are skipped and reported.

LFW photos (`lfw_centre_faces`) carry no boxes: LFW centred each photo on the named person's face (Huang et al.,
"Labeled Faces in the Wild", UMass TR 07-49, 2007: the Viola-Jones box, grown 2.2× and rescaled to 250×250), so
the one face to find is the central box of 0.44 × the side (70, 70, 180, 180 on 250×250: dlib's LFW box, see
`faces.descriptors.centre_box`); a detection finds it at IoU ≥ `LFW_CENTRE_IOU`, and any other detection counts
as false, including a real face in the background (LFW does not label those), so LFW precision is a lower bound.

`score_sweep` gives precision and recall against a detector's score threshold from ONE run at the lowest
threshold: keeping the detections whose score reaches t gives exactly the detections of a run at t, because
every detector's non-maximum suppression is greedy by score (a box is kept unless a kept higher-scoring box
overlaps it), so the boxes scoring t or more never depend on the lower-scoring ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from core.errors import UserError
from core.images import read_rgb
from core.metric_names import class_metric_names, slug
from core.voc import VocPairing, pair_voc
from faces import Detection, FaceDetector
from faces.descriptors import centre_box

# IoU a detection needs with LFW's nominal face box to be the named face: lenient, because the detectors' boxes
# differ in extent (HOG's is ~90 px, tight on the eyes and mouth; YuNet's and Haar's take in the forehead)
LFW_CENTRE_IOU = 0.3


@dataclass
class LabelledImage:
    path: Path
    boxes: np.ndarray  # (N, 4) left, top, right, bottom in pixels, clipped to the image: the faces to find
    classes: list[str]  # N class names
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (M, 4) ignored faces


@dataclass
class VocFaces:
    """A labelled VOC folder: its usable images and how its files were paired (what was skipped, by path)."""

    images: list[LabelledImage]
    pairing: VocPairing

    @property
    def difficult(self) -> int:
        return sum(len(image.difficult) for image in self.images)


def read_voc_folder(folder: str | Path, limit: int | None = None) -> VocFaces:
    """`folder/annotations/*.xml` with their images in `folder/images/` (sorted by xml name; first `limit` pairs).

    Raises UserError when the folder lacks the layout or holds no usable pair."""
    folder = Path(folder)
    if not (folder / "images").is_dir() or not (folder / "annotations").is_dir():
        raise UserError(f"VOC={folder}: expected images/ and annotations/*.xml inside (PASCAL VOC layout)")
    pairing = pair_voc(folder / "images", folder / "annotations")
    if not pairing.pairs:
        raise UserError(
            f"VOC={folder}: no usable image/xml pair in images/ and annotations/ ({pairing.skipped} file(s) "
            "skipped, see the messages above)"
        )
    labelled = []
    for pair in pairing.pairs[:limit]:
        voc = pair.annotation
        boxes = np.array([[o.xmin, o.ymin, o.xmax, o.ymax] for o in voc.objects], np.float32).reshape(-1, 4)
        if voc.width and voc.height:  # some sets write xmax = width + 1
            boxes = np.clip(boxes, 0, [voc.width, voc.height, voc.width, voc.height])
        hard = np.array([o.difficult for o in voc.objects], bool)
        labelled.append(
            LabelledImage(pair.image, boxes[~hard], [o.name for o in voc.objects if not o.difficult], boxes[hard])
        )
    return VocFaces(labelled, pairing)


def lfw_centre_faces(folder: str | Path, per_person: int | None = None) -> list[LabelledImage]:
    """LFW-layout photos `folder/<Name>/*.jpg` (the first `per_person` of each, by file name; None: all) as
    labelled images whose one face is the photo's central box (module docstring), class "lfw". Raises UserError
    when the folder is missing or holds no photo."""
    from core.images import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"lfw={folder}: folder not found — give a folder of LFW photos, <Name>/*.jpg")
    photos = [
        photo
        for person in sorted(p for p in folder.iterdir() if p.is_dir())
        for photo in sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:per_person]
    ]
    if not photos:
        raise UserError(f"lfw={folder}: no <Name>/ sub-folder with photos in it (LFW's layout)")
    images = []
    for photo in photos:
        height, width = read_rgb(photo).shape[:2]
        box = centre_box((height, width))
        images.append(LabelledImage(photo, np.array([[box.left, box.top, box.right, box.bottom]], np.float32), ["lfw"]))
    return images


@dataclass
class DetectorRun:
    """One detector's detections on each image, and the seconds each `detect` call took."""

    detector: str
    detections: list[list[Detection]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return len(self.seconds) / max(sum(self.seconds), 1e-9)

    def at_threshold(self, threshold: float) -> DetectorRun:
        """The detections scoring `threshold` or more: the run a detector would give at that score threshold
        (see the module docstring); the timings are this run's."""
        kept = [[d for d in image if d.score >= threshold] for image in self.detections]
        return DetectorRun(self.detector, kept, list(self.seconds))


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


def match(
    detections: Sequence[Detection], truth: np.ndarray, iou_threshold: float, ignore: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Which ground-truth boxes (N, 4) are found (bool per box), and the number of false detections.

    `ignore` (M, 4): boxes that are neither to be found nor false when found (VOC's difficult objects): a detection
    that finds no unmatched ground truth but overlaps one of them at IoU ≥ `iou_threshold` is not counted."""
    found = np.zeros(len(truth), bool)
    if not detections:
        return found, 0
    predicted = torch.tensor(
        [[d.left, d.top, d.right, d.bottom] for d in sorted(detections, key=lambda d: -d.score)], dtype=torch.float32
    )
    iou = box_iou(predicted, torch.from_numpy(np.asarray(truth, np.float32).reshape(-1, 4))).numpy()
    ignored = np.zeros(len(predicted), bool)
    if ignore is not None and len(ignore):
        ignored = (
            box_iou(predicted, torch.from_numpy(np.asarray(ignore, np.float32).reshape(-1, 4))).numpy().max(axis=1)
            >= iou_threshold
        )
    false = 0
    for row, on_ignored in zip(iou, ignored):
        candidates = np.where(found, -1.0, row)
        best = int(candidates.argmax()) if len(candidates) else -1
        if best >= 0 and candidates[best] >= iou_threshold:
            found[best] = True
        elif not on_ignored:
            false += 1
    return found, false


def scores(run: DetectorRun, images: Sequence[LabelledImage], iou_thresholds: Sequence[float]) -> dict[str, float]:
    """precision@t, recall@t and recall_<class>@t for each threshold t, images_per_s and faces (difficult ones are
    not faces to find: see the module docstring)."""
    row: dict[str, float] = {
        "faces": sum(len(i.boxes) for i in images),
        "detections": sum(map(len, run.detections)),
        "images_per_s": run.images_per_second,
    }
    classes = sorted({c for image in images for c in image.classes})
    for t in iou_thresholds:
        hits, false = [], 0
        for detections, image in zip(run.detections, images):
            found, wrong = match(detections, image.boxes, t, image.difficult)
            hits.extend(zip(image.classes, found))
            false += wrong
        true = sum(found for _, found in hits)
        row[f"precision@{t}"] = true / max(1, true + false)
        row[f"recall@{t}"] = true / max(1, len(hits))
        for name in classes:
            of_class = [found for c, found in hits if c == name]
            row[f"recall_{name}@{t}"] = sum(of_class) / len(of_class)
    return row


def score_sweep(
    run: DetectorRun, images: Sequence[LabelledImage], thresholds: Sequence[float], iou_threshold: float
) -> list[dict[str, float]]:
    """One row per score threshold t (ascending): threshold, precision, recall, F1 (2PR / (P + R), 0 when both
    are 0) and detections of `run.at_threshold(t)` at `iou_threshold`, matched as `scores`. `run` must come from
    a detector whose own threshold is at most min(thresholds), else the low rows miss detections."""
    rows = []
    for t in sorted(thresholds):
        row = scores(run.at_threshold(t), images, [iou_threshold])
        precision, recall = row[f"precision@{iou_threshold}"], row[f"recall@{iou_threshold}"]
        rows.append(
            {
                "threshold": float(t),
                "precision": precision,
                "recall": recall,
                "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
                "detections": row["detections"],
            }
        )
    return rows


def best_f1(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The `score_sweep` row of the highest F1; on a tie the highest threshold (fewer detections, same F1)."""
    return max(rows, key=lambda r: (round(r["f1"], 12), r["threshold"]))


def threshold_grid(low: float, high: float, step: float) -> list[float]:
    """The score thresholds `low` to `high` inclusive by `step` (each detector's own score scale), each rounded to
    6 decimals so that the grid holds the configured values exactly."""
    count = int(round((high - low) / step)) + 1
    return [round(low + k * step, 6) for k in range(count)]


def comparison_table(
    detectors: Sequence[FaceDetector],
    runs: Sequence[DetectorRun],
    images: Sequence[LabelledImage],
    iou_thresholds: Sequence[float],
) -> pd.DataFrame:
    """One row per detector: "detector" (its name) and the `scores` of its run (same order as `detectors`) cut at
    the detector's own `score_threshold` (`DetectorRun.at_threshold`)."""
    return pd.DataFrame(
        [
            {"detector": d.name, **scores(run.at_threshold(d.score_threshold), images, iou_thresholds)}
            for d, run in zip(detectors, runs)
        ]
    )


def data_notes(labelled: VocFaces) -> str:
    """One line on what the folder held besides the faces counted: difficult faces ignored, files skipped (the
    first three of each kind by name); empty when there is nothing to say."""
    pairing, parts = labelled.pairing, []
    if labelled.difficult:
        parts.append(f"{labelled.difficult} face(s) marked difficult ignored (neither hit nor miss)")
    for what, files in (
        ("ambiguous image/xml pair(s)", pairing.ambiguous),
        ("xml without image", pairing.xml_without_image),
        ("image(s) without xml", pairing.image_without_xml),
        ("unreadable xml", pairing.unreadable_xml),
    ):
        if files:
            parts.append(
                f"{len(files)} {what} skipped: {', '.join(Path(f.split(': ')[0]).name for f in files[:3])}"
                + (" …" if len(files) > 3 else "")
            )
    return "; ".join(parts)


def comparison_markdown(table: pd.DataFrame, iou_thresholds: Sequence[float], counts: dict[str, int]) -> str:
    """`comparison_table` as two markdown tables: precision, recall (each IoU threshold), images/s and detections;
    then the recall per ground-truth class, headed with the class's face count of `counts` ({class: faces})."""
    classes = sorted(counts)
    main = table[
        ["detector"]
        + [f"{k}@{t}" for t in iou_thresholds for k in ("precision", "recall")]
        + ["images_per_s", "detections"]
    ]
    main = main.rename(
        columns={f"{k}@{t}": f"{k} IoU≥{t}" for t in iou_thresholds for k in ("precision", "recall")}
        | {"images_per_s": "images/s"}
    )
    per_class = table[["detector"] + [f"recall_{c}@{t}" for t in iou_thresholds for c in classes]]
    per_class = per_class.rename(
        columns={f"recall_{c}@{t}": f"{c} ({counts[c]}) IoU≥{t}" for t in iou_thresholds for c in classes}
    )
    return (
        main.to_markdown(index=False, floatfmt=".3f")
        + "\n\nRecall per ground-truth class:\n\n"
        + per_class.to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )


def comparison_metrics(
    table: pd.DataFrame, classes: Sequence[str], iou_thresholds: Sequence[float]
) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, class names) of `comparison_table` for a metric store: each figure as `<detector slug>.<figure>`
    ("@t" written "_iou<t>"), the per-class recalls as `<detector slug>.recall_iou<t>/<index>_<class slug>` over
    the sorted `classes` (`core.metric_names.class_metric_names`), with {that suffix: class name}."""
    per_class = {
        f"recall_{c}@{t}": key
        for t in iou_thresholds
        for key, c in class_metric_names(classes, prefix=f"recall_iou{t}/").items()
    }
    names = {key: c for t in iou_thresholds for key, c in class_metric_names(classes, prefix=f"recall_iou{t}/").items()}
    metrics = {
        f"{slug(row['detector']) or 'detector'}.{per_class.get(k) or k.replace('@', '_iou')}": v
        for row in table.to_dict("records")
        for k, v in row.items()
        if k != "detector"
    }
    return metrics, names


# {(set name, detector name): its `score_sweep` rows}
Sweeps = dict[tuple[str, str], list[dict[str, float]]]


def sweep_frame(sweeps: Sweeps) -> pd.DataFrame:
    """Every row of every sweep, with its "set" and "detector" first (the score sweep's CSV)."""
    return pd.DataFrame([{"set": s, "detector": d, **row} for (s, d), rows in sweeps.items() for row in rows])


def sweep_curves(sweeps: Sweeps) -> dict[str, tuple[list[float], list[float]]]:
    """{"<detector> <precision|recall> (<set's first word>)": (thresholds, values)}: the sweeps as curves."""
    return {
        f"{d} {kind} ({s.split(' ')[0]})": ([r["threshold"] for r in rows], [r[kind] for r in rows])
        for (s, d), rows in sweeps.items()
        for kind in ("precision", "recall")
    }


def sweep_best_metrics(sweeps: Sweeps) -> dict[str, float]:
    """Each sweep's best F1 (`best_f1`) as metrics `<detector slug>.<set's first word, slug>.best_f1_threshold`
    and `.best_f1`."""
    metrics: dict[str, float] = {}
    for (s, d), rows in sweeps.items():
        best = best_f1(rows)
        key = f"{slug(d) or 'detector'}.{slug(s.split(' ')[0]) or 'set'}"
        metrics |= {f"{key}.best_f1_threshold": best["threshold"], f"{key}.best_f1": best["f1"]}
    return metrics


def sweep_markdown(sweeps: Sweeps, detectors: Sequence[FaceDetector], ious: dict[str, float]) -> str:
    """A markdown section: per set and detector, precision (P), recall (R) and F1 at the detector's configured
    `score_threshold` (the sweep's first row when the grid lacks it) and at the best-F1 threshold; `ious` is
    {set name: IoU threshold of its matching}. StopIteration when a sweep names a detector not in `detectors`."""
    rows = []
    for (set_name, name), sweep_rows in sweeps.items():
        detector = next(d for d in detectors if d.name == name)
        configured = next((r for r in sweep_rows if r["threshold"] == float(detector.score_threshold)), sweep_rows[0])
        best = best_f1(sweep_rows)
        rows.append(
            {
                "set": set_name,
                "detector": name,
                "configured threshold": configured["threshold"],
                "P": configured["precision"],
                "R": configured["recall"],
                "F1": configured["f1"],
                "best-F1 threshold": best["threshold"],
                "P there": best["precision"],
                "R there": best["recall"],
                "best F1": best["f1"],
            }
        )
    return (
        f"\n### Precision (P), recall (R) and F1 against the score threshold "
        f"({', '.join(f'{s}: IoU ≥ {iou}' for s, iou in ious.items())})\n\n"
        "Each detector's own score (HOG: SVM margin, MMOD: CNN confidence, Haar: level weight, YuNet: face score); "
        "on LFW the face to find is the photo's central box and any other detection counts as false.\n\n"
        + pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )
