"""Synthetic people for face recognition: a few distinct identities, many face crops each (the layout
capture-faces writes, `<name>/0001.jpg`), and a short video to capture faces from."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from synthetic import synthetic_set
from synthetic.faces import Identity, draw_face, real_face_photos

NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")


@synthetic_set
def make_identities(
    out_dir: Path,
    rng: np.random.Generator,
    *,
    seed: int = 0,
    identities: int = 4,
    per_identity: int = 60,
    size: int = 128,
    margin: float = 0.2,
) -> None:
    """`out_dir/<name>/0001.jpg …`: `per_identity` crops of each of `identities` cartoon people, the face
    filling the crop up to `margin` on each side (as capture-faces crops), with pose, scale, position and
    lighting jitter and a varying background. Identities differ in every drawn trait the set can tell apart."""
    if not 2 <= identities <= len(NAMES):
        raise ValueError(f"identities must be 2..{len(NAMES)}, got {identities}")
    people = _distinct_identities(rng, identities)
    for name, person in zip(NAMES, people):
        folder = out_dir / name
        folder.mkdir(parents=True)
        for k in range(per_identity):
            canvas = np.empty((size, size, 3), np.uint8)
            canvas[:] = rng.integers(40, 220, 3)
            canvas = np.clip(canvas + rng.normal(0, 8, canvas.shape), 0, 255).astype(np.uint8)
            face_width = size / (1 + 2 * margin) / person.aspect * rng.uniform(0.85, 1.05)
            centre = (size / 2 + rng.uniform(-0.06, 0.06) * size, size / 2 + rng.uniform(-0.06, 0.06) * size)
            draw_face(
                canvas,
                centre,
                face_width,
                person,
                rng,
                angle=float(rng.uniform(-15, 15)),
                light=float(rng.uniform(0.7, 1.15)),
            )
            cv2.imwrite(str(folder / f"{k + 1:04d}.jpg"), canvas[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])


def _distinct_identities(rng: np.random.Generator, count: int) -> list[Identity]:
    # Redraw until skin, hair colour and hair style each differ from every earlier person in at least two
    # of the three, so that no two identities look alike at 128 px.
    people: list[Identity] = []
    while len(people) < count:
        person = Identity.random(rng)
        if all(
            sum((person.skin != p.skin, person.hair != p.hair, person.hair_style != p.hair_style)) >= 2 for p in people
        ):
            people.append(person)
    return people


def write_face_video(
    path: str | Path,
    *,
    seed: int = 0,
    frames: int = 40,
    size: tuple[int, int] = (320, 240),
    fps: int = 10,
    empty_every: int = 7,
    pair_every: int = 9,
) -> list[int]:
    """Write a short video of a real face (skimage's astronaut) drifting over a background: every
    `empty_every`-th frame shows no face and every `pair_every`-th frame shows a second person (Grace
    Hopper). Returns the number of faces drawn in each frame."""
    rng = np.random.default_rng(seed)
    width, height = size
    astronaut, hopper = (_face_patch(photo, height // 2) for photo in real_face_photos())
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write a video to {path}")
    counts = []
    background = np.linspace(70, 170, width, dtype=np.float32)[None, :, None] * np.array([1.0, 0.9, 0.8], np.float32)
    for k in range(frames):
        frame = np.broadcast_to(background, (height, width, 3)).astype(np.uint8).copy()
        faces = [] if k % empty_every == empty_every - 1 else [astronaut]
        if faces and k % pair_every == pair_every - 1:
            faces.append(hopper)
        slots = np.linspace(0, width, len(faces) + 2)[1:-1]
        for patch, x in zip(faces, slots):
            h, w = patch.shape[:2]
            left = int(np.clip(x - w / 2 + rng.integers(-10, 11), 0, width - w))
            top = int(np.clip((height - h) / 2 + rng.integers(-10, 11), 0, height - h))
            frame[top : top + h, left : left + w] = patch
        counts.append(len(faces))
        writer.write(frame[..., ::-1])
    writer.release()
    return counts


def _face_patch(photo, height: int) -> np.ndarray:
    """The photo's face with half a face of context on each side, scaled to `height` pixels."""
    left, top, right, bottom = photo.face
    pad = (right - left) // 2
    crop = photo.rgb[max(0, top - pad) : bottom + pad, max(0, left - pad) : right + pad]
    scale = height / crop.shape[0]
    return cv2.resize(crop, (round(crop.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
