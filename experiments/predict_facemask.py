"""Detect faces with and without masks: `python experiments/predict_facemask.py source=<folder or video> [ckpt=...]`.

Writes `annotated/` images (or `<video>_<ext>_annotated.mp4`), named by `core.outputs.output_name` so two
sources never share one (`a.jpg` → `annotated/a_jpg.jpg`, `a.png` → `annotated/a_png.jpg`), `detections.csv` and
`detections.json` (one row per box: source, frame, class, confidence, x0, y0, x1, y1 in pixels, annotated: the
output file relative to `out_dir`), prints per image/frame how many faces have no mask, and logs the counts and
files to MLflow (experiment `predict_facemask`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from core.checkpoints import find_checkpoint
from core.errors import UserError
from core.images import UnreadableImage, find_images, read_rgb, swap_red_blue
from core.outputs import output_name
from core.tracking import log_tool_run
from experiments import log, user_errors
from lightning_modules.yolo_inference import TASK_NAME, TRAINED_BY, detect, load_detector

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
CSV_FIELDS = ("source", "frame", "class", "confidence", "x0", "y0", "x1", "y1", "annotated")


def frames(source: Path, max_frames: int | None) -> Iterator[tuple[str, int, np.ndarray]]:
    """(source name, frame index, RGB image) for each image of a folder or each frame of a video."""
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        if not capture.isOpened():
            raise UserError(f"cannot open video {source} — is it a video file OpenCV can read?")
        index = 0
        while max_frames is None or index < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            yield source.name, index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        capture.release()
        return
    for path in find_images(source):
        try:
            yield str(path.relative_to(source)), 0, read_rgb(path)
        except UnreadableImage as exc:
            log.warning("skipped unreadable image %s", exc)


def annotate(rgb: np.ndarray, detections: np.ndarray, names: list[str]) -> np.ndarray:
    """A BGR copy with each box and its class and confidence (ultralytics' Annotator)."""
    from ultralytics.utils.plotting import Annotator, colors

    annotator = Annotator(swap_red_blue(rgb), line_width=max(1, round(max(rgb.shape[:2]) / 400)))
    for x0, y0, x1, y1, conf, cls in detections:
        annotator.box_label((x0, y0, x1, y1), f"{names[int(cls)]} {conf:.2f}", color=colors(int(cls), True))
    return annotator.result()


def predict(cfg: DictConfig) -> dict:
    source = Path(cfg.source) if cfg.source else instantiate(cfg.builtin) / "images"
    if not source.exists():
        raise UserError(f"source not found: {source} — pass source=<folder of images or video file>")
    ckpt = (
        Path(cfg.ckpt)
        if cfg.ckpt
        else find_checkpoint(cfg.paths.log_dir, TASK_NAME, make_target=TRAINED_BY, tracking_uri=cfg.paths.mlflow_uri)
    )
    log.info("checkpoint %s", ckpt)
    module = load_detector(ckpt)
    names, imgsz = list(module.names), int(cfg.imgsz or module.hparams.imgsz)
    if cfg.alert_class not in names:
        raise UserError(f"alert_class={cfg.alert_class!r} is not a class of {ckpt}: {names}")
    alert = names.index(cfg.alert_class)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    is_video = source.is_file()
    writer, rows, per_frame = None, [], []
    for name, index, rgb in frames(source, cfg.max_frames):
        det = detect(module.eval_net, [rgb], imgsz, conf=cfg.conf, iou=cfg.iou)[0]
        drawn = annotate(rgb, det, names)
        if is_video:
            annotated = output_name(source.name, ".mp4", "_annotated").as_posix()
            if writer is None:
                fps = cv2.VideoCapture(str(source)).get(cv2.CAP_PROP_FPS) or 25.0
                writer = cv2.VideoWriter(
                    str(out_dir / annotated), cv2.VideoWriter_fourcc(*"mp4v"), fps, (rgb.shape[1], rgb.shape[0])
                )
            writer.write(drawn)
        else:
            annotated = (Path("annotated") / output_name(name, ".jpg")).as_posix()
            (out_dir / annotated).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out_dir / annotated), drawn)
        unmasked = int((det[:, 5] == alert).sum())
        per_frame.append(
            {"source": name, "frame": index, "faces": len(det), cfg.alert_class: unmasked, "annotated": annotated}
        )
        print(f"{name} frame {index}: {unmasked} face(s) {cfg.alert_class} of {len(det)}", flush=True)
        rows += [
            dict(
                zip(
                    CSV_FIELDS,
                    (name, index, names[int(c)], round(float(p), 4), *(round(float(v), 1) for v in box), annotated),
                )
            )
            for *box, p, c in det
        ]
    if writer is not None:
        writer.release()
    if not per_frame:
        raise UserError(f"no readable image or frame in {source}")
    with open(out_dir / "detections.csv", "w", newline="") as handle:
        csv.DictWriter(handle, fieldnames=CSV_FIELDS).writeheader()
        csv.DictWriter(handle, fieldnames=CSV_FIELDS).writerows(rows)
    (out_dir / "detections.json").write_text(
        json.dumps({"checkpoint": str(ckpt), "names": names, "frames": per_frame, "detections": rows}, indent=1)
    )
    summary = {
        "frames": len(per_frame),
        "detections": len(rows),
        f"frames_with_{cfg.alert_class}": sum(1 for f in per_frame if f[cfg.alert_class]),
    }

    log_tool_run(
        cfg,
        source.name,
        params={"source": str(source), "checkpoint": str(ckpt), "imgsz": imgsz, "conf": cfg.conf, "iou": cfg.iou},
        metrics=summary,
        files=[out_dir / "detections.csv", out_dir / "detections.json"],
    )
    log.info("%s: %s -> %s", source, summary, out_dir)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict_facemask")
def main(cfg: DictConfig) -> None:
    with user_errors():
        predict(cfg)


if __name__ == "__main__":
    main()
