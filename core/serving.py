"""What the MLflow pyfunc models of the applications share: the request's images and a bad request's one-line
answer.

A served model (`mlflow models serve`, `make serve`) takes photos as an `image` column of type binary: in a JSON
request each value is the file's bytes in base64 (MLflow's scoring server decodes them, its documented encoding
of binary columns), in process the bytes themselves. Every image is decoded as the tools read a file
(`core.images.decode_rgb`), so a served model sees the pixels `make predict-facemask` or `make recognize` sees.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

IMAGE_COLUMN = "image"


@functools.cache
def _bad_request_class() -> type:
    from mlflow.exceptions import MlflowException

    class BadRequest(MlflowException):
        """An MlflowException whose message cannot be rewritten (see `bad_request`)."""

        @property
        def message(self) -> str:
            return self._line

        @message.setter
        def message(self, value: str) -> None:  # the server's rewrite is dropped: the line stays one line
            pass

    return BadRequest


def bad_request(message: str) -> Exception:
    """An error the scoring server answers with HTTP 400 and `message` (made one line) as its `message`.

    MLflow's scoring server rewrites the message of an MlflowException raised by `predict` to start with the whole
    input's repr (many lines, a photo's bytes among them); this one keeps its own line, so the client reads what
    was wrong with the request. The server goes on answering the next request."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE

    cls = _bad_request_class()
    error = cls.__new__(cls)
    error._line = " ".join(str(message).split())
    super(cls, error).__init__(error._line, error_code=INVALID_PARAMETER_VALUE)
    return error


def image_schema():
    """The input schema of a model that takes photos: one required binary column `image` (encoded image bytes)."""
    from mlflow.types import ColSpec, Schema

    return Schema([ColSpec("binary", IMAGE_COLUMN)])


def image_example(data: bytes):
    """An input example of one photo (the bytes of an encoded image) for `image_schema`: a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame({IMAGE_COLUMN: [data]})


def request_images(model_input: Any) -> list[np.ndarray]:
    """The photos of a request as (H, W, 3) uint8 RGB arrays, in row order: `model_input` is a pandas DataFrame
    with the column `image` (bytes of encoded images; a str is taken as its UTF-8 bytes), or a dict of that column.
    Raises `bad_request` (HTTP 400) naming the row for a missing column, an empty request or a value that is no
    decodable image."""
    import pandas as pd

    from core.images import UnreadableImage, decode_rgb

    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
        raise bad_request(f"the request needs a column '{IMAGE_COLUMN}' of base64-encoded image files")
    if len(model_input) == 0:
        raise bad_request(f"the request holds no row: send one image a row in column '{IMAGE_COLUMN}'")
    images = []
    for row, value in enumerate(model_input[IMAGE_COLUMN].tolist()):
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, bytes | bytearray):
            raise bad_request(f"row {row}: '{IMAGE_COLUMN}' holds a {type(value).__name__}, not an encoded image")
        try:
            images.append(decode_rgb(bytes(value), f"row {row}"))
        except UnreadableImage as exc:
            raise bad_request(f"{exc} — send a JPEG, PNG, … file's bytes in base64") from None
    return images
