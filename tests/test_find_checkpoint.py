"""The one search of the log folder for a task's checkpoint (`core.checkpoints.find_checkpoint`): resume, the
tools (recognize, predict/eval-facemask) and export-web all use it."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from core.checkpoints import NoCheckpoint, find_checkpoint
from core.errors import UserError


def _write(path: Path, when: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read")
    os.utime(path, (when, when))
    return path


def _run(task_dir: Path, name: str, epoch_at: float, best_at: float | None = None) -> Path:
    """A run folder as Lightning leaves it: epoch=…ckpt, last.ckpt linking to it, and maybe a best checkpoint."""
    folder = task_dir / name / "checkpoints"
    _write(folder / "epoch=0-step=1.ckpt", epoch_at)
    (folder / "last.ckpt").symlink_to("epoch=0-step=1.ckpt")
    if best_at is not None:
        _write(folder / "best-epoch=0.ckpt", best_at)
    return folder


def test_last_is_the_newest_runs_last_ckpt_across_runs_and_sweeps(tmp_path):
    now = time.time()
    _run(tmp_path / "yolo_facemask" / "runs", "a", now - 30)
    newest = _run(tmp_path / "yolo_facemask" / "multiruns" / "b", "0", now - 10)
    _run(tmp_path / "yolo_facemask" / "runs", "c", now - 20)
    assert find_checkpoint(tmp_path, "yolo_facemask") == newest / "last.ckpt"
    assert find_checkpoint(tmp_path, "yolo_facemask", "last") == newest / "last.ckpt"


def test_best_is_the_newest_runs_best_checkpoint_else_its_last(tmp_path):
    now = time.time()
    older = _run(tmp_path / "t", "old", now - 30, best_at=now - 40)
    assert find_checkpoint(tmp_path, "t", "best") == older / "best-epoch=0.ckpt"
    newer = _run(tmp_path / "t", "new", now - 10)  # a run without a monitored checkpoint
    assert find_checkpoint(tmp_path, "t", "best") == newer / "last.ckpt"
    _write(newer / "best-epoch=1.ckpt", now - 5)
    assert find_checkpoint(tmp_path, "t", "best") == newer / "best-epoch=1.ckpt"
    assert find_checkpoint(tmp_path, "t", "last") == newer / "last.ckpt"


def test_several_tasks_give_the_newest_of_all_and_dangling_links_are_skipped(tmp_path):
    now = time.time()
    faces = _run(tmp_path / "vgg16_faces" / "runs", "a", now - 20)
    broken = tmp_path / "vgg16_faces_paper" / "runs" / "b" / "checkpoints"
    broken.mkdir(parents=True)
    (broken / "last.ckpt").symlink_to("epoch=9-step=9.ckpt")  # its target was deleted
    assert find_checkpoint(tmp_path, ["vgg16_faces", "vgg16_faces_paper"]) == faces / "last.ckpt"
    paper = _run(tmp_path / "vgg16_faces_paper" / "runs", "c", now - 10)
    assert find_checkpoint(tmp_path, ["vgg16_faces", "vgg16_faces_paper"]) == paper / "last.ckpt"


def test_no_checkpoint_names_the_folder_and_the_make_target(tmp_path):
    (tmp_path / "yolo_facemask" / "runs" / "a" / "checkpoints").mkdir(parents=True)  # a run that died before its first
    with pytest.raises(
        NoCheckpoint,
        match=rf"^no checkpoints/last\.ckpt under {tmp_path}/yolo_facemask — "
        r"`make yolo-facemask` writes one, or pass CKPT=<file>$",
    ):
        find_checkpoint(tmp_path, "yolo_facemask", "last", make_target="make yolo-facemask")
    with pytest.raises(NoCheckpoint, match=r"^no checkpoints/best\*\.ckpt or last\.ckpt under .*/a or .*/b$"):
        find_checkpoint(tmp_path, ["a", "b"])  # the tools' default: best, else last
    with pytest.raises(UserError, match="'newest' is neither a checkpoint file nor one of last, best"):
        find_checkpoint(tmp_path, "a", "newest")


def test_no_other_code_globs_for_checkpoints():
    """The tools, models, reports, benchmarks and notebooks search with `find_checkpoint` only."""
    repo = Path(__file__).resolve().parents[1]
    sources = [
        p
        for d in (
            "experiments",
            "dcgan",
            "facemask",
            "faces",
            "training",
            "synthetic",
            "reporting",
            "benchmarks",
            "notebooks",
        )
        for p in (repo / d).rglob("*")
        if p.suffix in (".py", ".ipynb")
    ]
    assert [p.relative_to(repo) for p in sources if re.search(r"glob\([^)]*ckpt", p.read_text())] == []


def test_runs_the_store_holds_as_unfinished_are_skipped_and_unknown_ones_kept(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("t")
    now = time.time()
    folders = {}
    for age, (name, status) in enumerate(
        [("running", "RUNNING"), ("failed", "FAILED"), ("finished", "FINISHED"), ("elsewhere", None), ("no_id", None)]
    ):
        folders[name] = _run(tmp_path / "logs" / "t", name, now - 10 * age, best_at=now - 10 * age)
        if status:
            run = client.create_run(experiment)
            client.set_terminated(run.info.run_id, status) if status != "RUNNING" else None
            (folders[name].parent / "mlflow_run_id").write_text(run.info.run_id)
        elif name == "elsewhere":
            (folders[name].parent / "mlflow_run_id").write_text("0123456789abcdef")  # e.g. on a tracking server
    best = {name: folder / "best-epoch=0.ckpt" for name, folder in folders.items()}

    assert find_checkpoint(tmp_path / "logs", "t") == best["running"]  # no store asked: the newest write
    missing = tmp_path / "none.db"
    assert find_checkpoint(tmp_path / "logs", "t", tracking_uri=f"sqlite:///{missing}") == best["running"]
    assert not missing.exists()  # a store that is not there is not created by asking
    assert find_checkpoint(tmp_path / "logs", "t", tracking_uri=uri) == best["finished"]
    (folders["finished"] / "best-epoch=0.ckpt").unlink()
    (folders["finished"] / "last.ckpt").unlink()
    assert find_checkpoint(tmp_path / "logs", "t", tracking_uri=uri) == best["elsewhere"]
    for name in ("elsewhere", "no_id"):
        for path in folders[name].iterdir():
            path.unlink()
    with pytest.raises(
        NoCheckpoint,
        match=r"^no checkpoints/best\*\.ckpt or last\.ckpt of a finished run \(2 run\(s\) "
        r"with one have not finished\) under .*/logs/t — `make t` writes one",
    ):
        find_checkpoint(tmp_path / "logs", "t", tracking_uri=uri, make_target="make t")
