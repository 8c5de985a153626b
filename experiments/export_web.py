"""Export the trained models for the browser playground: `python experiments/export_web.py [checkpoints.<task>=file]`.

Each model is exported to ONNX and checked against PyTorch on fixed inputs by its own module's `export_onnx`
(one interface and one manifest entry: `training.onnx_export`); web/public/models/manifest.json tells
the page what each file expects. Each task's checkpoint is `checkpoints.<task>` or the newest of its runs
(`core.checkpoints.find_checkpoint`). A task with no checkpoint yet is listed under "missing" with the command
that trains it, and its pane says so; a checkpoint that cannot run in the page (NotExportable) too, with why and
the command that trains one that can. Next to the models, `examples/` holds the built-in images the page's "Try the
built-in example" buttons load (`write_examples`). The manifest's "monitor" carries the tracker and alert settings of
the face-mask pane's live view, those of `make monitor-facemask` (`monitor_settings`), so the page follows the same
rules without numbers of its own.

Which checkpoint: `checkpoints.<task>` when given; else the task's registry `champion` (`make register`); else the
run `make report` shows first for the task
(`reporting.report.selected_runs` and `headline_runs`, its SELECTION_RULE: the best finished run of the experiment
by its selection metric, real data and full scale first; sweep trials log to "<task>-sweep" and are no candidates) and that
run's best checkpoint (`core.checkpoints.find_checkpoint` in the run's folder, found by its `mlflow_run_id` file).
Without a store, or when no selected run's folder is on this machine, the task's newest checkpoint. Each entry's
"trained" says what the model learned, from its MLflow run (`training_summary`): the data, epochs, the validation
figure and, for a metric that never moved, "learned": false with the reason the run recorded. The manifest holds
no absolute path: files are relative to the page, provenance paths relative to the repository (`manifest_path`).

The recognise pane has two kinds of face model (the entry's `face_model`): a "classifier" (VGG16 backbone + head,
softmax over the identities) or, when the face classifier's backbone is dlib's ResNet (the default), a "descriptor":
dlib's 128-d descriptor network ported to ONNX (`faces.descriptor_onnx`) with a gallery of one mean
descriptor per gallery photo and the gallery's open-set threshold (`faces.gallery.Gallery.open_set_threshold`),
as `make recognize` names faces (`descriptor_gallery`).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from core import metric_names as names
from core.checkpoints import RUN_ID_FILE, NoCheckpoint, champion_checkpoint, find_checkpoint
from core.errors import UserError
from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from reporting import mlflow_runs
from reporting.report import headline_runs, selected_runs
from training.onnx_export import Exporter, NotExportable

MANIFEST = "manifest.json"
EXAMPLES = "examples"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


KINDS = ("generator", "facemask", "faces")
DLIB_BACKBONE = "dlib_resnet"


def exporter(kind: str, cfg: DictConfig) -> Exporter:
    """The `export_onnx` of the module that owns the kind (`training.onnx_export.Exporter`), imported on
    use: ONNX Runtime and the model code load only when a checkpoint is exported."""
    if kind == "generator":
        from dcgan.onnx import export_onnx

        return export_onnx
    if kind == "facemask":
        from facemask.export import export_onnx

        return functools.partial(export_onnx, imgsz=cfg.imgsz)  # the browser's input size
    return export_faces


def tracking_client(tracking_uri: str):
    """An MlflowClient on the store, or None when it is a local sqlite file that does not exist yet (asking would
    create an empty one) or cannot be opened."""
    import mlflow

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return None
    try:
        return mlflow.MlflowClient(tracking_uri=tracking_uri)
    except Exception as exc:  # noqa: BLE001 — an unreadable store: the checkpoints alone decide
        log.warning("MLflow store %s cannot be read (%s): newest checkpoints, without their runs", tracking_uri, exc)
        return None


def run_folders(log_dir: str | Path, task: str) -> dict[str, Path]:
    """{MLflow run id: run folder} of the task's runs under `log_dir/<task>/` (the `mlflow_run_id` file that
    experiments/train.py writes beside `checkpoints/`)."""
    root = Path(log_dir) / task
    if not root.is_dir():
        return {}
    return {file.read_text().strip(): file.parent for file in sorted(root.rglob(RUN_ID_FILE)) if file.is_file()}


def run_of_checkpoint(client, checkpoint: Path):
    """The MLflow run that wrote `checkpoint` (the `mlflow_run_id` beside its `checkpoints/` folder), or None when
    there is no such file or the store does not hold that run."""
    id_file = checkpoint.parent.parent / RUN_ID_FILE
    if client is None or not id_file.is_file():
        return None
    try:
        return client.get_run(id_file.read_text().strip())
    except Exception:  # noqa: BLE001 — a run this store does not hold (e.g. logged to a tracking server)
        return None


def checkpoint_for(cfg: DictConfig, task: str, make_target: str, client=None) -> tuple[Path, object | None]:
    """(checkpoint, its MLflow run or None) for `task`: `checkpoints.<task>` when given; else the checkpoint of the
    task's registry `champion` (`core.checkpoints.champion_checkpoint`); else the best checkpoint of the first run the report selects for the task (`reporting.report.selected_runs` / `headline_runs`, then its
    other configurations in the report's order) whose folder is under `cfg.paths.log_dir`; else the task's newest
    checkpoint. UserError for a `checkpoints.<task>` file that is not there; NoCheckpoint when the task has none."""
    key = f"checkpoints.{task}"
    if task in cfg.checkpoints:
        path = Path(cfg.checkpoints[task])
        if not path.is_file():
            raise UserError(f"{key}={path}: file not found")
        return path, run_of_checkpoint(client, path)
    champion = champion_checkpoint(cfg.paths.mlflow_uri, cfg.paths.log_dir, [task])
    if champion is not None:
        log.info("%s: exporting %s (%s)", task, champion[0], champion[1])
        return champion[0], run_of_checkpoint(client, champion[0])
    if client is not None:
        selected = selected_runs(client, [task])
        headline = headline_runs(selected)[task]
        folders = run_folders(cfg.paths.log_dir, task)
        for run in selected[task].values():
            folder = folders.get(run.info.run_id)
            if folder is None:
                continue
            try:
                path = find_checkpoint(folder.parent, folder.name, make_target=make_target, key=key)
            except NoCheckpoint:
                continue
            if run is not headline:
                log.warning(
                    "%s: the report's run %s has no checkpoint here; exporting run %s, the next it shows",
                    task,
                    headline.info.run_id,
                    run.info.run_id,
                )
            return path, run
        if selected[task]:
            log.warning("%s: no run the report selects has its checkpoint under %s", task, cfg.paths.log_dir)
    path = find_checkpoint(cfg.paths.log_dir, task, make_target=make_target, key=key, tracking_uri=cfg.paths.mlflow_uri)
    (log.warning if client is not None else log.info)("%s: exporting its newest checkpoint, %s", task, path)
    return path, run_of_checkpoint(client, path)


# The validation figure each kind shows beside its pane: (label, metric key, which value: "last" or "max")
VALIDATION_FIGURE = {
    "generator": ("KID", names.KID, "last"),
    "facemask": ("val mAP50", names.MAP50, "max"),
    "faces": ("val accuracy", names.VAL_ACC, "last"),
}
SYNTHETIC_DATA = "built-in synthetic"
DATA_ROOT_PARAMS = ("data.root", "data.voc_root")  # the folder a run's data came from (conf/data/*.yaml)


def manifest_path(path: str | Path) -> str:
    """A provenance path as the manifest may hold it: a file of the virtual environment (dlib's weights shipped with
    a package) by its name, any other relative to the repository (`reporting.mlflow_runs.repo_relative`: a path
    elsewhere becomes `<outside the repository>/<name>`)."""
    p = Path(path)
    if p.is_absolute() and p.is_relative_to(sys.prefix):
        return p.name
    return mlflow_runs.repo_relative(p)


def metric_values(client, run, key: str) -> list[float]:
    """Every logged value of `key` in step order (empty when the run never logged it)."""
    return mlflow_runs.metric_history(client, run.info.run_id, key)["value"].tolist()


def training_summary(client, run, kind: str, checkpoint: Path, classes: int = 0) -> dict:
    """What the model of `checkpoint` learned, from its MLflow `run` (None: the store does not hold it):
    {"run_id", "run_name", "experiment", "configuration", "scale", "data" ("built-in synthetic" or the real folder
    relative to the repository), "epochs", "metric": {"name", "key", "value", "epoch"} (VALIDATION_FIGURE: the
    last KID, the best val mAP50 and its 1-based epoch, the last val accuracy; None when never logged), "learned",
    "reason", "checkpoint"}.

    "learned" is False when the run did not learn: the report's verdict (`reporting.mlflow_runs.learning_verdict`:
    its monitored metric never moved), or a validation figure that never rose above its floor (a detector's mAP50
    of 0; a classifier's chance accuracy, 1 / `classes`), which one validation already shows; True when the figure
    was validated twice or more and the verdict found it moving; None when that cannot be told. "reason" says why,
    from the run's own record (its metric history and pretrained.json: how the model started); "scale" and
    "epochs" say how big the run was."""
    summary: dict = {"checkpoint": manifest_path(checkpoint)}
    if run is None:
        return {**summary, "run_id": None}
    data = mlflow_runs.data_kind(run)
    root = next((v for k in DATA_ROOT_PARAMS if (v := mlflow_runs.run_param(run, k)) is not None), None)
    caps = mlflow_runs.demo_scale(run)
    values = metric_values(client, run, VALIDATION_FIGURE[kind][1])
    learned, reason = learning(client, run, kind, values, classes)
    return {
        **summary,
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment": client.get_experiment(run.info.experiment_id).name,
        "configuration": mlflow_runs.configuration(client, run).label,
        "scale": "full" if caps is None else f"demo-scale ({caps})",
        "data": SYNTHETIC_DATA if data == mlflow_runs.SYNTHETIC else manifest_path(root) if root else data,
        # the most epochs logged (the test split's figures come with best.ckpt's own, earlier epoch)
        "epochs": int(max(metric_values(client, run, names.EPOCH), default=-1)) + 1,
        "metric": validation_figure(kind, values),
        "learned": learned,
        "reason": reason,
    }


def validation_figure(kind: str, values: list[float]) -> dict | None:
    """The figure the page shows for a `kind` model from its validation history `values` (VALIDATION_FIGURE: the best
    value with its 1-based epoch, or the last value): {"name", "key", "value", "epoch"}; None when never logged."""
    if not values:
        return None
    label, key, which = VALIDATION_FIGURE[kind]
    best = int(np.argmax(values)) if which == "max" else len(values) - 1
    return {"name": label, "key": key, "value": float(values[best]), "epoch": best + 1 if which == "max" else None}


def learning(client, run, kind: str, values: list[float], classes: int = 0) -> tuple[bool | None, str | None]:
    """(learned, reason) of `training_summary`: False with the report's verdict, or with the floor the validation
    figure `values` never rose above (a detector's mAP50 of 0, a classifier's chance 1 / `classes`) and how the model
    started; True for a figure validated twice or more that moved; (None, None) when that cannot be told."""
    verdict = mlflow_runs.learning_verdict(client, run)
    if verdict:
        return False, verdict.removeprefix("did not learn: ")
    label = VALIDATION_FIGURE[kind][0]
    floor = {"facemask": 0.0, "faces": 1 / classes if classes else None}.get(kind)
    if values and floor is not None and max(values) <= floor:
        stuck = f"{label} never above {'chance, ' if kind == 'faces' else ''}{floor:.4g} ({len(values)} validation(s))"
        return False, "; ".join(filter(None, [stuck, mlflow_runs.start_reason(client, run)]))
    return (True, None) if len(values) >= 2 else (None, None)


def export_faces(checkpoint_path: str | Path, out_path: str | Path, *, key: str = "CKPT") -> dict:
    """The face model's manifest entry: the classifier's ONNX (`faces.classifier.export_onnx`), or,
    when the checkpoint's backbone is dlib's ResNet, dlib's descriptor network (`faces.descriptor_onnx.export_onnx`),
    which needs no trained weights: the checkpoint gives its identities and the crops' margin (its hyperparameters,
    read as data only; UserError, starting with `key=`, for a file that is not a checkpoint)."""
    from core.checkpoints import load_checkpoint

    hparams = load_checkpoint(checkpoint_path, key=key).get("hyper_parameters", {})
    if hparams.get("backbone") != DLIB_BACKBONE:
        from faces.classifier import export_onnx

        return export_onnx(checkpoint_path, out_path, key=key)
    from faces.descriptor_onnx import export_onnx as export_descriptor

    return {
        **export_descriptor(out_path),
        "class_names": list(hparams.get("class_names") or []),
        "margin": float(hparams.get("margin", 0.0)),
        "identities_from": manifest_path(checkpoint_path),
    }


def export_web(cfg: DictConfig) -> dict:
    """Export every task of `cfg.models` into `cfg.out_dir` and write its manifest.json (see the module docstring);
    returns the manifest. UserError for an unknown kind, a `checkpoints.<task>` file that is not there, or a bad
    `examples` setting; ExportParityError (training.onnx_export) when ONNX Runtime disagrees with PyTorch."""
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.onnx"):
        stale.unlink()
    manifest: dict = {"generators": [], "facemask": None, "faces": None, "missing": []}
    client = tracking_client(cfg.paths.mlflow_uri)
    for task, spec in cfg.models.items():
        add_task(manifest, cfg, task, spec, out_dir, client)
    if manifest["faces"]:
        add_face_model_settings(cfg, manifest, out_dir)
    manifest["examples"] = write_examples(cfg.examples, manifest, out_dir)
    manifest["monitor"] = monitor_settings(Path(cfg.monitor_config))
    manifest = relative_paths(manifest)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log_parity(cfg, manifest)
    return manifest


def add_task(manifest: dict, cfg: DictConfig, task: str, spec: DictConfig, out_dir: Path, client) -> None:
    """Export `task` (its `cfg.models` entry `spec`) to `out_dir/<task>.onnx` and add its entry to `manifest`
    ("generators", or the kind's own key), with its checkpoint and "trained" record; a task without a checkpoint,
    or whose checkpoint cannot run in the page, goes under "missing" with the command that trains one. UserError
    for an unknown kind or a `checkpoints.<task>` file that is not there."""
    if spec.kind not in KINDS:
        raise UserError(f"models.{task}.kind: {spec.kind!r} is not one of {sorted(KINDS)}")
    try:
        checkpoint, run = checkpoint_for(cfg, task, spec.command, client)
    except NoCheckpoint as reason:
        log.warning("%s: %s; its pane stays empty", task, reason)
        manifest["missing"].append({"task": task, "kind": spec.kind, "command": spec.command})
        return
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
        return
    log.info("%s: exported %s from %s, checked against PyTorch: %s", task, entry["file"], checkpoint, entry["parity"])
    entry["checkpoint"] = manifest_path(entry["checkpoint"])
    entry["trained"] = training_summary(client, run, spec.kind, checkpoint, len(entry.get("class_names") or []))
    if spec.kind == "generator":
        manifest["generators"].append(entry)
    else:
        manifest[spec.kind] = entry


def add_face_model_settings(cfg: DictConfig, manifest: dict, out_dir: Path) -> None:
    """Complete the exported face model's entry `manifest["faces"]`: its "face_model" ("descriptor" or
    "classifier"), where its crops come from (`face_boxes`) and, for dlib's descriptor, the gallery and threshold
    (`descriptor_gallery`) with no validation figure: dlib's network comes trained."""
    faces = manifest["faces"]
    is_descriptor = faces["output_kind"] == "descriptor"
    faces["face_model"] = "descriptor" if is_descriptor else "classifier"
    faces.update(face_boxes(manifest["facemask"]))
    if is_descriptor:
        faces.update(descriptor_gallery(cfg, manifest, out_dir))
        # the run's classifier head, and its accuracy, are not what the pane uses
        faces["trained"].update(metric=None, learned=None, reason=None)


