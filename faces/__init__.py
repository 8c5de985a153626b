"""Face detection, alignment and cropping: the one place that knows the detector libraries.

Every tool that needs faces (detect-faces, capture-faces, recognize, the detector comparison) goes
through `FaceDetector.detect`, so detectors are interchangeable by config (`detector=hog|mmod|haar|yunet`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

import core  # noqa: F401  (offline switches)


@dataclass(frozen=True)
class Detection:
    """A face box in pixels of the image given to `detect` (right/bottom exclusive), with a score."""

    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB image, best first."""
        ...
