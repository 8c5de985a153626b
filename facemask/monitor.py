"""Face-mask monitoring of a video source: the trained detector on each frame, ultralytics' ByteTrack (or BoT-SORT)
for persistent person ids (`core.trackers`), `facemask.alerts` for the smoothed mask state and the one-alert-per-person rule.

`monitor()` takes the detector as a plain callable (RGB frame → (N, 6) array `x0, y0, x1, y1, conf, class`), so a
test or another model can stand in for the trained YOLO (`yolo_detector`, `runtime_detector`). It writes, in `out_dir`:
`annotated.mp4` (boxes with track ids and smoothed states, red once a person raised an alert; the zones and lines
of `facemask.zones`), `tracks.csv` (one row per person), `tracks.txt` (every frame's tracks in the MOTChallenge
format: frame from 1, id, left, top, width, height, confidence, -1, -1, -1), `dwell.csv` (each person's time in each
zone), `zones.png` (people and masked share per minute and zone), `events.jsonl` (the alerts, also printed) and
`summary.json`. Ctrl-C ends the loop cleanly: what was seen so far is written.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from core.images import swap_red_blue
from core.trackers import SceneCuts, forget_tracks, make_tracker, track
from core.video_sources import Frame, run_frames
from facemask.alerts import TRACK_CSV_FIELDS, EventSink, MaskAlerts
from facemask.zones import DWELL_CSV_FIELDS, Geometry, ZoneCounter

log = logging.getLogger(__name__)

Detector = Callable[[np.ndarray], np.ndarray]  # RGB (H, W, 3) uint8 → (N, 6) float: x0, y0, x1, y1, conf, class
VIDEO_NAME, TRACKS_NAME, EVENTS_NAME, SUMMARY_NAME = "annotated.mp4", "tracks.csv", "events.jsonl", "summary.json"
MOT_NAME, DWELL_NAME, FIGURE_NAME = "tracks.txt", "dwell.csv", "zones.png"


BACKENDS = ("auto", "pytorch", "onnxruntime")


def resolve_backend(backend: str, device: str) -> str:
    """The detector's runtime for `backend` on `device` ("cpu", "cuda", …): "auto" is ONNX Runtime on the CPU (a
    yolov5n frame at 320×192 px took 7 ms there against 19 ms in PyTorch, 2 cores) and PyTorch elsewhere;
    "onnxruntime" runs on the CPU whatever the device. UserError for a name outside BACKENDS."""
    from core.errors import UserError

    if backend not in BACKENDS:
        raise UserError(f"backend: {backend!r} is none of {list(BACKENDS)}")
    if backend == "auto":
        return "onnxruntime" if device == "cpu" else "pytorch"
    return backend


def yolo_detector(module, imgsz: int, conf: float, iou: float) -> Detector:
    """The trained YoloDetector (`facemask.inference.load_detector`) in PyTorch as a Detector at `imgsz` with these
    thresholds, as `yolo track` runs a model: a copy of its weights with each BatchNorm folded into its convolution
    (ultralytics' `fuse`), each frame letterboxed to the smallest stride-multiple rectangle (`rect=True`)."""
    from facemask.inference import detect, fused_copy

    net = fused_copy(module)
    return lambda rgb: detect(net, [rgb], imgsz, conf=conf, iou=iou, rect=True)[0]


def runtime_detector(session, imgsz: int, conf: float, iou: float) -> Detector:
    """`yolo_detector`'s detections with the forward pass in ONNX Runtime: `session` is `facemask.export.runtime_model`'s
    (the fused net, dynamic height and width)."""
    import torch

    from facemask.export import onnx_detect

    def detect_in_runtime(rgb: np.ndarray) -> np.ndarray:
        # the letterbox and NMS around the session are small torch ops: on one torch thread, since torch's OpenMP
        # threads spinning beside ONNX Runtime's own took a frame from 10 to 17 ms on 2 cores
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return onnx_detect(session, [rgb], imgsz, conf=conf, iou=iou, rect=True)[0]
        finally:
            torch.set_num_threads(threads)

    return detect_in_runtime


def _draw(rgb: np.ndarray, people, alerts: MaskAlerts) -> np.ndarray:
    from ultralytics.utils.plotting import Annotator

    annotator = Annotator(swap_red_blue(rgb), line_width=max(1, round(max(rgb.shape[:2]) / 400)))
    for track_id, box, _conf, _cls in people:
        record = alerts.tracks[track_id]
        colour = (
            (0, 0, 255)
            if record.alert is not None
            else (0, 165, 255)
            if record.state in alerts.alert_ids
            else (0, 160, 0)
        )  # BGR: red alerted, orange unmasked, green masked
        annotator.box_label(tuple(float(v) for v in box), f"id {track_id} {alerts.state_name(track_id)}", color=colour)
    return annotator.result()


def _zone_figure(zones: dict, path: Path) -> None:
    from core.figures import save_figure, zone_occupancy

    save_figure(zone_occupancy({name: zone["per_minute"] for name, zone in zones.items()}), path)


def monitor(
    frames: Iterable[Frame],
    detector: Detector,
    alerts: MaskAlerts,
    sink: EventSink,
    out_dir: str | Path,
    fps: float = 25.0,
    tracker=None,
    save_video: bool = True,
    progress_every: int = 0,
    geometry: Geometry | None = None,
    scene_cut: float | None = None,
) -> dict:
    """Detect, track and judge every frame of `frames`; return the summary (also written to summary.json):
    {"frames", "people", "unmasked_people", "alerts", "zones", "lines", "interrupted", "seconds", "frames_per_s"}
    ("zones" and "lines" as `ZoneCounter.summary`).

    `geometry`: the zones and lines (None: none, the whole frame is the zone `frame`); with zones, only a person
    inside one raises an alert. `scene_cut`: a frame that differs from the last by more than this (`SceneCuts`)
    ends every track, so that the people after the cut get new ids (None: no cut is looked for); the summary's
    "scene_cuts" counts them.
    `tracker`: a fresh `make_tracker()` when None; `fps`: the annotated video's nominal frame rate (its frames keep their own times, `TimedVideoWriter`); `progress_every`:
    log a line every that many frames (0: never). A KeyboardInterrupt (Ctrl-C) while reading or detecting ends
    the loop with `interrupted: true`; the outputs are written either way."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = tracker if tracker is not None else make_tracker()
    zones = ZoneCounter(geometry if geometry is not None else Geometry())
    mot = open(out_dir / MOT_NAME, "w", encoding="utf-8")  # noqa: SIM115  (closed below, after the loop)

    cuts = SceneCuts(scene_cut) if scene_cut is not None else None

    def step(frame: Frame) -> np.ndarray | None:
        if cuts is not None and cuts(frame.rgb):
            log.info("frame %d: a scene cut, every track ended", frame.index)
            forget_tracks(tracker)
        people = track(tracker, detector(frame.rgb), frame.rgb)
        inside = zones.update(frame.index, frame.time_s, people, frame.rgb.shape)
        for event in alerts.update(frame.index, frame.time_s, people, zones.may_alert(inside)):
            zones.alerted(event.track_id, inside)
            sink.emit(event)
        zones.judged(frame.time_s, inside, alerts.unmasked_now(inside))
        for track_id, (x0, y0, x1, y1), conf, _cls in people:
            mot.write(
                f"{frame.index + 1},{track_id},{x0:.1f},{y0:.1f},{x1 - x0:.1f},{y1 - y0:.1f},{conf:.4f},-1,-1,-1\n"
            )
        return zones.draw(_draw(frame.rgb, people, alerts))[..., ::-1] if save_video else None

    try:
        loop = run_frames(
            frames, step, out_dir / VIDEO_NAME if save_video else None, fps, progress_every, alerts.summary
        )
    finally:
        mot.close()
    for name, fields, rows in (
        (TRACKS_NAME, TRACK_CSV_FIELDS, alerts.rows()),
        (DWELL_NAME, DWELL_CSV_FIELDS, zones.dwell_rows()),
    ):
        with open(out_dir / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    counts = zones.summary()
    _zone_figure(counts["zones"], out_dir / FIGURE_NAME)
    summary = {
        "frames": loop.frames,
        **alerts.summary(),
        **counts,
        "scene_cuts": cuts.cuts if cuts is not None else 0,
        "interrupted": loop.interrupted,
        "seconds": round(loop.seconds, 3),
        "frames_per_s": loop.frames_per_s,
    }
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    return summary
