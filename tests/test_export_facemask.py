"""export-facemask: the trained detector as an ultralytics checkpoint that ultralytics' predictor and tracker take
as it is, its exports, and the detection-level parity check against the project's own inference."""

from __future__ import annotations

import importlib.util
import json
import pickletools
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.errors import UserError
from core.images import read_rgb
from facemask.ultralytics_checkpoint import (
    BOX_TOLERANCE_PX,
    SCORE_TOLERANCE,
    FormatParityError,
    compare_detections,
    export,
    ultralytics_detect,
    write_ultralytics_checkpoint,
)
from tests.conftest import compose
from tests.test_make_paths import _make, stub_python  # noqa: F401  (the stand-in interpreter fixture)
from tests.test_yolo import no_network, trained  # noqa: F401  (the module-scoped tiny training run, reused)

# The 2-step model's confidences: ~0.0041 for one whole-image box per class, then a tie of many anchors at ~0.0010
# whose order after NMS is not defined. 0.003 keeps the three boxes per image above the tie.
CONF = 0.003
IOU = 0.45


def _images(trained, count: int = 3) -> list[Path]:  # noqa: F811
    return sorted((trained["voc"] / "images").glob("*.png"))[:count]


def _pickled_modules(path: Path) -> set[str]:
    """The top-level modules of every class or function a torch.save'd file's pickle refers to (not loaded)."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    modules, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "GLOBAL":
            modules.add(arg.split(" ")[0].split(".")[0])
        elif opcode.name == "STACK_GLOBAL":
            modules.add(strings[-2].split(".")[0])
    return modules


def test_ultralytics_checkpoint_predicts_the_projects_boxes_and_tracks(trained, tmp_path):  # noqa: F811
    from ultralytics import YOLO

    from facemask.inference import detect, load_detector

    module = load_detector(trained["checkpoint"])
    pt = write_ultralytics_checkpoint(module, tmp_path / "facemask.pt")
    # ultralytics' own classes and torch only: the file loads where this project is not installed
    assert _pickled_modules(pt) <= {
        "ultralytics",
        "torch",
        "collections",
        "builtins",
        "__builtin__",
        "_codecs",
        "numpy",
        "pathlib",
    }
    assert "ultralytics" in _pickled_modules(pt)

    with no_network() as attempts:
        model = YOLO(str(pt))
        assert model.task == "detect" and model.names == {0: "with_mask", 1: "without_mask", 2: "mask_weared_incorrect"}
        assert model.ckpt["train_args"]["imgsz"] == 160 and model.ckpt["epoch"] == -1
        images = [read_rgb(path) for path in _images(trained)]
        expected = [detect(module.eval_net, [rgb], 160, conf=CONF, iou=IOU)[0] for rgb in images]
        got = ultralytics_detect(pt, images, 160, CONF, IOU)
    assert attempts == []
    assert [len(d) for d in expected] == [len(d) for d in got] == [3, 3, 3]  # one box per class on each image
    for path, mine, theirs in zip(_images(trained), expected, got):
        box, score, count = compare_detections(mine, theirs, conf=CONF, fmt="pt", path=pt, image=path.name)
        assert count == 3 and box <= BOX_TOLERANCE_PX and score <= SCORE_TOLERANCE

    # `yolo track` on a still video: the tiny model's three boxes per frame coincide (the whole image, one per
    # class) and score ~0.004, so ByteTrack's thresholds go under that and its score fusion is off (IoU 1 × 0.004
    # would fall under match_thresh): each box then keeps the id it got on the first frame
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (400, 300))
    for _ in range(4):
        writer.write(cv2.imread(str(_images(trained)[0]))[..., :3])
    writer.release()
    tracker = tmp_path / "bytetrack_low.yaml"
    tracker.write_text(
        "tracker_type: bytetrack\ntrack_high_thresh: 0.002\ntrack_low_thresh: 0.001\nnew_track_thresh: 0.002\n"
        "track_buffer: 30\nmatch_thresh: 0.8\nfuse_score: False\n"
    )
    with no_network() as attempts:
        results = YOLO(str(pt)).track(
            source=str(video), imgsz=160, conf=CONF, iou=IOU, tracker=str(tracker), device="cpu", verbose=False
        )
    assert attempts == []
    assert [sorted(r.boxes.id.int().tolist()) for r in results if r.boxes.id is not None] == [[1, 2, 3]] * 4


def test_entry_exports_onnx_and_torchscript_with_the_projects_boxes(trained, tmp_path, capsys):  # noqa: F811
    from experiments.export_facemask import export_facemask

    folder = tmp_path / "images"
    folder.mkdir()
    for path in _images(trained, 2):
        (folder / path.name).write_bytes(path.read_bytes())
    cfg = compose(
        "export_facemask",
        {
            **trained["store"],
            "ckpt": str(trained["checkpoint"]),
            "formats": "[onnx,torchscript]",
            "images": str(folder),
            "out_dir": str(tmp_path / "out"),
            "conf": CONF,
        },
    )
    with no_network() as attempts:
        result = export_facemask(cfg)
    assert attempts == []
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == result and list(result["formats"]) == ["pt", "onnx", "torchscript"]
    names = {"pt": "facemask.pt", "onnx": "facemask.onnx", "torchscript": "facemask.torchscript"}
    for fmt, row in result["formats"].items():
        assert Path(row["file"]) == tmp_path / "out" / names[fmt] and Path(row["file"]).is_file()
        assert row["images"] == 2 and row["detections"] == 6  # three boxes per image, every one matched
        assert row["max_box_px"] <= BOX_TOLERANCE_PX and row["max_score"] <= SCORE_TOLERANCE
    written = json.loads((tmp_path / "out" / "export.json").read_text())
    assert written["formats"] == result["formats"] and written["imgsz"] == 160


def _det(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def test_detections_match_one_to_one_whatever_their_order():
    mine = _det([10, 20, 50, 60, 0.9, 0], [100, 20, 150, 60, 0.8, 0], [10, 80, 40, 120, 0.7, 1])
    theirs = _det([100.03, 20, 150, 60, 0.80005, 0], [10, 80, 40, 120, 0.7, 1], [10, 20, 50, 60.01, 0.9, 0])
    box, score, count = compare_detections(mine, theirs, conf=0.25, fmt="onnx", path="m.onnx", image="a.png")
    assert box == pytest.approx(0.03) and score == pytest.approx(5e-5) and count == 3


def test_a_box_off_by_a_little_more_than_the_tolerance_names_the_format_and_image():
    mine = _det([10, 20, 50, 60, 0.9, 0])
    with pytest.raises(FormatParityError, match=r"format=torchscript \(m.torchscript\): the box corners \(px\)") as e:
        compare_detections(
            mine, mine + [0, 0, 0.06, 0, 0, 0], conf=0.25, fmt="torchscript", path="m.torchscript", image="b.png"
        )
    assert e.value.image == "b.png" and e.value.difference == pytest.approx(0.06) and e.value.tolerance == 0.05
    with pytest.raises(FormatParityError, match="the confidences"):
        compare_detections(mine, mine + [0, 0, 0, 0, 2e-4, 0], conf=0.25, fmt="onnx", path="m.onnx", image="b.png")
    assert "bfloat16" not in str(e.value)
    with pytest.raises(FormatParityError, match="OpenVINO ran it in bfloat16"):  # its CPU plugin's default on AMX
        compare_detections(
            mine, mine + [0, 0, 0.5, 0, 0, 0], conf=0.25, fmt="openvino", path="m_openvino_model", image="b.png"
        )


def test_a_missing_or_other_class_box_is_a_mismatch_but_one_at_the_threshold_is_not():
    mine = _det([10, 20, 50, 60, 0.9, 0], [10, 80, 40, 120, 0.25004, 1])
    # the class-1 box sits within the score tolerance of conf=0.25: either runtime may keep it
    assert compare_detections(mine, mine[:1], conf=0.25, fmt="onnx", path="m.onnx", image="c.png")[2] == 1
    with pytest.raises(FormatParityError, match=r"counts of class 0 .* \(project 1, export 0\) .* image c.png"):
        compare_detections(mine, _det([10, 20, 50, 60, 0.9, 2]), conf=0.25, fmt="onnx", path="m.onnx", image="c.png")


def test_formats_and_packages_are_checked_before_exporting(tmp_path):
    from experiments.export_facemask import formats_of

    assert formats_of("onnx, TorchScript,pt") == formats_of(["onnx", "torchscript", "onnx"]) == ["onnx", "torchscript"]
    assert formats_of(None) == formats_of([]) == []
    with pytest.raises(UserError, match="formats: 'bogus' is not an ultralytics export format"):
        export(tmp_path / "x.pt", "bogus", 160)
    if importlib.util.find_spec("openvino") is None:
        with pytest.raises(
            UserError, match="format openvino needs the Python package 'openvino', which is not installed"
        ):
            export(tmp_path / "x.pt", "openvino", 160)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_passes_format_as_a_list_and_ckpt_unchanged(stub_python, tmp_path):  # noqa: F811
    ckpt = str(tmp_path / "a=b, (c) [d] é's" / "epoch=0-step=1.ckpt")
    done = _make("export-facemask", {"FORMAT": "onnx,torchscript", "CKPT": ckpt}, stub_python, args="conf=0.5")
    assert done.returncode == 0, done.stderr
    received = json.loads(done.stdout.strip().splitlines()[-1])
    assert received == {
        "entry": "experiments.export_facemask",
        "formats": ["onnx", "torchscript"],
        "ckpt": ckpt,
        "conf": 0.5,
    }
    received = json.loads(_make("export-facemask", {}, stub_python).stdout.strip().splitlines()[-1])
    assert received == {"entry": "experiments.export_facemask", "formats": []}  # the .pt alone, default checkpoint


def test_monitor_detector_gives_the_same_detections_in_onnx_runtime_as_in_pytorch(trained, tmp_path, monkeypatch):  # noqa: F811
    """monitor-facemask's detector on the CPU (backend auto = ONNX Runtime on a fused copy, frames letterboxed to the
    smallest stride-32 rectangle) finds what the fused PyTorch net finds on a 16:9 frame, box for box; the export is
    written once beside the checkpoint and reused while the checkpoint is unchanged."""
    import shutil

    from facemask.export import runtime_model
    from facemask.inference import letterbox_batch, load_detector
    from facemask.monitor import resolve_backend, runtime_detector, yolo_detector

    ckpt = tmp_path / "run" / "best.ckpt"
    ckpt.parent.mkdir()
    shutil.copyfile(trained["checkpoint"], ckpt)
    module = load_detector(ckpt)
    frame = cv2.resize(read_rgb(_images(trained, 1)[0]), (640, 360))
    batch, _ = letterbox_batch([frame], 160, rect=True)
    assert tuple(batch.shape[2:]) == (96, 160)  # 160 × 90 padded to 96, not to the 160 × 160 square
    assert resolve_backend("auto", "cpu") == "onnxruntime" and resolve_backend("auto", "cuda") == "pytorch"

    first = runtime_model(ckpt, fallback_dir=tmp_path / "out")
    assert not first.cached and first.path == ckpt.parent / "best.runtime.onnx"
    assert (first.names, first.imgsz) == (list(module.names), int(module.hparams.imgsz))
    # the 2-step model scores its boxes about 0.001-0.004: a threshold at 0.002 keeps a score within the backends'
    # 1e-4 agreement from falling on both sides of it
    found = {
        "pytorch": yolo_detector(module, 160, conf=0.002, iou=0.45)(frame),
        "onnxruntime": runtime_detector(first.session, 160, conf=0.002, iou=0.45)(frame),
    }
    assert len(found["pytorch"]) == len(found["onnxruntime"]) > 0
    np.testing.assert_allclose(found["onnxruntime"][:, :4], found["pytorch"][:, :4], atol=1e-2)  # pixels
    np.testing.assert_allclose(found["onnxruntime"][:, 4], found["pytorch"][:, 4], atol=1e-4)  # confidences
    np.testing.assert_array_equal(found["onnxruntime"][:, 5], found["pytorch"][:, 5])  # classes

    again = runtime_model(ckpt, fallback_dir=tmp_path / "out")
    assert again.cached and again.names == first.names
    np.testing.assert_array_equal(runtime_detector(again.session, 160, 0.002, 0.45)(frame), found["onnxruntime"])
    with ckpt.open("ab") as f:  # another checkpoint under the same name (best.ckpt overwritten by more training)
        f.write(b"\0")
    assert not runtime_model(ckpt, fallback_dir=tmp_path / "out").cached
    first.path.write_bytes(first.path.read_bytes()[:-1])  # a damaged export is not reused either
    assert not runtime_model(ckpt, fallback_dir=tmp_path / "out").cached

    import facemask.export as yolo_export

    mkstemp = yolo_export.tempfile.mkstemp

    def read_only_checkpoint_folder(*args, dir, **kwargs):  # as root, a chmod would not stop the write
        if Path(dir) == ckpt.parent:
            raise PermissionError(13, "Permission denied", dir)
        return mkstemp(*args, dir=dir, **kwargs)

    with ckpt.open("ab") as f:
        f.write(b"\0")
    monkeypatch.setattr(yolo_export.tempfile, "mkstemp", read_only_checkpoint_folder)
    elsewhere = runtime_model(ckpt, fallback_dir=tmp_path / "out")
    assert not elsewhere.cached and elsewhere.path.parent == tmp_path / "out"
    assert elsewhere.path.name.endswith(".runtime.onnx") and elsewhere.path.name != "best.runtime.onnx"  # by hash
    assert runtime_model(ckpt, fallback_dir=tmp_path / "out").cached

    with pytest.raises(UserError, match="backend"):
        resolve_backend("tensorrt", "cpu")
    assert resolve_backend("onnxruntime", "cuda") == "onnxruntime"  # on the CPU, as asked
