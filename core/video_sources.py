"""Live video input for monitors: a video file, a camera index or a network stream, read frame by frame.

`parse_source` tells them apart (`0` or `"0"` → camera 0, `rtsp://…`/`http(s)://…` → stream, anything else → file);
`VideoSource.frames()` yields `Frame`s. A camera that is absent is a UserError; a camera or stream that cannot be
opened or stops delivering frames is reopened with exponential back-off, a bounded number of times, each attempt
logged as a warning; a video file simply ends.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import UserError

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def parse_source(source: int | str | Path | None, key: str = "source") -> int | str:
    """A camera index as an int (`0`, `"0"`, `" 1 "`), a stream URL as it is, or a video file path as a str.

    A digit string is a camera index unless a file of that name exists. UserError (message starting with
    `key=`) for a missing value or a file that does not exist."""
    if source is None or (isinstance(source, str) and not source.strip()):
        raise UserError(f"{key}: give a video file, a camera index (0) or a stream URL (rtsp://…, http(s)://…)")
    if isinstance(source, bool):
        raise UserError(f"{key}={source}: not a video file, camera index or stream URL")
    if isinstance(source, int):
        return source
    text = str(source).strip()
    if text.isdigit() and not Path(text).exists():
        return int(text)
    if text.lower().startswith(STREAM_SCHEMES):
        return text
    if not Path(text).is_file():
        raise UserError(
            f"{key}={text}: video file not found — give a video file, a camera index (0) or a stream "
            "URL (rtsp://…, http(s)://…)"
        )
    return text


def redact(url: str) -> str:
    """A stream URL fit for logs and run records: a password in it (`rtsp://user:secret@host/…`) becomes `***`."""
    return re.sub(r"^([a-zA-Z][\w+.-]*://[^/@:]*):[^/]*@", r"\1:***@", url)


def open_quietly(source: int | str) -> cv2.VideoCapture:
    """cv2.VideoCapture(source) with OpenCV's own logging silenced while it probes its backends (an absent camera
    otherwise prints a screen of backend warnings before our one-line error)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(source)
    finally:
        cv2.utils.logging.setLogLevel(level)


def source_kind(source: int | str) -> str:
    """'camera', 'stream' or 'file' for a value returned by `parse_source`."""
    if isinstance(source, int):
        return "camera"
    return "stream" if source.lower().startswith(STREAM_SCHEMES) else "file"


@dataclass
class Frame:
    """One frame: `index` counts frames read from 0; `time_s` is seconds since the start — the video's own time
    for a file (the frame's timestamp, CAP_PROP_POS_MSEC, so a phone's variable-frame-rate clip keeps its real
    times; index / fps where the container gives none), wall-clock time for a camera or a stream; `rgb` is
    (H, W, 3) uint8."""

    index: int
    time_s: float
    rgb: np.ndarray


