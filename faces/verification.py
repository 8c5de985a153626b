"""Face verification on LFW's standard protocol ("View 2"; Huang, Ramesh, Berg, Learned-Miller, "Labeled Faces
in the Wild", UMass Amherst TR 07-49, 2007): pairs of photos labelled same person / different people, in folds;
a pair is called "same" when the distance between its two descriptors is below a threshold; for each fold the
threshold is the one with the best accuracy on the OTHER folds, and the result is the mean ± standard deviation
(ddof=1) of the held folds' accuracies. The accuracy at a fixed threshold (dlib's tolerance 0.6: nothing fitted)
is reported beside it.

`pairs.txt`: a header `folds<TAB>n`, then per fold n same-person lines `Name<TAB>i<TAB>j` followed by n
different-people lines `Name1<TAB>i<TAB>Name2<TAB>j`; photo `(Name, i)` is `images/<Name>/<Name>_<i:04d>.jpg`
(../shared/data/lfw-pairs/SOURCE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UserError

Photo = tuple[str, int]  # (person, image number)


@dataclass(frozen=True)
class Pair:
    """Two photos, whether they show the same person, and the pair's fold (0-based)."""

    first: Photo
    second: Photo
    same: bool
    fold: int


def read_pairs(path: str | Path) -> list[Pair]:
    """The pairs of an LFW `pairs.txt`, in file order. Raises UserError (naming the file and line) when the file
    is missing, its header is not `folds<TAB>n`, a line has neither 3 nor 4 fields, a fold's same-person lines
    and different-people lines are not where the header puts them, or lines are missing or left over."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: pairs file not found — PAIRS=<folder> must hold pairs.txt and images/ (LFW's layout)")
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        folds, per_fold = (int(v) for v in lines[0].split())
    except (IndexError, ValueError):
        raise UserError(
            f"{path}:1: expected the header 'folds<TAB>pairs per kind', got {lines[0] if lines else ''!r}"
        ) from None
    body = [line for line in lines[1:] if line.strip()]
    if len(body) != 2 * folds * per_fold:
        raise UserError(
            f"{path}: the header promises {folds} folds of {per_fold} same + {per_fold} different pairs "
            f"({2 * folds * per_fold} lines), the file has {len(body)}"
        )
    pairs = []
    for k, line in enumerate(body):
        fold, position = divmod(k, 2 * per_fold)
        fields = line.split()
        same = position < per_fold
        try:
            if same and len(fields) == 3:
                pairs.append(Pair((fields[0], int(fields[1])), (fields[0], int(fields[2])), True, fold))
            elif not same and len(fields) == 4:
                pairs.append(Pair((fields[0], int(fields[1])), (fields[2], int(fields[3])), False, fold))
            else:
                raise ValueError
        except ValueError:
            kind = "'Name i j' (same person)" if same else "'Name1 i Name2 j' (different people)"
            raise UserError(f"{path}:{k + 2}: expected {kind} for fold {fold + 1}, got {line!r}") from None
    return pairs


def photo_path(images: str | Path, photo: Photo) -> Path:
    """`images/<Name>/<Name>_<i:04d>.jpg`, LFW's file name of photo `(Name, i)`."""
    name, number = photo
    return Path(images) / name / f"{name}_{number:04d}.jpg"


