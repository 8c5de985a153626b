"""What the benchmarks share: run a make target's entry as the user runs it, time its epochs, print the ratio.

Epoch time, for our entry and for each peer alike: from the start of one epoch to the start of the next, so it
holds the epoch's training, validation, metrics, logging, figures and checkpoint writing. The first epoch is left
out (one-off start-up: data decoding and caching, thread pools, allocator warm-up, ultralytics' label plots) and
the last has no next start (and is followed by one-off end work: final plots, the MLflow model): `--epochs E`
times E − 2 epochs, so E ≥ 3.

Every benchmark prints its headline as one line `ratio <what>: <x>x (goal >= <g>x)`, ours / the peer's speed
(higher is better), which `RATIO_LINE` parses.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl

import core  # offline switches first; core.offline.STARTUP_ENVIRONMENT

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ML_PLAYGROUND_SHARED_DATA", REPO.parent / "shared" / "data"))
RATIO_LINE = re.compile(r"^ratio (?P<what>.+): (?P<ratio>\d+(\.\d+)?)x \(goal >= (?P<goal>\d+(\.\d+)?)x\)$")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # read by torch's OpenMP and MKL at start-up
TIMER_KEY = "bench_epoch_timer"  # the callback's name in the entry's `callbacks` group


class EpochTimer(pl.Callback):
    """Writes `path` (JSON) at the end of training: `epoch_starts` (Unix seconds, one per epoch), `step_seconds` (per
    epoch, the seconds spent inside its training batches, from each batch's start hook to its end hook: what is
    left of an epoch is fetching, the epoch's end work and logging) and `metrics` (the trainer's last callback
    metrics as floats). Added to the entry by `train_entry` as one more callback."""

    def __init__(self, path: str) -> None:
        self.path, self.starts, self.steps = Path(path), [], []
        self._batch_start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(time.time())
        self.steps.append(0.0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps[-1] += time.perf_counter() - self._batch_start

    def on_train_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self.path.write_text(json.dumps({"epoch_starts": self.starts, "step_seconds": self.steps, "metrics": metrics}))


def steady_epoch_seconds(epoch_starts: Sequence[float]) -> list[float]:
    """Seconds of epochs 2 … E−1 from E epoch starts (see the module docstring); ValueError below 3 epochs."""
    if len(epoch_starts) < 3:
        raise ValueError(f"{len(epoch_starts)} epoch(s) ran: at least 3 are needed to time one (--epochs >= 3)")
    return [b - a for a, b in zip(epoch_starts[1:-1], epoch_starts[2:])]


def user_environment() -> dict[str, str]:
    """This process's environment with the thread settings the user started it with, for a child that runs a make
    target's entry as the user runs it. Importing ultralytics sets OMP_NUM_THREADS=1 when it is unset, and a child
    inherits that: the entry then trained on one of 2 cores (22-29 s an epoch in bench-yolo, 12-15 s from a shell)."""
    env = dict(os.environ)
    for key in THREAD_VARIABLES:
        if key in core.offline.STARTUP_ENVIRONMENT:
            env[key] = core.offline.STARTUP_ENVIRONMENT[key]
        else:
            env.pop(key, None)
    return env


def train_entry(overrides: Sequence[str], work: Path, profile: Path | None = None) -> dict:
    """`python -m experiments.train <overrides>` in a child process, as `make <target> ARGS=...` runs it, with
    `EpochTimer` added as one more callback (and under cProfile, stats to `profile`, when given); returns
    {"epoch_s": steady epoch seconds, "steps_s": the training-step seconds of the same epochs, "metrics", "wall_s":
    the whole command}. A failed run is a RuntimeError
    carrying the end of its output."""
    timer = work / "epoch_timer.json"
    command = [
        sys.executable,
        *(("-m", "cProfile", "-o", str(profile)) if profile else ()),
        "-m",
        "experiments.train",
        *overrides,
        f"+callbacks.{TIMER_KEY}._target_=benchmarks.common.EpochTimer",
        f"+callbacks.{TIMER_KEY}.path={timer}",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=user_environment())
    wall = time.perf_counter() - start
    if done.returncode != 0 or not timer.is_file():
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    timed = json.loads(timer.read_text())
    return {
        "epoch_s": steady_epoch_seconds(timed["epoch_starts"]),
        "steps_s": timed["step_seconds"][1:-1],  # the epochs steady_epoch_seconds times
        "metrics": timed["metrics"],
        "wall_s": wall,
    }


def merge_overrides(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """`base` Hydra overrides with those of `extra` for the same key replaced (Hydra refuses a key given twice),
    then the rest of `extra`: merge_overrides(["data=a", "epochs=3"], ["data=b"]) == ["data=b", "epochs=3"]."""
    key = lambda item: item.split("=", 1)[0].lstrip("+~")  # noqa: E731
    given = {key(item): item for item in extra}
    return [given.pop(key(item), item) for item in base] + [item for item in extra if key(item) in given]


def compose(config_name: str, overrides: Sequence[str]):
    """conf/<config_name>.yaml composed with `overrides` as the entry composes it, the hydra node resolvable
    (`paths.output_dir` is a fresh folder under outputs/ as in a real run) and then removed, as in the entry."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    import core.config  # noqa: F401  (the `cap` resolver)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(Path(cfg.hydra.run.dir))
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def per_epoch(seconds: Sequence[float]) -> str:
    """'12.3 s/epoch (median of 3: 12.1–12.9)'"""
    return f"{statistics.median(seconds):.2f} s/epoch (median of {len(seconds)}: {min(seconds):.2f}–{max(seconds):.2f})"


def print_ratio(what: str, ratio: float, goal: float) -> None:
    """The headline line every benchmark ends with (`RATIO_LINE`)."""
    print(f"ratio {what}: {ratio:.3f}x (goal >= {goal:g}x)", flush=True)
