"""Offline sample-quality metrics for generators: FID and KID on the features of a fixed network.

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
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from core.checkpoints import load_checkpoint
from core.errors import UserError

FEATURE_DIM = 64  # fewer than the default 256 quality samples: a full-rank covariance for FID
INCEPTION_DIM = 2048


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


class SampleQuality(nn.Module):
    """KID (primary) and FID of generated images against a fixed set of real ones, fitted to the data size.

    `set_real` (before training) fits them: KID subsets hold at most as many images as the real set, and FID
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
    ) -> None:
        super().__init__()
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
        self._update(real, real=True)
        self.has_real = True
        self.settings = {
            "real_samples": real_count,
            "generated_samples": fake_count,
            "kid_subset_size": subset,
            **{f"{name}_trustworthy": ok for name, ok in trustworthy.items()},
        }
        return self.settings

    @torch.no_grad()
    def compute(self, fake: torch.Tensor) -> dict[str, float]:
        """{"kid": mean, "kid_std": std over subsets, "fid", and "inception_fid" with Inception weights} of
        `fake` (N, 3, H, W) in [-1, 1] against the real set; unitless (squared feature distances).
        Formulas: torchmetrics' FrechetInceptionDistance (Heusel et al. 2017) and KernelInceptionDistance
        (Bińkowski et al. 2018, cubic polynomial kernel)."""
        for metric in self._metrics():
            metric.reset()
        self._update(fake, real=False)
        kid_mean, kid_std = self.kid.compute()
        scores = {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
        if self.inception is not None:
            scores["inception_fid"] = float(self.inception.compute())
        return scores

    def _metrics(self):
        return [m for m in (self.fid, self.kid, self.inception) if m is not None]

    def _update(self, images: torch.Tensor, real: bool) -> None:
        for chunk in images.split(128):
            features = self.fid.inception(chunk)  # the FeatureNet, run once for both (it passes (N, dim) features on)
            self.fid.update(features, real=real)
            self.kid.update(features, real=real)
            if self.inception is not None:
                self.inception.update((chunk + 1) / 2, real=real)


def _require(path: str, key: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{key}: weights file not found: {file} — put the file there or set {key}=null")
    return file


def _load_weights(path: str, key: str) -> dict:
    return load_checkpoint(_require(path, key), key=key)
