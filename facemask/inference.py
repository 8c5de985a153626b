"""A trained YOLO detector on images: the checkpoint loaded as data, ultralytics' letterbox, one forward pass,
ultralytics' NMS and box rescaling. Used by predict-facemask, eval-facemask, the ONNX export (`facemask.export`, whose
`onnx_detect` runs the same steps around ONNX Runtime) and the benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from core.checkpoints import load_module
from core.errors import UserError

if TYPE_CHECKING:
    from facemask.detector import YoloDetector

TRAINED_BY = "make yolo-facemask"  # the make target that writes the checkpoints these helpers read
TASK_NAME = "yolo_facemask"  # its runs' folder under paths.log_dir


def load_detector(checkpoint_path: str | Path, device: str = "cpu", key: str = "CKPT") -> YoloDetector:
    """A trained YoloDetector from a Lightning checkpoint, in eval mode (its pretrained file is not re-read).

    Read by `core.checkpoints` (data only); UserError, its message starting with `key=`, for a missing file, one
    that is refused, or one not written by YoloDetector."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise UserError(f"{key}={path}: checkpoint not found — `{TRAINED_BY}` writes one")
    # imported here: the LightningModule brings pytorch_lightning (3 s of imports), which a monitor call that
    # finds its ONNX export beside the checkpoint (facemask.export.runtime_model) never needs
    from facemask.detector import YoloDetector

    module = load_module(
        YoloDetector, path, key=key, map_location=device, pretrained=None
    )  # its weights are in the checkpoint
    return module.eval()


def fused_copy(module: YoloDetector) -> nn.Module:
    """A copy of the module's evaluated weights (`eval_net`: the EMA when training kept one) with each BatchNorm
    folded into its convolution (ultralytics' `fuse`, as its predictor runs a model), in eval mode."""
    import copy

    return copy.deepcopy(module.eval_net).fuse(verbose=False).eval()


@torch.inference_mode()
def detect(
    net: nn.Module,
    images: Sequence[np.ndarray],
    imgsz: int,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    rect: bool = False,
) -> list[np.ndarray]:
    """Detections per RGB image as (N, 6) arrays `x0, y0, x1, y1, conf, class` in the image's pixels:
    ultralytics' letterbox, NMS and box rescaling around one forward pass. `rect`: see `letterbox_batch`."""
    batch, shapes = letterbox_batch(images, imgsz, rect)
    device = next(net.parameters()).device
    preds = net(batch.to(device))
    return postprocess(preds, batch.shape[2:], shapes, conf, iou, max_det)


def letterbox_batch(
    images: Sequence[np.ndarray], imgsz: int, rect: bool = False
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """RGB uint8 images (H, W, 3) → one float batch (B, 3, h, w) in [0, 1] and the images' (H, W): each scaled to fit
    imgsz×imgsz and padded (ultralytics' LetterBox) to that square, or, with `rect` and images of one shape, only to
    the next multiple of the stride (32), as `yolo predict` does: a 640×360 frame at 320 px is 320×192, 40 % fewer
    pixels than the square. A fixed-shape export (ONNX) needs the square."""
    from ultralytics.data.augment import LetterBox

    auto = rect and len({image.shape[:2] for image in images}) == 1
    box = LetterBox((imgsz, imgsz), auto=auto, stride=32)
    batch = np.stack([box(image=image) for image in images])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(255), [image.shape[:2] for image in images]


def postprocess(
    preds, input_hw, shapes: list[tuple[int, int]], conf: float, iou: float, max_det: int = 300
) -> list[np.ndarray]:
    """ultralytics' NMS on raw outputs (PyTorch or ONNX Runtime), boxes scaled back to each original image."""
    from ultralytics.utils import nms, ops

    out = nms.non_max_suppression(
        torch.as_tensor(preds[0] if isinstance(preds, (tuple, list)) else preds), conf, iou, max_det=max_det
    )
    results = []
    for det, shape in zip(out, shapes):
        det = det[:, :6].clone()
        det[:, :4] = ops.scale_boxes(tuple(input_hw), det[:, :4], shape)
        results.append(det.cpu().numpy())
    return results
