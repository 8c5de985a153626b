"""ONNX export of a trained YOLO detector, checked against PyTorch with ONNX Runtime on a fixed image
(`training.onnx_export`: the manifest entry, the parity error); and the detector for ultralytics' tools, as an
ultralytics `.pt` checkpoint and its exports, checked against the project's own inference detection by detection
(`ultralytics_exports`, on `facemask.ultralytics_checkpoint`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from core.errors import UserError
from core.files import atomic_write
from facemask.inference import detect, fused_copy, letterbox_batch, load_detector, postprocess
from facemask.ultralytics_checkpoint import compare_detections, export, ultralytics_detect, write_ultralytics_checkpoint
from training.onnx_export import ExportedModel, ExportParityError, Parity, max_abs_difference, onnx_session, write_onnx

if TYPE_CHECKING:
    from facemask.detector import YoloDetector

# The raw head output, N×(4 + classes)×anchors, is compared in two parts, each with an absolute tolerance:
SCORE_TOLERANCE = 1e-4  # class scores (after the sigmoid, in [0, 1]); float32 reordering differs by ~1e-7
BOX_TOLERANCE_PX = 1e-2  # box centre, width and height, in input pixels (~1e-4 seen at 640 px)
PARITY_CONF = 0.05  # the confidence threshold of the NMS whose box counts are compared
INPUT_SCALE = 1 / 255


class _Predictions(nn.Module):
    """The detection output alone (boxes xywh in input pixels + class scores), as ultralytics' exporter emits it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[0]


def servable(checkpoint: str | Path) -> tuple[nn.Module, np.ndarray, object]:
    """`YoloDetector.servable`: the detector of `checkpoint` as `_Predictions` in eval mode with ultralytics' Detect
    heads dynamic (anchors from each input's shape: what ultralytics' exporter sets for dynamic shapes; else
    torch.export fixes the batch at 2), an input example float32 (2, 3, imgsz, imgsz) uniform in [0, 1], and
    `export_onnx`."""
    from ultralytics.nn.modules import Detect

    from facemask.inference import load_detector

    detector = load_detector(checkpoint, key="the trained checkpoint")
    net = _Predictions(detector.eval_net).eval()
    for head in net.modules():
        if isinstance(head, Detect):
            head.dynamic = True
    size = int(detector.hparams.imgsz)
    example = np.random.default_rng(0).uniform(0, 1, (2, 3, size, size)).astype(np.float32)
    return net, example, export_onnx


def export_onnx(
    checkpoint_path: str | Path, out_path: str | Path, imgsz: int | None = None, *, key: str = "CKPT", opset: int = 17
) -> ExportedModel:
    """Write `out_path` (input `images` N×3×imgsz×imgsz in [0, 1], output `output0` N×(4+classes)×anchors), check
    it, and return its manifest entry (`image_size` = imgsz, default: the training image size).

    The checkpoint is read as data only (`load_detector`); `key` names it in error messages. ExportParityError
    when ONNX Runtime's class scores or boxes differ from PyTorch's on `parity_image()` (see `check_parity`).
    """
    module = load_detector(checkpoint_path, key=key)
    net = module.eval_net.eval()
    imgsz = int(imgsz or module.hparams.imgsz)
    out_path = Path(out_path)
    parity = _write_checked(net, imgsz, out_path, opset)
    return ExportedModel(
        file=out_path.name,
        checkpoint=str(checkpoint_path),
        input="images",
        output="output0",
        output_kind="detections",
        image_size=imgsz,
        input_scale=INPUT_SCALE,
        preprocessing="RGB / 255, letterboxed with grey 114 (ultralytics' LetterBox); output: boxes xywh in input pixels "
        "and class scores per anchor, decoded and NMS-ed as ultralytics does",
        class_names=list(module.names),
        parity=parity,
    )


RUNTIME_SUFFIX = ".runtime.onnx"  # <stem>.runtime.onnx and <stem>.runtime.json
RUNTIME_FORMAT = 1  # part of the cache key: raise it when what `runtime_model` exports changes


@dataclass(frozen=True)
class RuntimeModel:
    """A trained detector in ONNX Runtime (`runtime_model`)."""

    session: Any  # onnxruntime.InferenceSession: images N×3×H×W in [0, 1], H and W multiples of 32 → output0
    names: list[str]  # class names, in the order of the output's class scores
    imgsz: int  # the checkpoint's training image size (px)
    path: Path  # the ONNX file
    cached: bool  # True: an earlier export of this very checkpoint was reused, the checkpoint was not loaded


