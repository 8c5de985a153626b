"""Face drawing shared by every synthetic face set (identities, face-mask scenes, ID cards), and the two
real face photographs that ship inside installed packages, for sets where a detector must find the face."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MASK_STATES = ("none", "worn", "incorrect")  # no mask / covering nose and mouth / below the nose
SKIN_TONES = [(241, 194, 165), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (175, 120, 90)]
HAIR_COLOURS = [(30, 25, 20), (90, 60, 30), (200, 160, 90), (130, 40, 20), (160, 160, 160), (60, 40, 30)]
MASK_COLOURS = [(120, 180, 230), (240, 240, 240), (40, 40, 40), (90, 160, 120), (230, 150, 170)]


@dataclass(frozen=True)
class Identity:
    """What stays the same across every view of one synthetic person."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: int  # 0 short, 1 long, 2 bald
    aspect: float  # face height / width
    eye_gap: float  # eye distance / face width
    eye_colour: tuple[int, int, int]
    glasses: bool
    beard: bool

    @classmethod
    def random(cls, rng: np.random.Generator) -> Identity:
        return cls(
            skin=SKIN_TONES[rng.integers(len(SKIN_TONES))],
            hair=HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
            hair_style=int(rng.integers(3)),
            aspect=float(rng.uniform(1.15, 1.45)),
            eye_gap=float(rng.uniform(0.32, 0.46)),
            eye_colour=tuple(int(c) for c in rng.integers(20, 120, 3)),
            glasses=bool(rng.random() < 0.3),
            beard=bool(rng.random() < 0.25),
        )


