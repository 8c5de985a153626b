"""Describing photos: each photo's faces found, aligned and described, in worker processes, kept in the faces
application's one cache (`faces.feature_cache.FeatureCache`). The one pipeline behind the gallery (every face of
each known person's photo, `faces.gallery.build_gallery`) and behind LFW and the open-set protocol (the face
nearest the centre, else dlib's central box: `faces.lfw`, `faces.openset`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.images import UnreadableImage, read_rgb
from faces.descriptors import FaceDescriber, central_face, centre_box
from faces.detectors import SecondLook
from faces.feature_cache import FeatureCache, Labelled

# how a photo's face was found: by the detector, by its second look (`retry_detector`), or not (the central box)
FOUND, RETRIED, CENTRE_BOX = "detected", "detected on retry", "centre box"
UNREADABLE = "unreadable"  # the start of the reason of a photo that cannot be read

# dlib's HOG detector and shape predictor hold the GIL (2 threads ran at 0.7× one thread's speed here), so the photos
# are shared out between forked processes, which inherit the describer and detector; each builds the models it has
# not built yet once, and runs torch on one thread.
_worker: tuple | None = None


def describe_photo(
    file: str | Path, detector, describer: FaceDescriber, every_face: bool = False, use_centre_box: bool = True
) -> Labelled | str:
    """The descriptors float32 (K, D) of the photo's faces found by `detector` (a `faces.FaceDetector`; a
    `faces.detectors.SecondLook` reports RETRIED when its second look found the face), the face nearest the
    centre first — only that one unless `every_face` — and how it was found (FOUND, RETRIED, or CENTRE_BOX: dlib's
    LFW stand-in `faces.descriptors.centre_box` where no face is found and `use_centre_box`). A reason instead of
    descriptors when the photo is unreadable (starting with UNREADABLE) or holds no face (without the centre box)."""
    try:
        rgb = read_rgb(file)
    except UnreadableImage as exc:
        return f"{UNREADABLE} ({exc})"
    found = detector.detect(rgb)
    how = RETRIED if isinstance(detector, SecondLook) and detector.looked_again else FOUND
    central = central_face(found, rgb.shape)
    if central is None:
        if not use_centre_box:
            return f"no face found ({detector.name})"
        how, central = CENTRE_BOX, centre_box(rgb.shape)
    faces = [central, *(d for d in found if d is not central)] if every_face else [central]
    return np.asarray(describer(rgb, faces), np.float32), how


def _init_worker(*parts) -> None:
    import torch

    global _worker
    _worker = parts
    torch.set_num_threads(1)  # one process per core: the describer's network must not share out its own threads


def _describe_in_worker(file: str) -> Labelled | str:
    return describe_photo(file, *_worker)


@dataclass
class PhotoPipeline:
    """Photos described by `describe_photo`: `detector`, looking again with `retry_detector` where it finds no face
    (a `faces.detectors.SecondLook`; None: no second look), `describer`, `every_face` and `use_centre_box` as
    there; the descriptors kept under `cache_dir` (None: nothing kept between runs; tagged with `tag()`, so another
    pipeline's entries are never answered), `workers` processes (fork; 1: here) and a progress bar when
    `progress`."""

    detector: object
    describer: FaceDescriber
    retry_detector: object | None = None
    cache_dir: str | Path | None = None
    workers: int = 2
    progress: bool = True
    every_face: bool = False
    use_centre_box: bool = True
    cache: FeatureCache = field(init=False, repr=False)
    finder: object = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.cache = FeatureCache(self.cache_dir, chunk=64)
        self.finder = SecondLook(self.detector, self.retry_detector) if self.retry_detector else self.detector

    def tag(self) -> str:
        """Everything between a photo's bytes and its descriptors (detector, second look, describer models and
        options, which faces): the cache tag of this pipeline's entries."""
        return f"{self.describer.tag()}|{self.finder!r}|every_face={self.every_face}|centre_box={self.use_centre_box}"

    def describe_each(self, files: Sequence[str | Path]) -> list[Labelled | str]:
        """Per file, in the order of `files`: (descriptors (K, D), how the face was found), or why there are none
        (`describe_photo`). The cache answers the photos it holds; the others are described (in `workers`
        processes) and added, a chunk at a time, so an interrupted run keeps what it described."""
        files = [Path(f) for f in files]
        parts = (self.finder, self.describer, self.every_face, self.use_centre_box)
        with contextlib.ExitStack() as stack:
            pool = None

            def compute(paths: Sequence[Path], keys: Sequence[str]) -> list[Labelled | str]:
                nonlocal pool
                if self.workers <= 1 or len(paths) < 2:
                    return [describe_photo(p, *parts) for p in paths]
                if pool is None:
                    import multiprocessing

                    context = multiprocessing.get_context("fork")
                    pool = stack.enter_context(context.Pool(self.workers, initializer=_init_worker, initargs=parts))
                return pool.map(_describe_in_worker, [str(p) for p in paths], chunksize=8)

            desc = f"describing photos ({self.workers} process{'es' if self.workers > 1 else ''})"
            return self.cache.get_labelled(files, self.tag(), compute, desc=desc, progress=self.progress)

    def describe(self, files: Sequence[str | Path]) -> tuple[np.ndarray, list[str]]:
        """The face nearest each photo's centre: descriptors float32 (N, D) in the order of `files`, and how each
        face was found (FOUND, RETRIED or CENTRE_BOX). Raises UnreadableImage for a bad file."""
        results = self.describe_each(files)
        for result in results:
            if isinstance(result, str):  # only an unreadable photo has no descriptor with the centre box
                raise UnreadableImage(result.removeprefix(f"{UNREADABLE} (").removesuffix(")"))
        if not results:
            return np.empty((0, 128), np.float32), []
        return np.stack([r[0][0] for r in results]).astype(np.float32), [r[1] for r in results]

    def settings(self) -> dict[str, str]:
        """The pipeline's parts as text (each repr cut to 500 characters, MLflow's parameter length): `detector`,
        `retry_detector` and `describer`."""
        return {
            "detector": repr(self.detector)[:500],
            "retry_detector": repr(self.retry_detector)[:500],
            "describer": repr(self.describer),
        }
