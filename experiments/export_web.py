"""Export the trained models for the browser playground: `python experiments/export_web.py [checkpoints.<task>=file]`.

Each model is exported to ONNX and checked against PyTorch on fixed inputs by its own module's `export_onnx`
(one interface and one manifest entry: `lightning_modules.onnx_export`); web/public/models/manifest.json tells
the page what each file expects. Each task's checkpoint is `checkpoints.<task>` or the newest of its runs
(`core.checkpoints.find_checkpoint`). A task with no checkpoint yet is listed under "missing" with the command
that trains it, and its pane says so; a checkpoint that cannot run in the page (NotExportable) too, with why and
the command that trains one that can. Next to the models, `examples/` holds the built-in images the page's "Try the
built-in example" buttons load (`write_examples`). The manifest's "monitor" carries the tracker and alert settings of
the face-mask pane's live view, those of `make monitor-facemask` (`monitor_settings`), so the page follows the same
rules without numbers of its own.

The recognise pane has two kinds of face model (the entry's `face_model`): a "classifier" (VGG16 backbone + head,
softmax over the identities) or, when the face classifier's backbone is dlib's ResNet (the default), a "descriptor":
dlib's 128-d descriptor network ported to ONNX (`lightning_modules.dlib_descriptor_onnx`) with a gallery of one mean
descriptor per identity and dlib's distance tolerance, as `make recognize` names faces (`descriptor_gallery`).
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from core.checkpoints import NoCheckpoint, find_checkpoint
from core.errors import UserError
from core.tracking import log_tool_run
from experiments import log, user_errors
from lightning_modules.onnx_export import Exporter, NotExportable

MANIFEST = "manifest.json"
EXAMPLES = "examples"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


KINDS = ("generator", "facemask", "faces")
DLIB_BACKBONE = "dlib_resnet"


def exporter(kind: str, cfg: DictConfig) -> Exporter:
    """The `export_onnx` of the module that owns the kind (`lightning_modules.onnx_export.Exporter`), imported on
    use: ONNX Runtime and the model code load only when a checkpoint is exported."""
    if kind == "generator":
        from lightning_modules.dcgan_onnx import export_onnx

        return export_onnx
    if kind == "facemask":
        from lightning_modules.yolo_export import export_onnx

        return functools.partial(export_onnx, imgsz=cfg.imgsz)  # the browser's input size
    return export_faces


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


def export_faces(checkpoint_path: str | Path, out_path: str | Path, *, key: str = "CKPT") -> dict:
    """The face model's manifest entry: the classifier's ONNX (`lightning_modules.face_classifier.export_onnx`), or,
    when the checkpoint's backbone is dlib's ResNet, dlib's descriptor network (`dlib_descriptor_onnx.export_onnx`),
    which needs no trained weights: the checkpoint gives its identities and the crops' margin (its hyperparameters,
    read as data only; UserError, starting with `key=`, for a file that is not a checkpoint)."""
    from core.checkpoints import load_checkpoint

    hparams = load_checkpoint(checkpoint_path, key=key).get("hyper_parameters", {})
    if hparams.get("backbone") != DLIB_BACKBONE:
        from lightning_modules.face_classifier import export_onnx

        return export_onnx(checkpoint_path, out_path, key=key)
    from lightning_modules.dlib_descriptor_onnx import export_onnx as export_descriptor

    return {
        **export_descriptor(out_path),
        "class_names": list(hparams.get("class_names") or []),
        "margin": float(hparams.get("margin", 0.0)),
        "identities_from": str(checkpoint_path),
    }


def export_web(cfg: DictConfig) -> dict:
    """Export every task of `cfg.models` into `cfg.out_dir` and write its manifest.json (see the module docstring);
    returns the manifest. UserError for an unknown kind, a `checkpoints.<task>` file that is not there, or a bad
    `examples` setting; ExportParityError (lightning_modules.onnx_export) when ONNX Runtime disagrees with PyTorch."""
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
            # the plain command may train the same unexportable kind again: name the one that exports
            command = spec.get("exportable_command") or spec.command
            manifest["missing"].append({"task": task, "kind": spec.kind, "command": command, "reason": str(reason)})
            continue
        log.info(
            "%s: exported %s from %s, checked against PyTorch: %s", task, entry["file"], checkpoint, entry["parity"]
        )
        if spec.kind == "generator":
            manifest["generators"].append(entry)
        else:
            manifest[spec.kind] = entry
    if manifest["faces"]:
        is_descriptor = manifest["faces"]["output_kind"] == "descriptor"
        manifest["faces"]["face_model"] = "descriptor" if is_descriptor else "classifier"
        if is_descriptor:
            manifest["faces"].update(descriptor_gallery(cfg, manifest, out_dir))
    manifest["examples"] = write_examples(cfg.examples, manifest, out_dir)
    manifest["monitor"] = monitor_settings(Path(cfg.monitor_config))
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


def monitor_settings(path: Path) -> dict:
    """What the face-mask pane's live tracking follows, as the Python monitor does (experiments/monitor_facemask.py):
    {"tracker": ultralytics' bytetrack.yaml settings with the file's `tracker` overrides, "alert_classes",
    "alert_after_s" (seconds), "smooth_frames"} from `path` (conf/monitor_facemask.yaml). UserError when the file
    is missing or a tracker key is unknown."""
    from omegaconf import OmegaConf

    from lightning_modules.yolo_monitor import bytetrack_settings

    if not path.is_file():
        raise UserError(f"monitor_config={path}: file not found")
    monitor = OmegaConf.load(path)  # only plain keys are read: its ${paths...} stay unresolved
    return {
        "tracker": bytetrack_settings(OmegaConf.to_container(monitor.tracker)),
        "alert_classes": list(monitor.alert_classes),
        "alert_after_s": float(monitor.alert_after_s),
        "smooth_frames": int(monitor.smooth_frames),
    }


def descriptor_gallery(cfg: DictConfig, manifest: dict, out_dir: Path) -> dict:
    """The descriptor pane's gallery: for each identity of `manifest["faces"]["class_names"]`, the mean descriptor of
    its first `cfg.descriptor.gallery_images` photos under `cfg.examples.faces_root/<name>/`, each cropped as the page
    crops an upload (`faces.crop.face_square` around the exported face-mask detector's best box at the page's
    default confidence, else the centre square; resized to 150 px) and described by the exported ONNX file. Returns
    {"gallery": [{"name", "descriptor", "images"}], "tolerance", "gallery_crop"}; identities without photos are
    left out (logged). UserError when `cfg.descriptor.gallery_images` < 1."""
    from core.images import read_rgb
    from faces.crop import face_square, square_crop
    from lightning_modules.onnx_export import onnx_session
    from lightning_modules.yolo_export import onnx_detect

    spec, faces, facemask = cfg.descriptor, manifest["faces"], manifest["facemask"]
    if spec.gallery_images < 1:
        raise UserError(f"descriptor.gallery_images={spec.gallery_images}: must be at least 1")
    describe = onnx_session(out_dir / faces["file"])
    detector = onnx_session(out_dir / facemask["file"]) if facemask else None
    root, size = Path(cfg.examples.faces_root), faces["image_size"]
    gallery, boxed, total = [], 0, 0
    for name in faces["class_names"]:
        photos = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: spec.gallery_images]
        if not photos:
            log.warning("no photo of %s under %s: left out of the descriptor gallery", name, root / name)
            continue
        chips = []
        for photo in photos:
            rgb = read_rgb(photo)
            box = None
            if detector is not None:
                found = onnx_detect(
                    detector, [rgb], facemask["image_size"], conf=spec.detector_conf, iou=spec.detector_iou
                )[0]
                box = tuple(float(v) for v in found[0, :4]) if len(found) else None
            boxed += box is not None
            chips.append(square_crop(rgb, face_square(rgb.shape[1], rgb.shape[0], box, faces["margin"]), size))
        total += len(chips)
        batch = np.stack(chips).transpose(0, 3, 1, 2).astype(np.float32)
        descriptors = describe.run([faces["output"]], {faces["input"]: batch})[0]
        gallery.append({"name": name, "descriptor": descriptors.mean(axis=0).tolist(), "images": len(chips)})
    log.info(
        "descriptor gallery: %d identities from %d photos (%d cropped around a detected face)",
        len(gallery),
        total,
        boxed,
    )
    return {
        "gallery": gallery,
        "tolerance": float(spec.tolerance),
        "gallery_crop": "around the face-mask detector's best box" if detector else "the centre square",
    }


def facemask_example(out_path: Path, scenes: int) -> int:
    """Write the scene with the most faces among the first `scenes` of the built-in face-mask set (seed 0, the
    scenes `make yolo-facemask` trains on; the first on a tie) to `out_path` as an RGB PNG (the set's RGBA
    alpha is opaque). Returns its number of faces. UserError when `scenes` < 1."""
    import cv2

    from core.voc import read_voc
    from datamodules.synthetic import make_facemask

    if scenes < 1:
        raise UserError(f"examples.facemask_scenes={scenes}: must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        # The generator is seeded and draws scene after scene: the first `scenes` are those of the full set.
        voc = make_facemask(Path(tmp) / "facemask-voc", seed=0, images=scenes)
        counts = {k: len(read_voc(voc / "annotations" / f"maksssksksss{k}.xml").objects) for k in range(scenes)}
        best = max(counts, key=lambda k: (counts[k], -k))
        image = cv2.imread(str(voc / "images" / f"maksssksksss{best}.png"), cv2.IMREAD_COLOR)  # drops alpha
        out_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out_path), image)
    return counts[best]


def write_examples(cfg: DictConfig, manifest: dict, out_dir: Path) -> dict:
    """`out_dir/examples/`: a built-in face-mask scene when the detector is exported, and one crop per identity of
    the exported face classifier found under `cfg.faces_root/<name>/` (its first image by name; identities with
    no folder there are left out). Returns the manifest's "examples":
    {"facemask": [{"file", "faces"}], "faces": [{"file", "name"}]}, files relative to `out_dir`. UserError when
    `cfg.facemask_scenes` < 1."""
    folder = out_dir / EXAMPLES
    shutil.rmtree(folder, ignore_errors=True)  # stale examples of an earlier export
    examples: dict = {"facemask": [], "faces": []}
    if manifest["facemask"]:
        file = f"{EXAMPLES}/facemask.png"
        examples["facemask"].append({"file": file, "faces": facemask_example(out_dir / file, cfg.facemask_scenes)})
    if manifest["faces"]:
        root = Path(cfg.faces_root)
        for k, name in enumerate(manifest["faces"]["class_names"]):
            crops = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not crops:
                log.info("no example face of %s under %s", name, root / name)
                continue
            # numbered names: identity names may hold characters a URL or file system dislikes
            file = f"{EXAMPLES}/face-{k}{crops[0].suffix.lower()}"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(crops[0], out_dir / file)
            examples["faces"].append({"file": file, "name": name})
    return examples


@hydra.main(version_base="1.3", config_path="../conf", config_name="export_web")
def main(cfg: DictConfig) -> None:
    with user_errors():
        manifest = export_web(cfg)
        print(
            f"exported {len(manifest['generators'])} generator(s), face-mask detector: {'yes' if manifest['facemask'] else 'no'}, "
            f"face model: {manifest['faces']['face_model'] if manifest['faces'] else 'no'} -> {Path(cfg.out_dir) / MANIFEST}"
        )


if __name__ == "__main__":
    main()
