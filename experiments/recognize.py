"""Recognise faces in a folder: `python -m experiments.recognize images=<folder> out_dir=<folder> [gallery=... | ckpt=...]`.

Detects faces and names each one of two ways (see `faces.recognition`):
- by a gallery of known people (`gallery=<folder>/<Name>/*.jpg`, see `faces.gallery`): the best-scoring
  known person (mean descriptor distance to their photos), `unknown` at or beyond the threshold: by default (`tolerance: null`) the gallery's own open-set
  threshold for the false-positive identification rate `target_far` (`Gallery.open_set_threshold`), else
  `tolerance`; faces are described as eval-lfw and eval-openset describe them
  (`flip`, `num_jitters` from conf/describer/dlib.yaml), so the tolerance measured there holds here. Used when
  `gallery` is given, or when neither it nor `ckpt` is and `default_gallery` (where `make capture-faces` writes)
  holds photos;
- by a checkpoint of `make vgg16-faces` (`ckpt`, by default the newest): `unknown` below `threshold` (null: the
  threshold calibrated on the validation split at training, kept in the checkpoint).
Torch's threads are chosen for this process (`threads: null`: `faces.recognition.choose_threads`, the cores not
already busy) rather than inherited. Writes `out_dir/recognitions.csv` and annotated images, logs the run to
MLflow (experiment `recognize`; with a gallery: params `threshold`, `target_far`, `threshold_rule`, metric
`threshold`), prints the threshold and the rate it is set for, and prints as its last line one JSON object
`{"images", "faces", "known", "unknown", "images_skipped"}`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from core.checkpoints import find_checkpoint
from core.errors import UserError
from core.images import find_images
from core.tracking import log_tool_run
from experiments import log, user_errors
from faces.descriptors import FaceDescriber
from faces.gallery import GalleryRecognizer, build_gallery, gallery_photos
from faces.recognition import UNKNOWN, choose_threads, recognize_folder

TRAINED_BY = "make vgg16-faces"


def gallery_folder(cfg: DictConfig) -> Path | None:
    """The known-people folder to recognise with: `gallery` when given (with `ckpt` too: a UserError), else
    `default_gallery` when no `ckpt` is given and that folder holds a person's photo; None: use a checkpoint."""
    if cfg.gallery:
        if cfg.ckpt:
            raise UserError("give GALLERY=<known-people folder> or CKPT=<checkpoint>, not both")
        return Path(cfg.gallery)
    if cfg.ckpt or not cfg.default_gallery or not Path(cfg.default_gallery).is_dir():
        return None
    try:
        gallery_photos(cfg.default_gallery)
    except UserError:  # an empty capture folder: fall back to the checkpoint
        return None
    return Path(cfg.default_gallery)


def checkpoint_recognizer(cfg: DictConfig):
    """The classifier-head recogniser of `ckpt` (default: best.ckpt, else last.ckpt, of the newest finished run of
    `checkpoint_tasks`), and its path."""
    ckpt = (
        Path(cfg.ckpt)
        if cfg.ckpt
        else find_checkpoint(
            cfg.paths.log_dir, list(cfg.checkpoint_tasks), make_target=TRAINED_BY, tracking_uri=cfg.paths.mlflow_uri
        )
    )
    # the classifier is a LightningModule: imported only on this path, so a gallery run never loads Lightning (3 s)
    from lightning_modules.face_classifier import load_recognizer

    recognizer = load_recognizer(ckpt, cfg.threshold, cfg.label_map)
    return recognizer, ckpt


def recognize(cfg: DictConfig) -> dict[str, float]:
    if not cfg.images:
        raise UserError("IMAGES=<folder> is required: the images to recognise faces in")
    import torch

    if cfg.threads is not None and cfg.threads < 1:
        raise UserError(f"threads={cfg.threads}: at least 1 (or null: chosen from the free cores)")
    threads = int(cfg.threads) if cfg.threads is not None else choose_threads(1)
    torch.set_num_threads(threads)
    detector = instantiate(cfg.detector)
    gallery = gallery_folder(cfg)
    threshold_line = ""
    if gallery is not None:
        describer = FaceDescriber(cfg.num_jitters, flip=cfg.flip, landmarks=cfg.landmarks)
        known_people = build_gallery(gallery, detector, describer, cfg.gallery_cache, progress=cfg.progress)
        calibrated = known_people.open_set_threshold(cfg.target_far)
        if cfg.tolerance is not None:
            threshold, rule = float(cfg.tolerance), "tolerance set in the config (overrides the calibrated threshold)"
        else:
            threshold, rule = calibrated.threshold, calibrated.rule
        recognizer, source = GalleryRecognizer(known_people, describer, threshold), gallery
        threshold_line = (
            f"threshold {threshold:.4f} ({rule}); calibrated for a false-positive identification rate of "
            f"{calibrated.target_far:g}: {calibrated.threshold:.4f}"
        )
        params = {
            "gallery": str(gallery),
            "tolerance": cfg.tolerance,
            "threshold": threshold,
            "target_far": calibrated.target_far,
            "threshold_rule": rule[:500],
            "num_jitters": cfg.num_jitters,
            "flip": cfg.flip,
            "landmarks": cfg.landmarks,
            "gallery_photos": len(known_people.files),
            "gallery_photos_skipped": len(known_people.skipped),
        }
    else:
        recognizer, source = checkpoint_recognizer(cfg)
        params = {
            "ckpt": str(source),
            "threshold": recognizer.threshold,
            "threshold_source": "configured" if cfg.threshold is not None else "calibrated at training",
        }
    started = time.perf_counter()
    table, skipped = recognize_folder(recognizer, detector, cfg.images, cfg.out_dir, progress=cfg.progress)
    seconds = time.perf_counter() - started
    unknown = int((table["name"] == UNKNOWN).sum())
    summary = {
        "images": int(table["image"].nunique()),
        "faces": len(table),
        "known": len(table) - unknown,
        "unknown": unknown,
        "images_skipped": len(skipped),
    }

    photos = len(find_images(cfg.images))  # every image read, with a face or not
    speed = {"seconds": round(seconds, 3), "images_per_second": round(photos / max(seconds, 1e-9), 3)}
    threshold_metrics = {"threshold": params["threshold"], "target_far": params["target_far"]} if gallery else {}
    run_id = log_tool_run(
        cfg,
        f"{Path(cfg.images).name} ({detector.name})",
        metrics={**summary, **speed, **threshold_metrics},
        params={
            **params,
            "threads": threads,
            "detector": repr(detector),
            "images": str(cfg.images),
            "out_dir": str(cfg.out_dir),
            "identities": ", ".join(recognizer.class_names)[:6000],
        },
        files=[Path(cfg.out_dir) / "recognitions.csv"],
    )
    log.info(
        "%d face(s) in %d image(s), %d known, %d unknown, %d unreadable file(s) skipped -> %s (%s %s, MLflow run %s)",
        summary["faces"],
        summary["images"],
        summary["known"],
        summary["unknown"],
        len(skipped),
        Path(cfg.out_dir) / "recognitions.csv",
        "gallery" if gallery is not None else "checkpoint",
        source,
        run_id,
    )
    print(
        f"{photos} image(s) read in {seconds:.2f} s ({speed['images_per_second']:.2f} images/s, "
        f"{threads} torch thread(s))",
        flush=True,
    )
    if threshold_line:
        print(threshold_line, flush=True)
    print(json.dumps(summary), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="recognize")
def main(cfg: DictConfig) -> None:
    with user_errors():
        recognize(cfg)


if __name__ == "__main__":
    main()
