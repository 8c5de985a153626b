"""Open-set identification: `python -m experiments.eval_openset [gallery=<known folder>] [probes=<labelled folder>]`.

A gallery of known people (`<Name>/*.jpg`) names each probe photo after its best-scoring person (mean descriptor
distance to their photos, `faces.gallery.Gallery.person_scores`), or calls it `unknown` when even that score is the
threshold or more (`faces.gallery.Gallery.identify`). The threshold is by
default (`tolerance: null`) the gallery's own, set for the false-positive identification rate `target_far`
(`faces.gallery.Gallery.open_set_threshold`); a number in `tolerance` overrides it. On labelled probes
(`<Name>/*.jpg`; a name not in the gallery is a stranger) it measures the identification accuracy on the known
people and the rejection rate of the strangers, at that threshold and over a range of tolerances
(`faces.gallery.open_set_rates`). Without `probes`, the first `gallery_photos` photos (by file name) of each
person form the gallery, the rest are the known probes, and the strangers are `strangers_per_person` photos of
each person of the `strangers` folder who is not in the gallery (default: LFW's folds 1–5 photos).

Against the gallery's size (`gallery_sizes`: photos per person, null: all) it measures both rates with the
default rule and with the fixed `compare_tolerance` (dlib's 0.6), see `size_sweep`.

Photos are described as `make eval-lfw` does (face nearest the centre, `retry_detector`, else the central box;
dlib's descriptor, mirrored-chip averaging with `flip`), with the same descriptor cache: photos eval-lfw has
described are not described again. Writes `out_dir/probes.csv`, `open_set_curve.csv`, `gallery_size.csv`,
`metrics.json`, `figures/open_set.png` and `figures/gallery_size.png`, logs them to MLflow (experiment
`eval_openset`: metrics `open_set/identification_accuracy` and `open_set/stranger_rejection` at the threshold,
`open_set/threshold` and `open_set/target_far`, `gallery_size/<photos>/…` per size; params `tolerance`,
`threshold`, `target_far`, `threshold_rule`); the last stdout line is one JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from core import figures
from core.errors import UserError
from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from faces.descriptors import FaceDescriber
from faces.gallery import DescriptorCache, Gallery, OpenSetThreshold, gallery_photos, open_set_rates
from faces.verification import describe_photos, pipeline_tag

# describe(files) → float32 descriptors (N, D) and how each face was found (N,)
Describe = Callable[[Sequence[Path]], tuple[np.ndarray, list[str]]]
SWEEP_METRICS = (
    "threshold",
    "identification_accuracy",
    "stranger_rejection",
    "identification_accuracy_fixed",
    "stranger_rejection_fixed",
    "stranger_agreement",
)


def sweep_table(sweep: pd.DataFrame, target_far: float, compare_tolerance: float) -> str:
    """`size_sweep`'s table as printed text: one line per gallery size."""
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


