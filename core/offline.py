"""Every switch the libraries need to run with no network (../shared/ENVIRONMENT-NOTES.md): environment
variables set when `core` is imported, and ultralytics' settings file, switched by the modules that use it."""

import os
import shutil
from pathlib import Path


def project_root() -> Path:
    """The checkout the project works in: generated data, logs/, .cache/ and the MLflow store live there.

    `$PROJECT_ROOT` when set; else the source tree of this file when it is a checkout (an editable install, or the
    repository itself); else the nearest folder at or above the working directory holding `conf/train.yaml` (a
    non-editable install run from a checkout, as `make` does); else the working directory.
    """
    if os.environ.get("PROJECT_ROOT"):
        return Path(os.environ["PROJECT_ROOT"]).resolve()
    source = Path(__file__).resolve().parents[1]
    if (source / "pyproject.toml").is_file() and (source / "conf" / "train.yaml").is_file():
        return source
    cwd = Path.cwd().resolve()
    return next((folder for folder in (cwd, *cwd.parents) if (folder / "conf" / "train.yaml").is_file()), cwd)


PROJECT_ROOT = project_root()

# The environment as the user's shell gave it, before `configure` or any library changed it (ultralytics sets
# OMP_NUM_THREADS=1 on import when it is unset): what a child process started "as the user would" should get.
STARTUP_ENVIRONMENT = dict(os.environ)

ENV_DEFAULTS = {
    "PROJECT_ROOT": str(PROJECT_ROOT),
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "False",
    "YOLO_VERBOSE": "False",
    "YOLO_CONFIG_DIR": str(PROJECT_ROOT / ".cache" / "ultralytics"),
    "KERAS_HOME": str(PROJECT_ROOT / ".cache" / "keras"),
    "KERAS_BACKEND": "torch",
    "HF_HUB_OFFLINE": "1",
    "GIT_PYTHON_REFRESH": "quiet",
}


LOOPBACK_ONLY = "ML_PLAYGROUND_LOOPBACK_ONLY"  # "1": sockets may reach loopback and Unix sockets only
LOOPBACK_PREFIXES = ("127.", "::1", "localhost", "0.0.0.0")


def configure() -> None:
    """Set the offline environment (without overriding what the user set) and ship ultralytics' font.

    With `$ML_PLAYGROUND_LOOPBACK_ONLY=1` (set by the test suite, inherited by every process it starts) every
    socket of this process is limited to loopback and Unix sockets: a library that reaches for the network at
    run time (weights, fonts, telemetry, update checks) fails with ConnectionRefusedError naming the address.
    """
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _ship_ultralytics_font(Path(os.environ["YOLO_CONFIG_DIR"]))
    if os.environ.get(LOOPBACK_ONLY) == "1":
        limit_sockets_to_loopback()


def limit_sockets_to_loopback() -> None:
    """Patch `socket.socket.connect` (and `connect_ex`) so that only loopback and Unix sockets connect; idempotent."""
    import socket

    if getattr(socket.socket.connect, "_loopback_only", False):
        return
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def _check(sock: socket.socket, address) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if sock.family != socket.AF_UNIX and not str(host).startswith(LOOPBACK_PREFIXES):
            raise ConnectionRefusedError(f"{LOOPBACK_ONLY}=1 blocked a network connection to {address}")

    def connect(sock, address):
        _check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        _check(sock, address)
        return real_connect_ex(sock, address)

    connect._loopback_only = True
    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


def _ship_ultralytics_font(config_dir: Path) -> None:
    # ultralytics downloads Arial.ttf on every dataset check unless a font is already in its config dir.
    target = config_dir / "Ultralytics" / "Arial.ttf"
    if target.exists():
        return
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


ULTRALYTICS_OFF = {
    "mlflow": False,
    "clearml": False,
    "comet": False,
    "dvc": False,
    "raytune": False,
    "wandb": False,
    "tensorboard": False,
    "sync": False,
}


def disable_ultralytics_integrations() -> None:
    """ultralytics' MLflow callback opens its own run whenever mlflow is installed; its other integrations and
    event sync reach for the network. This project logs through Lightning's MLflow logger only.

    Called by whatever builds an ultralytics model or trainer (not on `import core`: it imports ultralytics);
    the settings file is written only when a switch is not already off."""
    from ultralytics.utils import SETTINGS

    if any(SETTINGS.get(k) != v for k, v in ULTRALYTICS_OFF.items()):
        SETTINGS.update(ULTRALYTICS_OFF)
