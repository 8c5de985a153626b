"""The one reader of checkpoint and weights files that users name: a checkpoint is data, never code.

Every file is read with `torch.load(weights_only=True)`: the unpickler rebuilds tensors, storages and plain
containers (dict, list, tuple, OrderedDict, numbers, strings) and refuses every other import a pickle asks for,
before anything is called. The project's own checkpoints need nothing more: the modules keep plain containers
as hyper-parameters (the training entry instantiates them with `_convert_="partial"`), so the allow-list
`PROJECT_GLOBALS` is empty. A reader of a foreign format (the yolov5 repository's pickled model) passes its own
short list of harmless stand-in classes as `allow`. A file that wants anything else is refused with a one-line
`UserError` naming the file and the import; the pickle's payload never runs.

`find_checkpoint` is the one search of the log folder for a task's checkpoint (resume, the tools, the web export).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from core.errors import UserError

# Classes beyond torch's own weights_only allow-list that checkpoints written by this project need: none
# (tests/test_checkpoint_trust.py::assert_plain_checkpoint, run on a real DCGAN, face-classifier and YOLO checkpoint).
PROJECT_GLOBALS: tuple[type, ...] = ()

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL (\S+)")

Module = TypeVar("Module", bound=torch.nn.Module)


def load_checkpoint(
    path: str | Path, *, key: str = "CKPT", map_location: str | torch.device = "cpu", allow: Sequence[type] = ()
) -> dict[str, Any]:
    """The dict saved in `path` (a Lightning checkpoint, a state_dict, a weights file), tensors on `map_location`.

    Loaded with `weights_only=True` and the allow-list `PROJECT_GLOBALS` plus `allow` (the classes a reader of a
    foreign format rebuilds as stand-ins). `key` is the config key or make variable that named the file; every
    message starts with `key=path`.

    Raises UserError (one line) when the file is missing, is not a torch-saved file, does not hold a dict, or
    asks for any import outside the allow-list — then it names that import, and nothing from the file ran.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{key}={path}: file not found")
    try:
        with torch.serialization.safe_globals([*PROJECT_GLOBALS, *allow]):
            try:
                loaded = torch.load(path, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError as exc:
                raise _refusal(path, key, exc) from None  # inside the context: the scan knows the same allow-list
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 — torch raises many types (RuntimeError, KeyError, EOFError…) for non-checkpoints
        raise UserError(
            f"{key}={path} is not a PyTorch checkpoint or weights file ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    if not isinstance(loaded, dict):
        raise UserError(
            f"{key}={path} holds a {type(loaded).__name__}, not a checkpoint (a dict of tensors and settings)"
        )
    return loaded


def load_module(
    cls: type[Module],
    path: str | Path,
    *,
    key: str = "CKPT",
    map_location: str | torch.device = "cpu",
    **overrides: Any,
) -> Module:
    """A LightningModule rebuilt from a checkpoint read by `load_checkpoint`: `cls(**hyper_parameters, **overrides)`,
    its `on_load_checkpoint` hook, then a strict `load_state_dict`. Lightning's own `load_from_checkpoint` is not
    used, so the one safe reader is the only code that opens the file.

    Raises UserError when the file is refused (see `load_checkpoint`) or was not written by `cls` (its
    hyper-parameters or weights do not fit).
    """
    checkpoint = load_checkpoint(path, key=key, map_location=map_location)
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{key}={path} is not a Lightning checkpoint (it has no state_dict)")
    hparams = {**checkpoint.get("hyper_parameters", {}), **overrides}
    try:
        inspect.signature(cls).bind(**hparams)
    except TypeError as exc:
        raise UserError(
            f"{key}={path} was not written by {cls.__name__}: its hyper-parameters do not fit ({exc})"
        ) from None
    module = cls(**hparams)
    module.on_load_checkpoint(checkpoint)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{key}={path}: its weights do not fit {cls.__name__} ({_first_line(exc)})") from None
    return module.to(map_location)


# What a served model keeps of a Lightning checkpoint (`write_weights`): what `load_module` rebuilds the module from
WEIGHTS_KEYS = ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step")


def write_weights(path: str | Path, out_path: str | Path, *, key: str = "CKPT") -> Path:
    """Write `out_path`: the Lightning checkpoint `path` (read by `load_checkpoint`) reduced to WEIGHTS_KEYS, the
    module's weights and hyper-parameters without the optimizer's state or the callbacks', which `load_module`
    reads as it reads the whole file. Returns `out_path`. Raises UserError as `load_checkpoint` does, and when the
    file holds no state_dict."""
    checkpoint = load_checkpoint(path, key=key)
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{key}={path} is not a Lightning checkpoint (it has no state_dict)")
    out_path = Path(out_path)
    torch.save({name: checkpoint[name] for name in WEIGHTS_KEYS if name in checkpoint}, out_path)
    return out_path


Which = Literal["last", "best"]
CHECKPOINT_NAMES: tuple[str, ...] = ("last", "best")
# What the tools (recognize, predict/eval-facemask, export-web) take when no file is named: the run's best epoch by
# the experiment's selection metric (training.callbacks.BestCheckpoint), its last.ckpt when it kept none. Resuming
# always asks for "last" itself.
DEFAULT_CHECKPOINT: Which = "best"
BEST_FILENAME = "best"  # the monitored checkpoint's file stem: checkpoints/best.ckpt
CHECKPOINTS_DIR = (
    "checkpoints"  # a run's checkpoint folder (conf/callbacks/default.yaml: ${paths.output_dir}/checkpoints)
)


class NoCheckpoint(UserError):
    """No run of the task has written a checkpoint of the kind asked for (the message names the folders)."""


def find_checkpoint(
    log_dir: str | Path,
    tasks: str | Sequence[str],
    which: Which = DEFAULT_CHECKPOINT,
    *,
    make_target: str | None = None,
    key: str = "CKPT",
    tracking_uri: str | None = None,
) -> Path:
    """The checkpoint of the newest finished run of `tasks` (one task name or several) under the log folder: every
    `<log_dir>/<task>/**/checkpoints/` folder is a run (single runs and sweeps alike).

    which="last": the run's `last.ckpt` (written every epoch; what resuming continues from).
    which="best": the run's newest `best*.ckpt` (training.callbacks.BestCheckpoint's) when it has one, else
    its `last.ckpt`.

    Runs without such a file are skipped. With `tracking_uri` (a local store: `sqlite:///…` or a folder; the tools
    pass `paths.mlflow_uri`), a run is also skipped when its `mlflow_run_id` file names a run that this store holds
    with a status other than FINISHED (still running, killed, failed); a run without the file, or one the store does
    not know (e.g. logged to a tracking server), is kept. An http(s) store is not asked (no network wait). Among the
    runs left, the newest is the one whose checkpoint folder holds the most recently written checkpoint (links
    followed). Raises NoCheckpoint (a UserError) naming the folders searched and, when given, the make target that
    writes one (`make_target`) and the config key or make variable that names a file instead (`key`).
    """
    if which not in CHECKPOINT_NAMES:
        raise UserError(f"{key}: {which!r} is neither a checkpoint file nor one of {', '.join(CHECKPOINT_NAMES)}")
    names = [tasks] if isinstance(tasks, (str, os.PathLike)) else list(tasks)
    roots = [Path(log_dir) / name for name in names]
    runs = [folder for root in roots if root.is_dir() for folder in root.rglob(CHECKPOINTS_DIR) if folder.is_dir()]
    chosen = [(run, path) for run in runs if (path := _checkpoint_of_run(run, which)) is not None]
    unfinished = _unfinished_runs([run for run, _ in chosen], tracking_uri) if tracking_uri else set()
    finished = [(run, path) for run, path in chosen if run not in unfinished]
    if not finished:
        wanted = f"{CHECKPOINTS_DIR}/last.ckpt" if which == "last" else f"{CHECKPOINTS_DIR}/best*.ckpt or last.ckpt"
        where = " or ".join(str(root) for root in roots)
        state = f" of a finished run ({len(unfinished)} run(s) with one have not finished)" if unfinished else ""
        hint = f" — `{make_target}` writes one, or pass {key}=<file>" if make_target else ""
        raise NoCheckpoint(f"no {wanted}{state} under {where}{hint}")
    return max(finished, key=lambda run_path: _newest_write(run_path[0]))[1]


RUN_ID_FILE = "mlflow_run_id"  # beside checkpoints/ in a run folder: the MLflow run id (experiments/train.py writes it)
FINISHED = "FINISHED"


CHAMPION_ALIAS = "champion"  # the Model Registry alias of a task's best registered model (experiments/register.py)


def tool_checkpoint(cfg: Any, tasks: str | Sequence[str], make_target: str, key: str = "CKPT") -> Path:
    """The checkpoint a tool uses, the one rule of every tool that takes `ckpt`: `cfg.ckpt` when given; else the
    checkpoint of the task's `champion` in the Model Registry (`champion_checkpoint`: `make register` gives the alias
    to the best registered model); else the best checkpoint of the newest finished run of `tasks` (`find_checkpoint`
    under `cfg.paths.log_dir`, asking the local store `cfg.paths.mlflow_uri` which runs finished). Logs which it
    took and why. Raises NoCheckpoint (a UserError) naming the folders searched, `make_target` and `key` when there
    is none."""
    import logging

    say = logging.getLogger("ml-playground").info
    if cfg.ckpt:
        path = Path(cfg.ckpt)
        say("checkpoint %s (%s=)", path, key)
        return path
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    champion = champion_checkpoint(cfg.paths.mlflow_uri, cfg.paths.log_dir, names)
    if champion is not None:
        path, why = champion
        say("checkpoint %s (%s; %s=<file> picks another)", path, why, key)
        return path
    path = find_checkpoint(
        cfg.paths.log_dir, names, make_target=make_target, key=key, tracking_uri=cfg.paths.mlflow_uri
    )
    say(
        "checkpoint %s (the best of the newest finished run of %s: no registered %s; %s=<file> picks another)",
        path,
        ", ".join(names),
        CHAMPION_ALIAS,
        key,
    )
    return path


def champion_checkpoint(tracking_uri: str, log_dir: str | Path, tasks: Sequence[str]) -> tuple[Path, str] | None:
    """The best checkpoint (else last.ckpt) of the run whose model holds the registry alias `champion` under the
    first of `tasks` (registered model names: `make register` registers under the task's name) that has one, and
    a line saying which version it is; None when the local store at `tracking_uri` does not exist, is remote, has no
    such alias, or the champion's run folder (its `mlflow_run_id` file under `log_dir/<task>/`) holds no checkpoint
    (logged as a warning: the newest finished run is used instead)."""
    import logging

    if tracking_uri.startswith(("http://", "https://")):
        return None  # no network wait at a tool's start
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return None  # no store yet: asking would create one
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except Exception:  # noqa: BLE001 — an unreadable store: fall back to the checkpoints alone
        return None
    for name in tasks:
        try:
            version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        except MlflowException:
            continue
        folders = [
            folder
            for folder in (Path(log_dir) / name).rglob(CHECKPOINTS_DIR)
            if folder.is_dir() and _run_id_of(folder) == version.run_id
        ]
        path = next((p for f in folders if (p := _checkpoint_of_run(f, "best")) is not None), None)
        if path is None:
            logging.getLogger("ml-playground").warning(
                "models:/%s@%s is version %s of run %s, whose checkpoints are not under %s: using the newest finished run",
                name,
                CHAMPION_ALIAS,
                version.version,
                version.run_id,
                Path(log_dir) / name,
            )
            return None
        return path, f"models:/{name}@{CHAMPION_ALIAS}: version {version.version}, run {version.run_id}"
    return None


def _run_id_of(folder: Path) -> str | None:
    """The MLflow run id in the `mlflow_run_id` file beside a run's checkpoint folder, or None."""
    file = folder.parent / RUN_ID_FILE
    return file.read_text().strip() if file.is_file() else None


def _unfinished_runs(folders: Sequence[Path], tracking_uri: str) -> set[Path]:
    """The checkpoint folders whose run the local MLflow store at `tracking_uri` holds with a status other than
    FINISHED. Unknown runs, a missing store, a remote store and a store that cannot be read give no folder."""
    ids = {folder: run_id for folder in folders if (run_id := _run_id_of(folder)) is not None}
    if not ids or tracking_uri.startswith(("http://", "https://")):
        return set()
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return set()  # no store yet: asking would create one
    import mlflow

    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    except Exception:  # noqa: BLE001 — an unreadable store: fall back to the checkpoints alone
        return set()
    unfinished = set()
    for folder, run_id in ids.items():
        try:
            status = client.get_run(run_id).info.status
        except Exception:  # noqa: BLE001 — a run this store does not hold (e.g. on a tracking server): kept
            continue
        if status != FINISHED:
            unfinished.add(folder)
    return unfinished


def _checkpoint_of_run(folder: Path, which: Which) -> Path | None:
    if which == "best":
        best = [p for p in folder.glob("best*.ckpt") if p.is_file()]
        if best:
            return max(best, key=_mtime)
    last = folder / "last.ckpt"
    return last if last.is_file() else None  # a dangling last.ckpt link is no checkpoint


def _newest_write(folder: Path) -> float:
    return max((_mtime(p) for p in folder.glob("*.ckpt") if p.is_file()), default=0.0)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime  # of the file a link points to: Lightning's last.ckpt links to the newest epoch


def _refusal(path: Path, key: str, exc: Exception) -> UserError:
    wanted = _unsafe_globals(path) or _GLOBAL_IN_MESSAGE.findall(str(exc))
    if not wanted:  # no import asked for: a damaged file or another format, not a payload
        return UserError(f"{key}={path} is not a PyTorch checkpoint or weights file ({_torch_reason(exc)})")
    return UserError(
        f"{key}={path}: refused to load: its pickle asks to import {', '.join(dict.fromkeys(wanted))}, which "
        "is not on the allow-list of checkpoint data — nothing in it ran (a checkpoint is loaded as data, never as code)"
    )


def _unsafe_globals(path: Path) -> list[str]:
    """Every import a file's pickle asks for beyond the allowed ones, found by reading its opcodes without
    unpickling (torch's message names only the first, or none for e.g. a bare pickle of protocol ≥ 4)."""
    if zipfile.is_zipfile(path):  # torch.save's format since 1.6
        with contextlib.suppress(Exception):  # e.g. a zip that is not a torch checkpoint: nothing to report
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        return []
    found, strings = [], []
    with (
        contextlib.suppress(Exception),
        open(path, "rb") as handle,
    ):  # a damaged pickle: what was found before the damage
        for opcode, arg, _ in pickletools.genops(handle):
            if opcode.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
    allowed = _allowed_names()
    return [name for name in dict.fromkeys(found) if name not in allowed]


def _allowed_names() -> set[str]:
    # torch's default allow-list has no public accessor
    from torch import _weights_only_unpickler as unpickler

    try:
        return set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    except AttributeError:
        return set()


def _torch_reason(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("Unsupported", "Trying to", "WeightsUnpickler error:"))]
    return (reasons[-1] if reasons else lines[0] if lines else type(exc).__name__).removeprefix(
        "WeightsUnpickler error: "
    )


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
