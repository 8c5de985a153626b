"""Where tracked people are: named zones (polygons) and counting lines over a video, with supervision's
`PolygonZone` and `LineZone` for the geometry and their annotators for the drawing.

`Geometry.from_config` reads `zones:` ({name: [[x, y], …] vertices}) and `lines:` ({name: [[x0, y0], [x1, y1]]}) in
pixels or as shares 0–1 of the frame's width and height (`coordinates:`); `ZoneCounter` resolves them on the first
frame and, for each frame's tracked people, tells which zones hold each person (the centre of their box, anchor
`CENTER`), counts line crossings per track (`in`/`out`, supervision's sides: see `LineZone`), and keeps per zone
the people seen, the unmasked people seen, the masked share of the people of each minute, and each track's dwell
time. With no zone, the whole frame is one zone named `frame`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.errors import UserError

COORDINATES = ("relative", "pixels")
FRAME_ZONE = "frame"  # the zone of the whole frame when none is given
DWELL_CSV_FIELDS = ("track_id", "zone", "visits", "first_time_s", "last_time_s", "dwell_s")


def _points(value, key: str, count: int | None) -> np.ndarray:
    """An (N, 2) float array from a list of [x, y] pairs; UserError naming `key` for any other shape."""
    try:
        points = np.asarray([[float(x), float(y)] for x, y in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{key}: give a list of [x, y] points, got {value!r}") from None
    if count is not None and len(points) != count:
        raise UserError(f"{key}: a line is 2 points [[x0, y0], [x1, y1]], got {len(points)}")
    if count is None and len(points) < 3:
        raise UserError(f"{key}: a zone is a polygon of at least 3 points, got {len(points)}")
    return points


@dataclass(frozen=True)
class Geometry:
    """Named zones ({name: (N, 2) vertices}) and lines ({name: (2, 2) start and end}), in pixels when
    `coordinates` is "pixels", else as shares of the frame's width (x) and height (y)."""

    zones: dict[str, np.ndarray] = field(default_factory=dict)
    lines: dict[str, np.ndarray] = field(default_factory=dict)
    coordinates: str = "relative"

    @classmethod
    def from_config(cls, zones: Mapping | None, lines: Mapping | None, coordinates: str = "relative") -> Geometry:
        """From the config's `zones`, `lines` and `coordinates`; UserError naming the bad key (`zones.<name>`,
        `lines.<name>`, `coordinates`) for a shape that is no polygon or line, or a relative value outside 0–1."""
        if coordinates not in COORDINATES:
            raise UserError(f"coordinates: {coordinates!r} is none of {list(COORDINATES)}")
        parsed_zones = {str(k): _points(v, f"zones.{k}", None) for k, v in (zones or {}).items()}
        parsed_lines = {str(k): _points(v, f"lines.{k}", 2) for k, v in (lines or {}).items()}
        if coordinates == "relative":
            for kind, items in (("zones", parsed_zones), ("lines", parsed_lines)):
                for name, points in items.items():
                    if points.min() < 0 or points.max() > 1:
                        raise UserError(
                            f"{kind}.{name}: relative coordinates lie in 0–1 (shares of the frame's width and "
                            "height); give coordinates=pixels for pixel values"
                        )
        return cls(parsed_zones, parsed_lines, coordinates)

    def in_pixels(self, width: int, height: int) -> Geometry:
        """The same geometry in pixels of a `width` × `height` frame."""
        if self.coordinates == "pixels":
            return self
        scale = np.array([width, height], np.float64)
        return Geometry(
            {k: v * scale for k, v in self.zones.items()}, {k: v * scale for k, v in self.lines.items()}, "pixels"
        )


@dataclass
class Stay:
    """One track's time in one zone: visits (entries), first and last time inside, seconds inside in all."""

    visits: int = 0
    first_time_s: float = 0.0
    last_time_s: float = 0.0
    dwell_s: float = 0.0
    inside_at: int | None = None  # the frame index at which it was last inside


