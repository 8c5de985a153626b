"""YOLO face-mask: the Lightning module vs ultralytics' own DetectionTrainer, and PyTorch vs ONNX Runtime.

    python -m benchmarks.yolo_step                                   # built-in synthetic set, CPU, 320 px
    python -m benchmarks.yolo_step --voc ../shared/data/facemask-voc --epochs 30 --imgsz 416

One run trains the same model (yaml, pretrained start), on the same converted data, image size, batch, workers
and epochs, first with `YoloDetector` under a Lightning Trainer, then with ultralytics' `DetectionTrainer`, and
prints the median seconds per training batch (forward, loss, backward, optimizer; data loading excluded), the
seconds per epoch (data loading and validation included), both runs' final val mAP50, and the speed ratio
(Lightning speed / ultralytics speed; the goal is ≥ 0.9). Then it exports the Lightning model to ONNX and prints
inference images/s (batch 1, letterbox + forward + NMS) of PyTorch and ONNX Runtime on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

import core  # offline switches first (core.offline)
from facemask.data import YoloDataModule
from facemask.detector import YoloDetector
from facemask.export import export_onnx, onnx_detect
from facemask.inference import detect, load_detector
from synthetic import make_facemask
from synthetic.facemask import FACEMASK_CLASSES
from training.onnx_export import onnx_session

SKIP_BATCHES = 2  # the first batches include allocator and thread-pool warm-up


class BatchTimer(pl.Callback):
    def __init__(self) -> None:
        self.batch, self.epoch, self._t = [], [], 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        self.batch.append(time.perf_counter() - self._t)

    def on_train_epoch_start(self, trainer, module):
        self._epoch_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module):  # runs before on_train_epoch_end's bookkeeping
        if not trainer.sanity_checking:
            self.epoch.append(time.perf_counter() - self._epoch_start)


def run_lightning(args, data: YoloDataModule, out: Path) -> dict:
    pl.seed_everything(args.seed, workers=True, verbose=False)
    module = YoloDetector(
        arch=args.arch,
        names=FACEMASK_CLASSES,
        pretrained=args.pretrained,
        imgsz=args.imgsz,
        batch_size=data.batch_size,
        figure_images=0,
    )
    timer = BatchTimer()
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator=args.device,
        devices=1,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=args.device == "cpu",
        callbacks=[timer],
        default_root_dir=str(out),
        limit_train_batches=args.steps or 1.0,
    )
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(out / "lightning.ckpt")
    return {
        "batch_s": timer.batch,
        "epoch_s": timer.epoch,
        "map50": module.last_metrics["map50"],
        "checkpoint": str(out / "lightning.ckpt"),
    }


def run_ultralytics(args, data: YoloDataModule, out: Path) -> dict:
    from ultralytics.models.yolo.detect import DetectionTrainer

    from facemask.yolov5_checkpoint import load_pretrained

    class Trainer(DetectionTrainer):  # the same pretrained start (ultralytics cannot read a yolov5-repo checkpoint)
        def get_model(self, cfg=None, weights=None, verbose=True):
            model = super().get_model(cfg, None, verbose=False)
            if args.pretrained:
                load_pretrained(model, args.pretrained)
            return model

    batch_s, epoch_s, state = [], [], {}
    trainer = Trainer(
        overrides={
            "model": args.arch,
            "data": str(data.yolo_dir / "data.yaml"),
            "imgsz": args.imgsz,
            "batch": args.batch,
            "epochs": args.epochs,
            "workers": args.workers,
            "device": "cpu" if args.device == "cpu" else 0,
            "seed": args.seed,
            "deterministic": args.device == "cpu",
            "amp": args.precision != "32-true",
            "plots": False,
            "save": False,
            "val": True,
            "project": str(out),
            "name": "ultralytics",
            "exist_ok": True,
            "verbose": False,
            "pretrained": False,
            "fraction": 1.0,
        }
    )

    def batch_start(tr):
        state["t"] = time.perf_counter()

    def batch_end(tr):
        if args.device != "cpu":
            torch.cuda.synchronize()
        batch_s.append(time.perf_counter() - state["t"])
        if args.steps and len(batch_s) % args.steps == 0:
            tr.stop = True

    def epoch_start(tr):
        state["epoch"] = time.perf_counter()

    def epoch_end(tr):
        epoch_s.append(time.perf_counter() - state["epoch"])

    def same_threads(
        tr,
    ):  # ultralytics sets min(8, cores - 1) threads (1 on a 2-core machine): use the same as Lightning
        torch.set_num_threads(args.threads)

    for event, fn in (
        ("on_train_start", same_threads),
        ("on_train_batch_start", batch_start),
        ("on_train_batch_end", batch_end),
        ("on_train_epoch_start", epoch_start),
        ("on_fit_epoch_end", epoch_end),
    ):
        trainer.add_callback(event, fn)
    trainer.train()
    return {
        "batch_s": batch_s,
        "epoch_s": epoch_s,
        "map50": float(trainer.metrics.get("metrics/mAP50(B)", float("nan"))),
    }


def inference(checkpoint: str, images: list[np.ndarray], imgsz: int, out: Path, repeats: int) -> dict:
    torch_net = load_detector(checkpoint).eval_net
    exported = export_onnx(checkpoint, out / "model.onnx", imgsz)
    session = onnx_session(out / "model.onnx")
    rates = {}
    for name, run in (
        ("pytorch", lambda im: detect(torch_net, [im], imgsz)),
        ("onnxruntime", lambda im: onnx_detect(session, [im], imgsz)),
    ):
        run(images[0])  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            for image in images:
                run(image)
        rates[name] = repeats * len(images) / (time.perf_counter() - start)
    return {"images_per_s": rates, "parity": exported["parity"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", help="VOC folder (images/ + annotations/); default: the built-in synthetic set")
    parser.add_argument("--arch", default="yolov5n.yaml")
    parser.add_argument(
        "--pretrained", default=None, help="weights file for both runs (e.g. ../shared/data/weights/yolov5n.pt)"
    )
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=0, help="training batches per epoch (0: all)")
    parser.add_argument("--workers", type=int, default=0, help="loader processes (ultralytics uses 0 on a CPU)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument(
        "--precision", default="32-true", help="Lightning precision; anything but 32-true = ultralytics' AMP"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", choices=("lightning", "ultralytics"), help="run one trainer (e.g. each on its own cores)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for both trainers")
    parser.add_argument("--inference-repeats", type=int, default=3)
    parser.add_argument("--work-dir", default=None, help="where data and runs go (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    core.offline.disable_ultralytics_integrations()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        voc = Path(args.voc) if args.voc else make_facemask(work / "synthetic-voc", seed=0, images=120)
        data = YoloDataModule(
            str(voc),
            str(work / "yolo"),
            FACEMASK_CLASSES,
            imgsz=args.imgsz,
            batch_size=args.batch,
            num_workers=args.workers,
            seed=args.seed,
        )
        data.prepare_data()
        runs = {
            name: run(args, data, work)
            for name, run in (("lightning", run_lightning), ("ultralytics", run_ultralytics))
            if args.only in (None, name)
        }
        if "lightning" in runs:
            from core.images import read_rgb

            val_images = [read_rgb(p) for p in sorted((data.yolo_dir / "images" / "val").glob("*.png"))[:8]]
            runs["inference_cpu"] = inference(
                runs["lightning"].pop("checkpoint"), val_images, args.imgsz, work, args.inference_repeats
            )

    def median(xs):
        return statistics.median(xs[SKIP_BATCHES:] if len(xs) > SKIP_BATCHES + 2 else xs)

    setup = f"{args.arch}, {args.imgsz} px, batch {args.batch}, {args.device}, {args.threads} threads"
    result = {
        "setup": {
            k: getattr(args, k)
            for k in (
                "voc",
                "arch",
                "pretrained",
                "imgsz",
                "batch",
                "epochs",
                "steps",
                "workers",
                "device",
                "precision",
                "threads",
                "seed",
            )
        }
    }
    for name in ("lightning", "ultralytics"):
        if name in runs:
            r = runs[name]
            result[name] = {
                "median_batch_s": median(r["batch_s"]),
                "mean_epoch_s": statistics.mean(r["epoch_s"]),
                "batches": len(r["batch_s"]),
                "val_map50": r["map50"],
            }
            print(
                f"{name}: {result[name]['median_batch_s']:.3f} s per training batch, {result[name]['mean_epoch_s']:.1f} s per "
                f"epoch incl. data and validation, val mAP50 {r['map50']:.3f} after {args.epochs} epoch(s) ({setup})"
            )
    if len(runs.keys() & {"lightning", "ultralytics"}) == 2:
        lt, ul = result["lightning"], result["ultralytics"]
        result["speed_ratio_batch"] = ul["median_batch_s"] / lt["median_batch_s"]
        result["speed_ratio_epoch"] = ul["mean_epoch_s"] / lt["mean_epoch_s"]
        print(
            f"Lightning at {result['speed_ratio_batch']:.2f}x ultralytics' speed per batch, {result['speed_ratio_epoch']:.2f}x "
            f"per epoch (goal >= 0.9); val mAP50 difference {lt['val_map50'] - ul['val_map50']:+.3f} (goal within 0.03)"
        )
    if "inference_cpu" in runs:
        result["inference_cpu"] = runs["inference_cpu"]
        rates = runs["inference_cpu"]["images_per_s"]
        print(
            f"CPU inference, batch 1, {args.imgsz} px: PyTorch {rates['pytorch']:.1f} images/s, ONNX Runtime "
            f"{rates['onnxruntime']:.1f} images/s -> {rates['onnxruntime'] / rates['pytorch']:.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
