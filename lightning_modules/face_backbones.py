"""The two face-recognition backbones behind one interface: uint8 RGB face crops (B, 3, H, W) in, a
feature vector (B, D) out, and a `tag` that changes whenever the features would.

- `VGG16Backbone`: torchvision's VGG16 convolutional part (the paper's backbone), frozen except for its
  last `train_last_blocks` blocks, with ImageNet weights from a local file or a random init.
- `DlibResnetBackbone`: dlib's ResNet face descriptor (128-d, trained for face verification) on faces
  aligned by dlib's 5-point shape predictor; not trainable.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from core.errors import UserError
from lightning_modules.vgg16_weights import IMAGENET_MEAN, IMAGENET_STD, load_vgg16_features

# first layer index of each of VGG16's five blocks in torchvision's `features`
VGG16_BLOCK_STARTS = (0, 5, 10, 17, 24)


def vgg16_features() -> nn.Sequential:
    """torchvision's `vgg16().features` with its init, without building the 124M-parameter classifier."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)
    for layer in features:
        if isinstance(layer, nn.Conv2d):  # as torchvision's VGG.__init__
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return features


class VGG16Backbone(nn.Module):
    def __init__(self, weights: str | None = None, normalize: str = "imagenet", pool: str = "avg",
                 train_last_blocks: int = 0) -> None:
        """`normalize`: "imagenet" (torchvision's mean/std, what the weights expect) or "unit" (x/255 only,
        the paper's `rescale=1/255`). `pool`: "avg" (global average, 512-d) or "flatten" (the paper's
        Flatten of the last feature map). `train_last_blocks`: 0 freezes all, 1 trains block 5, … 5 all."""
        super().__init__()
        if normalize not in ("imagenet", "unit"):
            raise UserError(f"model.normalize must be 'imagenet' or 'unit', got {normalize!r}")
        if pool not in ("avg", "flatten"):
            raise UserError(f"model.pool must be 'avg' or 'flatten', got {pool!r}")
        if not 0 <= train_last_blocks <= 5:
            raise UserError(f"model.train_last_blocks must be 0..5 (VGG16 has five blocks), got {train_last_blocks}")
        self.features = vgg16_features()
        if weights:
            self.features.load_state_dict(load_vgg16_features(weights))
        self.normalize, self.pool, self.train_last_blocks = normalize, pool, train_last_blocks
        first_trainable = VGG16_BLOCK_STARTS[5 - train_last_blocks] if train_last_blocks else len(self.features)
        for i, layer in enumerate(self.features):
            layer.requires_grad_(i >= first_trainable)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    @property
    def frozen(self) -> bool:
        return self.train_last_blocks == 0

    def out_features(self, image_size: int) -> int:
        side = image_size // 32  # five 2×2 max-pools
        if side < 1:
            raise UserError(f"data.image_size {image_size} is too small for VGG16 (at least 32)")
        return 512 if self.pool == "avg" else 512 * side * side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        x = (x - self.mean) / self.std if self.normalize == "imagenet" else x / 255.0
        x = self.features(x)
        return x.mean(dim=(2, 3)) if self.pool == "avg" else x.flatten(1)

    def tag(self) -> str:
        digest = hashlib.sha1()
        for name, tensor in self.features.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        return f"vgg16|{self.normalize}|{self.pool}|{digest.hexdigest()[:16]}"


class DlibResnetBackbone(nn.Module):
    """dlib's `dlib_face_recognition_resnet_model_v1.dat` on each crop, aligned with
    `shape_predictor_5_face_landmarks.dat` (both from `face-recognition-models`).

    The crop is assumed to hold the face box grown by `margin` on each side (what capture-faces and the
    datamodule write), so the landmarks are searched in the crop's central box."""

    frozen = True
    train_last_blocks = 0

    def __init__(self, margin: float = 0.2, num_jitters: int = 0) -> None:
        super().__init__()
        self.margin, self.num_jitters = margin, num_jitters

    @property
    def _models(self):
        if not hasattr(self, "_dlib"):  # built on first use; dlib objects do not pickle or move devices
            import dlib

            from faces.detectors import dlib_model_path

            self._dlib = (
                dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat"))),
                dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))),
            )
        return self._dlib

    def out_features(self, image_size: int) -> int:
        return 128

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        import dlib

        predictor, descriptor = self._models
        crops = images.permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()
        out = []
        for crop in crops:
            h, w = crop.shape[:2]
            inset_x, inset_y = w * self.margin / (1 + 2 * self.margin), h * self.margin / (1 + 2 * self.margin)
            box = dlib.rectangle(round(inset_x), round(inset_y), round(w - inset_x) - 1, round(h - inset_y) - 1)
            crop = np.ascontiguousarray(crop)
            shape = predictor(crop, box)
            out.append(np.asarray(descriptor.compute_face_descriptor(crop, shape, self.num_jitters), np.float32))
        return torch.from_numpy(np.stack(out)).to(images.device)

    def tag(self) -> str:
        from faces.detectors import dlib_model_path

        sizes = [dlib_model_path(f).stat().st_size for f in ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")]
        return f"dlib_resnet|sp5|{sizes}|margin={self.margin}|jitters={self.num_jitters}"


def build_backbone(name: str, **options) -> nn.Module:
    if name == "vgg16":
        return VGG16Backbone(**{k: options[k] for k in ("weights", "normalize", "pool", "train_last_blocks")})
    if name == "dlib_resnet":
        if options.get("train_last_blocks"):
            raise UserError("model.train_last_blocks: the dlib_resnet backbone cannot be fine-tuned; set it to 0")
        return DlibResnetBackbone(margin=options["margin"])
    raise UserError(f"model.backbone must be 'vgg16' or 'dlib_resnet', got {name!r}")
