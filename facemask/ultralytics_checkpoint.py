"""The bridge to ultralytics' own tools: a trained face-mask detector written as an ultralytics `.pt` checkpoint
(what `yolo predict`, `yolo track`, `yolo export` and `ultralytics.YOLO` read), its exports through ultralytics'
exporter, and a detection-level parity check of any of them against the project's own inference
(`facemask.inference.detect`).

The `.pt` file is a pickle with code, as every ultralytics checkpoint is (torch.save of the `DetectionModel`
object): it is written for ultralytics' tools only. This project never loads it back with `torch.load` (its own
checkpoints are Lightning `.ckpt` files read as data by `core.checkpoints`); the parity check runs it through
`ultralytics.YOLO`, which is ultralytics' choice of loader.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from core import offline
from core.errors import UserError
from core.files import atomic_write
from core.images import swap_red_blue

# Detection-level tolerances, absolute, between the project's PyTorch inference and ultralytics' predictor on an
# exported model (both float32 on the CPU). The formats fuse Conv+BatchNorm and reorder float32 sums, which moves
# raw boxes by ~1e-4 input px and scores by ~1e-7 (facemask/export.py); box corners are compared in
# the original image's pixels, i.e. after the letterbox's scale-up (up to ~4× for a 2,560 px image at 640 px).
BOX_TOLERANCE_PX = 0.05  # box corners x0, y0, x1, y1, in the original image's pixels
SCORE_TOLERANCE = 1e-4  # the confidence (class score after the sigmoid, in [0, 1])

CHECKPOINT_SUFFIX = ".pt"
# Python packages each exporter imports (ultralytics/engine/exporter.py); a missing one is a UserError before
# ultralytics would try to pip-install it. Formats not listed need none beyond ultralytics' own requirements.
FORMAT_PACKAGES = {
    "onnx": ("onnx",),
    "openvino": ("openvino",),
    "engine": ("tensorrt",),
    "coreml": ("coremltools",),
    "saved_model": ("tensorflow",),
    "pb": ("tensorflow",),
    "edgetpu": ("tensorflow",),
    "litert": ("tensorflow",),
    "paddle": ("paddle",),
    "mnn": ("MNN",),
    "ncnn": ("ncnn",),
    "executorch": ("executorch",),
}


# Why a format may differ though its file is right. OpenVINO: its CPU plugin computes in bfloat16 by default on CPUs with
# AMX or AVX512-BF16, and ultralytics' predictor (AutoBackend) compiles the model without asking for f32; measured
# here (openvino 2026.4, a Sapphire Rapids-class CPU): raw boxes 21 px apart between the default and
# INFERENCE_PRECISION_HINT=f32, a box corner 0.48 px off after NMS. A `runtime_options` entry in the IR does not
# change that default.
FORMAT_HINTS = {
    "openvino": " (or OpenVINO ran it in bfloat16: its CPU plugin's default on CPUs with AMX or AVX512-BF16, which "
    "ultralytics' predictor keeps; f32 needs INFERENCE_PRECISION_HINT=f32 when compiling the model)"
}


class FormatParityError(UserError):
    """An exported model's detections differ from the project's own inference by more than the tolerance."""

    def __init__(self, fmt: str, path: str | Path, image: str, what: str, difference: float, tolerance: float):
        super().__init__(
            f"export format={fmt} ({path}): {what} differ from the project's inference by {difference:.3g} "
            f"(tolerance {tolerance:.3g}) on image {image}: the file does not compute what the checkpoint does"
            + FORMAT_HINTS.get(fmt, "")
        )
        self.format, self.path, self.image = fmt, Path(path), image
        self.what, self.difference, self.tolerance = what, difference, tolerance


def ultralytics_checkpoint(module, imgsz: int | None = None) -> dict:
    """The checkpoint dict ultralytics' trainer leaves in `weights/best.pt` once training ends
    (`ultralytics.utils.torch_utils.strip_optimizer` over `engine/trainer.py:save_model`), for a trained
    `YoloDetector`: its evaluated weights (the EMA when enabled) as a float32 `DetectionModel` in eval mode,
    class names on the model, `train_args` the default config with `imgsz` (default: the training size),
    `task="detect"` and `model` = the architecture yaml. float32, not ultralytics' half: ultralytics' loader
    casts to float32 anyway, and half storage would round every weight by up to 2⁻¹¹ (relative), so that
    ultralytics' predictions would no longer be the project's float32 ones (the file is twice the size: ~10 MB for
    the nano model). Needs nothing from the project to load: only ultralytics' and torch's classes are pickled.
    """
    from ultralytics import __version__
    from ultralytics.utils import DEFAULT_CFG_DICT, DEFAULT_CFG_KEYS

    net = copy.deepcopy(module.eval_net).float().eval()
    net.criterion = None  # the loss holds training state only, as ultralytics strips it
    for parameter in net.parameters():
        parameter.requires_grad = False
    given = getattr(net, "args", None) or {}  # build_model's config (loss gains), a namespace or a dict
    trained = {k: v for k, v in (given if isinstance(given, dict) else vars(given)).items() if k in DEFAULT_CFG_KEYS}
    args = {
        **DEFAULT_CFG_DICT,
        **trained,
        "task": "detect",
        "mode": "train",
        "model": str(module.hparams.arch),
        "imgsz": int(imgsz or module.hparams.imgsz),
    }
    net.args = dict(args)
    net.task = "detect"
    return {
        "date": datetime.now().astimezone().isoformat(),
        "version": __version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": net,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "scaler": None,
        "stopper": None,
        "train_args": {k: v for k, v in args.items() if k in DEFAULT_CFG_KEYS},
    }


def write_ultralytics_checkpoint(module, path: str | Path, imgsz: int | None = None) -> Path:
    """Write `ultralytics_checkpoint(module, imgsz)` to `path` (a `.pt` name: ultralytics checks the suffix),
    atomically (`core.files.atomic_write`). The file is a pickle with code, for ultralytics' tools only: this
    project never reads it with torch.load. Returns `path`."""
    path = Path(path)
    if path.suffix != CHECKPOINT_SUFFIX:
        raise UserError(f"{path}: an ultralytics checkpoint must end in {CHECKPOINT_SUFFIX}")
    checkpoint = ultralytics_checkpoint(module, imgsz)
    with atomic_write(path) as handle:
        torch.save(checkpoint, handle)
    return path


def export_formats() -> list[str]:
    """The `format=` values of the installed ultralytics exporter (`ultralytics.engine.exporter.export_formats`)."""
    from ultralytics.engine.exporter import export_formats as table

    return [name for name in table()["Argument"] if name != "-"]


def export(checkpoint_pt: str | Path, fmt: str, imgsz: int, device: str = "cpu", key: str = "formats") -> Path:
    """`YOLO(checkpoint_pt).export(format=fmt, imgsz=imgsz)`: the exported file or folder, beside the `.pt`
    (named by ultralytics: `<stem>.onnx`, `<stem>.torchscript`, `<stem>_openvino_model/`, ...).

    UserError naming `key` for a format the exporter does not offer, or one whose Python package is not installed
    (nothing is installed at run time)."""
    import importlib.util

    offline.disable_ultralytics_integrations()
    from ultralytics import YOLO

    if fmt not in export_formats():
        raise UserError(
            f"{key}: {fmt!r} is not an ultralytics export format; the installed exporter offers {export_formats()}"
        )
    missing = [name for name in FORMAT_PACKAGES.get(fmt, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"{key}: format {fmt} needs the Python package {missing[0]!r}, which is not installed")
    try:
        return Path(YOLO(str(checkpoint_pt), task="detect").export(format=fmt, imgsz=imgsz, device=device))
    except ModuleNotFoundError as exc:  # an exporter's optional dependency not in FORMAT_PACKAGES
        raise UserError(f"{key}: format {fmt} needs the Python package {exc.name!r}, which is not installed") from exc


def ultralytics_detect(
    model_path: str | Path, images: Sequence[np.ndarray], imgsz: int, conf: float, iou: float, device: str = "cpu"
) -> list[np.ndarray]:
    """Detections per RGB image by ultralytics' predictor on any model file it reads (`.pt` or an export), as
    (N, 6) arrays `x0, y0, x1, y1, conf, class` in the image's pixels: `Results.boxes.data`.

    `rect=False`: letterboxed to the full imgsz×imgsz square, as the project's `detect` does (ultralytics' own
    `predict` default pads a PyTorch model's input only to a multiple of the stride, another input)."""
    offline.disable_ultralytics_integrations()
    from ultralytics import YOLO

    model = YOLO(str(model_path), task="detect")
    results = []
    for rgb in images:
        bgr = swap_red_blue(rgb)  # ultralytics reads numpy arrays as OpenCV's BGR
        (result,) = model.predict(bgr, imgsz=imgsz, conf=conf, iou=iou, rect=False, device=device, verbose=False)
        results.append(result.boxes.data.cpu().numpy().astype(np.float64))
    return results


