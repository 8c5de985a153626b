"""Face descriptors: the two backbones of face recognition behind one interface — uint8 RGB face crops
(B, 3, H, W) in, a feature vector (B, D) out, and a `tag` that changes whenever the features would — and
`FeatureExtractor`, a frozen backbone as the data side uses it (crops → cached features).

- `VGG16Backbone`: torchvision's VGG16 convolutional part (the paper's backbone), frozen except for its
  last `train_last_blocks` blocks, with ImageNet weights from a local file or a reproducible random init.
- `DlibResnetBackbone`: dlib's ResNet face descriptor (128-d, trained for face verification) on faces
  aligned by dlib's 5-point shape predictor (`FaceDescriber(landmarks=5)`); not trainable.

They live in the face library, not with the model, because both sides build them from the same spec: the
datamodule (`faces.data`) computes and caches the frozen features the head trains on, and the
model (`faces.classifier`) keeps the same network for inference and export on images.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch
from torch import nn

from core.errors import UserError
from faces import Detection
from faces.vgg16_weights import IMAGENET_MEAN, IMAGENET_STD, load_vgg16_features

# The seed of VGG16's random init (no weights file): fixed, so that two builds from one spec — the
# datamodule's frozen extractor and the model's copy of the backbone — are the same network. Any value
# works; 42 is the project's default run seed (conf/train.yaml).
RANDOM_INIT_SEED = 42

# first layer index of each of VGG16's five blocks in torchvision's `features`
VGG16_BLOCK_STARTS = (0, 5, 10, 17, 24)


def vgg16_features(seed: int = RANDOM_INIT_SEED) -> nn.Sequential:
    """torchvision's `vgg16().features` with its init (Kaiming normal, fan-out, as `VGG.__init__`), without
    building the 124M-parameter classifier. The init draws from its own generator seeded with `seed`, not
    from the global RNG: the same seed gives the same weights wherever and whenever it is built."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)
    generator = torch.Generator().manual_seed(seed)
    for layer in features:
        if isinstance(layer, nn.Conv2d):  # as torchvision's VGG.__init__
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            nn.init.zeros_(layer.bias)
    return features


class VGG16Backbone(nn.Module):
    """VGG16's convolutional blocks: uint8 (or 0–255 float) RGB crops (B, 3, H, W) → float32 (B, D), D = 512
    (`pool="avg"`) or 512·(H//32)·(W//32) (`pool="flatten"`). Raises UserError for a bad option or weights file."""

    def __init__(
        self, weights: str | None = None, normalize: str = "imagenet", pool: str = "avg", train_last_blocks: int = 0
    ) -> None:
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
    """dlib's face descriptor on face crops, uint8 RGB (B, 3, H, W) → float32 (B, 128): `FaceDescriber` (5-point
    landmarks of `shape_predictor_5_face_landmarks.dat`, the aligned 150×150 chip, dlib's ResNet
    `dlib_face_recognition_resnet_model_v1.dat` as its PyTorch port), one chip per crop, on the CPU.

    The crop is assumed to hold the face box grown by `margin` on each side (what capture-faces and the
    datamodule write), so the landmarks are searched in the crop's central box."""

    frozen = True
    train_last_blocks = 0

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin
        # 5 landmarks, as every face-classifier checkpoint and feature cache so far was made: a head fitted on
        # 5-point features (and its calibrated unknown threshold) must be fed the same features; the gallery tools'
        # 68-point default (conf/describer/dlib.yaml) is theirs alone. A plain object, not a submodule: its
        # network stays on the CPU
        self.describer = FaceDescriber(landmarks=5)

    def out_features(self, image_size: int) -> int:
        return 128

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        crops = images.permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()
        height, width = crops.shape[1:3]
        inset_x, inset_y = width * self.margin / (1 + 2 * self.margin), height * self.margin / (1 + 2 * self.margin)
        face = Detection(round(inset_x), round(inset_y), round(width - inset_x), round(height - inset_y), 1.0)
        out = np.concatenate([self.describer(np.ascontiguousarray(crop), [face]) for crop in crops])
        return torch.from_numpy(out).to(images.device)

    def tag(self) -> str:
        return f"dlib_resnet|{self.describer.tag()}|margin={self.margin}"


