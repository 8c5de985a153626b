"""Arrays computed once per image file and kept on disk: the one cache of the faces application, for the frozen
backbone's features of the classifier's training photos (`faces.data`) and for the descriptors of photos
(`faces.photos`: the gallery, LFW, the open-set protocol).

Each entry belongs to one image file and is keyed by the file's bytes and a tag that must describe everything
between the bytes and the array (face crop, detector, augmentation, number of views, network weights): a changed
file or another pipeline is computed again, a moved file is not. An entry holds an array (rows × D, float32) and
a short label (e.g. how its face was found), or, for a file that yields nothing (no face found, undecodable), the
reason, so it is not re-examined either.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.files import atomic_write

log = logging.getLogger(__name__)

Labelled = tuple[np.ndarray, str]  # an entry's array (rows, D) and its label
# compute(files, keys) → for each file its (rows, D) array, or the reason it has none
Compute = Callable[[Sequence[Path], Sequence[str]], list["np.ndarray | str"]]
# the same with a label beside each array
ComputeLabelled = Callable[[Sequence[Path], Sequence[str]], list["Labelled | str"]]


class FeatureCache:
    """Per-file arrays under `cache_dir` (`<key[:2]>/<key>.npz` holding `rows` float32 (rows, D) and `label`, or
    `<key>.skipped` holding the reason); `cache_dir` None keeps them in memory only (nothing between runs). Safe
    for several processes sharing the folder at once: each entry is written whole under a temporary name and
    renamed, so a reader never sees half an entry and no writer's entries are lost. `hits` and `misses` count the
    files answered from the cache and computed."""

    def __init__(self, cache_dir: str | Path | None, chunk: int = 32) -> None:
        self.dir = Path(cache_dir) if cache_dir else None
        self.chunk = chunk  # files computed (and saved) together: an interrupted build keeps its progress
        self.memory: dict[str, Labelled | str] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(file: Path, tag: str) -> str:
        digest = hashlib.sha1(tag.encode())
        digest.update(b"\0")
        digest.update(Path(file).read_bytes())
        return digest.hexdigest()

    def _path(self, key: str, suffix: str) -> Path:
        assert self.dir is not None
        return self.dir / key[:2] / f"{key}{suffix}"

    def get(
        self, files: Sequence[Path], tag: str, compute: Compute, desc: str = "features", progress: bool = True
    ) -> list[np.ndarray | str]:
        """Per file, its cached or newly computed (rows, D) array, or the reason it was skipped."""

        def labelled(paths: Sequence[Path], keys: Sequence[str]) -> list[Labelled | str]:
            return [v if isinstance(v, str) else (v, "") for v in compute(paths, keys)]

        return [v if isinstance(v, str) else v[0] for v in self.get_labelled(files, tag, labelled, desc, progress)]

    def get_labelled(
        self,
        files: Sequence[Path],
        tag: str,
        compute: ComputeLabelled,
        desc: str = "features",
        progress: bool = True,
    ) -> list[Labelled | str]:
        """Per file, its cached or newly computed (array (rows, D), label), or the reason it was skipped; the files
        not cached are computed `chunk` at a time, each chunk saved before the next (with a progress bar)."""
        from tqdm.auto import tqdm

        keys = [self.key(f, tag) for f in files]
        results: list[Labelled | str | None] = [self._load(k) for k in keys]
        missing = [i for i, r in enumerate(results) if r is None]
        self.hits += len(files) - len(missing)
        self.misses += len(missing)
        if missing:
            log.info("%s: %d of %d files not cached yet, computing", desc, len(missing), len(files))
        with tqdm(total=len(missing), desc=desc, unit="img", leave=False, disable=not missing or not progress) as bar:
            for start in range(0, len(missing), self.chunk):
                part = missing[start : start + self.chunk]
                for i, value in zip(part, compute([files[i] for i in part], [keys[i] for i in part])):
                    self._save(keys[i], value)
                    results[i] = value
                bar.update(len(part))
        return results  # type: ignore[return-value]

    def cached(self, files: Sequence[Path], tag: str) -> int:
        """How many of `files` the cache holds under `tag` (nothing is computed)."""
        return sum(self._load(self.key(f, tag)) is not None for f in files)

    def _load(self, key: str) -> Labelled | str | None:
        if self.dir is None:
            return self.memory.get(key)
        entry, skipped = self._path(key, ".npz"), self._path(key, ".skipped")
        if entry.exists():
            try:
                with np.load(entry, allow_pickle=False) as stored:
                    return stored["rows"], str(stored["label"])
            except (OSError, ValueError, KeyError) as exc:  # a damaged entry is computed again, not an error
                log.warning("ignoring unreadable cache entry %s (%s)", entry, exc)
                return None
        if skipped.exists():
            return skipped.read_text(encoding="utf-8")
        return None

    def _save(self, key: str, value: Labelled | str) -> None:
        if self.dir is None:
            self.memory[key] = value
            return
        if isinstance(value, str):
            with atomic_write(self._path(key, ".skipped"), "w") as handle:
                handle.write(value)
            return
        rows, label = value
        # a unique temporary file per writer, renamed over the entry: a concurrent run (parallel sweep jobs share
        # the cache) or an interrupted one never reads half an entry or renames another's file away
        with atomic_write(self._path(key, ".npz")) as handle:
            np.savez(handle, rows=np.asarray(rows, np.float32), label=np.array(label))
