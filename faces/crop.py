"""Face crops from detections: margin, optional square, fixed size, always inside the image.

One rule here and in the browser (`face_square`, web/src/classifier.js `faceSquare`): the crop keeps its shape and
moves inside the image where it would pass the border, so a face near an edge is never stretched (clipping the
square and resizing it to a fixed size would). The paper cropped `img[top:bottom, left:right]` with no margin and
no clipping, so a box that starts at a negative coordinate wrapped around (numpy's negative indices).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from faces import Detection


def crop_box(
    detection: Detection, image_shape: tuple[int, ...], margin: float = 0.0, square: bool = False
) -> tuple[int, int, int, int]:
    """The crop's (left, top, right, bottom) in whole pixels: the box grown by `margin` × its width/height on each
    side, made square around its centre (the longer side) when asked, then moved inside the image — never
    clipped, so the crop keeps the shape asked for and a face near the border is never stretched. A side longer
    than the image's is cut to the image's (for a square: to the image's shorter side, the square stays square).
    The rule is `face_square`'s, the browser's (web/src/classifier.js `faceSquare`), on each axis."""
    height, width = image_shape[:2]
    box_w, box_h = detection.width * (1 + 2 * margin), detection.height * (1 + 2 * margin)
    if square:
        box_w = box_h = min(max(box_w, box_h), width, height)
    cx, cy = (detection.left + detection.right) / 2, (detection.top + detection.bottom) / 2
    left, right = _inside(cx, round(box_w), width)
    top, bottom = _inside(cy, round(box_h), height)
    return left, top, right, bottom


def _inside(centre: float, length: int, limit: int) -> tuple[int, int]:
    """[start, end) of `length` pixels (at most `limit`) centred on `centre`, moved to lie inside [0, limit)."""
    length = min(length, limit)
    start = min(max(round(centre - length / 2), 0), limit - length)
    return start, start + length


def crop_face(
    rgb: np.ndarray,
    detection: Detection,
    margin: float = 0.0,
    square: bool = False,
    size: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """The face as an RGB array (`crop_box`'s region). `size` resizes it: an int makes its longer side `size`
    pixels, keeping its aspect (size×size for a square crop); a (width, height) pair is taken as asked.

    Raises:
        ValueError: the detection lies wholly outside the image."""
    height, width = rgb.shape[:2]
    if detection.right <= 0 or detection.bottom <= 0 or detection.left >= width or detection.top >= height:
        raise ValueError(f"detection {detection} lies outside the {width}×{height} image")
    left, top, right, bottom = crop_box(detection, rgb.shape, margin, square)
    face = rgb[top:bottom, left:right]
    if size is not None:
        if isinstance(size, int):
            scale = size / max(face.shape[:2])
            target = (max(1, round(face.shape[1] * scale)), max(1, round(face.shape[0] * scale)))
        else:
            target = tuple(size)
        shrinking = target[0] * target[1] < face.shape[0] * face.shape[1]
        face = cv2.resize(face, target, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return np.ascontiguousarray(face)


@dataclass(frozen=True)
class FaceCrop:
    """A detection → the model's input: the box grown by `margin` × its size on each side, squared, moved
    inside the image (`crop_box`) and resized to `image_size`. With `capture_size` (the paper: 32) the face is first shrunk
    to that size and then enlarged to `image_size` by nearest-neighbour (Keras' `load_img` default), as the
    paper's capture-then-train pipeline did."""

    image_size: int = 224
    margin: float = 0.2
    capture_size: int | None = None

    def __call__(self, rgb: np.ndarray, detection: Detection) -> np.ndarray:
        return self.fit(
            crop_face(rgb, detection, margin=self.margin, square=True, size=self.capture_size or self.image_size)
        )

    def fit(self, face: np.ndarray) -> np.ndarray:
        """A face crop (or a capture) at the model's input size."""
        size = self.image_size
        if self.capture_size and face.shape[:2] != (self.capture_size, self.capture_size):
            face = cv2.resize(face, (self.capture_size, self.capture_size), interpolation=cv2.INTER_AREA)
        if face.shape[:2] == (size, size):
            return face
        if self.capture_size:
            interpolation = cv2.INTER_NEAREST
        else:
            interpolation = cv2.INTER_AREA if face.shape[0] * face.shape[1] > size * size else cv2.INTER_CUBIC
        return cv2.resize(face, (size, size), interpolation=interpolation)


def face_square(
    width: int, height: int, box: tuple[float, float, float, float] | None, margin: float
) -> tuple[float, float, float]:
    """The browser playground's face crop (web/src/classifier.js `faceSquare`; one rule on both sides, so that a
    descriptor gallery computed here matches the page): (x, y, side) in pixels, fractional. Around `box`
    (x0, y0, x1, y1): its longer side grown by `margin` of it on each side, at most the image's shorter side,
    centred on the box and shifted inside the image; without a box, the centred square of the shorter side."""
    if box is None:
        side = min(width, height)
        return (width - side) / 2, (height - side) / 2, side
    x0, y0, x1, y1 = box
    side = min(max(x1 - x0, y1 - y0) * (1 + 2 * margin), width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return min(max(cx - side / 2, 0), width - side), min(max(cy - side / 2, 0), height - side), side


def square_crop(rgb: np.ndarray, square: tuple[float, float, float], size: int) -> np.ndarray:
    """The `square` (x, y, side; fractional, as `face_square`) of an RGB uint8 image resized to size×size by area
    averaging (PIL's BOX filter on the fractional source box, the nearest to the browser's `drawImage` with
    smoothing; the two differ by a few levels)."""
    from PIL import Image

    x, y, side = square
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BOX, box=(x, y, x + side, y + side)))
