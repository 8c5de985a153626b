"""Every switch the libraries need to run with no network (../shared/ENVIRONMENT-NOTES.md): environment
variables set when `core` is imported, and ultralytics' settings file, switched by the modules that use it."""
import os
import shutil
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

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


ULTRALYTICS_OFF = {"mlflow": False, "clearml": False, "comet": False, "dvc": False, "raytune": False, "wandb": False,
                   "tensorboard": False, "sync": False}


def disable_ultralytics_integrations() -> None:
    """ultralytics' MLflow callback opens its own run whenever mlflow is installed; its other integrations and
    event sync reach for the network. This project logs through Lightning's MLflow logger only.

    Called by whatever builds an ultralytics model or trainer (not on `import core`: it imports ultralytics);
    the settings file is written only when a switch is not already off."""
    from ultralytics.utils import SETTINGS

    if any(SETTINGS.get(k) != v for k, v in ULTRALYTICS_OFF.items()):
        SETTINGS.update(ULTRALYTICS_OFF)
