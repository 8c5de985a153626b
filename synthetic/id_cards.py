"""Worker ID cards, like the scans the paper's dlib notebook cropped faces from: a card layout with a real
face photo (from `real_face_photos()`, jittered in scale, brightness and small rotation), text blocks and
a barcode, laid on a desk background and sometimes rotated by a few degrees. VOC xml gives one `face` box
per card, so the detector comparison runs on them. A second set renders the same cards at fixed in-plane
rotations (0/15/30/45°) to measure recall against rotation.

Face boxes of rotated faces are the axis-aligned box of the rotated ellipse inscribed in the upright face
box, so a detector that finds the face well scores the same IoU at every angle.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from core.voc import VocAnnotation, VocObject, write_voc
from synthetic import synthetic_set
from synthetic.faces import FacePhoto, real_face_photos

CARD_SIZE = (428, 270)  # width, height: ID-1 proportions (85.6 × 54 mm) at 5 px/mm
PHOTO_SLOT = (24, 62, 120, 156)  # left, top, width, height on the card
BAND_COLOURS = [(20, 70, 140), (150, 30, 40), (30, 110, 70), (90, 60, 130), (40, 40, 40)]
PAPER_COLOURS = [(245, 245, 240), (235, 242, 250), (250, 244, 230), (240, 250, 240)]
DESK_COLOURS = [(110, 85, 60), (70, 70, 75), (170, 160, 145), (40, 55, 80)]
FIRST_NAMES = ["ALEX", "MARIA", "CHAN TAI MAN", "SAM", "LEE KA YAN", "JORDAN", "WONG SIU MING", "PRIYA"]
COMPANIES = ["ACME CONSTRUCTION", "HARBOUR WORKS LTD", "KOWLOON BUILDERS", "NORTHSIDE CIVIL"]


@synthetic_set
def make_id_cards(
    out_dir: Path,
    rng: np.random.Generator,
    *,
    seed: int = 0,
    cards: int = 24,
    rotated_rate: float = 0.3,
    max_rotation: float = 8.0,
    large: int = 1,
) -> None:
    """`images/card_NNN.jpg` + `annotations/card_NNN.xml`. `rotated_rate` of the cards lie rotated by
    2–`max_rotation` degrees; the last `large` cards are photographed at 2982×1926 like the paper's photo."""
    photos = real_face_photos()
    for k in range(cards):
        card, face = _card(rng, photos)
        angle = float(rng.uniform(2, max_rotation) * rng.choice([-1, 1])) if rng.random() < rotated_rate else 0.0
        scale = 2982 / (CARD_SIZE[0] + 80) if k >= cards - large else 1.0
        image, box = _on_desk(rng, card, face, angle, scale)
        _write(out_dir, f"card_{k:03d}", image, [box])


@synthetic_set
def make_id_card_rotations(
    out_dir: Path, rng: np.random.Generator, *, seed: int = 0, cards: int = 8, angles: tuple[int, ...] = (0, 15, 30, 45)
) -> None:
    """`rot_<angle>/{images,annotations}`: the same `cards` cards at each in-plane angle (sign alternating)."""
    photos = real_face_photos()
    drawn = [(_card(rng, photos), rng.integers(2**31)) for _ in range(cards)]
    for angle in angles:
        for k, ((card, face), desk_seed) in enumerate(drawn):
            signed = float(angle if k % 2 == 0 else -angle)
            image, box = _on_desk(np.random.default_rng(desk_seed), card, face, signed, 1.0)
            _write(out_dir / f"rot_{angle:02d}", f"card_{k:03d}", image, [box])


def _write(folder: Path, stem: str, image: np.ndarray, faces: list[tuple[float, float, float, float]]) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{stem}.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    objects = [VocObject("face", *box) for box in faces]
    write_voc(
        folder / "annotations" / f"{stem}.xml", VocAnnotation(f"{stem}.jpg", image.shape[1], image.shape[0], objects)
    )


