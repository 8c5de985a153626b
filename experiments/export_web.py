"""Export the trained models for the browser playground: `python experiments/export_web.py [checkpoints.<task>=file]`.

Each model is exported to ONNX and checked against PyTorch on fixed inputs by its own module's
`export_onnx`; web/public/models/manifest.json tells the page what each file expects. A task with no
checkpoint yet is listed under "missing" with the command that trains it, and its pane says so.
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from core.errors import UserError
from core.tracking import log_tool_run
from experiments import log, user_errors
from experiments.train import newest_checkpoint

MANIFEST = "manifest.json"


class NotExportable(Exception):
    """This checkpoint cannot run in the page; the message says why (it goes to the manifest)."""


def export_generator(checkpoint: Path, out_path: Path, cfg: DictConfig, key: str) -> dict:
    from lightning_modules.dcgan_onnx import export_onnx

    return export_onnx(checkpoint, out_path, key=key)


def export_facemask(checkpoint: Path, out_path: Path, cfg: DictConfig, key: str) -> dict:
    from lightning_modules.yolo_export import export_onnx

    exported = export_onnx(checkpoint, out_path, cfg.imgsz, key=key)
    return {  # the tensors yolo_export names: raw head output, decoded and NMS-ed by the page as by ultralytics
        "file": out_path.name, "input": "images", "output": "output0", "imgsz": exported["imgsz"],
        "class_names": exported["names"], "normalisation": "RGB / 255, letterboxed with grey 114 (ultralytics' LetterBox)",
        "checkpoint": str(checkpoint), "parity": exported["parity"],
    }


def export_faces(checkpoint: Path, out_path: Path, cfg: DictConfig, key: str) -> dict:
    """The page's recognise pane reads: input, output (names of the tensors), image_size, input_scale (factor
    on 0–255 RGB pixels, NCHW), output_kind ("logits" or "probabilities"), class_names, margin (crop margin)."""
    from lightning_modules import face_classifier

    try:
        exported = face_classifier.export_onnx(checkpoint, out_path, key=key)
    except ValueError as reason:  # e.g. the dlib_resnet backbone, which runs in dlib
        raise NotExportable(str(reason)) from reason
    return {"file": out_path.name, "checkpoint": str(checkpoint), **exported}


EXPORTERS = {"generator": export_generator, "facemask": export_facemask, "faces": export_faces}


def checkpoint_for(cfg: DictConfig, task: str) -> Path | None:
    if task in cfg.checkpoints:
        path = Path(cfg.checkpoints[task])
        if not path.is_file():
            raise UserError(f"checkpoints.{task}: no such file {path}")
        return path
    return newest_checkpoint(Path(cfg.paths.log_dir) / task)


def export_web(cfg: DictConfig) -> dict:
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.onnx"):
        stale.unlink()
    manifest: dict = {"generators": [], "facemask": None, "faces": None, "missing": []}
    for task, spec in cfg.models.items():
        if spec.kind not in EXPORTERS:
            raise UserError(f"models.{task}.kind: {spec.kind!r} is not one of {sorted(EXPORTERS)}")
        checkpoint = checkpoint_for(cfg, task)
        if checkpoint is None:
            log.warning("%s: no checkpoint under %s — `%s` trains one; its pane stays empty", task, Path(cfg.paths.log_dir) / task, spec.command)
            manifest["missing"].append({"task": task, "kind": spec.kind, "command": spec.command})
            continue
        try:
            # `key` names the file in errors: the checkpoint is read as data only (core.checkpoints)
            entry = {"task": task, **EXPORTERS[spec.kind](checkpoint, out_dir / f"{task}.onnx", cfg, key=f"checkpoints.{task}")}
        except NotExportable as reason:
            log.warning("%s: not exported: %s", task, reason)
            manifest["missing"].append({"task": task, "kind": spec.kind, "command": spec.command, "reason": str(reason)})
            continue
        log.info("%s: exported %s, checked against PyTorch: %s", task, entry["file"], entry.get("parity"))
        if spec.kind == "generator":
            manifest["generators"].append(entry)
        else:
            manifest[spec.kind] = entry
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))

    exported = [*manifest["generators"], *(manifest[k] for k in ("facemask", "faces") if manifest[k])]
    log_tool_run(cfg, dicts={MANIFEST: manifest},
                 metrics={f"parity/{e['task']}/{k}": v for e in exported for k, v in e.get("parity", {}).items() if isinstance(v, (int, float))})
    return manifest


@hydra.main(version_base="1.3", config_path="../conf", config_name="export_web")
def main(cfg: DictConfig) -> None:
    with user_errors():
        manifest = export_web(cfg)
        print(f"exported {len(manifest['generators'])} generator(s), face-mask detector: {'yes' if manifest['facemask'] else 'no'}, "
              f"face classifier: {'yes' if manifest['faces'] else 'no'} -> {Path(cfg.out_dir) / MANIFEST}")


if __name__ == "__main__":
    main()
