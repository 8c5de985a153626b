"""Synthetic face-mask scenes in the Kaggle face-mask layout (images/*.png + annotations/*.xml, PASCAL VOC).

Several cartoon faces per image (`faces.draw_face`) with no mask, a mask worn, or a mask below the nose,
labelled `without_mask`, `with_mask`, `mask_weared_incorrect` as in the Kaggle set; faces of varied size,
pose and lighting on cluttered backgrounds; a few images without faces. The real set's quirks are kept on
purpose so that the converter's fixes run on the built-in data too: most PNGs are RGBA, and some boxes at the
right edge end at `width + 1`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from core.voc import VocAnnotation, VocObject, write_voc
from synthetic import synthetic_set
from synthetic.faces import Identity, draw_face

FACEMASK_CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")
CLASS_OF_MASK = {"worn": "with_mask", "none": "without_mask", "incorrect": "mask_weared_incorrect"}


@synthetic_set
def make_facemask(
    out_dir: Path,
    rng: np.random.Generator,
    *,
    seed: int = 0,
    images: int = 160,
    width: int = 400,
    height: int = 300,
    max_faces: int = 5,
    mask_rates: tuple[float, float, float] = (0.55, 0.3, 0.15),
    background_rate: float = 0.05,
    rgba_rate: float = 0.9,
) -> None:
    """`images/maksssksksss<k>.png` + `annotations/maksssksksss<k>.xml`; `mask_rates` are the shares of
    worn / none / incorrect."""
    states = ("worn", "none", "incorrect")
    (out_dir / "images").mkdir(parents=True)
    for k in range(images):
        stem = f"maksssksksss{k}"
        canvas = _background(rng, width, height)
        objects = []
        if rng.random() >= background_rate:
            for centre, face_width in _placements(rng, width, height, int(rng.integers(1, max_faces + 1))):
                mask = states[rng.choice(3, p=np.asarray(mask_rates) / sum(mask_rates))]
                box = draw_face(
                    canvas,
                    centre,
                    face_width,
                    Identity.random(rng),
                    rng,
                    mask=mask,
                    angle=float(rng.uniform(-15, 15)),
                    light=float(rng.uniform(0.7, 1.15)),
                )
                right = box[2] + 1 if box[2] >= width - 1 else box[2]  # the Kaggle set's off-by-one at the right edge
                objects.append(VocObject(CLASS_OF_MASK[mask], box[0], box[1], right, box[3]))
        image = canvas if rng.random() >= rgba_rate else np.dstack([canvas, np.full((height, width), 255, np.uint8)])
        cv2.imwrite(
            str(out_dir / "images" / f"{stem}.png"),
            cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR),
        )
        write_voc(out_dir / "annotations" / f"{stem}.xml", VocAnnotation(f"{stem}.png", width, height, objects))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A vertical gradient with rectangles, discs and lines: walls, windows, signs, people's shoulders."""
    top, bottom = rng.integers(40, 240, 3), rng.integers(40, 240, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    canvas = (top * (1 - ramp) + bottom * ramp + rng.normal(0, 5, (height, width, 3))).clip(0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 10))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        shape = rng.integers(3)
        if shape == 0:
            cv2.rectangle(
                canvas,
                (x, y),
                (x + int(rng.integers(15, width // 2)), y + int(rng.integers(15, height // 2))),
                colour,
                -1,
            )
        elif shape == 1:
            cv2.circle(canvas, (x, y), int(rng.integers(8, 50)), colour, -1, cv2.LINE_AA)
        else:
            cv2.line(
                canvas,
                (x, y),
                (int(rng.integers(0, width)), int(rng.integers(0, height))),
                colour,
                int(rng.integers(2, 8)),
                cv2.LINE_AA,
            )
    return canvas


def _placements(
    rng: np.random.Generator, width: int, height: int, count: int
) -> list[tuple[tuple[float, float], float]]:
    """Face centres and widths (16–110 px, small faces common as in the Kaggle set) that barely overlap;
    faces may touch the image border."""
    placed: list[tuple[tuple[float, float], float]] = []
    for _ in range(count * 20):
        if len(placed) == count:
            break
        face_width = float(np.clip(rng.lognormal(np.log(40), 0.45), 16, 110))
        centre = (
            float(rng.uniform(face_width * 0.3, width - face_width * 0.3)),
            float(rng.uniform(face_width * 0.7, height - face_width * 0.5)),
        )
        if all(np.hypot(centre[0] - c[0], centre[1] - c[1]) > 0.75 * (face_width + w) for c, w in placed):
            placed.append((centre, face_width))
    return placed