class VideoSource:
    """Frames from a file, a camera or a stream (see the module doc).

    `reconnect_attempts`: how many times in a row a live source is reopened before giving up (then `frames()`
    ends and `gave_up` is True); the waits are `backoff_s`, 2×, 4×… capped at `backoff_max_s` seconds.
    `open_capture`, `sleep` and `clock` are injectable for tests. Raises UserError (from the constructor) for an
    absent camera or a video file OpenCV cannot read."""

    def __init__(
        self,
        source: int | str,
        reconnect_attempts: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 16.0,
        key: str = "source",
        open_capture: Callable[[int | str], cv2.VideoCapture] = open_quietly,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.source, self.kind, self.key = source, source_kind(source), key
        self.reconnect_attempts, self.backoff_s, self.backoff_max_s = (
            int(reconnect_attempts),
            float(backoff_s),
            float(backoff_max_s),
        )
        self._open, self._sleep, self._clock = open_capture, sleep, clock
        self.reconnects = 0  # reopen attempts made in all
        self.gave_up = False
        self._pending: np.ndarray | None = None  # a frame read while reopening, yielded next
        self._capture: cv2.VideoCapture | None = self._open(source)
        if not self._capture.isOpened():
            self._capture.release()
            self._capture = None
            if self.kind == "camera":
                raise UserError(
                    f"{key}={source}: no camera at index {source} on this machine — give another index, "
                    "a video file or a stream URL"
                )
            if self.kind == "file":
                raise UserError(f"{key}={source}: OpenCV cannot read this video — convert it to .mp4 (H.264) or .avi")
            log.warning("stream %s does not answer", self.label)
        self.fps = self._fps()

    @property
    def label(self) -> str:
        """The source for logs and run records: the file's path, the camera index, the URL without its password."""
        return redact(str(self.source)) if self.kind == "stream" else str(self.source)

    @property
    def name(self) -> str:
        """A short name for runs and files: the file's name, `camera<N>` or the URL."""
        if self.kind == "file":
            return Path(self.source).name
        return f"camera{self.source}" if self.kind == "camera" else self.label

    def _fps(self) -> float:
        fps = self._capture.get(cv2.CAP_PROP_FPS) if self._capture is not None else 0.0
        return float(fps) if fps and 0 < fps < 1000 else 25.0

    def _reopen(self) -> bool:
        """Reopen a live source with back-off; False once `reconnect_attempts` attempts in a row failed."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        for attempt in range(1, self.reconnect_attempts + 1):
            wait = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
            log.warning(
                "%s %s: no frames — reopening in %.1f s (attempt %d/%d)",
                self.kind,
                self.label,
                wait,
                attempt,
                self.reconnect_attempts,
            )
            self._sleep(wait)
            self.reconnects += 1
            capture = self._open(self.source)
            ok, bgr = capture.read() if capture.isOpened() else (False, None)
            if ok:
                log.warning("%s %s: reopened", self.kind, self.label)
                self._capture, self._pending = capture, bgr
                self.fps = self._fps()
                return True
            capture.release()
        log.warning("%s %s: gave up after %d attempts to reopen it", self.kind, self.label, self.reconnect_attempts)
        self.gave_up = True
        return False

    def frames(self, max_frames: int | None = None) -> Iterator[Frame]:
        """Frames until the file ends, a live source cannot be reopened, or `max_frames` were read."""
        self._pending = None
        index, start, last_time_s = 0, None, None
        try:
            while max_frames is None or index < max_frames:
                if self._pending is not None:
                    ok, bgr, self._pending = True, self._pending, None
                elif self._capture is not None:
                    ok, bgr = self._capture.read()
                else:
                    ok, bgr = False, None
                if not ok:
                    if self.kind == "file" or not self._reopen():
                        return
                    continue
                now = self._clock()
                start = now if start is None else start
                if self.kind == "file":
                    time_s = self._file_time(index, last_time_s)
                else:
                    time_s = now - start
                last_time_s = time_s
                yield Frame(index, time_s, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            self.close()

    def _file_time(self, index: int, last_time_s: float | None) -> float:
        """The video's own time of the frame just read, in seconds: its timestamp, or index / fps when the
        container gives none (0 after the first frame) or one that does not move forward."""
        stamp = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000 if self._capture is not None else 0.0
        if index == 0 or (last_time_s is not None and stamp > last_time_s):
            return float(stamp) if index else max(float(stamp), 0.0)
        return index / self.fps

    def close(self) -> None:
        """Release the capture (idempotent)."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class TimedVideoWriter:
    """An MP4 written frame by frame at each frame's own time (`write(rgb, time_s)`), so that a variable-frame-rate
    source gives a video whose frames play when they happened (OpenCV's writer knows one fixed rate). Encoded with
    FFmpeg's MPEG-4 Part 2 encoder through PyAV (what OpenCV's "mp4v" writes), timestamps in milliseconds; a time
    that does not move forward is moved 1 ms past the previous frame. `fps` is the nominal rate the container
    states. Use as a context manager or call `close`."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        from fractions import Fraction

        import av

        self.path, (self.width, self.height) = Path(path), size
        self._container = av.open(str(self.path), "w")
        self._stream = self._container.add_stream("mpeg4", rate=Fraction(round(fps * 1000), 1000))
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"
        self._stream.time_base = self._stream.codec_context.time_base = Fraction(1, 1000)
        self._last_pts: int | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray, time_s: float) -> None:
        """Add `rgb` (H, W, 3) uint8, H and W as given to the constructor, shown at `time_s` seconds."""
        import av

        pts = round(time_s * 1000)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, self._last_pts = pts, pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file (idempotent)."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> TimedVideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FrameLoop:
    """What `run_frames` did: `frames` processed, `interrupted` (Ctrl-C ended it), `seconds` of wall time."""

    frames: int
    interrupted: bool
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return round(self.frames / self.seconds, 2) if self.seconds > 0 else 0.0


def run_frames(
    frames: Iterable[Frame],
    step: Callable[[Frame], np.ndarray | None],
    video_path: str | Path | None = None,
    fps: float = 25.0,
    progress_every: int = 0,
    progress: Callable[[], object] = lambda: "",
) -> FrameLoop:
    """The loop of every tool that follows a video: `step(frame)` on each frame of `frames`, its returned RGB image
    (H, W, 3 uint8) written to `video_path` at the frame's own time (`TimedVideoWriter`, nominal rate `fps`; None:
    no video), a log line `frame N: <progress()>` every `progress_every` frames (0: none). A KeyboardInterrupt
    (Ctrl-C) while reading or in `step` ends the loop with `interrupted`; the video is closed and a generator's
    capture released either way, so the caller writes what was seen."""
    writer, count, interrupted, start = None, 0, False, time.perf_counter()
    try:
        for frame in frames:
            drawn = step(frame)
            if video_path is not None and drawn is not None:
                if writer is None:
                    height, width = drawn.shape[:2]
                    writer = TimedVideoWriter(video_path, fps, (width, height))
                writer.write(drawn, frame.time_s)
            count += 1
            if progress_every and count % progress_every == 0:
                log.info("frame %d: %s", count, progress())
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted after %d frames: writing what was seen", count)
    finally:
        if writer is not None:
            writer.close()
        if hasattr(frames, "close"):  # a generator: release its capture now
            frames.close()
    return FrameLoop(count, interrupted, time.perf_counter() - start)
