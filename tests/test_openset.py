"""Open-set identification (issue 18): identification accuracy on the known people and rejection of strangers against
the tolerance, worked out by hand on fake descriptors, the eval-openset entry end to end, and real LFW photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from faces.gallery import Gallery, open_set_rates
from tests.conftest import SHARED_DATA, compose, mlflow_runs, needs_shared_data

# gallery: ann 1, 2 and bob 1, 2; probes: ann 3 and bob 3 (known), cid 1 and dee 1 (strangers). Distances to the
# nearest gallery descriptor, by hand: ann 3 → ann 1 0.45; bob 3 → bob 1 0.65 (ann 1 is 1.35); cid 1 → ann 2 0.75;
# dee 1 → bob 1 0.35. None lies on a tolerance of the curve, so float32 rounding cannot move a decision.
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
# known: ann 3 right when t > 0.45, bob 3 when t > 0.65; strangers: cid rejected when t <= 0.75, dee when t <= 0.35
ACCURACY = [0, 0, 0.5, 0.5, 1, 1, 1]
REJECTION = [1, 0.5, 0.5, 0.5, 0.5, 0, 0]


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
    np.testing.assert_allclose(result.distance, [0.45, 0.65, 0.75, 0.35], atol=1e-6)
    assert result.at(0.6) == (0.5, 0.5) and result.at(0.7) == (1.0, 0.5)
    with pytest.raises(ValueError, match="needs known probes and strangers; got 0 known, 4 strangers"):
        open_set_rates(Gallery(["eve"], np.zeros((1, 2), np.float32)), probes, names, TOLERANCES)


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
    # gallery first (2 per person, by file name), then the known probes, then one photo per stranger
    assert asked == [["ann/1", "ann/2", "bob/1", "bob/2", "ann/3", "bob/3", "cid/1", "dee/1"]]
    assert summary == {
        "identification_accuracy": 0.5,
        "stranger_rejection": 0.5,
        "tolerance": 0.6,
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
    curve = pd.read_csv(out / "open_set_curve.csv")
    np.testing.assert_allclose(curve["tolerance"], TOLERANCES)
    np.testing.assert_allclose(curve["identification_accuracy"], ACCURACY)
    np.testing.assert_allclose(curve["stranger_rejection"], REJECTION)
    client, runs = mlflow_runs(tmp_path, "eval_openset")
    run = runs[0]
    assert run.data.metrics["open_set/identification_accuracy"] == 0.5
    assert run.data.metrics["open_set/stranger_rejection"] == 0.5 and run.data.params["tolerance"] == "0.6"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "probes.csv", "open_set_curve.csv", "figures"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == ["figures/open_set.png"]


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
