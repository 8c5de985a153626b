"""Batch face detection over a folder: one JPEG per face, an annotated copy of each image, and a table
of every face, computed in a process pool (dlib holds the GIL) with results identical to a serial run.

Outputs under `out_dir` (the input folder is never written to), named by `core.outputs.output_name`
(the input's extension folded into the name, so `portrait.jpg` and `portrait.png` never share an output):
  faces/<sub-folder>/<name>_<ext>_face<k>.jpg   one crop per face, k = 1, 2, … best score first
  annotated/<sub-folder>/<name>_<ext>.jpg       the image with its boxes and scores drawn
  faces.csv, faces.json                         every face: image (relative to the input), face, detector, score,
                                                box, crop (the crop's file, relative to `out_dir`)
  contact_sheet.jpg                             the first crops side by side
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from core.errors import UserError
from core.images import UnreadableImage, find_images, read_rgb, swap_red_blue
from core.outputs import output_name
from faces import Detection, FaceDetector
from faces.crop import crop_box, crop_face

log = logging.getLogger(__name__)

CSV_COLUMNS = ["image", "face", "detector", "score", "left", "top", "right", "bottom", "crop"]


def crop_file(image: str, k: int) -> str:
    """The k-th face crop of input `image` (relative to the input folder), relative to `out_dir`, '/'-separated."""
    return (Path("faces") / output_name(image, ".jpg", f"_face{k}")).as_posix()


def annotated_file(image: str) -> str:
    """The annotated copy of input `image` (relative to the input folder), relative to `out_dir`, '/'-separated."""
    return (Path("annotated") / output_name(image, ".jpg")).as_posix()


@dataclass(frozen=True)
class CropSpec:
    """How a face is cut out: `margin` × the box on each side, `square`, resized to `size` (None: as is)."""

    margin: float = 0.0
    square: bool = False
    size: int | None = None


@dataclass
class ImageResult:
    image: str  # relative to the input folder, '/'-separated
    width: int = 0
    height: int = 0
    faces: list[Detection] = field(default_factory=list)
    seconds: float = 0.0  # detection time
    error: str | None = None  # why the file was skipped


@dataclass
class BatchResult:
    images: list[ImageResult]
    wall_seconds: float

    @property
    def processed(self) -> list[ImageResult]:
        return [r for r in self.images if r.error is None]

    @property
    def skipped(self) -> list[ImageResult]:
        return [r for r in self.images if r.error is not None]

    def table(self, detector: str) -> pd.DataFrame:
        rows = [
            {
                "image": r.image,
                "face": k,
                "detector": detector,
                "score": round(d.score, 4),
                "left": d.left,
                "top": d.top,
                "right": d.right,
                "bottom": d.bottom,
                "crop": crop_file(r.image, k),
            }
            for r in self.processed
            for k, d in enumerate(r.faces, start=1)
        ]
        return pd.DataFrame(rows, columns=CSV_COLUMNS)

    def summary(self) -> dict[str, float]:
        processed = self.processed
        return {
            "images_found": len(self.images),
            "images_processed": len(processed),
            "images_skipped": len(self.skipped),
            "faces_found": sum(len(r.faces) for r in processed),
            "images_without_face": sum(not r.faces for r in processed),
            "seconds_per_image": self.wall_seconds / max(1, len(processed)),
            "detect_seconds_per_image": sum(r.seconds for r in processed) / max(1, len(processed)),
        }


def check_folders(in_dir: Path, out_dir: Path) -> None:
    """The output must be a folder (or not exist yet) and share no part of the tree with the input."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"OUT={out_dir} is a file, not a folder — give a folder for the crops and faces.csv")
    if not in_dir.is_dir():
        raise UserError(f"IN={in_dir} is not a folder — give a folder of images")
    inside, outside = in_dir.resolve(), out_dir.resolve()
    if outside == inside or inside in outside.parents or outside in inside.parents:
        raise UserError(
            f"OUT={out_dir} and IN={in_dir} overlap — choose an output folder outside the input, so no input image can be overwritten"
        )


def detect_folder(
    detector: FaceDetector,
    in_dir: str | Path,
    out_dir: str | Path,
    crop: CropSpec = CropSpec(),
    workers: int | None = None,
    progress: bool = True,
    threads: bool = False,
) -> BatchResult:
    """Detect, crop and annotate every image under `in_dir` (recursively) into `out_dir`.

    `workers`: processes (None: one per available core; 1: in this process), forked, fed the largest images first;
    or threads of this process when `threads` (benchmarks/face_detectors.py compares the two: on 2 cores processes
    1.59× serial, threads 1.30×, since dlib's HOG detection holds the GIL). Results are in file order either way.
    Unreadable files are skipped, logged and counted, never fatal."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    check_folders(in_dir, out_dir)
    files = find_images(in_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = min(workers or len(os.sched_getaffinity(0)), len(files))
    job = _Job(detector, in_dir, out_dir, crop)
    from tqdm.auto import tqdm

    bar = dict(
        total=len(files),
        desc=f"detecting faces ({detector.name}, {workers} worker{'s' * (workers > 1)})",
        unit="img",
        disable=not progress,
    )
    start = time.perf_counter()
    if workers == 1:
        results = [job(f) for f in tqdm(files, **bar)]
    else:
        # largest images first: the one large card then runs beside the many small ones instead of last and alone
        order = sorted(range(len(files)), key=lambda k: -_pixels(files[k]))
        with tqdm(**bar) as counter:
            done = _in_parallel(job, [files[k] for k in order], workers, threads, counter)
        results = [None] * len(files)
        for k, image_result in zip(order, done):
            results[k] = image_result
    result = BatchResult(results, time.perf_counter() - start)
    for skipped in result.skipped:
        log.warning("skipped %s: %s", skipped.image, skipped.error)
    _write_tables(result, detector, out_dir)
    sheet = contact_sheet(out_dir, result)
    if sheet is not None:
        _write_jpeg(out_dir / "contact_sheet.jpg", sheet)
    return result


def _pixels(path: Path) -> int:
    """Width × height from the image's header (0 when unreadable: such a file costs nothing)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001  (PIL raises several kinds for a bad file; the job reports it)
        return 0


