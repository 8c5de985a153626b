"""LFW verification (View 2; Huang et al. 2007): pairs.txt parsing, fold-wise threshold choice, accuracy computed by
hand on tiny generated pair lists, the eval-lfw entry end to end, and (slow) the shared folds 1–5."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from core.errors import UserError
from faces.verification import (
    Pair,
    accuracy_at,
    best_threshold,
    evaluate_distances,
    evaluate_pairs,
    photo_path,
    read_pairs,
    roc_points,
)
from tests.conftest import SHARED_DATA, compose, mlflow_runs, needs_shared_data

PAIRS_TXT = "2\t1\nann\t1\t2\nann\t1\tbob\t1\ncid\t1\t3\ncid\t2\tdee\t4\n"


def test_read_pairs_follows_the_header_and_the_line_kinds(tmp_path):
    (tmp_path / "pairs.txt").write_text(PAIRS_TXT)
    assert read_pairs(tmp_path / "pairs.txt") == [
        Pair(("ann", 1), ("ann", 2), True, 0),
        Pair(("ann", 1), ("bob", 1), False, 0),
        Pair(("cid", 1), ("cid", 3), True, 1),
        Pair(("cid", 2), ("dee", 4), False, 1),
    ]
    assert photo_path("images", ("ann", 12)) == Path("images/ann/ann_0012.jpg")
    for text, message in [
        ("2 1\nann\t1\t2\n", r"promises 2 folds .* \(4 lines\), the file has 1"),
        ("two\t1\n", r"pairs.txt:1: expected the header"),
        (PAIRS_TXT.replace("ann\t1\tbob\t1", "ann\t1\t3"), r"pairs.txt:3: expected 'Name1 i Name2 j'"),
        (PAIRS_TXT.replace("cid\t1\t3", "cid\tx\t3"), r"pairs.txt:4: expected 'Name i j' .* fold 2"),
    ]:
        (tmp_path / "pairs.txt").write_text(text)
        with pytest.raises(UserError, match=message):
            read_pairs(tmp_path / "pairs.txt")
    with pytest.raises(UserError, match="pairs file not found"):
        read_pairs(tmp_path / "missing.txt")


def test_best_threshold_maximises_accuracy_and_takes_the_middle_of_ties():
    assert best_threshold([0.1, 0.2, 0.3, 0.4], [True, True, False, False]) == pytest.approx(0.25)
    # same/different alternate: k = 1 and k = 3 pairs called same both get 3 of 4 right; the middle tie is k = 3
    assert best_threshold([0.1, 0.2, 0.3, 0.4], [True, False, True, False]) == pytest.approx(0.35)
    assert best_threshold([0.5, 0.5, 0.9], [True, False, False]) == pytest.approx(0.7)  # never between equal distances
    assert accuracy_at([0.1, 0.6, 0.7], [True, True, False], 0.6) == pytest.approx(2 / 3)  # 0.6 is not < 0.6


# three folds of 2 same + 2 different pairs; thresholds and accuracies worked out by hand (see the test)
FOLD_DISTANCES = {0: ([0.2, 0.5], [0.7, 0.9]), 1: ([0.3, 0.8], [0.6, 1.0]), 2: ([0.4, 0.45], [0.58, 1.1])}


def test_kfold_thresholds_are_chosen_on_the_other_folds():
    distances, same, folds = [], [], []
    for fold, (same_d, different_d) in FOLD_DISTANCES.items():
        distances += same_d + different_d
        same += [True, True, False, False]
        folds += [fold] * 4
    result = evaluate_distances(distances, same, folds, tolerance=0.6)
    # fold 1 held out: folds 2+3 sorted 0.3s 0.4s 0.45s 0.58d 0.6d 0.8s 1.0d 1.1d → 7 of 8 right with the first 3
    # called same, at (0.45+0.58)/2 = 0.515; fold 1 there: 0.2 0.5 same, 0.7 0.9 different: 4/4.
    # fold 2 held out: 0.2s 0.4s 0.45s 0.5s | 0.58d 0.7d 0.9d 1.1d → 0.54; fold 2: 0.3 ok, 0.8 missed, 0.6 1.0 ok: 3/4.
    # fold 3 held out: 0.2s 0.3s 0.5s | 0.6d 0.7d 0.8s 0.9d 1.0d → 0.55; fold 3: 0.4 0.45 same, 0.58 1.1 different: 4/4.
    np.testing.assert_allclose(result.thresholds, [0.515, 0.54, 0.55])
    np.testing.assert_allclose(result.fold_accuracy, [1.0, 0.75, 1.0])
    assert result.accuracy == pytest.approx(11 / 12)
    assert result.std == pytest.approx(np.sqrt(((1 / 12) ** 2 * 2 + (1 / 6) ** 2) / 2))  # ddof=1
    # at 0.6: 0.8 (same) is missed and 0.58 (different) is called same; 0.6 (different) is not < 0.6
    assert result.accuracy_at_tolerance == pytest.approx(10 / 12)
    with pytest.raises(ValueError, match="at least two folds"):
        evaluate_distances([0.1, 0.9], [True, False], [0, 0])


def test_evaluate_pairs_describes_each_photo_once_and_measures_euclidean_distances(tmp_path):
    (tmp_path / "pairs.txt").write_text(PAIRS_TXT)
    pairs = read_pairs(tmp_path / "pairs.txt")
    points = {
        ("ann", 1): [0, 0],
        ("ann", 2): [0.3, 0.4],
        ("bob", 1): [0, 1],
        ("cid", 1): [2, 2],
        ("cid", 3): [2, 2.2],
        ("cid", 2): [5, 5],
        ("dee", 4): [5, 5.9],
    }
    asked = []

    def describe(photos):
        asked.append(list(photos))
        return np.array([points[p] for p in photos], float)

    result = evaluate_pairs(pairs, describe, tolerance=0.6)
    assert asked == [sorted(points)]
    np.testing.assert_allclose(result.distances, [0.5, 1.0, 0.2, 0.9])
    # fold 1 held out: fold 2's 0.2 same, 0.9 different → threshold 0.55; fold 1: 0.5 same, 1.0 different: right
    np.testing.assert_allclose(result.thresholds, [0.55, 0.75])
    assert list(result.fold_accuracy) == [1.0, 1.0] and result.accuracy_at_tolerance == 1.0


def test_roc_points_step_through_every_distinct_distance():
    fpr, tpr = roc_points([0.1, 0.4, 0.2, 0.4], [True, False, True, True])
    np.testing.assert_allclose(fpr, [0, 0, 0, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1])


def _pairs_folder(root: Path) -> Path:
    """A tiny LFW-layout folder of generated photos (no face in them: every one gets the central box)."""
    root.mkdir(parents=True)
    (root / "pairs.txt").write_text(PAIRS_TXT)
    rng = np.random.default_rng(0)
    for pair in read_pairs(root / "pairs.txt"):
        for photo in (pair.first, pair.second):
            path = photo_path(root / "images", photo)
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 255, (250, 250, 3), dtype=np.uint8))
    return root


def test_eval_lfw_entry_prints_json_writes_roc_and_logs_to_mlflow(tmp_path, store, capsys):
    from experiments.eval_lfw import evaluate

    folder = _pairs_folder(tmp_path / "lfw")
    settings = {
        **store,
        "pairs": str(folder),
        "out_dir": str(tmp_path / "out"),
        "workers": 1,
        "retry_detector": "null",
        "progress": False,
        "cache_dir": str(tmp_path / "cache"),
    }
    summary = evaluate(compose("eval_lfw", settings))
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == summary and set(last) == {"accuracy", "std", "accuracy_at_tolerance", "pairs"} and last["pairs"] == 4
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["images"] == 7 and metrics["faces_found"] == {"centre box": 7} and len(metrics["fold_accuracy"]) == 2
    assert metrics["images_from_cache"] == 0 and metrics["images_per_s"] > 0
    # a re-run (another tolerance) takes every descriptor and how its face was found from the cache
    again = evaluate(compose("eval_lfw", {**settings, "tolerance": 0.5, "out_dir": str(tmp_path / "again")}))
    cached = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert (
        cached["images_from_cache"] == 7 and "images_per_s" not in cached and cached["faces_found"] == {"centre box": 7}
    )
    assert (again["accuracy"], again["std"]) == (summary["accuracy"], summary["std"])
    pd_first = (tmp_path / "out" / "pairs.csv").read_text()
    assert (tmp_path / "again" / "pairs.csv").read_text() == pd_first  # the same distances to the last digit
    # flip=false is another pipeline: described again, not answered from the flip=true (default) entries
    evaluate(compose("eval_lfw", {**settings, "flip": "false", "out_dir": str(tmp_path / "flip")}))
    assert json.loads((tmp_path / "flip" / "metrics.json").read_text())["images_from_cache"] == 0
    evaluate(compose("eval_lfw", {**settings, "landmarks": 5, "out_dir": str(tmp_path / "five")}))
    assert json.loads((tmp_path / "five" / "metrics.json").read_text())["images_from_cache"] == 0
    assert (tmp_path / "out" / "roc.png").stat().st_size > 0
    _, runs = mlflow_runs(tmp_path, "eval_lfw")
    assert runs[0].data.metrics["accuracy"] == pytest.approx(summary["accuracy"])
    client, _ = mlflow_runs(tmp_path, "eval_lfw")
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"metrics.json", "pairs.csv", "roc.png"}


def test_eval_lfw_names_a_missing_folder_or_photo(tmp_path, store):
    from experiments.eval_lfw import evaluate

    with pytest.raises(UserError, match="PAIRS=.*folder not found"):
        evaluate(compose("eval_lfw", {**store, "pairs": str(tmp_path / "none")}))
    folder = _pairs_folder(tmp_path / "lfw")
    photo_path(folder / "images", ("dee", 4)).unlink()
    with pytest.raises(UserError, match="1 photo.* missing, e.g. .*dee_0004.jpg"):
        evaluate(compose("eval_lfw", {**store, "pairs": str(folder)}))


@pytest.mark.slow
@needs_shared_data("lfw-pairs", "pairs.txt")
def test_eval_lfw_on_the_shared_folds_beats_plain_dlib(tmp_path, store):
    from experiments.eval_lfw import evaluate

    summary = evaluate(
        compose(
            "eval_lfw",
            {**store, "pairs": str(SHARED_DATA / "lfw-pairs"), "out_dir": str(tmp_path / "out"), "progress": False},
        )
    )
    # measured 99.10 % with 68-point chips, 98.90 % with 5-point ones (`make eval-lfw`); plain dlib's anchor is 98.73 %
    # (../shared/data/lfw-pairs/SOURCE.md). The floor keeps 3 of the 6 pairs the 68-point alignment gained (2970 of
    # 3000 is 0.9900; a mean of five fold accuracies may land a rounding below it)
    assert summary["pairs"] == 3000 and summary["accuracy"] > 0.9895


@needs_shared_data("lfw-pairs", "images", "Abel_Pacheco")
def test_describer_is_dlibs_descriptor_and_flip_averages_the_mirrored_chip():
    import dlib

    from core.images import read_rgb
    from faces.descriptors import FaceDescriber, central_face
    from faces.detectors import HogDetector, dlib_model_path

    rgb = read_rgb(photo_path(SHARED_DATA / "lfw-pairs" / "images", ("Abel_Pacheco", 1)))
    face = central_face(HogDetector().detect(rgb), rgb.shape)
    plain, flipped = FaceDescriber(), FaceDescriber(flip=True)
    predictor, _ = plain._native
    model = dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))
    shape = predictor(rgb, dlib.rectangle(face.left, face.top, face.right - 1, face.bottom - 1))
    # one chip: what face_recognition / dlib compute from the image and the landmarks (the port: within 1e-4)
    expected = np.asarray(model.compute_face_descriptor(rgb, shape, 1), np.float32)
    np.testing.assert_allclose(plain(rgb, [face])[0], expected, rtol=0, atol=1e-4)
    chip = dlib.get_face_chip(rgb, shape, 150, 0.25)
    mirrored = np.asarray(model.compute_face_descriptor(np.ascontiguousarray(chip[:, ::-1])), np.float32)
    # the plain mean, not re-normalised
    np.testing.assert_allclose(flipped(rgb, [face])[0], (expected + mirrored) / 2, rtol=0, atol=1e-4)
    assert "flip=True" in flipped.tag() and flipped.tag() != plain.tag()
    # the default aligns from dlib's 68 landmarks; landmarks=5 (plain dlib's predictor) is another chip and pipeline
    five = FaceDescriber(landmarks=5)
    assert (plain.landmarks, "|sp68|" in plain.tag(), "|sp5|" in five.tag()) == (68, True, True)
    five_shape = five._native[0](rgb, dlib.rectangle(face.left, face.top, face.right - 1, face.bottom - 1))
    assert (shape.num_parts, five_shape.num_parts) == (68, 5)
    five_expected = np.asarray(model.compute_face_descriptor(rgb, five_shape, 1), np.float32)
    np.testing.assert_allclose(five(rgb, [face])[0], five_expected, rtol=0, atol=1e-4)
    assert np.abs(five_expected - expected).max() > 1e-3
    with pytest.raises(UserError, match="landmarks must be one of \\[5, 68\\]"):
        FaceDescriber(landmarks=7)
    old = FaceDescriber.__new__(FaceDescriber)  # a describer pickled before `flip` and `landmarks` existed
    old.__setstate__({"num_jitters": 1, "padding": 0.25})
    assert (old.flip, old.landmarks) == (False, 5)


def test_a_jittered_descriptor_depends_on_the_face_alone_not_on_the_faces_described_before_it():
    from faces import Detection
    from faces.descriptors import FaceDescriber

    rng = np.random.default_rng(0)
    photos = [cv2.GaussianBlur((rng.random((160, 160, 3)) * 255).astype(np.uint8), (0, 0), 3) for _ in range(2)]
    box = [Detection(30, 30, 130, 130, 1.0)]
    describer = FaceDescriber(num_jitters=3)
    first = describer(photos[0], box)
    describer(photos[1], box)  # a generator shared between faces (dlib's) would have moved on here
    np.testing.assert_array_equal(describer(photos[0], box), first)
    np.testing.assert_array_equal(FaceDescriber(num_jitters=3)(photos[0], box), first)  # as in another worker
    assert np.abs(first - FaceDescriber()(photos[0], box)).max() > 1e-3  # the jitter did move it
    assert "jitters=3|" in describer.tag() and "jitters=1|" in FaceDescriber().tag()
    # more views than one forward pass takes (2 × 40 > DESCRIBE_BATCH): the chunks' descriptors average as one batch
    many = FaceDescriber(num_jitters=40, flip=True)
    views = many.views(many.chips(photos[0], box)[0])
    assert views.shape == (80, 150, 150, 3)
    with torch.inference_mode():
        expected = many._native[1](torch.from_numpy(views).permute(0, 3, 1, 2)).mean(dim=0).numpy()
    np.testing.assert_allclose(many(photos[0], box)[0], expected, rtol=0, atol=1e-5)


def test_jitter_moves_a_chip_as_much_as_dlibs_jitter_does():
    """`jitter_chip` follows dlib's `jitter_image` with another generator: on the astronaut's chip the mean pixel
    change of 40 jittered copies (each compared unmirrored) matches dlib's own within 15 %, and about half of the
    copies are mirrored."""
    import dlib

    from faces import Detection
    from faces.descriptors import FaceDescriber, jitter_chip
    from synthetic.faces import real_face_photos

    photo = real_face_photos()[0]
    chip = FaceDescriber().chips(photo.rgb, [Detection(*photo.face, 1.0)])[0]

    def change(copies) -> tuple[float, float]:
        diffs = [
            [np.abs(c.astype(float) - chip).mean(), np.abs(c[:, ::-1].astype(float) - chip).mean()] for c in copies
        ]
        return float(np.mean([min(d) for d in diffs])), float(np.mean([d[1] < d[0] for d in diffs]))

    rng = np.random.default_rng(0)
    ours, ours_mirrored = change([jitter_chip(chip, rng) for _ in range(40)])
    theirs, _ = change(dlib.jitter_image(chip, num_jitters=40))
    assert ours == pytest.approx(theirs, rel=0.15), (ours, theirs)
    assert 0.25 < ours_mirrored < 0.75, ours_mirrored
