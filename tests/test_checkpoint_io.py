"""Checkpoints are written whole or not at all (`training.checkpoint_io.LocalCheckpointIO`, every task's
`trainer.plugins`): a save that fails half-way leaves the previous file as it was and no partial file beside it."""

from __future__ import annotations

import errno

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose
from training.checkpoint_io import LocalCheckpointIO


def test_a_checkpoint_is_replaced_whole_and_a_failed_save_leaves_the_old_one(tmp_path, monkeypatch):
    io = LocalCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 0, "w": torch.zeros(3)}, target)
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, target)
    assert io.load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]

    save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        save(obj, f, *args, **kwargs)  # the bytes reach the temporary file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "w": torch.full((3,), 2.0)}, target)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(target)["w"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_every_tasks_trainer_writes_through_it(tmp_path):
    for experiment in ("exp1_dcgan_fruits", "yolo_facemask", "vgg16_faces"):
        cfg = compose("train", {"experiment": experiment, "debug": "fast", "paths.log_dir": str(tmp_path)})
        trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
        assert isinstance(trainer.strategy.checkpoint_io, LocalCheckpointIO), experiment
