"""Open-set identification: identification accuracy on the known people and rejection of strangers against the
tolerance, worked out by hand on fake descriptors; the gallery's calibrated threshold (`Gallery.open_set_threshold`)
by hand, on tiny galleries and against the gallery's size; the eval-openset entry end to end, and real LFW photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from faces.gallery import DEFAULT_TOLERANCE, REFERENCE_IMPOSTOR, Gallery, open_set_rates
from faces.recognition import UNKNOWN
from tests.conftest import SHARED_DATA, compose, mlflow_runs, needs_shared_data

# gallery: ann 1, 2 and bob 1, 2; probes: ann 3 and bob 3 (known), cid 1 and dee 1 (strangers). Scores (mean distance
# to a person's photos), by hand: ann 3 → ann (0.45 + √0.2425 = 0.4924)/2 = 0.4712; bob 3 → bob (0.65 + 0.6801)/2 =
# 0.6650 (ann: 1.3574); cid 1 → ann (0.95 + 0.75)/2 = 0.85 (bob: 2.1751); dee 1 → bob (0.35 + 0.4031)/2 = 0.3766.
# None lies on a tolerance of the curve, so float32 rounding cannot move a decision.
POINTS = {
    ("ann", "1"): [0, 0],
    ("ann", "2"): [0, 0.2],
    ("bob", "1"): [2, 0],
    ("bob", "2"): [2, 0.2],
    ("ann", "3"): [0.45, 0],
    ("bob", "3"): [1.35, 0],
    ("cid", "1"): [0, 0.95],
    ("cid", "2"): [9, 9],  # a second photo of a stranger: left out with strangers_per_person=1
    ("dee", "1"): [2.35, 0],
    ("ann", "x"): [7, 7],  # in the strangers folder, but ann is known: never a stranger
}
TOLERANCES = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
# known: ann 3 right when t > 0.4712, bob 3 when t > 0.6650; strangers: cid rejected when t <= 0.85, dee when
# t <= 0.3766
ACCURACY = [0, 0, 0.5, 0.5, 1, 1, 1]
REJECTION = [1, 0.5, 0.5, 0.5, 0.5, 0.5, 0]


def test_open_set_rates_by_hand():
    gallery = Gallery(
        ["ann", "ann", "bob", "bob"],
        np.array([POINTS["ann", k] for k in "12"] + [POINTS["bob", k] for k in "12"], np.float32),
    )
    names = ["ann", "bob", "cid", "dee"]
    probes = np.array([POINTS["ann", "3"], POINTS["bob", "3"], POINTS["cid", "1"], POINTS["dee", "1"]], np.float32)
    result = open_set_rates(gallery, probes, names, TOLERANCES)
    np.testing.assert_allclose(result.identification_accuracy, ACCURACY)
    np.testing.assert_allclose(result.stranger_rejection, REJECTION)
    assert result.nearest == ["ann", "bob", "ann", "bob"] and list(result.known) == [True, True, False, False]
    np.testing.assert_allclose(result.distance, [0.471221, 0.665037, 0.85, 0.376556], atol=1e-6)
    assert result.at(0.6) == (0.5, 0.5) and result.at(0.7) == (1.0, 0.5) and result.at(0.9) == (1.0, 0.0)
    with pytest.raises(ValueError, match="needs known probes and strangers; got 0 known, 4 strangers"):
        open_set_rates(Gallery(["eve"], np.zeros((1, 2), np.float32)), probes, names, TOLERANCES)


# ---- the calibrated threshold ------------------------------------------------------------------------------------


def test_open_set_threshold_is_the_normal_model_of_the_galleries_impostor_scores_by_hand():
    # a: (0, 0), (0.3, 0); b: (0.9, 0); c: (0, 0.8). Impostor scores (mean distance to another person's photos):
    # a1 → b 0.9, c 0.8; a2 → b 0.6, c √0.73; b → a (0.9 + 0.6)/2, c √1.45; c → a (0.8 + √0.73)/2, b √1.45
    gallery = Gallery(["a", "a", "b", "c"], np.array([[0, 0], [0.3, 0], [0.9, 0], [0, 0.8]], np.float32))
    scores = [0.9, 0.8, 0.6, 0.73**0.5, 0.75, 1.45**0.5, (0.8 + 0.73**0.5) / 2, 1.45**0.5]
    np.testing.assert_allclose(np.sort(gallery.impostor_scores()), np.sort(scores), atol=1e-6)
    # mean 0.892490, sd 0.198259; 3 people, 3 pairs: w = 3/13; μ = 10/13·0.816 + 3/13·0.892490 = 0.833652;
    # σ = √(10/13·0.088² + 3/13·0.198259²) = 0.122588; FMR = 1 − 0.99^(1/3) = 0.0033445, Φ⁻¹(FMR) = −2.7147;
    # t = 0.833652 − 2.7147·0.122588 = 0.501201
    threshold = gallery.open_set_threshold()
    assert threshold.threshold == pytest.approx(0.501201, abs=1e-6) and threshold.target_far == 0.01
    assert "3 person pair(s)" in threshold.rule and "per-person false-match rate 0.00334 for 3 people" in threshold.rule
    assert gallery.open_set_threshold(0.01) is threshold  # computed once per gallery
    # a looser target raises it: FMR = 1 − 0.95^(1/3) = 0.016952, Φ⁻¹ = −2.1212, t = 0.833652 − 2.1212·0.122588
    assert gallery.open_set_threshold(0.05).threshold == pytest.approx(0.573619, abs=1e-6)
    assert [name for name, _ in gallery.identify(np.array([[0.15, 0.2], [0.45, 0.4]]))] == ["a", UNKNOWN]
    with pytest.raises(ValueError, match="target_far must be in"):
        gallery.open_set_threshold(1.0)


def test_one_person_and_two_far_apart_people_get_dlibs_tolerance_as_the_cap():
    one = Gallery(["ann"], np.zeros((1, 2), np.float32)).open_set_threshold()
    # the reference alone: 0.816 + Φ⁻¹(0.01)·0.088 = 0.6113, above dlib's 0.6
    assert one.threshold == DEFAULT_TOLERANCE and "calibrated 0.6113" in one.rule and "no impostor score" in one.rule
    assert REFERENCE_IMPOSTOR == (0.816, 0.088)
    far = Gallery(["ann", "bob"], np.array([[0, 0], [3, 0]], np.float32)).open_set_threshold()
    assert far.threshold == DEFAULT_TOLERANCE  # one pair weighs 1/11: (10·0.816 + 3)/11 − 2.5758·0.0839 > 0.6


def test_one_photo_a_person_and_forty_give_the_same_decision_on_a_stranger():
    """A stranger 0.76 from X's first photo and 0.46 from the nearest of 39 more (on a circle of radius 0.3 around
    it): dlib's one-to-one 0.6 rejects it against the first photo and names it X against all forty; the
    per-person score with the calibrated threshold rejects it both times."""
    angles = np.linspace(0, 2 * np.pi, 39, endpoint=False)
    circle = 0.3 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    x_photos = np.concatenate([[[0, 0]], circle + [0.0, 0.0]])
    stranger = np.array([[0.7, 0.3]], np.float32) * (0.76 / np.hypot(0.7, 0.3))  # 0.76 from (0, 0)
    one = Gallery(["X", "Y"], np.array([[0, 0], [3, 0]], np.float32))
    many = Gallery(["X"] * 40 + ["Y"] * 40, np.concatenate([x_photos, x_photos + [3, 0]]).astype(np.float32))
    nearest = np.linalg.norm(many.descriptors - stranger, axis=1).min()
    assert nearest == pytest.approx(0.4615, abs=1e-4)  # the circle point nearest its direction
    assert [n for n, _ in one.identify(stranger, tolerance=0.6)] == [UNKNOWN]
    # the former rule: the nearest photo within 0.6 names the stranger
    assert nearest < 0.6
    assert one.identify(stranger) == [(UNKNOWN, pytest.approx(0.76, abs=1e-6))]
    name, score = many.identify(stranger)[0]
    assert name == UNKNOWN and score == pytest.approx(0.7892, abs=1e-4)  # mean distance to X's forty photos
    assert one.open_set_threshold().threshold == many.open_set_threshold().threshold == DEFAULT_TOLERANCE
    # X's own photos are still X's, with one photo or forty
    assert [n for n, _ in many.identify(np.array([[0.1, 0.0]]))] == [n for n, _ in one.identify([[0.1, 0.0]])] == ["X"]


def _people(rng, people: int, photos: int, dims: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Generated identities at dlib's scale: centres N(0, 0.0894²) and photos N(centre, 0.05²) in `dims`
    dimensions, i.e. photos of one person about 0.4 apart and of two people about 0.82 (dlib's LFW distances)."""
    centres = rng.normal(0, 0.0894, (people, dims))
    return centres, centres[:, None, :] + rng.normal(0, 0.05, (people, photos, dims))


