"""The paper's DCGAN networks as its code built them (../shared/PAPER-NOTES.md); the text's variants are arguments.

Generator: z → Dense(4·4·C) → BN → act → (num_layers − 2) ConvT(k5, s2) halving the channels, each BN + act
→ a last layer to 3 channels with tanh. `num_layers` counts as the paper does, the dense projection included:
5 (exp1/exp2) ends with a k5 stride-2 ConvT; 6 (exp3) has one more upsampling block and ends with a k4
stride-1 convolution. Discriminator: Conv(k5, s2) 32→…→512, each BN, LeakyReLU 0.2, Dropout → Dense(1) logit.
"""

from __future__ import annotations

import math

from torch import nn

ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True)}


def scaled(channels: int, width_multiplier: float) -> int:
    """`channels` × `width_multiplier`, rounded, at least 4 (the CPU profiles run the nets at 1/8 or 1/4 width)."""
    return max(4, int(round(channels * width_multiplier)))


class Generator(nn.Module):
    """z (N, latent_dim) ~ N(0, 1) → images (N, 3, image_size, image_size) in [-1, 1] (tanh).

    The paper's code (PAPER-NOTES, "DCGAN"): Dense(4·4·C, no bias) → BN → act → (num_layers − 2) ×
    [ConvTranspose(k, stride 2, 'same') halving the channels → BN → act] → the output layer: a k5 stride-2
    ConvTranspose for 5 layers (exp1/exp2), a k4 stride-1 'same' Conv for 6 layers (exp3). C = proj_channels ×
    width_multiplier. `bn_momentum` is PyTorch's (1 − Keras' momentum: 0.8 → 0.2). Raises ValueError when
    `num_layers` cannot reach `image_size` from 4×4.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        num_layers: int = 5,
        proj_channels: int = 1024,
        kernel_size: int = 5,
        final_kernel_size: int = 4,
        activation: str = "relu",
        bn_momentum: float = 0.2,  # Keras BatchNormalization(momentum=0.8)
        image_size: int = 64,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        upsamples = int(math.log2(image_size // 4))
        if 4 * 2**upsamples != image_size or num_layers - 2 not in (upsamples - 1, upsamples):
            raise ValueError(
                f"generator: num_layers={num_layers} cannot reach {image_size}px from 4×4 (use {upsamples + 1} or {upsamples + 2})"
            )
        self.latent_dim = latent_dim
        channels = scaled(proj_channels, width_multiplier)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 4 * 4 * channels, bias=False),
            nn.Unflatten(1, (channels, 4, 4)),
            nn.BatchNorm2d(channels, momentum=bn_momentum),
            ACTIVATIONS[activation](),
        )
        blocks = []
        pad = kernel_size // 2
        for _ in range(num_layers - 2):
            blocks += [
                nn.ConvTranspose2d(channels, channels // 2, kernel_size, 2, pad, output_padding=1, bias=False),
                nn.BatchNorm2d(channels // 2, momentum=bn_momentum),
                ACTIVATIONS[activation](),
            ]
            channels //= 2
        if num_layers - 2 == upsamples - 1:  # 5-layer net: the output layer does the last upsampling
            blocks.append(nn.ConvTranspose2d(channels, 3, kernel_size, 2, pad, output_padding=1))
        else:  # 6-layer net: a stride-1 output layer ('same' padding, as Keras)
            blocks.append(nn.Conv2d(channels, 3, final_kernel_size, 1, padding="same"))
        self.upsample = nn.Sequential(*blocks, nn.Tanh())

    def forward(self, z):
        """(N, latent_dim) → (N, 3, image_size, image_size)."""
        return self.upsample(self.project(z))  # (N, C, 4, 4) after the projection, doubling per upsampling


class Discriminator(nn.Module):
    """images (N, 3, image_size, image_size) in [-1, 1] → logits (N,) (real > 0), for sigmoid cross-entropy.

    The paper's code: num_layers × [Conv(k5, stride 2, 'same') with base_channels·2^i channels → BN (the first
    layer too unless `batchnorm_first=False`, DCGAN's rule) → LeakyReLU 0.2 (or ReLU, the text) → Dropout] →
    Flatten → Dense(1).
    """

    def __init__(
        self,
        num_layers: int = 5,
        base_channels: int = 32,
        kernel_size: int = 5,
        activation: str = "leaky_relu",
        dropout: float = 0.5,
        batchnorm_first: bool = True,  # the paper's code normalises the first layer too (DCGAN's rule: not)
        bn_momentum: float = 0.2,
        image_size: int = 64,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        layers, channels_in = [], 3
        for i in range(num_layers):
            channels_out = scaled(base_channels * 2**i, width_multiplier)
            layers.append(nn.Conv2d(channels_in, channels_out, kernel_size, 2, kernel_size // 2))
            if i > 0 or batchnorm_first:
                layers.append(nn.BatchNorm2d(channels_out, momentum=bn_momentum))
            layers += [ACTIVATIONS[activation](), nn.Dropout(dropout)]
            channels_in = channels_out
        side = image_size // 2**num_layers
        self.features = nn.Sequential(*layers)
        self.classify = nn.Sequential(nn.Flatten(), nn.Linear(channels_in * side * side, 1))

    def forward(self, images):
        """(N, 3, H, W) → (N,) logits."""
        return self.classify(self.features(images)).squeeze(1)


def init_normal_002(module: nn.Module) -> None:
    """DCGAN's N(0, 0.02) init for conv/linear weights; BatchNorm scale N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
