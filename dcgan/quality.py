"""Offline sample-quality metrics for generators: FID, KID and precision/recall/density/coverage on the features
of a fixed network.

No Inception weights exist offline, so the default feature network is a small CNN with weights fixed
by a seed (random-feature FID: comparable between runs of this repo, not with published FIDs), or loaded
from `feature_weights` (e.g. a classifier trained on the real classes). With `inception_weights` pointing
at torch-fidelity's `pt_inception-2015-12-05` file, Inception-FID is computed as well.

KID is the primary metric: its estimator is unbiased and needs no covariance, so it is meaningful for any sample
count. FID (Heusel et al. 2017) needs the feature covariance, and N samples give a covariance of rank at most N − 1:
with N ≤ feature dimensions it is singular and the FID is biased by an amount that depends on N. Such an FID is
still logged (debug runs and small class folders compare runs of one size) but flagged as not trustworthy, with
the reason in a warning and a run tag. The feature net has 64 dimensions (FEATURE_DIM), so the default 256
samples give a full-rank covariance; measured on 2 × 256 disjoint Fruits-360 images, real against real gives
FID 0.016 and real against uniform noise 3.0 (0.12 and 14.5 with 256 dimensions, a singular covariance).

KID and FID compare distributions as a whole, so a generator that draws one plausible image for every z can score
well on them. Diversity and mode coverage are measured beside them on the same features: precision, recall, density
and coverage of Naeem et al. 2020 ("Reliable Fidelity and Diversity Metrics for Generative Models", ICML; the
authors' `prdc` package), from k-nearest-neighbour balls around the real (and, for recall, the generated) features.
Coverage is the share of real samples whose k-NN ball holds at least one generated sample: for copies of one image
only the few balls around it (5 of 256 built-in fruits: 0.02), about 1 − 2^−k for a second sample of the real
distribution of the same size (0.98 for the other 244 built-in fruits); recall is 0 for any set of identical samples.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from prdc import compute_prdc
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from core.checkpoints import load_checkpoint
from core.errors import UserError

FEATURE_DIM = 64  # fewer than the default 256 quality samples: a full-rank covariance for FID
INCEPTION_DIM = 2048
KID_SUBSET_SEED = 0  # the seed of KID's random subsets (`SampleQuality.compute`)


class FeatureNet(nn.Module):
    """64×64 RGB (N, 3, 64, 64) in [-1, 1] (or uint8) → (N, feature_dim) features: 4 stride-2 convs with
    LeakyReLU(0.2), then global average pooling."""

    def __init__(self, seed: int = 0, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            widths = [3, 32, 64, 128, feature_dim]
            layers = []
            for cin, cout in zip(widths, widths[1:]):
                layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2)]
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            for conv in self.body:
                if isinstance(conv, nn.Conv2d):  # variance-preserving, so distances are not vanishingly small
                    nn.init.kaiming_normal_(conv.weight, a=0.2)
                    nn.init.zeros_(conv.bias)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 2:  # (N, feature_dim): features already computed (SampleQuality feeds FID and KID both)
            return images
        if images.dtype == torch.uint8:  # torchmetrics probes the network with a uint8 batch
            images = images.float() / 127.5 - 1
        return self.body(images)


KID_SUBSET_SIZE = 100  # torchmetrics' default; smaller sets use subsets of all their samples
PRDC_NEAREST_K = 5  # the k Naeem et al. 2020 recommend for precision/recall/density/coverage


class QualityCadence:
    """When the quality pass (`SampleQuality.compute`) runs: every `every_n_epochs` epochs (an int ≥ 1), or "auto":
    whenever its cost so far plus one more pass stays within `budget` (a fraction, 0.05) of the training time so
    far (this epoch's included); always at the first epoch (its cost is measured there) and at the last. The best
    checkpoint is chosen among the evaluated epochs. Times are wall seconds, given by the caller after each epoch's
    training (`add_training`) and each pass (`add_pass`): the Lightning module and the benchmark's plain loop run the
    same cadence.

    Why: on the built-in data one pass over 256 samples costs 0.16 s of a 1.2-s epoch (13–14 %); a researcher who
    tracks quality pays for it too, but not every epoch."""

    def __init__(self, every_n_epochs: int | str = "auto", budget: float = 0.05) -> None:
        if every_n_epochs != "auto" and (not isinstance(every_n_epochs, int) or every_n_epochs < 1):
            raise UserError(f"model.quality.every_n_epochs={every_n_epochs!r}: must be auto or a whole number >= 1")
        self.every_n_epochs, self.budget = every_n_epochs, budget
        self.train_seconds = 0.0  # the epochs' time outside the quality pass
        self.quality_seconds = 0.0
        self.passes = 0

    def due(self, epoch: int, last: bool) -> bool:
        """Whether the pass runs after 0-based `epoch` (`last`: the run's final epoch)."""
        if last or epoch == 0:
            return True
        if self.every_n_epochs != "auto":
            return (epoch + 1) % int(self.every_n_epochs) == 0
        cost = self.quality_seconds / max(self.passes, 1)
        return self.quality_seconds + cost <= self.budget * self.train_seconds

    def add_training(self, seconds: float) -> None:
        """Add an epoch's training seconds (before asking `due` for that epoch)."""
        self.train_seconds += seconds

    def add_pass(self, seconds: float) -> None:
        """Add the seconds of a pass that ran."""
        self.quality_seconds += seconds
        self.passes += 1


class SampleQuality(nn.Module):
    """KID (primary), FID and precision/recall/density/coverage (diversity, Naeem et al. 2020) of generated images
    against a fixed set of real ones, fitted to the data size.

    `set_real` (before training) fits them: KID subsets hold at most as many images as the real set, the k of the
    k-nearest-neighbour balls is at most one less than the smaller set (`nearest_k`, 5 by default), and FID
    (and Inception-FID) counts as trustworthy only from more samples than feature dimensions (`feature_dim`, 64 by
    default; 2048 for Inception): with fewer the covariance is singular, so the FID is biased high and only
    comparable between runs of the same size; `settings` flags it (`fid_trustworthy: False`). At least 2 real
    images are needed (UserError otherwise)."""

    def __init__(
        self,
        num_samples: int = 256,
        feature_seed: int = 0,
        feature_weights: str | None = None,
        inception_weights: str | None = None,
        image_size: int = 64,
        feature_dim: int = FEATURE_DIM,
        nearest_k: int = PRDC_NEAREST_K,
    ) -> None:
        super().__init__()
        self.nearest_k = nearest_k
        net = FeatureNet(seed=feature_seed, feature_dim=feature_dim)
        if feature_weights:
            net.load_state_dict(_load_weights(feature_weights, "model.quality.feature_weights"))
        self.num_samples = num_samples
        self.feature_dim = net.feature_dim
        size = (3, image_size, image_size)
        self.fid = FrechetInceptionDistance(feature=net, reset_real_features=False, input_img_size=size)
        self.kid = KernelInceptionDistance(
            feature=net, reset_real_features=False, subset_size=min(KID_SUBSET_SIZE, num_samples)
        )
        self.inception = None
        if inception_weights:
            # checked by the safe loader before torchmetrics (torch-fidelity) opens it
            load_checkpoint(
                _require(inception_weights, "model.quality.inception_weights"), key="model.quality.inception_weights"
            )
            self.inception = FrechetInceptionDistance(
                feature=2048,
                normalize=True,
                reset_real_features=False,
                feature_extractor_weights_path=inception_weights,
            )
        self.has_real = False
        self.real_features: np.ndarray | None = None  # (N, feature_dim) float32, for precision/recall/density/coverage
        self.prdc_k = nearest_k
        self.settings: dict[str, object] = {}
        self.notes: list[str] = []

    @torch.no_grad()
    def set_real(self, real: torch.Tensor) -> dict[str, object]:
        """Real images (N, 3, H, W) in [-1, 1]; their features are computed once. Fits the KID subset size to N
        and the `num_samples` generated images, and returns `settings`: the sample counts, the KID subset size,
        whether the FID (and Inception-FID) counts as trustworthy (`*_trustworthy`: more samples than feature
        dimensions); `notes` says in words what was adapted or flagged. Raises UserError for fewer than 2 real
        images (no covariance, no KID)."""
        real_count, fake_count = len(real), self.num_samples
        if min(real_count, fake_count) < 2:
            raise UserError(
                f"model.quality: FID/KID need at least 2 real and 2 generated images; the data has "
                f"{real_count} real image(s) and quality.num_samples={fake_count} — add images or set "
                "model.quality=null"
            )
        for metric in self._metrics():
            metric.reset()
        subset = min(KID_SUBSET_SIZE, real_count, fake_count)
        self.kid.subset_size = subset
        self.notes = []
        if real_count < fake_count:
            self.notes.append(
                f"only {real_count} real images for the sample-quality metrics "
                f"(quality.num_samples={fake_count}): KID uses subsets of {subset}"
            )
        self.prdc_k = min(self.nearest_k, real_count - 1, fake_count - 1)  # the k-th neighbour must exist
        if self.prdc_k < self.nearest_k:
            self.notes.append(
                f"precision/recall/density/coverage from {min(real_count, fake_count)} samples use k={self.prdc_k} "
                f"nearest neighbours instead of {self.nearest_k}"
            )
        fid_samples = min(real_count, fake_count)
        dims = {"fid": self.feature_dim, **({"inception_fid": INCEPTION_DIM} if self.inception is not None else {})}
        # N samples: covariance rank ≤ N − 1, so a full-rank (non-singular) one needs N > dimensions
        trustworthy = {name: fid_samples > dim for name, dim in dims.items()}
        for name, dim in dims.items():
            if not trustworthy[name]:
                self.notes.append(
                    f"{name.replace('_', '-').upper()} from {fid_samples} samples, not more than its {dim} feature "
                    f"dimensions: a singular covariance, flagged as not trustworthy (biased high; compare only runs "
                    f"of the same size; {dim + 1} images or more make it trustworthy); KID is the primary metric"
                )
        self.real_features = self._update(real, real=True)
        self.has_real = True
        self.settings = {
            "real_samples": real_count,
            "generated_samples": fake_count,
            "kid_subset_size": subset,
            "prdc_nearest_k": self.prdc_k,
            **{f"{name}_trustworthy": ok for name, ok in trustworthy.items()},
        }
        return self.settings

    @torch.no_grad()
    def compute(self, fake: torch.Tensor) -> dict[str, float]:
        """{"kid": mean, "kid_std": std over subsets, "fid", "precision", "recall", "density", "coverage",
        "diversity" (`pairwise_diversity`), and "inception_fid" with Inception weights} of `fake` (N, 3, H, W) in [-1, 1] against the real set.
        FID/KID are unitless (squared feature distances); precision, recall and coverage are fractions in [0, 1],
        density a mean count over k (1 on average for samples of the real distribution, unbounded above).
        Formulas: torchmetrics' FrechetInceptionDistance (Heusel et al. 2017) and KernelInceptionDistance
        (Bińkowski et al. 2018, cubic polynomial kernel); `prdc.compute_prdc` (Naeem et al. 2020) with k =
        `settings["prdc_nearest_k"]`.

        KID's subsets are drawn from a generator of their own (torch's RNG forked and seeded with KID_SUBSET_SEED), so
        a pass neither consumes the training's random numbers nor depends on them: whether and when it runs
        (`QualityCadence`) leaves the training unchanged, and the same samples give the same KID."""
        for metric in self._metrics():
            metric.reset()
        fake_features = self._update(fake, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(KID_SUBSET_SEED)
            kid_mean, kid_std = self.kid.compute()
        scores = {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
        scores.update(self.diversity(fake_features))
        if self.inception is not None:
            scores["inception_fid"] = float(self.inception.compute())
        return scores

    def diversity(self, fake_features: np.ndarray) -> dict[str, float]:
        """`precision_recall_density_coverage` of generated features (M, feature_dim) against the real ones of
        `set_real`, with k = `settings["prdc_nearest_k"]`."""
        return {
            **precision_recall_density_coverage(self.real_features, fake_features, self.prdc_k),
            "diversity": pairwise_diversity(self.real_features, fake_features),
        }

    def _metrics(self):
        return [m for m in (self.fid, self.kid, self.inception) if m is not None]

    def _update(self, images: torch.Tensor, real: bool) -> np.ndarray:
        """Feeds `images` to FID/KID (and Inception-FID) and returns their features (N, feature_dim) float32."""
        all_features = []
        for chunk in images.split(128):
            features = self.fid.inception(chunk)  # the FeatureNet, run once for all (it passes (N, dim) features on)
            self.fid.update(features, real=real)
            self.kid.update(features, real=real)
            all_features.append(features)
            if self.inception is not None:
                self.inception.update((chunk + 1) / 2, real=real)
        return torch.cat(all_features).float().cpu().numpy()


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, nearest_k: int) -> dict[str, float]:
    """{"precision", "recall", "density", "coverage"} of generated features `fake` (M, D) against real ones `real`
    (N, D), by `prdc.compute_prdc` (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative
    Models"). With B(x, k) the ball around x reaching its k-th nearest neighbour in its own set (strict <):
    precision = share of fakes inside some real ball (Kynkäänniemi et al. 2019), recall = share of reals inside
    some fake ball (ibid.), density = mean over fakes of the number of real balls holding them, divided by k,
    coverage = share of reals whose ball holds a fake. Needs N, M > nearest_k (ValueError from numpy otherwise)."""
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the two sample counts on every call
        scores = compute_prdc(real, fake, nearest_k=nearest_k)
    return {name: float(value) for name, value in scores.items()}


def pairwise_diversity(real: np.ndarray, fake: np.ndarray) -> float:
    """The mean pairwise Euclidean distance between generated features `fake` (M, D) divided by that between real
    ones `real` (N, D): 1 for samples as varied as the data, towards 0 as the generator collapses onto few modes
    (one image for every z: 0). The mean pairwise distance is the diversity score of Mode Seeking GANs (Mao et al.
    2019, there on LPIPS features), here on the quality pass's features and relative to the real set, so that it
    reads the same for any feature net. Needs M, N >= 2."""

    def mean_distance(x: np.ndarray) -> float:
        x = np.asarray(x, np.float64)
        squared = (x * x).sum(axis=1)
        d = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0))
        return float(d.sum() / (len(x) * (len(x) - 1)))

    return mean_distance(fake) / mean_distance(real)


def _require(path: str, key: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{key}: weights file not found: {file} — put the file there or set {key}=null")
    return file


def _load_weights(path: str, key: str) -> dict:
    return load_checkpoint(_require(path, key), key=key)
