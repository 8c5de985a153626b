"""Capture from a video and recognition of a folder, through the real entries and configs; real-photo
checks when ../shared/data is present."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from core.checkpoints import load_checkpoint
from core.errors import UserError
from core.images import read_rgb
from faces.capture import capture_faces, open_source
from faces.crop import FaceCrop
from faces.detectors import HogDetector
from faces.recognition import CSV_COLUMNS, UNKNOWN
from synthetic import write_face_video
from synthetic.faces import real_face_photos
from tests.conftest import SHARED_DATA, compose, mlflow_runs, needs_shared_data


def test_capture_on_generated_video(tmp_path):
    from experiments.capture_faces import capture

    counts = write_face_video(tmp_path / "clip.mp4", seed=1, frames=30)
    store = {"paths.log_dir": str(tmp_path / "logs"), "paths.mlflow_dir": str(tmp_path)}
    summary = capture(
        compose(
            "capture_faces",
            {
                **store,
                "name": "astronaut",
                "source": str(tmp_path / "clip.mp4"),
                "out_dir": str(tmp_path / "faces"),
                "crop.image_size": 96,
                "progress": False,
            },
        )
    )
    assert summary == {
        "saved": counts.count(1),
        "frames_read": 30,
        "frames_no_face": counts.count(0),
        "frames_several_faces": counts.count(2),
    }
    saved = sorted((tmp_path / "faces" / "astronaut").glob("*.jpg"))
    assert [p.name for p in saved[:2]] == ["0001.jpg", "0002.jpg"] and len(saved) == counts.count(1)
    assert read_rgb(saved[0]).shape == (96, 96, 3)
    _, runs = mlflow_runs(tmp_path, "capture_faces")
    assert runs[0].data.metrics["frames_several_faces"] == counts.count(2)

    again = capture_faces(
        HogDetector(),
        str(tmp_path / "clip.mp4"),
        tmp_path / "faces",
        "astronaut",
        FaceCrop(96),
        frames=2,
        progress=False,
    )
    assert [p.name for p in again.saved] == [
        f"{len(saved) + 1:04d}.jpg",
        f"{len(saved) + 2:04d}.jpg",
    ]  # adds, never overwrites


def test_capture_bad_sources(tmp_path):
    with pytest.raises(UserError, match="source=path/to/video.mp4"):
        open_source(97)  # no camera at that index on any test machine
    with pytest.raises(UserError, match="video file not found"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(UserError, match="NAME="):
        capture_faces(HogDetector(), str(tmp_path / "missing.mp4"), tmp_path, None, FaceCrop(64))


def test_a_capture_never_overwrites_a_crop_another_capture_wrote_meanwhile(tmp_path):
    from faces import Detection

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for k in range(3):
        writer.write(np.full((64, 64, 3), 40 * k, np.uint8))
    writer.release()
    folder = tmp_path / "faces" / "ann"

    class OtherCaptureMeanwhile:  # a detector that, before its first answer, lets "another capture" take 0001.jpg
        name, calls = "stub", 0

        def detect(self, rgb):
            self.calls += 1
            if self.calls == 1:
                (folder / "0001.jpg").write_bytes(b"the other capture's crop")
            return [Detection(8, 8, 56, 56, 1.0)]

    result = capture_faces(
        OtherCaptureMeanwhile(), str(clip), tmp_path / "faces", "ann", FaceCrop(32), frames=2, progress=False
    )
    assert [p.name for p in result.saved] == ["0002.jpg", "0003.jpg"]
    assert (folder / "0001.jpg").read_bytes() == b"the other capture's crop"
    assert read_rgb(folder / "0002.jpg").shape == (32, 32, 3)


def test_recognize_folder_names_outputs_so_two_images_with_one_stem_never_share_one(tmp_path):
    from faces import Detection
    from faces.recognition import recognize_folder

    images = tmp_path / "in"
    images.mkdir()
    for suffix, value in (("jpg", 60), ("png", 200)):
        cv2.imwrite(str(images / f"visit.{suffix}"), np.full((40, 50, 3), value, np.uint8))

    class OneFace:
        name = "stub"

        def detect(self, rgb):
            return [Detection(5, 5, 25, 25, 1.0)]

    class ByBrightness:  # a recogniser stand-in: the name says which photo it saw
        def recognize(self, rgb, detections):
            return [("bright" if rgb.mean() > 128 else "dark", 1.0) for _ in detections]

    table, skipped = recognize_folder(ByBrightness(), OneFace(), images, tmp_path / "out", progress=False)
    assert list(table.columns) == CSV_COLUMNS and skipped == []
    assert table[["image", "name", "annotated"]].values.tolist() == [
        ["visit.jpg", "dark", "visit_jpg.jpg"],
        ["visit.png", "bright", "visit_png.jpg"],
    ]
    assert (
        read_rgb(tmp_path / "out" / "visit_jpg.jpg").mean() < 128 < read_rgb(tmp_path / "out" / "visit_png.jpg").mean()
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A two-step VGG16 face classifier on the synthetic identities (32 px), in a module-wide store."""
    from experiments.train import train

    root = tmp_path_factory.mktemp("recognise")
    store = {
        "paths.log_dir": str(root / "logs"),
        "paths.mlflow_dir": str(root),
        "paths.data_dir": str(root / "data"),
        "paths.cache_dir": str(root / "cache"),
    }
    train(
        compose(
            "train",
            {
                "experiment": "vgg16_faces",
                "debug": "fast",
                "model.backbone": "vgg16",  # a tensor graph at 32 px: seconds (the default, dlib, needs its 150 px chips)
                "data.image_size": 32,
                "data.views": 1,
                **store,
            },
        )
    )
    return store


