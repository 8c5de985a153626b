"""A checkpoint is data, never code: every tool that reads a checkpoint or weights file a user names reads it
with core.checkpoints (torch.load(weights_only=True) under a short allow-list). A file whose pickle carries a
payload is refused — exit status 2, one line naming the file and the import it asked for — and the payload
never runs. The project's own checkpoints need nothing beyond the allow-list: `assert_plain_checkpoint` is
called on real DCGAN, face-classifier and YOLO checkpoints by tests/test_dcgan_training.py,
tests/test_capture_recognize.py and tests/test_yolo.py, next to the trainings they already run."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from core.checkpoints import load_checkpoint, load_module
from core.errors import UserError
from tests.conftest import REPO, compose


class Payload:
    """Unpickling this runs `touch <marker>` (through os.system), as a malicious checkpoint would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_payload_checkpoint(path: Path, marker: Path, shape: str = "lightning") -> Path:
    """A checkpoint-shaped file whose pickle creates `marker` when loaded with weights_only=False.

    shape: "lightning" (a Lightning checkpoint dict), "yolov5" (also a pickled `models.yolo.Model`, so the yolov5
    reader's stand-in allow-list is in play) or "ultralytics" (also a pickled ultralytics module)."""
    checkpoint = {
        "state_dict": {"w": torch.zeros(2)},
        "hyper_parameters": {"lr": 1e-3, "note": Payload(marker)},
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "2.6.6",
    }
    if shape == "yolov5":  # a class that pickles as models.yolo.Model, without the yolov5 repository
        Model = type("Model", (torch.nn.Module,), {"__module__": "models.yolo"})
        fake = types.ModuleType("models.yolo")
        fake.Model = Model
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(sys.modules, "models", types.ModuleType("models"))
            mp.setitem(sys.modules, "models.yolo", fake)
            torch.save({**checkpoint, "model": Model()}, path)
        return path
    if shape == "ultralytics":
        from ultralytics.nn.modules.conv import Concat

        checkpoint["model"] = Concat()
    torch.save(checkpoint, path)
    return path


def refusal(key: str, path: Path) -> str:
    return f"{key}={path}: refused to load: its pickle asks to import posix.system, which is not on the allow-list"


def assert_plain_checkpoint(path: Path, cls: type, **overrides) -> torch.nn.Module:
    """`path`, written by this project, holds only what core.checkpoints allows, and `cls` rebuilds from it
    with every weight equal to the file's."""
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    checkpoint = load_checkpoint(path)
    module = load_module(cls, path, **overrides)
    state = module.state_dict()
    assert state.keys() == checkpoint["state_dict"].keys()
    assert all(torch.equal(state[k], v) for k, v in checkpoint["state_dict"].items())
    return module


def test_the_payload_is_real_and_the_loader_refuses_it_with_one_line(tmp_path):
    """The helper's file does run code when unpickled without weights_only (so the tests below can fail);
    the safe loader names the file and the import and runs nothing."""
    evil = write_payload_checkpoint(tmp_path / "evil.ckpt", tmp_path / "ran")
    torch.load(evil, weights_only=False)
    assert (tmp_path / "ran").exists()

    marker = tmp_path / "pwned"
    evil = write_payload_checkpoint(tmp_path / "evil2.ckpt", marker)
    with pytest.raises(UserError) as refused:
        load_checkpoint(evil, key="CKPT")
    assert str(refused.value) == (
        f"{refusal('CKPT', evil)} of checkpoint data — nothing in it ran "
        "(a checkpoint is loaded as data, never as code)"
    )
    assert not marker.exists()


def test_a_bare_pickle_and_a_non_checkpoint_and_a_missing_file_are_one_line_errors(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    bare = tmp_path / "bare.pt"
    bare.write_bytes(pickle.dumps({"weight": Payload(marker)}))  # protocol 5: torch's message names no import
    with pytest.raises(UserError, match=r"^key=.*bare\.pt: refused to load: its pickle asks to import posix\.system,"):
        load_checkpoint(bare, key="key")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"^CKPT=.*notes\.ckpt is not a PyTorch checkpoint or weights file \("):
        load_checkpoint(text)
    with pytest.raises(UserError, match=r"^CKPT=.*absent\.ckpt: file not found$"):
        load_checkpoint(tmp_path / "absent.ckpt")
    assert not marker.exists()