def accuracy_at(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs called right when "same" means distance < `threshold`."""
    distances, same = np.asarray(distances, float), np.asarray(same, bool)
    return float(np.mean((distances < threshold) == same))


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy (`accuracy_at`) on these pairs: candidates are the midpoints between
    consecutive distinct sorted distances (plus one below the smallest and one above the largest distance); of the
    candidates that tie for the best accuracy the middle one (index len//2) is taken. Raises ValueError for no pairs."""
    distances, same = np.asarray(distances, float), np.asarray(same, bool)
    if len(distances) == 0:
        raise ValueError("no pairs to choose a threshold on")
    order = np.argsort(distances, kind="stable")
    d, s = distances[order], same[order]
    # threshold between d[k-1] and d[k] calls the first k pairs "same": right = same among them + different after
    same_before = np.concatenate([[0], np.cumsum(s)])
    different_after = np.concatenate([np.cumsum((~s)[::-1])[::-1], [0]])
    correct = same_before + different_after  # (n + 1,), k = 0..n
    candidates = np.concatenate([[d[0] - 1.0], (d[:-1] + d[1:]) / 2, [d[-1] + 1.0]])
    valid = np.concatenate([[True], d[:-1] < d[1:], [True]])  # no threshold between two equal distances
    correct = np.where(valid, correct, -1)
    ties = np.flatnonzero(correct == correct.max())
    return float(candidates[ties[len(ties) // 2]])


@dataclass
class VerificationResult:
    """Per fold (F folds): `fold_accuracy` (F,) on the held fold at `thresholds` (F,) chosen on the other folds;
    `accuracy_at_tolerance` over all pairs at the fixed `tolerance`; `distances` and `same` (N,) of every pair."""

    fold_accuracy: np.ndarray
    thresholds: np.ndarray
    tolerance: float
    accuracy_at_tolerance: float
    distances: np.ndarray
    same: np.ndarray

    @property
    def accuracy(self) -> float:
        """Mean of the fold accuracies (LFW's figure)."""
        return float(np.mean(self.fold_accuracy))

    @property
    def std(self) -> float:
        """Standard deviation of the fold accuracies, ddof=1 (0 for one fold)."""
        return float(np.std(self.fold_accuracy, ddof=1)) if len(self.fold_accuracy) > 1 else 0.0


def evaluate_distances(
    distances: Sequence[float], same: Sequence[bool], folds: Sequence[int], tolerance: float = 0.6
) -> VerificationResult:
    """LFW View 2 on precomputed pair distances (N,) with labels and 0-based folds (N,): for each fold f the
    threshold is `best_threshold` of the pairs of every other fold, and the fold's accuracy is `accuracy_at` that
    threshold on its own pairs. Raises ValueError with fewer than two folds (nothing to fit on)."""
    distances, same, folds = np.asarray(distances, float), np.asarray(same, bool), np.asarray(folds, int)
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise ValueError(f"cross-validation needs at least two folds, got {len(fold_ids)}")
    thresholds, accuracies = [], []
    for fold in fold_ids:
        held = folds == fold
        threshold = best_threshold(distances[~held], same[~held])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(distances[held], same[held], threshold))
    return VerificationResult(
        np.array(accuracies), np.array(thresholds), tolerance, accuracy_at(distances, same, tolerance), distances, same
    )


def evaluate_pairs(
    pairs: Sequence[Pair], describe: Callable[[list[Photo]], np.ndarray], tolerance: float = 0.6
) -> VerificationResult:
    """LFW View 2 with a descriptor: `describe(photos)` gives one descriptor row (len(photos), D) per distinct
    photo (each photo is described once, however many pairs use it); a pair's distance is the Euclidean
    distance between its two rows. See `evaluate_distances`."""
    photos = sorted({p for pair in pairs for p in (pair.first, pair.second)})
    descriptors = np.asarray(describe(photos), float)
    if descriptors.shape[0] != len(photos):
        raise ValueError(f"describe gave {descriptors.shape[0]} descriptors for {len(photos)} photos")
    row = {photo: k for k, photo in enumerate(photos)}
    first = descriptors[[row[p.first] for p in pairs]]
    second = descriptors[[row[p.second] for p in pairs]]
    distances = np.linalg.norm(first - second, axis=1)
    return evaluate_distances(distances, [p.same for p in pairs], [p.fold for p in pairs], tolerance)


def roc_points(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve of "same when distance < t" over every t: false-positive rate (different pairs called same)
    and true-positive rate (same pairs called same), each (K,), from (0, 0) to (1, 1)."""
    distances, same = np.asarray(distances, float), np.asarray(same, bool)
    order = np.argsort(distances, kind="stable")
    d, s = distances[order], same[order]
    last = np.concatenate([d[:-1] < d[1:], [True]])  # a threshold just above each distinct distance
    tpr = np.concatenate([[0.0], np.cumsum(s)[last] / max(1, s.sum())])
    fpr = np.concatenate([[0.0], np.cumsum(~s)[last] / max(1, (~s).sum())])
    return fpr, tpr
