"""Trained models in MLflow: a run's PyTorch model logged with its signature, input example and ONNX export beside
it, and registered under the task's name."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.mlflow_store import use_store

log = logging.getLogger(__name__)


# ---- models ------------------------------------------------------------------------------------------------
MODEL_URI_TAG = "model.uri"  # the run's logged PyTorch model (models:/<model id>), read by `register_run_model`


ONNX_MODEL_URI_TAG = "model.onnx_uri"


def pinned_requirements() -> list[str]:
    """The pip requirements of a logged model, pinned to the installed versions: given, MLflow does not infer them
    (which loads the model in a subprocess for seconds per run)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "numpy", "mlflow")]


def log_pytorch_model(
    tracking_uri: str,
    run_id: str,
    module: Any,
    example: np.ndarray,
    *,
    name: str = "model",
    onnx_path: str | Path | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Log `module` (a torch.nn.Module in eval mode: one float32 tensor in, one tensor out) to run `run_id` as an
    MLflow model `name` of the PyTorch flavour, serialised with `torch.export` ("pt2": loading runs no pickled code)
    with the signature inferred from `example` (a float32 array, batch first) and its output, and `example` as the
    input example (of the PyTorch model); with `onnx_path`, the ONNX file of the same weights beside it as `<name>-onnx` (ONNX flavour,
    same signature). Both are logged models of the run's experiment, their files under its artifact location.
    The model URIs are tagged on the run (`model.uri`, `model.onnx_uri`). Returns the PyTorch
    model's URI (models:/<model id>). Raises whatever MLflow or torch.export raise."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    use_store(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    # MLflow creates the logged model in the fluent API's current experiment, not the run's: without this it
    # would go to the store's Default experiment, its files to ./mlruns of the working directory
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, output)
    requirements = pinned_requirements()
    # The input example is written as JSON after a deep copy and a cast per value (a detector's image batch: 11 s
    # each time, profiled), so only the PyTorch model, which torch.export traces with it, gets it; the ONNX model
    # has the same signature.
    info = mlflow.pytorch.log_model(
        module,
        name=name,
        run_id=run_id,
        signature=signature,
        input_example=example,
        serialization_format="pt2",
        pip_requirements=requirements,
        metadata=dict(metadata or {}),
    )
    client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    if onnx_path is not None:
        import onnx

        onnx_info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name=f"{name}-onnx",
            run_id=run_id,
            signature=signature,
            pip_requirements=[*requirements, f"onnx=={onnx.__version__}"],
            metadata=dict(metadata or {}),
        )
        client.set_tag(run_id, ONNX_MODEL_URI_TAG, onnx_info.model_uri)
    return info.model_uri


def register_run_model(tracking_uri: str, run_id: str, name: str) -> Any:
    """Register the PyTorch model logged by run `run_id` (its `model.uri` tag) in the Model Registry as a new
    version of `name`, with the run's metrics as version tags (name → value as text) and the run id as
    `source_run`. Returns the `ModelVersion`. Raises UserError when the run logged no model."""
    import mlflow

    from core.errors import UserError

    use_store(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(run_id)
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise UserError(f"run {run_id} logged no model (train with log_model=true): nothing to register")
    tags = {key: repr(float(value)) for key, value in run.data.metrics.items()}
    version = mlflow.register_model(model_uri, name, tags={**tags, "source_run": run_id})
    log.info("registered %s as %s version %s", model_uri, name, version.version)
    return version
