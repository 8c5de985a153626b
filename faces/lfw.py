"""LFW's verification protocol run on an LFW-layout folder (`pairs.txt` and `images/`): every distinct photo
described once by a `faces.photos.PhotoPipeline` (its descriptor cache answering the photos it holds), every
pair scored by the Euclidean distance of its descriptors, and the k-fold accuracy of `faces.verification`
(Huang, Ramesh, Berg, Learned-Miller, "Labeled Faces in the Wild", UMass Amherst TR 07-49, 2007), with the time
the describing took and its outputs (metrics, one row per pair, the ROC curve).

Error messages name `PAIRS=`, the folder setting of `make eval-lfw`.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import figures
from core.errors import UserError
from faces.photos import FOUND, PhotoPipeline
from faces.verification import (
    Pair,
    Photo,
    VerificationResult,
    evaluate_pairs,
    photo_path,
    read_pairs,
    roc_points,
)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished (joined) child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def read_lfw_folder(folder: str | Path) -> list[Pair]:
    """The pairs of `folder/pairs.txt` (`faces.verification.read_pairs`), every photo they name checked to be in
    `folder/images/` (`photo_path`). Raises UserError when the folder is missing, as `read_pairs` does, or naming
    the count of missing photos and the first of them (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"PAIRS={folder}: folder not found — give a folder holding pairs.txt and images/ (LFW's layout)"
        )
    pairs = read_pairs(folder / "pairs.txt")
    missing = sorted(
        {
            str(photo_path(folder / "images", p))
            for pair in pairs
            for p in (pair.first, pair.second)
            if not photo_path(folder / "images", p).is_file()
        }
    )
    if missing:
        raise UserError(f"PAIRS={folder}: {len(missing)} photo(s) named in pairs.txt are missing, e.g. {missing[0]}")
    return pairs


