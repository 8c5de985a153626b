"""Training augmentation that ultralytics lacks for this data: zooming in on one face, so that large faces are seen.

The real face-mask photos are crowds: their median face is 24 px in a 400-px photo (6 % of its side), a close-up's
face fills half the frame, and ultralytics' mosaic and affine `scale` (×0.5–1.5) keep every face near the size it
had. A detector trained on them finds small faces and misses the large ones a camera at an entrance sees. `FaceZoom`
crops a window around one face and scales it up to the image size, the detection form of torchvision's
RandomResizedCrop (the "zoom-in" augmentation of SSD, Liu et al. 2016, §2.2 "Data augmentation").
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np

# a box keeps its label after the crop when this share of its area is still in the image (ultralytics'
# RandomPerspective.box_candidates keeps 10 % of the area; a face cut to a tenth is no longer a face)
MIN_VISIBLE = 0.4


class FaceZoom:
    """With probability `p`, zoom into a random face of a training sample until the face's size sqrt(w·h) is a
    random share of the image side, log-uniform between its own and `max_fraction` of the side, the zoom at most
    `max_zoom` (beyond ×8 an upscaled 24-px face is a blur). The crop keeps the image's size and aspect; the
    other boxes follow and are dropped when less than `MIN_VISIBLE` of their area stays in view.

    An ultralytics transform: takes and returns its labels dict (`img` (H, W, 3) uint8, `instances`, `cls` (N, 1)),
    inserted after the mosaic/affine stage (`insert_into`). Draws from Python's `random`, as ultralytics'
    transforms, so the seeds that fix those fix it. ValueError for p outside [0, 1], `max_fraction` outside (0, 1] or
    `max_zoom` < 1.
    """

    def __init__(self, p: float = 0.7, max_fraction: float = 0.8, max_zoom: float = 8.0) -> None:
        if not 0.0 <= p <= 1.0 or not 0.0 < max_fraction <= 1.0 or max_zoom < 1.0:
            raise ValueError(
                f"data.zoom: p must be in [0, 1], max_fraction in (0, 1] and max_zoom >= 1; got p={p}, "
                f"max_fraction={max_fraction}, max_zoom={max_zoom}"
            )
        self.p, self.max_fraction, self.max_zoom = p, max_fraction, max_zoom

    def __call__(self, labels: dict) -> dict:
        if self.p == 0 or random.random() >= self.p:
            return labels
        img, instances = labels["img"], labels["instances"]
        h, w = img.shape[:2]
        instances.convert_bbox(format="xyxy")
        if instances.normalized:
            instances.denormalize(w, h)
        boxes = instances.bboxes
        sizes = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
        faces = np.flatnonzero(sizes >= 4)
        if not len(faces):
            return labels
        i = int(faces[random.randrange(len(faces))])
        largest = self.max_fraction * min(h, w)
        if sizes[i] >= largest:
            return labels
        target = math.exp(random.uniform(math.log(sizes[i]), math.log(largest)))
        zoom = min(target / sizes[i], self.max_zoom)
        crop_w, crop_h = max(1, round(w / zoom)), max(1, round(h / zoom))
        x0 = _window_start(boxes[i, 0], boxes[i, 2], crop_w, w)
        y0 = _window_start(boxes[i, 1], boxes[i, 3], crop_h, h)
        sx, sy = w / crop_w, h / crop_h
        moved = (boxes - [x0, y0, x0, y0]) * [sx, sy, sx, sy]
        clipped = np.clip(moved, 0, [w, h, w, h])
        area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
        keep = (area(clipped) >= MIN_VISIBLE * area(moved)) & (clipped[:, 2] - clipped[:, 0] >= 2)
        keep &= clipped[:, 3] - clipped[:, 1] >= 2
        kept = instances[keep]
        kept.update(bboxes=clipped[keep].astype(boxes.dtype))  # float32, as ultralytics' loss indexes it
        labels["instances"], labels["cls"] = kept, labels["cls"][keep]
        labels["img"] = cv2.resize(img[y0 : y0 + crop_h, x0 : x0 + crop_w], (w, h), interpolation=cv2.INTER_LINEAR)
        return labels

    def insert_into(self, dataset) -> None:
        """Put this zoom into an ultralytics YOLODataset's training transforms, after the mosaic/affine stage (so
        the image is already at the training size) and before mixup, colour and flips; a no-op at p = 0."""
        if self.p > 0:
            dataset.transforms.insert(1, self)

    def __repr__(self) -> str:
        return f"FaceZoom(p={self.p}, max_fraction={self.max_fraction}, max_zoom={self.max_zoom})"


def _window_start(lo: float, hi: float, window: int, side: int) -> int:
    """A random start of a `window`-px span inside [0, side) that holds [lo, hi] (centred on it when it cannot)."""
    first, last = max(0.0, hi - window), min(lo, side - window)
    if first > last:
        return int(min(max(0, round((lo + hi - window) / 2)), side - window))
    return int(round(random.uniform(first, last)))