def _photo_folder(root: Path) -> Path:
    for photo in real_face_photos():
        path = root / "people" / photo.name / f"{photo.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), photo.rgb[..., ::-1])
    (root / "people" / "broken.jpg").write_bytes(b"not an image")
    return root / "people"


def test_recognize_chooses_its_torch_threads_from_the_free_cores(tmp_path):
    from experiments.recognize import recognize
    from faces.recognition import choose_threads

    # max(1, min(cores // workers, cores - round(load)))
    assert choose_threads(1, cores=16, load=0.0) == 16 and choose_threads(4, cores=16, load=0.0) == 4
    assert choose_threads(3, cores=8, load=0.2) == 2 and choose_threads(1, cores=8, load=3.4) == 5
    assert choose_threads(1, cores=2, load=7.6) == 1 and choose_threads(2, cores=2, load=0.0) == 1
    with pytest.raises(ValueError, match="workers must be at least 1"):
        choose_threads(0)
    with pytest.raises(UserError, match="threads=0: at least 1"):
        recognize(compose("recognize", {"images": str(tmp_path), "threads": 0}))


def test_checkpoint_is_plain_data_for_the_safe_loader(trained):
    from faces.classifier import FaceClassifier
    from tests.test_checkpoint_trust import assert_plain_checkpoint

    checkpoint = next(Path(trained["paths.log_dir"]).rglob("checkpoints/last.ckpt"))
    assert assert_plain_checkpoint(checkpoint, FaceClassifier, weights=None).class_names == [
        "alice",
        "bob",
        "carol",
        "dave",
    ]


def test_recognize_folder_with_unknown_threshold(tmp_path, trained):
    from experiments.recognize import recognize

    images = _photo_folder(tmp_path)
    summary = recognize(
        compose(
            "recognize",
            {**trained, "images": str(images), "out_dir": str(tmp_path / "out0"), "threshold": 0.0, "progress": False},
        )
    )  # ckpt: the newest in the store
    table = pd.read_csv(tmp_path / "out0" / "recognitions.csv")
    assert list(table.columns) == CSV_COLUMNS
    assert set(table["image"]) == {"astronaut/astronaut.png", "grace_hopper/grace_hopper.png"}
    assert set(table["name"]) <= {"alice", "bob", "carol", "dave"}  # threshold 0: everyone gets a name
    assert summary["images_skipped"] == 1 and summary["faces"] == len(table)
    assert (tmp_path / "out0" / "astronaut" / "astronaut_png.jpg").exists()
    hopper = table[table["image"].str.startswith("grace")].iloc[0]
    assert hopper["left"] < 250 < hopper["right"] and hopper["top"] < 230 < hopper["bottom"]  # pixels of the original

    # Thresholds that no face's unrounded confidence can sit on (the CSV keeps 4 decimals, and a barely trained
    # head may give every face the same rounded confidence): below all, above all, and between two distinct values.
    ordered = sorted(set(table["confidence"]))
    cuts = [ordered[0] - 1e-3, ordered[-1] + 1e-3] + [(a + b) / 2 for a, b in zip(ordered, ordered[1:]) if b - a > 2e-4]
    for k, threshold in enumerate(cuts, start=1):
        recognize(
            compose(
                "recognize",
                {
                    **trained,
                    "images": str(images),
                    "out_dir": str(tmp_path / f"out{k}"),
                    "threshold": threshold,
                    "progress": False,
                },
            )
        )
        again = pd.read_csv(tmp_path / f"out{k}" / "recognitions.csv")
        assert list(again["confidence"]) == list(table["confidence"])
        assert list(again["name"] == UNKNOWN) == list(again["confidence"] < threshold)
    _, runs = mlflow_runs(Path(trained["paths.mlflow_dir"]), "recognize")
    assert len(runs) == 1 + len(cuts)


