"""Recognise faces in photos or a video: `python -m experiments.recognize images=<folder> | source=<video | camera
index | URL> out_dir=<folder> [gallery=... | ckpt=...]`.

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

With `source` (a video file, a camera index or a stream URL, read as the face-mask monitor reads them) the faces are
tracked across frames and each track gets one name, decided over its frames (`faces.video`): out_dir holds
annotated.mp4, tracks.csv, events.jsonl and summary.json; frames/s is printed and logged, and the last line is
`{"frames", "tracks", "known_tracks", "unknown_tracks"}`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from core.checkpoints import tool_checkpoint
from core.errors import UserError
from core.images import find_images
from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from faces.descriptors import FaceDescriber
from faces.detectors import SecondLook
from faces.gallery import GalleryRecognizer, build_gallery, gallery_photos
from faces.openset import decision_threshold
from faces.recognition import UNKNOWN, choose_threads, recognize_folder, usable_cores

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
    ckpt = tool_checkpoint(cfg, list(cfg.checkpoint_tasks), TRAINED_BY)
    # the classifier is a LightningModule: imported only on this path, so a gallery run never loads Lightning (3 s)
    from faces.classifier import load_recognizer

    recognizer = load_recognizer(ckpt, cfg.threshold, cfg.label_map)
    return recognizer, ckpt


def _threads(cfg: DictConfig) -> int:
    import torch

    if cfg.threads is not None and cfg.threads < 1:
        raise UserError(f"threads={cfg.threads}: at least 1 (or null: chosen from the free cores)")
    threads = int(cfg.threads) if cfg.threads is not None else choose_threads(1)
    torch.set_num_threads(threads)
    return threads


def _recognizer(cfg: DictConfig, detector) -> tuple[object, Path, dict, str]:
    """The recogniser (a gallery's or a checkpoint's), where it came from, its run params, and the threshold line
    to print ("" for a checkpoint)."""
    gallery = gallery_folder(cfg)
    if gallery is None:
        recognizer, source = checkpoint_recognizer(cfg)
        params = {
            "ckpt": str(source),
            "threshold": recognizer.threshold,
            "threshold_source": "configured" if cfg.threshold is not None else "calibrated at training",
        }
        return recognizer, source, params, ""
    describer = FaceDescriber(cfg.num_jitters, flip=cfg.flip, landmarks=cfg.landmarks)
    known_people = build_gallery(gallery, detector, describer, cfg.gallery_cache, progress=cfg.progress)
    threshold, rule, calibrated = decision_threshold(known_people, cfg.target_far, cfg.tolerance)
    line = (
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
    return GalleryRecognizer(known_people, describer, threshold), gallery, params, line


def recognize(cfg: DictConfig) -> dict[str, float]:
    if cfg.images and cfg.source is not None:
        raise UserError("give IMAGES=<folder of photos> or SRC=<video | camera index | URL>, not both")
    if not cfg.images and cfg.source is None:
        raise UserError(
            "IMAGES=<folder> (photos) or SRC=<video file | camera index | rtsp/http URL> is required: "
            "where to recognise faces"
        )
    threads = _threads(cfg)
    detector = instantiate(cfg.detector)
    looking_twice = detector
    if cfg.second_look.score_threshold is not None:
        looking_twice = SecondLook(detector, instantiate(cfg.detector, score_threshold=cfg.second_look.score_threshold))
    recognizer, source, params, threshold_line = _recognizer(cfg, looking_twice)
    threshold_metrics = {"threshold": params["threshold"]}
    if "target_far" in params:
        threshold_metrics["target_far"] = params["target_far"]
    params = {
        **params,
        "threads": threads,
        "detector": repr(detector),
        "out_dir": str(cfg.out_dir),
        "identities": ", ".join(recognizer.class_names)[:6000],
    }
    how = "gallery" if "gallery" in params else "checkpoint"
    if cfg.source is not None:
        summary = _recognize_video(cfg, recognizer, detector, params, threshold_metrics)
    else:
        summary = _recognize_photos(cfg, recognizer, looking_twice, params, threshold_metrics, how, source, threads)
    if threshold_line:
        print(threshold_line, flush=True)
    print(json.dumps(summary), flush=True)
    return summary


def _workers(cfg: DictConfig) -> int:
    """Processes for the photos: `workers`, or (null) one per usable core. Each runs one torch thread, so a busy
    machine time-slices whole processes instead of OpenMP threads that wait on each other (`choose_threads`)."""
    if cfg.workers is not None and cfg.workers < 1:
        raise UserError(f"workers={cfg.workers}: at least 1 (or null: one per core)")
    return int(cfg.workers) if cfg.workers is not None else usable_cores()


def _recognize_photos(cfg, recognizer, detector, params, threshold_metrics, how, source, threads) -> dict:
    if isinstance(detector, SecondLook):
        detector.second_looks = detector.found_on_second_look = 0  # count the photos' looks, not the gallery's
    started = time.perf_counter()
    workers = _workers(cfg)
    table, skipped = recognize_folder(
        recognizer, detector, cfg.images, cfg.out_dir, progress=cfg.progress, workers=workers
    )
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
    if isinstance(detector, SecondLook):
        speed["second_looks"] = detector.second_looks
        speed["found_on_second_look"] = detector.found_on_second_look
        log.info(
            "second look at score threshold %s: %d image(s) without a face at the first, a face found in %d",
            detector.fallback.score_threshold,
            detector.second_looks,
            detector.found_on_second_look,
        )
    run_id = log_tool_run(
        cfg,
        f"{Path(cfg.images).name} ({detector.name})",
        metrics={**summary, **speed, **threshold_metrics},
        params={**params, "images": str(cfg.images), "workers": workers},
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
        how,
        source,
        run_id,
    )
    print(
        f"{photos} image(s) read in {seconds:.2f} s ({speed['images_per_second']:.2f} images/s, "
        + (f"{workers} processes of 1 torch thread)" if workers > 1 else f"1 process of {threads} torch thread(s))"),
        flush=True,
    )
    return summary


def _recognize_video(cfg, recognizer, detector, params, threshold_metrics) -> dict:
    """`faces.video.recognize_video` on `cfg.source` (the monitor's sources: file, camera, stream); prints and logs
    frames/s. Returns {"frames", "tracks", "known_tracks", "unknown_tracks"}."""
    from core.trackers import make_tracker
    from core.video_sources import VideoSource, parse_source
    from faces.video import EVENTS_NAME, SUMMARY_NAME, TRACKS_NAME, VIDEO_NAME, recognize_video

    video = VideoSource(parse_source(cfg.source), **cfg.stream)
    tracker = make_tracker(OmegaConf.to_container(cfg.tracker, resolve=True), cfg.tracker_type)
    out_dir = Path(cfg.out_dir)
    log.info("recognising faces in %s (%s) -> %s", video.name, video.kind, out_dir)
    summary = recognize_video(
        recognizer,
        detector,
        video.frames(cfg.max_frames),
        out_dir,
        fps=video.fps,
        tracker=tracker,
        save_video=cfg.save_video,
        progress_every=cfg.progress_every,
    )
    summary.update(source=video.label, kind=video.kind, reconnects=video.reconnects)
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    printed = ("frames", "tracks", "known_tracks", "unknown_tracks")
    log_tool_run(
        cfg,
        f"{video.name} ({detector.name})",
        metrics={
            **{key: float(summary[key]) for key in (*printed, "faces", "frames_per_s", "seconds")},
            **threshold_metrics,
        },
        params={**params, "source": video.label, "kind": video.kind, "tracker_type": cfg.tracker_type},
        files=[
            out_dir / name
            for name in (SUMMARY_NAME, TRACKS_NAME, EVENTS_NAME) + ((VIDEO_NAME,) if cfg.save_video else ())
            if (out_dir / name).is_file()
        ],
    )
    for row_name in sorted(summary["names"].items(), key=lambda kv: int(kv[0])):
        log.info("track %s: %s", *row_name)
    print(
        f"{summary['frames']} frame(s) in {summary['seconds']:.2f} s ({summary['frames_per_s']:.2f} frames/s)",
        flush=True,
    )
    return {key: summary[key] for key in printed}


@hydra.main(version_base="1.3", config_path="../conf", config_name="recognize")
def main(cfg: DictConfig) -> None:
    with user_errors():
        recognize(cfg)


if __name__ == "__main__":
    main()