def test_strangers_named_do_not_grow_with_the_photos_a_person_has():
    rng = np.random.default_rng(0)
    _, photos = _people(rng, 10, 40)
    _, strangers = _people(rng, 2000, 1)
    strangers = strangers[:, 0]
    names = [f"p{k}" for k in range(10)]
    named, named_fixed = {}, {}
    for size in (1, 40):
        gallery = Gallery([n for n in names for _ in range(size)], photos[:, :size].reshape(-1, 32).astype(np.float32))
        named[size] = np.array([n != UNKNOWN for n, _ in gallery.identify(strangers)])
        distance = np.linalg.norm(strangers[:, None] - gallery.descriptors[None], axis=2).min(axis=1)
        named_fixed[size] = distance < DEFAULT_TOLERANCE  # dlib's one-to-one rule: the nearest photo within 0.6
    # the fixed 0.6 names many more strangers with forty photos a person; the calibrated rule about the same few
    assert (named_fixed[1].mean(), named_fixed[40].mean()) == (0.119, 0.516)
    assert (named[1].mean(), named[40].mean()) == (0.0105, 0.0085)  # the target: 0.01
    assert (named[1] == named[40]).mean() == 0.993 and (named_fixed[1] == named_fixed[40]).mean() == 0.603


def _folders(root: Path) -> tuple[Path, Path]:
    """known/<ann|bob>/<1..3>.png and strangers/<ann|cid|dee>/*.png; the pixels do not matter (fake descriptors)."""
    for (person, stem), _ in POINTS.items():
        folder = root / ("known" if person in ("ann", "bob") and stem != "x" else "strangers") / person
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{stem}.png"), np.zeros((4, 4, 3), np.uint8))
    return root / "known", root / "strangers"