def log_parity(cfg: DictConfig, manifest: dict) -> None:
    """Log the tool's run: the manifest as an artifact and each exported model's numeric parity figures as
    metrics `parity/<task>/<figure>` (`core.mlflow_store.log_tool_run`)."""
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


# An absolute path inside a text: a '/' that starts no URL ("http://", "models:/") and ends no word ("val/acc", "1/8")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~<>-])/[^\s:;,()'\"]+")


def relative_paths(value):
    """`value` (the manifest: dicts, lists, strings, numbers) with every absolute path, a whole string or inside a
    text (a reason a run recorded), written as `manifest_path` writes it: the page is served from anywhere, and a
    machine's own folders stay on it."""
    if isinstance(value, dict):
        return {k: relative_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v) for v in value]
    if isinstance(value, str):
        return ABSOLUTE_PATH.sub(lambda found: manifest_path(found.group()), value)
    return value


def monitor_settings(path: Path) -> dict:
    """What the face-mask pane's live tracking follows, as the Python monitor does (experiments/monitor_facemask.py):
    {"tracker": ultralytics' bytetrack.yaml settings with the file's `tracker` overrides, "alert_classes",
    "alert_after_s" (seconds), "smooth_frames"} from `path` (conf/monitor_facemask.yaml). UserError when the file
    is missing or a tracker key is unknown."""
    from omegaconf import OmegaConf

    from core.trackers import bytetrack_settings

    if not path.is_file():
        raise UserError(f"monitor_config={path}: file not found")
    monitor = OmegaConf.load(path)  # only plain keys are read: its ${paths...} stay unresolved
    return {
        "tracker": bytetrack_settings(OmegaConf.to_container(monitor.tracker)),
        "alert_classes": list(monitor.alert_classes),
        "alert_after_s": float(monitor.alert_after_s),
        "smooth_frames": int(monitor.smooth_frames),
    }