def compare_detections(
    expected: np.ndarray,
    got: np.ndarray,
    *,
    conf: float,
    fmt: str,
    path: str | Path,
    image: str,
    box_tolerance_px: float = BOX_TOLERANCE_PX,
    score_tolerance: float = SCORE_TOLERANCE,
) -> tuple[float, float, int]:
    """Match two images' detections ((N, 6) `x0, y0, x1, y1, conf, class`) one to one and return
    (max |Δ box corner| px, max |Δ conf|, detections compared).

    Detections whose confidence is below `conf + score_tolerance` are left out of both sides first: within the
    tolerance of the NMS threshold, either runtime may keep them. Then each class must hold as many detections on
    both sides; within a class the pairs are the assignment of least total box difference (the Hungarian
    method, `scipy.optimize.linear_sum_assignment`; order of equal scores after NMS is not defined).
    FormatParityError naming `fmt`, `path` and `image` for a different count per class, or a difference above
    `box_tolerance_px` (box corners, image pixels) or `score_tolerance` (confidence)."""
    from scipy.optimize import linear_sum_assignment

    expected = np.asarray(expected, dtype=np.float64).reshape(-1, 6)
    got = np.asarray(got, dtype=np.float64).reshape(-1, 6)
    floor = conf + score_tolerance
    expected, got = expected[expected[:, 4] >= floor], got[got[:, 4] >= floor]
    box_max = score_max = 0.0
    for cls in np.union1d(expected[:, 5], got[:, 5]):
        mine, theirs = expected[expected[:, 5] == cls], got[got[:, 5] == cls]
        if len(mine) != len(theirs):
            raise FormatParityError(
                fmt,
                path,
                image,
                f"the detection counts of class {int(cls)} at conf ≥ {floor:.4g} (project {len(mine)}, export {len(theirs)})",
                abs(len(mine) - len(theirs)),
                0,
            )
        cost = np.abs(mine[:, None, :4] - theirs[None, :, :4]).max(axis=2)
        rows, cols = linear_sum_assignment(cost)
        box_max = max(box_max, float(cost[rows, cols].max()))
        score_max = max(score_max, float(np.abs(mine[rows, 4] - theirs[cols, 4]).max()))
    if not box_max <= box_tolerance_px:
        raise FormatParityError(fmt, path, image, "the box corners (px)", box_max, box_tolerance_px)
    if not score_max <= score_tolerance:
        raise FormatParityError(fmt, path, image, "the confidences", score_max, score_tolerance)
    return box_max, score_max, len(expected)
