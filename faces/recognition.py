"""Recognise faces in a folder of images: detect, name each face with a recogniser, draw the names, write
recognitions.csv. Two recognisers share one interface (`recognize(rgb, detections) -> [(name, score)]`, a
`score_column` naming what the score is, and `class_names`): `Recognizer`, a trained face classifier that calls a
face `unknown` below a confidence threshold, and `faces.gallery.GalleryRecognizer`, a folder of known people that
calls a face `unknown` beyond a descriptor-distance tolerance. Both also split `recognize` into `scores` (one row of
per-class scores a face) and `decide` (a row, or the mean of a track's rows, to a name: `faces.video`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import pandas as pd
import torch

from core.errors import UserError
from core.images import UnreadableImage, find_images, read_rgb, swap_red_blue
from core.outputs import output_name
from faces import Detection, FaceDetector
from faces.batch import check_folders
from faces.crop import FaceCrop

log = logging.getLogger(__name__)

CSV_COLUMNS = ["image", "face", "name", "confidence", "distance", "left", "top", "right", "bottom", "annotated"]
UNKNOWN = "unknown"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else `os.cpu_count()`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_threads(workers: int = 1, cores: int | None = None, load: float | None = None) -> int:
    """Torch intra-op threads for each of `workers` processes describing faces: the cores free for them,
    max(1, min(cores // workers, cores − round(load))), with `cores` the usable cores (`usable_cores()`) and `load`
    the 1-minute load average before this run starts (`os.getloadavg()`; 0 where the OS has none), i.e. the
    processes already running. Why: torch's default is one thread per core in every process, and OpenMP threads
    that share a core wait on each other; one 150 px chip is too little work to share out, so on a busy machine
    one thread per process describes a face 10–20× faster than the inherited two (26 ms vs 285–604 ms measured
    with five processes on two cores). Raises ValueError when `workers` < 1."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores // workers, cores - round(load)))


class FaceRecognizer(Protocol):
    """What names faces (`Recognizer`, `faces.gallery.GalleryRecognizer`): `class_names`, the column its score goes
    to (`score_column`), per-class `scores` (N, C) of N detections, `decide` on one row (or a track's mean row), and
    `recognize` = `decide` on each row."""

    score_column: str

    @property
    def class_names(self) -> list[str]: ...

    def scores(self, rgb: np.ndarray, detections: list[Detection]) -> np.ndarray: ...

    def decide(self, scores: np.ndarray) -> tuple[str, float]: ...

    def recognize(self, rgb: np.ndarray, detections: list[Detection]) -> list[tuple[str, float]]: ...


@dataclass
class Recognizer:
    """Names faces with a trained classifier: `model` maps uint8 crops (N, 3, H, W) to class probabilities
    (N, classes) through `predict_proba` and names its classes in `class_names` (a FaceClassifier in eval
    mode, see `faces.classifier.load_recognizer`); below `threshold` a face is `unknown`."""

    model: torch.nn.Module
    crop: FaceCrop
    threshold: float
    score_column = "confidence"  # the column of recognitions.csv its score goes to

    @property
    def class_names(self) -> list[str]:
        return self.model.class_names

    def scores(self, rgb: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """Class probabilities (N, C), float64, of the N detections in `rgb` (H, W, 3 uint8 RGB)."""
        if not detections:
            return np.empty((0, len(self.class_names)))
        faces = np.stack([self.crop(rgb, d) for d in detections])
        return self.model.predict_proba(torch.from_numpy(faces).permute(0, 3, 1, 2)).cpu().double().numpy()

    def decide(self, scores: np.ndarray) -> tuple[str, float]:
        """(name or 'unknown', confidence) of one face's probabilities (C,), or of their mean over a track's
        frames: the most probable class, `unknown` below `threshold`."""
        k = int(np.argmax(scores))
        return (self.class_names[k] if scores[k] >= self.threshold else UNKNOWN, float(scores[k]))

    def recognize(self, rgb: np.ndarray, detections: list[Detection]) -> list[tuple[str, float]]:
        """(name or 'unknown', confidence) for each detection."""
        return [self.decide(row) for row in self.scores(rgb, detections)]


def recognize_folder(
    recognizer: FaceRecognizer,
    detector: FaceDetector,
    in_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    workers: int = 1,
) -> tuple[pd.DataFrame, list[str]]:
    """Every face in every image under `in_dir` (recursively): `out_dir/recognitions.csv` (CSV_COLUMNS,
    `image` relative to `in_dir`, `annotated` relative to `out_dir`) and an annotated JPEG of each image at its
    relative path named by `core.outputs.output_name` (`sub/a.png` → `sub/a_png.jpg`: never shared by two
    inputs). A face's score goes to the recogniser's `score_column` (`confidence` of a classifier, `distance` to
    a gallery's best-scoring person, the mean distance to their photos); the other column is left empty. Returns
    the table (in file order) and the files skipped as unreadable.

    `workers` > 1 shares the images out between that many forked processes (face_recognition's `--cpus`), each
    with one torch thread: dlib's detector and shape predictor hold the GIL, and one face is too little work for
    torch to share out. A `faces.detectors.SecondLook` detector's counts are summed over the workers."""
    from tqdm.auto import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    check_folders(in_dir, out_dir)
    files = find_images(in_dir)
    job = _FolderJob(recognizer, detector, in_dir, out_dir)
    bar = dict(total=len(files), desc=f"recognising ({detector.name})", unit="img", disable=not progress)
    if workers <= 1 or len(files) < 2:
        results = [job(file) for file in tqdm(files, **bar)]
    else:
        import multiprocessing

        # OpenCV at one thread before the fork: a child must not inherit a thread pool it lacks (opencv/opencv#5150)
        cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
                results = list(tqdm(pool.imap(_run_worker, [str(f) for f in files], chunksize=4), **bar))
        finally:
            cv2.setNumThreads(cv2_threads)
        if hasattr(detector, "second_looks"):  # the workers' SecondLook counts
            detector.second_looks += sum(r.second_looks for r in results)
            detector.found_on_second_look += sum(r.found_on_second_look for r in results)
    rows = [row for r in results for row in r.rows]
    skipped = [r.skipped for r in results if r.skipped]
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "recognitions.csv", index=False)
    return table, skipped


@dataclass
class _ImageAnswer:
    rows: list[dict]
    skipped: str | None = None
    second_looks: int = 0
    found_on_second_look: int = 0


@dataclass
class _FolderJob:
    """One image of `recognize_folder`: read, detect, name, draw; runs here or in a worker process."""

    recognizer: object
    detector: FaceDetector
    in_dir: Path
    out_dir: Path

    def __call__(self, file: str | Path) -> _ImageAnswer:
        file = Path(file)
        relative = file.relative_to(self.in_dir)
        try:
            rgb = read_rgb(file)
        except UnreadableImage as exc:
            log.warning("skipped unreadable image %s", exc)
            return _ImageAnswer([], relative.as_posix())
        looks = (getattr(self.detector, "second_looks", 0), getattr(self.detector, "found_on_second_look", 0))
        detections = self.detector.detect(rgb)
        answer = _ImageAnswer(
            [],
            second_looks=getattr(self.detector, "second_looks", 0) - looks[0],
            found_on_second_look=getattr(self.detector, "found_on_second_look", 0) - looks[1],
        )
        labels = self.recognizer.recognize(rgb, detections)
        score_column = getattr(self.recognizer, "score_column", "confidence")
        annotated = output_name(relative, ".jpg")
        for k, (d, (name, score)) in enumerate(zip(detections, labels), start=1):
            answer.rows.append(
                {
                    "image": relative.as_posix(),
                    "face": k,
                    "name": name,
                    score_column: round(score, 4),
                    "left": d.left,
                    "top": d.top,
                    "right": d.right,
                    "bottom": d.bottom,
                    "annotated": annotated.as_posix(),
                }
            )
        target = self.out_dir / annotated
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(
            str(target),
            swap_red_blue(annotate_names(rgb, detections, labels, score_column)),
            [cv2.IMWRITE_JPEG_QUALITY, 92],
        ):
            raise UserError(f"cannot write {target} — check that OUT is writable")
        return answer


_worker_job: _FolderJob | None = None


def _init_worker(job: _FolderJob) -> None:
    global _worker_job
    _worker_job = job
    torch.set_num_threads(1)  # one process per core (see recognize_folder)


def _run_worker(file: str) -> _ImageAnswer:
    return _worker_job(file)


def annotate_names(
    rgb: np.ndarray,
    detections: list[Detection],
    labels: list[tuple[str, float]],
    score_column: str = "confidence",
    tracks: list[int] | None = None,
) -> np.ndarray:
    """A copy with each face boxed and labelled 'name 0.97' (a confidence) or 'name d=0.42' (a distance), after
    '#<track id> ' when `tracks` gives one per detection: green for a known person, red for unknown."""
    image = rgb.copy()
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    scale = 0.45 * thickness
    for k, (d, (name, confidence)) in enumerate(zip(detections, labels)):
        colour = (220, 40, 40) if name == UNKNOWN else (40, 200, 60)
        cv2.rectangle(image, (d.left, d.top), (d.right - 1, d.bottom - 1), colour, thickness)
        text = f"{name} {'d=' if score_column == 'distance' else ''}{confidence:.2f}"
        if tracks is not None:
            text = f"#{tracks[k]} {text}"
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, d.top - h - base - 2)
        cv2.rectangle(image, (d.left, top), (d.left + w + 2, top + h + base + 2), colour, -1)
        cv2.putText(
            image,
            text,
            (d.left + 1, top + h + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return image
