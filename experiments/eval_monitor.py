"""Score the face-mask monitor on a clip with ground truth: `python -m experiments.eval_monitor [source=<clip>
gt=<gt.txt>] [detections=truth] [tracker_type=botsort]`.

Without `source`, the built-in entrance clip (synthetic/entrance.py: a counting line, a zone, an occlusion, a
scene cut, one unmasked person) is generated with its MOTChallenge ground truth. The monitor runs on it
(`experiments.monitor_facemask.run`, with the trained detector or, `detections=truth`, the ground-truth boxes); its
`tracks.txt` is scored with TrackEval (HOTA, DetA, AssA, IDF1, MOTA, ID switches: `facemask.track_eval`), and its
people, unmasked people, alerts and line counts are set beside those of its own counting run on the ground-truth
identities (a perfect tracker). Prints both, then one JSON object as the last line; logs them to MLflow (experiment
`eval_monitor`).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from core.errors import UserError
from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from experiments.monitor_facemask import _trained_detector, geometry, run
from facemask.monitor import MOT_NAME, SUMMARY_NAME
from facemask.track_eval import TruthDetector, read_mot, score_tracks, truth_counts
from synthetic.entrance import CLIP_NAME, GT_NAME, SCENE_NAME, make_entrance_clip
from synthetic.facemask import FACEMASK_CLASSES

DETECTORS = ("checkpoint", "truth")
COUNTS = ("people", "unmasked_people", "alerts")


def _clip(cfg: DictConfig) -> tuple[str, Path, dict]:
    """The source, its ground truth and the scene's zones and lines ({} for a clip of the user's)."""
    if cfg.source is None:
        folder = make_entrance_clip(cfg.clip_dir, seed=cfg.seed)
        scene = json.loads((folder / SCENE_NAME).read_text())
        return str(folder / CLIP_NAME), folder / GT_NAME, scene
    if not cfg.gt:
        raise UserError(f"gt: give the MOTChallenge gt.txt of source={cfg.source} (make eval-monitor SRC=... GT=...)")
    return str(cfg.source), Path(cfg.gt), {}


def _flat(counts: dict) -> dict[str, float]:
    flat = {key: float(counts[key]) for key in COUNTS}
    for name, line in counts["lines"].items():
        flat[f"line/{name}/in"], flat[f"line/{name}/out"] = float(line["in"]), float(line["out"])
    for name, zone in counts["zones"].items():
        for key in COUNTS:
            flat[f"zone/{name}/{key}"] = float(zone[key])
    return flat


def _perfect_counts(cfg: DictConfig, gt, names: list[str], source: str, frames: int) -> dict:
    """`truth_counts`: what the monitor's counting gives on the ground-truth identities of `source` (a perfect
    tracker), with the clip's own frame size and rate."""
    import cv2

    capture = cv2.VideoCapture(source)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
    capture.release()
    settings = (list(cfg.alert_classes), cfg.alert_after_s, cfg.smooth_frames)
    return truth_counts(gt, names, geometry(cfg), size, fps, *settings, frames=frames)


def _print_table(cfg: DictConfig, source: str, summary: dict, scores: dict, ours: dict, perfect: dict) -> None:
    """The tracking scores, then each count of the monitor beside the perfect tracker's."""
    print(
        f"\n{Path(source).name}: {summary['frames']} frames, {cfg.tracker_type}, detections {cfg.detections}, "
        f"{summary['frames_per_s']:.1f} frames/s"
    )
    print(
        f"  HOTA {scores['hota']:.3f} (DetA {scores['deta']:.3f}, AssA {scores['assa']:.3f}), IDF1 {scores['idf1']:.3f}, "
        f"MOTA {scores['mota']:.3f}, ID switches {scores['id_switches']}, {scores['tracker_ids']} track ids for "
        f"{scores['gt_ids']} people"
    )
    print(f"  {'count':<28} {'monitor':>8} {'truth':>8}")
    for key in ours:
        print(f"  {key:<28} {ours[key]:>8.0f} {perfect[key]:>8.0f}")


def evaluate(cfg: DictConfig) -> dict:
    """Run and score the monitor as the module doc says; return the printed JSON object."""
    if cfg.detections not in DETECTORS:
        raise UserError(f"detections: {cfg.detections!r} is none of {list(DETECTORS)}")
    source, gt_path, scene = _clip(cfg)
    gt = read_mot(gt_path)
    cfg = OmegaConf.merge(cfg, {"source": source})
    for key in ("zones", "lines"):
        if cfg[key] is None:
            cfg = OmegaConf.merge(
                cfg, {key: scene.get(key, {}), "coordinates": scene.get("coordinates", cfg.coordinates)}
            )
    if cfg.detections == "truth":
        names, detector = list(FACEMASK_CLASSES), TruthDetector(gt)
    else:
        _ckpt, names, detector = _trained_detector(cfg)
    summary = run(cfg, detector=detector, names=names, log_run=False)
    out_dir = Path(cfg.out_dir)
    scores = score_tracks(gt, read_mot(out_dir / MOT_NAME, "tracks"), frames=summary["frames"])
    truth = _perfect_counts(cfg, gt, names, source, summary["frames"])
    ours, perfect = _flat(summary), _flat(truth)
    _print_table(cfg, source, summary, scores, ours, perfect)
    result = {
        "tracker": cfg.tracker_type,
        "detections": cfg.detections,
        "frames": summary["frames"],
        **scores,
        "frames_per_s": summary["frames_per_s"],
        "counts": {key: int(value) for key, value in ours.items()},
        "truth": {key: int(value) for key, value in perfect.items()},
    }
    (out_dir / "eval.json").write_text(json.dumps(result, indent=1))
    log_tool_run(
        cfg,
        f"{Path(source).name}-{cfg.tracker_type}-{cfg.detections}",
        params={"source": source, "gt": str(gt_path), "tracker_type": cfg.tracker_type, "detections": cfg.detections},
        metrics={
            **{key: float(scores[key]) for key in ("hota", "deta", "assa", "idf1", "mota", "id_switches")},
            "frames_per_s": float(summary["frames_per_s"]),
            **ours,
            **{f"truth/{key}": value for key, value in perfect.items()},
        },
        files=[out_dir / name for name in ("eval.json", SUMMARY_NAME, MOT_NAME) if (out_dir / name).is_file()],
    )
    log.info("eval-monitor: %s", result)
    print(json.dumps(result), flush=True)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval_monitor")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