def runtime_model(checkpoint: str | Path, fallback_dir: str | Path, key: str = "CKPT") -> RuntimeModel:
    """The detector of `checkpoint` with each BatchNorm folded into its convolution (`facemask.inference.fused_copy`, as
    `yolo track` runs a model) in ONNX Runtime on the CPU, with dynamic batch, height and width
    (`letterbox_batch(rect=True)` frames): its output0 is PyTorch's, checked by `check_parity` (ExportParityError).

    Exported once per checkpoint, as `yolo export` writes best.onnx beside best.pt: `<stem>.runtime.onnx` beside the
    checkpoint (in `fallback_dir`, named by the checkpoint's hash, when that folder cannot be written), with a
    `.runtime.json` holding the key — the checkpoint's SHA-256, the torch and ultralytics versions, RUNTIME_FORMAT —
    the ONNX file's SHA-256, the class names and the training image size. A later call whose key matches opens the
    bytes it hashed without loading the checkpoint: at yolov5n size 0.1 s of hashing instead of 0.65 s of loading and
    0.75 s of exporting and checking (2 CPU cores here). A changed checkpoint (best.ckpt is overwritten as training
    goes on) or a damaged file is exported again. UserError (`key`=…) for a checkpoint that is missing or refused."""
    import ultralytics

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        load_detector(checkpoint, key=key)  # its one-line UserError
    digest = _sha256(checkpoint.read_bytes())
    wanted = {
        "checkpoint_sha256": digest,
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "format": RUNTIME_FORMAT,
    }
    places = [(checkpoint.parent, checkpoint.stem), (Path(fallback_dir), digest[:16])]
    for folder, stem in places:
        onnx_path, sidecar = _runtime_files(folder, stem)
        entry = _read_json(sidecar)
        if entry is None or {k: entry.get(k) for k in wanted} != wanted or not onnx_path.is_file():
            continue
        data = onnx_path.read_bytes()
        if entry.get("onnx_sha256") == _sha256(data):  # the very bytes the session opens
            return RuntimeModel(onnx_session(data), list(entry["names"]), int(entry["imgsz"]), onnx_path, True)

    module = load_detector(checkpoint, key=key)
    net = fused_copy(module).cpu()
    imgsz = int(module.hparams.imgsz)
    for folder, stem in places:
        onnx_path, sidecar = _runtime_files(folder, stem)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, partial = tempfile.mkstemp(prefix=f".{onnx_path.name}.", dir=folder)  # unique: concurrent callers
            os.close(handle)
        except OSError:  # a read-only checkpoint folder: the fallback
            continue
        partial = Path(partial)
        try:
            _write_checked(net, imgsz, partial, dynamic_size=True)
            data = partial.read_bytes()
            os.replace(partial, onnx_path)
        finally:
            partial.unlink(missing_ok=True)
        entry = {**wanted, "onnx_sha256": _sha256(data), "names": list(module.names), "imgsz": imgsz}
        with contextlib.suppress(OSError), atomic_write(sidecar, "w") as handle:  # without it: exported again
            json.dump(entry, handle, indent=1)
        return RuntimeModel(onnx_session(data), list(module.names), imgsz, onnx_path, False)
    raise UserError(f"cannot write the ONNX export of {checkpoint} to {places[0][0]} nor to {places[1][0]}")


