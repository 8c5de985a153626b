"""The DCGAN generator as ONNX, for the browser playground: exported from a checkpoint and checked
against PyTorch with ONNX Runtime on fixed noise before it is used (`training.onnx_export`)."""

from __future__ import annotations

from pathlib import Path

import torch

from core.checkpoints import load_module
from dcgan.module import DCGAN
from training.onnx_export import ExportedModel, max_abs_difference, onnx_session

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
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript exporter: the dynamo one needs onnxscript, which the pinned stack does not carry.
    torch.onnx.export(
        generator,
        (z,),
        str(out_path),
        input_names=["z"],
        output_names=["images"],
        opset_version=opset,
        dynamic_axes={"z": {0: "batch"}, "images": {0: "batch"}},
        dynamo=False,
    )
    with torch.no_grad():
        expected = generator(z).numpy()
    got = onnx_session(out_path).run(["images"], {"z": z.numpy()})[0]
    inputs = f"{PARITY_SAMPLES} fixed noise vectors"
    difference = max_abs_difference(out_path, "the images", expected, got, PARITY_ATOL, inputs)
    return ExportedModel(
        file=out_path.name,
        checkpoint=str(checkpoint_path),
        input="z",
        output="images",
        output_kind="images",
        image_size=int(expected.shape[-1]),
        input_scale=1.0,
        preprocessing="z: N×latent_dim float32 noise, N(0, 1); output NCHW",
        class_names=[],
        parity={"max_abs_difference": difference, "tolerance": PARITY_ATOL, "inputs": inputs},
        latent_dim=int(generator.latent_dim),
        output_range=[-1.0, 1.0],
    )
