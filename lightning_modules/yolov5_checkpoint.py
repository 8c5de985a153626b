"""Pretrained weights for an ultralytics DetectionModel from a local file, never from a hub.

Two kinds of file:
- a checkpoint of the original ultralytics/yolov5 repository (e.g. the official COCO `yolov5n.pt`): a pickled
  `models.yolo.Model` that `YOLO()` refuses. It is read with `torch.load(weights_only=True)` and stand-in classes
  for its seven yolov5 class names, so no pickled code runs and no yolov5 code is needed
  (../shared/data/weights/SOURCE.md);
- ultralytics' own checkpoints (`yolov8n.pt`, `yolo11n.pt`, `yolov5nu.pt`…), read with ultralytics' loader.

Either way every tensor whose name and shape match is copied (ultralytics' `intersect_dicts`), the count is
logged, and a file of which almost nothing matches is refused: it was made for another architecture.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from core.errors import UserError

log = logging.getLogger(__name__)

YOLOV5_CLASSES = ("models.yolo.Model", "models.yolo.Detect", "models.common.Conv", "models.common.C3",
                  "models.common.Bottleneck", "models.common.SPPF", "models.common.Concat")
TORCH_MODULES = (nn.SiLU, nn.Sequential, nn.MaxPool2d, nn.ModuleList, nn.BatchNorm2d, nn.Upsample, nn.Conv2d)
MIN_MATCH = 0.5  # share of the target model's tensors that must match; yolov5n.pt into yolov5n.yaml: 342/427


def _stand_in(qualified_name: str) -> type:
    module, name = qualified_name.rsplit(".", 1)
    return type(name, (nn.Module,), {"__module__": module})


def read_yolov5_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The float32 state_dict of an original-yolov5 checkpoint, loaded without executing pickled code."""
    allowed = [_stand_in(name) for name in YOLOV5_CLASSES] + list(TORCH_MODULES)
    with torch.serialization.safe_globals(allowed):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = checkpoint.get("ema") or checkpoint["model"]
    return {k: v.float() for k, v in model.state_dict().items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Any supported weights file as a state_dict; a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"pretrained weights not found: {path} — put the file there (the official yolov5n.pt from the "
            "ultralytics/yolov5 v7.0 release, or ultralytics' yolov8n.pt / yolo11n.pt), point model.pretrained at it, "
            "or set model.pretrained=null to train from scratch (README, section 'Face-mask detection (YOLO)')"
        )
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as exc:  # noqa: BLE001 — any failure to open the zip means the file is not a torch checkpoint
        raise UserError(f"{path} is not a PyTorch checkpoint ({exc}); re-download it") from exc
    if "models.yolo.Model" in unsafe:
        return read_yolov5_state_dict(path)
    if any(name.startswith("ultralytics.") for name in unsafe):
        from ultralytics.nn.tasks import load_checkpoint

        model, _ = load_checkpoint(str(path), device="cpu")
        return {k: v.float() for k, v in model.state_dict().items()}
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds neither a yolov5/ultralytics checkpoint nor a state_dict of tensors")
    return {k.removeprefix("net."): v.float() for k, v in state.items()}


def load_pretrained(model: nn.Module, path: str | Path, min_match: float = MIN_MATCH) -> int:
    """Copy every matching tensor of `path` into `model`; return how many. Refuses a file for another architecture."""
    from ultralytics.utils.torch_utils import intersect_dicts

    source = read_state_dict(path)
    target = model.state_dict()
    matched = intersect_dicts(source, target)
    if len(matched) < min_match * len(target):
        raise UserError(
            f"{path} matches only {len(matched)} of the model's {len(target)} tensors by name and shape: it was made for "
            f"another architecture than model.arch={getattr(model, 'yaml', {}).get('yaml_file', '?')} "
            "(e.g. yolov5s weights into yolov5n); set model.arch to the file's architecture or model.pretrained=null"
        )
    model.load_state_dict(matched, strict=False)
    log.info("transferred %d of %d tensors from %s (the rest start fresh)", len(matched), len(target), path)
    return len(matched)
