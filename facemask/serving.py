"""The face-mask detector as an MLflow pyfunc model: photos in, boxes in each photo's own pixels, class names and
confidences out, by the steps `make predict-facemask` takes (`facemask.inference.detect`: ultralytics' letterbox
to the training size, one forward pass of the evaluated weights, NMS, boxes scaled back).

Input: a DataFrame with the binary column `image` (an encoded photo a row, any size; base64 in a JSON request,
`core.serving`). Params: `conf` and `iou`, NMS's thresholds, defaulting to conf/predict_facemask.yaml's.
Output: a DataFrame of one row a box, `image` (the row of the photo, from 0), `class`, `confidence` (0–1), `x0`,
`y0`, `x1`, `y1` (pixels of that photo, x0 < x1 and y0 < y1), the photos in row order and each photo's boxes by
confidence, highest first; a photo without a box has no row. The model's only artifact is the checkpoint's weights
(`core.checkpoints.write_weights`), read with the safe loader (`load_detector`).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from core.registry import PyfuncSpec
from core.serving import bad_request, image_example, image_schema, request_images

# NMS's thresholds, as conf/predict_facemask.yaml sets them for make predict-facemask
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.45
OUTPUT_COLUMNS = ("image", "class", "confidence", "x0", "y0", "x1", "y1")
WEIGHTS = "weights"  # the artifact's name


class FaceMaskModel(mlflow.pyfunc.PythonModel):
    """The detector of the artifact `weights` (a face-mask checkpoint's weights), see the module docstring."""

    def load_context(self, context) -> None:
        from facemask.inference import load_detector

        self.module = load_detector(context.artifacts[WEIGHTS], key="the model's weights")
        self.names = list(self.module.names)
        self.imgsz = int(self.module.hparams.imgsz)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        """Boxes of every photo of `model_input` (see the module docstring). Raises `core.serving.bad_request`
        (HTTP 400) for a row that is no image and for a threshold outside [0, 1]."""
        from facemask.inference import detect

        params = {"conf": DEFAULT_CONF, "iou": DEFAULT_IOU, **(params or {})}
        for name in ("conf", "iou"):
            if not 0 <= float(params[name]) <= 1:
                raise bad_request(f"params.{name}={params[name]}: a threshold in [0, 1]")
        rows = []
        for k, rgb in enumerate(request_images(model_input)):
            # one photo a pass, as predict-facemask detects them
            det = detect(self.module.eval_net, [rgb], self.imgsz, conf=float(params["conf"]), iou=float(params["iou"]))
            rows += [
                (k, self.names[int(c)], float(p), float(x0), float(y0), float(x1), float(y1))
                for x0, y0, x1, y1, p, c in det[0]
            ]
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS)).astype({"image": np.int64})


def signature():
    """The model's signature: `image_schema()` in, the boxes' columns out, params `conf` and `iou` (doubles)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    outputs = Schema(
        [ColSpec("long", "image"), ColSpec("string", "class")]
        + [ColSpec("double", name) for name in OUTPUT_COLUMNS[2:]]
    )
    params = ParamSchema([ParamSpec("conf", "double", DEFAULT_CONF), ParamSpec("iou", "double", DEFAULT_IOU)])
    return ModelSignature(inputs=image_schema(), outputs=outputs, params=params)


def example_photo() -> bytes:
    """The input example's photo: a 320×240 JPEG of a mid-grey frame with a face-like disc (any photo does: the
    example shows the request's shape, and MLflow runs the model on it)."""
    import cv2

    canvas = np.full((240, 320, 3), 128, np.uint8)
    cv2.circle(canvas, (160, 120), 50, (190, 160, 140), -1)
    ok, encoded = cv2.imencode(".jpg", canvas)
    assert ok
    return encoded.tobytes()


def pyfunc_spec(checkpoint: str | Path, work_dir: str | Path) -> PyfuncSpec:
    """The pyfunc of a face-mask checkpoint (`YoloDetector.pyfunc`): its weights written to `work_dir`, which must
    outlive the logging. Raises UserError (from the safe loader) for a checkpoint that is missing, refused (a pickle
    that asks for code) or not a face-mask detector's, before anything is logged."""
    from facemask.inference import load_detector

    load_detector(checkpoint, key="the trained checkpoint")  # a foreign or unsafe file stops here
    from core.checkpoints import write_weights

    weights = write_weights(checkpoint, Path(work_dir) / "facemask-weights.ckpt", key="the trained checkpoint")
    return PyfuncSpec(
        python_model=FaceMaskModel,
        artifacts={WEIGHTS: str(weights)},
        signature=signature(),
        input_example=image_example(example_photo()),
        requirements=("ultralytics", "pandas", "pillow"),
    )