def _card(rng: np.random.Generator, photos: list[FacePhoto]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """One upright card and its face box in card pixels."""
    width, height = CARD_SIZE
    card = np.zeros((height, width, 3), np.uint8)
    card[:] = PAPER_COLOURS[rng.integers(len(PAPER_COLOURS))]
    band = BAND_COLOURS[rng.integers(len(BAND_COLOURS))]
    cv2.rectangle(card, (0, 0), (width, 48), band, -1)
    cv2.circle(card, (width - 30, 24), 16, (255, 255, 255), -1, cv2.LINE_AA)
    cv2.circle(card, (width - 30, 24), 10, band, 3, cv2.LINE_AA)
    company = COMPANIES[rng.integers(len(COMPANIES))]
    cv2.putText(card, company, (14, 22), cv2.FONT_HERSHEY_DUPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(card, "WORKER IDENTITY CARD", (14, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (230, 230, 230), 1, cv2.LINE_AA)
    left, top, slot_w, slot_h = PHOTO_SLOT
    photo, face = _photo(rng, photos[rng.integers(len(photos))], slot_w, slot_h)
    card[top : top + slot_h, left : left + slot_w] = photo
    cv2.rectangle(card, (left - 1, top - 1), (left + slot_w, top + slot_h), (90, 90, 90), 1)
    ink = (30, 30, 40)
    lines = [
        ("NAME", FIRST_NAMES[rng.integers(len(FIRST_NAMES))]),
        ("ID NO", f"{rng.integers(10**7, 10**8)}"),
        ("TRADE", ["STEEL FIXER", "CARPENTER", "ELECTRICIAN", "SITE ENGINEER"][rng.integers(4)]),
        ("VALID", f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(2026, 2031)}"),
    ]
    for row, (label, value) in enumerate(lines):
        y = 82 + row * 34
        cv2.putText(card, label, (164, y), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (110, 110, 120), 1, cv2.LINE_AA)
        cv2.putText(card, value, (164, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ink, 1, cv2.LINE_AA)
    x = 164
    for bar in rng.integers(1, 4, 60):  # barcode
        if x + bar > width - 16:
            break
        cv2.rectangle(card, (x, 232), (x + int(bar) - 1, 256), ink, -1)
        x += int(bar) + int(rng.integers(1, 3))
    return card, (face[0] + left, face[1] + top, face[2] + left, face[3] + top)


def _photo(
    rng: np.random.Generator, photo: FacePhoto, slot_w: int, slot_h: int
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A passport-style photo for the slot: the face about half the slot wide, jittered."""
    fl, ft, fr, fb = photo.face
    face_w = fr - fl
    scale = slot_w * rng.uniform(0.5, 0.68) / face_w
    angle = float(rng.uniform(-6, 6))
    centre = ((fl + fr) / 2, (ft + fb) / 2)
    target = (slot_w / 2 + rng.uniform(-6, 6), slot_h * rng.uniform(0.4, 0.5))
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += np.array(target) - centre
    warped = cv2.warpAffine(photo.rgb, matrix, (slot_w, slot_h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    lit = np.clip(warped.astype(np.float32) * rng.uniform(0.7, 1.25) + rng.uniform(-15, 15), 0, 255).astype(np.uint8)
    return lit, _ellipse_box(photo.face, matrix, (slot_w, slot_h))


def _on_desk(
    rng: np.random.Generator, card: np.ndarray, face: tuple[float, float, float, float], angle: float, scale: float
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The card photographed on a desk: rotated by `angle` degrees, scaled, with sensor noise."""
    height, width = card.shape[:2]
    pad = 40 + int(abs(np.sin(np.radians(angle))) * max(width, height) / 2)
    size = (round((width + 2 * pad) * scale), round((height + 2 * pad) * scale))
    desk = np.zeros((size[1], size[0], 3), np.float32)
    desk[:] = DESK_COLOURS[rng.integers(len(DESK_COLOURS))]
    desk += rng.normal(0, 6, desk.shape).astype(np.float32)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    matrix[:, 2] += np.array(size) / 2 - (width / 2, height / 2)
    warped = cv2.warpAffine(card, matrix, size, flags=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(np.full((height, width), 255, np.uint8), matrix, size)[..., None] / 255.0
    image = warped * alpha + desk * (1 - alpha)
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), _ellipse_box(face, matrix, size)


def _ellipse_box(
    box: tuple[float, float, float, float], matrix: np.ndarray, size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Axis-aligned box of the ellipse inscribed in `box` after the similarity transform `matrix`, clipped."""
    left, top, right, bottom = box
    centre = matrix @ np.array([(left + right) / 2, (top + bottom) / 2, 1.0])
    linear = matrix[:, :2]
    axes = linear @ np.diag([(right - left) / 2, (bottom - top) / 2])  # columns: the ellipse's transformed semi-axes
    half = np.hypot(axes[:, 0], axes[:, 1])  # half-width, half-height of the transformed ellipse's bounding box
    return (
        float(max(0, centre[0] - half[0])),
        float(max(0, centre[1] - half[1])),
        float(min(size[0], centre[0] + half[0])),
        float(min(size[1], centre[1] + half[1])),
    )
