"""Face verification on LFW's standard protocol: `python -m experiments.eval_lfw [pairs=<folder>]`.

Reads `pairs.txt` (see `faces.verification`), describes each distinct photo once (its face nearest the centre,
found by `detector`, else by `retry_detector`, else the central box; 68-point alignment (`landmarks`); dlib's 128-d descriptor,
averaged with the mirrored chip's when `flip`) in `workers` processes, keeping the descriptors in `cache_dir`
(per photo file and pipeline settings: a re-run with another tolerance is instant), and scores every pair by
Euclidean distance. Per fold the threshold is chosen on the other
folds; prints mean ± std accuracy and the accuracy at the fixed `tolerance`, draws the ROC curve, writes
`out_dir/metrics.json`, `pairs.csv` and `roc.png`, and logs them to MLflow (experiment `eval_lfw`). The last stdout
line is one JSON object `{"accuracy", "std", "accuracy_at_tolerance", "pairs"}`. The protocol's work is `faces.lfw`.
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
from faces.lfw import evaluate_lfw, read_lfw_folder
from faces.photos import PhotoPipeline


def evaluate(cfg: DictConfig) -> dict:
    """Run the evaluation of the module docstring. Returns the summary printed as the last stdout line. Raises
    UserError for a missing folder, pairs file or photo."""
    folder = Path(cfg.pairs)
    pairs = read_lfw_folder(folder)
    detector = instantiate(cfg.detector)
    retry = instantiate(cfg.retry_detector) if cfg.retry_detector else None
    describer = FaceDescriber(num_jitters=cfg.num_jitters, flip=cfg.flip, landmarks=cfg.landmarks)
    pipeline = PhotoPipeline(detector, describer, retry, cfg.cache_dir, cfg.workers, cfg.progress)
    evaluation = evaluate_lfw(folder, pairs, pipeline, cfg.tolerance)
    summary = evaluation.summary()
    details = evaluation.details(folder, pipeline)
    out = Path(cfg.out_dir)
    files = evaluation.write(out, details)
    params = {
        "pairs": str(folder),
        "detector": repr(detector)[:500],
        "retry_detector": repr(retry)[:500],
        "num_jitters": cfg.num_jitters,
        "flip": cfg.flip,
        "landmarks": cfg.landmarks,
        "tolerance": cfg.tolerance,
        "workers": cfg.workers,
    }
    log_tool_run(cfg, folder.name, params=params, metrics=evaluation.metrics(), files=files)
    described, accuracy = evaluation.report(cfg.workers, pipeline.cache_dir)
    print(described, flush=True)
    print(f"{accuracy} -> {out}", flush=True)
    log.info("eval-lfw: %s", details)
    print(json.dumps(summary), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval_lfw")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
