"""`experiments/detect_faces.py` and `faces.batch`: crops, tables, annotated copies, MLflow, the process
pool, and every kind of bad input."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from PIL import Image

from core.errors import UserError
from core.images import read_rgb
from experiments import user_errors
from experiments.detect_faces import detect_faces
from faces.batch import CSV_COLUMNS, CropSpec, detect_folder
from faces.detectors import HaarDetector, HogDetector
from synthetic import make_id_cards
from tests.conftest import SHARED_DATA, compose, mlflow_runs, needs_shared_data


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    """Four cards (one rotated) in two sub-folders, as an input folder of the user's."""
    made = make_id_cards(tmp_path_factory.mktemp("made") / "id_cards", seed=1, cards=4, large=0, rotated_rate=0.3)
    folder = tmp_path_factory.mktemp("in") / "cards"
    for k, image in enumerate(sorted((made / "images").glob("*.jpg"))):
        (folder / f"site{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / f"site{k % 2}" / image.name)
    return folder


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_entry_writes_crops_tables_annotations_and_an_mlflow_run(cards, tmp_path, store):
    before = digest(cards)
    out = tmp_path / "out"
    cfg = compose(
        "detect_faces",
        {
            **store,
            "in_dir": str(cards),
            "out_dir": str(out),
            "workers": 1,
            "progress": False,
            "crop.margin": 0.2,
            "crop.square": True,
            "crop.size": 96,
        },
    )
    summary = detect_faces(cfg)

    table = pd.read_csv(out / "faces.csv")
    assert list(table.columns) == CSV_COLUMNS
    assert set(table["image"]) == set(before)  # relative to IN, sub-folders kept; one face per card
    assert (table["face"] == 1).all() and (table["detector"] == "hog").all()
    for row in table.itertuples():
        stem = row.image.replace(".jpg", "_jpg")  # outputs keep the input's extension in their name
        assert row.crop == f"faces/{stem}_face{row.face}.jpg"
        assert read_rgb(out / row.crop).shape == (96, 96, 3)
        assert read_rgb(out / "annotated" / f"{stem}.jpg").shape == read_rgb(cards / row.image).shape
        assert 0 <= row.left < row.right and 0 <= row.top < row.bottom
    assert (out / "contact_sheet.jpg").exists()
    assert digest(cards) == before  # the input is never written to

    assert summary["images_processed"] == 4 and summary["faces_found"] == 4 and summary["images_without_face"] == 0
    client, runs = mlflow_runs(tmp_path, "detect_faces")
    run = runs[0]
    assert run.data.params["detector"] == "hog" and run.data.params["detector.upsample"] == "1"
    assert run.data.metrics["faces_found"] == 4 and run.data.metrics["seconds_per_image"] > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"faces.csv", "faces.json", "contact_sheet.jpg"} <= artifacts


def test_crop_margin_without_resize(cards, tmp_path):
    result = detect_folder(HaarDetector(), cards, tmp_path / "out", CropSpec(margin=0.25), workers=1, progress=False)
    # Haar finds the one face on each of the four cards (the loop below checks their crops)
    assert [(image.image, len(image.faces)) for image in result.processed] == [
        ("site0/card_000.jpg", 1),
        ("site0/card_002.jpg", 1),
        ("site1/card_001.jpg", 1),
        ("site1/card_003.jpg", 1),
    ]
    for image in result.processed:
        for k, face in enumerate(image.faces, start=1):
            crop = read_rgb(tmp_path / "out" / "faces" / f"{image.image.replace('.jpg', '_jpg')}_face{k}.jpg")
            # the cards' faces sit well inside the image, so nothing is clipped
            assert crop.shape[:2] == (round(face.height * 1.5), round(face.width * 1.5))


def test_parallel_equals_serial(cards, tmp_path):
    serial = detect_folder(HogDetector(), cards, tmp_path / "serial", workers=1, progress=False)
    parallel = detect_folder(HogDetector(), cards, tmp_path / "parallel", workers=2, progress=False)
    assert [(r.image, r.faces) for r in parallel.images] == [(r.image, r.faces) for r in serial.images]
    assert (tmp_path / "serial" / "faces.csv").read_text() == (tmp_path / "parallel" / "faces.csv").read_text()
    threaded = detect_folder(HogDetector(), cards, tmp_path / "threads", workers=2, progress=False, threads=True)
    assert [(r.image, r.faces) for r in threaded.images] == [(r.image, r.faces) for r in serial.images]


