"""Frames/s of `make monitor-facemask` against `yolo track` on the same weights, image size and tracker, in one run:

    python -m benchmarks.monitor_facemask [--source VIDEO | --clip] [--ckpt CKPT] [--tracker bytetrack|botsort]
        [--counter] [overrides …]
    make bench-monitor ARGS="--tracker botsort"
    make bench-monitor ARGS="--clip --counter"

Ours: `experiments.monitor_facemask.run` on the composed `monitor_facemask` config (the entry's path: the detector
from the checkpoint, detection, tracking, alerts, annotated.mp4, tracks.csv, summary.json, MLflow logging), its outputs and MLflow
store in a temporary folder; trailing arguments are Hydra overrides for it (e.g. `max_frames=100`). The peer:
ultralytics' `YOLO(<facemask.pt>).track(...)`, the API behind `yolo track`, on the ultralytics-format checkpoint
that `make export-facemask` writes (`write_ultralytics_checkpoint`, the same function), with the same image size
(the checkpoint's training size), `conf`, `iou`, tracker yaml (`tracker_type`) and device, and `save=True` (the
annotated video, as `yolo track` on the command line saves it). All in this process: the peer before and after ours,
its frames/s over both calls (this machine's speed drifts; bracketing ours keeps the drift out of the ratio). Ours
runs twice on a copy of the checkpoint: the first call exports the detector to ONNX beside it and checks the export
(`facemask.export.runtime_model`), as a user's first call on a new checkpoint does; the second reuses that export, as
every later call does.

`--counter` adds a second peer doing what ours does with a counting line: ultralytics' `solutions.ObjectCounter`
(same weights, size, thresholds, tracker, device, the annotated frames written to a video) counting in and out
across one line, the line ours gets too (`lines=`: the clip's line with `--clip`, else the frame's vertical middle);
it runs before and after ours as well, and its ratio line is printed before the headline one.

Default input: ../shared/data/video/short_hamilton_clip.mp4; `--clip`: the generated entrance clip
(synthetic/entrance.py, seed 0) instead. Default weights: `--ckpt`, else the newest face-mask
run under logs/, else a tiny one trained here first (`experiments.train experiment=yolo_facemask debug=fast`).

Printed: frames/s of each over the whole call (model loading and outputs included), ours' first call beside its later
ones, ours' frame loop alone (its summary's `frames_per_s`), and `ratio …` = ours (a later call) / `yolo track`,
whole calls (goal ≥ 1.0).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import core  # noqa: F401  (offline switches, PROJECT_ROOT)
from benchmarks.common import REPO, SHARED_DATA, compose, print_ratio, user_environment
from core.checkpoints import NoCheckpoint, find_checkpoint

VIDEO = SHARED_DATA / "video" / "short_hamilton_clip.mp4"


def trained_checkpoint(ckpt: Path | None, work: Path) -> Path:
    """`ckpt`, else the newest face-mask checkpoint under logs/, else a tiny one trained into `work`."""
    if ckpt:
        return ckpt
    try:
        return find_checkpoint(REPO / "logs", "yolo_facemask")
    except NoCheckpoint:
        pass
    print("no face-mask checkpoint under logs/: training a tiny one (debug=fast)", flush=True)
    logs = work / "tiny"
    command = [sys.executable, "-m", "experiments.train", "experiment=yolo_facemask", "debug=fast"]
    subprocess.run(
        [*command, f"paths.log_dir={logs}", f"paths.mlflow_dir={logs}"], cwd=REPO, check=True, env=user_environment()
    )
    return find_checkpoint(logs, "yolo_facemask")


def run_ours(overrides: list[str]) -> dict:
    """`experiments.monitor_facemask.run` on the config composed from `overrides`, timed in a new process (`--child`):
    the in-process MLflow that an earlier call imported and opened would make a later call cheaper than a user's."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.monitor_facemask", "--child", *overrides],
        cwd=REPO,
        env=user_environment(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"monitor-facemask failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(overrides: list[str]) -> None:
    """One call of ours, under the imports the peer's process has (torch, Lightning, ultralytics: `main` imports them
    before either runs); prints {"frames", "seconds", "loop_fps"} as the last line."""
    import pytorch_lightning  # noqa: F401  (the monitor's ONNX path no longer imports it; the peer's process has it)

    from experiments.monitor_facemask import run
    from facemask.inference import load_detector  # noqa: F401
    from facemask.ultralytics_checkpoint import write_ultralytics_checkpoint  # noqa: F401

    core.offline.disable_ultralytics_integrations()
    cfg = compose("monitor_facemask", overrides)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its alerts and summary lines
        summary = run(cfg)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "frames": summary["frames"],
                "seconds": seconds,
                "loop_fps": summary["frames_per_s"],
                "lines": summary["lines"],
            }
        )
    )


