"""Export the trained models for the browser playground: `python experiments/export_web.py [checkpoints.<task>=file]`.

Each model is exported to ONNX and checked against PyTorch on fixed inputs by its own module's `export_onnx`
(one interface and one manifest entry: `lightning_modules.onnx_export`); web/public/models/manifest.json tells
the page what each file expects. Each task's checkpoint is `checkpoints.<task>` or the newest of its runs
(`core.checkpoints.find_checkpoint`). A task with no checkpoint yet is listed under "missing" with the command
that trains it, and its pane says so; a checkpoint that cannot run in the page (NotExportable) too, with why.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from core.checkpoints import NoCheckpoint, find_checkpoint
from core.errors import UserError
from core.tracking import log_tool_run
from experiments import log, user_errors
from lightning_modules.onnx_export import Exporter, NotExportable

MANIFEST = "manifest.json"


KINDS = ("generator", "facemask", "faces")


def exporter(kind: str, cfg: DictConfig) -> Exporter:
    """The `export_onnx` of the module that owns the kind (`lightning_modules.onnx_export.Exporter`), imported on
    use: ONNX Runtime and the model code load only when a checkpoint is exported."""
    if kind == "generator":
        from lightning_modules.dcgan_onnx import export_onnx

        return export_onnx
    if kind == "facemask":
        from lightning_modules.yolo_export import export_onnx

        return functools.partial(export_onnx, imgsz=cfg.imgsz)  # the browser's input size
    from lightning_modules.face_classifier import export_onnx

    return export_onnx


def checkpoint_for(cfg: DictConfig, task: str, make_target: str) -> Path:
    """`checkpoints.<task>` when given, else the task's newest checkpoint (NoCheckpoint when it has none)."""
    if task in cfg.checkpoints:
        path = Path(cfg.checkpoints[task])
        if not path.is_file():
            raise UserError(f"checkpoints.{task}={path}: file not found")
        return path
    return find_checkpoint(
        cfg.paths.log_dir, task, make_target=make_target, key=f"checkpoints.{task}", tracking_uri=cfg.paths.mlflow_uri
    )


def export_web(cfg: DictConfig) -> dict:
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.onnx"):
        stale.unlink()
    manifest: dict = {"generators": [], "facemask": None, "faces": None, "missing": []}
    for task, spec in cfg.models.items():
        if spec.kind not in KINDS:
            raise UserError(f"models.{task}.kind: {spec.kind!r} is not one of {sorted(KINDS)}")
        try:
            checkpoint = checkpoint_for(cfg, task, spec.command)
        except NoCheckpoint as reason:
            log.warning("%s: %s; its pane stays empty", task, reason)
            manifest["missing"].append({"task": task, "kind": spec.kind, "command": spec.command})
            continue
        try:
            # `key` names the file in errors: the checkpoint is read as data only (core.checkpoints)
            entry = {
                "task": task,
                **exporter(spec.kind, cfg)(checkpoint, out_dir / f"{task}.onnx", key=f"checkpoints.{task}"),
            }
        except NotExportable as reason:
            log.warning("%s: %s not exported: %s", task, checkpoint, reason)
            manifest["missing"].append(
                {"task": task, "kind": spec.kind, "command": spec.command, "reason": str(reason)}
            )
            continue
        log.info(
            "%s: exported %s from %s, checked against PyTorch: %s", task, entry["file"], checkpoint, entry["parity"]
        )
        if spec.kind == "generator":
            manifest["generators"].append(entry)
        else:
            manifest[spec.kind] = entry
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))

    exported = [*manifest["generators"], *(manifest[k] for k in ("facemask", "faces") if manifest[k])]
    log_tool_run(
        cfg,
        dicts={MANIFEST: manifest},
        metrics={
            f"parity/{e['task']}/{k}": v
            for e in exported
            for k, v in e.get("parity", {}).items()
            if isinstance(v, (int, float))
        },
    )
    return manifest


@hydra.main(version_base="1.3", config_path="../conf", config_name="export_web")
def main(cfg: DictConfig) -> None:
    with user_errors():
        manifest = export_web(cfg)
        print(
            f"exported {len(manifest['generators'])} generator(s), face-mask detector: {'yes' if manifest['facemask'] else 'no'}, "
            f"face classifier: {'yes' if manifest['faces'] else 'no'} -> {Path(cfg.out_dir) / MANIFEST}"
        )


if __name__ == "__main__":
    main()
