"""The DCGAN generator as an MLflow pyfunc model: a count and a seed in, that many generated images out as base64
PNG files.

Input: a DataFrame of one row a request, `count` (images, 1 … MAX_COUNT) and `seed` (≥ 0). The noise of a row is
`numpy.random.default_rng(seed).standard_normal((count, latent_dim))` (float32), so a seed gives the same images
wherever the model runs. Output: a DataFrame of one row an image, `request` (the input row, from 0), `index` (the
image's place in its request, from 0) and `png` (a 64×64 RGB PNG in base64: the generator's tanh output mapped
from [−1, 1] to 0–255, as the sample grids are). The model's only artifact is the checkpoint's weights
(`core.checkpoints.write_weights`), read with the safe loader (`core.checkpoints.load_module`).
"""

from __future__ import annotations

import base64
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from core.registry import PyfuncSpec
from core.serving import bad_request

MAX_COUNT = 256  # images a request may ask for (about 1.5 MB of PNG in the answer)
WEIGHTS = "weights"  # the artifact's name
OUTPUT_COLUMNS = ("request", "index", "png")


def noise(seed: int, count: int, latent_dim: int) -> np.ndarray:
    """The generator's input for one request: (count, latent_dim) float32 drawn from N(0, 1) by
    `numpy.random.default_rng(seed)`."""
    return np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Generator output (N, 3, H, W) in [−1, 1] as (N, H, W, 3) uint8 RGB: (x + 1) / 2 · 255, rounded (the sample
    grids' mapping)."""
    return (np.clip((images + 1) / 2, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """The generator of the artifact `weights` (a DCGAN checkpoint's weights), see the module docstring."""

    def load_context(self, context) -> None:
        from core.checkpoints import load_module
        from dcgan.module import DCGAN

        module = load_module(DCGAN, context.artifacts[WEIGHTS], key="the model's weights", quality=None)
        self.generator = module.generator.eval()

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        """The images of every request row (see the module docstring). Raises `core.serving.bad_request` (HTTP
        400) for a count outside 1 … MAX_COUNT or a negative seed."""
        import cv2
        import torch

        if not isinstance(model_input, pd.DataFrame) or not {"count", "seed"} <= set(model_input.columns):
            raise bad_request("the request needs the columns 'count' (images) and 'seed' (an integer ≥ 0)")
        rows = []
        for request, (count, seed) in enumerate(zip(model_input["count"].tolist(), model_input["seed"].tolist())):
            if not 1 <= int(count) <= MAX_COUNT:
                raise bad_request(f"row {request}: count={count}: ask for 1 to {MAX_COUNT} images")
            if int(seed) < 0:
                raise bad_request(f"row {request}: seed={seed}: an integer ≥ 0")
            with torch.no_grad():
                z = torch.from_numpy(noise(int(seed), int(count), self.generator.latent_dim))
                images = to_uint8(self.generator(z).numpy())
            for index, rgb in enumerate(images):
                ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV writes BGR
                assert ok
                rows.append((request, index, base64.b64encode(encoded.tobytes()).decode("ascii")))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS)).astype({"request": np.int64, "index": np.int64})


def signature():
    """The model's signature: `count` and `seed` (longs) in; `request`, `index` (longs) and `png` (string) out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("long", "count"), ColSpec("long", "seed")]),
        outputs=Schema([ColSpec("long", "request"), ColSpec("long", "index"), ColSpec("string", "png")]),
    )


def pyfunc_spec(checkpoint: str | Path, work_dir: str | Path) -> PyfuncSpec:
    """The pyfunc of a DCGAN checkpoint (`DCGAN.pyfunc`): its weights written to `work_dir`, which must outlive the
    logging. Raises UserError (from the safe loader) for a checkpoint that is missing, refused (a pickle that asks
    for code) or not a DCGAN's, before anything is logged."""
    from core.checkpoints import load_module, write_weights
    from dcgan.module import DCGAN

    load_module(DCGAN, checkpoint, key="the trained checkpoint", quality=None)  # a foreign or unsafe file stops here
    weights = write_weights(checkpoint, Path(work_dir) / "dcgan-weights.ckpt", key="the trained checkpoint")
    return PyfuncSpec(
        python_model=GeneratorModel,
        artifacts={WEIGHTS: str(weights)},
        signature=signature(),
        input_example=pd.DataFrame({"count": [2], "seed": [0]}),
        requirements=("pandas", "opencv-python-headless"),
    )