def run_peer(pt: Path, source: Path, cfg, imgsz: int, out: Path, threads: int | None) -> dict:
    from ultralytics import YOLO

    from experiments.monitor_facemask import _device

    device = _device(cfg.device)
    start = time.perf_counter()
    model, used = YOLO(str(pt)), []
    if threads:  # its predictor's select_device sets its own count first
        model.add_callback("on_predict_batch_start", lambda predictor: torch.set_num_threads(threads))
    model.add_callback("on_predict_batch_end", lambda predictor: used.append(torch.get_num_threads()))
    results = model.track(
        source=str(source),
        stream=True,
        imgsz=imgsz,
        conf=cfg.conf,
        iou=cfg.iou,
        tracker=f"{cfg.tracker_type}.yaml",
        device="cpu" if device == "cpu" else 0,
        save=True,
        project=str(out),
        name="yolo_track",
        exist_ok=True,
        verbose=False,
    )
    frames = 0
    for _ in results:
        frames += 1
        if frames == cfg.max_frames:
            break
    return {"frames": frames, "seconds": time.perf_counter() - start, "threads": max(used, default=0)}


def run_counter(pt: Path, source: Path, cfg, imgsz: int, line: list, out: Path, threads: int | None) -> dict:
    """ultralytics' ObjectCounter over every frame of `source` (the first `cfg.max_frames`), counting across `line`
    ([[x0, y0], [x1, y1]] in pixels), its annotated frames written to `out/counter.mp4`."""
    import cv2
    from ultralytics import solutions

    from experiments.monitor_facemask import _device

    device = _device(cfg.device)
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    counter = solutions.ObjectCounter(
        model=str(pt),
        region=[tuple(int(v) for v in point) for point in line],
        show=False,
        conf=cfg.conf,
        iou=cfg.iou,
        imgsz=imgsz,
        tracker=f"{cfg.tracker_type}.yaml",
        device="cpu" if device == "cpu" else 0,
        verbose=False,
    )
    capture, writer, frames = cv2.VideoCapture(str(source)), None, 0
    out.mkdir(parents=True, exist_ok=True)
    while cfg.max_frames is None or frames < cfg.max_frames:
        ok, bgr = capture.read()
        if not ok:
            break
        drawn = counter(bgr).plot_im
        if writer is None:
            fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
            writer = cv2.VideoWriter(str(out / "counter.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, drawn.shape[1::-1])
        writer.write(drawn)
        frames += 1
    capture.release()
    if writer is not None:
        writer.release()
    seconds = time.perf_counter() - start
    return {"frames": frames, "seconds": seconds, "in": counter.in_count, "out": counter.out_count}


def _line(args, work: Path) -> tuple[Path, list | None]:
    """The source and, with --counter, the counting line in pixels ([[x0, y0], [x1, y1]])."""
    import cv2

    source, line = args.source, None
    if args.clip:
        from synthetic.entrance import CLIP_NAME, SCENE_NAME, make_entrance_clip

        folder = make_entrance_clip(work / "entrance_clip", seed=0)
        scene = json.loads((folder / SCENE_NAME).read_text())
        source = folder / CLIP_NAME
        (x0, y0), (x1, y1) = next(iter(scene["lines"].values()))
        line = [[x0 * scene["width"], y0 * scene["height"]], [x1 * scene["width"], y1 * scene["height"]]]
    if args.counter and line is None:
        capture = cv2.VideoCapture(str(source))
        width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
        capture.release()
        line = [[width / 2, 0.0], [width / 2, height]]
    return source, line if args.counter else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=VIDEO, help="a video file")
    parser.add_argument("--ckpt", type=Path, help="a face-mask checkpoint (default: see above)")
    parser.add_argument("--tracker", choices=("bytetrack", "botsort"), default="bytetrack")
    parser.add_argument("--frames", type=int, help="the first N frames only (both)")
    parser.add_argument("--peer-threads", choices=("same", "own"), default="same")
    parser.add_argument("--clip", action="store_true", help="the generated entrance clip as the source")
    parser.add_argument("--counter", action="store_true", help="also ultralytics' ObjectCounter, one counting line")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # run_ours' timed process
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for our entry")
    args = parser.parse_args()
    if args.child:
        return _child(args.overrides)
    if not args.clip and not args.source.is_file():
        parser.error(f"--source {args.source}: video not found (see ../shared/data/README.md)")
    core.offline.disable_ultralytics_integrations()

    from facemask.inference import load_detector
    from facemask.ultralytics_checkpoint import write_ultralytics_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        args.source, line = _line(args, work)
        # a copy, so that the first call exports the detector as a user's first call does (`runtime_model` keeps the
        # export beside the checkpoint, and the user's own checkpoint folder may hold one already)
        ckpt = work / "checkpoint" / "best.ckpt"
        ckpt.parent.mkdir()
        shutil.copyfile(trained_checkpoint(args.ckpt, work), ckpt)
        overrides = [
            f"source={args.source}",
            f"ckpt={ckpt}",
            f"tracker_type={args.tracker}",
            f"out_dir={work / 'ours'}",
            f"paths.mlflow_dir={work}",
            *([f"max_frames={args.frames}"] if args.frames else []),
            *(
                [f"lines={{entrance:[[{line[0][0]},{line[0][1]}],[{line[1][0]},{line[1][1]}]]}}", "coordinates=pixels"]
                if line
                else []
            ),
            *args.overrides,
        ]
        cfg = compose("monitor_facemask", overrides)
        # the store as a user's is after their first run: its tables exist (a new store spends a second creating them)
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import mlflow; mlflow.MlflowClient({cfg.paths.mlflow_uri!r}).search_experiments()",
            ],
            check=True,
            capture_output=True,
            env=user_environment(),
        )
        module = load_detector(ckpt)
        imgsz = int(cfg.imgsz or module.hparams.imgsz)
        pt = write_ultralytics_checkpoint(module, work / "facemask.pt", imgsz)
        threads = torch.get_num_threads() if args.peer_threads == "same" else None
        # yolo track, ours, yolo track again: the reference brackets ours, so a drift of this machine's speed
        # (the same call varied from 5 to 10 s from one minute to the next here) biases the ratio less
        before = run_peer(pt, args.source, cfg, imgsz, work / "ultralytics", threads)
        if line:
            counter_before = run_counter(pt, args.source, cfg, imgsz, line, work / "ultralytics", threads)
        first = run_ours(overrides)  # exports the detector to ONNX beside the checkpoint and checks it
        ours = run_ours(overrides)  # every later call on that checkpoint: the export is reused
        if line:
            counter_after = run_counter(pt, args.source, cfg, imgsz, line, work / "ultralytics", threads)
        after = run_peer(pt, args.source, cfg, imgsz, work / "ultralytics", threads)
        peer = {k: before[k] + after[k] for k in ("frames", "seconds")} | {"threads": after["threads"]}

    first_fps = first["frames"] / first["seconds"]
    ours_fps, peer_fps = ours["frames"] / ours["seconds"], peer["frames"] / peer["seconds"]
    print(f"\nmonitor-facemask vs yolo track on {args.source.name}, {imgsz} px, {args.tracker}, checkpoint {ckpt}")
    print(
        f"  ours, first call on the checkpoint (ONNX export + check): {first_fps:.2f} frames/s over the call "
        f"({first['frames']} frames, {first['seconds']:.1f} s), {first_fps / peer_fps:.3f}x yolo track"
    )
    print(
        f"  ours, later calls (export reused): {ours_fps:.2f} frames/s over the call ({ours['frames']} frames, "
        f"{ours['seconds']:.1f} s), {ours['loop_fps']:.2f} frames/s in its frame loop"
    )
    print(
        f"  yolo track (save=True, {peer['threads']} torch threads): {peer_fps:.2f} frames/s over its two calls ({peer['frames']} frames, {peer['seconds']:.1f} s)"
    )
    print(json.dumps({"ours_first": first, "ours": ours, "yolo_track": peer}))
    if line:
        counter = {k: counter_before[k] + counter_after[k] for k in ("frames", "seconds")}
        counter_fps = counter["frames"] / counter["seconds"]
        print(
            f"  ObjectCounter (one line, annotated video): {counter_fps:.2f} frames/s over its two calls "
            f"({counter['frames']} frames, {counter['seconds']:.1f} s), in/out {counter_after['in']}/"
            f"{counter_after['out']}; ours in/out {ours['lines']}"
        )
        print_ratio(
            f"monitor-facemask frames/s, ours (later calls) / ultralytics ObjectCounter ({args.tracker})",
            ours_fps / counter_fps,
            1.0,
        )
    print_ratio(
        f"monitor-facemask frames/s, ours (later calls) / yolo track ({args.tracker})", ours_fps / peer_fps, 1.0
    )


if __name__ == "__main__":
    main()
