"""Every switch the libraries need to run with no network (../shared/ENVIRONMENT-NOTES.md)."""
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


def configure() -> None:
    """Set the offline environment (without overriding what the user set) and ship ultralytics' font."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _ship_ultralytics_font(Path(os.environ["YOLO_CONFIG_DIR"]))


def _ship_ultralytics_font(config_dir: Path) -> None:
    # ultralytics downloads Arial.ttf on every dataset check unless a font is already in its config dir.
    target = config_dir / "Ultralytics" / "Arial.ttf"
    if target.exists():
        return
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
