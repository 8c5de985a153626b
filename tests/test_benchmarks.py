"""The benchmarks run with their smallest flags and end with a ratio line that parses (its value is not checked:
timings belong to a quiet machine, docs/development.md); their epoch timing and override merging, exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import common
from benchmarks.common import RATIO_LINE, EpochTimer, merge_overrides, print_ratio, steady_epoch_seconds
from tests.conftest import REPO, SHARED_DATA, needs_shared_data


def _ratio_of(*args: str, timeout: int = 900) -> dict:
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    match = RATIO_LINE.match(done.stdout.strip().splitlines()[-1])
    assert match, done.stdout[-2000:]
    return {"ratio": float(match["ratio"]), "goal": float(match["goal"]), "what": match["what"]}


def test_ratio_line_is_printed_as_it_is_parsed(capsys):
    print_ratio("x per y, ours / theirs", 1.23456, 0.95)
    match = RATIO_LINE.match(capsys.readouterr().out.strip())
    assert (match["what"], match["ratio"], match["goal"]) == ("x per y, ours / theirs", "1.235", "0.95")


def test_epochs_are_timed_from_start_to_next_start_without_the_first_and_last():
    assert steady_epoch_seconds([100.0, 130.0, 142.5, 155.0, 190.0]) == [12.5, 12.5, 35.0]
    with pytest.raises(ValueError, match="2 epoch"):
        steady_epoch_seconds([0.0, 1.0])


def test_epoch_timer_sums_the_seconds_inside_each_epochs_training_batches(tmp_path, monkeypatch):
    clock = iter([10.0, 10.5, 11.0, 11.25, 20.0, 22.0])  # perf_counter at batch start, end, start, end, ...
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(clock))

    class Trainer:
        callback_metrics: dict = {}

    timer, trainer = EpochTimer(str(tmp_path / "timer.json")), Trainer()
    for batches in (2, 1):
        timer.on_train_epoch_start(trainer, None)
        for index in range(batches):
            timer.on_train_batch_start(trainer, None, None, index)
            timer.on_train_batch_end(trainer, None, None, None, index)
    timer.on_train_end(trainer, None)
    written = json.loads((tmp_path / "timer.json").read_text())
    assert written["step_seconds"] == [0.75, 2.0] and len(written["epoch_starts"]) == 2


def test_overrides_for_a_key_already_given_replace_it_in_place():
    assert merge_overrides(["data=a", "epochs=3", "x.y=1"], ["+z=2", "data=b", "x.y=5"]) == [
        "data=b",
        "epochs=3",
        "x.y=5",
        "+z=2",
    ]


def test_face_detectors_benchmark_prints_its_ratio():
    result = _ratio_of(
        "benchmarks.face_detectors", "--cards", "2", "--workers", "2", "--detectors", "hog", "--seconds", "0"
    )
    assert result["goal"] == 1.8 and result["what"] == "detect-faces speed, 2 processes / serial"


@pytest.mark.slow
def test_dcgan_epoch_benchmark_prints_its_ratio(tmp_path):
    result = _ratio_of(
        "benchmarks.dcgan_epoch",
        "--epochs",
        "3",
        "--work-dir",
        str(tmp_path / "work"),
        f"paths.data_dir={tmp_path / 'data'}",
        "max_images=64",
        "model.quality.num_samples=32",
    )
    assert result["goal"] == 0.95


@pytest.mark.slow
def test_yolo_facemask_train_benchmark_prints_its_ratio(tmp_path):
    result = _ratio_of(
        "benchmarks.yolo_facemask_train",
        "--epochs",
        "3",
        "--work-dir",
        str(tmp_path / "work"),
        "data=synthetic_facemask",
        f"paths.data_dir={tmp_path / 'data'}",
        "profile.detector_imgsz=160",
        "max_images=16",
        "data.generate.images=40",
    )
    assert result["goal"] == 1.0


@pytest.mark.slow
@needs_shared_data("video", "short_hamilton_clip.mp4")
def test_monitor_benchmark_prints_its_ratio(tmp_path):
    logs = tmp_path / "logs"
    train = [sys.executable, "-m", "experiments.train", "experiment=yolo_facemask", "debug=fast"]
    subprocess.run(
        [*train, f"paths.log_dir={logs}", f"paths.mlflow_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    ckpt = next(logs.glob("yolo_facemask/runs/*/checkpoints/last.ckpt"))
    video = SHARED_DATA / "video" / "short_hamilton_clip.mp4"
    result = _ratio_of("benchmarks.monitor_facemask", "--source", str(video), "--ckpt", str(ckpt), "--frames", "5")
    assert result["goal"] == 1.0 and result["what"].endswith("(bytetrack)")


@pytest.mark.slow
def test_serve_latency_benchmark_prints_its_ratio(yolo_trained, tmp_path):
    result = _ratio_of(
        "benchmarks.serve_latency",
        "--ckpt",
        str(yolo_trained["checkpoint"]),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
        "--requests",
        "3",
        "--conf",
        "0.001",
    )
    assert result["goal"] == 0.5 and result["what"] == "served / in-process requests/s"