def _in_parallel(job: _Job, files: list[Path], workers: int, threads: bool, bar) -> list[ImageResult]:
    """`job` over `files` in `workers` processes (or threads), results in the order of `files`, `bar` advanced."""
    results = []
    if threads:
        # one detector per thread: dlib's detector objects are not safe to share between threads (a shared HOG
        # detector crashed the process in bench-face-detectors); each thread builds its own on first use
        local = threading.local()

        def run(path: Path) -> ImageResult:
            if not hasattr(local, "job"):
                detector = copy.copy(job.detector)
                detector.__dict__.pop("_native", None)  # the native detector (a cached_property) is rebuilt
                local.job = dataclasses.replace(job, detector=detector)
            return local.job(path)

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for image_result in pool.map(run, files):
                results.append(image_result)
                bar.update()
        return results
    # fork, not spawn: a spawned child re-imports the entry's module (torch, Lightning, MLflow: seconds per child,
    # more than 24 cards take to detect). OpenCV goes to one thread before the fork so that no child inherits a
    # thread pool whose threads it does not have (a forked child entering it hangs: opencv/opencv#5150); the
    # children use dlib and OpenCV only, never torch's OpenMP.
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
            for image_result in pool.imap(_run_worker, files):
                results.append(image_result)
                bar.update()
    finally:
        cv2.setNumThreads(cv2_threads)
    return results


@dataclass
class _Job:
    detector: FaceDetector
    in_dir: Path
    out_dir: Path
    crop: CropSpec

    def __call__(self, path: Path) -> ImageResult:
        relative = path.relative_to(self.in_dir)
        result = ImageResult(relative.as_posix())
        try:
            rgb = read_rgb(path)
        except UnreadableImage as exc:
            result.error = str(exc)
            return result
        result.height, result.width = rgb.shape[:2]
        start = time.perf_counter()
        result.faces = self.detector.detect(rgb)
        result.seconds = time.perf_counter() - start
        for k, detection in enumerate(result.faces, start=1):
            face = crop_face(rgb, detection, self.crop.margin, self.crop.square, self.crop.size)
            _write_jpeg(self.out_dir / crop_file(result.image, k), face)
        _write_jpeg(self.out_dir / annotated_file(result.image), annotate(rgb, result.faces, self.crop))
        return result


_worker_job: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _worker_job
    _worker_job = job  # OpenCV is at one thread already (set before the fork): one process per core


def _run_worker(path: Path) -> ImageResult:
    return _worker_job(path)


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), swap_red_blue(rgb), [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise UserError(f"cannot write {path} — check that the output folder is writable")


def annotate(rgb: np.ndarray, faces: Sequence[Detection], crop: CropSpec | None = None) -> np.ndarray:
    """A copy with each face box (green), its crop region (thin yellow, when it differs) and score."""
    image = rgb.copy()
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    for k, d in enumerate(faces, start=1):
        if crop is not None and (crop.margin or crop.square):
            left, top, right, bottom = crop_box(d, rgb.shape, crop.margin, crop.square)
            cv2.rectangle(image, (left, top), (right - 1, bottom - 1), (255, 220, 0), 1)
        cv2.rectangle(image, (d.left, d.top), (d.right - 1, d.bottom - 1), (0, 255, 0), thickness)
        cv2.putText(
            image,
            f"{k}: {d.score:.2f}",
            (d.left, max(12, d.top - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            (0, 255, 0),
            thickness,
            cv2.LINE_AA,
        )
    return image


def contact_sheet(out_dir: Path, result: BatchResult, tile: int = 96, limit: int = 64) -> np.ndarray | None:
    """Up to `limit` crops (as written) in a grid of `tile`-pixel squares; None when no face was found."""
    from skimage.util import montage

    paths = [out_dir / crop_file(r.image, k) for r in result.processed for k in range(1, len(r.faces) + 1)][:limit]
    if not paths:
        return None
    tiles = np.stack([cv2.resize(read_rgb(p), (tile, tile), interpolation=cv2.INTER_AREA) for p in paths])
    return montage(tiles, channel_axis=-1, padding_width=2, fill=(255, 255, 255))


def _write_tables(result: BatchResult, detector: FaceDetector, out_dir: Path) -> None:
    table = result.table(detector.name)
    table.to_csv(out_dir / "faces.csv", index=False)
    report = {
        "detector": repr(detector),
        "summary": result.summary(),
        "faces": table.to_dict(orient="records"),
        "images": [
            {
                "image": r.image,
                "annotated": annotated_file(r.image),
                "width": r.width,
                "height": r.height,
                "faces": len(r.faces),
            }
            for r in result.processed
        ],
        "skipped": [{"image": r.image, "error": r.error} for r in result.skipped],
    }
    (out_dir / "faces.json").write_text(json.dumps(report, indent=1))
