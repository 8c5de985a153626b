"""Multi-object trackers over per-frame detections: ultralytics' ByteTrack and BoT-SORT, as `yolo track` runs them,
fed (N, 6) arrays `x0, y0, x1, y1, conf, class` from any detector (the face-mask YOLO, dlib's face detectors). Used by
the face-mask monitor and by face recognition on video. (MLflow's runs are `core.mlflow_store`.)"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from core.errors import UserError
from core.images import swap_red_blue


class DetectionBoxes:
    """The Boxes-like view of (N, 6) detections that ultralytics' trackers read: `xyxy`, `xywh` (centre x, centre
    y, width, height), `conf`, `cls` as NumPy arrays, `len()` and boolean/integer indexing."""

    def __init__(self, detections: np.ndarray):
        self.data = np.asarray(detections, dtype=np.float32).reshape(-1, 6)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> DetectionBoxes:
        return DetectionBoxes(self.data[index])

    @property
    def xyxy(self) -> np.ndarray:
        return self.data[:, :4]

    @property
    def xywh(self) -> np.ndarray:
        x0, y0, x1, y1 = self.data[:, :4].T
        return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1)

    @property
    def conf(self) -> np.ndarray:
        return self.data[:, 4]

    @property
    def cls(self) -> np.ndarray:
        return self.data[:, 5]


TRACKERS = ("bytetrack", "botsort")


def tracker_settings(overrides: Mapping | None = None, tracker_type: str = "bytetrack") -> dict:
    """The settings of the installed ultralytics' `cfg/trackers/<tracker_type>.yaml` (as `yolo track
    tracker=<tracker_type>.yaml` reads them), with `overrides` (e.g. {"track_buffer": 60}) applied on top. An unknown
    tracker or a key its file does not have is a UserError."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    if tracker_type not in TRACKERS:
        raise UserError(f"tracker_type: {tracker_type!r} is none of {list(TRACKERS)}")
    settings = YAML.load(check_yaml(f"{tracker_type}.yaml"))
    unknown = sorted(set(overrides or {}) - set(settings))
    if unknown:
        raise UserError(f"tracker: unknown key(s) {unknown} — {tracker_type}'s settings are {sorted(settings)}")
    settings.update(dict(overrides or {}))
    return settings


def bytetrack_settings(overrides: Mapping | None = None) -> dict:
    """`tracker_settings(overrides, "bytetrack")`."""
    return tracker_settings(overrides, "bytetrack")


def make_tracker(overrides: Mapping | None = None, tracker_type: str = "bytetrack"):
    """ultralytics' BYTETracker, or BOTSORT for `tracker_type="botsort"`, with `tracker_settings(overrides,
    tracker_type)`. BoT-SORT runs as its file sets it: global motion compensation (sparse optical flow) and no ReID
    model (`with_reid: False`)."""
    from ultralytics.trackers.bot_sort import BOTSORT
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import IterableSimpleNamespace

    tracker = BOTSORT if tracker_type == "botsort" else BYTETracker
    return tracker(args=IterableSimpleNamespace(**tracker_settings(overrides, tracker_type)))


def track(tracker, detections: np.ndarray, rgb: np.ndarray | None = None) -> list[tuple[int, np.ndarray, float, int]]:
    """One frame through the tracker: (track id, detection box x0 y0 x1 y1, confidence, class) for each confirmed
    track matched in this frame (the detection's own box and class, not the Kalman prediction). `rgb`: the frame
    (H, W, 3) uint8, which BoT-SORT's motion compensation needs (given to it as BGR, as `yolo track` does);
    ByteTrack does not read it."""
    from ultralytics.trackers.bot_sort import BOTSORT

    detections = np.asarray(detections, dtype=np.float32).reshape(-1, 6)
    bgr = swap_red_blue(rgb) if rgb is not None and isinstance(tracker, BOTSORT) else None
    tracks = tracker.update(DetectionBoxes(detections), bgr)
    people = []
    for row in np.asarray(tracks).reshape(-1, 8):
        det = detections[int(row[7])]
        people.append((int(row[4]), det[:4], float(det[4]), int(det[5])))
    return people


class SceneCuts:
    """Tells a scene cut (the camera switched view) from motion: the mean absolute difference, 0–255, between the
    grey 64×36 thumbnails of consecutive frames above `threshold`. Call it on every frame ((H, W, 3) uint8)."""

    def __init__(self, threshold: float):
        if threshold <= 0:
            raise UserError(f"scene_cut={threshold}: give a mean absolute difference in (0, 255], or null for none")
        self.threshold, self._last, self.cuts = float(threshold), None, 0

    def __call__(self, rgb: np.ndarray) -> bool:
        import cv2

        thumb = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (64, 36), interpolation=cv2.INTER_AREA)
        cut = self._last is not None and float(np.abs(thumb.astype(np.int16) - self._last).mean()) > self.threshold
        self._last = thumb.astype(np.int16)
        self.cuts += int(cut)
        return cut


def forget_tracks(tracker) -> None:
    """End every track of an ultralytics tracker (tracked, lost and removed ones) and keep its id sequence, so that
    the people after a scene cut get new ids rather than the old tracks' (and BoT-SORT's motion compensation starts
    over). `tracker.reset()` would also restart the ids at 1."""
    tracker.tracked_stracks, tracker.lost_stracks, tracker.removed_stracks = [], [], []
    if hasattr(tracker, "gmc"):
        tracker.gmc.reset_params()
