"""The PyTorch port of dlib's face ResNet (faces/dlib_resnet_port.py) against dlib itself, on aligned 150-px chips
(`dlib.get_face_chip` from the landmarks, as `FaceDescriber` makes them): real faces from installed packages
and LFW, a synthetic cartoon face, and noise; then its ONNX export against the port."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faces import Detection
from faces.descriptors import FaceDescriber, centre_box
from faces.detectors import dlib_model_path
from faces.dlib_resnet_port import DlibFormatError, load_dlib_face_resnet, read_dlib_resnet
from tests.conftest import SHARED_DATA, needs_shared_data

TOLERANCE = 1e-4  # max abs difference on the 128 values (dlib computes in float32 too)
MODEL = "dlib_face_recognition_resnet_model_v1.dat"


@pytest.fixture(scope="module")
def port():
    return load_dlib_face_resnet()


@pytest.fixture(scope="module")
def describer():
    return FaceDescriber()


def _dlib_descriptors(chips: list[np.ndarray]) -> np.ndarray:
    import dlib

    model = dlib.face_recognition_model_v1(str(dlib_model_path(MODEL)))
    return np.stack([np.asarray(model.compute_face_descriptor(np.ascontiguousarray(c)), np.float32) for c in chips])


def _port_descriptors(port, chips: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return port(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2)).numpy()


def _generated_chips(describer) -> list[np.ndarray]:
    """Chips of the two package photos (skimage's astronaut, matplotlib's Grace Hopper), of a synthetic cartoon
    face (synthetic) and one of uniform noise: the port must equal dlib on any 150×150 image."""
    from synthetic.faces import Identity, draw_face, real_face_photos

    chips = [describer.chips(p.rgb, [Detection(*p.face, 1.0)])[0] for p in real_face_photos()]
    rng = np.random.default_rng(0)
    canvas = np.full((200, 200, 3), 128, np.uint8)
    draw_face(canvas, (100, 100), 90, Identity.random(rng), rng)
    chips += describer.chips(canvas, [centre_box(canvas.shape, 0.6)])
    chips.append(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8))
    return chips


def test_port_equals_dlib_on_generated_chips(port, describer):
    chips = _generated_chips(describer)
    assert all(c.shape == (150, 150, 3) and c.dtype == np.uint8 for c in chips)
    expected, got = _dlib_descriptors(chips), _port_descriptors(port, chips)
    assert got.shape == (4, 128) and got.dtype == np.float32
    assert np.abs(expected - got).max() <= TOLERANCE
    # the chips are distinct inputs: a port that ignored its input would fail above, but check it is not constant
    assert np.linalg.norm(expected[0] - expected[1]) > 0.3


@needs_shared_data("faces")
def test_port_equals_dlib_on_lfw_chips(port, describer):
    from core.images import read_rgb

    people = sorted(p for p in (SHARED_DATA / "faces").iterdir() if p.is_dir())[:4]
    chips = []
    for person in people:
        rgb = read_rgb(sorted(person.glob("*.jpg"))[0])
        chips += describer.chips(rgb, [centre_box(rgb.shape)])  # LFW's 250-px photos: the face is in the centre
    expected, got = _dlib_descriptors(chips), _port_descriptors(port, chips)
    assert len(chips) == 4 and np.abs(expected - got).max() <= TOLERANCE


def test_a_file_that_is_not_the_network_is_a_one_line_error_naming_it(tmp_path):
    data = dlib_model_path(MODEL).read_bytes()
    cases = {
        "truncated.dat": (data[: len(data) // 2], r"file ends early"),
        "other.dat": (data.replace(b"loss_metric_", b"loss_mmod___", 1), r"layer 'loss_mmod___2'"),
        "trailing.dat": (data + b"\x00", r"1 bytes after the network"),
    }
    for name, (content, why) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DlibFormatError, match=why) as error:
            read_dlib_resnet(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_onnx_export_equals_the_port(tmp_path, port):
    from faces.descriptor_onnx import export_onnx
    from training.onnx_export import onnx_session

    entry = export_onnx(tmp_path / "descriptor.onnx")
    assert entry["output_kind"] == "descriptor" and entry["image_size"] == 150
    assert entry["parity"]["max_abs_difference"] <= entry["parity"]["tolerance"] == TOLERANCE
    chips = np.random.default_rng(1).integers(0, 256, (3, 3, 150, 150)).astype(np.float32)
    got = onnx_session(tmp_path / "descriptor.onnx").run([entry["output"]], {entry["input"]: chips})[0]
    with torch.no_grad():
        expected = port(torch.from_numpy(chips)).numpy()
    assert np.abs(expected - got).max() <= TOLERANCE
