"""The DCGAN generator as ONNX, for the browser playground: exported from a checkpoint and checked
against PyTorch with ONNX Runtime on fixed noise before it is used."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from core.checkpoints import load_module
from lightning_modules.dcgan import DCGAN

PARITY_SAMPLES = 8
PARITY_ATOL = 1e-4  # tanh outputs in [-1, 1]; float32 reordering differs by ~1e-6


def export_onnx(checkpoint_path: str | Path, out_path: str | Path, opset: int = 17, key: str = "CKPT") -> dict:
    """Write the generator of a DCGAN checkpoint as ONNX (input `z`: N×latent_dim float32 N(0, 1); output
    `images`: N×3×H×W in [-1, 1]) and return its manifest entry, with the measured PyTorch/ONNX difference.

    The checkpoint is read as data only (`core.checkpoints`); a refused or foreign file is a UserError starting
    with `key=`."""
    model = load_module(DCGAN, checkpoint_path, key=key, quality=None)  # the quality metric is not exported
    generator = model.generator.eval()
    z = torch.randn(PARITY_SAMPLES, generator.latent_dim, generator=torch.Generator().manual_seed(0))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript exporter: the dynamo one needs onnxscript, which the pinned stack does not carry.
    torch.onnx.export(generator, (z,), str(out_path), input_names=["z"], output_names=["images"], opset_version=opset,
                      dynamic_axes={"z": {0: "batch"}, "images": {0: "batch"}}, dynamo=False)
    with torch.no_grad():
        expected = generator(z).numpy()
    session = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    got = session.run(["images"], {"z": z.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if diff > PARITY_ATOL:
        raise RuntimeError(f"{out_path}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {PARITY_ATOL}) on fixed noise")
    return {
        "file": out_path.name,
        "input": "z",
        "output": "images",
        "latent_dim": generator.latent_dim,
        "image_size": int(expected.shape[-1]),
        "output_range": [-1.0, 1.0],
        "layout": "NCHW",
        "checkpoint": str(checkpoint_path),
        "parity": {"max_abs_diff": diff, "samples": PARITY_SAMPLES},
    }