def fake_describe(asked: list):
    def describe(files):
        asked.append([f"{Path(f).parent.name}/{Path(f).stem}" for f in files])
        return np.array([POINTS[Path(f).parent.name, Path(f).stem] for f in files], np.float32), ["fake"] * len(files)

    return describe


def test_eval_openset_entry_splits_the_gallery_adds_strangers_and_logs_to_mlflow(tmp_path, store, capsys):
    from experiments.eval_openset import evaluate

    known, strangers = _folders(tmp_path)
    cfg = compose(
        "eval_openset",
        {
            **store,
            "gallery": str(known),
            "strangers": str(strangers),
            "gallery_photos": 2,
            "out_dir": str(tmp_path / "out"),
            "curve.low": 0.3,
            "curve.high": 0.9,
            "curve.points": 7,
        },
    )
    asked: list = []
    summary = evaluate(cfg, describe=fake_describe(asked))
    # every photo of the gallery folder (the gallery-size sweep uses them all), then one photo per stranger
    assert asked == [["ann/1", "ann/2", "ann/3", "bob/1", "bob/2", "bob/3", "cid/1", "dee/1"]]
    # 4 gallery photos, 2 people (1 pair, weight 1/11 against the reference's 10): impostor scores mean 2.005, so
    # μ = (10·0.816 + 2.005)/11 = 0.924, and the calibrated 0.708 is capped at dlib's 0.6
    assert summary == {
        "identification_accuracy": 0.5,
        "stranger_rejection": 0.5,
        "tolerance": None,
        "threshold": 0.6,
        "target_far": 0.01,
        "known_probes": 2,
        "strangers": 2,
        "gallery_photos": 4,
        "people": 2,
    }
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    out = tmp_path / "out"
    probes = pd.read_csv(out / "probes.csv")
    assert list(probes["named"]) == ["ann", "unknown", "unknown", "bob"]
    assert list(probes["correct"]) == [True, False, True, False] and list(probes["kind"][:2]) == ["known"] * 2
    sweep = pd.read_csv(out / "gallery_size.csv", dtype={"photos_per_person": str})
    # 5 folds of ann/1-3 and bob/1-3: folds 0-2 each hold out one photo a person, folds 3-4 none (all 6 in the
    # gallery, bob 3 at 1.35 from ann 1 among them, which pulls the threshold below dlib's 0.6)
    assert list(sweep["photos_per_person"]) == ["1", "5", "10", "all"]
    np.testing.assert_allclose(sweep["gallery_photos"], [2, 4.8, 4.8, 4.8])
    np.testing.assert_allclose(sweep["threshold"], [0.6, 0.5843, 0.5843, 0.5843], atol=1e-4)
    curve = pd.read_csv(out / "open_set_curve.csv")
    np.testing.assert_allclose(curve["tolerance"], TOLERANCES)
    np.testing.assert_allclose(curve["identification_accuracy"], ACCURACY)
    np.testing.assert_allclose(curve["stranger_rejection"], REJECTION)
    client, runs = mlflow_runs(tmp_path, "eval_openset")
    run = runs[0]
    assert run.data.metrics["open_set/identification_accuracy"] == 0.5
    assert run.data.metrics["open_set/stranger_rejection"] == 0.5 and run.data.params["tolerance"] == "None"
    assert run.data.params["threshold"] == "0.6" and run.data.metrics["open_set/target_far"] == 0.01
    assert run.data.params["threshold_rule"].startswith("normal model (mean 0.924, sd 0.084) of impostor scores")
    assert run.data.params["threshold_rule"].endswith("capped at dlib's 0.6 (calibrated 0.7080)")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "probes.csv", "open_set_curve.csv", "gallery_size.csv", "figures"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == [
        "figures/gallery_size.png",
        "figures/open_set.png",
    ]


