"""Writing shared files safely when several processes may write the same one at once."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """An open file whose content becomes `path` in one step when the block ends without an exception.

    The temporary file has a unique name in `path`'s folder (the same file system, so `os.replace` is an
    atomic rename), so concurrent writers of the same `path` (DDP ranks, parallel sweep jobs) never share
    a temporary file: each replaces `path` whole, the last one wins, and a reader sees either no file or a
    complete one. On an exception the temporary file is removed and `path` is left as it was.
    `mode` is "wb" (binary) or "w" (text, UTF-8). The parent folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        mode,
        dir=path.parent,
        prefix=f".{path.name}.",
        suffix=".tmp",
        delete=False,
        **({} if "b" in mode else {"encoding": "utf-8"}),
    )
    try:
        with handle:
            yield handle
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise
