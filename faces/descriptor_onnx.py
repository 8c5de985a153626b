"""dlib's face descriptor (the PyTorch port, `faces.dlib_resnet_port`) as ONNX for the browser, checked against the
port with ONNX Runtime: the `faces` manifest entry of kind "descriptor" (`experiments/export_web.py` adds the
gallery and the distance tolerance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from faces.dlib_resnet_port import CHIP_SIZE, load_dlib_face_resnet

TOLERANCE = 1e-4  # max abs difference on the 128 values; the port equals dlib to the same bound
PARITY_INPUTS = "2 fixed uniform-noise 150×150 chips"


def export_onnx(out_path: str | Path, model_path: str | Path | None = None) -> dict:
    """Write the descriptor network (float RGB chips 0–255, NCHW (B, 3, 150, 150) → descriptors (B, 128)) to
    `out_path` and return its manifest entry (`training.onnx_export.ExportedModel`, `output_kind`
    "descriptor", no classes). `model_path`: dlib's file (default: face-recognition-models'). Raises
    DlibFormatError for a file that is not dlib's ResNet, ExportParityError when ONNX Runtime differs from the
    port by more than 1e-4."""
    from training.onnx_export import ExportedModel, export_checked

    model = load_dlib_face_resnet(model_path)
    chips = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (2, 3, CHIP_SIZE, CHIP_SIZE)).astype(np.float32))
    _, parity = export_checked(
        model, chips, out_path, "chips", "descriptors", "the descriptors", TOLERANCE, PARITY_INPUTS
    )
    if model_path is None:
        from faces.detectors import dlib_model_path

        model_path = dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")
    return ExportedModel(
        file=Path(out_path).name,
        checkpoint=str(model_path),
        input="chips",
        output="descriptors",
        output_kind="descriptor",
        image_size=CHIP_SIZE,
        input_scale=1.0,
        preprocessing="the square face crop resized to 150×150, RGB 0–255; dlib's channel means are in the graph",
        class_names=[],
        parity=parity,
    )