# A photo in which the detector finds no face is tried again centred in a grey canvas this many times its size: the
# detector learned faces a fraction of a scene, and a close-up face photo is larger than any it saw (measured on the
# built-in identities' first 20 photos each, a detector from scratch at confidence 0.25: a box in 9 of 80 photos as
# they are, 12 at 2x, 73 at 3x, 79 at 4x)
FACE_PAD = 4
PAD_GREY = 114  # ultralytics' letterbox grey, the page's too (web/src/detector.js)


def face_box(
    detector, rgb: np.ndarray, imgsz: int, conf: float, iou: float
) -> tuple[float, float, float, float] | None:
    """The best face box (x0, y0, x1, y1, pixels of `rgb`, an HxWx3 uint8 image) of the face-mask `detector` (an ONNX
    Runtime session on the exported file, input `imgsz`) at `conf` and NMS `iou`: on the photo, else on the photo
    centred in a grey canvas FACE_PAD times its size, mapped back and clipped to the photo; None when neither finds
    one. The page's `findFace` (web/src/detector.js) follows the same rule."""
    from facemask.export import onnx_detect

    found = onnx_detect(detector, [rgb], imgsz, conf=conf, iou=iou)[0]
    if len(found):
        return tuple(float(v) for v in found[0, :4])
    height, width = rgb.shape[:2]
    canvas = np.full((FACE_PAD * height, FACE_PAD * width, 3), PAD_GREY, np.uint8)
    top, left = (FACE_PAD * height - height) // 2, (FACE_PAD * width - width) // 2
    canvas[top : top + height, left : left + width] = rgb
    found = onnx_detect(detector, [canvas], imgsz, conf=conf, iou=iou)[0]
    if not len(found):
        return None
    x0, y0, x1, y1 = (float(v) for v in found[0, :4])
    box = (
        min(max(x0 - left, 0.0), width),
        min(max(y0 - top, 0.0), height),
        min(max(x1 - left, 0.0), width),
        min(max(y1 - top, 0.0), height),
    )
    return box if box[2] > box[0] and box[3] > box[1] else None


