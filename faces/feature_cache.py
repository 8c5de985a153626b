"""Backbone features computed once and kept on disk, so that training a head on a frozen backbone costs
only the head per epoch.

Each entry belongs to one image file and is keyed by the file's bytes and a tag that must describe
everything between the bytes and the features (face crop, augmentation, number of views, backbone
weights). A file whose image yields no features (no face found, undecodable) is cached as skipped, with
the reason, so it is not re-examined either.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.files import atomic_write

log = logging.getLogger(__name__)

# compute(files, keys) → for each file its (views, D) features, or the reason it has none
Compute = Callable[[Sequence[Path], Sequence[str]], list["np.ndarray | str"]]


class FeatureCache:
    """Per-file features under `cache_dir` (`<key[:2]>/<key>.npy` float32 (views, D), or `<key>.skipped`
    with the reason); safe for several processes sharing the folder at once."""

    def __init__(self, cache_dir: str | Path, chunk: int = 32) -> None:
        self.dir = Path(cache_dir)
        self.chunk = chunk  # files computed (and saved) together: an interrupted build keeps its progress
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(file: Path, tag: str) -> str:
        digest = hashlib.sha1(tag.encode())
        digest.update(b"\0")
        digest.update(Path(file).read_bytes())
        return digest.hexdigest()

    def _path(self, key: str, suffix: str) -> Path:
        return self.dir / key[:2] / f"{key}{suffix}"

    def get(self, files: Sequence[Path], tag: str, compute: Compute, desc: str = "features") -> list[np.ndarray | str]:
        """Per file, its cached or newly computed (views, D) array, or the reason it was skipped."""
        from tqdm.auto import tqdm

        keys = [self.key(f, tag) for f in files]
        results: list[np.ndarray | str | None] = [self._load(k) for k in keys]
        missing = [i for i, r in enumerate(results) if r is None]
        self.hits += len(files) - len(missing)
        self.misses += len(missing)
        if missing:
            log.info("%s: %d of %d files not cached yet, computing", desc, len(missing), len(files))
        with tqdm(total=len(missing), desc=desc, unit="img", leave=False, disable=not missing) as bar:
            for start in range(0, len(missing), self.chunk):
                part = missing[start : start + self.chunk]
                for i, value in zip(part, compute([files[i] for i in part], [keys[i] for i in part])):
                    self._save(keys[i], value)
                    results[i] = value
                bar.update(len(part))
        return results  # type: ignore[return-value]

    def _load(self, key: str) -> np.ndarray | str | None:
        features, skipped = self._path(key, ".npy"), self._path(key, ".skipped")
        if features.exists():
            return np.load(features)
        if skipped.exists():
            return skipped.read_text(encoding="utf-8")
        return None

    def _save(self, key: str, value: np.ndarray | str) -> None:
        suffix = ".skipped" if isinstance(value, str) else ".npy"
        # a unique temporary file per writer, renamed over the entry: a concurrent run (parallel sweep jobs
        # share the cache) or an interrupted one never reads half an entry or renames another's file away
        with atomic_write(self._path(key, suffix), "w" if isinstance(value, str) else "wb") as handle:
            if isinstance(value, str):
                handle.write(value)
            else:
                np.save(handle, np.asarray(value, np.float32))
