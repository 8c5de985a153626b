"""ONNX export of a trained YOLO detector, checked against PyTorch with ONNX Runtime on a fixed image."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from core.errors import UserError
from lightning_modules.yolo_detector import letterbox_batch, load_detector, postprocess

BOX_TOLERANCE_PX = 1.0  # largest allowed difference of a box corner between PyTorch and ONNX Runtime
OUTPUT_TOLERANCE = 1e-3  # largest allowed difference of a raw output, relative to the output's range


class _Predictions(nn.Module):
    """The detection output alone (boxes xywh in input pixels + class scores), as ultralytics' exporter emits it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[0]


def export_onnx(checkpoint_path: str | Path, out_path: str | Path, imgsz: int | None = None, opset: int = 17,
                key: str = "CKPT") -> dict:
    """Write `out_path` (input `images` N×3×imgsz×imgsz in [0, 1], output `output0` N×(4+classes)×anchors) and check it.

    Returns the class names, image size, and the parity check (raises when ONNX Runtime disagrees with PyTorch).
    The checkpoint is read as data only (`load_detector`); `key` names it in error messages.
    """
    module = load_detector(checkpoint_path, key=key)
    net = module.eval_net.eval()
    imgsz = int(imgsz or module.hparams.imgsz)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(_Predictions(net).eval(), torch.zeros(1, 3, imgsz, imgsz), str(out_path), dynamo=False,
                      opset_version=opset, input_names=["images"], output_names=["output0"],
                      dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}})
    parity = check_parity(net, out_path, imgsz)
    return {"path": str(out_path), "imgsz": imgsz, "names": list(module.names), "parity": parity}


def parity_image() -> np.ndarray:
    """The fixed check image: skimage's astronaut photograph (a real face that ships with the package)."""
    from datamodules.synthetic.faces import real_face_photos

    return real_face_photos()[0].rgb


def onnx_session(path: str | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_detect(session, images: Sequence[np.ndarray], imgsz: int, conf: float = 0.25, iou: float = 0.45) -> list[np.ndarray]:
    """The same detections as `yolo_detector.detect`, with the forward pass in ONNX Runtime."""
    batch, shapes = letterbox_batch(images, imgsz)
    raw = session.run(None, {"images": batch.numpy()})[0]
    return postprocess(torch.from_numpy(raw), batch.shape[2:], shapes, conf, iou)


@torch.no_grad()
def check_parity(net: nn.Module, onnx_path: str | Path, imgsz: int, conf: float = 0.05) -> dict:
    """Raw outputs and the boxes after NMS on `parity_image()`, PyTorch vs ONNX Runtime."""
    image = parity_image()
    batch, shapes = letterbox_batch([image], imgsz)
    torch_raw = net(batch)[0]
    onnx_raw = torch.from_numpy(onnx_session(onnx_path).run(None, {"images": batch.numpy()})[0])
    scale = float(torch_raw.abs().max().clamp(min=1.0))
    output_diff = float((torch_raw - onnx_raw).abs().max()) / scale
    torch_boxes = postprocess(torch_raw, batch.shape[2:], shapes, conf, 0.45)[0]
    onnx_boxes = postprocess(onnx_raw, batch.shape[2:], shapes, conf, 0.45)[0]
    same_count = len(torch_boxes) == len(onnx_boxes)
    box_diff = float(np.abs(torch_boxes[:, :4] - onnx_boxes[:, :4]).max()) if same_count and len(torch_boxes) else 0.0
    result = {"output_max_rel_diff": output_diff, "boxes_torch": len(torch_boxes), "boxes_onnx": len(onnx_boxes),
              "box_max_diff_px": box_diff, "conf": conf}
    if output_diff > OUTPUT_TOLERANCE or not same_count or box_diff > BOX_TOLERANCE_PX:
        raise UserError(f"ONNX export {onnx_path} disagrees with PyTorch on the check image: {result}")
    return result
