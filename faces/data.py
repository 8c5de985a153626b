"""Identities for face recognition: an image folder with one sub-folder per person.

The folder holds either face crops (capture-faces' output, the synthetic identities) or whole photos
(LFW), for which `detector` finds the faces first and the one nearest the image centre is the named
person (LFW's convention). Every face becomes a square crop — the detection grown by `margin` on each
side — of `image_size` pixels (`FaceCrop`, shared with recognition).

Two ways to serve it, declared by `serves` (the model's `inputs` reads the same config value):
- "images": uint8 crops, augmented by albumentations each epoch (a backbone that trains);
- "features": the features of a frozen backbone that this datamodule owns (`features`: its spec, built as a
  `faces.descriptors.FeatureExtractor`), computed once per file and cached on disk (`FeatureCache`), with
  `views` augmented views of each training image built at cache time; epoch e trains on view e mod
  `views` of every image, so an epoch means the same amount of data in both ways.

The data flows one way: files → face crops (`face`, one crop policy) → frozen features (cached) → the
model's head. Nothing here calls the model, and the model never configures this datamodule.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from core.errors import UserError
from core.images import UnreadableImage, find_images, read_rgb
from core.mlflow_store import FolderDataset, dataset_name, folder_files
from core.seeds import epoch_seed
from faces import Detection, FaceDetector
from faces.crop import FaceCrop
from faces.descriptors import FeatureExtractor

log = logging.getLogger(__name__)

NO_FACE = "no face found"
SERVES = ("images", "features")


def central_face(detections: Sequence[Detection], shape: tuple[int, ...]) -> Detection:
    """The detection whose centre is nearest the image centre (LFW names the person in the middle)."""
    cy, cx = shape[0] / 2, shape[1] / 2
    return min(detections, key=lambda d: ((d.left + d.right) / 2 - cx) ** 2 + ((d.top + d.bottom) / 2 - cy) ** 2)


def build_augmentation(
    hflip: float = 0.0, rotate: float = 0.0, shift: float = 0.0, brightness: float = 0.0, contrast: float = 0.0
) -> A.Compose | None:
    """Flip with probability `hflip`, rotate by up to ±`rotate`°, shift by up to `shift` × the size, and
    change brightness/contrast by up to the given fractions; None when all are zero."""
    steps = []
    if hflip:
        steps.append(A.HorizontalFlip(p=hflip))
    if rotate or shift:
        # edges repeat the border pixels, as Keras' ImageDataGenerator (fill_mode='nearest') did for the paper
        steps.append(
            A.Affine(
                rotate=(-rotate, rotate), translate_percent=(-shift, shift), border_mode=cv2.BORDER_REPLICATE, p=1.0
            )
        )
    if brightness or contrast:
        steps.append(A.RandomBrightnessContrast(brightness_limit=brightness, contrast_limit=contrast, p=1.0))
    return A.Compose(steps) if steps else None


class FaceIdentityDataModule(pl.LightningDataModule):
    """Identity folders → batches of (x, label (B,) int64, index (B,) into the split), where x is uint8 crops
    (B, 3, image_size, image_size) when `serves="images"` or float32 features (B, D) when `serves="features"`.

    `features`: the frozen extractor's spec (`backbone`: vgg16 | dlib_resnet, and `weights`, `normalize`,
    `pool` as `faces.descriptors.FeatureExtractor.build`; the crop `margin` is this datamodule's), required
    with `serves="features"`. Raises UserError for a bad `serves`, a missing spec or cache folder, bad identity
    folders (see `identity_files`) and a split without any usable face.

    Splits (`setup`): `test_fraction` of each identity's images (rounded, at least 1 when > 0) is the test split,
    the images with the lowest SHA-1 of their path under `root` (`test_files`): fixed by the file names, whatever
    the seed, `max_images` or `val_fraction`, and evaluated once after training (`test_dataloader`). Of the rest,
    `max_images` caps the count and a stratified split seeded by `seed` takes ceil(`val_fraction` × the images in
    use, test split included) for validation; the remaining ones train."""

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        image_size: int = 224,
        margin: float = 0.2,
        capture_size: int | None = None,
        detector: FaceDetector | None = None,
        val_fraction: float = 0.25,
        test_fraction: float = 0.0,
        min_images: int = 10,
        augment: dict | None = None,
        views: int = 4,
        max_images: int | None = None,
        generate: Callable[[], object] | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        serves: str = "images",
        features: dict | None = None,
    ) -> None:
        super().__init__()
        if serves not in SERVES:
            raise UserError(f"data.serves must be one of {list(SERVES)}, got {serves!r}")
        if serves == "features" and not features:
            raise UserError(
                "data.serves=features needs data.features (the frozen backbone: backbone, weights, normalize, pool)"
            )
        if not 0 <= test_fraction < 1 or not 0 < val_fraction < 1 - test_fraction:
            raise UserError(
                f"data.val_fraction ({val_fraction}) and data.test_fraction ({test_fraction}) must be fractions that "
                "leave images to train on: 0 < val_fraction, 0 <= test_fraction, val_fraction + test_fraction < 1"
            )
        if serves == "features" and cache_dir is None:
            raise UserError("data.cache_dir must be set to cache backbone features (or set data.serves=images)")
        # the checkpoint keeps the crop for recognition; the entry logs the whole resolved config as params
        self.save_hyperparameters(ignore=["generate", "detector"], logger=False)
        self.root = Path(root)
        self.batch_size = batch_size
        self.crop = FaceCrop(image_size, margin, capture_size)
        self.detector = detector
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.min_images = min_images
        self.augment = build_augmentation(**(augment or {}))
        self.views = views if self.augment is not None else 1
        self.max_images = max_images
        self.generate = generate
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self.seed = seed
        self.serves = serves
        self.features_spec = dict(features or {})
        self.class_names: list[str] = []
        self.skipped: dict[str, list[str]] = {}
        self._train: Dataset | None = None
        self._val: Dataset | None = None
        self._test: Dataset | None = None
        self.test_files: list[Path] = []
        self.test_labels = np.zeros(0, np.int64)
        self._sampler: Sampler | None = None

    # ---- files and split -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.generate is not None:
            self.generate()

    def setup(self, stage: str | None = None) -> None:
        if self.class_names:
            return
        files, labels, self.class_names = self.identity_files()
        test = self.test_indices(files, labels)
        self.test_files, self.test_labels = [files[i] for i in test], labels[test]
        rest = np.setdiff1d(np.arange(len(files)), test)
        files, labels = [files[i] for i in rest], labels[rest]
        if self.max_images and len(files) > self.max_images:
            pick = (
                np.linspace(0, len(files) - 1, self.max_images).round().astype(int)
            )  # an even spread keeps every identity
            files, labels = [files[i] for i in pick], labels[pick]
        from sklearn.model_selection import train_test_split

        # val_fraction is of all the images in use (these and the test split), rounded up as sklearn rounds a
        # fraction; at most what leaves one training image per identity (max_images may have cut these)
        wanted = int(np.ceil(self.val_fraction * (len(files) + len(self.test_files))))
        train_idx, val_idx = train_test_split(
            np.arange(len(files)),
            test_size=min(wanted, len(files) - len(self.class_names)),
            stratify=labels,
            random_state=self.seed,
        )
        self.train_files, self.train_labels = [files[i] for i in sorted(train_idx)], labels[np.sort(train_idx)]
        self.val_files, self.val_labels = [files[i] for i in sorted(val_idx)], labels[np.sort(val_idx)]
        log.info(
            "%d identities, %d train / %d val / %d test images from %s",
            len(self.class_names),
            len(self.train_files),
            len(self.val_files),
            len(self.test_files),
            self.root,
        )

    def test_indices(self, files: Sequence[Path], labels: np.ndarray) -> np.ndarray:
        """The sorted indices of the test split among `files`: per identity (label), the round(test_fraction × its
        image count) files (at least 1 when test_fraction > 0) with the lowest SHA-1 of their path relative to
        `root` (POSIX form). Empty when test_fraction is 0."""
        if not self.test_fraction:
            return np.zeros(0, np.int64)
        rank = [hashlib.sha1(Path(f).relative_to(self.root).as_posix().encode()).hexdigest() for f in files]
        chosen: list[int] = []
        for label in np.unique(labels):
            mine = sorted(np.flatnonzero(labels == label), key=lambda i: rank[i])
            chosen += mine[: max(1, round(len(mine) * self.test_fraction))]
        return np.array(sorted(chosen), np.int64)

    @property
    def has_test_split(self) -> bool:
        """Whether the data holds a test split (`test_fraction` > 0), which the training entry evaluates once."""
        return self.test_fraction > 0

    def dataset_inputs(self) -> list[FolderDataset]:
        """The training, validation and test images as split (after `setup`), with the files skipped so far (no
        face, unreadable; by reason), for the run's MLflow dataset inputs."""
        skipped = tuple(f"{reason}: {name}" for reason, names in self.skipped.items() for name in names)
        splits = [("training", self.train_files), ("validation", self.val_files)]
        if self.test_files:
            splits.append(("test", self.test_files))
        return [
            FolderDataset(
                name=dataset_name(self.root),
                source=self.root,
                files=folder_files(self.root, files),
                context=context,
                counts={"images": len(files), "identities": len(self.class_names), "skipped": len(skipped)},
                skipped=skipped,
            )
            for context, files in splits
        ]

    def identity_files(self) -> tuple[list[Path], np.ndarray, list[str]]:
        """Every image under `root` with its identity (first sub-folder), checked against `min_images`."""
        files = find_images(self.root)
        loose = [f for f in files if f.parent == self.root]
        if loose:
            raise UserError(
                f"{self.root} must hold one sub-folder per identity; images directly in it: {[f.name for f in loose[:5]]}"
            )
        names = [f.relative_to(self.root).parts[0] for f in files]
        counts = Counter(names)
        too_few = {name: n for name, n in sorted(counts.items()) if n < self.min_images}
        if too_few:
            raise UserError(
                f"identity folder(s) with fewer than data.min_images={self.min_images} images in {self.root}: "
                + ", ".join(f"{name} ({n})" for name, n in too_few.items())
                + " — capture more (make capture-faces NAME=...), remove them, or lower data.min_images"
            )
        if len(counts) < 2:
            raise UserError(
                f"{self.root} holds {len(counts)} identity folder(s) ({sorted(counts)}); recognition needs at least two people"
            )
        class_names = sorted(counts)
        index = {name: i for i, name in enumerate(class_names)}
        return files, np.array([index[n] for n in names], dtype=np.int64), class_names

    # ---- faces -----------------------------------------------------------------------------------
    def face(self, file: Path) -> np.ndarray | str:
        """The model-input face crop of one file, or the reason there is none."""
        try:
            rgb = read_rgb(file)
        except UnreadableImage as exc:
            log.warning("skipped unreadable image %s", exc)
            return f"unreadable: {exc}"
        if self.detector is None:
            return self.crop.fit(rgb)
        detections = self.detector.detect(rgb)
        if not detections:
            return NO_FACE
        return self.crop(rgb, central_face(detections, rgb.shape))

    def prepare_tag(self) -> str:
        """Everything between a file's bytes and its face crop, for cache keys."""
        return f"faces|{self.detector!r}|{self.crop}"

    def _record_skips(self, split: str, files: Sequence[Path], results: Sequence[object]) -> list[int]:
        kept, reasons = [], defaultdict(list)
        for i, (f, r) in enumerate(zip(files, results)):
            if isinstance(r, str):
                reasons[NO_FACE if r == NO_FACE else "unreadable"].append(str(f))
            else:
                kept.append(i)
        for reason, skipped in reasons.items():
            self.skipped.setdefault(reason, []).extend(skipped)
            log.warning(
                "%s: skipped %d of %d images (%s), e.g. %s", split, len(skipped), len(files), reason, skipped[0]
            )
        if not kept:
            raise UserError(f"no usable face in any of the {len(files)} {split} images under {self.root}")
        return kept

    # ---- images mode -----------------------------------------------------------------------------
    def _faces(self, split: str, files: list[Path], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Path]]:
        from tqdm.auto import tqdm

        results = [self.face(f) for f in tqdm(files, desc=f"{split} faces", unit="img", leave=False)]
        kept = self._record_skips(split, files, results)
        return np.stack([results[i] for i in kept]), labels[kept], [files[i] for i in kept]

    def _image_datasets(self) -> None:
        pixels, labels, _ = self._faces("train", self.train_files, self.train_labels)
        self._train = FaceImages(pixels, labels, self.augment)
        pixels, labels, self.val_kept = self._faces("val", self.val_files, self.val_labels)
        self._val = FaceImages(pixels, labels, None)

    # ---- features mode ---------------------------------------------------------------------------
    @functools.cached_property
    def extractor(self) -> FeatureExtractor:
        """The frozen backbone whose features are served (built on first use from `features`; the crops'
        margin is this datamodule's). Raises UserError when `serves` is not "features"."""
        if self.serves != "features":
            raise UserError("this datamodule serves image crops (data.serves=images): it has no feature extractor")
        return FeatureExtractor.build(**self.features_spec, margin=self.crop.margin)

    @property
    def feature_tag(self) -> str | None:
        """What names the served features (the extractor's backbone, options and weights hash), or None
        when serving images."""
        return self.extractor.tag if self.serves == "features" else None

    def _views_of(self, transform: A.Compose | None, views: int):
        """compute(files, keys) for `FeatureCache.get`: per file its (views, D) features, or why it has none."""

        def run(files: Sequence[Path], keys: Sequence[str]) -> list[np.ndarray | str]:
            reasons: list[str | None] = []  # per file: why it has no features, or None
            images: list[np.ndarray] = []
            for key, file in zip(keys, files):
                face = self.face(file)
                if isinstance(face, str):
                    reasons.append(face)
                    continue
                for view in range(views):
                    if transform is not None:
                        transform.set_random_seed(int(key[:8], 16) + view)  # a file's views do not depend on its batch
                    images.append(transform(image=face)["image"] if transform is not None else face)
                reasons.append(None)
            flat = self.extractor(np.stack(images)) if images else np.empty((0, 0), np.float32)
            out: list[np.ndarray | str] = []
            at = 0
            for reason in reasons:
                out.append(reason if reason is not None else flat[at : at + views])
                at += 0 if reason is not None else views
            return out

        return run

    def _feature_datasets(self) -> None:
        """The frozen extractor's features of every file, from the cache or computed once and cached."""
        from faces.feature_cache import FeatureCache

        self.feature_cache = FeatureCache(self.cache_dir)
        augment_tag = json.dumps(A.to_dict(self.augment), sort_keys=True) if self.augment is not None else "none"
        base = f"{self.prepare_tag()}|{self.extractor.tag}"
        train = self.feature_cache.get(
            self.train_files,
            f"{base}|{augment_tag}|views={self.views}|seed={self.seed}",
            self._views_of(self.augment, self.views),
            desc="train features",
        )
        val = self.feature_cache.get(
            self.val_files, f"{base}|none|views=1", self._views_of(None, 1), desc="val features"
        )
        kept = self._record_skips("train", self.train_files, train)
        self._train = CachedViews(np.stack([train[i] for i in kept]), self.train_labels[kept])
        self._sampler = ViewSampler(len(kept), self.views, self.seed)
        kept = self._record_skips("val", self.val_files, val)
        self._val = CachedViews(np.stack([val[i] for i in kept]), self.val_labels[kept])
        self.val_kept = [self.val_files[i] for i in kept]

    def _datasets(self) -> None:
        if self.serves == "features":
            self._feature_datasets()
        else:
            self._image_datasets()

    # ---- loaders ---------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        if self._train is None:
            self._datasets()
        return DataLoader(
            self._train,
            batch_size=self.batch_size,
            sampler=self._sampler,
            shuffle=self._sampler is None,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        if self._val is None:
            self._datasets()
        return DataLoader(self._val, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        if not self.test_files:
            raise UserError(f"{self.root}: no test split (data.test_fraction={self.test_fraction})")
        if self._test is None:
            if self.serves == "features":
                from faces.feature_cache import FeatureCache

                cache = FeatureCache(self.cache_dir)
                tag = f"{self.prepare_tag()}|{self.extractor.tag}|none|views=1"  # as the validation features
                test = cache.get(self.test_files, tag, self._views_of(None, 1), desc="test features")
                kept = self._record_skips("test", self.test_files, test)
                self._test = CachedViews(np.stack([test[i] for i in kept]), self.test_labels[kept])
            else:
                pixels, labels, _ = self._faces("test", self.test_files, self.test_labels)
                self._test = FaceImages(pixels, labels, None)
        return DataLoader(self._test, batch_size=self.batch_size, num_workers=self.num_workers)

    def val_face(self, index: int) -> np.ndarray:
        """The face crop behind validation sample `index` (for the misclassified-examples grid)."""
        face = self.face(self.val_kept[index])
        assert not isinstance(face, str), face
        return face


class FaceImages(Dataset):
    """uint8 face crops (N, H, W, 3) → (uint8 tensor (3, H, W), label, index), augmented when asked."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, transform: A.Compose | None) -> None:
        self.pixels, self.labels, self.transform = pixels, labels, transform

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int):
        image = self.pixels[i]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), int(self.labels[i]), i


class CachedViews(Dataset):
    """Features (N, views, D); index v·N + i is view v of item i → (features, label, i)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray) -> None:
        self.features, self.labels = torch.from_numpy(features), labels

    def __len__(self) -> int:
        return self.features.shape[0] * self.features.shape[1]

    def __getitem__(self, index: int):
        view, i = divmod(index, self.features.shape[0])
        return self.features[i, view], int(self.labels[i]), i


class ViewSampler(Sampler[int]):
    """Each epoch: every item once, shuffled by `core.seeds.epoch_seed(seed, epoch)`, all from view `epoch mod views`
    (Lightning calls set_epoch)."""

    def __init__(self, items: int, views: int, seed: int) -> None:
        self.items, self.views, self.seed, self.epoch = items, views, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.items

    def __iter__(self):
        order = torch.randperm(self.items, generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))
        return iter((order + (self.epoch % self.views) * self.items).tolist())
