"""Face-mask training as `make yolo-facemask ARGS="data=facemask_real trainer=cpu_real"` runs it, against ultralytics'
own DetectionTrainer doing the same work with its defaults, in one run:

    python -m benchmarks.yolo_facemask_train [--epochs 4] [--profile out.prof] [hydra overrides for our entry …]
    make bench-yolo ARGS="--epochs 6 data.batch_size=8"

Ours: `python -m experiments.train experiment=yolo_facemask data=facemask_real trainer=cpu_real epochs=E <overrides>`
in a child process, exactly the make target's path (MLflow run, system metrics, checkpoints, figures, the logged
model), with its log folder and MLflow store in a temporary folder. The peer: ultralytics' `DetectionTrainer` in this
process on the same converted data (`data.yolo_dir`/data.yaml, the same `max_images` fraction and augmentation
overrides), model yaml, COCO start (`model.pretrained`, loaded by the same `load_pretrained`), image size, batch,
epochs, seed and device, each read from our composed config; everything else its defaults, plots, checkpoints
(last.pt, best.pt) and results.csv on. ultralytics sets 1 torch thread on a 2-core CPU (`NUM_THREADS` = cores − 1);
`--peer-threads same` (default) gives it ours, `--peer-threads own` keeps its choice. Precision: ours is the profile's
(cpu_real: bf16 autocast on a CPU with AMX, `core.config.cpu_mixed_precision`, and channels_last); the peer gets
`amp` when ours is not fp32, and ultralytics turns AMP off on any CPU (`check_amp`; its bf16 autocast is CUDA-only),
so on a CPU it trains in fp32, its default.

The peer trains before and after ours (the same seed: the same run twice), and its epochs of both runs are its
reference: this machine's speed drifts, and bracketing ours keeps the drift out of the ratio.

Printed: s/epoch of each (benchmarks/common.py: epochs 2 … E−1, start-up and end excluded), both last-epoch val
mAP50, the whole command's seconds, and `ratio …` = our speed / the peer's (goal ≥ 1.0). `--profile FILE` runs our
entry under cProfile and prints its 25 costliest functions (cumulative).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

import core  # noqa: F401  (offline switches, PROJECT_ROOT)
from benchmarks.common import compose, merge_overrides, per_epoch, print_ratio, steady_epoch_seconds, train_entry

TARGET = ("experiment=yolo_facemask", "data=facemask_real", "trainer=cpu_real")
MAP50 = "val/map50"


def peer_settings(cfg) -> dict:
    """ultralytics' trainer overrides for the work our composed config `cfg` asks."""
    yolo_dir = Path(cfg.data.yolo_dir)
    train_images = len(list((yolo_dir / "images" / "train").glob("*.png")))
    max_images = cfg.data.max_images  # the datamodule's rule (facemask/data.py): a fraction of the train images
    pretrained = cfg.model.pretrained
    if pretrained == "auto":
        pretrained = cfg.model.auto_pretrained if Path(cfg.model.auto_pretrained).is_file() else None
    return {
        "pretrained_file": pretrained,
        "overrides": {
            "model": cfg.model.arch,
            "data": str(yolo_dir / "data.yaml"),
            "imgsz": int(cfg.model.imgsz),
            "batch": int(cfg.data.batch_size),
            "epochs": int(cfg.trainer.max_epochs),
            "fraction": min(1.0, max_images / train_images) if max_images and train_images else 1.0,
            "seed": int(cfg.seed),
            "deterministic": bool(cfg.trainer.deterministic),
            "device": "cpu" if cfg.trainer.accelerator == "cpu" else 0,
            "amp": cfg.trainer.precision != "32-true",
            "pretrained": False,  # the COCO start is loaded below: ultralytics cannot read a yolov5-repo checkpoint
            **dict(cfg.data.augment),
        },
    }


