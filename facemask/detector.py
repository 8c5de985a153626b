"""YOLO detection as a LightningModule: an ultralytics `DetectionModel` trained with ultralytics' own loss,
validated with ultralytics' NMS and mAP (its `DetectionValidator`), nothing of them re-implemented.

The training recipe follows ultralytics' `DetectionTrainer` so that the two give the same results on the same
data: gradient accumulation to a nominal batch of `nbs` images, warm-up of learning rate, momentum and
accumulation over the first `warmup_epochs`, linear (or cosine) decay to `lrf`, gradient clipping at norm 10,
an exponential moving average of the weights (validated, exported and used for prediction), and mosaic
switched off for the last `close_mosaic` epochs. The optimizer choice "auto" is ultralytics' choice for runs
shorter than 10,000 optimizer steps: AdamW with lr0 = 0.002·5/(4 + classes).

Inference on images (load a trained detector, letterbox, NMS) is in `facemask.inference`, ONNX export in `facemask.export`.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn

from core import offline
from core.errors import UserError
from core.metric_names import (
    AP50_PREFIX,
    CLASS_NAMES_ARTIFACT,
    EPOCH,
    EPOCH_SUFFIX,
    PREDICTIONS_FOLDER,
    PREDICTIONS_SUFFIX,
    PRETRAINED_ARTIFACT,
    TEST,
    TEST_AP50_PREFIX,
    TEST_IMAGES,
    TEST_MAP50,
    TRAIN,
    VAL,
    YOLO_FITNESS,
    YOLO_LOSSES,
    YOLO_VAL_METRICS,
    class_metric_names,
    epoch_artifact,
    interval_names,
)
from training.mlflow_logging import log_artifact, log_dict, log_image, mlflow_logger

log = logging.getLogger(__name__)


def fitness(map50: float, map50_95: float) -> float:
    """The YOLO model-selection score, 0.1·mAP50 + 0.9·mAP50-95 (both in [0, 1]; so is the score): the weights
    (0, 0, 0.1, 0.9) over (precision, recall, mAP50, mAP50-95) of the paper's YOLOv5 (`utils/metrics.py:fitness`) and
    of older `ultralytics.utils.metrics.Metric.fitness` releases (the installed 8.4 weighs mAP50-95 alone)."""
    return 0.1 * map50 + 0.9 * map50_95


OPTIMIZERS = ("auto", "SGD", "Adam", "AdamW")


def build_model(arch: str, names: Sequence[str], loss: dict | None = None):
    """An ultralytics DetectionModel from a model yaml (`yolov5n.yaml` is YOLOv5u, `yolov8n.yaml`, `yolo11n.yaml`…)
    with the class names attached and the loss gains in `model.args`, where ultralytics' loss reads them."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    try:
        net = DetectionModel(arch, nc=len(names), verbose=False)
    except FileNotFoundError as exc:
        raise UserError(
            f"model.arch={arch!r} is not an ultralytics model yaml (e.g. yolov5n.yaml, yolov8s.yaml, yolo11n.yaml)"
        ) from exc
    net.names = dict(enumerate(names))
    net.args = get_cfg(overrides=dict(loss or {}))
    return net