def _recognize(evil, tmp_path, store):
    from experiments.recognize import recognize

    recognize(
        compose("recognize", {**store, "ckpt": str(evil), "images": str(tmp_path), "out_dir": str(tmp_path / "out")})
    )


def _predict(evil, tmp_path, store):
    from experiments.predict_facemask import predict

    predict(
        compose(
            "predict_facemask", {**store, "ckpt": str(evil), "source": str(tmp_path), "out_dir": str(tmp_path / "out")}
        )
    )


def _evaluate(evil, tmp_path, store):
    from experiments.eval_facemask import evaluate

    evaluate(
        compose("eval_facemask", {**store, "ckpt": str(evil), "voc": str(tmp_path), "out": str(tmp_path / "eval.json")})
    )


def _export(task):
    def export(evil, tmp_path, store):
        from experiments.export_web import export_web

        export_web(
            compose(
                "export_web",
                [
                    *(f"{k}={v}" for k, v in store.items()),
                    f"out_dir={tmp_path / 'models'}",
                    f"+checkpoints.{task}={evil}",
                ],
            )
        )

    return export


def _train(experiment, key):
    def train_with(evil, tmp_path, store):
        from experiments.train import train

        train(compose("train", {"experiment": experiment, "debug": "fast", **store, key: str(evil)}))

    return train_with


# (tool, the config key named in the message, the payload's shape)
TOOLS = {
    "recognize": (_recognize, "CKPT", "lightning"),
    "predict-facemask": (_predict, "CKPT", "lightning"),
    "eval-facemask": (_evaluate, "CKPT", "lightning"),
    "export-web generator": (_export("exp1_dcgan_fruits"), "checkpoints.exp1_dcgan_fruits", "lightning"),
    "export-web facemask": (_export("yolo_facemask"), "checkpoints.yolo_facemask", "lightning"),
    "export-web faces": (_export("vgg16_faces"), "checkpoints.vgg16_faces", "lightning"),
    "train resume": (_train("exp1_dcgan_fruits", "ckpt_path"), "ckpt_path", "lightning"),
    "yolo pretrained state_dict": (_train("yolo_facemask", "model.pretrained"), "model.pretrained", "lightning"),
    "yolo pretrained yolov5": (_train("yolo_facemask", "model.pretrained"), "model.pretrained", "yolov5"),
    "yolo pretrained ultralytics": (_train("yolo_facemask", "model.pretrained"), "model.pretrained", "ultralytics"),
    "vgg16 weights": (_train("vgg16_faces", "model.weights"), "model.weights", "lightning"),
    "dcgan quality feature weights": (
        _train("exp1_dcgan_fruits", "model.quality.feature_weights"),
        "model.quality.feature_weights",
        "lightning",
    ),
    "dcgan quality inception weights": (
        _train("exp1_dcgan_fruits", "model.quality.inception_weights"),
        "model.quality.inception_weights",
        "lightning",
    ),
}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_every_tool_refuses_a_checkpoint_that_carries_code(tool, tmp_path, store, capsys):
    """Each entry as its Hydra main runs it (`user_errors` around the entry's function): exit 2, one line on
    stderr naming the file and the import, no marker file."""
    from experiments import user_errors

    run, key, shape = TOOLS[tool]
    marker = tmp_path / "pwned"
    evil = write_payload_checkpoint(tmp_path / "evil.ckpt", marker, shape)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_status, user_errors():
        run(evil, tmp_path, store)
    assert exit_status.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {refusal(key, evil)}"), lines
    assert "models.yolo" not in lines[0] and "ultralytics" not in lines[0]  # the readers' stand-ins are allowed
    assert not marker.exists()


def test_recognize_command_exits_2_with_one_line_and_runs_nothing(tmp_path):
    """The real process, as `make recognize CKPT=…` starts it."""
    marker = tmp_path / "pwned"
    evil = write_payload_checkpoint(tmp_path / "evil.ckpt", marker)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.recognize",
            f"ckpt={evil}",
            f"images={tmp_path}",
            f"out_dir={tmp_path / 'out'}",
            f"paths.mlflow_dir={tmp_path}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {refusal('CKPT', evil)} of checkpoint data — nothing in it ran (a checkpoint is loaded as data, never as code)"
    ]
    assert not marker.exists()
