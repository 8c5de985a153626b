"""The DCGAN sample-quality metrics (dcgan/quality.py): KID and FID separate real images from
noise, are near zero for real against real, and FID is flagged below a full-rank covariance; precision, recall,
density and coverage (Naeem et al. 2020) give their exact values on constructed features and see a collapse that
KID does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcgan.quality import FEATURE_DIM, SampleQuality, precision_recall_density_coverage
from synthetic.scenes import FRUITS, _fruit


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
        name: metric.compute(fake)
        for name, fake in [
            ("self", real),
            ("real", other_real),
            ("noise", noise),
            ("one", real[:1].repeat(160, 1, 1, 1)),
        ]
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


K = 5  # the metric's default k


def _modes(count: int) -> np.ndarray:
    """`count` well-separated modes of K + 1 real feature vectors each: a centre 10·e_j and K points on a unit circle
    around it (in two extra dimensions). A circle point's K nearest neighbours are its own mode's other K points, so
    its ball's radius is the longest chord, 2·sin(2π/5) = 1.90 > 1 (the centre); the centre's radius is 1."""
    rows = []
    for j in range(count):
        centre = np.zeros(count + 3)
        centre[j] = 10.0
        rows.append(centre)
        for t in range(K):
            point = centre.copy()
            point[count : count + 2] = np.cos(2 * np.pi * t / K), np.sin(2 * np.pi * t / K)
            rows.append(point)
    return np.array(rows)


def _copies(real: np.ndarray, rows: list[int], each: int) -> np.ndarray:
    """`each` copies of each real row, moved 0.1 off it (a third extra dimension): no fake equals a real exactly, so
    no distance tie with a zero radius decides a count."""
    fake = np.repeat(real[rows], each, axis=0)
    fake[:, -1] = 0.1
    return fake


def test_copies_of_one_real_point_cover_exactly_its_mode():
    real = _modes(4)  # 24 real points
    scores = precision_recall_density_coverage(real, _copies(real, [0], each=10), K)
    # coverage: the 6 reals of mode 0 hold the fakes in their balls (0.1 < 1 for the centre, √1.01 < 1.90 for the
    # circle), the 18 others do not: 6/24 = 1/4; recall: the fakes' balls have radius 0 and hold no real;
    # precision: every fake is inside a real ball; density: each fake is in those 6 balls, 6 / K
    assert scores == {"precision": 1.0, "recall": 0.0, "density": pytest.approx(6 / K), "coverage": 0.25}


def test_copies_of_two_modes_of_four_cover_half():
    real = _modes(4)
    scores = precision_recall_density_coverage(real, _copies(real, [0, K + 1], each=K + 1), K)
    assert scores["coverage"] == 0.5 and scores["recall"] == 0.0 and scores["precision"] == 1.0


def test_the_real_set_against_itself_is_fully_covered_and_recalled():
    real = _modes(4)
    scores = precision_recall_density_coverage(real, real, K)
    assert (scores["precision"], scores["recall"], scores["coverage"]) == (1.0, 1.0, 1.0)


def test_diversity_of_images_on_the_kid_features(scores):
    """On the FeatureNet features of 160 fruit images: the set itself is the ceiling (1, 1), another 160 real images
    of the same scenes come near it, one image repeated 160 times covers its neighbourhood only and has no recall,
    and uniform noise covers nothing. KID puts the repeated image (0.061) far closer to the data than noise (0.72),
    which is why coverage is logged beside it."""
    settings, s = scores
    assert settings["prdc_nearest_k"] == K
    assert (s["self"]["coverage"], s["self"]["recall"], s["self"]["precision"]) == (1.0, 1.0, 1.0)
    # 155 of 160 real balls hold another real image (1 − 2^−5 = 0.97 is the expectation for two equal-size samples)
    assert (s["real"]["coverage"], s["real"]["recall"]) == (155 / 160, 1.0)
    # the repeated image covers its own ball and the 4 whose k nearest neighbours include it: 5/160
    assert (s["one"]["coverage"], s["one"]["recall"]) == (5 / 160, 0.0)
    assert (s["noise"]["coverage"], s["noise"]["recall"]) == (0.0, 0.0)
    assert s["real"]["kid"] < s["one"]["kid"] < s["noise"]["kid"]


def test_nearest_k_shrinks_to_fit_a_small_real_set():
    real = torch.zeros(4, 3, 64, 64)
    metric = SampleQuality(num_samples=32)
    assert metric.set_real(real)["prdc_nearest_k"] == 3  # the 3rd neighbour is the last one 4 points have
    assert "use k=3 nearest neighbours instead of 5" in metric.notes[-2]


def test_pairwise_diversity_is_the_ratio_of_mean_pairwise_distances():
    from dcgan.quality import pairwise_diversity

    real = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # pairwise 3, 4, 5: mean 4
    fake = np.array([[0.0, 0.0], [1.0, 0.0]])  # pairwise 1
    assert pairwise_diversity(real, fake) == pytest.approx(0.25)
    assert pairwise_diversity(real, np.repeat(fake[:1], 5, axis=0)) == 0.0  # one image for every z
    assert pairwise_diversity(real, real) == pytest.approx(1.0)
