"""Open-set identification measured on labelled photos, and against the gallery's size.

A gallery of known people (`<Name>/*.jpg`) names each probe photo after its best-scoring person (mean descriptor
distance to their photos, `faces.gallery.Gallery.person_scores`), or calls it `unknown` when even that score is the
threshold or more (`faces.gallery.Gallery.identify`). The threshold is the gallery's own, set for a false-positive
identification rate `target_far` (`faces.gallery.Gallery.open_set_threshold`), unless a fixed tolerance overrides
it. On labelled probes (a name not in the gallery is a stranger) `evaluate_open_set` measures the identification
accuracy on the known people and the rejection rate of the strangers (`faces.gallery.open_set_rates`: the open-set
rates of Phillips, Grother and Micheals, "Evaluation Methods in Face Recognition", Handbook of Face Recognition,
2005), at that threshold and over a range of tolerances; `size_sweep` measures both against the gallery's size,
beside the fixed one-to-one rule (the nearest photo's person, named below dlib's 0.6).

Error messages name the keys of conf/eval_openset.yaml (`gallery=`, `probes=`, `strangers=`, `gallery_photos`,
`gallery_sizes`), the settings the user gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core import figures
from core.errors import UserError
from faces.gallery import Gallery, OpenSetResult, OpenSetThreshold, gallery_photos, open_set_rates

# describe(files) → float32 descriptors (N, D) and how each face was found (N,)
Describe = Callable[[Sequence[Path]], tuple[np.ndarray, list[str]]]
Labelled = list[tuple[str, Path]]  # (person, photo) pairs
# the `size_sweep` columns logged per gallery size
SWEEP_METRICS = (
    "threshold",
    "identification_accuracy",
    "stranger_rejection",
    "identification_accuracy_fixed",
    "stranger_rejection_fixed",
    "stranger_agreement",
)


@dataclass(frozen=True)
class OpenSetPhotos:
    """The photos of one evaluation: `gallery` (the gallery's (person, photo) pairs), `probes` (labelled probes,
    known people and strangers), `folder` (every photo of the gallery folder, in file order: the gallery-size
    sweep's photos) and `labelled` (True when the probes come from a labelled probe folder, False when they are the
    gallery folder's other photos plus strangers)."""

    gallery: Labelled
    probes: Labelled
    folder: Labelled
    labelled: bool


def _people_of(folder: str | Path, key: str) -> dict[str, list[Path]]:
    """`gallery_photos(folder)`, its UserError naming `key` (e.g. "probes=") instead of "gallery="."""
    try:
        return gallery_photos(folder)
    except UserError as exc:
        raise UserError(str(exc).replace("gallery=", key, 1)) from None


def _probe_photos(
    people: dict[str, list[Path]],
    probes: str | Path | None,
    strangers: str | Path | None,
    per_person: int | None,
    strangers_per_person: int,
) -> Labelled:
    """The probes of `open_set_photos`, `people` the gallery folder's {person: photos}."""
    if probes is not None:
        return [(name, photo) for name, photos in _people_of(probes, "probes=").items() for photo in photos]
    if per_person is None:
        raise UserError("gallery_photos: null puts every photo in the gallery; leave some as probes or set probes")
    found = [(name, photo) for name, photos in people.items() for photo in photos[per_person:]]
    if strangers is not None:
        found += [
            (name, photo)
            for name, photos in _people_of(strangers, "strangers=").items()
            if name not in people
            for photo in photos[:strangers_per_person]
        ]
    return found


def open_set_photos(
    gallery: str | Path,
    probes: str | Path | None = None,
    strangers: str | Path | None = None,
    per_person: int | None = 10,
    strangers_per_person: int = 1,
) -> OpenSetPhotos:
    """The photos of one evaluation (`OpenSetPhotos`). The gallery is the first `per_person` photos (by file name;
    None: all) of each person of the folder `gallery` (`faces.gallery.gallery_photos`). The probes are every photo
    of the labelled folder `probes` (`<Name>/*.jpg`; a name not in the gallery is a stranger), or, without `probes`,
    the gallery folder's other photos followed by the first `strangers_per_person` photos of each person of the
    folder `strangers` (None: none) who is not in the gallery. Raises UserError naming the key whose folder is
    missing or empty, when `per_person` is below 1, or None without `probes`, or when the probes hold no known
    person or no stranger."""
    people = gallery_photos(gallery)
    if per_person is not None and per_person < 1:
        raise UserError(f"gallery_photos: at least 1 photo per person (or null: all), got {per_person}")
    chosen = [(name, photo) for name, photos in people.items() for photo in photos[:per_person]]
    found = _probe_photos(people, probes, strangers, per_person, strangers_per_person)
    known = sum(name in people for name, _ in found)
    if known == 0 or known == len(found):
        source = f"probes={probes}" if probes is not None else "gallery_photos/strangers"
        raise UserError(
            f"{source}: open-set evaluation needs known people and strangers among the probes, got {known} known "
            f"and {len(found) - known} stranger photo(s)"
        )
    folder = [(name, photo) for name, photos in gallery_photos(gallery).items() for photo in photos]
    return OpenSetPhotos(chosen, found, folder, probes is not None)


def decision_threshold(
    gallery: Gallery, target_far: float, tolerance: float | None = None
) -> tuple[float, str, OpenSetThreshold]:
    """(threshold used, how it was set, the gallery's calibrated `OpenSetThreshold` for `target_far`): the fixed
    `tolerance` (mean Euclidean descriptor distance) when given, else the calibrated threshold
    (`Gallery.open_set_threshold`)."""
    calibrated = gallery.open_set_threshold(target_far)
    if tolerance is not None:
        return float(tolerance), "tolerance set in the config (overrides the calibrated threshold)", calibrated
    return calibrated.threshold, calibrated.rule, calibrated


def sweep_folds(names: Sequence[str], folds: int) -> np.ndarray:
    """Fold of each gallery-folder photo (N,), int: a person's photos, in file order, go to folds 0, 1, …, folds − 1
    in turn, so each fold holds every person's photos spread over their whole folder."""
    fold, seen = np.empty(len(names), int), {}
    for k, name in enumerate(names):
        fold[k] = seen.get(name, 0) % folds
        seen[name] = seen.get(name, 0) + 1
    return fold


def nearest_photo(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row (Q,), Euclidean distance (Q,)) of the nearest row of `references` (M, D) to each row of `queries` (Q, D)."""
    if len(queries) == 0:
        return np.empty(0, int), np.empty(0)
    distances = np.linalg.norm(
        np.asarray(queries, np.float64)[:, None] - np.asarray(references, np.float64)[None], axis=2
    )
    row = distances.argmin(axis=1)
    return row, distances[np.arange(len(row)), row]


@dataclass
class _FoldSearch:
    """One fold of one gallery size in `size_sweep`: the gallery's threshold and photo count, and per probe
    whether it was decided right (known probes) or named (strangers), by the default and the fixed rule."""

    threshold: float
    photos: int
    known_right: np.ndarray
    known_right_fixed: np.ndarray
    named: np.ndarray
    named_fixed: np.ndarray


def _search_fold(
    gallery: Gallery,
    known_names: Sequence[str],
    known: np.ndarray,
    strangers: np.ndarray,
    target_far: float,
    compare_tolerance: float,
) -> _FoldSearch:
    """The known probes `known` (K, D) of people `known_names` (K,) (those not in `gallery` left out) and the
    strangers (S, D) searched in `gallery`, by its default rule and by the fixed one."""
    threshold = gallery.open_set_threshold(target_far).threshold
    known_names = np.array(list(known_names), dtype=object)
    people = np.isin(known_names, gallery.people)
    nearest = gallery.nearest(known[people])
    right = np.array([n == truth for (n, _), truth in zip(nearest, known_names[people])], bool)
    distance = np.array([d for _, d in nearest])
    stranger_distance = np.array([d for _, d in gallery.nearest(strangers)])
    # the fixed rule: the nearest photo's person, named when that photo is closer than compare_tolerance
    photo, photo_distance = nearest_photo(known[people], gallery.descriptors)
    photo_right = np.array(gallery.names, dtype=object)[photo] == known_names[people]
    return _FoldSearch(
        threshold,
        len(gallery.names),
        np.asarray(right & (distance < threshold), bool),
        np.asarray(photo_right & (photo_distance < compare_tolerance), bool),
        np.asarray(stranger_distance < threshold, bool),
        np.asarray(nearest_photo(strangers, gallery.descriptors)[1] < compare_tolerance, bool),
    )


def _first_photos(names: Sequence[str], in_gallery: np.ndarray, size: int | None) -> np.ndarray:
    """Mask (N,) of the first `size` photos (None: all) of each person among those `in_gallery` (N,)."""
    rank: dict[str, int] = {}
    chosen = np.zeros(len(names), bool)
    for k in np.flatnonzero(in_gallery):
        rank[names[k]] = rank.get(names[k], 0) + 1
        chosen[k] = size is None or rank[names[k]] <= size
    return chosen


def _pooled(decisions: Sequence[np.ndarray]) -> np.ndarray:
    """The folds' decisions (bool arrays) end to end, (sum of lengths,); empty for no fold."""
    return np.concatenate([np.empty(0, bool), *decisions])


def _sweep_row(size: int | None, searches: Sequence[_FoldSearch], reference: np.ndarray) -> dict:
    """One `size_sweep` row from the folds' searches at one size, pooled over folds; `reference`: the stranger
    decisions of the smallest size."""
    thresholds = [s.threshold for s in searches]
    named = _pooled([s.named for s in searches])
    return {
        "photos_per_person": "all" if size is None else str(size),
        "gallery_photos": float(np.mean([s.photos for s in searches])),
        "threshold": float(np.mean(thresholds)),
        "threshold_min": float(np.min(thresholds)),
        "threshold_max": float(np.max(thresholds)),
        "identification_accuracy": float(np.mean(_pooled([s.known_right for s in searches]))),
        "stranger_rejection": float(1 - named.mean()),
        "identification_accuracy_fixed": float(np.mean(_pooled([s.known_right_fixed for s in searches]))),
        "stranger_rejection_fixed": float(1 - np.mean(_pooled([s.named_fixed for s in searches]))),
        "stranger_agreement": float((named == reference).mean()),
    }


def size_sweep(
    names: Sequence[str],
    descriptors: np.ndarray,
    strangers: np.ndarray,
    sizes: Sequence[int | None],
    target_far: float,
    compare_tolerance: float,
    folds: int = 5,
    probe_names: Sequence[str] | None = None,
    probe_descriptors: np.ndarray | None = None,
) -> pd.DataFrame:
    """Open-set rates against the gallery's size, one row per entry of `sizes` (photos per person; None: all).

    `names` (N,) and `descriptors` (N, D) are the gallery folder's photos in file order, `strangers` (S, D) the
    stranger probes. Without `probe_names`, known probes come from the gallery folder by `folds`-fold cross-
    validation (`sweep_folds`): for each fold, its photos are the known probes and the gallery is the first `size`
    photos of each person among the other folds (all of them for None); every photo is a known probe once per
    size, and every stranger is searched against each fold's gallery. With `probe_names`/`probe_descriptors`
    (labelled known probes, (K,) and (K, D)), the gallery is the first `size` photos of each person and there is
    one fold.

    Columns: `photos_per_person` (the size, "all" for None), `gallery_photos` (mean over folds), `threshold`
    (the default rule's `Gallery.open_set_threshold(target_far)`, mean; `threshold_min`, `threshold_max` over
    folds), `identification_accuracy` and `stranger_rejection` at it (pooled over folds), `_fixed` the same for
    the fixed one-to-one rule (the nearest gallery photo's person, named when its Euclidean distance is below
    `compare_tolerance`), and `stranger_agreement`: the fraction of stranger searches whose decision (named or
    not, default rule) is the one the smallest size gives. Raises ValueError when a size is below 1."""
    names = list(names)
    descriptors, strangers = np.asarray(descriptors, np.float32), np.asarray(strangers, np.float32)
    if any(size is not None and size < 1 for size in sizes):
        raise ValueError(f"gallery_sizes: each at least 1 photo per person (or null: all), got {list(sizes)}")
    if probe_names is None:
        fold_of = sweep_folds(names, folds)
        splits = [(fold_of != f, fold_of == f) for f in range(folds)]
    else:
        splits = [(np.ones(len(names), bool), None)]
    rows, reference = [], None
    for size in sizes:
        searches = []
        for in_gallery, held_out in splits:
            chosen = _first_photos(names, in_gallery, size)
            if not chosen.any():  # every photo of this fold's people is held out: nothing to search
                continue
            gallery = Gallery([names[k] for k in np.flatnonzero(chosen)], descriptors[chosen])
            if held_out is None:
                known_names, known = list(probe_names), np.asarray(probe_descriptors, np.float32)
            else:
                known_names, known = [names[k] for k in np.flatnonzero(held_out)], descriptors[held_out]
            searches.append(_search_fold(gallery, known_names, known, strangers, target_far, compare_tolerance))
        named = _pooled([s.named for s in searches])
        reference = named if reference is None else reference
        rows.append(_sweep_row(size, searches, reference))
    return pd.DataFrame(rows)


def sweep_table(sweep: pd.DataFrame, target_far: float, compare_tolerance: float) -> str:
    """`size_sweep`'s table as printed text: a header line, then one line per gallery size (rates in %)."""
    lines = [
        f"gallery size | threshold (FPIR {target_far:g}) | known identified | strangers rejected | "
        f"known, nearest photo < {compare_tolerance:g} | strangers, nearest photo < {compare_tolerance:g} | "
        "same stranger decision as smallest",
    ]
    for r in sweep.itertuples():
        lines.append(
            f"{r.photos_per_person:>4} a person ({r.gallery_photos:.0f} photos) | {r.threshold:.4f} "
            f"[{r.threshold_min:.4f}, {r.threshold_max:.4f}] | {100 * r.identification_accuracy:.2f} % | "
            f"{100 * r.stranger_rejection:.2f} % | {100 * r.identification_accuracy_fixed:.2f} % | "
            f"{100 * r.stranger_rejection_fixed:.2f} % | {100 * r.stranger_agreement:.2f} %"
        )
    return "\n".join(lines)


def size_figure(table: pd.DataFrame, target_far: float, compare_tolerance: float, people: int):
    """Both rates of a `size_sweep` table against the gallery photos per person (the mean count for "all"), for
    the default rule and for the fixed tolerance: a matplotlib figure (`core.figures.metric_curves`)."""
    x = table["gallery_photos"] / people
    figure = figures.metric_curves(
        {
            f"known identified, threshold for FPIR {target_far:g}": (x, table["identification_accuracy"]),
            f"strangers rejected, threshold for FPIR {target_far:g}": (x, table["stranger_rejection"]),
            f"known identified, nearest photo < {compare_tolerance:g}": (x, table["identification_accuracy_fixed"]),
            f"strangers rejected, nearest photo < {compare_tolerance:g}": (x, table["stranger_rejection_fixed"]),
        },
        f"Open-set identification against gallery size ({people} people)",
        "gallery photos per person",
        "fraction of probes",
    )
    axis = figure.axes[0]
    for k, line in enumerate(axis.get_lines()):  # one colour per rate, dashed for the fixed rule
        line.set_color(f"C{k % 2}")
        line.set_linestyle("-" if k < 2 else "--")
    axis.legend(fontsize=7)
    axis.set_xscale("log")
    axis.set_xticks(x, [f"{v:.0f}" if p != "all" else f"all ({v:.0f})" for v, p in zip(x, table["photos_per_person"])])
    axis.minorticks_off()
    return figure


@dataclass
class OpenSetEvaluation:
    """The outcome of `evaluate_open_set`: the `gallery`, the labelled `probes`, their `result` (`OpenSetResult`
    over the curve's tolerances), the `threshold` used (mean Euclidean descriptor distance) and its `rule`, the
    gallery's `calibrated` threshold, the fixed `tolerance` given (None: the calibrated one is used), the rates at
    the threshold (`identification_accuracy`, `stranger_rejection`, fractions), the gallery-size `sweep`
    (`size_sweep`'s table), `how_found` (how each gallery photo's, then each probe's, face was found) and
    `people` (the people of the gallery folder)."""

    gallery: Gallery
    probes: Labelled
    result: OpenSetResult
    threshold: float
    rule: str
    calibrated: OpenSetThreshold
    tolerance: float | None
    identification_accuracy: float
    stranger_rejection: float
    sweep: pd.DataFrame
    how_found: list[str]
    people: int

    def summary(self) -> dict:
        """The rates at the threshold, the threshold (rounded to 6 decimals) and the counts: the tool's JSON line."""
        return {
            "identification_accuracy": self.identification_accuracy,
            "stranger_rejection": self.stranger_rejection,
            "tolerance": None if self.tolerance is None else float(self.tolerance),
            "threshold": round(self.threshold, 6),
            "target_far": self.calibrated.target_far,
            "known_probes": int(self.result.known.sum()),
            "strangers": int((~self.result.known).sum()),
            "gallery_photos": len(self.gallery.names),
            "people": len(self.gallery.people),
        }

    def details(self, **extra) -> dict:
        """`summary` with how the threshold was set, the sweep's rows, the count of each way a face was found, then
        `extra` (e.g. the folders and pipeline settings): the content of metrics.json."""
        return {
            **self.summary(),
            "threshold_rule": self.rule,
            "calibrated_threshold": self.calibrated.threshold,
            "calibrated_rule": self.calibrated.rule,
            "gallery_size": self.sweep.to_dict(orient="records"),
            "faces_found": {str(k): int(v) for k, v in pd.Series(self.how_found).value_counts().items()},
            **extra,
        }

    def probe_table(self) -> pd.DataFrame:
        """One row per probe: photo, true person, kind (known/stranger), nearest person and its score, the name
        given at the threshold (`unknown` when not named), how its face was found and whether it was decided right."""
        result = self.result
        named = result.distance < self.threshold
        table = pd.DataFrame(
            {
                "photo": [str(p) for _, p in self.probes],
                "person": result.names,
                "kind": np.where(result.known, "known", "stranger"),
                "nearest": result.nearest,
                "distance": np.round(result.distance, 5),
                "named": np.where(named, result.nearest, "unknown"),
                "face": self.how_found[len(self.gallery.names) :],
            }
        )
        table["correct"] = np.where(result.known, table["named"] == table["person"], table["named"] == "unknown")
        return table

    def curve_table(self) -> pd.DataFrame:
        """Both rates (fractions) at each of the curve's tolerances."""
        return pd.DataFrame(
            {
                "tolerance": self.result.tolerances,
                "identification_accuracy": self.result.identification_accuracy,
                "stranger_rejection": self.result.stranger_rejection,
            }
        )

    def curve_figure(self):
        """Both rates against the tolerance, the threshold marked: a matplotlib figure."""
        result, summary = self.result, self.summary()
        figure = figures.metric_curves(
            {
                f"identification accuracy, {summary['known_probes']} known probes": (
                    result.tolerances,
                    result.identification_accuracy,
                ),
                f"stranger rejection, {summary['strangers']} strangers": (result.tolerances, result.stranger_rejection),
            },
            f"Open-set identification, gallery of {len(self.gallery.people)} people ({len(self.gallery.names)} photos)",
            "tolerance (Euclidean descriptor distance)",
            "fraction of probes",
        )
        axis = figure.axes[0]
        axis.axvline(self.threshold, color="gray", linestyle=":", label=f"threshold {self.threshold:.3f}")
        axis.legend(fontsize=7)
        return figure

    def write(self, out: str | Path, details: dict, compare_tolerance: float) -> list[Path]:
        """Write `out/probes.csv`, `open_set_curve.csv`, `gallery_size.csv`, `figures/gallery_size.png` (the fixed
        rule at `compare_tolerance`), `figures/open_set.png` and `metrics.json` (`details`); returns the files and
        the figures folder to log."""
        out = Path(out)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        self.probe_table().to_csv(out / "probes.csv", index=False)
        self.curve_table().to_csv(out / "open_set_curve.csv", index=False)
        self.sweep.to_csv(out / "gallery_size.csv", index=False)
        for name, figure in (
            ("gallery_size.png", size_figure(self.sweep, self.calibrated.target_far, compare_tolerance, self.people)),
            ("open_set.png", self.curve_figure()),
        ):
            figure.savefig(out / "figures" / name)
            figures.plt.close(figure)
        (out / "metrics.json").write_text(json.dumps(details, indent=2))
        return [out / name for name in ("metrics.json", "probes.csv", "open_set_curve.csv", "gallery_size.csv")] + [
            out / "figures"
        ]

    def metrics(self) -> dict[str, float]:
        """The run's metrics: `open_set/…` at the threshold and `gallery_size/<photos per person>/<column>` for
        each sweep row and each of SWEEP_METRICS."""
        summary = self.summary()
        return {
            "open_set/identification_accuracy": self.identification_accuracy,
            "open_set/stranger_rejection": self.stranger_rejection,
            "open_set/known_probes": summary["known_probes"],
            "open_set/strangers": summary["strangers"],
            "open_set/gallery_photos": summary["gallery_photos"],
            "open_set/threshold": self.threshold,
            "open_set/target_far": self.calibrated.target_far,
            **{
                f"gallery_size/{r.photos_per_person}/{column}": getattr(r, column)
                for r in self.sweep.itertuples()
                for column in SWEEP_METRICS
            },
        }

    def headline(self) -> str:
        """The one-line result: gallery, probe counts, threshold and how it was set, both rates in %."""
        summary = self.summary()
        return (
            f"open-set identification: gallery {summary['people']} people ({summary['gallery_photos']} photos), "
            f"{summary['known_probes']} known probes, {summary['strangers']} strangers; threshold "
            f"{self.threshold:.4f} ({self.rule}; set for a false-positive identification rate of "
            f"{self.calibrated.target_far:g}): identification accuracy {100 * self.identification_accuracy:.2f} %, "
            f"stranger rejection {100 * self.stranger_rejection:.2f} %"
        )


def _describe_once(photos: OpenSetPhotos, describe: Describe) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`describe` called once on every distinct photo (the gallery folder's, then the gallery's and the probes' not
    among them): (descriptors of the gallery's then the probes' photos (G + P, D), of the gallery folder's photos
    (N, D), both float32; how each gallery photo's then probe's face was found (G + P,))."""
    order = list(dict.fromkeys(photo for _, photo in photos.folder + photos.gallery + photos.probes))
    described, how_found = describe(order)
    row = {photo: k for k, photo in enumerate(order)}
    described = np.asarray(described, np.float32)
    labelled = [row[photo] for _, photo in photos.gallery + photos.probes]
    return described[labelled], described[[row[photo] for _, photo in photos.folder]], [how_found[k] for k in labelled]


def evaluate_open_set(
    photos: OpenSetPhotos,
    describe: Describe,
    target_far: float,
    tolerance: float | None = None,
    curve: tuple[float, float, int] = (0.3, 0.9, 61),
    gallery_sizes: Sequence[int | None] = (1, 5, 10, None),
    compare_tolerance: float = 0.6,
    folds: int = 5,
) -> OpenSetEvaluation:
    """The open-set evaluation of `photos` (module docstring). `describe` is called once, on every distinct photo
    (the gallery folder's, then the gallery's and the probes' not among them). The threshold is
    `decision_threshold(gallery, target_far, tolerance)`; the rates are measured at it and at `curve`'s
    (low, high, points) evenly spaced tolerances (plus the threshold); the gallery-size sweep is `size_sweep` at
    `gallery_sizes` with `compare_tolerance` and `folds` (the labelled probes as its known probes when
    `photos.labelled`). Raises ValueError from `size_sweep` for a size below 1."""
    descriptors, folder_descriptors, how = _describe_once(photos, describe)
    g = len(photos.gallery)
    gallery = Gallery([n for n, _ in photos.gallery], descriptors[:g], [str(p) for _, p in photos.gallery])
    threshold, rule, calibrated = decision_threshold(gallery, target_far, tolerance)
    low, high, points = curve
    tolerances = np.unique(np.round(np.concatenate([np.linspace(low, high, points), [threshold]]), 6))
    result = open_set_rates(gallery, descriptors[g:], [n for n, _ in photos.probes], tolerances)
    accuracy, rejection = result.at(threshold)
    people = set(n for n, _ in photos.folder)
    strangers = np.array([n not in people for n, _ in photos.probes], bool)
    known_probes = [k for k, (n, _) in enumerate(photos.probes) if n in people and photos.labelled]
    sweep = size_sweep(
        [n for n, _ in photos.folder],
        folder_descriptors,
        descriptors[g:][strangers],
        gallery_sizes,
        calibrated.target_far,
        compare_tolerance,
        folds,
        [photos.probes[k][0] for k in known_probes] if photos.labelled else None,
        descriptors[g:][known_probes] if photos.labelled else None,
    )
    return OpenSetEvaluation(
        gallery,
        photos.probes,
        result,
        threshold,
        rule,
        calibrated,
        tolerance,
        accuracy,
        rejection,
        sweep,
        how,
        len(people),
    )