def run_peer(settings: dict, out: Path, threads: int | None) -> dict:
    """ultralytics' DetectionTrainer with `settings` (peer_settings); its project folder under `out`."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    from facemask.yolov5_checkpoint import load_pretrained

    pretrained = settings["pretrained_file"]

    class Trainer(DetectionTrainer):
        def get_model(self, cfg=None, weights=None, verbose=True):
            model = super().get_model(cfg, None, verbose=False)
            if pretrained:
                load_pretrained(model, pretrained)
            return model

    trainer = Trainer(overrides={**settings["overrides"], "project": str(out), "name": "ultralytics", "exist_ok": True})
    starts, map50, used = [], [], []
    if threads:  # after its select_device has set its own count
        trainer.add_callback("on_train_start", lambda tr: torch.set_num_threads(threads))
    trainer.add_callback(
        "on_train_epoch_start", lambda tr: (starts.append(time.time()), used.append(torch.get_num_threads()))
    )
    trainer.add_callback("on_fit_epoch_end", lambda tr: map50.append(float(tr.metrics.get("metrics/mAP50(B)", "nan"))))
    start = time.perf_counter()
    trainer.train()
    # on_fit_epoch_end also runs once in final_eval (best.pt): the first E values are the epochs'
    return {
        "epoch_s": steady_epoch_seconds(starts),
        "map50": map50[len(starts) - 1],
        "wall_s": time.perf_counter() - start,
        "threads": max(used),  # its final validation resets the count: the epochs' own
    }


def print_profile(path: Path, lines: int = 25) -> None:
    import pstats

    print(f"\ncProfile of our entry ({path}), {lines} costliest functions by cumulative time:")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of both runs (>= 3; E-2 are timed)")
    parser.add_argument("--peer-threads", choices=("same", "own"), default="same")
    parser.add_argument("--profile", type=Path, help="run our entry under cProfile, stats to this file")
    parser.add_argument("--work-dir", type=Path, help="logs, MLflow store and ultralytics' runs (default: temporary)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for our entry (the peer follows them)")
    args = parser.parse_args()
    core.offline.disable_ultralytics_integrations()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        overrides = merge_overrides(
            [*TARGET, f"epochs={args.epochs}", f"paths.log_dir={work / 'logs'}", f"paths.mlflow_dir={work}"],
            args.overrides,
        )
        cfg = compose("train", overrides)
        instantiate(
            cfg.data, _convert_="partial"
        ).prepare_data()  # the YOLO layout the peer reads, as our entry makes it
        settings = peer_settings(cfg)
        threads = torch.get_num_threads() if args.peer_threads == "same" else None
        # ultralytics, ours, ultralytics again: the reference brackets ours, so a drift of this machine's speed
        # (the peer's epoch varied from 10.6 to 14.4 s between runs here) biases the ratio less
        before = run_peer(settings, work / "ultralytics", threads)
        ours = train_entry(overrides, work, profile=args.profile)
        after = run_peer(settings, work / "ultralytics", threads)
        peer = {
            "epoch_s": before["epoch_s"] + after["epoch_s"],
            "map50": after["map50"],
            "wall_s": (before["wall_s"] + after["wall_s"]) / 2,
            "threads": after["threads"],
        }

    setup = ", ".join(f"{k} {settings['overrides'][k]}" for k in ("model", "imgsz", "batch", "epochs", "fraction"))
    print(f"\nface-mask training ({setup}; start {settings['pretrained_file']}), epochs 2..{args.epochs - 1} timed")
    print(
        f"  ours  (make yolo-facemask): {per_epoch(ours['epoch_s'])}, val mAP50 {ours['metrics'].get(MAP50, float('nan')):.3f}, whole command {ours['wall_s']:.0f} s"
    )
    print(
        f"  ultralytics DetectionTrainer ({peer['threads']} threads): {per_epoch(peer['epoch_s'])}, val mAP50 {peer['map50']:.3f}, train() {peer['wall_s']:.0f} s (mean of its 2 runs)"
    )
    print(json.dumps({"ours": ours, "ultralytics": peer}, default=float))
    if args.profile:
        print_profile(args.profile)
    print_ratio(
        "face-mask training speed, ours / ultralytics per epoch",
        statistics.median(peer["epoch_s"]) / statistics.median(ours["epoch_s"]),
        1.0,
    )


if __name__ == "__main__":
    main()
