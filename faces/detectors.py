"""The four face detectors behind `faces.FaceDetector`: dlib HOG + linear SVM, dlib MMOD CNN, OpenCV's
Haar cascade and OpenCV's YuNet. Hydra builds them from `conf/detector/<name>.yaml`.

Each detector downscales an image whose longer side exceeds `max_side` before detecting (dlib's time
grows with the pixel count: 3.5 s on a 2982×1926 photo) and maps the boxes back to full resolution,
clipped to the image. The native detector objects are built on first use and left out of pickling, so a
detector can be handed to worker processes.

Every detector keeps only the detections whose score reaches its `score_threshold` (config key of the same
name). The scores are each library's own and are not comparable across detectors: HOG's is the SVM margin
(dlib's `run()`; 0 is dlib's default cut), MMOD's the CNN's confidence (dlib's cut: 0), Haar's the level weight
of the cascade's last stage (`detectMultiScale3(..., outputRejectLevels=True)`) and YuNet's a probability-like
score in [0, 1]. The defaults in `conf/detector/*.yaml` maximise F1 on the real photos (`make compare-face-detectors`; docs/face-detection.md).
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.errors import UserError
from faces import Detection

# (left, top, right, bottom, score) in pixels of the image the native detector saw
RawBox = tuple[float, float, float, float, float]


def dlib_model_path(filename: str) -> Path:
    """A model file shipped by the `face-recognition-models` package, found without importing the package
    (its `__init__` imports `pkg_resources`, gone from recent setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"dlib model {filename} not found: install the package with `pip install face-recognition-models==0.3.0`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise UserError(f"dlib model file missing: {path} — reinstall `face-recognition-models==0.3.0`")
    return path


class _ScaledDetector:
    """Shared work: input checks, downscaling for detection, mapping back, clipping, the score threshold,
    best-first order."""

    name: str

    def __init__(self, max_side: int | None = 1280, score_threshold: float = float("-inf")):
        self.max_side = max_side
        self.score_threshold = score_threshold

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"{self.name}: expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        scale = 1.0
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            rgb = cv2.resize(
                rgb, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
            )
        detections = []
        for left, top, right, bottom, score in self._detect(np.ascontiguousarray(rgb)):
            box = Detection(
                left=int(np.clip(round(left / scale), 0, width)),
                top=int(np.clip(round(top / scale), 0, height)),
                right=int(np.clip(round(right / scale), 0, width)),
                bottom=int(np.clip(round(bottom / scale), 0, height)),
                score=float(score),
            )
            if box.width > 0 and box.height > 0 and box.score >= self.score_threshold:
                detections.append(box)
        return sorted(detections, key=lambda d: -d.score)

    def _detect(self, rgb: np.ndarray) -> list[RawBox]:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # cached_property keeps the native detector in __dict__ under its own name; it is rebuilt on use
        return {k: v for k, v in self.__dict__.items() if k != "_native"}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.__getstate__().items())
        return f"{type(self).__name__}({params})"


class HogDetector(_ScaledDetector):
    """dlib's `get_frontal_face_detector()` (HOG + linear SVM), the paper's detector.

    `upsample`: times the image is doubled first (1 finds faces down to ~40 px; the paper used 1).
    `score_threshold`: dlib's `adjust_threshold`, the least SVM margin a detection keeps (dlib's default 0;
    negative finds more faces and more false ones)."""

    name = "hog"

    def __init__(self, upsample: int = 1, score_threshold: float = 0.0, max_side: int | None = 1280):
        super().__init__(max_side, score_threshold)
        self.upsample = upsample

    @cached_property
    def _native(self):
        import dlib

        return dlib.get_frontal_face_detector()

    def _detect(self, rgb: np.ndarray) -> list[RawBox]:
        rects, scores, _ = self._native.run(rgb, self.upsample, self.score_threshold)
        return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1, s) for r, s in zip(rects, scores)]


class MmodDetector(_ScaledDetector):
    """dlib's MMOD CNN face detector (`mmod_human_face_detector.dat` from `face-recognition-models`, or
    `model_path`). More pose-tolerant than HOG, ~50× slower on a CPU. `score_threshold`: the least CNN
    confidence kept; dlib's Python binding already drops detections below 0, so only positive values cut more."""

    name = "mmod"

    def __init__(
        self,
        upsample: int = 1,
        model_path: str | None = None,
        max_side: int | None = 1280,
        score_threshold: float = 0.0,
    ):
        super().__init__(max_side, score_threshold)
        self.upsample = upsample
        self.model_path = model_path

    @cached_property
    def _native(self):
        import dlib

        path = Path(self.model_path) if self.model_path else dlib_model_path("mmod_human_face_detector.dat")
        if not path.is_file():
            raise UserError(
                f"detector.model_path: MMOD model not found: {path} — give the path of mmod_human_face_detector.dat, or null for the one in face-recognition-models"
            )
        return dlib.cnn_face_detection_model_v1(str(path))

    def _detect(self, rgb: np.ndarray) -> list[RawBox]:
        return [
            (d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, d.confidence)
            for d in self._native(rgb, self.upsample)
        ]


