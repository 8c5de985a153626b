"""Scoring the monitor's tracks against MOTChallenge ground truth, and what a perfect tracker would count.

`read_mot` reads a `gt.txt` or a tracker's `tracks.txt` (`frame, id, left, top, width, height, conf, …`, frames
from 1, pixels). `score_tracks` gives TrackEval's HOTA (Luiten et al., IJCV 2021: the geometric mean of detection
and association accuracy, averaged over IoU thresholds 0.05–0.95), IDF1 (Ristani et al., 2016) and the CLEAR
metrics (MOTA, ID switches; Bernardin & Stiefelhagen, 2008) at IoU 0.5. Ground-truth rows with conf 0 are ignored,
as MOTChallenge's evaluation does: they are dropped, with the tracker's boxes that match them (IoU ≥ 0.5).
`truth_counts` runs the monitor's own counting (`ZoneCounter`, `MaskAlerts`) on the ground-truth identities, so a
difference from the monitor's counts is the tracker's (and the detector's) doing. `TruthDetector` returns the
ground truth as detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.errors import UserError
from facemask.alerts import MaskAlerts
from facemask.zones import Geometry, ZoneCounter


def read_mot(path: str | Path, key: str = "gt") -> np.ndarray:
    """The rows of a MOTChallenge file as an (N, 9) float array: frame (from 1), id, left, top, width, height,
    conf, class, visibility (a tracker's file has -1 in the last columns). UserError naming `key` and the file
    when it is missing or not comma-separated numbers with at least 6 columns."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{key}={path}: file not found")
    try:
        rows = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise UserError(f"{key}={path}: not a MOTChallenge file ({str(exc).splitlines()[0]})") from None
    if rows.size and rows.shape[1] < 6:
        raise UserError(f"{key}={path}: a MOTChallenge row has at least 6 columns, this file has {rows.shape[1]}")
    rows = rows.reshape(-1, rows.shape[1] if rows.size else 9)
    out = np.full((len(rows), 9), -1.0)
    out[:, : min(9, rows.shape[1])] = rows[:, :9]
    return out


def _ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from trackeval.datasets._base_dataset import _BaseDataset

    return _BaseDataset._calculate_box_ious(a, b, box_format="xywh")


def sequence(gt: np.ndarray, tracks: np.ndarray, frames: int) -> dict:
    """TrackEval's per-sequence data ({"gt_ids", "tracker_ids", "similarity_scores", counts}) for frames 1 to
    `frames` of `gt` and `tracks` (`read_mot` arrays), ids renumbered from 0, ignored ground truth removed."""
    from scipy.optimize import linear_sum_assignment

    gt_ids, tracker_ids, similarity = [], [], []
    kept_gt, kept_tracks = [], []
    for frame in range(1, frames + 1):
        g, t = gt[gt[:, 0] == frame], tracks[tracks[:, 0] == frame]
        ignored, g = g[g[:, 6] == 0], g[g[:, 6] != 0]
        if len(ignored) and len(t):
            iou = _ious(ignored[:, 2:6], t[:, 2:6])
            rows, cols = linear_sum_assignment(-iou)
            t = np.delete(t, cols[iou[rows, cols] >= 0.5], axis=0)
        kept_gt.append(g)
        kept_tracks.append(t)
    gt_map = {v: i for i, v in enumerate(np.unique(np.concatenate([g[:, 1] for g in kept_gt])))}
    tracker_map = {v: i for i, v in enumerate(np.unique(np.concatenate([t[:, 1] for t in kept_tracks])))}
    for g, t in zip(kept_gt, kept_tracks):
        gt_ids.append(np.array([gt_map[v] for v in g[:, 1]], dtype=int))
        tracker_ids.append(np.array([tracker_map[v] for v in t[:, 1]], dtype=int))
        similarity.append(_ious(g[:, 2:6], t[:, 2:6]) if len(g) and len(t) else np.zeros((len(g), len(t))))
    return {
        "num_timesteps": frames,
        "num_gt_ids": len(gt_map),
        "num_tracker_ids": len(tracker_map),
        "num_gt_dets": sum(len(g) for g in kept_gt),
        "num_tracker_dets": sum(len(t) for t in kept_tracks),
        "gt_ids": gt_ids,
        "tracker_ids": tracker_ids,
        "similarity_scores": similarity,
    }


