"""Trained models in MLflow: a run's servable model (the task's pyfunc: photos or a count in, boxes, names or
images out; else the PyTorch network) logged with its signature and input example, its ONNX export beside it, and
registered under the task's name."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.mlflow_store import use_store

log = logging.getLogger(__name__)


# ---- models ------------------------------------------------------------------------------------------------
# the run's servable model (models:/<model id>): its pyfunc where the task has one, else its PyTorch model; read by
# `register_run_model`, so `make register` and `make serve` take it
MODEL_URI_TAG = "model.uri"


ONNX_MODEL_URI_TAG = "model.onnx_uri"


def pinned_requirements(extra: Sequence[str] = ()) -> list[str]:
    """The pip requirements of a logged model, pinned to the installed versions: torch, numpy, mlflow and the
    distributions `extra` names (e.g. "ultralytics"). Given, MLflow does not infer them (which loads the model in a
    subprocess for seconds per run). Raises PackageNotFoundError for a name that is not installed."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "numpy", "mlflow", *extra)]


@dataclass(frozen=True)
class PyfuncSpec:
    """A task's MLflow pyfunc model, ready to log (`log_pyfunc_model`).

    `python_model`: the task's `mlflow.pyfunc.PythonModel` subclass, importable by its module and name (it is logged
    as code, a two-line model file that imports it: loading runs no unpickling); `artifacts`: name → local file, the
    weights or data its `load_context` reads (`context.artifacts[name]`); `signature` (inputs, outputs and params,
    `mlflow.models.ModelSignature`) and `input_example` (a pandas DataFrame of that input schema), which MLflow
    checks against each other and the model when it logs them; `model_config`: plain settings the model reads in
    `load_context` (`context.model_config`); `requirements`: distributions beyond torch, numpy and mlflow that the
    model imports (pinned by `pinned_requirements`)."""

    python_model: type
    artifacts: Mapping[str, str]
    signature: Any
    input_example: Any
    model_config: Mapping[str, Any] = field(default_factory=dict)
    requirements: Sequence[str] = ()


def _experiment_of(tracking_uri: str, run_id: str):
    """The client of `tracking_uri`, with the fluent API's experiment set to run `run_id`'s: MLflow creates a logged
    model in the fluent API's current experiment, not the run's; without this it would go to the store's Default
    experiment, its files to ./mlruns of the working directory."""
    import mlflow

    use_store(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    return client


def log_pyfunc_model(
    tracking_uri: str,
    run_id: str,
    spec: PyfuncSpec,
    *,
    name: str = "model",
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Log `spec` to run `run_id` as the MLflow pyfunc model `name` ("models from code": the model file only
    imports `spec.python_model` and hands an instance to `mlflow.models.set_model`), with its artifacts, signature,
    input example (MLflow runs the model on it, so a model that cannot answer its own example is not logged),
    model config and pinned requirements, and tag it as the run's servable model (`model.uri`). Returns its URI
    (models:/<model id>). Raises whatever MLflow or the model's `load_context`/`predict` raise."""
    import tempfile

    import mlflow

    client = _experiment_of(tracking_uri, run_id)
    cls = spec.python_model
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / f"{cls.__name__.lower()}.py"
        code.write_text(
            f'"""The MLflow model: {cls.__module__}.{cls.__name__}."""\n\n'
            f"import mlflow\n\nfrom {cls.__module__} import {cls.__name__}\n\n"
            f"mlflow.models.set_model({cls.__name__}())\n"
        )
        # `Model.log` with the pyfunc flavour is what `mlflow.pyfunc.log_model` calls; called here for its
        # `run_id`, which the flavour's own function does not take (the run need not be the active one)
        info = mlflow.models.Model.log(
            artifact_path=None,
            flavor=mlflow.pyfunc,
            name=name,
            python_model=str(code),
            artifacts=dict(spec.artifacts),
            signature=spec.signature,
            input_example=spec.input_example,
            model_config=dict(spec.model_config),
            pip_requirements=pinned_requirements(spec.requirements),
            metadata=dict(metadata or {}),
            run_id=run_id,
        )
    client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def log_onnx_model(
    tracking_uri: str,
    run_id: str,
    onnx_path: str | Path,
    signature: Any,
    *,
    name: str = "model-onnx",
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Log the ONNX file `onnx_path` to run `run_id` as the MLflow model `name` (ONNX flavour, `signature`), tagged
    on the run as `model.onnx_uri`. Returns its URI (models:/<model id>)."""
    import mlflow
    import onnx

    client = _experiment_of(tracking_uri, run_id)
    info = mlflow.onnx.log_model(
        onnx.load(str(onnx_path)),
        name=name,
        run_id=run_id,
        signature=signature,
        pip_requirements=pinned_requirements(("onnx",)),
        metadata=dict(metadata or {}),
    )
    client.set_tag(run_id, ONNX_MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def tensor_signature(module: Any, example: np.ndarray) -> Any:
    """The MLflow signature of `module` (a torch.nn.Module in eval mode, one float32 tensor in, one out) inferred
    from `example` (float32, batch first) and the module's output on it."""
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    return infer_signature(example, output)


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

    client = _experiment_of(tracking_uri, run_id)
    signature = tensor_signature(module, example)
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
        pip_requirements=pinned_requirements(),
        metadata=dict(metadata or {}),
    )
    client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
    if onnx_path is not None:
        log_onnx_model(tracking_uri, run_id, onnx_path, signature, name=f"{name}-onnx", metadata=metadata)
    return info.model_uri


def register_run_model(tracking_uri: str, run_id: str, name: str) -> Any:
    """Register the servable model logged by run `run_id` (its `model.uri` tag) in the Model Registry as a new
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
