"""Open-set identification: `python -m experiments.eval_openset [gallery=<known folder>] [probes=<labelled folder>]`.

A gallery of known people (`<Name>/*.jpg`) names each probe photo after its best-scoring person (mean descriptor
distance to their photos, `faces.gallery.Gallery.person_scores`), or calls it `unknown` when even that score is the
threshold or more (`faces.gallery.Gallery.identify`). The threshold is by
default (`tolerance: null`) the gallery's own, set for the false-positive identification rate `target_far`
(`faces.gallery.Gallery.open_set_threshold`); a number in `tolerance` overrides it. On labelled probes
(`<Name>/*.jpg`; a name not in the gallery is a stranger) it measures the identification accuracy on the known
people and the rejection rate of the strangers, at that threshold and over a range of tolerances
(`faces.gallery.open_set_rates`; the evaluation is `faces.openset`). Without `probes`, the first `gallery_photos` photos (by file name) of each
person form the gallery, the rest are the known probes, and the strangers are `strangers_per_person` photos of
each person of the `strangers` folder who is not in the gallery (default: LFW's folds 1–5 photos).

Against the gallery's size (`gallery_sizes`: photos per person, null: all) it measures both rates with the
default rule and with the fixed `compare_tolerance` (dlib's 0.6), see `faces.openset.size_sweep`.

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
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from faces.descriptors import FaceDescriber
from faces.openset import Describe, OpenSetEvaluation, evaluate_open_set, open_set_photos, sweep_table
from faces.photos import PhotoPipeline


def pipeline_describe(cfg: DictConfig) -> tuple[Describe, dict]:
    """The photo describer of `make eval-lfw` (detector, retry, describer and cache from `cfg`) and its settings."""
    detector = instantiate(cfg.detector)
    retry = instantiate(cfg.retry_detector) if cfg.retry_detector else None
    describer = FaceDescriber(num_jitters=cfg.num_jitters, flip=cfg.flip, landmarks=cfg.landmarks)
    pipeline = PhotoPipeline(detector, describer, retry, cfg.cache_dir, cfg.workers, cfg.progress)
    return pipeline.describe, pipeline.settings()


def run_params(cfg: DictConfig, evaluation: OpenSetEvaluation, settings: dict) -> dict:
    """The MLflow params of the run: how the threshold was set, the photo folders and the pipeline settings."""
    return {
        "tolerance": cfg.tolerance,
        "threshold": evaluation.threshold,
        "target_far": evaluation.calibrated.target_far,
        "threshold_rule": evaluation.rule[:500],
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
    }


def evaluate(cfg: DictConfig, describe: Describe | None = None) -> dict:
    """Run the evaluation of the module docstring; `describe` replaces the dlib pipeline (tests). Returns the
    summary printed as the last stdout line. Raises UserError for a missing or unusable photo folder."""
    photos = open_set_photos(cfg.gallery, cfg.probes, cfg.strangers, cfg.gallery_photos, cfg.strangers_per_person)
    settings: dict = {}
    if describe is None:
        describe, settings = pipeline_describe(cfg)
    evaluation = evaluate_open_set(
        photos,
        describe,
        cfg.target_far,
        cfg.tolerance,
        (cfg.curve.low, cfg.curve.high, cfg.curve.points),
        [None if s is None else int(s) for s in cfg.gallery_sizes],
        cfg.compare_tolerance,
        cfg.folds,
    )
    summary = evaluation.summary()
    folders = {"gallery": str(cfg.gallery), "probes": str(cfg.probes), "strangers_folder": str(cfg.strangers)}
    details = evaluation.details(**folders, **settings)
    out = Path(cfg.out_dir)
    files = evaluation.write(out, details, cfg.compare_tolerance)
    log_tool_run(
        cfg,
        Path(cfg.gallery).name,
        params=run_params(cfg, evaluation, settings),
        metrics=evaluation.metrics(),
        files=files,
    )
    print(f"{evaluation.headline()} -> {out}", flush=True)
    print(sweep_table(evaluation.sweep, evaluation.calibrated.target_far, cfg.compare_tolerance), flush=True)
    log.info("eval-openset: %s", details)
    print(json.dumps(summary), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval_openset")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
