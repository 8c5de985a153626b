"""Face verification on LFW's standard protocol: `python -m experiments.eval_lfw [pairs=<folder>]`.

Reads `pairs.txt` (see `faces.verification`), describes each distinct photo once (its face nearest the centre,
found by `detector`, else by `retry_detector`, else the central box; 68-point alignment (`landmarks`); dlib's 128-d descriptor,
averaged with the mirrored chip's when `flip`) in `workers` processes, keeping the descriptors in `cache_file`
(per photo file and pipeline settings: a re-run with another tolerance is instant), and scores every pair by
Euclidean distance. Per fold the threshold is chosen on the other
folds; prints mean ± std accuracy and the accuracy at the fixed `tolerance`, draws the ROC curve, writes
`out_dir/metrics.json`, `pairs.csv` and `roc.png`, and logs them to MLflow (experiment `eval_lfw`). The last stdout
line is one JSON object `{"accuracy", "std", "accuracy_at_tolerance", "pairs"}`.
"""

from __future__ import annotations

import json
import resource
import time
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
from faces.gallery import DescriptorCache
from faces.verification import (
    FOUND,
    describe_photos,
    evaluate_pairs,
    photo_path,
    pipeline_tag,
    read_pairs,
    roc_points,
)


def evaluate(cfg: DictConfig) -> dict:
    folder = Path(cfg.pairs)
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
    detector = instantiate(cfg.detector)
    retry = instantiate(cfg.retry_detector) if cfg.retry_detector else None
    describer = FaceDescriber(num_jitters=cfg.num_jitters, flip=cfg.flip, landmarks=cfg.landmarks)
    cache = DescriptorCache(cfg.cache_file, pipeline_tag(detector, describer, retry))
    found: dict = {}

    def describe(photos):
        files = [photo_path(folder / "images", p) for p in photos]
        cached = sum(cache.get_labelled(f) is not None for f in files)
        start, cpu = time.perf_counter(), cpu_seconds()
        descriptors, how = describe_photos(files, detector, describer, retry, cfg.workers, cfg.progress, cache)
        found.update(
            seconds=time.perf_counter() - start,
            cpu_seconds=cpu_seconds() - cpu,
            cached=cached,
            how=dict(zip(photos, how)),
        )
        return descriptors

    result = evaluate_pairs(pairs, describe, cfg.tolerance)
    how = pd.Series(found["how"]).value_counts()
    images = len(found["how"])
    described = images - found["cached"]
    speed = {"images_per_s": described / found["seconds"]} if described else {}  # none described: no speed
    summary = {
        "accuracy": result.accuracy,
        "std": result.std,
        "accuracy_at_tolerance": result.accuracy_at_tolerance,
        "pairs": len(pairs),
    }
    details = {
        **summary,
        "folds": len(result.fold_accuracy),
        "fold_accuracy": result.fold_accuracy.tolist(),
        "thresholds": result.thresholds.tolist(),
        "tolerance": cfg.tolerance,
        "images": images,
        "images_from_cache": found["cached"],
        **speed,
        "seconds": found["seconds"],
        # CPU time of this process and its workers over the wall time: ~`workers` when every worker had a core
        "cores_busy": found["cpu_seconds"] / found["seconds"] if found["seconds"] > 0 else 0.0,
        "faces_found": {k: int(v) for k, v in how.items()},
        "pairs_folder": str(folder),
        "detector": repr(detector),
        "retry_detector": repr(retry),
        "describer": repr(describer),
        "workers": cfg.workers,
    }

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(details, indent=2))
    pd.DataFrame(
        {
            "fold": [p.fold + 1 for p in pairs],
            "first": [f"{p.first[0]}_{p.first[1]:04d}" for p in pairs],
            "second": [f"{p.second[0]}_{p.second[1]:04d}" for p in pairs],
            "same": result.same,
            "distance": np.round(result.distances, 5),
            "first_face": [found["how"][p.first] for p in pairs],
            "second_face": [found["how"][p.second] for p in pairs],
        }
    ).to_csv(out / "pairs.csv", index=False)
    fpr, tpr = roc_points(result.distances, result.same)
    at = result.distances < cfg.tolerance
    points = {f"tolerance {cfg.tolerance}": (float(at[~result.same].mean()), float(at[result.same].mean()))}
    figure = figures.roc_curve(
        fpr,
        tpr,
        f"LFW verification ({len(pairs)} pairs, {len(result.fold_accuracy)} folds): "
        f"{100 * result.accuracy:.2f} % ± {100 * result.std:.2f}",
        points,
    )
    figure.savefig(out / "roc.png")
    figures.plt.close(figure)

    log_tool_run(
        cfg,
        folder.name,
        params={
            "pairs": str(folder),
            "detector": repr(detector)[:500],
            "retry_detector": repr(retry)[:500],
            "num_jitters": cfg.num_jitters,
            "flip": cfg.flip,
            "landmarks": cfg.landmarks,
            "tolerance": cfg.tolerance,
            "workers": cfg.workers,
        },
        metrics={
            **summary,
            "images": images,
            **speed,
            "faces_not_found": images - int(how.get(FOUND, 0)),
            **{f"fold_accuracy/{k + 1}": a for k, a in enumerate(result.fold_accuracy)},
            **{f"fold_threshold/{k + 1}": t for k, t in enumerate(result.thresholds)},
        },
        files=[out / name for name in ("metrics.json", "pairs.csv", "roc.png")],
    )
    rate = (
        f"{described} described at {speed['images_per_s']:.2f} images/s by {cfg.workers} worker(s), "
        f"{details['cores_busy']:.1f} cores busy; "
        if described
        else ""
    )
    print(
        f"LFW verification, {len(pairs)} pairs in {len(result.fold_accuracy)} folds, {images} photos "
        f"({rate}{found['cached']} from the cache {cache.path}); faces: "
        + ", ".join(f"{k} {v}" for k, v in how.items()),
        flush=True,
    )
    print(
        f"accuracy {100 * result.accuracy:.2f} % ± {100 * result.std:.2f} (k-fold thresholds "
        f"{result.thresholds.min():.3f}–{result.thresholds.max():.3f}); at tolerance {cfg.tolerance}: "
        f"{100 * result.accuracy_at_tolerance:.2f} % -> {out}",
        flush=True,
    )
    log.info("eval-lfw: %s", details)
    print(json.dumps(summary), flush=True)
    return summary


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished (joined) child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval_lfw")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
