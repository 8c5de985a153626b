"""Reading image folders: one decoder, one bad-file policy, one decoded cache.

Every reader in the repo decodes through `read_rgb`, so corrupt, truncated, zero-byte and non-image
files, and grayscale/RGBA/16-bit modes, are handled the same way everywhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class UnreadableImage(Exception):
    """A file that is not a decodable image; callers skip and count it."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode any image file to an HxWx3 uint8 RGB array (alpha dropped, gray expanded, 16-bit scaled)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # forces a full decode: truncated files raise here, not later
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                wide = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if image.mode.startswith("I;16") else max(float(wide.max()), 1.0)
                gray = np.clip(wide / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    # ImportError: once ultralytics is imported, its patched Image.open looks for a HEIF plugin on files PIL
    # cannot identify, and raises that instead of UnidentifiedImageError.
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError, ImportError) as exc:
        raise UnreadableImage(f"{path}: {exc}") from exc


def find_images(root: str | Path, classes: Sequence[str] | None = None) -> list[Path]:
    """Image files under `root` (recursively, sorted); with `classes`, only under those sub-folders."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data folder not found: {root} — point the data config at an existing folder "
            "(README, section 'Data: synthetic and real')"
        )
    if classes:
        missing = [name for name in classes if not (root / name).is_dir()]
        if missing:
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise UserError(f"class folder(s) {missing} not in {root}; present: {present[:20]}")
        dirs = [root / name for name in classes]
    else:
        dirs = [root]
    files = sorted(p for d in dirs for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}" + (f" for classes {list(classes)}" if classes else ""))
    return files


@dataclass
class DecodedImages:
    """A folder decoded to one uint8 array (N, H, W, 3), with the files behind each row and those skipped."""

    pixels: np.ndarray
    files: list[str]
    skipped: list[str] = field(default_factory=list)

    def class_labels(self, root: str | Path) -> tuple[np.ndarray, list[str]]:
        """Labels from each file's first folder below `root` (the image-folder convention)."""
        parts = [Path(f).relative_to(root).parts[0] for f in self.files]
        names = sorted(set(parts))
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[p] for p in parts], dtype=np.int64), names


def decode_folder(
    files: Sequence[Path],
    transform: Callable[[np.ndarray], np.ndarray],
    cache_dir: str | Path | None = None,
    cache_tag: str = "",
) -> DecodedImages:
    """Decode and transform every file once; bad files are skipped with a warning naming each.

    With `cache_dir`, the result is kept on disk keyed by the files (path, size, mtime) and `cache_tag`
    (which must describe the transform), so a second run skips decoding entirely.
    """
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha1(cache_tag.encode())
        for f in files:
            stat = f.stat()
            key.update(f"{f}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        cache_file = Path(cache_dir) / f"decoded-{key.hexdigest()[:16]}.npz"
        if cache_file.exists():
            with np.load(cache_file, allow_pickle=False) as cached:
                meta = json.loads(str(cached["meta"]))
                return DecodedImages(cached["pixels"], meta["files"], meta["skipped"])

    from tqdm.auto import tqdm

    pixels, kept, skipped = [], [], []
    for f in tqdm(files, desc=f"decoding {Path(files[0]).parent.name if files else ''}", unit="img", leave=False, disable=len(files) < 200):
        try:
            pixels.append(transform(read_rgb(f)))
            kept.append(str(f))
        except UnreadableImage as exc:
            skipped.append(str(f))
            log.warning("skipped unreadable image %s", exc)
    if not kept:
        raise UserError(f"none of the {len(files)} image files could be decoded (first: {files[0]})")
    if skipped:
        log.warning("skipped %d unreadable file(s) of %d", len(skipped), len(files))
    result = DecodedImages(np.stack(pixels), kept, skipped)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, pixels=result.pixels, meta=json.dumps({"files": kept, "skipped": skipped}))
        tmp.replace(cache_file)
    return result
