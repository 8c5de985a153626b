"""The known-people gallery: the best-scoring known person within the gallery's calibrated threshold, `unknown`
beyond it, so strangers are not named as someone known (a softmax head named the astronaut "Serena_Williams")."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from faces import Detection
from faces.feature_cache import FeatureCache
from faces.gallery import Gallery, build_gallery
from faces.recognition import CSV_COLUMNS, UNKNOWN
from tests.conftest import SHARED_DATA, compose, mlflow_runs, needs_shared_data


def test_identify_names_the_best_scoring_person_and_calls_far_ones_unknown():
    gallery = Gallery(["ann", "ann", "bob"], np.array([[0, 0], [1, 0], [0, 2]], np.float32))
    queries = np.array([[0.5, 0.1], [0, 1.5], [3, 3], [0, 1.4], [1, 1.2]], np.float32)
    # scores, the mean distance to a person's photos: ann √0.26 = 0.5099 (both photos); bob 0.5; bob √10 = 3.1623;
    # bob 0.6 (= tolerance: not a match); bob √1.64 = 1.2806, below ann's (√2.44 + 1.2)/2 = 1.3810 although the
    # nearest photo, (1, 0) at 1.2, is ann's
    got = gallery.identify(queries, tolerance=0.6)
    assert [name for name, _ in got] == ["ann", "bob", UNKNOWN, UNKNOWN, UNKNOWN]
    assert [round(d, 4) for _, d in got] == [0.5099, 0.5, 3.1623, 0.6, 1.2806]
    assert gallery.identify(queries[4:], tolerance=1.3) == [("bob", pytest.approx(1.2806, abs=1e-4))]
    np.testing.assert_allclose(gallery.person_scores(queries[4:]), [[1.3810, 1.2806]], atol=1e-4)
    assert gallery.people == ["ann", "bob"] and gallery.identify(np.empty((0, 2))) == []
    # without a tolerance: the gallery's calibrated threshold (2 people, far apart: dlib's 0.6 caps it)
    assert gallery.open_set_threshold().threshold == 0.6 and gallery.identify(queries)[:2] == got[:2]


def test_tiny_cartoon_galleries_keep_their_threshold_and_reject_a_stranger(tmp_path):
    """Four cartoon people of the synthetic set with 1, 5 or 20 photos each, a fifth as the stranger (21 photos),
    described as recognize describes (HOG's central face, else the central box; mirrored-chip average)."""
    from faces.descriptors import FaceDescriber
    from faces.detectors import HogDetector
    from faces.gallery import gallery_photos
    from faces.photos import describe_photo
    from synthetic.identities import make_identities

    people = gallery_photos(make_identities(tmp_path / "people", identities=5, per_identity=21, seed=0))
    describer, detector = FaceDescriber(flip=True), HogDetector()
    rows = {n: np.stack([describe_photo(p, detector, describer)[0][0] for p in ps]) for n, ps in people.items()}
    known, stranger = ["alice", "bob", "carol", "dave"], rows["erin"]
    thresholds, named, named_fixed = [], [], []
    for size in (1, 5, 20):
        gallery = Gallery([n for n in known for _ in range(size)], np.concatenate([rows[n][:size] for n in known]))
        threshold = gallery.open_set_threshold()
        assert "6 person pair(s)" in threshold.rule and "for 4 people" in threshold.rule
        thresholds.append(threshold.threshold)
        named.append(sum(name != UNKNOWN for name, _ in gallery.identify(stranger)))
        nearest = np.linalg.norm(stranger[:, None] - gallery.descriptors[None], axis=2).min(axis=1)
        named_fixed.append(int((nearest < 0.6).sum()))
    # cartoon people lie closer together than real ones (impostor mean 0.47-0.53, LFW's 0.816): the gallery's own
    # scores pull the threshold down, and it stays put as photos are added
    np.testing.assert_allclose(thresholds, [0.4661, 0.4661, 0.4681], atol=5e-4)
    assert named == [1, 0, 0] and named_fixed == [20, 21, 21]  # dlib's one-to-one 0.6 names the stranger
    held_out = gallery.identify(np.stack([rows[n][20] for n in known]))
    assert [name for name, _ in held_out] == known


class CentreFace:
    """A detector stand-in: one face in the middle of the image, none in an all-black one."""

    name = "stub"

    def __repr__(self):  # part of the cache key, as the real detectors' repr (their settings)
        return "CentreFace()"

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        return [] if rgb.max() == 0 else [Detection(w // 4, h // 4, 3 * w // 4, 3 * h // 4, 1.0)]


class MeanColour:
    """A describer stand-in: the mean RGB of the face box / 255, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, rgb, detections):
        self.calls += len(detections)
        return np.array(
            [rgb[d.top : d.bottom, d.left : d.right].reshape(-1, 3).mean(0) / 255 for d in detections], np.float32
        )

    def tag(self):
        return "mean-colour"


def _known(root: Path) -> Path:
    for name, colours in {"red": [(200, 0, 0), (180, 10, 0)], "blue": [(0, 0, 200)]}.items():
        (root / name).mkdir(parents=True)
        for k, colour in enumerate(colours):
            cv2.imwrite(str(root / name / f"{k}.png"), np.full((40, 40, 3), colour[::-1], np.uint8))
    cv2.imwrite(str(root / "blue" / "dark.png"), np.zeros((40, 40, 3), np.uint8))  # no face: skipped
    (root / "notes.txt").write_text("not a person")
    return root


def test_gallery_is_built_from_a_folder_per_person_and_cached_by_file(tmp_path):
    folder, describer = _known(tmp_path / "known"), MeanColour()
    gallery = build_gallery(folder, CentreFace(), describer, tmp_path / "cache")
    assert gallery.names == ["blue", "red", "red"] and describer.calls == 3
    assert gallery.skipped == [str(folder / "blue" / "dark.png")]
    np.testing.assert_allclose(gallery.descriptors[0], [0, 0, 200 / 255], atol=1e-6)
    again = build_gallery(folder, CentreFace(), describer, tmp_path / "cache")
    assert describer.calls == 3 and again.names == gallery.names  # all from the cache
    photo = folder / "red" / "1.png"
    cv2.imwrite(str(photo), np.full((40, 40, 3), (0, 0, 100), np.uint8))  # BGR: red 100
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    changed = build_gallery(folder, CentreFace(), describer, tmp_path / "cache")
    assert describer.calls == 4 and changed.descriptors[2][0] == pytest.approx(100 / 255)
    assert FeatureCache(tmp_path / "cache").cached([photo], "other describer") == 0


def test_two_writers_of_one_descriptor_cache_keep_each_others_entries(tmp_path):
    """Two processes that read the cache before either saved (eval-lfw and recognize at once): the second save
    merges the first's entries instead of writing over them."""
    folder = _known(tmp_path / "known")
    red, blue = folder / "red" / "0.png", folder / "blue" / "0.png"
    first, second = FeatureCache(tmp_path / "cache"), FeatureCache(tmp_path / "cache")
    first.get_labelled([red], "tag", lambda paths, keys: [(np.ones((1, 3)), "detected")])
    second.get_labelled([blue], "tag", lambda paths, keys: [(np.zeros((1, 3)), "centre box")])
    (red_entry, red_how), (_, blue_how) = FeatureCache(tmp_path / "cache").get_labelled(
        [red, blue], "tag", lambda paths, keys: 1 / 0
    )
    np.testing.assert_array_equal(red_entry, np.ones((1, 3)))
    assert blue_how == "centre box" and red_how == "detected"


def test_gallery_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match="gallery=.*missing.*folder not found"):
        build_gallery(tmp_path / "missing", CentreFace(), MeanColour())
    (tmp_path / "empty" / "ann").mkdir(parents=True)
    with pytest.raises(UserError, match="no <Name>/ sub-folder with photos"):
        build_gallery(tmp_path / "empty", CentreFace(), MeanColour())
    cv2.imwrite(str(tmp_path / "empty" / "ann" / "dark.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="no face found in any of its 1 photo"):
        build_gallery(tmp_path / "empty", CentreFace(), MeanColour())


# ---- real photographs: LFW people as the gallery, the package sample photos as strangers ----------------------

PEOPLE = ["Colin_Powell", "George_W_Bush", "Tony_Blair"]


@needs_shared_data("faces", "Tony_Blair")
def test_strangers_are_unknown_and_a_known_person_is_named(tmp_path, store):
    from experiments.recognize import recognize
    from synthetic.faces import real_face_photos

    known = tmp_path / "known"
    for person in PEOPLE:
        (known / person).mkdir(parents=True)
        for photo in sorted((SHARED_DATA / "faces" / person).glob("*.jpg"))[:4]:
            shutil.copy(photo, known / person / photo.name)
    images = tmp_path / "images"
    images.mkdir()
    for photo in real_face_photos():
        cv2.imwrite(str(images / f"{photo.name}.png"), photo.rgb[..., ::-1])
    held_out = sorted((SHARED_DATA / "faces" / "Tony_Blair").glob("*.jpg"))[10]
    shutil.copy(held_out, images / "blair.jpg")

    summary = recognize(
        compose(
            "recognize",
            {
                **store,
                "images": str(images),
                "out_dir": str(tmp_path / "out"),
                "gallery": str(known),
                "progress": False,
                "threads": 1,
            },
        )
    )
    table = pd.read_csv(tmp_path / "out" / "recognitions.csv")
    assert list(table.columns) == CSV_COLUMNS and table["confidence"].isna().all()
    blair = table[table["image"] == "blair.jpg"]
    assert list(blair["name"]) == ["Tony_Blair"]
    strangers = table[table["image"] != "blair.jpg"]
    assert {"astronaut.png", "grace_hopper.png"} <= set(strangers["image"])
    assert len(strangers) == 2  # the astronaut and Grace Hopper; HOG's default threshold drops the badge on her suit
    assert summary == {"images": 3, "faces": len(table), "known": 1, "unknown": len(table) - 1, "images_skipped": 0}
    _, runs = mlflow_runs(tmp_path, "recognize")
    run = runs[0].data
    assert run.params["gallery"] == str(known) and run.metrics["known"] == 1
    # the gallery's own threshold (3 people: 3 pairs against the reference's 10), not dlib's 0.6
    assert run.params["tolerance"] == "None" and run.metrics["target_far"] == 0.01
    assert run.params["threshold_rule"].startswith("normal model") and float(run.params["threshold"]) < 0.6
    threshold = run.metrics["threshold"]
    assert set(strangers["name"]) == {UNKNOWN} and (strangers["distance"] >= threshold).all()
    assert blair["distance"].iloc[0] < threshold and run.params["threads"] == "1"
    assert runs[0].data.params["flip"] == "True"  # described as eval-lfw and eval-openset describe (conf/describer)
    assert json.loads(json.dumps(summary)) == summary


def test_gallery_and_checkpoint_together_is_a_user_error(tmp_path, store):
    from experiments.recognize import gallery_folder, recognize

    captures = tmp_path / "captures"
    (captures / "alice").mkdir(parents=True)
    settings = {**store, "default_gallery": str(captures)}
    assert gallery_folder(compose("recognize", settings)) is None  # an empty capture folder: the checkpoint
    cv2.imwrite(str(captures / "alice" / "0001.jpg"), np.zeros((8, 8, 3), np.uint8))
    assert gallery_folder(compose("recognize", settings)) == captures  # no CKPT, no GALLERY: the captures
    assert gallery_folder(compose("recognize", {**settings, "ckpt": "x.ckpt"})) is None
    assert gallery_folder(compose("recognize", {**settings, "gallery": str(tmp_path)})) == tmp_path

    with pytest.raises(UserError, match="not both"):
        recognize(compose("recognize", {**store, "images": str(tmp_path), "gallery": str(tmp_path), "ckpt": "x.ckpt"}))
