"""Serve a registered model: `python -m experiments.serve task=<task> [model_uri=<uri>]` (`make serve TASK=<task>
[MODEL=models:/<name>@champion]`, conf/serve.yaml).

Runs `mlflow models serve -m <uri> --env-manager local -h <host> -p <port>` in place of this process, with
MLFLOW_TRACKING_URI set to the store (`tracking_uri`, the local store `make mlflow-ui` opens) and this checkout
first on the Python path, so the served model imports this checkout's packages. The model (`serving_uri`):
`model_uri` when given, else the registered model `task` at its alias `champion`, else its newest version. The server
answers POST /invocations (docs/serving.md) until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from core.checkpoints import CHAMPION_ALIAS
from core.errors import UserError
from experiments import log, user_errors

CHAMPION = CHAMPION_ALIAS  # the alias `make register` gives the version to serve
REPO = Path(__file__).resolve().parents[1]


def serving_uri(tracking_uri: str, task: str | None, model: str | None = None) -> str:
    """The model URI to serve: `model` when given; else models:/<task>@champion when the registered model `task` has
    that alias, else models:/<task>/<newest version>. Raises UserError (one line) when neither is given, or when
    `task` has no registered version in `tracking_uri`."""
    if model:
        return str(model)
    if not task:
        raise UserError("TASK=<registered model> (e.g. yolo_facemask) or MODEL=<model URI> is required: what to serve")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from core.mlflow_store import use_store

    use_store(tracking_uri)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_model_version_by_alias(task, CHAMPION)
        return f"models:/{task}@{CHAMPION}"
    except MlflowException:
        pass
    try:
        versions = client.search_model_versions(f"name = '{task}'")
    except MlflowException:
        versions = []
    if not versions:
        raise UserError(
            f"task={task}: no registered model of that name in {tracking_uri} — run `make register TASK={task}` "
            "(or `make register-gallery` for faces_gallery) first"
        )
    return f"models:/{task}/{max(int(v.version) for v in versions)}"


def serve_command(uri: str, host: str, port: int, workers: int) -> list[str]:
    """The `mlflow models serve` command line for `uri`: MLflow's scoring server on host:port, this environment's
    packages (`--env-manager local`: no conda, nothing installed)."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "-h",
        str(host),
        "-p",
        str(port),
        "-w",
        str(workers),
    ]


def serve_environment(tracking_uri: str) -> dict[str, str]:
    """This environment with MLFLOW_TRACKING_URI = `tracking_uri`, MLflow's telemetry off, this checkout first on
    PYTHONPATH (the served model's code is this checkout's, whatever else is installed) and this interpreter's
    scripts folder first on PATH (MLflow starts the scoring server as `uvicorn`, from the environment's scripts)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` now (the OS's choice)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(overrides: Sequence[str], timeout_s: float = 180) -> Iterator[str]:
    """`python -m experiments.serve <overrides>` (what `make serve` runs) on a free loopback port, in a process group
    of its own; yields the URL of its /invocations once /ping answers, and stops the group (SIGTERM, then SIGKILL
    after 20 s) on leaving. RuntimeError, with the end of its output, when the server exits or does not answer
    within `timeout_s`."""
    port = free_port()
    command = [sys.executable, "-m", "experiments.serve", *overrides, f"port={port}", "host=127.0.0.1"]
    server = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited ({server.returncode}):\n{server.stdout.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer /ping within {timeout_s:g} s") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone already when the server exited
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stdout.close()


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    with user_errors():
        uri = serving_uri(cfg.tracking_uri, cfg.task, cfg.model_uri)
        command = serve_command(uri, cfg.host, cfg.port, cfg.workers)
        log.info("serving %s on http://%s:%s (%s)", uri, cfg.host, cfg.port, cfg.tracking_uri)
        print(f"serving {uri} on http://{cfg.host}:{cfg.port}/invocations (Ctrl-C stops it)", flush=True)
    os.chdir(REPO)
    os.execvpe(command[0], command, serve_environment(cfg.tracking_uri))


if __name__ == "__main__":
    main()
