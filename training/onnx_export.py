"""What the ONNX exporters share: the one way a network is written (`write_onnx`) and checked (`export_checked`), the
manifest entry each returns, and the parity error.

Every exporter is `export_onnx(checkpoint_path, out_path, *, key="CKPT", ...) -> ExportedModel` (`Exporter`):
`dcgan.onnx` (the DCGAN generator), `facemask.export` (the face-mask detector),
`faces.classifier` (the face classifier); `faces.descriptor_onnx` writes dlib's descriptor network. Each reads its checkpoint as data only
(`core.checkpoints`; `key` names the file in errors), writes `out_path`, runs it in ONNX Runtime on fixed inputs
and compares with PyTorch: a difference above the tolerance is an `ExportParityError`; a checkpoint that cannot
become a tensor graph is `NotExportable`. `experiments/export_web.py` writes the entries to
web/public/models/manifest.json, which the page (web/src/*.js) reads.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired only from evaluated annotations.
from pathlib import Path
from typing import NotRequired, Protocol, TypedDict

import numpy as np

from core.errors import UserError


class Parity(TypedDict):
    """PyTorch vs ONNX Runtime on the exporter's fixed inputs."""

    max_abs_difference: float  # of the compared output (for the detector: the class scores)
    tolerance: float  # absolute; the export fails above it
    inputs: str  # what the check ran on
    box_max_abs_difference_px: NotRequired[float]  # the detector's raw boxes, in input pixels
    box_tolerance_px: NotRequired[float]
    detections_torch: NotRequired[int]  # the detector's boxes after NMS, each runtime
    detections_onnx: NotRequired[int]


class ExportedModel(TypedDict):
    """One manifest entry: what the page needs to feed the model and read its output (web/src/*.js reads the
    keys below; `export_web` adds `task`)."""

    file: str  # the ONNX file's name (the page loads it beside manifest.json)
    checkpoint: str  # the checkpoint it was exported from
    input: str  # the input tensor's name
    output: str  # the output tensor's name
    output_kind: str  # "images" (generator), "detections" (raw YOLO head), "logits" or "probabilities" (classifier)
    image_size: int  # the square side in pixels: of the input image; the generator's: of its output images
    input_scale: float  # the factor on 0–255 RGB pixels, NCHW (the generator's input is noise: 1.0)
    preprocessing: str  # in words
    class_names: list[str]  # the classes, in output order (the generator: none)
    parity: Parity
    latent_dim: NotRequired[int]  # generator: z is N×latent_dim, N(0, 1)
    output_range: NotRequired[list[float]]  # generator: the pixel range of its output
    margin: NotRequired[float]  # classifier: the margin of the square face crop, a fraction of the box's side


class Exporter(Protocol):
    def __call__(self, checkpoint_path: str | Path, out_path: str | Path, *, key: str = "CKPT") -> ExportedModel: ...


class NotExportable(UserError):
    """This checkpoint cannot run as an ONNX graph; the message says why (export_web lists it as missing)."""


class ExportParityError(UserError):
    """ONNX Runtime and PyTorch disagree on the fixed inputs by more than the tolerance."""

    def __init__(self, onnx_path: str | Path, what: str, difference: float, tolerance: float, inputs: str) -> None:
        super().__init__(
            f"ONNX export {onnx_path}: {what} differ from PyTorch's by {difference:.3g} (tolerance {tolerance:.3g}) "
            f"on {inputs}: the file does not compute what the checkpoint does and is not used"
        )
        self.onnx_path, self.what, self.difference, self.tolerance = Path(onnx_path), what, difference, tolerance


def max_abs_difference(onnx_path: str | Path, what: str, expected, got, tolerance: float, inputs: str) -> float:
    """The largest |expected − got|; ExportParityError when it is above `tolerance` (or not finite)."""
    expected, got = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
    if expected.shape != got.shape:
        raise ExportParityError(
            onnx_path, f"{what} (shape {got.shape} vs {expected.shape})", float("inf"), tolerance, inputs
        )
    difference = float(np.abs(expected - got).max()) if expected.size else 0.0
    if not difference <= tolerance:  # NaN fails too
        raise ExportParityError(onnx_path, what, difference, tolerance, inputs)
    return difference


def write_onnx(
    module,
    example,
    out_path: str | Path,
    input_name: str,
    output_name: str,
    opset: int = 17,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Trace `module` (a torch.nn.Module in eval mode) on `example` (its one input tensor) into the ONNX file
    `out_path` (its folder created), input and output named as given, the batch axis (0) dynamic unless
    `dynamic_axes` says otherwise. The TorchScript exporter: the dynamo one needs onnxscript, which the pinned
    stack does not carry."""
    import torch

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (example,),
        str(out_path),
        input_names=[input_name],
        output_names=[output_name],
        opset_version=opset,
        dynamic_axes=dynamic_axes or {input_name: {0: "batch"}, output_name: {0: "batch"}},
        dynamo=False,
    )
    return out_path


def export_checked(
    module,
    example,
    out_path: str | Path,
    input_name: str,
    output_name: str,
    what: str,
    tolerance: float | None,
    inputs: str,
    opset: int = 17,
) -> tuple[np.ndarray, Parity]:
    """`write_onnx`, then the file run in ONNX Runtime on `example` against `module` in PyTorch: returns PyTorch's
    output (numpy) and the Parity; ExportParityError when they differ by more than `tolerance` (absolute; None:
    1e-3 of the output's largest magnitude, at least 1e-3, for outputs without a fixed range such as logits).
    `what` names the output and `inputs` the example in the error."""
    import torch

    write_onnx(module, example, out_path, input_name, output_name, opset)
    with torch.no_grad():
        expected = module(example).numpy()
    got = onnx_session(out_path).run([output_name], {input_name: example.numpy()})[0]
    if tolerance is None:
        tolerance = 1e-3 * max(1.0, float(np.abs(expected).max()))
    difference = max_abs_difference(out_path, what, expected, got, tolerance, inputs)
    return expected, Parity(max_abs_difference=difference, tolerance=tolerance, inputs=inputs)


def onnx_session(model: str | Path | bytes):
    """An ONNX Runtime session on the CPU, its warnings off, on an ONNX file or its bytes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
