"""The zoom into one face (`facemask.augment.FaceZoom`): the boxes follow the pixels, the face grows as configured,
it sits in ultralytics' training transforms (and stays there after close_mosaic); and eval-facemask's `split=test`
view holds exactly the photos training holds out."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
from ultralytics.utils.instance import Instances

from core.voc import VocAnnotation, VocObject, write_voc
from facemask.augment import FaceZoom
from synthetic.facemask import FACEMASK_CLASSES

SIDE = 416


def _scene(boxes: np.ndarray) -> dict:
    """A black SIDE×SIDE image with each box (x0 y0 x1 y1 px) painted white, as ultralytics' labels after mosaic."""
    img = np.zeros((SIDE, SIDE, 3), np.uint8)
    for x0, y0, x1, y1 in boxes.astype(int):
        img[y0:y1, x0:x1] = 255
    instances = Instances(boxes.astype(np.float32), bbox_format="xyxy", normalized=False)
    return {"img": img, "instances": instances, "cls": np.arange(len(boxes), dtype=np.float32)[:, None]}


def _sizes(boxes: np.ndarray) -> np.ndarray:
    return np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def test_the_boxes_follow_the_zoomed_pixels_and_faces_grow_within_the_limits():
    boxes = np.array([[100, 100, 124, 124], [130, 104, 150, 124], [300, 300, 330, 330]], np.float32)
    random.seed(0)
    grown = []
    for _ in range(40):
        out = FaceZoom(p=1.0, max_fraction=0.6, max_zoom=4.0)(_scene(boxes.copy()))
        kept = out["instances"].bboxes
        assert len(kept) >= 1 and len(kept) == len(out["cls"]) and out["img"].shape == (SIDE, SIDE, 3)
        assert kept.dtype == np.float32  # ultralytics' loss puts them into a float32 tensor
        for box in kept:  # every box still lies on its painted face: the image and its labels moved together
            x0, y0, x1, y1 = np.round(box).astype(int)
            inner = out["img"][y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
            assert inner.size == 0 or inner.mean() > 200
        # the zoom is one factor for every kept box, at most max_zoom, and the zoomed face stays ≤ max_fraction
        factors = _sizes(kept) / _sizes(boxes[out["cls"][:, 0].astype(int)])
        assert np.allclose(factors, factors[0], rtol=0.05) and 1.0 <= factors[0] <= 4.0 + 1e-3
        grown.append(factors[0])
    assert max(grown) > 3.0 and min(grown) < 2.0  # log-uniform targets: both small and large zooms happen


def test_a_face_cut_by_the_crop_is_dropped_with_its_class():
    # a zoom of 4 around the left face gives a 104-px window: the far face cannot be in it
    out = FaceZoom(p=1.0, max_fraction=1.0, max_zoom=4.0)
    random.seed(1)
    for _ in range(10):
        labels = out(_scene(np.array([[10, 10, 30, 30], [380, 380, 410, 410]], np.float32)))
        if _sizes(labels["instances"].bboxes)[0] > 60:
            assert labels["cls"][:, 0].tolist() == [0]
            return
    pytest.fail("no zoom above 3x in 10 draws")


def test_p_zero_or_a_face_already_large_leaves_the_sample_alone_and_bad_arguments_are_named():
    boxes = np.array([[0, 0, 300, 300]], np.float32)
    labels = _scene(boxes)
    image = labels["img"].copy()
    assert FaceZoom(p=1.0, max_fraction=0.6)(labels)["img"] is labels["img"]  # 300 px ≥ 0.6 · 416
    assert np.array_equal(FaceZoom(p=0.0)(_scene(boxes))["img"], image)
    with pytest.raises(ValueError, match="max_zoom"):
        FaceZoom(max_zoom=0.5)


def test_the_zoom_sits_in_the_training_transforms_and_survives_close_mosaic(tmp_path):
    from facemask.data import YoloDataModule
    from synthetic import make_facemask

    make_facemask(tmp_path / "voc", images=12, seed=0)
    data = YoloDataModule(
        str(tmp_path / "voc"), str(tmp_path / "yolo"), list(FACEMASK_CLASSES), imgsz=128, batch_size=4, zoom={"p": 1.0}
    )
    data.prepare_data()
    data.setup("fit")
    assert any(isinstance(t, FaceZoom) for t in data.train_set.transforms.transforms)
    assert not any(isinstance(t, FaceZoom) for t in data.val_set.transforms.transforms)
    data.train_dataloader()
    data.close_mosaic()  # ultralytics rebuilds the transforms; the zoom goes back in, once
    assert [type(t).__name__ for t in data.train_set.transforms.transforms].count("FaceZoom") == 1
    sample = data.train_set[0]
    assert sample["img"].shape[1:] == (128, 128) and len(sample["bboxes"]) == len(sample["cls"])


def test_the_test_split_view_holds_the_photos_training_holds_out(tmp_path):
    from facemask.evaluation import test_split_view
    from facemask.voc_to_yolo import convert_voc

    voc = tmp_path / "voc"
    (voc / "images").mkdir(parents=True)
    for k in range(15):
        cv2.imwrite(str(voc / "images" / f"photo{k}.jpg"), np.full((40, 50, 3), 10 * k, np.uint8))
        write_voc(
            voc / "annotations" / f"photo{k}.xml",
            VocAnnotation(f"photo{k}.jpg", 50, 40, [VocObject("with_mask", 5, 5, 25, 25)]),
        )
    convert_voc(voc, tmp_path / "trained", list(FACEMASK_CLASSES), val_fraction=0.2, test_fraction=0.2, seed=7)
    held_out = {p.name.replace("_jpg.png", ".jpg") for p in (tmp_path / "trained" / "images" / "test").glob("*.png")}
    view = test_split_view(voc, tmp_path / "work", list(FACEMASK_CLASSES), 0.2, "error")
    assert {p.name for p in (view / "images").iterdir()} == held_out and len(held_out) == 3
    assert {p.stem for p in (view / "annotations").iterdir()} == {n[:-4] for n in held_out}
    # a second call rebuilds the same view
    assert {
        p.name
        for p in (test_split_view(voc, tmp_path / "work", list(FACEMASK_CLASSES), 0.2, "error") / "images").iterdir()
    } == held_out
