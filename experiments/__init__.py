"""Entry points: thin Hydra mains over the library packages. Run them as `python experiments/<name>.py`."""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import core  # noqa: F401  (offline switches first)
from core.errors import UserError

log = logging.getLogger("ml-playground")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a UserError's message without a traceback and exit with status 2 (also when hydra's `instantiate`
    wrapped it: a constructor that raised it, e.g. for a missing weights file)."""
    try:
        yield
    except Exception as exc:
        error = exc if isinstance(exc, UserError) else exc.__cause__
        if not isinstance(error, UserError):
            raise
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def use_tool_experiment(cfg) -> None:
    """Point MLflow at the project's store and the tool's experiment (named `task_name`), creating it with the
    project's artifact location on first use."""
    import mlflow

    mlflow.set_tracking_uri(cfg.paths.mlflow_uri)
    if mlflow.get_experiment_by_name(cfg.task_name) is None:
        mlflow.create_experiment(cfg.task_name, artifact_location=cfg.paths.mlflow_artifacts)
    mlflow.set_experiment(cfg.task_name)
