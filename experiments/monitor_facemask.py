"""Monitor a video file, a camera or a stream for people without a face mask:
`python -m experiments.monitor_facemask source=<video | camera index | rtsp:// or http(s):// URL> [ckpt=...]`.

Each person is tracked (ultralytics' ByteTrack, or BoT-SORT with `tracker_type=botsort`) and raises one alert after `alert_after_s` seconds unmasked: a JSON
line on stdout and in `events.jsonl`, POSTed to `webhook.url` when set. Writes `annotated.mp4`, `tracks.csv` and
`summary.json` in `out_dir`, logs them to MLflow (experiment `monitor_facemask`), and prints the summary
`{"frames", "people", "unmasked_people", "alerts"}` as the last stdout line — also after a stream that could not
be reopened or Ctrl-C. An absent camera is a one-line error (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from core.checkpoints import tool_checkpoint
from core.mlflow_store import log_tool_run
from core.trackers import make_tracker
from core.video_sources import VideoSource, parse_source
from experiments import log, user_errors
from facemask.alerts import EventSink, MaskAlerts, Webhook
from facemask.monitor import (
    DWELL_NAME,
    EVENTS_NAME,
    FIGURE_NAME,
    MOT_NAME,
    SUMMARY_NAME,
    TRACKS_NAME,
    VIDEO_NAME,
    Detector,
    monitor,
    resolve_backend,
    runtime_detector,
    yolo_detector,
)
from facemask.zones import Geometry

PRINTED = ("frames", "people", "unmasked_people", "alerts")


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _trained_detector(cfg: DictConfig) -> tuple[Path, list[str], Detector]:
    """The checkpoint (`cfg.ckpt`, else the newest face-mask run's), its class names and its Detector on `cfg.backend`:
    in ONNX Runtime from the export kept beside the checkpoint (`facemask.export.runtime_model`), or in PyTorch."""
    from facemask.inference import TASK_NAME, TRAINED_BY, load_detector

    ckpt = tool_checkpoint(cfg, TASK_NAME, TRAINED_BY)
    device = _device(cfg.device)
    if resolve_backend(cfg.backend, device) == "onnxruntime":
        from facemask.export import runtime_model

        model = runtime_model(ckpt, fallback_dir=cfg.out_dir)
        log.info("detector: ONNX Runtime, %s (%s)", model.path, "reused" if model.cached else "exported and checked")
        imgsz = int(cfg.imgsz or model.imgsz)
        return ckpt, model.names, runtime_detector(model.session, imgsz, cfg.conf, cfg.iou)
    module = load_detector(ckpt, device=device)
    imgsz = int(cfg.imgsz or module.hparams.imgsz)
    return ckpt, list(module.names), yolo_detector(module, imgsz, cfg.conf, cfg.iou)


def geometry(cfg: DictConfig) -> Geometry:
    """The zones and lines of `cfg` (`zones`, `lines`, `coordinates`); UserError naming a bad one."""
    return Geometry.from_config(
        OmegaConf.to_container(cfg.zones, resolve=True) if cfg.zones else {},
        OmegaConf.to_container(cfg.lines, resolve=True) if cfg.lines else {},
        cfg.coordinates,
    )


def run(
    cfg: DictConfig, detector: Detector | None = None, names: list[str] | None = None, log_run: bool = True
) -> dict:
    """Monitor `cfg.source`; return the summary. `detector` and `names` replace the checkpoint's model (tests, the
    ground-truth detector of eval-monitor); `log_run=False` logs no MLflow run (eval-monitor logs its own)."""
    zones_and_lines = geometry(cfg)
    source = parse_source(cfg.source)
    video = VideoSource(source, **cfg.stream)
    ckpt = None
    if detector is None:
        ckpt, names, detector = _trained_detector(cfg)
    alerts = MaskAlerts(names, list(cfg.alert_classes), cfg.alert_after_s, cfg.smooth_frames, source=video.name)
    tracker = make_tracker(OmegaConf.to_container(cfg.tracker, resolve=True), cfg.tracker_type)
    out_dir = Path(cfg.out_dir)
    webhook = (
        Webhook(cfg.webhook.url, cfg.webhook.attempts, cfg.webhook.timeout_s, cfg.webhook.backoff_s)
        if cfg.webhook.url
        else None
    )
    log.info("monitoring %s (%s) -> %s", video.name, video.kind, out_dir)
    with EventSink(out_dir / EVENTS_NAME, webhook=webhook) as sink:
        summary = monitor(
            video.frames(cfg.max_frames),
            detector,
            alerts,
            sink,
            out_dir,
            fps=video.fps,
            tracker=tracker,
            save_video=cfg.save_video,
            progress_every=cfg.progress_every,
            geometry=zones_and_lines,
            scene_cut=cfg.scene_cut,
        )
    summary.update(
        source=video.label,
        kind=video.kind,
        checkpoint=str(ckpt) if ckpt else None,
        reconnects=video.reconnects,
        stream_gave_up=video.gave_up,
    )
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    if log_run:
        _log(cfg, video, ckpt, summary, out_dir)
    log.info("%s: %s -> %s", video.name, summary, out_dir)
    print(json.dumps({key: summary[key] for key in PRINTED}), flush=True)
    return summary


def count_metrics(summary: dict) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
    """The zone and line counts of a summary as MLflow metrics (`zone/<name>/people`, `…/unmasked_people`,
    `…/alerts`, `line/<name>/in`, `…/out`) and the per-minute masked share as steps (`zone/<name>/masked_share`)."""
    metrics, steps = {}, {}
    for name, zone in summary["zones"].items():
        for key in ("people", "unmasked_people", "alerts"):
            metrics[f"zone/{name}/{key}"] = float(zone[key])
        steps[f"zone/{name}/masked_share"] = [(row["minute"], row["masked_share"]) for row in zone["per_minute"]]
    for name, line in summary["lines"].items():
        metrics[f"line/{name}/in"], metrics[f"line/{name}/out"] = float(line["in"]), float(line["out"])
    return metrics, steps


def _log(cfg: DictConfig, video: VideoSource, ckpt: Path | None, summary: dict, out_dir: Path) -> None:
    metrics, steps = count_metrics(summary)
    log_tool_run(
        cfg,
        video.name,
        params={
            "source": video.label,
            "kind": video.kind,
            "checkpoint": str(ckpt),
            "alert_after_s": cfg.alert_after_s,
            "smooth_frames": cfg.smooth_frames,
            "alert_classes": ",".join(cfg.alert_classes),
            "conf": cfg.conf,
            "iou": cfg.iou,
            "webhook": bool(cfg.webhook.url),
            "zones": ",".join(summary["zones"]),
            "lines": ",".join(summary["lines"]),
        },
        metrics={key: float(summary[key]) for key in (*PRINTED, "frames_per_s", "reconnects", "scene_cuts")} | metrics,
        steps=steps,
        files=[
            out_dir / name
            for name in (SUMMARY_NAME, TRACKS_NAME, EVENTS_NAME, MOT_NAME, DWELL_NAME, FIGURE_NAME)
            + ((VIDEO_NAME,) if cfg.log_video else ())
            if (out_dir / name).is_file()
        ],
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="monitor_facemask")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
