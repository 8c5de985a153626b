"""Capture face crops of one person from a camera or a video file into `<out_dir>/<name>/0001.jpg …`,
the identity-folder layout that face-recognition training reads."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import UserError
from core.images import swap_red_blue
from faces import FaceDetector

log = logging.getLogger(__name__)


@dataclass
class CaptureResult:
    folder: Path
    saved: list[Path]
    frames_read: int
    no_face: int  # frames skipped: no face found
    several_faces: int  # frames skipped: more than one face, so whose it is is unclear

    def summary(self) -> dict[str, int]:
        return {
            "saved": len(self.saved),
            "frames_read": self.frames_read,
            "frames_no_face": self.no_face,
            "frames_several_faces": self.several_faces,
        }


def open_source(source: int | str) -> cv2.VideoCapture:
    """A camera (an index such as 0) or a video file, opened; a clear error when neither works."""
    if isinstance(source, str) and not source.strip().isdigit():
        if not Path(source).is_file():
            raise UserError(
                f"source={source}: video file not found — give a camera index (source=0) or an existing video file"
            )
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise UserError(f"source={source}: OpenCV cannot read this video — convert it to .mp4 (H.264) or .avi")
        return capture
    index = int(source)
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise UserError(
            f"source={index}: no camera at index {index} on this machine — capture from a video file "
            'instead: source=path/to/video.mp4 (make capture-faces NAME=... ARGS="source=path/to/video.mp4")'
        )
    return capture


def capture_faces(
    detector: FaceDetector,
    source: int | str,
    out_dir: str | Path,
    name: str | None,
    crop,
    frames: int = 100,
    every: int = 1,
    max_frames: int | None = None,
    progress: bool = True,
) -> CaptureResult:
    """Read frames until `frames` faces are saved, the source ends, or `max_frames` frames were read.

    Every `every`-th frame is examined; a frame with exactly one face gives one crop (`crop`: a
    `faces.crop.FaceCrop`), a frame with none or several is skipped and counted. Numbering
    continues after the crops already in the folder, so a second capture adds to the first."""
    if not name or not re.fullmatch(r"[\w.-]+", name):
        raise UserError(
            f"NAME={name!r}: give the person's name as letters, digits, '_', '-' or '.' (it names the folder)"
        )
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    existing = [int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit()]
    number = max(existing, default=0)
    capture = open_source(source)
    from tqdm.auto import tqdm

    saved: list[Path] = []
    read = no_face = several = 0
    try:
        with tqdm(total=frames, desc=f"capturing {name} ({detector.name})", unit="face", disable=not progress) as bar:
            while len(saved) < frames and (max_frames is None or read < max_frames):
                ok, bgr = capture.read()
                if not ok:
                    break
                read += 1
                if (read - 1) % every:
                    continue
                rgb = swap_red_blue(bgr)
                detections = detector.detect(rgb)
                if not detections:
                    no_face += 1
                    continue
                if len(detections) > 1:
                    several += 1
                    continue
                number, path = _write_new(folder, number, crop(rgb, detections[0]))
                saved.append(path)
                bar.update(1)
    finally:
        capture.release()
    result = CaptureResult(folder, saved, read, no_face, several)
    if len(saved) < frames:
        log.warning(
            "saved %d of the %d faces asked for: the source ended after %d frames (%d without a face, %d with several)",
            len(saved),
            frames,
            read,
            no_face,
            several,
        )
    return result


def _write_new(folder: Path, number: int, rgb: np.ndarray) -> tuple[int, Path]:
    """Write `rgb` as the first free `NNNN.jpg` after `number`; returns its number and path. The file is created
    exclusively, so a second capture into the same folder at the same time takes the next number, never this one."""
    ok, jpeg = cv2.imencode(".jpg", swap_red_blue(rgb), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise UserError(f"cannot encode a face crop as JPEG ({rgb.shape})")
    while True:
        number += 1
        path = folder / f"{number:04d}.jpg"
        try:
            with open(path, "xb") as handle:
                handle.write(jpeg.tobytes())
            return number, path
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot write {path} — check that {folder} is writable ({exc.strerror})") from exc
