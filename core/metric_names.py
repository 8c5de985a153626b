"""MLflow names for values that come from the data (class names, identities): valid, distinct and stable.

MLflow accepts only some characters in metric, param and tag keys (`mlflow.utils.validation`), and Lightning's
MLflow logger silently strips the others, so `戴口罩` and `未戴口罩` both became `val/ap50_` and one class's
metric overwrote the other's. Every per-class name therefore goes through `class_metric_names`: the class's index
(its position in the class list, which is the model's class id) makes the name unique, a slug of the class name
keeps it readable, and the original names are kept in the run as a mapping artifact (`CLASS_NAMES_ARTIFACT`).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

CLASS_NAMES_ARTIFACT = "class_names.json"  # {metric name: class name} logged next to per-class metrics

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


# YOLO's model-selection metric, logged every validation by lightning_modules.yolo_detector (`fitness`): the face-mask
# experiment's monitor (checkpoints/best.ckpt) and sweep value.
YOLO_FITNESS = "val/fitness"