def score_tracks(gt: np.ndarray, tracks: np.ndarray, frames: int | None = None) -> dict[str, float]:
    """{"hota", "deta", "assa", "idf1", "mota", "id_switches", "gt_ids", "tracker_ids"} of `tracks` against `gt`
    (`read_mot` arrays) over frames 1 to `frames` (default: the last frame of either); HOTA, DetA, AssA averaged
    over TrackEval's 19 IoU thresholds, the others at IoU 0.5; shares in 0–1."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    frames = frames or int(max(gt[:, 0].max(initial=0), tracks[:, 0].max(initial=0)))
    data = sequence(gt, tracks, frames)
    hota = HOTA().eval_sequence(data)
    clear = CLEAR({"PRINT_CONFIG": False}).eval_sequence(data)
    identity = Identity({"PRINT_CONFIG": False}).eval_sequence(data)
    return {
        "hota": round(float(np.mean(hota["HOTA"])), 4),
        "deta": round(float(np.mean(hota["DetA"])), 4),
        "assa": round(float(np.mean(hota["AssA"])), 4),
        "idf1": round(float(identity["IDF1"]), 4),
        "mota": round(float(clear["MOTA"]), 4),
        "id_switches": int(clear["IDSW"]),
        "gt_ids": data["num_gt_ids"],
        "tracker_ids": data["num_tracker_ids"],
    }


def _frame_people(gt: np.ndarray, frame: int) -> list[tuple[int, np.ndarray, float, int]]:
    """The visible ground truth of `frame` (from 1) as the tracker's people: (id, x0 y0 x1 y1, 1.0, class from 0)."""
    rows = gt[(gt[:, 0] == frame) & (gt[:, 6] != 0)]
    return [(int(r[1]), np.array([r[2], r[3], r[2] + r[4], r[3] + r[5]]), 1.0, int(r[7]) - 1) for r in rows]


class TruthDetector:
    """The ground truth's visible boxes of the next frame as detections ((N, 6): x0, y0, x1, y1, 1.0, class from
    0): the n-th call returns frame n's, so the monitor's tracker and counting are measured without a detector."""

    def __init__(self, gt: np.ndarray):
        self.gt, self.calls = gt, 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        people = _frame_people(self.gt, self.calls)
        return np.array([[*box, conf, cls] for _id, box, conf, cls in people], np.float32).reshape(-1, 6)


def truth_counts(
    gt: np.ndarray,
    names: Sequence[str],
    geometry: Geometry,
    size: tuple[int, int],
    fps: float,
    alert_classes: Sequence[str],
    alert_after_s: float,
    smooth_frames: int,
    frames: int | None = None,
) -> dict:
    """What the monitor would count with a perfect tracker: its zones, lines and alert rule run on the ground-truth
    identities (visible rows only) of a `size` (width, height) video at `fps` frames/s, frame n at (n − 1) / fps s.
    {"people", "unmasked_people", "alerts", "zones", "lines"} as in the monitor's summary."""
    alerts = MaskAlerts(names, alert_classes, alert_after_s, smooth_frames)
    zones = ZoneCounter(geometry)
    shape = (size[1], size[0], 3)
    for frame in range(1, (frames or int(gt[:, 0].max(initial=0))) + 1):
        people, time_s = _frame_people(gt, frame), (frame - 1) / fps
        inside = zones.update(frame - 1, time_s, people, shape)
        for event in alerts.update(frame - 1, time_s, people, zones.may_alert(inside)):
            zones.alerted(event.track_id, inside)
        zones.judged(time_s, inside, alerts.unmasked_now(inside))
    return {**alerts.summary(), **zones.summary()}