def test_unknown_threshold_keeps_the_stated_share_of_correctly_named_faces():
    import torch

    from faces.classifier import calibrate_unknown_threshold

    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    truth = torch.tensor([0, 1, 0, 0, 0])  # the 4th is named wrong: its 0.7 does not count
    # correct confidences, highest first: 0.9, 0.8, 0.6, 0.55; keep k of them: the ceil(keep·4)-th
    assert calibrate_unknown_threshold(probs, truth, 1.0) == pytest.approx(0.55)
    assert calibrate_unknown_threshold(probs, truth, 0.75) == pytest.approx(0.6)
    assert calibrate_unknown_threshold(probs, truth, 0.76) == pytest.approx(0.55)
    assert calibrate_unknown_threshold(probs, truth, 0.5) == pytest.approx(0.8)
    assert calibrate_unknown_threshold(probs, torch.tensor([1, 0, 1, 0, 1]), 0.95) is None  # none named right


def test_recognize_rejects_a_mismatched_label_map(tmp_path, trained):
    from experiments.recognize import recognize

    ckpt = next(Path(trained["paths.log_dir"]).rglob("checkpoints/last.ckpt"))
    label_map = tmp_path / "label_map.json"
    label_map.write_text('{"class_names": ["alice", "bob", "carol", "mallory"]}')
    with pytest.raises(UserError, match="label map mismatch"):
        recognize(
            compose(
                "recognize",
                {
                    **trained,
                    "images": str(_photo_folder(tmp_path)),
                    "out_dir": str(tmp_path / "out"),
                    "ckpt": str(ckpt),
                    "label_map": str(label_map),
                    "progress": False,
                },
            )
        )
    with pytest.raises(UserError, match="IMAGES="):
        recognize(compose("recognize", {**trained, "progress": False}))


# ---- real photographs (../shared/data) -----------------------------------------------------------


def _lfw_faces(person: str, count: int) -> np.ndarray:
    from faces.data import central_face

    detector, crop = HogDetector(), FaceCrop(150, 0.2)
    faces = []
    for path in sorted((SHARED_DATA / "faces" / person).glob("*.jpg"))[:count]:
        rgb = read_rgb(path)
        faces.append(crop(rgb, central_face(detector.detect(rgb), rgb.shape)))
    return np.stack(faces)


@needs_shared_data("faces")
def test_dlib_resnet_features_separate_two_real_people():
    import torch

    from faces.descriptors import DlibResnetBackbone

    backbone = DlibResnetBackbone(margin=0.2)
    people = ("Colin_Powell", "Serena_Williams")
    embeddings = [backbone(torch.from_numpy(_lfw_faces(p, 6)).permute(0, 3, 1, 2)).numpy() for p in people]
    within = [np.linalg.norm(e[:, None] - e[None], axis=-1)[np.triu_indices(len(e), 1)] for e in embeddings]
    between = np.linalg.norm(embeddings[0][:, None] - embeddings[1][None], axis=-1)
    # dlib's own same-person threshold is 0.6
    assert max(w.max() for w in within) < 0.6 < between.min()


