"""The DCGAN generator as ONNX, for the browser playground: exported from a checkpoint and checked
against PyTorch with ONNX Runtime on fixed noise before it is used (`training.onnx_export`)."""

from __future__ import annotations

from pathlib import Path

import torch

from core.checkpoints import load_module
from dcgan.module import DCGAN
from training.onnx_export import ExportedModel, export_checked

PARITY_SAMPLES = 8
PARITY_ATOL = 1e-4  # tanh outputs in [-1, 1]; float32 reordering differs by ~1e-6


def export_onnx(
    checkpoint_path: str | Path, out_path: str | Path, *, key: str = "CKPT", opset: int = 17
) -> ExportedModel:
    """Write the generator of a DCGAN checkpoint as ONNX (input `z`: N×latent_dim float32 N(0, 1); output
    `images`: N×3×H×W in [-1, 1]) and return its manifest entry, with the measured PyTorch/ONNX difference.

    The checkpoint is read as data only (`core.checkpoints`); a refused or foreign file is a UserError starting
    with `key=`; ExportParityError when ONNX Runtime differs by more than PARITY_ATOL."""
    model = load_module(DCGAN, checkpoint_path, key=key, quality=None)  # the quality metric is not exported
    generator = model.generator.eval()
    z = torch.randn(PARITY_SAMPLES, generator.latent_dim, generator=torch.Generator().manual_seed(0))
    inputs = f"{PARITY_SAMPLES} fixed noise vectors"
    expected, parity = export_checked(generator, z, out_path, "z", "images", "the images", PARITY_ATOL, inputs, opset)
    return ExportedModel(
        file=Path(out_path).name,
        checkpoint=str(checkpoint_path),
        input="z",
        output="images",
        output_kind="images",
        image_size=int(expected.shape[-1]),
        input_scale=1.0,
        preprocessing="z: N×latent_dim float32 noise, N(0, 1); output NCHW",
        class_names=[],
        parity=parity,
        latent_dim=int(generator.latent_dim),
        output_range=[-1.0, 1.0],
    )