def draw_face(
    canvas: np.ndarray,
    centre: tuple[float, float],
    width: float,
    identity: Identity,
    rng: np.random.Generator,
    mask: str = "none",
    angle: float = 0.0,
    light: float = 1.0,
) -> tuple[float, float, float, float]:
    """Draw a frontal cartoon face on an RGB uint8 canvas in place; return its box (left, top, right, bottom).

    `angle` rotates the face in-plane (degrees), `light` scales its brightness (pose/lighting jitter).
    """
    size = int(np.ceil(width * 2.2))
    patch = np.zeros((size, size, 3), np.uint8)
    alpha = np.zeros((size, size), np.uint8)
    c = size / 2
    w, h = width / 2, width / 2 * identity.aspect
    skin = tuple(int(min(255, v * light)) for v in identity.skin)
    hair = tuple(int(min(255, v * light)) for v in identity.hair)
    ell = lambda img, centre_, axes, colour, start=0, end=360: cv2.ellipse(  # noqa: E731
        img,
        (int(centre_[0]), int(centre_[1])),
        (max(1, int(axes[0])), max(1, int(axes[1]))),
        0,
        start,
        end,
        colour,
        -1,
        cv2.LINE_AA,
    )
    if identity.hair_style == 1:  # long hair behind the face
        ell(patch, (c, c + h * 0.2), (w * 1.25, h * 1.15), hair)
        ell(alpha, (c, c + h * 0.2), (w * 1.25, h * 1.15), 255)
    ell(patch, (c, c), (w, h), skin)
    ell(alpha, (c, c), (w, h), 255)
    ell(patch, (c - w, c), (w * 0.14, h * 0.2), skin)  # ears
    ell(patch, (c + w, c), (w * 0.14, h * 0.2), skin)
    ell(alpha, (c - w, c), (w * 0.14, h * 0.2), 255)
    ell(alpha, (c + w, c), (w * 0.14, h * 0.2), 255)
    if identity.hair_style != 2:
        ell(patch, (c, c - h * 0.55), (w * 1.04, h * 0.5), hair, 180, 360)
        ell(alpha, (c, c - h * 0.55), (w * 1.04, h * 0.5), 255, 180, 360)
    eye_y, gap = c - h * 0.12, w * 2 * identity.eye_gap / 2
    for side in (-1, 1):
        ex = c + side * gap
        ell(patch, (ex, eye_y), (w * 0.17, h * 0.07), (250, 250, 250))
        ell(patch, (ex, eye_y), (w * 0.08, h * 0.065), identity.eye_colour)
        cv2.line(
            patch,
            (int(ex - w * 0.2), int(eye_y - h * 0.16)),
            (int(ex + w * 0.2), int(eye_y - h * 0.18)),
            hair,
            max(1, int(w * 0.07)),
            cv2.LINE_AA,
        )
        if identity.glasses:
            cv2.circle(patch, (int(ex), int(eye_y)), int(w * 0.26), (20, 20, 20), max(1, int(w * 0.04)), cv2.LINE_AA)
    shadow = tuple(int(v * 0.75) for v in skin)
    cv2.line(
        patch,
        (int(c), int(eye_y + h * 0.05)),
        (int(c - w * 0.08), int(c + h * 0.25)),
        shadow,
        max(1, int(w * 0.06)),
        cv2.LINE_AA,
    )
    ell(patch, (c, c + h * 0.5), (w * 0.3, h * 0.08), (150, 50, 60), 0, 180)  # mouth
    if identity.beard:
        ell(patch, (c, c + h * 0.72), (w * 0.7, h * 0.3), hair, 0, 180)
    if mask != "none":
        top = c + (h * 0.08 if mask == "worn" else h * 0.38)  # worn covers the nose, incorrect sits below it
        colour = MASK_COLOURS[rng.integers(len(MASK_COLOURS))]
        pts = np.array(
            [
                [c - w * 0.95, top],
                [c + w * 0.95, top],
                [c + w * 0.8, c + h * 0.8],
                [c, c + h * 0.98],
                [c - w * 0.8, c + h * 0.8],
            ],
            np.int32,
        )
        cv2.fillPoly(patch, [pts], colour, cv2.LINE_AA)
        cv2.line(
            patch, (int(c - w * 0.95), int(top)), (int(c - w * 1.05), int(c - h * 0.1)), colour, max(1, int(w * 0.05))
        )
        cv2.line(
            patch, (int(c + w * 0.95), int(top)), (int(c + w * 1.05), int(c - h * 0.1)), colour, max(1, int(w * 0.05))
        )
    rotation = cv2.getRotationMatrix2D((c, c), angle, 1.0)
    patch = cv2.warpAffine(patch, rotation, (size, size), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(alpha, rotation, (size, size), flags=cv2.INTER_LINEAR)
    x0, y0 = int(round(centre[0] - c)), int(round(centre[1] - c))
    _paste(canvas, patch, alpha, x0, y0)
    ys, xs = np.nonzero(alpha > 127)
    box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    H, W = canvas.shape[:2]
    return (float(max(0, box[0])), float(max(0, box[1])), float(min(W, box[2])), float(min(H, box[3])))


def _paste(canvas: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    H, W = canvas.shape[:2]
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    dx1, dy1 = min(W, x0 + patch.shape[1]), min(H, y0 + patch.shape[0])
    if dx1 <= dx0 or dy1 <= dy0:
        return
    region = (slice(dy0, dy1), slice(dx0, dx1))
    src = (slice(sy0, sy0 + dy1 - dy0), slice(sx0, sx0 + dx1 - dx0))
    a = alpha[src][..., None].astype(np.float32) / 255
    canvas[region] = (patch[src] * a + canvas[region] * (1 - a)).astype(np.uint8)


@dataclass(frozen=True)
class FacePhoto:
    """A real photograph shipped by an installed package, with its face box (left, top, right, bottom)."""

    name: str
    rgb: np.ndarray
    face: tuple[int, int, int, int]


def real_face_photos() -> list[FacePhoto]:
    """skimage's astronaut (Eileen Collins, NASA, public domain) and matplotlib's Grace Hopper portrait.

    Boxes: dlib HOG's detections on these images, checked by eye."""
    import matplotlib.cbook
    import skimage.data

    from core.images import read_rgb

    return [
        FacePhoto("astronaut", skimage.data.astronaut(), (175, 76, 265, 166)),
        FacePhoto(
            "grace_hopper",
            read_rgb(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
            (180, 139, 366, 325),
        ),
    ]
