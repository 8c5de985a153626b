"""Entry points: thin Hydra mains over the library packages. Run them as `python experiments/<name>.py`."""
from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Callable, Iterator

import core  # noqa: F401  (offline switches first)
from core.errors import UserError

log = logging.getLogger("ml-playground")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a UserError's message without a traceback and exit with status 2 (also when hydra's `instantiate`
    wrapped it: a constructor that raised it, e.g. for a missing weights file); a full disk is one too."""
    try:
        yield
    except Exception as exc:
        error = _as_user_error(exc)
        if error is None:
            raise
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def _as_user_error(exc: Exception) -> UserError | None:
    for error in (exc, exc.__cause__):
        if isinstance(error, UserError):
            return error
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return UserError(f"disk full while writing {exc.filename or 'an output file'}: free space and run again "
                         "(training resumes from its last complete checkpoint with ckpt_path=last)")
    return None


def use_tool_experiment(cfg) -> None:
    """Point MLflow at the project's store and the tool's experiment (named `task_name`), creating it with the
    project's artifact location on first use."""
    import mlflow

    mlflow.set_tracking_uri(cfg.paths.mlflow_uri)
    if mlflow.get_experiment_by_name(cfg.task_name) is None:
        mlflow.create_experiment(cfg.task_name, artifact_location=cfg.paths.mlflow_artifacts)
    mlflow.set_experiment(cfg.task_name)



def log_tool_run(cfg, run_name: str, write: Callable[[], None]) -> bool:
    """Run `write()` (its mlflow.log_* calls) inside an MLflow run of the tool's experiment. A tool's result is
    what it prints and writes: when the tracking store fails (unreachable, locked, a rejected name), the run ends
    FAILED and the failure is one warning on stderr, not a traceback that loses the result. Returns whether
    the logging succeeded."""
    import mlflow

    try:
        use_tool_experiment(cfg)
        with mlflow.start_run(run_name=run_name):
            write()
    except Exception as exc:  # noqa: BLE001  (whatever the store raised: the result stands without it)
        message = str(exc).strip().splitlines()
        log.warning("MLflow logging failed, so this result is not in the tracking store (%s): %s: %s",
                    cfg.paths.mlflow_uri, type(exc).__name__, message[0] if message else "")
        return False
    return True