@dataclass
class ZoneStats:
    """What one zone saw: track ids inside, those inside while unmasked, alerts raised inside, and per minute of
    source time the people inside and those of them never unmasked inside during that minute."""

    people: set[int] = field(default_factory=set)
    unmasked: set[int] = field(default_factory=set)
    alerts: int = 0
    minute_people: dict[int, set[int]] = field(default_factory=dict)
    minute_unmasked: dict[int, set[int]] = field(default_factory=dict)
    stays: dict[int, Stay] = field(default_factory=dict)

    def per_minute(self) -> list[dict]:
        """[{"minute", "people", "masked_share"}] for each minute with someone inside, in order; the masked share
        is 1 − (people unmasked inside that minute) / (people inside that minute)."""
        rows = []
        for minute in sorted(self.minute_people):
            people = len(self.minute_people[minute])
            unmasked = len(self.minute_unmasked.get(minute, ()))
            rows.append({"minute": minute, "people": people, "masked_share": round(1 - unmasked / people, 4)})
        return rows


class ZoneCounter:
    """Zones and lines over a tracked video (see the module doc). `geometry` is resolved to pixels on the first
    frame; with no zone the whole frame is the zone `frame`. `restrict_alerts`: whether `may_alert` asks the
    zones (True when zones are given)."""

    def __init__(self, geometry: Geometry):
        self.geometry = geometry
        self.restrict_alerts = bool(geometry.zones)
        self.stats: dict[str, ZoneStats] = {name: ZoneStats() for name in geometry.zones or {FRAME_ZONE: None}}
        self.zones: dict = {}
        self.lines: dict = {}
        self.size: tuple[int, int] | None = None
        self._last: tuple[int, float] | None = None  # the previous frame's index and time

    def _resolve(self, width: int, height: int) -> None:
        import supervision as sv

        pixels = self.geometry.in_pixels(width, height)
        polygons = pixels.zones or {FRAME_ZONE: np.array([[0, 0], [width, 0], [width, height], [0, height]], float)}
        anchor = [sv.Position.CENTER]  # a face box: its centre, not its bottom (a person's feet)
        self.zones = {
            name: sv.PolygonZone(np.round(points).astype(np.int64), triggering_anchors=anchor)
            for name, points in polygons.items()
        }
        self.lines = {
            name: sv.LineZone(sv.Point(*points[0]), sv.Point(*points[1]), triggering_anchors=anchor)
            for name, points in pixels.lines.items()
        }
        self.size = (width, height)

    def update(
        self, frame: int, time_s: float, people: Sequence[tuple[int, Sequence[float], float, int]], shape
    ) -> dict[int, list[str]]:
        """One frame's tracked people (track id, box x0 y0 x1 y1 in pixels, confidence, class) in a frame of
        `shape` (H, W, …): updates the line counts and each track's stays; returns {track id: names of the zones
        holding it}."""
        import supervision as sv

        if self.size is None:
            self._resolve(int(shape[1]), int(shape[0]))
        ids = np.array([int(p[0]) for p in people], dtype=int)
        detections = sv.Detections(
            xyxy=np.array([p[1] for p in people], dtype=np.float32).reshape(-1, 4),
            confidence=np.array([p[2] for p in people], dtype=np.float32),
            class_id=np.array([p[3] for p in people], dtype=int),
            tracker_id=ids,
        )
        for line in self.lines.values():
            line.trigger(detections)
        inside: dict[int, list[str]] = {int(t): [] for t in ids}
        for name, zone in self.zones.items():
            mask = zone.trigger(detections) if len(detections) else np.zeros(0, bool)
            for track_id in ids[mask]:
                inside[int(track_id)].append(name)
                self._stay(name, int(track_id), frame, time_s)
        self._last = (frame, time_s)
        return inside

    def _stay(self, zone: str, track_id: int, frame: int, time_s: float) -> None:
        stats = self.stats[zone]
        stats.people.add(track_id)
        stats.minute_people.setdefault(int(time_s // 60), set()).add(track_id)
        stay = stats.stays.get(track_id)
        if stay is None:
            stay = stats.stays[track_id] = Stay(first_time_s=time_s)
        if self._last is not None and stay.inside_at == self._last[0]:
            stay.dwell_s += time_s - self._last[1]  # inside on the previous frame too
        else:
            stay.visits += 1
        stay.inside_at, stay.last_time_s = frame, time_s

    def judged(self, time_s: float, inside: Mapping[int, Iterable[str]], unmasked: Iterable[int]) -> None:
        """Record which tracks inside zones were unmasked (smoothed state an alert class) at `time_s`."""
        unmasked = set(unmasked)
        for track_id, zones in inside.items():
            if track_id in unmasked:
                for name in zones:
                    self.stats[name].unmasked.add(track_id)
                    self.stats[name].minute_unmasked.setdefault(int(time_s // 60), set()).add(track_id)

    def may_alert(self, inside: Mapping[int, Iterable[str]]) -> set[int] | None:
        """The track ids that may raise an alert this frame: those inside a zone, or None (everyone) without
        zones."""
        if not self.restrict_alerts:
            return None
        return {track_id for track_id, zones in inside.items() if zones}

    def alerted(self, track_id: int, inside: Mapping[int, Iterable[str]]) -> None:
        """Count an alert raised by `track_id` in each zone holding it."""
        for name in inside.get(track_id, ()):
            self.stats[name].alerts += 1

    def summary(self) -> dict:
        """{"zones": {name: {"people", "unmasked_people", "alerts", "per_minute"}}, "lines": {name: {"in", "out"}}}."""
        return {
            "zones": {
                name: {
                    "people": len(stats.people),
                    "unmasked_people": len(stats.unmasked),
                    "alerts": stats.alerts,
                    "per_minute": stats.per_minute(),
                }
                for name, stats in self.stats.items()
            },
            "lines": {
                name: {"in": int(line.in_count), "out": int(line.out_count)} for name, line in self.lines.items()
            },
        }

    def dwell_rows(self) -> list[dict]:
        """One row per (track, zone) it entered (DWELL_CSV_FIELDS): visits, first and last time inside, and the
        seconds inside (the frame-to-frame times of the frames it was inside on consecutively)."""
        return [
            {
                "track_id": track_id,
                "zone": name,
                "visits": stay.visits,
                "first_time_s": round(stay.first_time_s, 3),
                "last_time_s": round(stay.last_time_s, 3),
                "dwell_s": round(stay.dwell_s, 3),
            }
            for name, stats in self.stats.items()
            for track_id, stay in sorted(stats.stays.items())
        ]

    def draw(self, bgr: np.ndarray) -> np.ndarray:
        """The zones (with the number of people inside now) and lines (with their in/out counts) drawn on a BGR
        frame, in place; returns it."""
        import supervision as sv

        if not self.geometry.zones and not self.lines:
            return bgr
        thickness = max(1, round(max(bgr.shape[:2]) / 400))
        drawn_zones = self.zones if self.geometry.zones else {}  # the implicit whole-frame zone is not drawn
        for index, (name, zone) in enumerate(drawn_zones.items()):
            colour = sv.ColorPalette.DEFAULT.by_idx(index)
            sv.PolygonZoneAnnotator(zone, colour, thickness=thickness, text_scale=0.4, text_thickness=1).annotate(
                bgr, label=f"{name}: {zone.current_count}"
            )
        annotator = sv.LineZoneAnnotator(thickness=thickness, text_scale=0.4, text_thickness=1)
        for name, line in self.lines.items():
            annotator.annotate(bgr, line)
            start = line.vector.start
            cv_text(bgr, name, (int(start.x) + 4, int(start.y) + 14))
        return bgr


def cv_text(bgr: np.ndarray, text: str, origin: tuple[int, int]) -> None:
    """A small white label with a dark outline at `origin` (pixels), readable on any background."""
    import cv2

    for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, width, cv2.LINE_AA)
