"""A generated entrance clip with its ground truth, for measuring the face-mask monitor's tracking and counting.

Cartoon faces of the face-mask scenes (`faces.draw_face` on `facemask._background`) walk across a counting line and
in and out of a zone; one walks behind a pillar (an occlusion), and halfway the camera cuts to another view (a
scene cut) where a new person appears where the last one was. Exactly one person is unmasked. Written, from `seed`:

- `clip.mp4` (MPEG-4 Part 2, `fps` frames/s);
- `gt/gt.txt`, MOTChallenge ground truth: `frame, id, left, top, width, height, conf, class, visibility` per face and
  frame (frames from 1, boxes in pixels; class 1 with_mask, 2 without_mask, 3 mask_weared_incorrect; conf 0 marks a
  face hidden behind the pillar for more than half its width, which evaluations ignore and the ground-truth detector
  does not return);
- `scene.json`: the class names, the size, the frame rate, the frame of the cut and the scene's zones and lines in
  relative coordinates (shares 0–1 of the width and height), as `conf/monitor_facemask.yaml` takes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from synthetic import synthetic_set
from synthetic.facemask import CLASS_OF_MASK, FACEMASK_CLASSES, _background
from synthetic.faces import Identity, draw_face

CLIP_NAME, GT_NAME, SCENE_NAME = "clip.mp4", "gt/gt.txt", "scene.json"
# the scene's counting line (top to bottom: left → right counts in) and zone (the right 40 %: inside the door)
LINES = {"entrance": [[0.5, 0.05], [0.5, 0.95]]}
ZONES = {"inside": [[0.6, 0.0], [1.0, 0.0], [1.0, 1.0], [0.6, 1.0]]}
PILLAR = (0.22, 0.29, 0.62, 1.0)  # the occluder: left, right, top, bottom as shares of the width and height
# id, first frame, last frame, (x, y) at the first frame, (x, y) at the last frame (shares), mask state;
# the cut is at CUT: ids 1-3 live before it, 4-5 after it
CUT = 65
PEOPLE = (
    (1, 0, 64, (0.10, 0.25), (0.86, 0.25), "worn"),  # crosses the line in, ends inside the zone at the cut
    (2, 5, 64, (0.92, 0.55), (0.30, 0.55), "none"),  # the one unmasked person: starts in the zone, crosses out
    (3, 10, 64, (0.05, 0.83), (0.45, 0.83), "worn"),  # behind the pillar, never crosses the line
    (4, 65, 129, (0.86, 0.27), (0.15, 0.27), "worn"),  # after the cut, where person 1 was: crosses out
    (5, 70, 125, (0.10, 0.60), (0.80, 0.60), "worn"),  # crosses in, enters the zone
)


def _position(first: int, last: int, start, end, frame: int) -> tuple[float, float]:
    share = (frame - first) / max(1, last - first)
    return start[0] + (end[0] - start[0]) * share, start[1] + (end[1] - start[1]) * share


@synthetic_set
def make_entrance_clip(
    out_dir: Path,
    rng: np.random.Generator,
    *,
    seed: int = 0,
    width: int = 480,
    height: int = 320,
    fps: int = 10,
    face_width: float = 40.0,
) -> None:
    """`clip.mp4`, `gt/gt.txt` and `scene.json` in `out_dir` (see the module doc): 130 frames of `width` ×
    `height` px at `fps` frames/s, faces `face_width` px wide."""
    frames = max(p[2] for p in PEOPLE) + 5
    identities = {p[0]: Identity.random(rng) for p in PEOPLE}
    views = [_background(rng, width, height), _background(rng, width, height)]
    px0, px1, py0, py1 = (int(v * s) for v, s in zip(PILLAR, (width, width, height, height)))
    pillar_colour = tuple(int(c) for c in rng.integers(60, 200, 3))
    (out_dir / "gt").mkdir(parents=True)
    writer = cv2.VideoWriter(str(out_dir / CLIP_NAME), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    rows = []
    for frame in range(frames):
        canvas = views[int(frame >= CUT)].copy()
        boxes = []
        for person, first, last, start, end, mask in PEOPLE:
            if not first <= frame <= last:
                continue
            x, y = _position(first, last, start, end, frame)
            # the same rng per person each frame: the mask keeps its colour
            box = draw_face(
                canvas, (x * width, y * height), face_width, identities[person], np.random.default_rng(person), mask
            )
            boxes.append((person, box, mask))
        if frame < CUT:  # the pillar stands in the first view only
            cv2.rectangle(canvas, (px0, py0), (px1, py1), pillar_colour, -1)
        for person, (x0, y0, x1, y1), mask in boxes:
            visibility = 1.0
            if frame < CUT and y1 > py0:
                covered = max(0.0, min(x1, px1) - max(x0, px0)) * max(0.0, min(y1, py1) - max(y0, py0))
                visibility = 1 - covered / ((x1 - x0) * (y1 - y0))
            cls = FACEMASK_CLASSES.index(CLASS_OF_MASK[mask]) + 1
            conf = int(visibility >= 0.5)
            rows.append(
                f"{frame + 1},{person},{x0:.1f},{y0:.1f},{x1 - x0:.1f},{y1 - y0:.1f},{conf},{cls},{visibility:.3f}"
            )
        writer.write(np.ascontiguousarray(canvas[..., ::-1]))
    writer.release()
    (out_dir / GT_NAME).write_text("\n".join(rows) + "\n")
    scene = {
        "names": list(FACEMASK_CLASSES),
        "width": width,
        "height": height,
        "fps": fps,
        "frames": frames,
        "cut_frame": CUT,
        "zones": ZONES,
        "lines": LINES,
        "coordinates": "relative",
    }
    (out_dir / SCENE_NAME).write_text(json.dumps(scene, indent=1))
