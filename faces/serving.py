"""A gallery of known people as an MLflow pyfunc model: photos in, each face's box, name (or `unknown`) and distance
out, by the steps `make recognize IMAGES=… GALLERY=…` takes for each photo: the detector (with recognize's second,
more lenient look where it finds no face), dlib's descriptor, and the gallery's decision at its threshold
(`faces.gallery.GalleryRecognizer`).

Input: a DataFrame with the binary column `image` (an encoded photo a row, any size; base64 in a JSON request,
`core.serving`). Params: `threshold`, the decision threshold (mean descriptor distance), defaulting to the one the
gallery was packaged with. Output: a DataFrame of one row a face, `image` (the row of the photo, from 0), `face`
(from 1, best detection first), `name`, `distance` (to the best-scoring known person, the mean Euclidean distance
to their photos), `left`, `top`, `right`, `bottom` (pixels, right and bottom exclusive), as recognitions.csv has
them; a photo without a face has no row.

The gallery is the model's one artifact, `gallery.npz` (`save_gallery`: descriptors, names, photo files, threshold
and how it was set; plain arrays, read with `allow_pickle=False`). The detector's and the describer's settings are
its model config; dlib's model files come with the `face-recognition-models` package, as for `make recognize`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from core.errors import UserError
from core.registry import PyfuncSpec
from core.serving import bad_request, image_example, image_schema, request_images
from faces.gallery import Gallery

GALLERY = "gallery"  # the artifact's name
OUTPUT_COLUMNS = ("image", "face", "name", "distance", "left", "top", "right", "bottom")


def save_gallery(gallery: Gallery, threshold: float, rule: str, path: str | Path) -> Path:
    """Write `path` (.npz): `descriptors` float32 (M, D), `names` and `files` (M,) unicode, `threshold` (float64,
    the decision threshold in descriptor distance) and `rule` (one line: how it was set). Returns `path`."""
    path = Path(path)
    np.savez(
        path,
        descriptors=np.asarray(gallery.descriptors, np.float32),
        names=np.array(gallery.names, dtype=str),
        files=np.array(gallery.files or [""] * len(gallery.names), dtype=str),
        threshold=np.float64(threshold),
        rule=np.array(rule, dtype=str),
    )
    return path


def load_gallery(path: str | Path) -> tuple[Gallery, float, str]:
    """(the gallery, its threshold, how the threshold was set) of a `save_gallery` file, read without unpickling.
    Raises UserError naming the file when it is missing, is not an .npz of that layout, or would need pickle."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            descriptors = np.asarray(data["descriptors"], np.float32)
            names, files = data["names"].tolist(), data["files"].tolist()
            threshold, rule = float(data["threshold"]), str(data["rule"])
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"gallery={path}: not a gallery file of faces.serving.save_gallery ({exc})") from None
    if descriptors.ndim != 2 or len(descriptors) != len(names) or not len(names):
        raise UserError(f"gallery={path}: {descriptors.shape} descriptors for {len(names)} names")
    return Gallery(list(names), descriptors, list(files)), threshold, rule


def build_detector(config: Mapping[str, Any]):
    """A face detector of `faces.detectors` from its config (`_target_`: the class's dotted path, the rest its
    arguments), as conf/detector/ gives it. Raises UserError for a class outside `faces.detectors`."""
    options = dict(config)
    target = str(options.pop("_target_", ""))
    module, _, name = target.rpartition(".")
    if module != "faces.detectors":
        raise UserError(f"detector._target_={target!r}: a class of faces.detectors (e.g. faces.detectors.HogDetector)")
    return getattr(importlib.import_module(module), name)(**options)


class GalleryModel(mlflow.pyfunc.PythonModel):
    """The known people of the artifact `gallery` (see the module docstring)."""

    def load_context(self, context) -> None:
        from faces.descriptors import FaceDescriber
        from faces.detectors import SecondLook

        config = context.model_config
        self.gallery, self.threshold, _ = load_gallery(context.artifacts[GALLERY])
        self.detector = build_detector(config["detector"])
        if config.get("second_look") is not None:
            fallback = build_detector({**config["detector"], "score_threshold": config["second_look"]})
            self.detector = SecondLook(self.detector, fallback)
        self.describer = FaceDescriber(**config["describer"])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        """Every face of every photo of `model_input` (see the module docstring). Raises
        `core.serving.bad_request` (HTTP 400) for a row that is no image or a threshold that is not positive."""
        from faces.gallery import GalleryRecognizer

        threshold = float((params or {}).get("threshold", self.threshold))
        if not threshold > 0:
            raise bad_request(f"params.threshold={threshold}: a descriptor distance > 0")
        recognizer = GalleryRecognizer(self.gallery, self.describer, threshold)
        rows = []
        for k, rgb in enumerate(request_images(model_input)):
            detections = self.detector.detect(rgb)
            for face, (d, (name, distance)) in enumerate(zip(detections, recognizer.recognize(rgb, detections)), 1):
                rows.append((k, face, name, float(distance), d.left, d.top, d.right, d.bottom))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS)).astype(
            {name: np.int64 for name in ("image", "face", "left", "top", "right", "bottom")}
        )


def signature(threshold: float):
    """The model's signature: `image_schema()` in, the faces' columns out, the param `threshold` (double,
    default `threshold`)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    types = {"name": "string", "distance": "double"}
    outputs = Schema([ColSpec(types.get(name, "long"), name) for name in OUTPUT_COLUMNS])
    return ModelSignature(
        inputs=image_schema(),
        outputs=outputs,
        params=ParamSchema([ParamSpec("threshold", "double", float(threshold))]),
    )


def pyfunc_spec(
    gallery: Gallery,
    threshold: float,
    rule: str,
    detector: Mapping[str, Any],
    describer: Mapping[str, Any],
    second_look: float | None,
    example: bytes,
    work_dir: str | Path,
) -> PyfuncSpec:
    """The pyfunc of `gallery` decided at `threshold` (`rule`: how it was set), with the `detector` config (as
    conf/detector/ gives it), the `second_look` score threshold (None: no second look) and the `describer`'s
    arguments (`num_jitters`, `flip`, `landmarks`) recognize used to build it; `example`: an encoded photo for the
    input example. The gallery file is written to `work_dir`, which must outlive the logging."""
    path = save_gallery(gallery, threshold, rule, Path(work_dir) / "gallery.npz")
    return PyfuncSpec(
        python_model=GalleryModel,
        artifacts={GALLERY: str(path)},
        signature=signature(threshold),
        input_example=image_example(example),
        model_config={"detector": dict(detector), "second_look": second_look, "describer": dict(describer)},
        requirements=("dlib-bin", "face-recognition-models", "opencv-python-headless", "pandas", "pillow"),
    )
