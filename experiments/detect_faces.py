"""Detect faces in every image of a folder: `python experiments/detect_faces.py in_dir=... out_dir=... detector=yunet`.

Writes one JPEG per face, an annotated copy of each image, faces.csv/faces.json and a contact sheet
(see `faces.batch`), and logs detector, parameters and counts to MLflow (experiment `detect_faces`).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from faces.batch import CropSpec, detect_folder


def detect_faces(cfg: DictConfig) -> dict[str, float]:
    """Run the configured detector over `cfg.in_dir` into `cfg.out_dir`; return the run's summary."""
    in_dir = Path(cfg.in_dir) if cfg.in_dir else instantiate(cfg.id_cards) / "images"
    out_dir = Path(cfg.out_dir)
    detector = instantiate(cfg.detector)
    crop = CropSpec(**OmegaConf.to_container(cfg.crop))
    result = detect_folder(detector, in_dir, out_dir, crop, workers=cfg.workers, progress=cfg.progress)
    summary = result.summary()

    params = {
        f"detector.{k}": v for k, v in OmegaConf.to_container(cfg.detector, resolve=True).items() if k != "_target_"
    }
    run_id = log_tool_run(
        cfg,
        f"{detector.name} {in_dir.name}",
        metrics=summary,
        params={
            "detector": detector.name,
            **params,
            **{f"crop.{k}": v for k, v in cfg.crop.items()},
            "workers": cfg.workers,
            "in_dir": str(in_dir),
            "out_dir": str(out_dir),
        },
        files=[
            out_dir / name for name in ("faces.csv", "faces.json", "contact_sheet.jpg") if (out_dir / name).exists()
        ],
    )
    log.info(
        "%s: %d faces in %d images (%d without a face, %d skipped), %.3f s/image -> %s (MLflow run %s)",
        detector.name,
        summary["faces_found"],
        summary["images_processed"],
        summary["images_without_face"],
        summary["images_skipped"],
        summary["seconds_per_image"],
        out_dir,
        run_id,
    )
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="detect_faces")
def main(cfg: DictConfig) -> None:
    with user_errors():
        detect_faces(cfg)


if __name__ == "__main__":
    main()
