"""VOC → YOLO conversion: every fix and drop is reported by file; the split is deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from core.errors import UserError
from core.images import read_rgb
from core.voc import VocAnnotation, VocObject, pair_voc, read_voc, write_voc
from facemask.voc_to_yolo import convert_voc, difficult_boxes
from synthetic import make_facemask, make_hardhat
from synthetic.facemask import FACEMASK_CLASSES
from tests.conftest import REPO, SHARED_DATA, needs_shared_data

CLASSES = list(FACEMASK_CLASSES)


def _scene(root: Path, stem: str, objects: list[VocObject], size=(100, 80), rgba=False, colour=0) -> None:
    """One image (width × height = size) and its xml; `colour` makes images distinct (or identical)."""
    width, height = size
    image = np.full((height, width, 4 if rgba else 3), colour, np.uint8)
    (root / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{stem}.png"), image)
    write_voc(root / "annotations" / f"{stem}.xml", VocAnnotation(f"{stem}.png", width, height, objects))


def _labels(out: Path, stem: str) -> list[list[float]]:
    hits = list(out.glob(f"labels/*/{stem}_png.txt"))  # outputs are named after the source file: x.png → x_png
    assert len(hits) == 1, f"{stem} should be in exactly one split"
    return [[float(v) for v in line.split()] for line in hits[0].read_text().splitlines()]


@pytest.fixture
def voc(tmp_path) -> Path:
    root = tmp_path / "voc"
    for k in range(8):
        _scene(
            root,
            f"good{k}",
            [VocObject("with_mask", 10, 20, 30, 60), VocObject("without_mask", 50, 10, 90, 40)],
            colour=k * 20,
        )
    return root


def test_boxes_become_normalised_yolo_lines_and_the_data_yaml_names_the_classes(voc, tmp_path):
    out = tmp_path / "yolo"
    report = convert_voc(voc, out, CLASSES, val_fraction=0.25, seed=0)
    assert report.images == {"train": 6, "val": 2, "test": 0}
    assert report.boxes == {"with_mask": 8, "without_mask": 8, "mask_weared_incorrect": 0}
    assert _labels(out, "good0") == [[0, 0.2, 0.5, 0.2, 0.5], [1, 0.7, 0.3125, 0.4, 0.375]]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASSES)) and data["train"] == "images/train" and data["val"] == "images/val"
    assert "test" not in data and not (out / "images" / "test").exists()  # test_fraction 0: no test split
    assert json.loads((out / "report.json").read_text())["images"] == {"train": 6, "val": 2, "test": 0}


def test_split_is_deterministic_from_the_seed(voc, tmp_path):
    def val_stems(seed, name):
        convert_voc(voc, tmp_path / name, CLASSES, val_fraction=0.25, seed=seed)
        return sorted(p.stem for p in (tmp_path / name / "images" / "val").iterdir())

    assert val_stems(3, "a") == val_stems(3, "b")
    assert any(val_stems(s, f"s{s}") != val_stems(3, "a") for s in range(4, 10))


def test_second_call_with_the_same_inputs_reuses_the_conversion(voc, tmp_path):
    out = tmp_path / "yolo"
    convert_voc(voc, out, CLASSES)
    stamp = (out / "data.yaml").stat().st_mtime_ns
    convert_voc(voc, out, CLASSES)
    assert (out / "data.yaml").stat().st_mtime_ns == stamp
    convert_voc(voc, out, CLASSES, seed=1)  # other arguments: converted again
    assert (out / "data.yaml").stat().st_mtime_ns != stamp


def test_bad_boxes_are_clipped_or_dropped_and_reported_by_file(voc, tmp_path):
    _scene(voc, "edge", [VocObject("with_mask", 60, 10, 101, 40), VocObject("with_mask", -5, -3, 20, 20)], colour=201)
    _scene(voc, "flat", [VocObject("without_mask", 30, 10, 30, 40), VocObject("with_mask", 10, 10, 20, 20)], colour=202)
    _scene(voc, "outside", [VocObject("with_mask", 120, 10, 140, 40)], colour=203)
    _scene(voc, "inverted", [VocObject("with_mask", 50, 10, 20, 40)], colour=204)
    out = tmp_path / "yolo"
    report = convert_voc(voc, out, CLASSES)
    assert report.clipped == {"edge": 2, "outside": 1}
    assert report.zero_area == {"flat": 1, "outside": 1}
    assert report.inverted == {"inverted": 1}
    edge = _labels(out, "edge")
    assert max(cx + w / 2 for _, cx, _, w, _ in edge) == pytest.approx(1.0)  # xmax = width + 1 clipped to the edge
    assert min(cx - w / 2 for _, cx, _, w, _ in edge) == pytest.approx(0.0)
    assert len(_labels(out, "flat")) == 1 and _labels(out, "inverted") == []


def test_unknown_class_is_an_error_naming_the_file_unless_configured_to_drop(voc, tmp_path):
    _scene(voc, "odd", [VocObject("mask", 10, 10, 30, 30), VocObject("with_mask", 40, 10, 60, 30)], colour=210)
    with pytest.raises(UserError, match=r"odd: \['mask'\].*unknown_classes=drop"):
        convert_voc(voc, tmp_path / "yolo", CLASSES)
    report = convert_voc(voc, tmp_path / "yolo", CLASSES, unknown_classes="drop")
    assert report.unknown_classes == {"odd": ["mask"]}
    assert [row[0] for row in _labels(tmp_path / "yolo", "odd")] == [0]


def test_missing_unreadable_and_unpaired_files_are_skipped_and_reported(voc, tmp_path):
    write_voc(
        voc / "annotations" / "lost.xml", VocAnnotation("lost.png", 100, 80, [VocObject("with_mask", 1, 1, 9, 9)])
    )
    (voc / "annotations" / "broken.xml").write_text("<annotation><object>")
    (voc / "images" / "broken.png").write_bytes(b"")
    _scene(voc, "corrupt", [VocObject("with_mask", 1, 1, 9, 9)])
    (voc / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cv2.imwrite(str(voc / "images" / "unlabelled.png"), np.zeros((10, 10, 3), np.uint8))
    report = convert_voc(voc, tmp_path / "yolo", CLASSES)
    assert [Path(p).name for p in report.xml_without_image] == ["lost.xml"]
    assert [Path(p).name for p in report.unreadable_xml] == ["broken.xml"]
    assert [Path(p).name for p in report.unreadable_images] == ["corrupt.png"]
    assert [Path(p).name for p in report.image_without_xml] == ["unlabelled.png"]
    written = {p.stem for p in (tmp_path / "yolo" / "images").rglob("*.png")}
    assert written == {f"good{k}_png" for k in range(8)}


def test_images_without_objects_are_kept_as_backgrounds_and_rgba_becomes_rgb(voc, tmp_path):
    _scene(voc, "empty", [], rgba=True, colour=220)
    report = convert_voc(voc, tmp_path / "yolo", CLASSES)
    assert report.backgrounds == ["empty"] and report.converted_to_rgb == 1
    assert _labels(tmp_path / "yolo", "empty") == []
    written = next((tmp_path / "yolo" / "images").rglob("empty_png.png"))
    assert cv2.imread(str(written), cv2.IMREAD_UNCHANGED).shape == (80, 100, 3)


def test_identical_images_stay_on_one_side_of_the_split(tmp_path):
    root = tmp_path / "voc"
    for k in range(10):
        _scene(root, f"img{k}", [VocObject("with_mask", 10, 10, 30, 30)], colour=7 if k < 2 else 30 + k)
    for seed in range(6):
        convert_voc(root, tmp_path / f"y{seed}", CLASSES, val_fraction=0.3, seed=seed)
        sides = {p.parent.name for p in (tmp_path / f"y{seed}" / "images").rglob("img[01]_png.png")}
        assert len(sides) == 1


def test_an_empty_split_is_an_error(tmp_path):
    root = tmp_path / "voc"
    _scene(root, "only", [VocObject("with_mask", 10, 10, 30, 30)])
    with pytest.raises(UserError, match="train split .* is empty"):
        convert_voc(root, tmp_path / "yolo", CLASSES, val_fraction=0.5)
    assert convert_voc(root, tmp_path / "all", CLASSES, val_fraction=1.0).images == {"train": 0, "val": 1, "test": 0}
    with pytest.raises(UserError, match="val_fraction \\+ test_fraction <= 1"):
        convert_voc(root, tmp_path / "both", CLASSES, val_fraction=1.0, test_fraction=0.2)


def test_test_split_is_fixed_by_file_name_disjoint_and_written_to_data_yaml(tmp_path):
    import hashlib

    root = tmp_path / "voc"
    for k in range(20):  # img0 and img1 are byte-identical: one group, on one side
        _scene(root, f"img{k}", [VocObject("with_mask", 10, 10, 30, 30)], colour=7 if k < 2 else 30 + k)

    def sides(name, **options):
        report = convert_voc(root, tmp_path / name, CLASSES, **options)
        files = {s: {p.name for p in (tmp_path / name / "images" / s).glob("*.png")} for s in ("train", "val", "test")}
        return report, files

    report, files = sides("a", val_fraction=0.2, test_fraction=0.2, seed=0)
    assert (
        report.images == {"train": 12, "val": 4, "test": 4} and {k: len(v) for k, v in files.items()} == report.images
    )
    assert not files["test"] & files["val"] and not files["test"] & files["train"] and not files["val"] & files["train"]
    data = yaml.safe_load((tmp_path / "a" / "data.yaml").read_text())
    assert data["test"] == "images/test" and len(list((tmp_path / "a" / "labels" / "test").glob("*.txt"))) == 4
    # the test photos: the groups whose first output name has the lowest SHA-1, until 4 of the 20 are in
    firsts = [f"img{k}_png" for k in range(20) if k != 1]  # the pair's first name is img0's
    by_rank = sorted(firsts, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    expected, count = set(), 0
    for name in by_rank:
        if count < 4:
            group = ["img0_png", "img1_png"] if name == "img0_png" else [name]
            expected |= {f"{n}.png" for n in group}
            count += len(group)
    assert files["test"] == expected
    # the seed and the validation share move val and train, never the test photos
    for name, options in (("b", {"seed": 5, "val_fraction": 0.2}), ("c", {"seed": 0, "val_fraction": 0.4})):
        other = sides(name, test_fraction=0.2, **options)[1]
        assert other["test"] == files["test"]
    assert sides("d", seed=5, val_fraction=0.2, test_fraction=0.2)[1]["val"] != files["val"]


def test_missing_folders_are_an_error_naming_them(tmp_path):
    with pytest.raises(UserError, match="no images/"):
        convert_voc(tmp_path / "nowhere", tmp_path / "yolo", CLASSES)


def test_synthetic_facemask_set_has_every_class_several_faces_and_the_real_sets_quirks(tmp_path):
    root = make_facemask(tmp_path / "fm", seed=3, images=12)
    again = make_facemask(tmp_path / "fm2", seed=3, images=12)
    first = sorted((root / "annotations").glob("*.xml"))
    assert [p.read_text() for p in first] == [(again / "annotations" / p.name).read_text() for p in first]
    report = convert_voc(root, tmp_path / "yolo", CLASSES)
    assert all(report.boxes[name] > 0 for name in CLASSES)
    assert sum(report.boxes.values()) > 12 * 1.5  # several faces per image
    assert report.converted_to_rgb > 0 and sum(report.clipped.values()) > 0
    assert read_rgb(next((root / "images").glob("*.png"))).shape[2] == 3


def test_hard_hat_layout_converts_with_its_own_class_map(tmp_path):
    root = make_hardhat(tmp_path / "hh", seed=0, images=6)
    report = convert_voc(root, tmp_path / "yolo", ["helmet", "head", "person"], val_fraction=0.34)
    assert report.images["train"] + report.images["val"] == 6
    assert report.boxes["helmet"] + report.boxes["head"] > 0


@needs_shared_data("facemask-voc")
def test_real_facemask_subset_converts_with_its_quirks_reported(tmp_path):
    report = convert_voc(SHARED_DATA / "facemask-voc", tmp_path / "yolo", CLASSES, val_fraction=0.2, seed=42)
    assert report.images == {"train": 91, "val": 23, "test": 0}
    held_out = convert_voc(
        SHARED_DATA / "facemask-voc", tmp_path / "test", CLASSES, val_fraction=0.2, test_fraction=0.2, seed=42
    )
    assert held_out.images == {"train": 68, "val": 23, "test": 23}  # conf/data/facemask_real.yaml's counts
    assert report.boxes == {"with_mask": 424, "without_mask": 87, "mask_weared_incorrect": 14}
    assert report.clipped == {"maksssksksss110": 1, "maksssksksss5": 1, "maksssksksss93": 1}  # xmax = width + 1
    assert report.converted_to_rgb == 111  # the RGBA PNGs


@needs_shared_data("hardhat-voc")
def test_real_hardhat_subset_converts(tmp_path):
    report = convert_voc(SHARED_DATA / "hardhat-voc", tmp_path / "yolo", ["helmet", "head", "person"], seed=42)
    assert report.images["train"] + report.images["val"] == 220
    assert report.boxes == {"helmet": 825, "head": 223, "person": 10}


def _image(root: Path, name: str, colour: int, size=(100, 80)) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / name), np.full((size[1], size[0], 3), colour, np.uint8))


def test_difficult_flag_is_read_and_written_back(tmp_path):
    objects = [VocObject("with_mask", 1, 2, 30, 40), VocObject("without_mask", 5, 6, 20, 30, difficult=True)]
    write_voc(tmp_path / "a.xml", VocAnnotation("a.png", 100, 80, objects))
    assert "<difficult>1</difficult>" in (tmp_path / "a.xml").read_text()
    assert [o.difficult for o in read_voc(tmp_path / "a.xml").objects] == [False, True]


def test_difficult_objects_are_left_out_of_labels_counted_and_kept_with_the_option(voc, tmp_path):
    _scene(
        voc,
        "crowd",
        [VocObject("with_mask", 10, 20, 30, 60), VocObject("without_mask", 50, 10, 90, 40, difficult=True)],
        colour=230,
    )
    report = convert_voc(voc, tmp_path / "yolo", CLASSES)
    assert _labels(tmp_path / "yolo", "crowd") == [[0, 0.2, 0.5, 0.2, 0.5]]
    assert report.difficult == {"crowd": 1}
    assert report.boxes == {"with_mask": 9, "without_mask": 8, "mask_weared_incorrect": 0}
    assert "1 difficult box(es) left out of labels" in report.summary()
    assert json.loads((tmp_path / "yolo" / "report.json").read_text())["difficult"] == {"crowd": 1}
    image = next((tmp_path / "yolo" / "images").rglob("crowd_png.png"))
    assert difficult_boxes(image) == pytest.approx(np.array([[1, 0.7, 0.3125, 0.4, 0.375]]))
    assert difficult_boxes(next((tmp_path / "yolo" / "images").rglob("good0_png.png"))).shape == (0, 5)

    kept = convert_voc(voc, tmp_path / "kept", CLASSES, keep_difficult=True)
    assert _labels(tmp_path / "kept", "crowd") == [[0, 0.2, 0.5, 0.2, 0.5], [1, 0.7, 0.3125, 0.4, 0.375]]
    assert kept.difficult == {"crowd": 1} and kept.boxes["without_mask"] == 9
    assert "1 difficult box(es) kept as labels" in kept.summary()
    assert not (tmp_path / "kept" / "difficult").exists()


def test_pairing_follows_filename_then_stem_and_reports_ambiguous_pairs(tmp_path):
    root = tmp_path / "voc"
    box = [VocObject("with_mask", 10, 10, 30, 30)]
    _image(root, "visit.jpg", 10), _image(root, "visit.png", 20)  # one stem, two photos
    write_voc(root / "annotations" / "visit.xml", VocAnnotation("visit.jpg", 100, 80, box))  # names its image
    write_voc(root / "annotations" / "visit_edit.xml", VocAnnotation("visit.png", 100, 80, box))
    _image(root, "twin.jpg", 30), _image(root, "twin.png", 40)
    write_voc(root / "annotations" / "twin.xml", VocAnnotation("", 100, 80, box))  # no <filename>: which twin?
    _image(root, "shared.png", 50)
    write_voc(root / "annotations" / "shared.xml", VocAnnotation("shared.png", 100, 80, box))
    write_voc(root / "annotations" / "shared_copy.xml", VocAnnotation("shared.png", 100, 80, box))  # two xml, one image
    _image(root, "kaggle.png", 60)
    write_voc(
        root / "annotations" / "kaggle.xml", VocAnnotation("kaggle.jpg", 100, 80, box)
    )  # wrong extension: by stem

    pairing = pair_voc(root / "images", root / "annotations")
    assert [(p.xml.name, p.image.name) for p in pairing.pairs] == [
        ("kaggle.xml", "kaggle.png"),
        ("visit.xml", "visit.jpg"),
        ("visit_edit.xml", "visit.png"),
    ]
    assert sorted(Path(line.split(": ")[0]).name for line in pairing.ambiguous) == [
        "shared.xml",
        "shared_copy.xml",
        "twin.xml",
    ]
    assert pairing.image_without_xml == [] and pairing.xml_without_image == []

    report = convert_voc(root, tmp_path / "yolo", CLASSES, val_fraction=1.0)
    written = sorted(p.name for p in (tmp_path / "yolo" / "images" / "val").iterdir())
    assert written == ["kaggle_png.png", "visit_jpg.png", "visit_png.png"]
    assert len(report.ambiguous) == 3
    assert "3 ambiguous image/xml pair(s) skipped: shared.xml, shared_copy.xml, twin.xml" in report.summary()


def test_size_mismatch_is_named_in_the_summary_line(voc, tmp_path):
    _image(voc, "sideways.png", 240, size=(80, 100))
    write_voc(
        voc / "annotations" / "sideways.xml",
        VocAnnotation("sideways.png", 100, 80, [VocObject("with_mask", 1, 1, 9, 9)]),
    )
    report = convert_voc(voc, tmp_path / "yolo", CLASSES)
    assert report.size_mismatch == ["sideways"]
    assert report.summary().endswith("xml <size> differs from the image in 1 file(s): sideways")


def test_two_processes_converting_into_one_cold_folder_both_finish_with_the_same_report(voc, tmp_path):
    out = tmp_path / "yolo"
    script = (
        "import json, sys; from facemask.voc_to_yolo import convert_voc; "
        f"print(json.dumps(convert_voc({str(voc)!r}, {str(out)!r}, {CLASSES!r}).to_dict(), sort_keys=True))"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in results]
    first, second = (json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in results)
    assert first == second == json.loads((out / "report.json").read_text())
    assert first["images"] == {"train": 6, "val": 2, "test": 0}
    assert sorted(p.name for p in out.parent.iterdir() if p.name != "voc") == [
        ".yolo.lock",
        "yolo",
    ]  # no temporary left


def test_a_folder_too_small_for_a_test_split_keeps_train_and_val(tmp_path, caplog):
    """Two images, val 0.5, test 0.2 (convert-facemask's defaults beside val_fraction=0.5): one train, one val, no
    test, and a warning — not an empty train split."""
    root = tmp_path / "voc"
    for k in range(2):
        _scene(root, f"img{k}", [VocObject("with_mask", 10, 10, 30, 30)], colour=40 + k)
    report = convert_voc(root, tmp_path / "yolo", CLASSES, val_fraction=0.5, test_fraction=0.2)
    assert report.images == {"train": 1, "val": 1, "test": 0}
    assert "too few for a test split" in caplog.text
    _scene(root, "img2", [VocObject("with_mask", 10, 10, 30, 30)], colour=50)
    three = convert_voc(root, tmp_path / "three", CLASSES, val_fraction=0.34, test_fraction=0.2)
    assert three.images == {"train": 1, "val": 1, "test": 1}  # room for all three
