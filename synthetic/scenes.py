"""Synthetic scenes for the DCGAN experiments: a simple one (Fruits-360-like) and a complicated one
(Hard-Hat-Workers-like, with VOC boxes)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from core.voc import VocAnnotation, VocObject, write_voc
from synthetic import synthetic_set

# name (Fruits-360 style, with its number suffix), RGB colour, (half-width, half-height) in a 100 px image
FRUITS = [
    ("Apple Red 1", (190, 30, 40), (34, 32)),
    ("Banana 1", (235, 205, 60), (42, 14)),
    ("Orange 1", (245, 140, 30), (33, 33)),
    ("Lemon 1", (245, 230, 70), (32, 25)),
    ("Grape Blue 1", (70, 50, 120), (22, 22)),
    ("Kiwi 1", (120, 95, 55), (30, 26)),
    ("Lime 1", (110, 190, 60), (28, 27)),
    ("Plum 1", (120, 30, 80), (27, 29)),
]


@synthetic_set
def make_fruits(
    out_dir: Path, rng: np.random.Generator, *, seed: int = 0, classes: int = 5, per_class: int = 100
) -> None:
    """`out_dir/<Class>/<k>_100.jpg`: one shaded, textured fruit on white, 100×100, as in Fruits-360."""
    for name, colour, (half_w, half_h) in FRUITS[:classes]:
        folder = out_dir / name
        folder.mkdir(parents=True)
        for k in range(per_class):
            image = _fruit(rng, np.array(colour, float), half_w, half_h)
            cv2.imwrite(str(folder / f"{k}_100.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def _fruit(rng: np.random.Generator, colour: np.ndarray, half_w: int, half_h: int) -> np.ndarray:
    size = 100
    image = np.full((size, size, 3), 255.0)
    centre = (int(50 + rng.integers(-6, 7)), int(50 + rng.integers(-6, 7)))
    scale = rng.uniform(0.85, 1.1)
    axes = (int(half_w * scale), int(half_h * scale))
    angle = float(rng.uniform(0, 180))
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 255, -1)
    yy, xx = np.mgrid[0:size, 0:size]
    light = (centre[0] - axes[0] * 0.4, centre[1] - axes[1] * 0.4)  # highlight up-left, like studio light
    dist = np.hypot(xx - light[0], yy - light[1]) / max(axes)
    shade = np.clip(1.25 - 0.45 * dist, 0.45, 1.25)[..., None]
    texture = rng.normal(0, 10, (size, size, 1))
    body = np.clip(colour * rng.uniform(0.85, 1.15) * shade + texture, 0, 255)
    image = np.where(mask[..., None] > 0, body, image)
    tip = (int(centre[0] + np.cos(np.radians(angle)) * axes[0]), int(centre[1] + np.sin(np.radians(angle)) * axes[0]))
    cv2.line(image, tip, (tip[0] + int(rng.integers(-4, 5)), tip[1] - 6), (80, 55, 30), 2)
    return cv2.GaussianBlur(image, (3, 3), 0).astype(np.uint8)


HARDHAT_CLASSES = ("helmet", "head", "person")
HELMET_COLOURS = [(250, 210, 20), (245, 245, 245), (240, 120, 20), (200, 30, 30), (30, 80, 200)]
VEST_COLOURS = [(250, 120, 0), (210, 240, 40), (60, 60, 60), (30, 60, 150), (120, 100, 80)]
SKIN = [(241, 194, 165), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)]


@synthetic_set
def make_hardhat(
    out_dir: Path,
    rng: np.random.Generator,
    *,
    seed: int = 0,
    images: int = 200,
    size: int = 416,
    helmet_rate: float = 0.75,
    person_box_rate: float = 0.05,
) -> None:
    """`images/*.png` + `annotations/*.xml` (VOC; helmet/head/person): construction-site clutter with
    several workers, most wearing helmets. As in Hard Hat Workers, `person` boxes are rare."""
    for k in range(images):
        stem = f"hard_hat_workers{k}"
        image, objects = _site(rng, size, helmet_rate, person_box_rate)
        cv2.imwrite(str(_mkdir(out_dir / "images") / f"{stem}.png"), image[..., ::-1])
        write_voc(out_dir / "annotations" / f"{stem}.xml", VocAnnotation(f"{stem}.png", size, size, objects))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _site(rng: np.random.Generator, size: int, helmet_rate: float, person_box_rate: float):
    horizon = int(rng.integers(size // 4, size // 2))
    sky = np.linspace(rng.uniform(150, 230), rng.uniform(200, 255), horizon)[:, None, None] * np.array(
        [0.75, 0.85, 1.0]
    )
    ground = np.tile(np.array(rng.integers(80, 170, 3), float), (size - horizon, 1))[:, None, :]
    image = np.concatenate(
        [np.broadcast_to(sky, (horizon, size, 3)), np.broadcast_to(ground, (size - horizon, size, 3))]
    ).copy()
    image += rng.normal(0, 6, image.shape)
    for _ in range(int(rng.integers(4, 10))):  # buildings, containers, beams
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(20, size // 2, 2)
        cv2.rectangle(
            image, (int(x), int(y)), (int(x + w), int(y + h)), tuple(float(c) for c in rng.integers(40, 220, 3)), -1
        )
    for _ in range(int(rng.integers(3, 9))):  # scaffolding
        p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(
            image,
            tuple(int(v) for v in p),
            tuple(int(v) for v in q),
            tuple(float(c) for c in rng.integers(30, 200, 3)),
            int(rng.integers(2, 6)),
        )
    objects = []
    for _ in range(int(rng.integers(1, 6))):
        objects += _worker(image, rng, size, helmet_rate, person_box_rate)
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _worker(
    image: np.ndarray, rng: np.random.Generator, size: int, helmet_rate: float, person_box_rate: float
) -> list[VocObject]:
    head_r = int(rng.integers(8, 26))
    cx, cy = int(rng.integers(head_r * 2, size - head_r * 2)), int(rng.integers(head_r * 3, size - head_r * 6))
    body_w, body_h = int(head_r * 2.6), int(head_r * 5.5)
    body_top = cy + head_r
    cv2.rectangle(
        image,
        (cx - body_w // 2, body_top),
        (cx + body_w // 2, body_top + body_h),
        VEST_COLOURS[rng.integers(len(VEST_COLOURS))],
        -1,
    )
    cv2.circle(image, (cx, cy), head_r, SKIN[rng.integers(len(SKIN))], -1)
    cv2.circle(image, (cx - head_r // 3, cy - head_r // 6), max(1, head_r // 8), (30, 30, 30), -1)
    cv2.circle(image, (cx + head_r // 3, cy - head_r // 6), max(1, head_r // 8), (30, 30, 30), -1)
    top = cy - head_r
    if rng.random() < helmet_rate:
        top = cy - int(head_r * 1.45)
        cv2.ellipse(
            image,
            (cx, cy - head_r // 3),
            (int(head_r * 1.15), int(head_r * 1.1)),
            0,
            180,
            360,
            HELMET_COLOURS[rng.integers(len(HELMET_COLOURS))],
            -1,
        )
        objects = [VocObject("helmet", cx - head_r * 1.15, top, cx + head_r * 1.15, cy + head_r)]
    else:
        objects = [VocObject("head", cx - head_r, top, cx + head_r, cy + head_r)]
    if rng.random() < person_box_rate:
        objects.append(VocObject("person", cx - body_w / 2, top, cx + body_w / 2, min(size - 1, body_top + body_h)))
    return [_clip(o, size) for o in objects]


def _clip(obj: VocObject, size: int) -> VocObject:
    return VocObject(
        obj.name, max(0.0, obj.xmin), max(0.0, obj.ymin), min(size - 1.0, obj.xmax), min(size - 1.0, obj.ymax)
    )