class DetectionMetrics:
    """ultralytics' DetectionValidator used as an accumulator: its NMS, box matching, AP computation and confusion
    matrix. `compute` also keeps the epoch's `snapshot` (yolo_plots.ValidationSnapshot) for ultralytics' plots."""

    def __init__(
        self, names: Sequence[str], save_dir: str | Path, conf: float = 0.001, iou: float = 0.7, max_det: int = 300
    ) -> None:
        from ultralytics.models.yolo.detect import DetectionValidator

        self.names = list(names)
        # plots=True makes `update_metrics` count the confusion matrix (cheap); the curves are drawn only by
        # yolo_plots.write_plots, since `compute` asks ultralytics for the numbers without plots
        self.validator = DetectionValidator(
            save_dir=Path(save_dir),
            args={"conf": conf, "iou": iou, "max_det": max_det, "plots": True, "save_json": False, "verbose": False},
        )
        self.batches: list[dict] = []
        self.snapshot = None
        self.per_image: dict[str, list[np.ndarray]] = {}  # the last `compute`'s matching statistics, per image

    def reset(self, model: nn.Module, device: torch.device) -> None:
        v = self.validator
        v.device, v.data, v.training = device, {"names": dict(enumerate(self.names))}, True
        v.init_metrics(model)
        self.batches = []

    def update(self, preds, batch: dict) -> list[dict[str, torch.Tensor]]:
        """Add one batch (`img` scaled to [0, 1]); returns the batch's detections after NMS.

        PASCAL VOC's difficult objects (left out of the labels by the converter, kept beside them; see
        `facemask.voc_to_yolo.difficult_boxes`) are neither hits nor misses: a detection whose best match among
        the image's boxes of its class is a difficult one at IoU ≥ 0.5 is removed before ultralytics counts it.
        The first `yolo_plots.PLOTTED_BATCHES` batches are kept (on the CPU, uint8) for the plots."""
        from facemask.plots import PLOTTED_BATCHES, plotted_batch

        detections = self.validator.postprocess(preds)
        counted = [ignore_difficult(d, si, batch) for si, d in enumerate(detections)]
        self.validator.update_metrics(counted, batch)
        if len(self.batches) < PLOTTED_BATCHES:
            self.batches.append(plotted_batch(batch, counted))
        return detections

    def compute(self) -> dict:
        """mAP50, mAP50-95, precision, recall, AP50 per class (None for a class with no box in the images), images.

        The numbers are ultralytics' `DetectionValidator.get_stats` (`DetMetrics.process`, then `results_dict`),
        called here step by step to keep the matching statistics for `snapshot` and to draw nothing. The
        per-image statistics stay in `per_image` (`tp` (N, 10) bool, `conf` (N,), `pred_cls` (N,), `target_cls`
        (M,) per image, in the order seen) for `map50_interval`."""
        from facemask.plots import ValidationSnapshot

        v = self.validator
        self.per_image = {key: list(v.metrics.stats[key]) for key in PER_IMAGE_STATS}
        arrays = v.metrics.process(save_dir=v.save_dir, plot=False)
        stats = v.metrics.results_dict
        v.metrics.clear_stats()
        self.snapshot = ValidationSnapshot(self.names, arrays, v.confusion_matrix.matrix.copy(), self.batches)
        box = v.metrics.box
        ap50 = {self.names[int(c)]: float(box.ap50[i]) for i, c in enumerate(box.ap_class_index)}
        return {
            "map50": float(stats["metrics/mAP50(B)"]),
            "map50_95": float(stats["metrics/mAP50-95(B)"]),
            "precision": float(stats["metrics/precision(B)"]),
            "recall": float(stats["metrics/recall(B)"]),
            "ap50": {name: ap50.get(name) for name in self.names},
            "images": int(v.seen),
        }


PER_IMAGE_STATS = ("tp", "conf", "pred_cls", "target_cls")  # what ultralytics' validator collects per image


def map50(per_image: dict[str, Sequence[np.ndarray]], images: np.ndarray | None = None) -> float:
    """ultralytics' mAP50 (`DetMetrics.box.map50`: the mean over the classes with a box of AP at IoU 0.5, by
    `ultralytics.utils.metrics.ap_per_class`; 0 without any box) of the images `images` (indices into the
    `DetectionMetrics.per_image` lists, repeats allowed; None: all of them)."""
    from ultralytics.utils.metrics import ap_per_class

    if images is None:
        images = np.arange(len(per_image["tp"]))
    tp, conf, pred_cls, target_cls = (
        np.concatenate([np.asarray(per_image[key][i]) for i in images]) if len(images) else np.zeros(0)
        for key in PER_IMAGE_STATS
    )
    if not len(target_cls):
        return 0.0
    tp = tp.reshape(len(conf), -1)[:, :1] if len(conf) else np.zeros((0, 1), bool)  # IoU 0.5 only
    ap = ap_per_class(tp, conf, pred_cls, target_cls)[5]  # (classes with a box, 1)
    return float(ap[:, 0].mean()) if len(ap) else 0.0