def test_bad_and_unusual_inputs_are_skipped_or_converted(cards, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    card = read_rgb(sorted(cards.rglob("*.jpg"))[0])
    gray = Image.fromarray(card).convert("L")
    gray.save(folder / "gray.png")
    Image.fromarray(card).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(np.asarray(gray, np.uint16) * 257).save(folder / "sixteen_bit.png")
    assert Image.open(folder / "sixteen_bit.png").mode.startswith("I")
    Image.fromarray(np.kron(card, np.ones((12, 12, 1), np.uint8))).save(folder / "huge.jpg")  # 6096×4200
    (folder / "corrupt.jpg").write_bytes((folder / "huge.jpg").read_bytes()[:3000])
    (folder / "notes.jpg").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    before = digest(folder)

    result = detect_folder(HogDetector(), folder, tmp_path / "out", workers=1, progress=False)
    summary = result.summary()
    assert sorted(r.image for r in result.skipped) == ["corrupt.jpg", "empty.png", "notes.jpg"]
    assert summary["images_processed"] == 4 and summary["images_skipped"] == 3
    faces = {r.image: r.faces for r in result.processed}
    assert all(len(f) == 1 for f in faces.values()), faces
    small, huge = faces["rgba.png"][0], faces["huge.jpg"][0]
    # the huge copy is detected downscaled, but its box is in its own full-resolution pixels
    assert (
        abs(huge.left - 12 * small.left) < 0.1 * 12 * small.width
        and abs(huge.right - 12 * small.right) < 0.1 * 12 * small.width
    )
    assert read_rgb(tmp_path / "out" / "faces" / "huge_jpg_face1.jpg").shape[:2] == (huge.height, huge.width)
    assert digest(folder) == before


def test_two_images_with_one_stem_never_share_an_output(cards, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    photos = sorted(cards.rglob("*.jpg"))
    shutil.copy(photos[0], folder / "portrait.jpg")
    Image.open(photos[1]).save(folder / "portrait.png")  # another photo, same stem
    shutil.copy(photos[2], folder / "sub" / "portrait.jpg")
    result = detect_folder(HogDetector(), folder, tmp_path / "out", workers=1, progress=False)
    table = pd.read_csv(tmp_path / "out" / "faces.csv")
    assert list(table["image"]) == ["portrait.jpg", "portrait.png", "sub/portrait.jpg"]
    assert list(table["crop"]) == [
        "faces/portrait_jpg_face1.jpg",
        "faces/portrait_png_face1.jpg",
        "faces/sub/portrait_jpg_face1.jpg",
    ]
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg"))
    assert written == [
        "annotated/portrait_jpg.jpg",
        "annotated/portrait_png.jpg",
        "annotated/sub/portrait_jpg.jpg",
        "contact_sheet.jpg",
        "faces/portrait_jpg_face1.jpg",
        "faces/portrait_png_face1.jpg",
        "faces/sub/portrait_jpg_face1.jpg",
    ]
    for face in result.processed:  # each crop is its own image's face, not the other's
        d = face.faces[0]
        crop = read_rgb(tmp_path / "out" / f"faces/{face.image.replace('.', '_')}_face1.jpg")
        assert crop.shape[:2] == (d.height, d.width)
        assert np.abs(crop.astype(int) - read_rgb(folder / face.image)[d.top : d.bottom, d.left : d.right]).mean() < 8


def test_folder_errors(cards, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no image files"):
        detect_folder(HogDetector(), empty, tmp_path / "out", progress=False)
    a_file = tmp_path / "out.txt"
    a_file.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        detect_folder(HogDetector(), cards, a_file, progress=False)
    with pytest.raises(UserError, match="overlap"):
        detect_folder(HogDetector(), cards, cards / "site0" / "faces", progress=False)
    with pytest.raises(UserError, match="not a folder"):
        detect_folder(HogDetector(), tmp_path / "missing", tmp_path / "out", progress=False)


def test_entry_reports_a_file_as_out_with_exit_status_2(cards, tmp_path, store, capsys):
    a_file = tmp_path / "out"
    a_file.write_text("x")
    cfg = compose("detect_faces", {**store, "in_dir": str(cards), "out_dir": str(a_file), "progress": False})
    with pytest.raises(SystemExit) as exit_info, user_errors():
        detect_faces(cfg)
    assert exit_info.value.code == 2
    assert "is a file" in capsys.readouterr().err


@needs_shared_data("faces")
@needs_shared_data("weights", "yunet_s_640_640.onnx")
def test_yunet_csv_on_real_lfw_photos_in_sub_folders(tmp_path):
    folder = tmp_path / "people"
    for person in sorted(p for p in (SHARED_DATA / "faces").iterdir() if p.is_dir())[:2]:
        (folder / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:2]:
            shutil.copy(photo, folder / person.name / photo.name)
    detector = instantiate(compose("detect_faces", {"detector": "yunet"}).detector)
    detect_folder(detector, folder, tmp_path / "out", workers=1, progress=False)
    table = pd.read_csv(tmp_path / "out" / "faces.csv")
    assert list(table.columns) == ["image", "face", "detector", "score", "left", "top", "right", "bottom", "crop"]
    assert (table["detector"] == "yunet").all() and table["score"].between(0, 1).all()
    assert set(table["image"]) == {str(p.relative_to(folder)) for p in folder.rglob("*.jpg")}  # every photo has a face
    assert ((table["right"] <= 250) & (table["bottom"] <= 250) & (table["left"] >= 0)).all()
