"""Capture face crops of one person: `python experiments/capture_faces.py name=alice [source=...]`.

Reads a camera or a video file, keeps frames with exactly one face, writes `<out_dir>/<name>/0001.jpg …`
(see `faces.capture`), and logs the counts to MLflow (experiment `capture_faces`).
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from faces.capture import capture_faces


def capture(cfg: DictConfig) -> dict[str, int]:
    detector = instantiate(cfg.detector)
    result = capture_faces(
        detector,
        cfg.source,
        cfg.out_dir,
        None if cfg.name is None else str(cfg.name),
        instantiate(cfg.crop),
        frames=cfg.frames,
        every=cfg.every,
        max_frames=cfg.max_frames,
        progress=cfg.progress,
    )
    summary = result.summary()
    run_id = log_tool_run(
        cfg,
        f"{cfg.name} ({detector.name})",
        metrics=summary,
        params={
            "name": cfg.name,
            "source": cfg.source,
            "detector": repr(detector),
            "frames": cfg.frames,
            "every": cfg.every,
            "crop.image_size": cfg.crop.image_size,
            "crop.margin": cfg.crop.margin,
            "folder": str(result.folder),
        },
    )
    log.info(
        "%s: saved %d face(s) to %s from %d frames (%d without a face, %d with several; MLflow run %s)",
        cfg.name,
        summary["saved"],
        result.folder,
        summary["frames_read"],
        summary["frames_no_face"],
        summary["frames_several_faces"],
        run_id,
    )
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="capture_faces")
def main(cfg: DictConfig) -> None:
    with user_errors():
        capture(cfg)


if __name__ == "__main__":
    main()
