"""Face recognition on a video, a camera or a stream: faces detected in every frame, followed across frames by
ultralytics' ByteTrack (`core.trackers`), and one name per track decided over all of the track's frames.

Why one name per track: a single frame's face can be blurred, turned or half out of the picture, and a stranger's
descriptor lands near a known person's now and then. Each frame gives the track a row of per-class scores (the
recogniser's `scores`: mean descriptor distance to each gallery person, or a classifier's probabilities); the
track's name is the recogniser's `decide` on the mean of its rows so far (score-level fusion, the mean rule of
Kittler et al., "On combining classifiers", IEEE TPAMI 1998). A stranger's mean stays beyond the threshold, so one
lucky frame does not name them, and the annotated video shows the track's running decision.

`recognize_video` writes, in `out_dir`: `annotated.mp4` (each face with its track id, name and score, at the
frames' own times), `tracks.csv` (one row per track: its name, score, frames and times), `events.jsonl` (a track
appears, is (re)named, and leaves) and `summary.json`. Ctrl-C ends the loop cleanly: what was seen is written.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.trackers import make_tracker, track
from core.video_sources import Frame, run_frames
from faces import Detection, FaceDetector
from faces.recognition import UNKNOWN, FaceRecognizer, annotate_names

log = logging.getLogger(__name__)

VIDEO_NAME, TRACKS_NAME, EVENTS_NAME, SUMMARY_NAME = "annotated.mp4", "tracks.csv", "events.jsonl", "summary.json"
TRACK_FIELDS = ("track", "name", "score", "score_column", "frames", "first_frame", "last_frame", "first_s", "last_s")


@dataclass
class Track:
    """One followed face: the sum of its frames' score rows, its frame count and first/last frame and time."""

    track_id: int
    first_frame: int
    first_s: float
    total: np.ndarray
    frames: int = 1
    last_frame: int = 0
    last_s: float = 0.0
    name: str = UNKNOWN
    score: float = float("nan")


@dataclass
class TrackNames:
    """Per-track fusion of a recogniser's scores (see the module doc). `update(frame, time_s, track_id, scores)`
    adds one frame's score row (C,) and returns the track's decision so far, (name, score); `events` lists
    {"event": "appeared" | "named" | "left", "track", "name", "score", "frame", "time_s"} in order."""

    recognizer: FaceRecognizer
    tracks: dict[int, Track] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)

    def update(self, frame: int, time_s: float, track_id: int, scores: np.ndarray) -> tuple[str, float]:
        scores = np.asarray(scores, np.float64)
        entry = self.tracks.get(track_id)
        if entry is None:
            entry = self.tracks[track_id] = Track(
                track_id, frame, time_s, scores.copy(), last_frame=frame, last_s=time_s
            )
            kind = "appeared"
        else:
            entry.total += scores
            entry.frames += 1
            entry.last_frame, entry.last_s = frame, time_s
            kind = None
        name, score = self.recognizer.decide(entry.total / entry.frames)
        if kind is None and name != entry.name:
            kind = "named"
        entry.name, entry.score = name, score
        if kind:
            self._event(kind, entry, frame, time_s)
        return name, score

    def finish(self) -> None:
        """A `left` event for every track, at its last frame."""
        for entry in sorted(self.tracks.values(), key=lambda t: (t.last_s, t.track_id)):
            self._event("left", entry, entry.last_frame, entry.last_s)

    def _event(self, kind: str, entry: Track, frame: int, time_s: float) -> None:
        self.events.append(
            {
                "event": kind,
                "track": entry.track_id,
                "name": entry.name,
                "score": round(entry.score, 4),
                "frame": frame,
                "time_s": round(time_s, 3),
            }
        )

    def rows(self) -> list[dict]:
        """tracks.csv's rows (TRACK_FIELDS), by first appearance."""
        column = getattr(self.recognizer, "score_column", "confidence")
        return [
            {
                "track": t.track_id,
                "name": t.name,
                "score": round(t.score, 4),
                "score_column": column,
                "frames": t.frames,
                "first_frame": t.first_frame,
                "last_frame": t.last_frame,
                "first_s": round(t.first_s, 3),
                "last_s": round(t.last_s, 3),
            }
            for t in sorted(self.tracks.values(), key=lambda t: (t.first_s, t.track_id))
        ]


def _as_tracker_input(detections: list[Detection]) -> np.ndarray:
    """(N, 6) float32 `x0, y0, x1, y1, conf, class` for `core.trackers.track`. Every face the detector kept gets
    confidence 1: the detectors' scores are on different scales (HOG's SVM margin, YuNet's probability) and each
    detector has already applied its own threshold, so the tracker associates boxes by overlap alone."""
    rows = [(d.left, d.top, d.right, d.bottom, 1.0, 0.0) for d in detections]
    return np.asarray(rows, np.float32).reshape(-1, 6)


def recognize_video(
    recognizer: FaceRecognizer,
    detector: FaceDetector,
    frames: Iterable[Frame],
    out_dir: str | Path,
    fps: float = 25.0,
    tracker=None,
    save_video: bool = True,
    progress_every: int = 0,
) -> dict:
    """Detect, track and name the faces of every frame of `frames`; return the summary (also summary.json):
    {"frames", "faces", "tracks", "known_tracks", "unknown_tracks", "names" {track id: name}, "interrupted",
    "seconds", "frames_per_s"}.

    `tracker`: a fresh ByteTrack (`core.trackers.make_tracker()`) when None; `fps`: the annotated video's nominal
    rate (its frames keep their own times, `TimedVideoWriter`); `progress_every`: log a line every that many frames
    (0: never). A face the tracker has not confirmed yet (ByteTrack confirms a new track at its second frame, or at
    the video's first) counts in `faces` only: it is neither named nor drawn."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = tracker if tracker is not None else make_tracker()
    names = TrackNames(recognizer)
    column = getattr(recognizer, "score_column", "confidence")
    faces = 0

    def step(frame: Frame) -> np.ndarray | None:
        nonlocal faces
        detections = detector.detect(frame.rgb)
        faces += len(detections)
        followed = track(tracker, _as_tracker_input(detections), frame.rgb)
        boxes = [Detection(*(int(round(v)) for v in box), score=1.0) for _, box, _, _ in followed]
        scores = recognizer.scores(frame.rgb, boxes)
        labels = [
            names.update(frame.index, frame.time_s, track_id, row) for (track_id, *_), row in zip(followed, scores)
        ]
        if not save_video:
            return None
        return annotate_names(
            frame.rgb, boxes, labels, column, [t for t, *_ in followed]
        )  # RGB, as the writer takes it

    loop = run_frames(
        frames,
        step,
        out_dir / VIDEO_NAME if save_video else None,
        fps,
        progress_every,
        lambda: f"{len(names.tracks)} track(s) so far",
    )
    names.finish()
    rows = names.rows()
    with open(out_dir / TRACKS_NAME, "w", newline="") as handle:
        table = csv.DictWriter(handle, fieldnames=TRACK_FIELDS)
        table.writeheader()
        table.writerows(rows)
    with open(out_dir / EVENTS_NAME, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(event) + "\n" for event in names.events)
    unknown = sum(row["name"] == UNKNOWN for row in rows)
    summary = {
        "frames": loop.frames,
        "faces": faces,
        "tracks": len(rows),
        "known_tracks": len(rows) - unknown,
        "unknown_tracks": unknown,
        "names": {str(row["track"]): row["name"] for row in rows},
        "interrupted": loop.interrupted,
        "seconds": round(loop.seconds, 3),
        "frames_per_s": loop.frames_per_s,
    }
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    return summary