def build_backbone(name: str, **options) -> nn.Module:
    """`VGG16Backbone` (options `weights`, `normalize`, `pool`, `train_last_blocks`) or `DlibResnetBackbone`
    (option `margin`) by name; an unknown name, or dlib with `train_last_blocks` > 0, is a UserError."""
    if name == "vgg16":
        return VGG16Backbone(**{k: options[k] for k in ("weights", "normalize", "pool", "train_last_blocks")})
    if name == "dlib_resnet":
        if options.get("train_last_blocks"):
            raise UserError("model.train_last_blocks: the dlib_resnet backbone cannot be fine-tuned; set it to 0")
        return DlibResnetBackbone(margin=options["margin"])
    raise UserError(f"model.backbone must be 'vgg16' or 'dlib_resnet', got {name!r}")


class FeatureExtractor:
    """A frozen backbone as the data side uses it: uint8 RGB crops (N, H, W, 3) → float32 features (N, D),
    in eval mode, without gradients, on the CPU, `batch_size` crops at a time. `tag` names the features
    (backbone, its options and a hash of its weights) for the feature cache's keys.

    Raises ValueError for a backbone that trains (its features would change under training)."""

    def __init__(self, backbone: nn.Module, batch_size: int = 16) -> None:
        if not backbone.frozen:
            raise ValueError(f"{type(backbone).__name__} trains (train_last_blocks > 0): its features cannot be cached")
        self.backbone = backbone.eval()
        self.batch_size = batch_size

    @classmethod
    def build(
        cls,
        backbone: str,
        weights: str | None = None,
        normalize: str = "imagenet",
        pool: str = "avg",
        margin: float = 0.2,
        batch_size: int = 16,
    ) -> FeatureExtractor:
        """The frozen backbone `build_backbone` makes from the same options as the model's (`margin`: the crops'
        margin around the face box, where dlib searches the landmarks). Raises UserError as `build_backbone`."""
        return cls(
            build_backbone(
                backbone, weights=weights, normalize=normalize, pool=pool, train_last_blocks=0, margin=margin
            ),
            batch_size,
        )

    @functools.cached_property
    def tag(self) -> str:
        return self.backbone.tag()

    def out_features(self, image_size: int) -> int:
        """D for crops of `image_size` pixels."""
        return self.backbone.out_features(image_size)

    @torch.no_grad()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.empty((0, 0), np.float32)
        batches = [
            self.backbone(torch.from_numpy(np.ascontiguousarray(crops[s : s + self.batch_size])).permute(0, 3, 1, 2))
            for s in range(0, len(crops), self.batch_size)
        ]
        return torch.cat(batches).cpu().numpy()


def central_face(detections: list[Detection], image_shape: tuple[int, ...]) -> Detection | None:
    """The detection whose box centre is nearest the image centre (LFW's convention: the named person is the
    face in the centre; also right for a capture-faces crop), or None when there is none."""
    if not detections:
        return None
    cy, cx = image_shape[0] / 2, image_shape[1] / 2
    return min(detections, key=lambda d: ((d.left + d.right) / 2 - cx) ** 2 + ((d.top + d.bottom) / 2 - cy) ** 2)


def centre_box(image_shape: tuple[int, ...], fraction: float = 0.44) -> Detection:
    """A square box of `fraction` × the shorter image side around the image centre, score 0: the stand-in
    face box when the detector finds none. 0.44 on LFW's 250×250 photos is (70, 70, 180, 180), the box dlib's
    LFW practice uses (see ../shared/data/lfw-pairs/SOURCE.md)."""
    height, width = image_shape[:2]
    side = round(fraction * min(height, width))
    left, top = (width - side) // 2, (height - side) // 2
    return Detection(left, top, left + side, top + side, 0.0)


LANDMARK_MODELS = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat"}