def test_eval_openset_with_labelled_probes_and_its_user_errors(tmp_path, store):
    from experiments.eval_openset import evaluate

    known, strangers = _folders(tmp_path)
    probes = tmp_path / "probes"
    for person, stem in [("ann", "3"), ("bob", "3"), ("cid", "1"), ("dee", "1")]:
        source = known if person in ("ann", "bob") else strangers
        (probes / person).mkdir(parents=True, exist_ok=True)
        shutil.copy(source / person / f"{stem}.png", probes / person / f"{stem}.png")
    (known / "ann" / "3.png").unlink()
    (known / "bob" / "3.png").unlink()
    settings = {**store, "gallery": str(known), "out_dir": str(tmp_path / "out"), "gallery_photos": "null"}
    summary = evaluate(compose("eval_openset", {**settings, "probes": str(probes)}), describe=fake_describe([]))
    assert (summary["identification_accuracy"], summary["stranger_rejection"]) == (0.5, 0.5)
    assert summary["gallery_photos"] == 4 and summary["known_probes"] == 2

    shutil.rmtree(probes / "cid")
    shutil.rmtree(probes / "dee")
    with pytest.raises(UserError, match=r"probes=.*needs known people and strangers.*got 2 known and 0 stranger"):
        evaluate(compose("eval_openset", {**settings, "probes": str(probes)}), describe=fake_describe([]))
    with pytest.raises(UserError, match=r"probes=.*missing.*folder not found"):
        evaluate(compose("eval_openset", {**settings, "probes": str(tmp_path / "missing")}), describe=fake_describe([]))
    with pytest.raises(UserError, match=r"gallery=.*nobody.*folder not found"):
        evaluate(compose("eval_openset", {**settings, "gallery": str(tmp_path / "nobody")}), describe=fake_describe([]))
    with pytest.raises(UserError, match="gallery_photos: null puts every photo in the gallery"):
        evaluate(compose("eval_openset", settings), describe=fake_describe([]))


# ---- real photographs: three people of ../shared/data/faces known, three LFW people strangers --------------------

