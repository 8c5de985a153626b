"""The DCGAN sample-quality metrics (lightning_modules/sample_quality.py): KID and FID separate real images from
noise, are near zero for real against real, and FID is flagged below a full-rank covariance (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.synthetic.scenes import FRUITS, _fruit
from lightning_modules.sample_quality import FEATURE_DIM, SampleQuality


def _fruit_images(count: int, seed: int) -> torch.Tensor:
    """`count` generated Fruits-360-like scenes, (count, 3, 64, 64) in [-1, 1], the 5 classes in turn."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for k in range(count):
        _, colour, (half_w, half_h) = FRUITS[k % 5]
        image = cv2.resize(_fruit(rng, np.array(colour, float), half_w, half_h), (64, 64), interpolation=cv2.INTER_AREA)
        images.append(torch.from_numpy(image).permute(2, 0, 1))
    return torch.stack(images).float() / 127.5 - 1


@pytest.fixture(scope="module")
def scores():
    real, other_real = _fruit_images(160, seed=0), _fruit_images(160, seed=1)
    noise = torch.rand(160, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    metric = SampleQuality(num_samples=160)
    settings = metric.set_real(real)
    return settings, {
        name: metric.compute(fake) for name, fake in [("self", real), ("real", other_real), ("noise", noise)]
    }


def test_real_against_itself_is_zero_and_against_other_real_far_below_noise(scores):
    settings, s = scores
    assert settings["fid_trustworthy"] is True and FEATURE_DIM == 64  # 160 samples > 64 dimensions: full rank
    # identical feature sets: FID = |μ−μ|² + tr(Σ + Σ − 2(ΣΣ)^½) = 0 up to rounding of the matrix square root
    assert s["self"]["fid"] == pytest.approx(0.0, abs=1e-3)
    # KID's unbiased estimator leaves out the diagonal k(x, x) only within a set, so it is ~0 (may be < 0)
    assert abs(s["self"]["kid"]) < 0.02 * s["noise"]["kid"]
    # another 160 images of the same scenes: a small distance, 50× and more below uniform noise
    assert s["real"]["fid"] < 0.02 * s["noise"]["fid"]
    assert s["real"]["kid"] < 0.02 * s["noise"]["kid"]
    assert s["noise"]["fid"] > 1.0 and s["noise"]["kid"] > 0.01


def test_fid_counts_as_trustworthy_only_from_more_samples_than_feature_dimensions():
    """N samples give a covariance of rank ≤ N − 1: with N ≤ 64 it is singular (issue 16: 256 samples against
    256 dimensions). The run is tagged and warned; the FID is still logged for runs of one size."""
    real = _fruit_images(FEATURE_DIM + 1, seed=0)
    metric = SampleQuality(num_samples=FEATURE_DIM)
    assert metric.set_real(real)["fid_trustworthy"] is False
    assert metric.notes == [
        "FID from 64 samples, not more than its 64 feature dimensions: a singular covariance, flagged as not "
        "trustworthy (biased high; compare only runs of the same size; 65 images or more make it trustworthy); "
        "KID is the primary metric"
    ]
    features = metric.fid.inception(real).double()  # the rank the rule rests on, measured on these images
    assert torch.linalg.matrix_rank(features[:FEATURE_DIM].T.cov()) == FEATURE_DIM - 1
    assert torch.linalg.matrix_rank(features.T.cov()) == FEATURE_DIM
    full = SampleQuality(num_samples=FEATURE_DIM + 1)
    assert full.set_real(real)["fid_trustworthy"] is True and full.notes == []