def face_boxes(facemask: dict | None) -> dict:
    """Where the recognise pane's face crops come from: {"face_boxes": "facemask" (around the exported face-mask
    detector's best box, `face_box`) or None (the centre square), "face_boxes_note": why, in words, "face_pad":
    FACE_PAD}. A detector whose run did
    not learn (its "trained" record) finds no face, and would leave every photo, the gallery's too, without one:
    the centre square is cropped instead."""
    if facemask is None:
        return {
            "face_boxes": None,
            "face_boxes_note": "no face-mask detector exported: the centre square is described",
            "face_pad": FACE_PAD,
        }
    if facemask.get("trained", {}).get("learned") is False:
        return {
            "face_boxes": None,
            "face_boxes_note": "the face-mask detector did not learn (see its pane): the centre square is described",
            "face_pad": FACE_PAD,
        }
    return {
        "face_boxes": "facemask",
        "face_boxes_note": "cropped around the face-mask detector's best box",
        "face_pad": FACE_PAD,
    }


def descriptor_gallery(cfg: DictConfig, manifest: dict, out_dir: Path) -> dict:
    """The descriptor pane's gallery: for each identity of `manifest["faces"]["class_names"]`, the descriptors of its
    first `cfg.descriptor.gallery_images` photos under `cfg.examples.faces_root/<name>/`, each cropped as the page
    crops an upload (`gallery_chips`) and described by the exported ONNX file; a photo in which the detector finds no
    face is left out, as the page names nobody there.

    The decision threshold is `descriptor_threshold`'s. Returns {"gallery": [{"name", "images", "descriptors":
    (images, 128) nested lists}], "threshold", "target_far", "threshold_rule", "gallery_crop", "gallery_skipped"}
    (threshold None for an empty gallery); identities without photos are left out (logged). UserError when
    `cfg.descriptor.gallery_images` < 1."""
    from training.onnx_export import onnx_session

    spec, faces, facemask = cfg.descriptor, manifest["faces"], manifest["facemask"]
    if spec.gallery_images < 1:
        raise UserError(f"descriptor.gallery_images={spec.gallery_images}: must be at least 1")
    describe = onnx_session(out_dir / faces["file"])
    detector = onnx_session(out_dir / facemask["file"]) if faces.get("face_boxes") == "facemask" else None
    gallery, names_, rows, skipped = described_identities(
        Path(cfg.examples.faces_root), describe, detector, spec, faces, facemask
    )
    log.info(
        "descriptor gallery: %d identities from %d photos (%s; %d photos without a detected face left out)",
        len(gallery),
        len(names_),
        "cropped around the detected face" if detector else "the centre square",
        skipped,
    )
    threshold, target_far, rule = descriptor_threshold(spec, names_, rows)
    log.info("descriptor threshold %s: %s", threshold, rule)
    return {
        "gallery": gallery,
        "threshold": threshold,
        "target_far": target_far,
        "threshold_rule": rule,
        "gallery_crop": "around the face-mask detector's best box" if detector else "the centre square",
        "gallery_skipped": skipped,
    }