@dataclass
class LfwEvaluation:
    """The outcome of `evaluate_lfw`: the `pairs`, their `result` (`faces.verification.VerificationResult`), how
    each distinct photo's face was found (`how`: FOUND, RETRIED or CENTRE_BOX), how many photos the cache answered
    (`cached`), and the wall and CPU seconds (this process and its workers) the describing took."""

    pairs: list[Pair]
    result: VerificationResult
    how: dict[Photo, str]
    cached: int
    seconds: float
    cpu_seconds: float

    @property
    def images(self) -> int:
        """Distinct photos of the pairs."""
        return len(self.how)

    @property
    def described(self) -> int:
        """Photos described in this run (not answered by the cache)."""
        return self.images - self.cached

    @property
    def speed(self) -> dict[str, float]:
        """{"images_per_s": photos described per wall second}, empty when none was described (no speed)."""
        return {"images_per_s": self.described / self.seconds} if self.described else {}

    @property
    def cores_busy(self) -> float:
        """CPU seconds over wall seconds of the describing: ~`workers` when every worker had a core (0 for no time)."""
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    def faces_found(self) -> pd.Series:
        """Photos per way their face was found, most first (`pandas.Series.value_counts`)."""
        return pd.Series(self.how).value_counts()

    def summary(self) -> dict:
        """k-fold mean and std accuracy, accuracy at the fixed tolerance (fractions) and the pair count: the tool's
        JSON line."""
        result = self.result
        return {
            "accuracy": result.accuracy,
            "std": result.std,
            "accuracy_at_tolerance": result.accuracy_at_tolerance,
            "pairs": len(self.pairs),
        }

    def details(self, pairs_folder: str | Path, pipeline: PhotoPipeline) -> dict:
        """`summary` with the per-fold accuracies and thresholds, the photo counts, speed and faces found, and the
        folder and pipeline: the content of metrics.json."""
        result = self.result
        return {
            **self.summary(),
            "folds": len(result.fold_accuracy),
            "fold_accuracy": result.fold_accuracy.tolist(),
            "thresholds": result.thresholds.tolist(),
            "tolerance": result.tolerance,
            "images": self.images,
            "images_from_cache": self.cached,
            **self.speed,
            "seconds": self.seconds,
            "cores_busy": self.cores_busy,
            "faces_found": {k: int(v) for k, v in self.faces_found().items()},
            "pairs_folder": str(pairs_folder),
            "detector": repr(pipeline.detector),
            "retry_detector": repr(pipeline.retry_detector),
            "describer": repr(pipeline.describer),
            "workers": pipeline.workers,
        }

    def pairs_table(self) -> pd.DataFrame:
        """One row per pair: fold (1-based), both photos (`Name_0001`), same person or not, descriptor distance and
        how each photo's face was found."""
        pairs = self.pairs
        return pd.DataFrame(
            {
                "fold": [p.fold + 1 for p in pairs],
                "first": [f"{p.first[0]}_{p.first[1]:04d}" for p in pairs],
                "second": [f"{p.second[0]}_{p.second[1]:04d}" for p in pairs],
                "same": self.result.same,
                "distance": np.round(self.result.distances, 5),
                "first_face": [self.how[p.first] for p in pairs],
                "second_face": [self.how[p.second] for p in pairs],
            }
        )

    def roc_figure(self):
        """The ROC curve (`faces.verification.roc_points`) with the fixed tolerance's point: a matplotlib figure."""
        result = self.result
        fpr, tpr = roc_points(result.distances, result.same)
        at = result.distances < result.tolerance
        points = {f"tolerance {result.tolerance}": (float(at[~result.same].mean()), float(at[result.same].mean()))}
        return figures.roc_curve(
            fpr,
            tpr,
            f"LFW verification ({len(self.pairs)} pairs, {len(result.fold_accuracy)} folds): "
            f"{100 * result.accuracy:.2f} % ± {100 * result.std:.2f}",
            points,
        )

    def write(self, out: str | Path, details: dict) -> list[Path]:
        """Write `out/metrics.json` (`details`), `pairs.csv` (`pairs_table`) and `roc.png`; returns the three files."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(details, indent=2))
        self.pairs_table().to_csv(out / "pairs.csv", index=False)
        figure = self.roc_figure()
        figure.savefig(out / "roc.png")
        figures.plt.close(figure)
        return [out / name for name in ("metrics.json", "pairs.csv", "roc.png")]

    def metrics(self) -> dict[str, float]:
        """The run's metrics: `summary`, photo counts, speed, photos without a detected face, and per fold (1-based)
        its accuracy and threshold."""
        result = self.result
        return {
            **self.summary(),
            "images": self.images,
            **self.speed,
            "faces_not_found": self.images - int(self.faces_found().get(FOUND, 0)),
            **{f"fold_accuracy/{k + 1}": a for k, a in enumerate(result.fold_accuracy)},
            **{f"fold_threshold/{k + 1}": t for k, t in enumerate(result.thresholds)},
        }

    def report(self, workers: int, cache: str | Path | None) -> list[str]:
        """The two result lines: photos, describing speed, cache and faces found; then the accuracies (%)."""
        result = self.result
        rate = (
            f"{self.described} described at {self.speed['images_per_s']:.2f} images/s by {workers} worker(s), "
            f"{self.cores_busy:.1f} cores busy; "
            if self.described
            else ""
        )
        return [
            f"LFW verification, {len(self.pairs)} pairs in {len(result.fold_accuracy)} folds, {self.images} photos "
            f"({rate}{self.cached} from the cache {cache}); faces: "
            + ", ".join(f"{k} {v}" for k, v in self.faces_found().items()),
            f"accuracy {100 * result.accuracy:.2f} % ± {100 * result.std:.2f} (k-fold thresholds "
            f"{result.thresholds.min():.3f}–{result.thresholds.max():.3f}); at tolerance {result.tolerance}: "
            f"{100 * result.accuracy_at_tolerance:.2f} %",
        ]


def evaluate_lfw(
    folder: str | Path, pairs: list[Pair], pipeline: PhotoPipeline, tolerance: float = 0.6
) -> LfwEvaluation:
    """LFW View 2 (`faces.verification.evaluate_pairs`) of `pairs` with photos `folder/images/` (`photo_path`),
    described by `pipeline` (its cache answering the photos it holds), `tolerance` the fixed threshold reported
    beside the k-fold accuracy (Euclidean descriptor distance). Raises UnreadableImage for a bad photo."""
    found: dict = {}

    def describe(photos: list[Photo]) -> np.ndarray:
        files = [photo_path(Path(folder) / "images", p) for p in photos]
        hits = pipeline.cache.hits  # the photos the cache answers, counted as it answers them (no second read)
        start, cpu = time.perf_counter(), cpu_seconds()
        descriptors, how = pipeline.describe(files)
        cached = pipeline.cache.hits - hits
        found.update(
            seconds=time.perf_counter() - start,
            cpu_seconds=cpu_seconds() - cpu,
            cached=cached,
            how=dict(zip(photos, how)),
        )
        return descriptors

    result = evaluate_pairs(pairs, describe, tolerance)
    return LfwEvaluation(pairs, result, found["how"], found["cached"], found["seconds"], found["cpu_seconds"])