class HaarDetector(_ScaledDetector):
    """OpenCV's Viola-Jones Haar cascade (shipped inside opencv-python 4.x under `cv2.data.haarcascades`);
    the comparison baseline and the paper's capture detector. A face is a group of at least `min_neighbors`
    overlapping windows; its score is the level weight (the last stage's summed weak-classifier votes) that
    `detectMultiScale3(..., outputRejectLevels=True)` reports, and `score_threshold` is the least one kept."""

    name = "haar"

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.3,
        min_neighbors: int = 5,
        min_size: int = 0,
        max_side: int | None = 1280,
        score_threshold: float = float("-inf"),
    ):
        super().__init__(max_side, score_threshold)
        self.cascade = cascade
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    @cached_property
    def _native(self):
        path = Path(self.cascade) if Path(self.cascade).is_file() else Path(cv2.data.haarcascades) / self.cascade
        classifier = cv2.CascadeClassifier(str(path))
        if classifier.empty():
            raise UserError(
                f"detector.cascade: cannot load Haar cascade {path} — name a file in {cv2.data.haarcascades} "
                "(opencv-python 4.x ships them; OpenCV 5 does not)"
            )
        return classifier

    def _detect(self, rgb: np.ndarray) -> list[RawBox]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        rects, _, weights = self._native.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        return [(x, y, x + w, y + h, s) for (x, y, w, h), s in zip(np.reshape(rects, (-1, 4)), np.ravel(weights))]


class YuNetDetector(_ScaledDetector):
    """OpenCV's YuNet CNN (`cv2.FaceDetectorYN`, OpenCV Zoo's ONNX model): small, fast, and finds
    small and masked faces that HOG and Haar miss. `score_threshold`: the least face score kept (YuNet's own
    cut, applied before its non-maximum suppression)."""

    name = "yunet"

    def __init__(
        self,
        model_path: str,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        max_side: int | None = 1280,
    ):
        super().__init__(max_side, score_threshold)
        self.model_path = model_path
        self.nms_threshold = nms_threshold
        self.top_k = top_k

    @cached_property
    def _native(self):
        path = Path(self.model_path)
        if not path.is_file():
            raise UserError(
                f"detector.model_path: YuNet model not found: {path} — put OpenCV Zoo's "
                "face_detection_yunet_2023mar.onnx there (opencv_zoo/models/face_detection_yunet; "
                "../shared/data/weights/yunet_s_640_640.onnx is that file), or set detector.model_path"
            )
        return cv2.FaceDetectorYN.create(
            str(path), "", (320, 320), self.score_threshold, self.nms_threshold, self.top_k
        )

    def _detect(self, rgb: np.ndarray) -> list[RawBox]:
        self._native.setInputSize((rgb.shape[1], rgb.shape[0]))
        _, faces = self._native.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if faces is None:
            return []
        return [(x, y, x + w, y + h, s) for x, y, w, h, s in faces[:, [0, 1, 2, 3, 14]]]


class SecondLook:
    """A detector that looks again, more leniently, at an image where it found no face: `detector` first, and
    where it finds none, `fallback` (the same detector at a lower `score_threshold`).

    Why: a detector's threshold is chosen for F1 over many photos (HOG's 0.35 on LFW), which trades a few missed
    faces for fewer false ones; on a photo that holds no face at that threshold, the lower one (dlib's own default
    0, what face_recognition uses) finds the faces it missed, and a photo without a face costs one more look.
    Photos with a face keep the first look's boxes, so the false ones the threshold removes stay removed."""

    def __init__(self, detector, fallback):
        self.detector, self.fallback = detector, fallback
        self.second_looks = 0  # images the first look found no face in
        self.found_on_second_look = 0  # … of which the second found one
        self.looked_again = False  # whether the last `detect` took the second look

    @property
    def name(self) -> str:
        return self.detector.name

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """The first look's faces, or where it finds none the fallback's (best first)."""
        found = self.detector.detect(rgb)
        self.looked_again = not found
        if found:
            return found
        self.second_looks += 1
        found = self.fallback.detect(rgb)
        self.found_on_second_look += bool(found)
        return found

    def __repr__(self) -> str:
        return f"SecondLook({self.detector!r}, then {self.fallback!r})"
