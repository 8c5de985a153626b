"""Offline sample-quality metrics for generators: FID and KID on the features of a fixed network.

No Inception weights exist offline, so the default feature network is a small CNN with weights fixed
by a seed (random-feature FID: comparable between runs of this repo, not with published FIDs), or loaded
from `feature_weights` (e.g. a classifier trained on the real classes). With `inception_weights` pointing
at torch-fidelity's `pt_inception-2015-12-05` file, Inception-FID is computed as well.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from core.checkpoints import load_checkpoint
from core.errors import UserError


class FeatureNet(nn.Module):
    """64×64 RGB in [-1, 1] → a 256-d feature vector (conv stack + global average pooling)."""

    def __init__(self, seed: int = 0, feature_dim: int = 256) -> None:
        super().__init__()
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
        if images.dtype == torch.uint8:  # torchmetrics probes the network with a uint8 batch
            images = images.float() / 127.5 - 1
        return self.body(images)


class SampleQuality(nn.Module):
    def __init__(self, num_samples: int = 256, feature_seed: int = 0, feature_weights: str | None = None,
                 inception_weights: str | None = None, image_size: int = 64) -> None:
        super().__init__()
        net = FeatureNet(seed=feature_seed)
        if feature_weights:
            net.load_state_dict(_load_weights(feature_weights, "model.quality.feature_weights"))
        self.num_samples = num_samples
        size = (3, image_size, image_size)
        self.fid = FrechetInceptionDistance(feature=net, reset_real_features=False, input_img_size=size)
        self.kid = KernelInceptionDistance(feature=net, reset_real_features=False, subset_size=min(100, num_samples))
        self.inception = None
        if inception_weights:
            # checked by the safe loader before torchmetrics (torch-fidelity) opens it
            load_checkpoint(_require(inception_weights, "model.quality.inception_weights"), key="model.quality.inception_weights")
            self.inception = FrechetInceptionDistance(feature=2048, normalize=True, reset_real_features=False,
                                                      feature_extractor_weights_path=inception_weights)
        self.has_real = False

    @torch.no_grad()
    def set_real(self, real: torch.Tensor) -> None:
        """Real images in [-1, 1]; their features are computed once."""
        for metric in self._metrics():
            metric.reset()
        self._update(real, real=True)
        self.has_real = True

    @torch.no_grad()
    def compute(self, fake: torch.Tensor) -> dict[str, float]:
        self.fid.reset(), self.kid.reset()
        if self.inception is not None:
            self.inception.reset()
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
            self.fid.update(chunk, real=real)
            self.kid.update(chunk, real=real)
            if self.inception is not None:
                self.inception.update((chunk + 1) / 2, real=real)


def _require(path: str, key: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{key}: weights file not found: {file} — put the file there or set {key}=null")
    return file


def _load_weights(path: str, key: str) -> dict:
    return load_checkpoint(_require(path, key), key=key)