class FaceDescriber:
    """dlib's face descriptor on whole images, as face_recognition computes it: for each face box, a shape
    predictor places the landmarks, `dlib.get_face_chip` aligns a 150×150 chip (padding 0.25) from them, and dlib's
    ResNet maps it to a 128-d vector (`dlib_face_recognition_resnet_model_v1.dat`; all from `face-recognition-models`).

    `landmarks` picks the shape predictor: 68 (`shape_predictor_68_face_landmarks.dat`, face_recognition's "large"
    model, the default) or 5 (`shape_predictor_5_face_landmarks.dat`, its "small" one and plain dlib's). The ResNet
    was trained on chips aligned from 68 landmarks (the 5-point model came later and approximates that alignment):
    on LFW's View 2 folds 1–5 the 68-point chips give 99.10 % against 98.90 % (docs/faces.md; `make eval-lfw`).
    The 68-point model's training data (iBUG 300-W) excludes commercial use (davisking/dlib-models README): a
    product should use 5.

    The ResNet runs as `faces.dlib_resnet_port.DlibFaceResnet`, read from dlib's own file: within 1e-4 of
    dlib's `compute_face_descriptor` on every chip (tests/test_dlib_resnet_port.py), and 5–10× faster on this
    CPU, where dlib's wheel has no BLAS, because PyTorch runs a face's views as one batch. It is the network the
    web page runs (exported to ONNX), so the page and these tools compute the same descriptors.

    Two descriptors of one person lie within Euclidean distance 0.6 of each other, by the model's training
    (a pairwise hinge loss with margin 0.6; davisking/dlib-models README, face_recognition's `tolerance`).
    `flip` averages the chip's descriptor with that of its mirror image (horizontal flip at test time, as in
    Taigman et al., DeepFace, CVPR 2014, and most LFW protocols since). `num_jitters` > 1 replaces each view by
    that many jittered copies (`jitter_chip`: dlib's jitter, the test-time augmentation of dlib's
    `num_jitters`) and averages their descriptors, drawn from a generator seeded by the chip's bytes: a jittered
    descriptor depends on the face alone, not on the photos described before it or on the number of worker
    processes. The average is not re-normalised (measured on LFW with `make eval-lfw`). The models are built on
    first use and left out of pickling, so a describer can go to worker processes (one torch thread each)."""

    def __init__(self, num_jitters: int = 1, padding: float = 0.25, flip: bool = False, landmarks: int = 68) -> None:
        if num_jitters < 1:
            raise UserError(f"num_jitters must be at least 1, got {num_jitters}")
        if landmarks not in LANDMARK_MODELS:
            raise UserError(
                f"landmarks must be one of {sorted(LANDMARK_MODELS)} (dlib's shape predictors), got {landmarks}"
            )
        self.num_jitters, self.padding, self.flip, self.landmarks = num_jitters, padding, flip, landmarks

    @functools.cached_property
    def _native(self):
        import dlib

        from faces.detectors import dlib_model_path
        from faces.dlib_resnet_port import load_dlib_face_resnet

        return dlib.shape_predictor(str(dlib_model_path(LANDMARK_MODELS[self.landmarks]))), load_dlib_face_resnet()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_native"}

    def __setstate__(self, state: dict) -> None:
        # describers pickled before `flip` and `landmarks` existed made one chip from 5 landmarks
        self.__dict__.update({"flip": False, "landmarks": 5, **state})

    def chips(self, rgb: np.ndarray, detections: list[Detection]) -> list[np.ndarray]:
        """The aligned uint8 RGB chips (150, 150, 3) of the `detections` (boxes in pixels of `rgb`, HxWx3 uint8)."""
        import dlib

        predictor, _ = self._native
        rgb = np.ascontiguousarray(rgb)
        return [
            dlib.get_face_chip(
                rgb, predictor(rgb, dlib.rectangle(d.left, d.top, d.right - 1, d.bottom - 1)), 150, self.padding
            )
            for d in detections
        ]

    def views(self, chip: np.ndarray) -> np.ndarray:
        """The uint8 views (V, 150, 150, 3) of one chip whose descriptors are averaged: the chip, its mirror image
        when `flip`, each replaced by `num_jitters` jittered copies when that is > 1."""
        views = [chip, chip[:, ::-1]] if self.flip else [chip]
        if self.num_jitters > 1:
            rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(chip.tobytes(), digest_size=8).digest(), "big"))
            views = [jitter_chip(view, rng) for view in views for _ in range(self.num_jitters)]
        return np.stack(views)

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """float32 (N, 128) descriptors of the N `detections` (boxes in pixels of `rgb`, HxWx3 uint8 RGB)."""
        if not detections:
            return np.empty((0, 128), np.float32)
        _, network = self._native
        views = [self.views(chip) for chip in self.chips(rgb, detections)]  # (V, 150, 150, 3) per face, V alike
        batch = torch.from_numpy(np.concatenate(views)).permute(0, 3, 1, 2)  # (N·V, 3, 150, 150)
        # in chunks: a group photo with flip and 10 jitters is 20 views a face, and the activations grow with them
        descriptors = torch.cat([network(chunk) for chunk in batch.split(DESCRIBE_BATCH)])  # (N·V, 128)
        return descriptors.reshape(len(views), -1, 128).mean(dim=1).numpy().astype(np.float32)

    def tag(self) -> str:
        """Names the descriptors (model files' sizes and the options) for descriptor caches' keys."""
        from faces.detectors import dlib_model_path

        sizes = [
            dlib_model_path(f).stat().st_size
            for f in (LANDMARK_MODELS[self.landmarks], "dlib_face_recognition_resnet_model_v1.dat")
        ]
        # "port": the PyTorch port of the ResNet (equal to dlib's within 1e-4), jitter seeded per chip
        return (
            f"dlib_resnet_v1|sp{self.landmarks}|{sizes}|port|jitters={self.num_jitters}|padding={self.padding}"
            f"|flip={self.flip}"
        )

    def __repr__(self) -> str:
        return (
            f"FaceDescriber(num_jitters={self.num_jitters}, padding={self.padding}, flip={self.flip}, "
            f"landmarks={self.landmarks})"
        )


