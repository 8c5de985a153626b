"""Who is without a mask, and for how long: per-person state and alerts for a tracked video, without a model.

`MaskAlerts.update` takes each frame's tracked people (track id, box, confidence, class) and keeps, per track, the
classes of its last `window` observations; the track's mask state is their majority (a tie goes to the most recent
of the tied classes), so a one-frame misclassification does not flip it. A person whose smoothed state is an alert
class (no mask, mask worn incorrectly) for `alert_after_s` seconds without interruption raises ONE `AlertEvent`
— once per track, however long they stay unmasked. `EventSink` writes each event as a JSON line to stdout and to
`events.jsonl` and, when a webhook URL is given, POSTs it from a background thread (bounded retries, short
timeouts; failures are warnings, never errors).
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Container, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from core.errors import UserError

log = logging.getLogger(__name__)

TRACK_CSV_FIELDS = (
    "track_id",
    "first_frame",
    "last_frame",
    "first_time_s",
    "last_time_s",
    "frames_seen",
    "state",
    "mean_confidence",
    "unmasked",
    "alert_time_s",
)


@dataclass
class AlertEvent:
    """One alert: `time_s` seconds since the start of the source (see core.video_sources.Frame), `frame` its index,
    `box` [x0, y0, x1, y1] in pixels, `cls` the class name of the detection that triggered it."""

    time_s: float
    track_id: int
    cls: str
    confidence: float
    box: list[float]
    frame: int
    source: str = ""

    def to_dict(self) -> dict:
        """The JSON form: keys time_s, wall_time (ISO 8601, UTC), track_id, class, confidence, box, frame, source."""
        data = asdict(self)
        data["class"] = data.pop("cls")
        return {"event": "unmasked_person", "wall_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **data}


@dataclass
class TrackRecord:
    """What is known about one tracked person (times in seconds since the start, frames as indices)."""

    track_id: int
    first_frame: int
    first_time_s: float
    window: int
    last_frame: int = 0
    last_time_s: float = 0.0
    frames_seen: int = 0
    confidence_sum: float = 0.0
    recent: deque = field(init=False)
    state: int = -1  # smoothed class index
    unmasked_since_s: float | None = None
    ever_unmasked: bool = False
    alert: AlertEvent | None = None

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.window)

    def observe(self, cls: int) -> int:
        """Add one observed class; return the smoothed class (majority of the window, ties → most recent)."""
        self.recent.append(cls)
        counts = Counter(self.recent)
        best = max(counts.values())
        self.state = next(c for c in reversed(self.recent) if counts[c] == best)
        return self.state


class MaskAlerts:
    """Per-track smoothed mask state and the one-alert-per-person rule (see the module doc).

    `names`: the detector's class names (index → name); `alert_classes`: the names that count as unmasked (each
    must be in `names`, else UserError naming `key`); `alert_after_s` ≥ 0 seconds; `window` ≥ 1 observations."""

    def __init__(
        self,
        names: Sequence[str],
        alert_classes: Iterable[str],
        alert_after_s: float,
        window: int,
        source: str = "",
        key: str = "alert_classes",
    ):
        self.names = list(names)
        unknown = [name for name in alert_classes if name not in self.names]
        if unknown:
            raise UserError(f"{key}: {unknown} are not classes of the detector: {self.names}")
        if window < 1 or alert_after_s < 0:
            raise UserError(
                f"smooth_frames={window}, alert_after_s={alert_after_s}: need smooth_frames ≥ 1 and alert_after_s ≥ 0"
            )
        self.alert_ids = {self.names.index(name) for name in alert_classes}
        self.alert_after_s, self.window, self.source = float(alert_after_s), int(window), source
        self.tracks: dict[int, TrackRecord] = {}

    def update(
        self,
        frame: int,
        time_s: float,
        people: Iterable[tuple[int, Sequence[float], float, int]],
        may_alert: Container[int] | None = None,
    ) -> list[AlertEvent]:
        """Record one frame's tracked people as (track id, box x0 y0 x1 y1, confidence, class index); return the
        alerts this frame raises (at most one per track over the whole run). `may_alert`: the track ids that may
        raise one this frame (those inside a zone; None: everyone); a track outside keeps its state and its time
        unmasked, and alerts on its first frame inside once that time is reached."""
        events = []
        for track_id, box, confidence, cls in people:
            track_id, cls = int(track_id), int(cls)
            record = self.tracks.get(track_id)
            if record is None:
                record = self.tracks[track_id] = TrackRecord(track_id, frame, time_s, self.window)
            record.last_frame, record.last_time_s = frame, time_s
            record.frames_seen += 1
            record.confidence_sum += float(confidence)
            if record.observe(cls) not in self.alert_ids:
                record.unmasked_since_s = None
                continue
            record.ever_unmasked = True
            if record.unmasked_since_s is None:
                record.unmasked_since_s = time_s
            if (
                record.alert is None
                and (may_alert is None or track_id in may_alert)
                and time_s - record.unmasked_since_s >= self.alert_after_s - 1e-9
            ):
                record.alert = AlertEvent(
                    round(float(time_s), 3),
                    track_id,
                    self.names[cls],
                    round(float(confidence), 4),
                    [round(float(v), 1) for v in box],
                    frame,
                    self.source,
                )
                events.append(record.alert)
        return events

    def unmasked_now(self, track_ids: Iterable[int]) -> set[int]:
        """Those of `track_ids` whose smoothed state is an alert class."""
        return {int(t) for t in track_ids if int(t) in self.tracks and self.tracks[int(t)].state in self.alert_ids}

    def state_name(self, track_id: int) -> str:
        """The smoothed class name of a track ('' before it is seen)."""
        record = self.tracks.get(track_id)
        return self.names[record.state] if record is not None and record.state >= 0 else ""

    def summary(self) -> dict[str, int]:
        """{"people": tracks seen, "unmasked_people": tracks whose smoothed state was ever an alert class,
        "alerts": alerts raised}."""
        records = self.tracks.values()
        return {
            "people": len(self.tracks),
            "unmasked_people": sum(r.ever_unmasked for r in records),
            "alerts": sum(r.alert is not None for r in records),
        }

    def rows(self) -> list[dict]:
        """One row per track (TRACK_CSV_FIELDS), by track id."""
        return [
            {
                "track_id": r.track_id,
                "first_frame": r.first_frame,
                "last_frame": r.last_frame,
                "first_time_s": round(r.first_time_s, 3),
                "last_time_s": round(r.last_time_s, 3),
                "frames_seen": r.frames_seen,
                "state": self.names[r.state],
                "mean_confidence": round(r.confidence_sum / r.frames_seen, 4),
                "unmasked": int(r.ever_unmasked),
                "alert_time_s": "" if r.alert is None else r.alert.time_s,
            }
            for r in sorted(self.tracks.values(), key=lambda r: r.track_id)
        ]


class Webhook:
    """POST each event as JSON to `url` from a background thread: `attempts` tries with `timeout_s` each and
    `backoff_s` between them; a failure is one warning. `close(wait_s)` waits at most that long for the queue."""

    def __init__(self, url: str, attempts: int = 3, timeout_s: float = 2.0, backoff_s: float = 0.5):
        self.url, self.attempts, self.timeout_s, self.backoff_s = (
            url,
            max(1, int(attempts)),
            float(timeout_s),
            float(backoff_s),
        )
        self.delivered = self.failed = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def send(self, event: dict) -> None:
        """Queue one event (returns at once)."""
        self._queue.put(event)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            self._post(event)

    def _post(self, event: dict) -> None:
        import requests

        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                requests.post(self.url, json=event, timeout=self.timeout_s).raise_for_status()
                self.delivered += 1
                return
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                if attempt < self.attempts:
                    time.sleep(self.backoff_s * attempt)
        self.failed += 1
        log.warning(
            "webhook %s: event of track %s not delivered after %d attempts (%s)",
            self.url,
            event.get("track_id"),
            self.attempts,
            error,
        )

    def close(self, wait_s: float = 10.0) -> None:
        """Stop after the queued events are sent, waiting at most `wait_s` seconds (then they are dropped)."""
        self._queue.put(None)
        self._thread.join(wait_s)
        if self._thread.is_alive():
            log.warning("webhook %s: gave up waiting for %d queued event(s)", self.url, self._queue.qsize())


class EventSink:
    """Alerts out: a JSON line on `stream` (stdout) and appended to `path` (flushed per event), and to the webhook
    when one is given. Use as a context manager, or call `close()`."""

    def __init__(self, path: str | Path, stream: TextIO | None = None, webhook: Webhook | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115  (closed by close())
        self.stream, self.webhook, self.count = stream if stream is not None else sys.stdout, webhook, 0

    def emit(self, event: AlertEvent) -> None:
        """Write one event everywhere."""
        data = event.to_dict()
        line = json.dumps(data)
        self._file.write(line + "\n")
        self._file.flush()
        print(line, file=self.stream, flush=True)
        if self.webhook is not None:
            self.webhook.send(data)
        self.count += 1

    def close(self, wait_s: float = 10.0) -> None:
        """Close the file and let the webhook deliver what is queued (at most `wait_s` seconds)."""
        if not self._file.closed:
            self._file.close()
        if self.webhook is not None:
            self.webhook.close(wait_s)

    def __enter__(self) -> EventSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
