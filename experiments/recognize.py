"""Recognise faces in a folder: `python experiments/recognize.py images=<folder> out_dir=<folder> [ckpt=...]`.

Detects faces, classifies each with a checkpoint of `make vgg16-faces` (by default the newest), calls a
face `unknown` below `threshold`, writes `out_dir/recognitions.csv` and annotated images (see
`faces.recognition`), and logs the run to MLflow (experiment `recognize`).
"""
from __future__ import annotations

from pathlib import Path

import hydra
import mlflow
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from core.checkpoints import find_checkpoint
from core.errors import UserError
from experiments import log, user_errors, use_tool_experiment
from faces.recognition import UNKNOWN, recognize_folder
from lightning_modules.face_classifier import load_recognizer

TRAINED_BY = "make vgg16-faces"


def recognize(cfg: DictConfig) -> dict[str, float]:
    if not cfg.images:
        raise UserError("IMAGES=<folder> is required: the images to recognise faces in")
    ckpt = Path(cfg.ckpt) if cfg.ckpt else find_checkpoint(cfg.paths.log_dir, list(cfg.checkpoint_tasks), make_target=TRAINED_BY,
                                                           tracking_uri=cfg.paths.mlflow_uri)
    recognizer = load_recognizer(ckpt, cfg.threshold, cfg.label_map)
    detector = instantiate(cfg.detector)
    table, skipped = recognize_folder(recognizer, detector, cfg.images, cfg.out_dir, progress=cfg.progress)
    summary = {"images": int(table["image"].nunique()), "faces": len(table), "unknown": int((table["name"] == UNKNOWN).sum()),
               "images_skipped": len(skipped)}

    use_tool_experiment(cfg)
    with mlflow.start_run(run_name=f"{Path(cfg.images).name} ({detector.name})") as run:
        mlflow.log_params({"ckpt": str(ckpt), "detector": repr(detector), "threshold": cfg.threshold, "images": str(cfg.images),
                           "out_dir": str(cfg.out_dir), "identities": ", ".join(recognizer.class_names)})
        mlflow.log_metrics(summary)
        mlflow.log_artifact(str(Path(cfg.out_dir) / "recognitions.csv"))
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
    log.info("%d face(s) in %d image(s), %d unknown, %d unreadable file(s) skipped -> %s (checkpoint %s, MLflow run %s)",
             summary["faces"], summary["images"], summary["unknown"], len(skipped), Path(cfg.out_dir) / "recognitions.csv",
             ckpt, run.info.run_id)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="recognize")
def main(cfg: DictConfig) -> None:
    with user_errors():
        recognize(cfg)


if __name__ == "__main__":
    main()
