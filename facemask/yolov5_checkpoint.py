"""Pretrained weights for an ultralytics DetectionModel from a local file, never from a hub.

Two kinds of file, both pickled models, both read by the one safe loader (`core.checkpoints.load_checkpoint`,
`torch.load(weights_only=True)`) with an allow-list for this reader alone: harmless stand-in classes (empty
`nn.Module`s) under the model's own class names, and torch's layer classes. No pickled code runs, no yolov5 or
ultralytics code is needed, and a file asking for any other import is refused with its name:
- a checkpoint of the original ultralytics/yolov5 repository (e.g. the official COCO `yolov5n.pt`): a pickled
  `models.yolo.Model` that `YOLO()` refuses; stand-ins for its seven yolov5 class names
  (../shared/data/weights/SOURCE.md);
- ultralytics' own checkpoints (`yolov8n.pt`, `yolo11n.pt`, `yolov5nu.pt`…): stand-ins for each `ultralytics.*`
  class the file names (ultralytics' own loader would unpickle with weights_only=False).

Either way every tensor whose name and shape match is copied (ultralytics' `intersect_dicts`), the count is
logged, and a file of which almost nothing matches is refused: it was made for another architecture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn

from core.checkpoints import load_checkpoint
from core.errors import UserError

log = logging.getLogger(__name__)

YOLOV5_CLASSES = (
    "models.yolo.Model",
    "models.yolo.Detect",
    "models.common.Conv",
    "models.common.C3",
    "models.common.Bottleneck",
    "models.common.SPPF",
    "models.common.Concat",
)
TORCH_MODULES = (nn.SiLU, nn.Sequential, nn.MaxPool2d, nn.ModuleList, nn.BatchNorm2d, nn.Upsample, nn.Conv2d)
MIN_MATCH = 0.5  # share of the target model's tensors that must match; yolov5n.pt into yolov5n.yaml: 342/427


def _stand_in(qualified_name: str) -> type:
    module, name = qualified_name.rsplit(".", 1)
    return type(name, (nn.Module,), {"__module__": module})


def _torch_layer(qualified_name: str) -> type | None:
    """torch's own layer class of that name (`torch.nn.modules.conv.Conv2d`), looked up without importing anything."""
    module, _, name = qualified_name.rpartition(".")
    cls = getattr(nn, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == module else None


def read_yolov5_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The float32 state_dict of an original-yolov5 checkpoint, loaded without executing pickled code."""
    return _read_pickled_model(path, [_stand_in(name) for name in YOLOV5_CLASSES] + list(TORCH_MODULES))


def read_ultralytics_state_dict(path: str | Path, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The float32 state_dict of an ultralytics checkpoint whose pickle names the classes `names`: stand-ins for
    its `ultralytics.*` classes, torch's layer classes for `torch.nn.modules.*`; any other import is refused."""
    allowed = [_stand_in(n) if n.startswith("ultralytics.") else _torch_layer(n) for n in names]
    return _read_pickled_model(path, [cls for cls in allowed if cls is not None])


def _read_pickled_model(path: str | Path, allowed: list[type]) -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(path, key="model.pretrained", allow=allowed)
    model = checkpoint.get("ema") or checkpoint.get("model")
    if not isinstance(model, nn.Module):
        raise UserError(f"model.pretrained={path} holds no pickled model under 'ema' or 'model'")
    return {k: v.float() for k, v in model.state_dict().items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Any supported weights file as a state_dict; a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"pretrained weights not found: {path} — put the file there (the official yolov5n.pt from the "
            "ultralytics/yolov5 v7.0 release, or ultralytics' yolov8n.pt / yolo11n.pt), point model.pretrained at it, "
            "or set model.pretrained=null to train from scratch (docs/facemask.md)"
        )
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as exc:  # noqa: BLE001 — any failure to open the zip means the file is not a torch checkpoint
        raise UserError(f"{path} is not a PyTorch checkpoint ({exc}); re-download it") from exc
    if "models.yolo.Model" in unsafe:
        return read_yolov5_state_dict(path)
    if any(name.startswith("ultralytics.") for name in unsafe):
        return read_ultralytics_state_dict(path, unsafe)
    state = load_checkpoint(path, key="model.pretrained")
    state = state.get("state_dict", state)
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