def described_identities(root: Path, describe, detector, spec: DictConfig, faces: dict, facemask: dict | None):
    """(gallery, names, rows, photos left out) of `descriptor_gallery`: per identity of `faces["class_names"]` with
    photos under `root/<name>/`, its entry {"name", "images", "descriptors"}; one name per descriptor row; the
    (images, 128) float64 descriptors (rounded to 6 decimals, as the manifest stores them) of each identity; and
    how many photos had no detected face. `describe` is an ONNX Runtime session on the exported face model."""
    gallery, names_, rows, skipped = [], [], [], 0
    for name in faces["class_names"]:
        photos = identity_photos(root, name)[: spec.gallery_images]
        if not photos:
            log.warning("no photo of %s under %s: left out of the descriptor gallery", name, root / name)
            continue
        chips, missed = gallery_chips(photos, detector, spec, faces, facemask)
        skipped += missed
        if not chips:
            log.warning("no face found in the photos of %s: left out of the descriptor gallery", name)
            continue
        batch = np.stack(chips).transpose(0, 3, 1, 2).astype(np.float32)
        # rounded as the manifest stores them: the threshold is set on the values the page compares with
        descriptors = describe.run([faces["output"]], {faces["input"]: batch})[0].astype(np.float64).round(6)
        gallery.append({"name": name, "images": len(chips), "descriptors": descriptors.tolist()})
        names_ += [name] * len(chips)
        rows.append(descriptors)
    return gallery, names_, rows, skipped


