"""MLflow names for values that come from the data (class names, identities): valid, distinct and stable.

MLflow accepts only some characters in metric, param and tag keys (`mlflow.utils.validation`), and Lightning's
MLflow logger silently strips the others, so `戴口罩` and `未戴口罩` both became `val/ap50_` and one class's
metric overwrote the other's. Every per-class name therefore goes through `class_metric_names`: the class's index
(its position in the class list, which is the model's class id) makes the name unique, a slug of the class name
keeps it readable, and the original names are kept in the run as a mapping artifact (`CLASS_NAMES_ARTIFACT`).

It also owns every metric, tag and artifact name that one module logs and another reads back (the report,
reporting/mlflow_runs.py, the notebooks): the producer and the reader import the same constant, so renaming a
metric cannot leave the report reading a name nobody logs. They live here, in the foundations, because reporting
may not import the applications (the import-linter contracts of pyproject.toml). Names that only their producer
uses (e.g. `train/lr`, `train/d_real`) stay in the producer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

CLASS_NAMES_ARTIFACT = "class_names.json"  # {metric name: class name} logged next to per-class metrics

# -- every training run ----------------------------------------------------------------------------------------
EPOCH = "epoch"  # the 0-based epoch Lightning logs with each metric (DCGAN logs it itself, on its epoch axis)
EPOCH_SUFFIX = "_epoch"  # Lightning's suffix for the epoch mean of a value logged with on_step=True and on_epoch=True
TRAIN, VAL, TEST = "train/", "val/", "test/"  # metric name prefixes: the split a value was measured on
# The test split, evaluated once after training on the checkpoint the run keeps (experiments/train.py): nothing
# selects on it. Each figure comes with its 95 % interval (`interval_names`) and the test split's image count.
TEST_IMAGES = f"{TEST}images"
INTERVAL_SUFFIXES = ("_low", "_high")
TEST_CHECKPOINT_TAG = "test.checkpoint"  # the checkpoint file the test figures were measured with (best.ckpt)


def interval_names(metric: str) -> tuple[str, str]:
    """The names of the lower and upper bound of `metric`'s confidence interval: `<metric>_low`, `<metric>_high`."""
    return f"{metric}_low", f"{metric}_high"


def epoch_artifact(folder: str, epoch: int, suffix: str = ".png") -> str:
    """The artifact path of an image logged once per epoch: `<folder>/epoch_<epoch:04d><suffix>` (`epoch` 1-based;
    MLflow's log_image encodes by the suffix). Zero-padded so that name order is epoch order: the report shows the
    last file of the folder by name."""
    return f"{folder}/epoch_{epoch:04d}{suffix}"


# -- YOLO detector (facemask/detector.py) --------------------------------------------------------
YOLO_LOSSES = ("box_loss", "cls_loss", "dfl_loss")  # ultralytics' loss terms, logged as train/<term> and val/<term>
YOLO_VAL_METRICS = (
    "map50",
    "map50_95",
    "precision",
    "recall",
)  # keys of DetectionMetrics.compute(), logged as val/<key>
MAP50, MAP50_95, PRECISION, RECALL = (f"{VAL}{key}" for key in YOLO_VAL_METRICS)
AP50_PREFIX = f"{VAL}ap50/"  # + class_key(index, name): per-class AP50
TEST_MAP50 = f"{TEST}map50"  # the test split's mAP50, with interval_names(TEST_MAP50): a percentile bootstrap
TEST_AP50_PREFIX = f"{TEST}ap50/"  # + class_key(index, name): per-class AP50 on the test split
OLD_AP50_PREFIX = f"{VAL}ap50_"  # + the class name: runs from before class_metric_names (read, never written)
# {"pretrained", "note", "transferred_tensors", "model_tensors"}: how the run started
PRETRAINED_ARTIFACT = "pretrained.json"
# epoch_artifact(PREDICTIONS_FOLDER, epoch, PREDICTIONS_SUFFIX): validation images with boxes
PREDICTIONS_FOLDER = "predictions"
# JPEG, as ultralytics writes its val_batch*_pred.jpg: a 1664-px grid of photos took 0.99 s to encode as PNG here
# and 0.012 s as JPEG, every epoch
PREDICTIONS_SUFFIX = ".jpg"