@needs_shared_data("faces")
def test_real_photos_train_dlib_head_and_recognize(tmp_path, store):
    from experiments.recognize import recognize
    from experiments.train import train

    people = ("George_W_Bush", "Serena_Williams")
    held_out = {}
    for person in people:
        files = sorted((SHARED_DATA / "faces" / person).glob("*.jpg"))
        (tmp_path / "ids" / person).mkdir(parents=True)
        for f in files[:6]:
            (tmp_path / "ids" / person / f.name).symlink_to(f)
        (tmp_path / "photos" / person).mkdir(parents=True)
        (tmp_path / "photos" / person / files[-1].name).symlink_to(files[-1])
        held_out[person] = [f"{person}/{files[-1].name}"]
    value = train(
        compose(
            "train",
            {
                "experiment": "vgg16_faces",
                "data": "faces_real",
                "data.root": str(tmp_path / "ids"),
                "model.backbone": "dlib_resnet",
                "data.views": 1,
                "data.min_images": 4,
                "data.test_fraction": 0,  # six photos a person, all train and val: the known photos named below
                "data.batch_size": 4,
                "trainer.max_epochs": 12,
                **store,
            },
        )
    )
    assert value == 1.0  # 3 validation photos of two clearly different people
    recognize(
        compose(
            "recognize",
            {
                **store,
                "images": str(tmp_path / "photos"),
                "out_dir": str(tmp_path / "out"),
                "threshold": 0.5,  # the head's naming alone, whatever the calibration says
                "progress": False,
            },
        )
    )
    table = pd.read_csv(tmp_path / "out" / "recognitions.csv")
    assert list(table.columns) == CSV_COLUMNS
    table["off_centre"] = ((table["left"] + table["right"]) / 2 - 125) ** 2 + (
        (table["top"] + table["bottom"]) / 2 - 125
    ) ** 2
    central = table.loc[
        table.groupby("image")["off_centre"].idxmin()
    ]  # LFW's named person: the face nearest the centre
    assert dict(zip(central["image"], central["name"])) == {
        img: person for person, imgs in held_out.items() for img in imgs
    }

    # issue 18: strangers named as known people. With no threshold given, recognition takes the one calibrated on
    # the val split (kept in the checkpoint): the known people's photos (train and val) are named, the package
    # sample photos (the astronaut came out "Serena_Williams") are unknown. last.ckpt: the trained head (best.ckpt
    # is the first epoch at val accuracy 1.0, here the first epoch, whose softmax is still near 0.5 everywhere)
    last = next(Path(store["paths.log_dir"]).rglob("checkpoints/last.ckpt"))
    calibrated = load_checkpoint(last)["hyper_parameters"]["unknown_threshold"]
    images = tmp_path / "calibrated"
    shutil.copytree(tmp_path / "ids", images / "known", symlinks=True)
    (images / "strangers").mkdir()
    for photo in real_face_photos():
        cv2.imwrite(str(images / "strangers" / f"{photo.name}.png"), photo.rgb[..., ::-1])
    recognize(
        compose(
            "recognize",
            {**store, "images": str(images), "ckpt": str(last), "out_dir": str(tmp_path / "out2"), "progress": False},
        )
    )
    table = pd.read_csv(tmp_path / "out2" / "recognitions.csv")
    _, runs = mlflow_runs(Path(store["paths.mlflow_dir"]), "recognize")
    newest = max(runs, key=lambda run: run.info.start_time)
    assert float(newest.data.params["threshold"]) == pytest.approx(calibrated)
    assert newest.data.params["threshold_source"] == "calibrated at training"
    known = table[table["image"].str.startswith("known/")]
    assert len(known) == 12 and list(known["name"]) == [image.split("/")[1] for image in known["image"]], known
    strangers = table[table["image"].str.startswith("strangers/")]
    assert sorted(strangers["image"]) == ["strangers/astronaut.png", "strangers/grace_hopper.png"]
    assert set(strangers["name"]) == {UNKNOWN} and (strangers["confidence"] < calibrated).all(), strangers


@needs_shared_data("video", "short_hamilton_clip.mp4")
def test_capture_from_a_real_clip(tmp_path):
    result = capture_faces(
        HogDetector(),
        str(SHARED_DATA / "video" / "short_hamilton_clip.mp4"),
        tmp_path,
        "hamilton",
        FaceCrop(160, 0.2),
        frames=8,
        every=10,
        progress=False,
    )
    assert len(result.saved) == 8 and result.several_faces == 0
    assert read_rgb(result.saved[0]).shape == (160, 160, 3)


def test_recognize_in_worker_processes_gives_the_serial_answers(tmp_path):
    """face_recognition's --cpus: `workers` forked processes, the same table in the same order as one process."""
    from faces.descriptors import FaceDescriber
    from faces.detectors import SecondLook
    from faces.gallery import GalleryRecognizer, build_gallery
    from faces.recognition import recognize_folder

    photos = _photo_folder(tmp_path)
    for k in range(3):  # more images than workers, in sub-folders
        shutil.copytree(photos, tmp_path / "probes" / f"copy{k}", ignore=shutil.ignore_patterns("broken.jpg"))
    describer = FaceDescriber()
    gallery = build_gallery(photos, HogDetector(score_threshold=0.35), describer, None, progress=False)
    recognizer = GalleryRecognizer(gallery, describer, 0.5)
    tables = {}
    for workers in (1, 2):
        detector = SecondLook(HogDetector(score_threshold=0.35), HogDetector(score_threshold=0.0))
        tables[workers], skipped = recognize_folder(
            recognizer, detector, tmp_path / "probes", tmp_path / f"out{workers}", progress=False, workers=workers
        )
        assert skipped == [] and detector.second_looks == 0
    assert len(tables[1]) == 6 and set(tables[1]["name"]) == {"astronaut", "grace_hopper"}
    pd.testing.assert_frame_equal(tables[1], tables[2])