JITTER_MAX_ROTATION_DEGREES, JITTER_OBJECT_HEIGHT, JITTER_TRANSLATE = 3.0, (0.97, 0.99999), 0.02
DESCRIBE_BATCH = 64  # chips per forward pass of the descriptor network: bounds its activations' memory


def jitter_chip(chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One randomly jittered copy (S, S, 3) uint8 of a square uint8 chip (S, S, 3), as dlib's `jitter_image`
    (dlib/image_transforms/interpolation.h) makes it, with `rng` in place of dlib's generator: the chip's box,
    shrunk by 3 px, moved by up to ±2 % of its size, grown by 1/U(0.97, 0.99999) and turned by up to ±3°, is
    resampled to S×S by dlib's `extract_image_chip` (bilinear), then mirrored with probability 1/2."""
    import dlib

    size = chip.shape[0]
    rect = dlib.shrink_rect(dlib.rectangle(0, 0, size - 1, size - 1), 3)
    dx, dy = rng.uniform(-JITTER_TRANSLATE, JITTER_TRANSLATE, 2) * (rect.width(), rect.height())
    box = int(rect.height() / rng.uniform(*JITTER_OBJECT_HEIGHT))
    centre = dlib.center(rect)
    # dlib turns the shift into whole pixels as floor(x + 0.5) (its dpoint → point conversion)
    shift = np.floor(np.array([dx, dy]) + 0.5).astype(int)
    crop = dlib.centered_rect(dlib.point(centre.x + int(shift[0]), centre.y + int(shift[1])), box, box)
    angle = np.deg2rad(rng.uniform(-JITTER_MAX_ROTATION_DEGREES, JITTER_MAX_ROTATION_DEGREES))
    out = dlib.extract_image_chip(
        np.ascontiguousarray(chip), dlib.chip_details(dlib.drectangle(crop), dlib.chip_dims(size, size), angle)
    )
    return out[:, ::-1] if rng.random() > 0.5 else out
