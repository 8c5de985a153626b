"""Open-set identification: `python -m experiments.eval_openset [gallery=<known folder>] [probes=<labelled folder>]`.

A gallery of known people (`<Name>/*.jpg`) names each probe photo after its nearest gallery descriptor, or calls
it `unknown` when even that one is `tolerance` or farther (`faces.gallery.Gallery.identify`). On labelled probes
(`<Name>/*.jpg`; a name not in the gallery is a stranger) it measures the identification accuracy on the known
people and the rejection rate of the strangers, at the fixed `tolerance` and over a range of tolerances
(`faces.gallery.open_set_rates`). Without `probes`, the first `gallery_photos` photos (by file name) of each
person form the gallery, the rest are the known probes, and the strangers are `strangers_per_person` photos of
each person of the `strangers` folder who is not in the gallery (default: LFW's folds 1–5 photos).

Photos are described as `make eval-lfw` does (face nearest the centre, `retry_detector`, else the central box;
dlib's descriptor, mirrored-chip averaging with `flip`), with the same descriptor cache: photos eval-lfw has
described are not described again. Writes `out_dir/probes.csv`, `open_set_curve.csv`, `metrics.json` and
`figures/open_set.png`, logs them to MLflow (experiment `eval_openset`: metrics `open_set/identification_accuracy`
and `open_set/stranger_rejection` at `tolerance`, param `tolerance`); the last stdout line is one JSON object.
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
from core.tracking import log_tool_run
from experiments import log, user_errors
from faces.descriptors import FaceDescriber
from faces.gallery import DescriptorCache, Gallery, gallery_photos, open_set_rates
from faces.verification import describe_photos, pipeline_tag

# describe(files) → float32 descriptors (N, D) and how each face was found (N,)
Describe = Callable[[Sequence[Path]], tuple[np.ndarray, list[str]]]


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


def evaluate(cfg: DictConfig, describe: Describe | None = None) -> dict:
    """Run the evaluation of the module docstring; `describe` replaces the dlib pipeline (tests). Returns the
    summary printed as the last stdout line."""
    gallery_list, probes = split_photos(cfg)
    settings: dict = {}
    if describe is None:
        describe, settings = pipeline_describe(cfg)
    descriptors, how = describe([photo for _, photo in gallery_list + probes])
    descriptors = np.asarray(descriptors, np.float32)
    g = len(gallery_list)
    gallery = Gallery([n for n, _ in gallery_list], descriptors[:g], [str(p) for _, p in gallery_list])
    low, high, points = cfg.curve.low, cfg.curve.high, cfg.curve.points
    tolerances = np.unique(np.round(np.concatenate([np.linspace(low, high, points), [cfg.tolerance]]), 6))
    result = open_set_rates(gallery, descriptors[g:], [n for n, _ in probes], tolerances)
    accuracy, rejection = result.at(cfg.tolerance)
    summary = {
        "identification_accuracy": accuracy,
        "stranger_rejection": rejection,
        "tolerance": float(cfg.tolerance),
        "known_probes": int(result.known.sum()),
        "strangers": int((~result.known).sum()),
        "gallery_photos": g,
        "people": len(gallery.people),
    }

    out = Path(cfg.out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    named = result.distance < cfg.tolerance
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
    axis.axvline(cfg.tolerance, color="gray", linestyle=":", label=f"tolerance {cfg.tolerance}")
    axis.legend(fontsize=7)
    figure.savefig(out / "figures" / "open_set.png")
    figures.plt.close(figure)
    details = {
        **summary,
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
        },
        files=[out / "metrics.json", out / "probes.csv", out / "open_set_curve.csv", out / "figures"],
    )
    print(
        f"open-set identification: gallery {len(gallery.people)} people ({g} photos), {summary['known_probes']} known "
        f"probes, {summary['strangers']} strangers; at tolerance {cfg.tolerance}: identification accuracy "
        f"{100 * accuracy:.2f} %, stranger rejection {100 * rejection:.2f} % -> {out}",
        flush=True,
    )
    log.info("eval-openset: %s", details)
    print(json.dumps(summary), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval_openset")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
