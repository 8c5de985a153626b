"""The face-mask detector for ultralytics' tools: `python -m experiments.export_facemask formats=[onnx,torchscript]
[ckpt=...] [images=<folder>]` (`make export-facemask FORMAT=onnx,torchscript [CKPT=...]`).

Writes, in `out_dir` (default `outputs/export_facemask/<the checkpoint's run folder>/`), `<name>.pt`: an
ultralytics checkpoint as its trainer saves one, which `yolo predict`, `yolo track`, `yolo export` and
`ultralytics.YOLO` take as they are (a pickle with code, as every ultralytics `.pt`: this project never loads it
back with torch.load; see `facemask.ultralytics_checkpoint`), then each of `formats` through
ultralytics' exporter. The `.pt` and every export are run by ultralytics' predictor on the parity images and
compared with the project's own inference (`facemask.inference.detect`) detection by detection: same count per
class, |Δ box corner| ≤ `box_tolerance_px` (image pixels), |Δ confidence| ≤ `score_tolerance`; any difference
above is a FormatParityError naming the format and the image. Prints a table and, as its last line, one JSON
object `{"formats": {format: {"file", "max_box_px", "max_score", "images", "detections"}}}` (also written to
`export.json`), and logs it to MLflow (experiment `export_facemask`).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from core.checkpoints import tool_checkpoint
from core.errors import UserError
from core.files import atomic_write
from core.images import UnreadableImage, find_images, read_rgb
from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from facemask.export import PT_FORMAT, ParityCheck, ultralytics_exports
from facemask.inference import TASK_NAME, TRAINED_BY, load_detector

RESULT_NAME = "export.json"


def formats_of(value) -> list[str]:
    """`formats` as a list of format names: a list, or one comma-separated string (`make ... FORMAT=onnx,torchscript`)."""
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else str(value or "").split(",")
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    return list(dict.fromkeys(name for name in names if name != PT_FORMAT))  # the .pt is always written


def run_folder(ckpt: Path) -> str:
    """The run a checkpoint belongs to: `logs/yolo_facemask/runs/<run>/checkpoints/x.ckpt` → `<run>`; a file
    elsewhere → its stem."""
    return ckpt.parent.parent.name if ckpt.parent.name == "checkpoints" else ckpt.stem


def parity_images(cfg: DictConfig) -> list[tuple[str, np.ndarray]]:
    """(name relative to the folder, RGB image) for the first `max_images` images of `images` (default: the
    built-in synthetic face-mask images). UserError when the folder is missing or holds no readable image."""
    folder = Path(cfg.images) if cfg.images else instantiate(cfg.builtin) / "images"
    if not folder.is_dir():
        raise UserError(f"images={folder}: folder not found — pass images=<folder of images>")
    paths = sorted(find_images(folder))
    if cfg.max_images is not None:
        paths = paths[: int(cfg.max_images)]
    images = []
    for path in paths:
        try:
            images.append((str(path.relative_to(folder)), read_rgb(path)))
        except UnreadableImage as exc:
            log.warning("skipped unreadable image %s", exc)
    if not images:
        raise UserError(f"images={folder}: no readable image")
    return images


def export_facemask(cfg: DictConfig) -> dict:
    formats = formats_of(cfg.formats)
    ckpt = tool_checkpoint(cfg, TASK_NAME, TRAINED_BY, key="ckpt")
    module = load_detector(ckpt, key="ckpt")
    imgsz = int(cfg.imgsz or module.hparams.imgsz)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path(cfg.out_root) / run_folder(ckpt)
    check = ParityCheck(imgsz, cfg.conf, cfg.iou, cfg.device, cfg.box_tolerance_px, cfg.score_tolerance)
    parities = ultralytics_exports(module, parity_images(cfg), out_dir / f"{cfg.name}.pt", formats, check)
    result = {"formats": {fmt: parity.row() for fmt, parity in parities.items()}}
    settings = {
        "checkpoint": str(ckpt),
        "imgsz": imgsz,
        "conf": cfg.conf,
        "iou": cfg.iou,
        "box_tolerance_px": cfg.box_tolerance_px,
        "score_tolerance": cfg.score_tolerance,
    }
    with atomic_write(out_dir / RESULT_NAME, "w") as handle:
        json.dump({**result, **settings}, handle, indent=2)
    print_table(result["formats"])
    log_tool_run(
        cfg,
        run_folder(ckpt),
        params={"checkpoint": str(ckpt), "formats": ",".join(parities), "imgsz": imgsz, "conf": cfg.conf},
        metrics={
            f"parity/{fmt}/{key}": row[key]
            for fmt, row in result["formats"].items()
            for key in ("max_box_px", "max_score", "detections")
        },
        files=[out_dir / RESULT_NAME],
    )
    log.info("exported %s as %s -> %s", ckpt, ", ".join(parities), out_dir)
    print(json.dumps(result), flush=True)
    return result


def print_table(rows: dict[str, dict]) -> None:
    """One line per format: its largest box and confidence differences, images, boxes compared and file."""
    print(f"{'format':<14}{'max |Δbox| px':>15}{'max |Δconf|':>13}{'images':>8}{'boxes':>7}  file", flush=True)
    for fmt, row in rows.items():
        print(
            f"{fmt:<14}{row['max_box_px']:>15.3g}{row['max_score']:>13.3g}{row['images']:>8}{row['detections']:>7}  "
            f"{row['file']}",
            flush=True,
        )


@hydra.main(version_base="1.3", config_path="../conf", config_name="export_facemask")
def main(cfg: DictConfig) -> None:
    with user_errors():
        export_facemask(cfg)


if __name__ == "__main__":
    main()
