"""Each paper trick, checked on the module's own code paths."""

from __future__ import annotations

import pytest
import torch

from dcgan.module import DCGAN

TINY = {"generator": {"num_layers": 6, "width_multiplier": 0.0625}, "discriminator": {"width_multiplier": 0.0625}}


def test_noisy_labels_follow_the_paper_code():
    model = DCGAN(**TINY, real_label_mean=0.7, real_label_std=0.5, fake_label_mean=0.0, fake_label_std=0.3)
    like = torch.empty(200_000)
    real = model._targets(like, model.hparams.real_label_mean, model.hparams.real_label_std)
    fake = model._targets(like, model.hparams.fake_label_mean, model.hparams.fake_label_std)
    assert real.mean().item() == pytest.approx(0.7, abs=0.01) and real.std().item() == pytest.approx(0.5, abs=0.01)
    assert fake.mean().item() == pytest.approx(0.0, abs=0.01) and fake.std().item() == pytest.approx(0.3, abs=0.01)
    assert (real > 1).any() and (fake < 0).any()  # as in the paper's code, targets may leave [0, 1]


def test_one_sided_smoothing_is_a_constant_target():
    model = DCGAN(**TINY, real_label_mean=0.9)
    target = model._targets(torch.empty(10), 0.9, 0.0)
    assert torch.equal(target, torch.full((10,), 0.9))


def test_instance_noise_anneals_linearly():
    model = DCGAN(**TINY, instance_noise_std=0.1, instance_noise_anneal_epochs=10)
    trainer = type("T", (), {"current_epoch": 5})()
    model._trainer = trainer  # current_epoch reads the trainer
    assert model._noise_std() == pytest.approx(0.05)
    trainer.current_epoch = 12
    assert model._noise_std() == 0.0


def test_bad_trick_names_are_clear_errors():
    with pytest.raises(ValueError, match="instance_noise_on"):
        DCGAN(**TINY, instance_noise_on="fake")
    with pytest.raises(ValueError, match="weight_init"):
        DCGAN(**TINY, weight_init="xavier")


def test_fixed_noise_is_fixed_by_the_seed():
    assert torch.equal(DCGAN(**TINY, seed=3).fixed_z, DCGAN(**TINY, seed=3).fixed_z)
    assert not torch.equal(DCGAN(**TINY, seed=3).fixed_z, DCGAN(**TINY, seed=4).fixed_z)