def map50_interval(per_image: dict[str, Sequence[np.ndarray]], **bootstrap) -> tuple[float, float]:
    """The percentile bootstrap interval (low, high) of `map50` over the images of `per_image`: images drawn with
    replacement, mAP50 recomputed on each resample (`core.intervals.bootstrap_interval`; its keyword arguments:
    resamples, seed, confidence)."""
    from core.intervals import bootstrap_interval

    return bootstrap_interval(lambda images: map50(per_image, images), len(per_image["tp"]), **bootstrap)


DIFFICULT_IOU = 0.5  # PASCAL VOC's match threshold
RESULTS_ARTIFACT = "results.csv"  # the per-epoch table, named as ultralytics names it
PLOTS_FOLDER = "plots"  # the artifact folder of ultralytics' evaluation plots


def ignore_difficult(detection: dict[str, torch.Tensor], si: int, batch: dict) -> dict[str, torch.Tensor]:
    """Image `si`'s detections (ultralytics' dict after NMS, boxes in the batch's letterboxed pixels) without those
    whose best same-class match is one of the image's difficult boxes at IoU ≥ 0.5 (the VOC devkit's rule: the
    detection is then ignored, neither true nor false positive). Images without difficult boxes pass unchanged."""
    from torchvision.ops import box_iou
    from ultralytics.utils import ops

    from facemask.voc_to_yolo import difficult_boxes

    hard = difficult_boxes(batch["im_file"][si])
    if not len(hard) or not len(detection["cls"]):
        return detection
    device = detection["bboxes"].device
    h0, w0 = (int(v) for v in batch["ori_shape"][si])
    imgsz = tuple(batch["img"].shape[2:])
    ratio_pad = batch["ratio_pad"][si]
    # compare in the original image's pixels, mapped back with ultralytics' own letterbox inverse
    predicted = ops.scale_boxes(imgsz, detection["bboxes"].clone(), (h0, w0), ratio_pad=ratio_pad)
    hard = torch.from_numpy(hard).to(device)
    hard_boxes = ops.xywh2xyxy(hard[:, 1:]) * torch.tensor([w0, h0, w0, h0], device=device)
    mine = batch["batch_idx"].to(device) == si
    truth_cls = batch["cls"].to(device)[mine].view(-1)
    truth = ops.xywh2xyxy(batch["bboxes"].to(device)[mine]) * torch.tensor(imgsz, device=device)[[1, 0, 1, 0]]
    truth = ops.scale_boxes(imgsz, truth, (h0, w0), ratio_pad=ratio_pad)
    cls = detection["cls"].view(-1, 1)
    iou_hard = (box_iou(predicted, hard_boxes) * (cls == hard[:, 0].view(1, -1))).amax(dim=1)
    iou_truth = (
        (box_iou(predicted, truth) * (cls == truth_cls.view(1, -1))).amax(dim=1)
        if len(truth)
        else torch.zeros_like(iou_hard)
    )
    keep = ~((iou_hard >= DIFFICULT_IOU) & (iou_hard > iou_truth))
    return {k: v[keep] if isinstance(v, torch.Tensor) and len(v) == len(keep) else v for k, v in detection.items()}


class YoloDetector(pl.LightningModule):
    """Face-mask detection: an ultralytics DetectionModel (`arch`, e.g. yolov5n.yaml = YOLOv5u-n) trained by
    Lightning with ultralytics' own loss, warm-up, nominal-batch accumulation, EMA, close-mosaic switch and
    validator metrics, so that the numbers match what `yolo train` reports.

    Batches: ultralytics' collated dicts (`img` uint8 (B, 3, imgsz, imgsz), `batch_idx`, `cls`, `bboxes` normalised
    xywh). `forward(images)`: float (B, 3, H, W) in [0, 1] → raw predictions (B, 4 + classes, anchors).
    Logs per step the three losses (`core.metric_names`), per validation epoch `val/map50`, `val/map50_95`,
    precision, recall and AP50 per class (names made valid and stable by `core.metric_names`), and the first
    `figure_images` validation images with their predictions (`yolo_plots.prediction_grid`, a JPEG). A test run
    (`trainer.test`, once after training) logs the same figures under `test/`, with `test/map50_low` and
    `test/map50_high` (`map50_interval`) and `test/images`. At the end of
    training it logs ultralytics' plots of the last validation epoch under `plots/` (`write_plots`) and the
    per-epoch table `results.csv` (`write_results_csv`, one row per training epoch).
    `pretrained`: a local COCO checkpoint whose matching tensors are transferred (yolov5 repository files through
    `facemask/yolov5_checkpoint.py`), "auto" (`auto_pretrained` when present), or None.
    Raises UserError for a missing or foreign weights file.
    """

    @classmethod
    def servable(cls, checkpoint: Path) -> tuple[nn.Module, np.ndarray, object] | None:
        """What the training entry logs as this task's MLflow model, rebuilt from `checkpoint`
        (`facemask.export.servable`): the network mapping images (N, 3, imgsz, imgsz) RGB in [0, 1] to raw
        predictions (N, 4 + classes, anchors), an input example of batch 2, and `facemask.export.export_onnx`."""
        from facemask.export import servable

        return servable(checkpoint)

    @classmethod
    def pyfunc(cls, checkpoint: Path, work_dir: Path):
        """What the training entry logs as this task's servable MLflow model (`core.registry.PyfuncSpec`): photos
        in, boxes, class names and confidences out, after predict-facemask's letterbox and NMS
        (`facemask.serving`); its weights written to `work_dir`."""
        from facemask.serving import pyfunc_spec

        return pyfunc_spec(checkpoint, work_dir)

    def __init__(
        self,
        arch: str = "yolov5n.yaml",
        names: Sequence[str] = ("with_mask", "without_mask", "mask_weared_incorrect"),
        pretrained: str | None = None,  # a local weights file (yolov5 repo or ultralytics .pt); "auto"; None: scratch
        auto_pretrained: str | None = None,  # the file "auto" uses when it is present
        imgsz: int = 640,
        optimizer: str = "auto",
        lr0: float = 0.01,  # ignored by "auto"
        momentum: float = 0.937,
        weight_decay: float = 5e-4,
        nbs: int = 64,  # nominal batch size: gradients accumulate to it, weight decay scales with it
        batch_size: int = 16,  # images per step, the datamodule's (conf/model/yolo.yaml: ${data.batch_size})
        warmup_epochs: float = 3.0,
        warmup_momentum: float = 0.8,
        warmup_bias_lr: float = 0.1,  # 0 with "auto", as ultralytics does
        lrf: float = 0.01,  # final lr = lr0·lrf
        cos_lr: bool = False,
        close_mosaic: int = 10,
        ema: bool = True,
        loss: dict | None = None,  # ultralytics' loss gains: box, cls, dfl
        val: dict | None = None,  # NMS for validation: conf, iou, max_det
        figure_images: int = 6,
        figure_conf: float = 0.25,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # the entry logs the whole resolved config as params
        if optimizer not in OPTIMIZERS:
            raise UserError(f"model.optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.automatic_optimization = False  # ultralytics' accumulation schedule changes during warm-up
        offline.disable_ultralytics_integrations()
        self.names = list(names)
        self.net = build_model(arch, self.names, {"box": 7.5, "cls": 0.5, "dfl": 1.5, **(loss or {})})
        self.pretrained, self.pretrained_note = _resolve_pretrained(pretrained, auto_pretrained)
        self.transferred = 0
        if self.pretrained:
            from facemask.yolov5_checkpoint import load_pretrained

            self.transferred = load_pretrained(self.net, self.pretrained)
        self._ema = None
        if ema:
            from ultralytics.utils.torch_utils import ModelEMA

            self._ema = ModelEMA(self.net)
            self.ema_net = self._ema.ema  # a registered submodule: moved with the module, saved in checkpoints
        self._val = dict(val or {})
        self._metrics: DetectionMetrics | None = None
        self._test_metrics: DetectionMetrics | None = None
        self._figure: dict | None = None  # yolo_plots.plotted_batch of the epoch's first validation batch
        self._last_opt_step = -1
        self._mosaic_closed = False
        self.last_validation = None  # yolo_plots.ValidationSnapshot of the last validation epoch
        self.results: list[dict[str, float]] = []  # results.csv: one row per training epoch
        self._validated_epoch = -1

    @property
    def eval_net(self) -> nn.Module:
        """The weights that are validated, exported and used for prediction (the EMA when enabled)."""
        return self.ema_net if self._ema is not None else self.net

    def forward(self, images: torch.Tensor):
        return self.eval_net(images)

    # -- optimisation: ultralytics' DetectionTrainer recipe ----------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        batch = hp.batch_size
        self._accumulate_nominal = max(round(hp.nbs / batch), 1)
        decay = hp.weight_decay * batch * self._accumulate_nominal / hp.nbs
        name, lr, momentum = hp.optimizer, hp.lr0, hp.momentum
        self._warmup_bias_lr = hp.warmup_bias_lr
        if name == "auto":
            name, lr, momentum = "AdamW", round(0.002 * 5 / (4 + len(self.names)), 6), 0.9
            self._warmup_bias_lr = 0.0
        groups = {"weight": [], "bn": [], "bias": []}
        norms = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)
        for module in self.net.modules():
            for param_name, param in module.named_parameters(recurse=False):
                kind = "bias" if param_name == "bias" else "bn" if isinstance(module, norms) else "weight"
                groups[kind].append(param)
        if name == "SGD":
            make, args = torch.optim.SGD, {"lr": lr, "momentum": momentum, "nesterov": True}
        else:
            make, args = getattr(torch.optim, name), {"lr": lr, "betas": (momentum, 0.999)}
        return make(
            [
                {
                    "params": params,
                    "param_group": kind,
                    "weight_decay": decay if kind == "weight" else 0.0,
                    "initial_lr": lr,
                    **args,
                }
                for kind, params in groups.items()
            ],
            **args,
        )

    def _lr_factor(self, epoch: int) -> float:
        hp, epochs = self.hparams, max(self.trainer.max_epochs, 1)
        if hp.cos_lr:
            return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (hp.lrf - 1) + 1
        return max(1 - epoch / epochs, 0) * (1.0 - hp.lrf) + hp.lrf

    @property
    def ap50_metric_names(self) -> dict[str, str]:
        """{MLflow metric name: class name} of the per-class AP50, in class order (`val/ap50/<index>_<slug>`)."""
        return class_metric_names(self.names, prefix=AP50_PREFIX)

    def on_fit_start(self) -> None:
        log_dict(
            self.trainer,
            {
                "pretrained": self.pretrained,
                "note": self.pretrained_note,
                "transferred_tensors": self.transferred,
                "model_tensors": len(self.net.state_dict()),
            },
            PRETRAINED_ARTIFACT,
        )
        log_dict(self.trainer, self.ap50_metric_names, CLASS_NAMES_ARTIFACT)

    def on_train_start(self) -> None:
        nb, epochs = self.trainer.num_training_batches, max(self.trainer.max_epochs, 1)
        warmup_epochs = min(self.hparams.warmup_epochs, max(epochs - 1, 0))
        self._warmup_iters = round(warmup_epochs * nb)
        self._accumulate_nominal = min(self._accumulate_nominal, nb * epochs)
        self._accumulate = self._accumulate_nominal
        self._last_opt_step = -1

    def on_train_epoch_start(self) -> None:
        epochs, close = self.trainer.max_epochs, self.hparams.close_mosaic
        if close and self.current_epoch >= epochs - close and not self._mosaic_closed:
            self.trainer.datamodule.close_mosaic()  # as ultralytics: a run of <= close epochs has no mosaic at all
            self._mosaic_closed = True
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self._lr_factor(self.current_epoch)

    def _warm_up(self, ni: int) -> None:
        if not self._warmup_iters or ni > self._warmup_iters:
            return
        hp, xi = self.hparams, [0, self._warmup_iters]
        self._accumulate = max(1, int(np.interp(ni, xi, [1, self._accumulate_nominal]).round()))
        for group in self.optimizers().optimizer.param_groups:
            start = self._warmup_bias_lr if group["param_group"] == "bias" else 0.0
            group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * self._lr_factor(self.current_epoch)]))
            if "momentum" in group:
                group["momentum"] = float(np.interp(ni, xi, [hp.warmup_momentum, hp.momentum]))

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        batch["img"] = batch["img"].float() / 255
        return batch

    def training_step(self, batch: dict, batch_idx: int) -> None:
        ni = batch_idx + self.trainer.num_training_batches * self.current_epoch
        self._warm_up(ni)
        loss, items = self.net.loss(batch)
        if not torch.isfinite(loss).all():
            raise UserError(
                f"non-finite YOLO loss at epoch {self.current_epoch}, batch {batch_idx}: {items} — lower model.lr0"
            )
        self.manual_backward(loss.sum())
        if ni - self._last_opt_step >= self._accumulate:
            optimizer = self.optimizers()
            optimizer.step()  # clipping happens in on_before_optimizer_step, after AMP has unscaled the gradients
            optimizer.zero_grad()
            if self._ema is not None:
                self._ema.update(self.net)
            self._last_opt_step = ni
        size = batch["img"].shape[0]
        self.log_dict(
            {f"{TRAIN}{k}": items[k] for k in YOLO_LOSSES}, on_step=True, on_epoch=True, prog_bar=True, batch_size=size
        )
        self.log(
            "train/lr", self.optimizers().optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=size
        )

    def on_before_optimizer_step(self, optimizer) -> None:
        self.clip_gradients(optimizer, gradient_clip_val=10.0, gradient_clip_algorithm="norm")

    # -- validation: ultralytics' NMS and mAP ------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        if self._metrics is None:
            save_dir = Path(self.trainer.default_root_dir) / "val"
            self._metrics = DetectionMetrics(self.names, save_dir, **self._val)
        self._metrics.reset(self.eval_net, self.device)
        self._figure = None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # the metrics at the weights' precision (fp32 under bf16-mixed or 16-mixed), not autocast's: under bf16
        # autocast the decoded boxes keep 8 significant bits (steps of 2 px at 256-512 px), which moves mAP50-95
        with torch.autocast(self.device.type, enabled=False):
            preds = self.eval_net(batch["img"])
            _, items = self.eval_net.loss(batch, preds[1])
        detections = self._metrics.update(preds, batch)
        self.log_dict({f"{VAL}{k}": items[k] for k in YOLO_LOSSES}, on_epoch=True, batch_size=batch["img"].shape[0])
        if batch_idx == 0 and self.hparams.figure_images:
            from facemask.plots import plotted_batch

            self._figure = plotted_batch(batch, detections, limit=self.hparams.figure_images)

    def _split_metrics(self, results: dict, prefix: str, ap50_prefix: str) -> dict[str, float]:
        """`DetectionMetrics.compute`'s figures under their metric names: `<prefix><key>` and per-class AP50
        `<ap50_prefix><index>_<slug>` (a class without a box in the images is left out)."""
        metrics = {f"{prefix}{k}": results[k] for k in YOLO_VAL_METRICS}
        ap50 = [results["ap50"][name] for name in self.names]  # in the order of the metric names
        keys = class_metric_names(self.names, prefix=ap50_prefix)
        metrics.update({key: value for key, value in zip(keys, ap50) if value is not None})
        return metrics

    def on_validation_epoch_end(self) -> None:
        results = self._metrics.compute()
        self.last_metrics = results
        metrics = self._split_metrics(results, VAL, AP50_PREFIX)
        metrics[YOLO_FITNESS] = fitness(results["map50"], results["map50_95"])
        self.log_dict(metrics, on_epoch=True)
        if not self.trainer.sanity_checking:
            self.last_validation = self._metrics.snapshot
            self._validated_epoch = self.current_epoch
        if self._figure is not None and not self.trainer.sanity_checking and self.trainer.is_global_zero:
            from facemask.plots import prediction_grid

            grid = prediction_grid(self._figure, self.names, self.hparams.figure_conf)
            log_image(
                self.trainer, grid, epoch_artifact(PREDICTIONS_FOLDER, self.current_epoch + 1, PREDICTIONS_SUFFIX)
            )

    # -- test: the validation metrics on the test split, once, with their interval --------------------------
    def on_test_epoch_start(self) -> None:
        if self._test_metrics is None:
            save_dir = Path(self.trainer.default_root_dir) / "test"
            self._test_metrics = DetectionMetrics(self.names, save_dir, **self._val)
        self._test_metrics.reset(self.eval_net, self.device)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        with torch.autocast(self.device.type, enabled=False):  # as validation_step: the weights' precision
            preds = self.eval_net(batch["img"])
        self._test_metrics.update(preds, batch)

    def on_test_epoch_end(self) -> None:
        results = self._test_metrics.compute()
        self.last_test_metrics = results
        metrics = self._split_metrics(results, TEST, TEST_AP50_PREFIX)
        low, high = interval_names(TEST_MAP50)
        metrics[low], metrics[high] = map50_interval(self._test_metrics.per_image)
        metrics[TEST_IMAGES] = float(results["images"])
        self.log_dict(metrics, on_epoch=True)

    # -- what YOLO users expect at the end: results.csv and ultralytics' plots ---------------------------------
    def on_train_epoch_end(self) -> None:
        # Lightning runs the epoch's validation before this hook and the checkpoint callbacks after it, so the row
        # is complete and saved with the epoch's checkpoint (a resumed run keeps its earlier rows)
        logged = self.trainer.callback_metrics
        row = {EPOCH: float(self.current_epoch + 1)}
        row.update({key: float(v) for key, v in logged.items() if key.startswith(TRAIN) and key.endswith(EPOCH_SUFFIX)})
        row["train/lr"] = float(self.optimizers().optimizer.param_groups[0]["lr"])
        if self._validated_epoch == self.current_epoch:  # otherwise the val/ values are an earlier epoch's
            row.update({key: float(value) for key, value in logged.items() if key.startswith(VAL)})
        self.results.append(row)

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero or mlflow_logger(self.trainer) is None:
            return  # nowhere to log (benchmarks, bare trainers): no seconds spent drawing
        with tempfile.TemporaryDirectory() as tmp:
            if self.results:
                write_results_csv(self.results, Path(tmp) / RESULTS_ARTIFACT)
                log_artifact(self.trainer, Path(tmp) / RESULTS_ARTIFACT)
            if self.write_plots(Path(tmp) / PLOTS_FOLDER):
                log_artifact(self.trainer, Path(tmp) / PLOTS_FOLDER, PLOTS_FOLDER)

    def write_plots(self, folder: str | Path) -> list[Path]:
        """ultralytics' plots of the last validation epoch (PR, F1, P and R curves, confusion matrices, validation
        batches with labels and predictions; `yolo_plots.write_plots`) into `folder`; [] before any validation."""
        from facemask.plots import write_plots

        return write_plots(self.last_validation, folder) if self.last_validation is not None else []

    # -- checkpoints -------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._ema is not None:
            checkpoint["ema_updates"] = self._ema.updates
        checkpoint["results"] = [dict(row) for row in self.results]  # plain floats: safe for weights_only loading

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self._ema is not None:
            self._ema.updates = checkpoint.get("ema_updates", 0)
        self.results = [dict(row) for row in checkpoint.get("results", [])]


def write_results_csv(rows: Sequence[dict[str, float]], path: str | Path) -> None:
    """One line per epoch, the columns in order of first appearance (MLflow's metric names; `epoch` 1-based as in
    ultralytics' results.csv); a value an epoch did not log (e.g. AP50 of a class without boxes) is left empty."""
    import csv

    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _resolve_pretrained(pretrained: str | None, auto_pretrained: str | None) -> tuple[str | None, str]:
    """(the weights file to start from, or None for from scratch; a note saying why, "" for a file that was asked
    for or found). The note goes into the run's pretrained.json, where the report reads it."""
    if pretrained != "auto":
        return pretrained, "" if pretrained else "model.pretrained=null"
    if auto_pretrained and Path(auto_pretrained).is_file():
        return auto_pretrained, ""
    note = f"model.pretrained=auto: {auto_pretrained} not found"
    log.warning("%s, training from scratch (put the COCO checkpoint there to fine-tune from it)", note)
    return None, note
