"""Face recognition by transfer learning: a pretrained backbone (VGG16 or dlib's ResNet face descriptor)
and a head of three dense layers with a softmax over the identities.

What the steps train on is declared, not guessed: `inputs` is the datamodule's `serves` (one config value,
`data.serves`). "features": the datamodule owns the frozen extractor and serves its cached features, and
each step runs only the head; "images": it serves uint8 crops and each step runs backbone and head. Either
way the model holds the backbone, so that a checkpoint classifies images (recognition, ONNX export): the
frozen extractor and the model's backbone are built from one spec (`faces.descriptors`) and `setup` checks
that their tags agree. The model only reads the datamodule (its identities, its declared mode and feature
tag, validation crops for the report); it never configures it.

The checkpoint keeps the identity names (`class_names`), the datamodule's face-crop settings and the calibrated
"unknown" threshold (`unknown_threshold`), which is all recognition needs besides the weights.

A softmax over the known people cannot say "nobody I know", so recognition calls a face `unknown` below a
confidence threshold calibrated on the validation split at each validation (`calibrate_unknown_threshold`): the
highest confidence that still names `unknown_keep` (95 %) of the correctly named validation faces. A stranger's
face, which the head has never seen, gets a flatter softmax than the known people's faces and falls below it. The
rule is the usual one for open-set rejection by maximum softmax probability (Hendrycks and Gimpel, "A Baseline
for Detecting Misclassified and Out-of-Distribution Examples", ICLR 2017: the threshold is set on
in-distribution data at a chosen true-positive rate).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassPrecision,
    MulticlassRecall,
)

from core.checkpoints import load_checkpoint, load_module
from core.errors import UserError
from core.metric_names import (
    CLASS_NAMES_ARTIFACT,
    CONFUSION_MATRIX_ARTIFACT,
    PER_CLASS_ARTIFACT,
    TEST_ACC,
    TEST_IMAGES,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_LOSS,
    class_metric_names,
    interval_names,
)
from faces.crop import FaceCrop
from faces.descriptors import build_backbone
from faces.recognition import Recognizer
from training.mlflow_logging import log_dict, log_figure, log_text

LABEL_MAP = "label_map.json"
INPUTS = ("images", "features")
log = logging.getLogger(__name__)


class FaceClassifier(pl.LightningModule):
    """Backbone (`faces.descriptors`) + a head of three dense layers (ReLU, dropout) + a linear layer with one
    logit per identity. `forward(images)`: uint8 RGB crops (B, 3, image_size, image_size) → logits (B, classes);
    `head_logits(features)`: backbone features (B, D) → logits; `predict_proba(images)`: softmax probabilities.

    `inputs` ("images" | "features") says what the training, validation and test batches hold (the datamodule's
    `serves`). A test run (`trainer.test`, once after training) logs `test/acc` with its Wilson interval
    (`test/acc_low`, `test/acc_high`, `core.intervals.wilson_interval`) and `test/images`. Raises UserError for a bad option, for `inputs="features"` with a backbone that trains, and at
    fit time when the datamodule serves something else or features of another backbone."""

    @classmethod
    def servable(cls, checkpoint: Path) -> tuple[torch.nn.Module, np.ndarray, object] | None:
        """What the training entry logs as this task's MLflow model, rebuilt from `checkpoint`: (the classifier in
        eval mode, an input example float32 (2, 3, size, size) of RGB crops in 0–255, `export_onnx`), mapping crops
        to logits (N, identities); None for the dlib backbone, which is no tensor graph."""
        hparams = load_checkpoint(checkpoint, key="the trained checkpoint").get("hyper_parameters", {})
        if hparams.get("backbone") != "vgg16":
            return None
        classifier = load_module(cls, checkpoint, key="the trained checkpoint", weights=None).eval()
        size = classifier.hparams.image_size
        example = np.random.default_rng(0).uniform(0, 255, (2, 3, size, size)).astype(np.float32)
        return classifier, example, export_onnx

    def __init__(
        self,
        backbone: str = "vgg16",
        weights: str
        | None = None,  # VGG16: a local vgg16-*.pth or Keras notop .h5 (vgg16_weights.py); null: random init
        normalize: str = "imagenet",  # VGG16 input scaling: "imagenet" or "unit" (the paper's rescale=1/255)
        pool: str = "avg",  # VGG16 output: "avg" (512-d) or "flatten" (the paper's)
        train_last_blocks: int = 0,  # VGG16 blocks trained from the end (0: frozen backbone)
        inputs: str = "images",  # what the batches hold: "images" (uint8 crops) or "features" (the datamodule's cached ones)
        image_size: int = 224,
        margin: float = 0.2,  # the crops' margin around the face box (dlib_resnet finds the landmarks inside it)
        hidden: tuple[int, ...] = (1024, 1024, 512),
        dropout: float = 0.5,
        optimizer: str = "adam",  # "adam" or "rmsprop" (the paper's)
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        misclassified_examples: int = 16,
        class_names: list[str] | None = None,  # set from the datamodule at fit time; kept in the checkpoint
        unknown_keep: float = 0.95,  # share of correctly named validation faces the "unknown" threshold keeps named
        unknown_threshold: float
        | None = None,  # calibrated at each validation (set, not configured); in the checkpoint
        feature_cache: bool | None = None,  # ignored: read from checkpoints written before `inputs` (data.serves)
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["feature_cache"], logger=False
        )  # the entry logs the whole resolved config as params
        if inputs not in INPUTS:
            raise UserError(f"model.inputs must be one of {list(INPUTS)}, got {inputs!r}")
        if optimizer not in ("adam", "rmsprop"):
            raise UserError(f"model.optimizer must be 'adam' or 'rmsprop', got {optimizer!r}")
        if len(hidden) != 3:
            raise UserError(f"model.hidden: the head has three dense layers, got sizes {list(hidden)}")
        if not 0 < unknown_keep <= 1:
            raise UserError(f"model.unknown_keep must be in (0, 1], got {unknown_keep}")
        self.backbone = build_backbone(
            backbone,
            weights=weights,
            normalize=normalize,
            pool=pool,
            train_last_blocks=train_last_blocks,
            margin=margin,
        )
        if inputs == "features" and not self.backbone.frozen:
            raise UserError(
                f"model.train_last_blocks={train_last_blocks} trains the backbone, which needs image crops: "
                "set data.serves=images"
            )
        self.head: nn.Module | None = None
        if class_names is not None:
            self._build_head(class_names)
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._test_counts = [0, 0]  # correctly named faces, faces

    def _build_head(self, class_names: list[str]) -> None:
        self.hparams.class_names = list(class_names)
        layers: list[nn.Module] = []
        width = self.backbone.out_features(self.hparams.image_size)
        for size in self.hparams.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(self.hparams.dropout)]
            width = size
        layers.append(nn.Linear(width, len(class_names)))  # logits; softmax in the loss and in predict_proba
        self.head = nn.Sequential(*layers)
        num_classes = len(class_names)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_precision = MulticlassPrecision(num_classes, average=None)
        self.val_recall = MulticlassRecall(num_classes, average=None)
        self.val_confusion = MulticlassConfusionMatrix(num_classes)

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams.class_names or [])

    # ---- fit-time checks (the datamodule is read, never driven) ---------------------------------
    def setup(self, stage: str) -> None:
        """Builds the head for the data's identities and checks that the data serves what `inputs` says,
        and in features mode the features of this model's backbone (else the checkpoint's backbone would not
        be the one the head learned from). Raises UserError on any mismatch."""
        data = self.trainer.datamodule
        if self.head is None:
            self._build_head(data.class_names)
        elif self.class_names != data.class_names:
            raise UserError(f"the checkpoint's identities {self.class_names} differ from the data's {data.class_names}")
        if data.serves != self.hparams.inputs:
            raise UserError(
                f"the data serves {data.serves} but model.inputs={self.hparams.inputs} (set both from data.serves)"
            )
        if self.hparams.inputs == "features" and data.feature_tag != self.backbone.tag():
            raise UserError(
                f"the data serves features of {data.feature_tag} but the model's backbone is {self.backbone.tag()} — "
                "data.features and the model's backbone options must be the same"
            )

    def on_fit_start(self) -> None:
        if self.hparams.backbone == "vgg16" and not self.hparams.weights:
            log.warning(
                "VGG16 trains from a random init (model.weights=null); for ImageNet transfer learning see docs/faces.md"
            )
        label_map = {"class_names": self.class_names, "backbone": self.hparams.backbone}
        log_dict(self.trainer, label_map, LABEL_MAP)
        log_dict(
            self.trainer,
            {**self._class_metric_names("precision"), **self._class_metric_names("recall")},
            CLASS_NAMES_ARTIFACT,
        )
        if self.trainer.is_global_zero:
            Path(self.trainer.default_root_dir, LABEL_MAP).write_text(json.dumps(label_map, indent=2))

    def _class_metric_names(self, kind: str) -> dict[str, str]:
        """{`val_class/<index>_<slug>/<kind>`: identity} in class order: identities are folder names, any characters."""
        return class_metric_names(self.class_names, prefix="val_class/", suffix=f"/{kind}")

    # ---- model ---------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of uint8 (or 0–255 float) RGB crops (B, 3, H, W): backbone, then head (what
        recognition and the ONNX export run)."""
        return self.head(self.backbone(images))

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of backbone features (B, D): the head alone (what cached features train)."""
        return self.head(features)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a training/validation batch, which holds what `inputs` declares."""
        return self.head_logits(x) if self.hparams.inputs == "features" else self(x)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (B, classes) of uint8 RGB crops (B, 3, H, W), on the model's device."""
        return F.softmax(self(images.to(self.device)), dim=1)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.hparams
        if hp.optimizer == "rmsprop":  # Keras' RMSprop: rho 0.9, eps 1e-7 (torch's alpha is Keras' rho)
            return torch.optim.RMSprop(params, lr=hp.lr, alpha=0.9, eps=1e-7, weight_decay=hp.weight_decay)
        return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        logits = self._logits(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log_dict(
            {TRAIN_LOSS: loss, TRAIN_ACC: self.train_acc},
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
            sync_dist=True,
        )
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y, index = batch
        logits = self._logits(x)
        loss = F.cross_entropy(logits, y)
        self.val_acc(logits, y)
        self.val_precision.update(logits, y)
        self.val_recall.update(logits, y)
        self.val_confusion.update(logits, y)
        self.log_dict(
            {VAL_LOSS: loss, VAL_ACC: self.val_acc},
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
            sync_dist=True,
        )
        probs = F.softmax(logits, dim=1)
        self._val_outputs.append((index.cpu(), y.cpu(), probs.cpu()))

    def on_validation_epoch_end(self) -> None:
        if self._val_outputs and not self.trainer.sanity_checking:
            _, truth, probs = (torch.cat(t) for t in zip(*self._val_outputs))
            threshold = calibrate_unknown_threshold(probs, truth, self.hparams.unknown_keep)
            if threshold is not None:
                # in hparams: Lightning writes them into every checkpoint saved after this validation
                self.hparams.unknown_threshold = threshold
                self.log("val/unknown_threshold", threshold)
        precision, recall = self.val_precision.compute(), self.val_recall.compute()
        per_class = {}
        for kind, values in (("precision", precision), ("recall", recall)):
            per_class.update(zip(self._class_metric_names(kind), values))
        self.log_dict(per_class, sync_dist=True)
        self._last_val = {
            "confusion": self.val_confusion.compute().cpu().numpy(),
            "precision": precision.cpu().numpy(),
            "recall": recall.cpu().numpy(),
            "outputs": [torch.cat(t) for t in zip(*self._val_outputs)] if self._val_outputs else None,
        }
        for metric in (self.val_precision, self.val_recall, self.val_confusion):
            metric.reset()
        self._val_outputs.clear()

    # ---- test: once, on the test split, with its interval ------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._test_counts = [0, 0]

    def test_step(self, batch, batch_idx: int) -> None:
        x, y, _ = batch
        predicted = self._logits(x).argmax(dim=1)
        self._test_counts[0] += int((predicted == y).sum())
        self._test_counts[1] += len(y)

    def on_test_epoch_end(self) -> None:
        from core.intervals import wilson_interval

        correct, total = self._test_counts
        low, high = interval_names(TEST_ACC)
        interval = wilson_interval(correct, total)
        accuracy = correct / total if total else float("nan")
        self.log_dict({TEST_ACC: accuracy, low: interval[0], high: interval[1], TEST_IMAGES: float(total)})

    def on_fit_end(self) -> None:
        """The last validation's confusion matrix, per-class table and misclassified faces, as artifacts."""
        last = getattr(self, "_last_val", None)
        if last is None or self.trainer.sanity_checking:
            return
        from core.figures import confusion_matrix

        epochs = self.current_epoch  # epochs completed
        log_figure(
            self.trainer,
            confusion_matrix(
                last["confusion"], self.class_names, title=f"Validation confusion matrix after {epochs} epoch(s)"
            ),
            CONFUSION_MATRIX_ARTIFACT,
        )
        table = {
            name: {
                "precision": float(last["precision"][i]),
                "recall": float(last["recall"][i]),
                "images": int(last["confusion"][i].sum()),
            }
            for i, name in enumerate(self.class_names)
        }
        log_dict(self.trainer, table, PER_CLASS_ARTIFACT)
        if last["outputs"] is not None:
            self._log_misclassified(*last["outputs"])

    def _log_misclassified(self, index: torch.Tensor, truth: torch.Tensor, probs: torch.Tensor) -> None:
        from core.figures import image_panel

        confidence, predicted = probs.max(dim=1)
        wrong = torch.nonzero(predicted != truth).flatten()
        wrong = wrong[confidence[wrong].argsort(descending=True)][: self.hparams.misclassified_examples]
        names = self.class_names
        if len(wrong) == 0:
            log_text(self.trainer, "no misclassified validation images\n", "misclassified.txt")
            return
        datamodule = self.trainer.datamodule
        panel = {
            f"{k + 1}. true {names[truth[i]]}\npredicted {names[predicted[i]]} ({confidence[i]:.2f})": datamodule.val_face(
                int(index[i])
            )
            for k, i in enumerate(wrong.tolist())
        }
        log_figure(
            self.trainer,
            image_panel(panel, f"Misclassified validation faces ({len(wrong)} shown, most confident first)", columns=4),
            "figures/misclassified.png",
        )


def calibrate_unknown_threshold(probs: torch.Tensor, truth: torch.Tensor, keep: float) -> float | None:
    """The softmax confidence below which a face is called unknown: the largest t such that at least `keep` of
    the correctly named faces have confidence >= t, i.e. the ceil(keep·n)-th highest confidence of the n correct
    ones (probs (N, classes) softmax probabilities, truth (N,) class indices). None when no face is named right
    (nothing to calibrate on). Source of the rule: the module docstring."""
    confidence, predicted = probs.max(dim=1)
    correct = confidence[predicted == truth].sort(descending=True).values
    if len(correct) == 0:
        return None
    return float(correct[int(np.ceil(keep * len(correct))) - 1])


def head_outputs(state_dict: dict[str, torch.Tensor]) -> int:
    """The number of identities the saved head predicts (its last Linear's rows)."""
    weights = sorted(
        (k for k in state_dict if k.startswith("head.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1])
    )
    return int(np.shape(state_dict[weights[-1]])[0])


def export_onnx(checkpoint_path: str | Path, out_path: str | Path, *, key: str = "CKPT") -> dict:
    """The classifier as ONNX (float RGB pixels 0–255, NCHW → logits), checked against PyTorch with ONNX Runtime;
    returns its manifest entry (an `ExportedModel`, `training.onnx_export`).

    Only the VGG16 backbone is a tensor graph; the dlib one finds landmarks and aligns in dlib: NotExportable. The
    checkpoint is read as data only (`core.checkpoints`); a refused or foreign file is a UserError starting with `key=`;
    ExportParityError when ONNX Runtime's logits differ by more than 1e-3 of their range (at least 1e-3)."""
    from training.onnx_export import ExportedModel, NotExportable, export_checked

    model = load_module(
        FaceClassifier, checkpoint_path, key=key, weights=None
    )  # the VGG16 weights are in the checkpoint
    if model.hparams.backbone != "vgg16":
        raise NotExportable(
            f"backbone {model.hparams.backbone!r} aligns faces in dlib, not in a tensor graph; "
            "only vgg16 exports to ONNX"
        )
    model.eval()
    size = model.hparams.image_size
    pixels = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (2, 3, size, size)).astype(np.float32))
    # logits have no fixed range: the tolerance is relative to their magnitude (export_checked's None)
    expected, parity = export_checked(
        model, pixels, out_path, "images", "logits", "the logits", None, "2 fixed uniform-noise images"
    )
    return ExportedModel(
        file=Path(out_path).name,
        checkpoint=str(checkpoint_path),
        input="images",
        output="logits",
        output_kind="logits",
        image_size=size,
        input_scale=1.0,
        preprocessing="the square face crop (margin around the box) resized, RGB 0–255",
        class_names=list(model.class_names),
        parity=parity,
        margin=float(model.hparams.margin),
    )


def load_recognizer(path: str | Path, threshold: float | None, label_map: str | Path | None = None) -> Recognizer:
    """Load a face-recognition checkpoint and check its identities against the label map written beside
    it at training time (`<run>/label_map.json`) or the one given. `threshold`: the confidence below which a face
    is unknown; None: the one calibrated at training (`unknown_threshold` in the checkpoint). Raises UserError for
    a file that is no face-recognition checkpoint, a label-map mismatch, or threshold None with a checkpoint
    written before calibration."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CKPT={path}: checkpoint not found")
    checkpoint = load_checkpoint(path, key="CKPT")
    names = checkpoint.get("hyper_parameters", {}).get("class_names")
    data = checkpoint.get("datamodule_hyper_parameters")
    if not names or data is None:
        raise UserError(
            f"CKPT={path} is not a face-recognition checkpoint (no identities in it) — give one written by `make vgg16-faces`"
        )
    if head_outputs(checkpoint["state_dict"]) != len(names):
        raise UserError(
            f"CKPT={path}: its head predicts {head_outputs(checkpoint['state_dict'])} identities but its label map names {len(names)}"
        )
    label_file = Path(label_map) if label_map else path.resolve().parent.parent / LABEL_MAP
    if label_map and not label_file.is_file():
        raise UserError(f"label_map={label_file}: file not found")
    if label_file.is_file():
        expected = json.loads(label_file.read_text())["class_names"]
        if expected != list(names):
            raise UserError(
                f"label map mismatch: {label_file} names {expected} but CKPT={path} was trained on {list(names)} — "
                "use the checkpoint and label_map.json of the same training run"
            )
    if threshold is None:
        threshold = checkpoint["hyper_parameters"].get("unknown_threshold")
        if threshold is None:
            raise UserError(
                f"CKPT={path} holds no calibrated unknown threshold (written before calibration, or no validation "
                "face was named right): give threshold=<softmax confidence>, or train again"
            )
    model = load_module(FaceClassifier, path, key="CKPT", weights=None)  # the VGG16 weights are in the checkpoint
    model.eval()
    return Recognizer(model, FaceCrop(data["image_size"], data["margin"], data.get("capture_size")), float(threshold))