# -- DCGAN (dcgan/module.py) ------------------------------------------------------------------------
GAN_NETS = ("d", "g")  # discriminator, generator
GAN_LOSS_KINDS = ("epoch", "last")  # the epoch's mean loss, its last batch's loss


def gan_loss(net: str, kind: str) -> str:
    """`train/<net>_loss_<kind>` for `net` in GAN_NETS and `kind` in GAN_LOSS_KINDS (one value per epoch)."""
    return f"{TRAIN}{net}_loss_{kind}"


def gan_loss_std(net: str) -> str:
    """`stability/<net>_loss_std`: the standard deviation of `net`'s epoch-mean loss over the fluctuation window."""
    return f"stability/{net}_loss_std"


QUALITY = "quality/"  # + a SampleQuality key: FID, KID … of the epoch's samples
FID, KID = f"{QUALITY}fid", f"{QUALITY}kid"
DIVERSITY = f"{QUALITY}diversity"  # the samples' mean pairwise feature distance / the real images' (1: as varied)
QUALITY_TAG = "quality."  # + a SampleQuality setting: run tags saying what the metric adapted to the data
FID_TRUSTWORTHY_TAG, REAL_SAMPLES_TAG = f"{QUALITY_TAG}fid_trustworthy", f"{QUALITY_TAG}real_samples"
SAMPLES_FOLDER = "samples"  # epoch_artifact(SAMPLES_FOLDER, epoch): the fixed-noise sample grid

# -- face classifier (faces/classifier.py) ----------------------------------------------------
TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC = f"{TRAIN}loss", f"{TRAIN}acc", f"{VAL}loss", f"{VAL}acc"
TEST_ACC = f"{TEST}acc"  # the test split's accuracy, with interval_names(TEST_ACC): a Wilson score interval
CONFUSION_MATRIX_ARTIFACT = "figures/confusion_matrix.png"  # the last validation's confusion matrix
PER_CLASS_ARTIFACT = "per_class.json"  # {identity: {"precision", "recall", "images"}} of the last validation

# The ASCII subset that both MLflow's validation and Lightning's MLflow logger keep unchanged ("/" excluded:
# it nests metric names in the UI, and the slug is one level).
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(name: str, max_length: int = 40) -> str:
    """`name` reduced to ASCII letters, digits, `_`, `.` and `-` (accents dropped, other runs of characters → `_`);
    "" when nothing is left (e.g. a CJK name): the class index, not the slug, keeps names distinct."""
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    return _UNSAFE.sub("_", ascii_name).strip("_.")[:max_length].rstrip("_.")


def class_key(index: int, name: str) -> str:
    """The one-segment metric name of class `index` called `name`: `"<index>_<slug>"`, or `"<index>"` when the
    slug is empty. E.g. `class_key(2, "mask (incorrect)") == "2_mask_incorrect"`, `class_key(0, "戴口罩") == "0"`."""
    part = slug(name)
    return f"{index}_{part}" if part else str(index)


def class_metric_names(names: Sequence[str], prefix: str = "", suffix: str = "") -> dict[str, str]:
    """{`prefix + class_key(i, name) + suffix`: name} for each class in order; the keys are valid MLflow metric
    names (given a valid prefix and suffix) and distinct even when names slugify alike or repeat."""
    return {f"{prefix}{class_key(i, name)}{suffix}": str(name) for i, name in enumerate(names)}


# YOLO's model-selection metric, logged every validation by facemask.detector (`fitness`): the face-mask
# experiment's selection metric (checkpoints/best.ckpt) and sweep value.
YOLO_FITNESS = "val/fitness"
