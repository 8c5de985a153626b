"""Shared caches written by two processes at once (DDP ranks, parallel sweep jobs) on one cold folder.

Each worker runs in a fresh (spawned) process. For the decoded-folder and feature caches, numpy's writer
is wrapped so that both processes finish writing their cache entry and then wait for each other before
going on to rename it: the interleaving in which writers sharing one temporary file name fail
("No such file or directory" on the second rename) happens every time, not by chance.
"""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

WORKERS = 2


def _in_lockstep(module, name: str, barrier) -> None:
    """Make `module.name` (a numpy writer) wait for the other worker after writing."""
    original = getattr(module, name)

    def write_then_wait(*args, **kwargs):
        original(*args, **kwargs)
        barrier.wait(timeout=30)

    setattr(module, name, write_then_wait)


def _decode_worker(files: list[str], cache_dir: str, out: str, barrier) -> None:
    from core import images

    _in_lockstep(images.np, "savez", barrier)
    barrier.wait(timeout=30)  # start together
    result = images.decode_folder(
        [Path(f) for f in files], lambda rgb: rgb[::2, ::2], cache_dir=cache_dir, cache_tag="half"
    )
    Path(out).write_bytes(pickle.dumps((result.pixels, result.files, result.skipped)))


def _feature_worker(files: list[str], cache_dir: str, out: str, barrier) -> None:
    from faces import feature_cache

    _in_lockstep(feature_cache.np, "savez", barrier)
    barrier.wait(timeout=30)

    def compute(paths, keys):  # per file: its bytes' sum as a (1, 2) feature, or a reason
        return [np.array([[float(p.stat().st_size), 1.0]]) if p.suffix == ".bin" else "not a .bin file" for p in paths]

    result = feature_cache.FeatureCache(cache_dir, chunk=2).get([Path(f) for f in files], "tag", compute)
    Path(out).write_bytes(pickle.dumps(result))


def _run_together(target, tmp_path: Path, *args) -> list:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    outs = [tmp_path / f"result-{i}.pkl" for i in range(WORKERS)]
    processes = [context.Process(target=target, args=(*args, str(out), barrier)) for out in outs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * WORKERS, "a worker failed: see its traceback above"
    return [pickle.loads(out.read_bytes()) for out in outs]


def test_two_processes_decode_one_cold_folder_into_one_cache(tmp_path):
    from core.images import decode_folder

    rng = np.random.default_rng(0)
    files = []
    for i in range(4):
        files.append(tmp_path / "images" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)).save(files[-1])
    cache = tmp_path / "cache"
    first, second = _run_together(_decode_worker, tmp_path, [str(f) for f in files], str(cache))
    expected = decode_folder(files, lambda rgb: rgb[::2, ::2])  # no cache: decoded here
    for pixels, kept, skipped in (first, second):
        assert np.array_equal(pixels, expected.pixels) and kept == expected.files and skipped == []
    assert [p.name for p in cache.iterdir()] == [next(cache.glob("decoded-*.npz")).name]  # no temporary file left
    cached = decode_folder(files, lambda rgb: 1 / 0, cache_dir=cache, cache_tag="half")  # read back, not decoded
    assert np.array_equal(cached.pixels, expected.pixels)


def test_two_processes_fill_one_cold_feature_cache(tmp_path):
    from faces.feature_cache import FeatureCache

    files = []
    for i, suffix in enumerate([".bin", ".bin", ".txt", ".bin"]):
        files.append(tmp_path / "data" / f"{i}{suffix}")
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_bytes(b"x" * (10 + i))
    cache = tmp_path / "cache"
    first, second = _run_together(_feature_worker, tmp_path, [str(f) for f in files], str(cache))
    for result in (first, second):
        assert [r if isinstance(r, str) else r.tolist() for r in result] == [
            [[10.0, 1.0]],
            [[11.0, 1.0]],
            "not a .bin file",
            [[13.0, 1.0]],
        ]
    entries = sorted(p.suffix for p in cache.rglob("*") if p.is_file())
    assert entries == [".npz", ".npz", ".npz", ".skipped"]  # no temporary file left
    reread = FeatureCache(cache).get(files, "tag", lambda paths, keys: 1 / 0)
    assert reread[2] == "not a .bin file" and reread[3].tolist() == [[13.0, 1.0]]


def _synthetic_worker(root: str, out: str, barrier) -> None:
    from synthetic import make_fruits

    barrier.wait(timeout=30)
    made = make_fruits(Path(root) / "fruits", classes=2, per_class=40, seed=3)
    Path(out).write_bytes(pickle.dumps(sorted(str(p.relative_to(made)) for p in made.rglob("*") if p.is_file())))


def test_two_processes_generate_one_synthetic_set(tmp_path):
    first, second = _run_together(_synthetic_worker, tmp_path, str(tmp_path))
    assert first == second and len(first) == 2 * 40 + 1  # the images and the manifest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("fruits")) == ["fruits", "fruits.lock"]