def identity_photos(root: Path, name: str) -> list[Path]:
    """The images (IMAGE_SUFFIXES, any case) of identity `name` in `root/<name>/`, sorted by path; empty when the
    folder is missing."""
    return sorted(p for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def gallery_chips(photos: list[Path], detector, spec: DictConfig, faces: dict, facemask: dict | None):
    """(chips, photos left out): each photo cropped as the page crops an upload, an (S, S, 3) uint8 RGB chip of the
    face model's `faces["image_size"]` S (`faces.crop.face_square` with its `faces["margin"]` around the face-mask
    `detector`'s best box at `spec.detector_conf` and `spec.detector_iou`, `face_box`; the centre square when
    `detector` is None); a photo in which the detector finds no face is left out and counted."""
    from core.images import read_rgb
    from faces.crop import face_square, square_crop

    chips, skipped = [], 0
    for photo in photos:
        rgb = read_rgb(photo)
        box = None
        if detector is not None:
            box = face_box(detector, rgb, facemask["image_size"], spec.detector_conf, spec.detector_iou)
            if box is None:
                skipped += 1
                continue
        chips.append(
            square_crop(rgb, face_square(rgb.shape[1], rgb.shape[0], box, faces["margin"]), faces["image_size"])
        )
    return chips, skipped


def descriptor_threshold(
    spec: DictConfig, names_: list[str], rows: list[np.ndarray]
) -> tuple[float | None, float | None, str]:
    """(threshold, target_far, rule) of the descriptor pane: `spec.tolerance` when set (a fixed distance); None for
    an empty gallery; else the gallery's open-set rule (`faces.gallery.Gallery.open_set_threshold`, for
    `spec.target_far`, None: its default) on the per-photo descriptors `rows` ((images, 128) arrays) of `names_`
    (one identity name per descriptor row)."""
    from faces.gallery import Gallery

    if spec.tolerance is not None:
        threshold = float(spec.tolerance)
        rule = f"descriptor.tolerance={threshold:g} (conf/export_web.yaml): a fixed distance, not the open-set rule"
        return threshold, None, rule
    if not names_:
        return None, None, "an empty gallery names nobody"
    chosen = Gallery(names=names_, descriptors=np.concatenate(rows)).open_set_threshold(spec.target_far)
    return chosen.threshold, chosen.target_far, chosen.rule


def facemask_example(out_path: Path, scenes: int) -> int:
    """Write the scene with the most faces among the first `scenes` of the built-in face-mask set (seed 0, the
    scenes `make yolo-facemask` trains on; the first on a tie) to `out_path` as an RGB PNG (the set's RGBA
    alpha is opaque). Returns its number of faces. UserError when `scenes` < 1."""
    import cv2

    from core.voc import read_voc
    from synthetic import make_facemask

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
            crops = identity_photos(root, name)
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