def split_photos(cfg: DictConfig) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(gallery, probes) as (person, photo) lists, see the module docstring. Raises UserError naming the key whose
    folder is missing or empty, or when the probes hold no known person or no stranger."""
    people = gallery_photos(cfg.gallery)
    keep = cfg.gallery_photos
    if keep is not None and keep < 1:
        raise UserError(f"gallery_photos: at least 1 photo per person (or null: all), got {keep}")
    gallery = [(name, photo) for name, photos in people.items() for photo in photos[:keep]]
    if cfg.probes is not None:
        try:
            labelled = gallery_photos(cfg.probes)
        except UserError as exc:
            raise UserError(str(exc).replace("gallery=", "probes=", 1)) from None
        probes = [(name, photo) for name, photos in labelled.items() for photo in photos]
    else:
        if keep is None:
            raise UserError("gallery_photos: null puts every photo in the gallery; leave some as probes or set probes")
        probes = [(name, photo) for name, photos in people.items() for photo in photos[keep:]]
        if cfg.strangers is not None:
            try:
                others = gallery_photos(cfg.strangers)
            except UserError as exc:
                raise UserError(str(exc).replace("gallery=", "strangers=", 1)) from None
            probes += [
                (name, photo)
                for name, photos in others.items()
                if name not in people
                for photo in photos[: cfg.strangers_per_person]
            ]
    known = sum(name in people for name, _ in probes)
    if known == 0 or known == len(probes):
        source = f"probes={cfg.probes}" if cfg.probes is not None else "gallery_photos/strangers"
        raise UserError(
            f"{source}: open-set evaluation needs known people and strangers among the probes, got {known} known "
            f"and {len(probes) - known} stranger photo(s)"
        )
    return gallery, probes


def pipeline_describe(cfg: DictConfig) -> tuple[Describe, dict]:
    """The photo describer of `make eval-lfw` (detector, retry, describer and cache from `cfg`) and its settings."""
    detector = instantiate(cfg.detector)
    retry = instantiate(cfg.retry_detector) if cfg.retry_detector else None
    describer = FaceDescriber(num_jitters=cfg.num_jitters, flip=cfg.flip, landmarks=cfg.landmarks)
    cache = DescriptorCache(cfg.cache_file, pipeline_tag(detector, describer, retry))

    def describe(files: Sequence[Path]) -> tuple[np.ndarray, list[str]]:
        return describe_photos(files, detector, describer, retry, cfg.workers, cfg.progress, cache)

    settings = {"detector": repr(detector)[:500], "retry_detector": repr(retry)[:500], "describer": repr(describer)}
    return describe, settings


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
    (labelled known probes), the gallery is the first `size` photos of each person and there is one fold.

    Columns: `photos_per_person` (the size, "all" for None), `gallery_photos` (mean over folds), `threshold`
    (the default rule's `Gallery.open_set_threshold(target_far)`, mean; `threshold_min`, `threshold_max` over
    folds), `identification_accuracy` and `stranger_rejection` at it (pooled over folds), `_fixed` the same for
    the fixed one-to-one rule (the nearest gallery photo's person, named when its distance is below
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
        thresholds, photos, known_right, known_right_fixed, named, named_fixed = [], [], [], [], [], []
        for in_gallery, held_out in splits:
            rank = {}
            chosen = np.zeros(len(names), bool)
            for k in np.flatnonzero(in_gallery):
                rank[names[k]] = rank.get(names[k], 0) + 1
                chosen[k] = size is None or rank[names[k]] <= size
            if not chosen.any():  # every photo of this fold's people is held out: nothing to search
                continue
            gallery = Gallery([names[k] for k in np.flatnonzero(chosen)], descriptors[chosen])
            threshold = gallery.open_set_threshold(target_far).threshold
            if held_out is None:
                known_names, known = list(probe_names), np.asarray(probe_descriptors, np.float32)
            else:
                known_names, known = [names[k] for k in np.flatnonzero(held_out)], descriptors[held_out]
            known_names = np.array(known_names, dtype=object)
            people = np.isin(known_names, gallery.people)
            nearest = gallery.nearest(known[people])
            right = np.array([n == truth for (n, _), truth in zip(nearest, known_names[people])], bool)
            distance = np.array([d for _, d in nearest])
            stranger_distance = np.array([d for _, d in gallery.nearest(strangers)])
            thresholds.append(threshold)
            photos.append(len(gallery.names))
            known_right += list(right & (distance < threshold))
            # the former rule: the nearest photo's person, named when that photo is closer than compare_tolerance
            photo, photo_distance = nearest_photo(known[people], gallery.descriptors)
            photo_right = np.array(gallery.names, dtype=object)[photo] == known_names[people]
            known_right_fixed += list(photo_right & (photo_distance < compare_tolerance))
            named += list(stranger_distance < threshold)
            named_fixed += list(nearest_photo(strangers, gallery.descriptors)[1] < compare_tolerance)
        named = np.array(named, bool)
        reference = named if reference is None else reference
        rows.append(
            {
                "photos_per_person": "all" if size is None else str(size),
                "gallery_photos": float(np.mean(photos)),
                "threshold": float(np.mean(thresholds)),
                "threshold_min": float(np.min(thresholds)),
                "threshold_max": float(np.max(thresholds)),
                "identification_accuracy": float(np.mean(known_right)),
                "stranger_rejection": float(1 - named.mean()),
                "identification_accuracy_fixed": float(np.mean(known_right_fixed)),
                "stranger_rejection_fixed": float(1 - np.mean(named_fixed)),
                "stranger_agreement": float((named == reference).mean()),
            }
        )
    return pd.DataFrame(rows)


def size_figure(table: pd.DataFrame, target_far: float, compare_tolerance: float, people: int):
    """Both rates against the gallery photos per person (the mean count for "all"), for the default rule and for
    the fixed tolerance: a matplotlib figure (`core.figures.metric_curves`)."""
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


def threshold_of(cfg: DictConfig, gallery: Gallery) -> tuple[float, str, OpenSetThreshold]:
    """(threshold used, how it was set, the gallery's calibrated `OpenSetThreshold` for `cfg.target_far`):
    `cfg.tolerance` when set, else the calibrated one."""
    calibrated = gallery.open_set_threshold(cfg.target_far)
    if cfg.tolerance is not None:
        return float(cfg.tolerance), "tolerance set in the config (overrides the calibrated threshold)", calibrated
    return calibrated.threshold, calibrated.rule, calibrated


def evaluate(cfg: DictConfig, describe: Describe | None = None) -> dict:
    """Run the evaluation of the module docstring; `describe` replaces the dlib pipeline (tests). Returns the
    summary printed as the last stdout line."""
    gallery_list, probes = split_photos(cfg)
    everyone = [(name, photo) for name, photos in gallery_photos(cfg.gallery).items() for photo in photos]
    settings: dict = {}
    if describe is None:
        describe, settings = pipeline_describe(cfg)
    order = list(dict.fromkeys(photo for _, photo in everyone + gallery_list + probes))  # each photo once
    described, how_found = describe(order)
    row = {photo: k for k, photo in enumerate(order)}
    described = np.asarray(described, np.float32)
    descriptors = described[[row[photo] for _, photo in gallery_list + probes]]
    how = [how_found[row[photo]] for _, photo in gallery_list + probes]
    g = len(gallery_list)
    gallery = Gallery([n for n, _ in gallery_list], descriptors[:g], [str(p) for _, p in gallery_list])
    threshold, rule, calibrated = threshold_of(cfg, gallery)
    low, high, points = cfg.curve.low, cfg.curve.high, cfg.curve.points
    tolerances = np.unique(np.round(np.concatenate([np.linspace(low, high, points), [threshold]]), 6))
    result = open_set_rates(gallery, descriptors[g:], [n for n, _ in probes], tolerances)
    accuracy, rejection = result.at(threshold)

    people = set(n for n, _ in everyone)
    strangers = np.array([n not in people for n, _ in probes], bool)
    known_probes = [k for k, (n, _) in enumerate(probes) if n in people and cfg.probes is not None]
    sweep = size_sweep(
        [n for n, _ in everyone],
        described[[row[photo] for _, photo in everyone]],
        descriptors[g:][strangers],
        [None if s is None else int(s) for s in cfg.gallery_sizes],
        calibrated.target_far,
        cfg.compare_tolerance,
        cfg.folds,
        [probes[k][0] for k in known_probes] if cfg.probes is not None else None,
        descriptors[g:][known_probes] if cfg.probes is not None else None,
    )
    summary = {
        "identification_accuracy": accuracy,
        "stranger_rejection": rejection,
        "tolerance": None if cfg.tolerance is None else float(cfg.tolerance),
        "threshold": round(threshold, 6),
        "target_far": calibrated.target_far,
        "known_probes": int(result.known.sum()),
        "strangers": int((~result.known).sum()),
        "gallery_photos": g,
        "people": len(gallery.people),
    }

    out = Path(cfg.out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    named = result.distance < threshold
    table = pd.DataFrame(
        {
            "photo": [str(p) for _, p in probes],
            "person": result.names,
            "kind": np.where(result.known, "known", "stranger"),
            "nearest": result.nearest,
            "distance": np.round(result.distance, 5),
            "named": np.where(named, result.nearest, "unknown"),
            "face": how[g:],
        }
    )
    table["correct"] = np.where(result.known, table["named"] == table["person"], table["named"] == "unknown")
    table.to_csv(out / "probes.csv", index=False)
    curve = pd.DataFrame(
        {
            "tolerance": result.tolerances,
            "identification_accuracy": result.identification_accuracy,
            "stranger_rejection": result.stranger_rejection,
        }
    )
    curve.to_csv(out / "open_set_curve.csv", index=False)
    sweep.to_csv(out / "gallery_size.csv", index=False)
    figure = size_figure(sweep, calibrated.target_far, cfg.compare_tolerance, len(people))
    figure.savefig(out / "figures" / "gallery_size.png")
    figures.plt.close(figure)
    figure = figures.metric_curves(
        {
            f"identification accuracy, {summary['known_probes']} known probes": (
                result.tolerances,
                result.identification_accuracy,
            ),
            f"stranger rejection, {summary['strangers']} strangers": (result.tolerances, result.stranger_rejection),
        },
        f"Open-set identification, gallery of {len(gallery.people)} people ({g} photos)",
        "tolerance (Euclidean descriptor distance)",
        "fraction of probes",
    )
    axis = figure.axes[0]
    axis.axvline(threshold, color="gray", linestyle=":", label=f"threshold {threshold:.3f}")
    axis.legend(fontsize=7)
    figure.savefig(out / "figures" / "open_set.png")
    figures.plt.close(figure)
    details = {
        **summary,
        "threshold_rule": rule,
        "calibrated_threshold": calibrated.threshold,
        "calibrated_rule": calibrated.rule,
        "gallery_size": sweep.to_dict(orient="records"),
        "faces_found": {str(k): int(v) for k, v in pd.Series(how).value_counts().items()},
        "gallery": str(cfg.gallery),
        "probes": str(cfg.probes),
        "strangers_folder": str(cfg.strangers),
        **settings,
    }
    (out / "metrics.json").write_text(json.dumps(details, indent=2))

    log_tool_run(
        cfg,
        Path(cfg.gallery).name,
        params={
            "tolerance": cfg.tolerance,
            "threshold": threshold,
            "target_far": calibrated.target_far,
            "threshold_rule": rule[:500],
            "compare_tolerance": cfg.compare_tolerance,
            "folds": cfg.folds,
            "gallery": str(cfg.gallery),
            "probes": str(cfg.probes),
            "strangers": str(cfg.strangers),
            "gallery_photos": cfg.gallery_photos,
            "strangers_per_person": cfg.strangers_per_person,
            "num_jitters": cfg.num_jitters,
            "flip": cfg.flip,
            "landmarks": cfg.landmarks,
            **settings,
        },
        metrics={
            "open_set/identification_accuracy": accuracy,
            "open_set/stranger_rejection": rejection,
            "open_set/known_probes": summary["known_probes"],
            "open_set/strangers": summary["strangers"],
            "open_set/gallery_photos": g,
            "open_set/threshold": threshold,
            "open_set/target_far": calibrated.target_far,
            **{
                f"gallery_size/{r.photos_per_person}/{column}": getattr(r, column)
                for r in sweep.itertuples()
                for column in SWEEP_METRICS
            },
        },
        files=[
            out / "metrics.json",
            out / "probes.csv",
            out / "open_set_curve.csv",
            out / "gallery_size.csv",
            out / "figures",
        ],
    )
    print(
        f"open-set identification: gallery {len(gallery.people)} people ({g} photos), {summary['known_probes']} known "
        f"probes, {summary['strangers']} strangers; threshold {threshold:.4f} ({rule}; set for a false-positive "
        f"identification rate of {calibrated.target_far:g}): identification accuracy {100 * accuracy:.2f} %, "
        f"stranger rejection {100 * rejection:.2f} % -> {out}",
        flush=True,
    )
    print(sweep_table(sweep, calibrated.target_far, cfg.compare_tolerance), flush=True)
    log.info("eval-openset: %s", details)
    print(json.dumps(summary), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval_openset")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
