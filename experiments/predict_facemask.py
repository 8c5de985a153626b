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

from core.checkpoints import tool_checkpoint
from core.errors import UserError
from core.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, UnreadableImage, is_clip, list_inputs, read_rgb, swap_red_blue
from core.mlflow_store import log_tool_run
from core.outputs import output_name
from core.video_sources import TimedVideoWriter, VideoSource
from experiments import log, user_errors
from facemask.inference import TASK_NAME, TRAINED_BY, detect, load_detector

CSV_FIELDS = ("source", "frame", "time_s", "class", "confidence", "x0", "y0", "x1", "y1", "annotated")


def frames(source: Path, max_frames: int | None) -> Iterator[tuple[str, int, float, np.ndarray]]:
    """(input name, frame index, time in seconds, RGB image) for one image, one video or a folder of both
    (`core.images.list_inputs`: sub-folders and symlinks followed, other files named in a warning). A video or an
    animated GIF (`core.images.is_clip`) is read frame by frame; a video's
    times are its own timestamps (`core.video_sources.VideoSource`); an image is frame 0 at 0 s. `max_frames`
    caps the frames read from each video."""
    listing = list_inputs(source, IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    if listing.left_out:
        log.warning("%s: %d input file(s)%s", source, len(listing.files), listing.summary(limit=10))
    for path in listing.files:
        name = path.name if path == source else str(path.relative_to(source))
        if is_clip(path):
            try:
                video = VideoSource(str(path), key="source")
            except UserError as exc:
                log.warning("skipped %s", exc)
                continue
            for frame in video.frames(max_frames):
                yield name, frame.index, frame.time_s, frame.rgb
            continue
        try:
            yield name, 0, 0.0, read_rgb(path)
        except UnreadableImage as exc:
            log.warning("skipped unreadable image %s", exc)


def annotate(rgb: np.ndarray, detections: np.ndarray, names: list[str]) -> np.ndarray:
    """A BGR copy with each box and its class and confidence (ultralytics' Annotator)."""
    from ultralytics.utils.plotting import Annotator, colors

    annotator = Annotator(swap_red_blue(rgb), line_width=max(1, round(max(rgb.shape[:2]) / 400)))
    for x0, y0, x1, y1, conf, cls in detections:
        annotator.box_label((x0, y0, x1, y1), f"{names[int(cls)]} {conf:.2f}", color=colors(int(cls), True))
    return annotator.result()


def _record(cfg, names, alert, name, index, time_s, det, annotated, rows, per_frame) -> None:
    """Append one image's or frame's counts to `per_frame` and its boxes to `rows`, and print its line."""
    unmasked = int((det[:, 5] == alert).sum())
    per_frame.append(
        {
            "source": name,
            "frame": index,
            "time_s": round(time_s, 3),
            "faces": len(det),
            cfg.alert_class: unmasked,
            "annotated": annotated,
        }
    )
    print(f"{name} frame {index}: {unmasked} face(s) {cfg.alert_class} of {len(det)}", flush=True)
    rows += [
        dict(
            zip(
                CSV_FIELDS,
                (
                    name,
                    index,
                    round(time_s, 3),
                    names[int(c)],
                    round(float(p), 4),
                    *(round(float(v), 1) for v in box),
                    annotated,
                ),
            )
        )
        for *box, p, c in det
    ]


def predict(cfg: DictConfig) -> dict:
    source = Path(cfg.source) if cfg.source else instantiate(cfg.builtin) / "images"
    if not source.exists():
        raise UserError(f"source not found: {source} — pass source=<folder of images or video file>")
    ckpt = tool_checkpoint(cfg, TASK_NAME, TRAINED_BY)
    module = load_detector(ckpt)
    names, imgsz = list(module.names), int(cfg.imgsz or module.hparams.imgsz)
    if cfg.alert_class not in names:
        raise UserError(f"alert_class={cfg.alert_class!r} is not a class of {ckpt}: {names}")
    alert = names.index(cfg.alert_class)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: dict[str, TimedVideoWriter] = {}
    clips: dict[str, bool] = {}
    rows, per_frame = [], []
    try:
        for name, index, time_s, rgb in frames(source, cfg.max_frames):
            det = detect(module.eval_net, [rgb], imgsz, conf=cfg.conf, iou=cfg.iou)[0]
            drawn = annotate(rgb, det, names)
            if name not in clips:  # once per input, not per frame (a GIF's header is read to know)
                clips[name] = is_clip(source if source.is_file() else source / name)
            if clips[name]:
                annotated = output_name(name, ".mp4", "_annotated").as_posix()
                if name not in writers:
                    (out_dir / annotated).parent.mkdir(parents=True, exist_ok=True)
                    fps = cv2.VideoCapture(str(source if source.is_file() else source / name)).get(cv2.CAP_PROP_FPS)
                    writers[name] = TimedVideoWriter(out_dir / annotated, fps or 25.0, (rgb.shape[1], rgb.shape[0]))
                writers[name].write(swap_red_blue(drawn), time_s)
            else:
                annotated = (Path("annotated") / output_name(name, ".jpg")).as_posix()
                (out_dir / annotated).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out_dir / annotated), drawn)
            _record(cfg, names, alert, name, index, time_s, det, annotated, rows, per_frame)
    finally:
        for writer in writers.values():
            writer.close()
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
