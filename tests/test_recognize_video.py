"""Face recognition on video (`make recognize SRC=...`): faces tracked across frames, one name per track, through
the real entry and config, on a generated clip of a known face (skimage's astronaut) beside a stranger (Grace
Hopper)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from core.errors import UserError
from faces.recognition import UNKNOWN
from faces.video import TrackNames
from synthetic.faces import real_face_photos
from tests.conftest import compose, mlflow_runs


def _gallery_of_the_astronaut(root):
    astronaut = next(photo for photo in real_face_photos() if photo.name == "astronaut")
    path = root / "gallery" / "astronaut" / "astronaut.png"
    path.parent.mkdir(parents=True)
    cv2.imwrite(str(path), astronaut.rgb[..., ::-1])
    return path.parent.parent


def _two_people_clip(path, frames: int = 16) -> None:
    """The astronaut on the left for the whole clip, Grace Hopper coming in on the right at frame 4; both drift."""
    astronaut, hopper = (
        cv2.resize(
            photo.rgb[max(0, y0 - 40) : y1 + 40, max(0, x0 - 40) : x1 + 40], (120, 120), interpolation=cv2.INTER_AREA
        )
        for photo in real_face_photos()
        for x0, y0, x1, y1 in [photo.face]
    )
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (400, 200))
    for k in range(frames):
        frame = np.full((200, 400, 3), 120, np.uint8)
        frame[40:160, 20 + k : 140 + k] = astronaut
        if k >= 4:
            frame[40:160, 260 - k : 380 - k] = hopper
        writer.write(frame[..., ::-1].copy())
    writer.release()


def test_a_video_of_a_known_face_and_a_stranger_gives_two_tracks_with_the_right_names(tmp_path, capsys):
    from experiments.recognize import recognize

    _two_people_clip(tmp_path / "clip.mp4")
    overrides = {
        "paths.log_dir": str(tmp_path / "logs"),
        "paths.mlflow_dir": str(tmp_path),
        "paths.cache_dir": str(tmp_path / "cache"),
        "source": str(tmp_path / "clip.mp4"),
        "gallery": str(_gallery_of_the_astronaut(tmp_path)),
        "out_dir": str(tmp_path / "out"),
        "progress": False,
    }
    summary = recognize(compose("recognize", overrides))
    assert summary == {"frames": 16, "tracks": 2, "known_tracks": 1, "unknown_tracks": 1}
    with open(tmp_path / "out" / "tracks.csv") as handle:
        tracks = list(csv.DictReader(handle))
    astronaut, hopper = sorted(tracks, key=lambda t: float(t["first_s"]))  # Hopper comes in later
    assert (astronaut["name"], hopper["name"]) == ("astronaut", UNKNOWN)
    assert int(astronaut["frames"]) == 16 and int(hopper["frames"]) >= 10
    assert all(t["score_column"] == "distance" for t in tracks)
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    # the stranger is unknown from its first frame to its last: never named, not even for a frame
    stranger = next(t["track"] for t in tracks if t["name"] == UNKNOWN)
    assert {e["name"] for e in events if str(e["track"]) == stranger} == {UNKNOWN}
    assert [e["event"] for e in events if str(e["track"]) == stranger] == ["appeared", "left"]
    video = cv2.VideoCapture(str(tmp_path / "out" / "annotated.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 16
    out = capsys.readouterr().out
    assert "frames/s" in out and json.loads(out.strip().splitlines()[-1]) == summary
    _, runs = mlflow_runs(tmp_path, "recognize")
    assert runs[0].data.metrics["frames_per_s"] > 0 and runs[0].data.metrics["tracks"] == 2


def test_a_tracks_name_is_decided_over_its_frames_so_one_lucky_frame_names_nobody():
    class Gallery:  # two people; a score row is the distance to each, the threshold 0.5
        score_column = "distance"

        def decide(self, scores):
            k = int(np.argmin(scores))
            return ("ann" if k == 0 else "bob") if scores[k] < 0.5 else UNKNOWN, float(scores[k])

    names = TrackNames(Gallery())
    stranger = [[0.7, 0.8], [0.45, 0.8], [0.72, 0.75], [0.69, 0.9]]  # one frame close to ann
    decided = [names.update(k, k / 10, 7, row) for k, row in enumerate(stranger)]
    assert [name for name, _ in decided] == [UNKNOWN] * 4
    known = [[0.3, 0.8], [0.62, 0.7], [0.35, 0.9]]  # one bad frame
    assert [names.update(k, k / 10, 8, row)[0] for k, row in enumerate(known)] == ["ann"] * 3
    assert names.rows()[0]["frames"] == 4 and names.rows()[0]["score"] == pytest.approx(
        np.mean([0.7, 0.45, 0.72, 0.69])
    )


def test_recognize_takes_photos_or_a_video_not_both(tmp_path):
    from experiments.recognize import recognize

    with pytest.raises(UserError, match="not both"):
        recognize(compose("recognize", {"images": str(tmp_path), "source": "clip.mp4"}))
    with pytest.raises(UserError, match=r"IMAGES=<folder> \(photos\) or SRC="):
        recognize(compose("recognize", {}))