def _runtime_files(folder: Path, stem: str) -> tuple[Path, Path]:
    onnx_path = folder / f"{stem}{RUNTIME_SUFFIX}"
    return onnx_path, onnx_path.with_suffix(".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_checked(net: nn.Module, imgsz: int, path: Path, opset: int = 17, dynamic_size: bool = False) -> Parity:
    """`net`'s detections (`_Predictions`) as ONNX at `path`, traced at imgsz×imgsz; the batch axis is dynamic, and
    with `dynamic_size` height, width (and so the anchors) too. Checked by `check_parity`, whose Parity it returns."""
    images, output = {0: "batch"}, {0: "batch"}
    if dynamic_size:
        images, output = {**images, 2: "height", 3: "width"}, {**output, 2: "anchors"}
    example = torch.zeros(1, 3, imgsz, imgsz)
    write_onnx(
        _Predictions(net).eval(), example, path, "images", "output0", opset, {"images": images, "output0": output}
    )
    return check_parity(net, path, imgsz)


def parity_image() -> np.ndarray:
    """The fixed check image: skimage's astronaut photograph (a real face that ships with the package)."""
    from synthetic.faces import real_face_photos

    return real_face_photos()[0].rgb


def onnx_detect(
    session, images: Sequence[np.ndarray], imgsz: int, conf: float = 0.25, iou: float = 0.45, rect: bool = False
) -> list[np.ndarray]:
    """The same detections as `facemask.inference.detect`, with the forward pass in ONNX Runtime (`rect` needs a session
    with dynamic height and width: `runtime_model`)."""
    batch, shapes = letterbox_batch(images, imgsz, rect)
    raw = session.run(None, {"images": batch.numpy()})[0]
    return postprocess(torch.from_numpy(raw), batch.shape[2:], shapes, conf, iou)


@torch.no_grad()
def check_parity(net: nn.Module, onnx_path: str | Path, imgsz: int, conf: float = PARITY_CONF) -> Parity:
    """PyTorch vs ONNX Runtime on `parity_image()`: the class scores of every anchor (absolute, SCORE_TOLERANCE),
    the boxes of every anchor (input pixels, BOX_TOLERANCE_PX) and the number of detections after NMS at `conf`.
    One forward pass each; ExportParityError on any difference above its tolerance."""
    batch, shapes = letterbox_batch([parity_image()], imgsz)
    torch_raw = net(batch)[0]
    onnx_raw = torch.from_numpy(onnx_session(onnx_path).run(None, {"images": batch.numpy()})[0])
    inputs = f"the astronaut photograph at {imgsz} px"
    scores = max_abs_difference(
        onnx_path, "the class scores", torch_raw[:, 4:], onnx_raw[:, 4:], SCORE_TOLERANCE, inputs
    )
    boxes = max_abs_difference(onnx_path, "the boxes (px)", torch_raw[:, :4], onnx_raw[:, :4], BOX_TOLERANCE_PX, inputs)
    counts = [len(postprocess(raw, batch.shape[2:], shapes, conf, 0.45)[0]) for raw in (torch_raw, onnx_raw)]
    if counts[0] != counts[1]:
        raise ExportParityError(
            onnx_path,
            f"the detection counts after NMS at conf ≥ {conf} (PyTorch {counts[0]}, ONNX Runtime {counts[1]})",
            abs(counts[0] - counts[1]),
            0,
            inputs,
        )
    return Parity(
        max_abs_difference=scores,
        tolerance=SCORE_TOLERANCE,
        inputs=inputs,
        box_max_abs_difference_px=boxes,
        box_tolerance_px=BOX_TOLERANCE_PX,
        detections_torch=counts[0],
        detections_onnx=counts[1],
    )


PT_FORMAT = "pt"  # the ultralytics checkpoint's key among the formats: written first, every export is made from it


@dataclass(frozen=True)
class ParityCheck:
    """How ultralytics' predictor and the project's own inference run and are compared (`format_parity`)."""

    imgsz: int  # the input size of both, px
    conf: float  # the NMS confidence threshold of both
    iou: float  # the NMS IoU threshold of both
    device: str  # where ultralytics exports and predicts
    box_tolerance_px: float  # |Δ box corner| allowed, in the original image's pixels
    score_tolerance: float  # |Δ confidence| allowed


@dataclass(frozen=True)
class FormatParity:
    """One model file run by ultralytics' predictor against the project's own inference (`format_parity`)."""

    file: Path  # the `.pt` or the export (a file or, for some formats, a folder)
    max_box_px: float  # the largest |Δ box corner| of the matched detections, in the original images' pixels
    max_score: float  # the largest |Δ confidence|
    images: int  # images compared
    detections: int  # detections compared, over all images

    def row(self) -> dict:
        """{"file", "max_box_px", "max_score", "images", "detections"} (JSON-ready)."""
        return {
            "file": str(self.file),
            "max_box_px": self.max_box_px,
            "max_score": self.max_score,
            "images": self.images,
            "detections": self.detections,
        }


def format_parity(
    fmt: str,
    path: Path,
    images: Sequence[tuple[str, np.ndarray]],
    expected: Sequence[np.ndarray],
    check: ParityCheck,
) -> FormatParity:
    """ultralytics' predictor on the model file `path` (format `fmt`) against `expected`, the project's detections
    ((N, 6) `x0, y0, x1, y1, conf, class`, image pixels) of each (name, RGB uint8 (H, W, 3)) of `images`, both run
    as `check` says. FormatParityError naming `fmt`, `path` and the image for a different count per class, or a
    difference above the check's box or score tolerance (`ultralytics_checkpoint.compare_detections`)."""
    got = ultralytics_detect(path, [rgb for _, rgb in images], check.imgsz, check.conf, check.iou, device=check.device)
    tolerances = {"box_tolerance_px": check.box_tolerance_px, "score_tolerance": check.score_tolerance}
    box_max = score_max = 0.0
    detections = 0
    for (name, _), mine, theirs in zip(images, expected, got):
        box, score, count = compare_detections(
            mine, theirs, conf=check.conf, fmt=fmt, path=path, image=name, **tolerances
        )
        box_max, score_max, detections = max(box_max, box), max(score_max, score), detections + count
    return FormatParity(path, box_max, score_max, len(images), detections)


def ultralytics_exports(
    module: YoloDetector,
    images: Sequence[tuple[str, np.ndarray]],
    checkpoint_pt: str | Path,
    formats: Sequence[str],
    check: ParityCheck,
) -> dict[str, FormatParity]:
    """Write `module` as the ultralytics checkpoint `checkpoint_pt` (`write_ultralytics_checkpoint`), export it to
    each of `formats` (ultralytics' format names, without PT_FORMAT) at the check's imgsz on its device, and check
    every file against the project's `detect` on the module's evaluated weights (`format_parity`).

    Returns the parity by format, PT_FORMAT first, then `formats` in order. UserError (`export`) for an unknown
    format or a missing exporter package; FormatParityError for a file whose detections differ."""
    # the reference: the project's own inference on the checkpoint's evaluated weights
    expected = [detect(module.eval_net, [rgb], check.imgsz, conf=check.conf, iou=check.iou)[0] for _, rgb in images]
    pt = write_ultralytics_checkpoint(module, checkpoint_pt, check.imgsz)
    files = {PT_FORMAT: pt, **{fmt: export(pt, fmt, check.imgsz, device=check.device) for fmt in formats}}
    return {fmt: format_parity(fmt, path, images, expected, check) for fmt, path in files.items()}