KNOWN = ["Colin_Powell", "George_W_Bush", "Tony_Blair"]
STRANGERS = ["Abel_Pacheco", "Akhmed_Zakayev", "Dean_Barker"]


@needs_shared_data("faces", "Tony_Blair")
@needs_shared_data("lfw-pairs", "images", "Dean_Barker")
def test_eval_openset_on_real_photos_names_the_known_and_rejects_the_strangers(tmp_path, store):
    from experiments.eval_openset import evaluate

    known, probes = tmp_path / "known", tmp_path / "probes"
    for person in KNOWN:
        photos = sorted((SHARED_DATA / "faces" / person).glob("*.jpg"))
        (known / person).mkdir(parents=True)
        (probes / person).mkdir(parents=True)
        for photo in photos[:3]:
            shutil.copy(photo, known / person / photo.name)
        shutil.copy(photos[10], probes / person / photos[10].name)
    for person in STRANGERS:
        photo = sorted((SHARED_DATA / "lfw-pairs" / "images" / person).glob("*.jpg"))[0]
        (probes / person).mkdir(parents=True)
        shutil.copy(photo, probes / person / photo.name)
    summary = evaluate(
        compose(
            "eval_openset",
            {
                **store,
                "gallery": str(known),
                "probes": str(probes),
                "gallery_photos": "null",
                "out_dir": str(tmp_path / "out"),
                "workers": 1,
                "progress": False,
            },
        )
    )
    assert summary["known_probes"] == 3 and summary["strangers"] == 3 and summary["gallery_photos"] == 9
    table = pd.read_csv(tmp_path / "out" / "probes.csv")
    assert dict(zip(table["person"], table["named"])) == {**{p: p for p in KNOWN}, **{p: "unknown" for p in STRANGERS}}
    assert (summary["identification_accuracy"], summary["stranger_rejection"]) == (1.0, 1.0)


@pytest.mark.slow
@needs_shared_data("faces", "Tony_Blair")
@needs_shared_data("lfw-pairs", "images", "Dean_Barker")
def test_the_calibrated_threshold_names_the_known_and_rejects_strangers_at_every_gallery_size(tmp_path, store):
    """The whole ../shared/data/faces (441 photos of 10 people) against 600 LFW people outside it and the two sample
    photos: at 1, 5, 10 and all photos a person (5-fold), >= 95 % of the known named and of the strangers rejected,
    and a stranger's decision the same with one photo a person as with all (~35) for >= 95 % of strangers."""
    from experiments.eval_openset import evaluate
    from synthetic.faces import real_face_photos

    people = {p.name for p in (SHARED_DATA / "faces").iterdir() if p.is_dir()}
    strangers = tmp_path / "strangers"
    outside = sorted(p for p in (SHARED_DATA / "lfw-pairs" / "images").iterdir() if p.is_dir() and p.name not in people)
    for person in outside[:600]:
        (strangers / person.name).mkdir(parents=True)
        photo = sorted(person.glob("*.jpg"))[0]
        shutil.copy(photo, strangers / person.name / photo.name)
    for photo in real_face_photos():
        (strangers / photo.name).mkdir()
        cv2.imwrite(str(strangers / photo.name / f"{photo.name}.png"), photo.rgb[..., ::-1])
    summary = evaluate(
        compose(
            "eval_openset",
            {**store, "strangers": str(strangers), "out_dir": str(tmp_path / "out"), "progress": False},
        )
    )
    assert summary["strangers"] == 602 and summary["known_probes"] == 341 and summary["tolerance"] is None
    assert summary["identification_accuracy"] >= 0.95 and summary["stranger_rejection"] >= 0.95
    sweep = pd.read_csv(tmp_path / "out" / "gallery_size.csv", dtype={"photos_per_person": str})
    assert list(sweep["photos_per_person"]) == ["1", "5", "10", "all"]
    assert (sweep["identification_accuracy"] >= 0.95).all() and (sweep["stranger_rejection"] >= 0.95).all()
    assert (sweep["stranger_agreement"] >= 0.95).all()
    # dlib's one-to-one 0.6 on the nearest photo falls below 95 % rejection once people have several photos
    assert (sweep["stranger_rejection_fixed"].iloc[1:] < 0.95).all()
