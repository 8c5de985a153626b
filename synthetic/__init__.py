"""Built-in synthetic datasets, written to disk in the real datasets' formats.

Each generator is a function `make_<set>(out_dir, *, seed, ...)` decorated with `synthetic_set`: it is
deterministic from its seed, writes into a temporary sibling folder that is renamed when complete (one
process at a time per folder, under a sibling `<folder>.lock`), and records its parameters, a hash of its module's
source and the numpy and OpenCV versions in `manifest.json`, so calling it again with the same parameters is free,
and a folder written by another version of the generator is written again (a long-used checkout trains on the same
images as a fresh clone).
Data configs bind a generator with `_partial_: true`; datamodules call it in `prepare_data`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def generator_version(make: Callable[..., None]) -> dict[str, str]:
    """What besides its parameters decides a generator's images: the SHA-1 of its module's source (any edit there
    may change them), numpy's version (its random streams) and OpenCV's (its drawing and JPEG encoding)."""
    import cv2

    source = inspect.getsource(inspect.getmodule(make))
    return {"code": hashlib.sha1(source.encode()).hexdigest()[:16], "numpy": np.__version__, "opencv": cv2.__version__}


def synthetic_set(make: Callable[..., None]) -> Callable[..., Path]:
    """Make `make(tmp_dir, rng, **params)` idempotent and atomic; see the module docstring."""
    signature = inspect.signature(make)

    @functools.wraps(make)
    def generate(out_dir: str | Path, **params) -> Path:
        bound = signature.bind_partial(**params)
        bound.apply_defaults()
        params = {k: v for k, v in bound.arguments.items() if k not in ("out_dir", "rng")}
        spec = {"generator": make.__name__, **params, "version": generator_version(make)}
        out = Path(out_dir)
        manifest = out / MANIFEST
        if manifest.exists() and json.loads(manifest.read_text()) == json.loads(json.dumps(spec)):
            return out
        from filelock import FileLock

        out.parent.mkdir(parents=True, exist_ok=True)
        # one generator per folder: a second process (parallel sweep job, DDP rank) waits, then finds the
        # manifest; without the lock its rename of a finished folder fails, or it removes the first's
        with FileLock(out.with_name(f"{out.name}.lock")):
            if manifest.exists() and json.loads(manifest.read_text()) == json.loads(json.dumps(spec)):
                return out
            if out.exists():
                if not manifest.exists():
                    raise UserError(
                        f"{out} exists and was not made by the synthetic generator; refusing to overwrite it"
                    )
                shutil.rmtree(out)
            tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            log.info("generating synthetic %s into %s", make.__name__, out)
            make(
                tmp,
                rng=np.random.default_rng(spec.get("seed", 0)),
                **params,
            )
            (tmp / MANIFEST).write_text(json.dumps(spec, indent=2))
            tmp.rename(out)
        return out

    return generate


from synthetic.facemask import make_facemask  # noqa: E402,F401
from synthetic.id_cards import make_id_card_rotations, make_id_cards  # noqa: E402
from synthetic.identities import make_identities, write_face_video  # noqa: E402,F401
from synthetic.scenes import make_fruits, make_hardhat  # noqa: E402

__all__ = ["synthetic_set", "make_fruits", "make_hardhat", "make_id_cards", "make_id_card_rotations"]
