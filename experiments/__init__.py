"""Entry points: thin Hydra mains over the library packages. Run them as `python experiments/<name>.py`."""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Iterator

import core  # noqa: F401  (offline switches first)
from core.errors import UserError

log = logging.getLogger("ml-playground")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a UserError's message without a traceback and exit with status 2 (also when hydra's `instantiate`
    wrapped it: a constructor that raised it, e.g. for a missing weights file); a full disk is one too."""
    try:
        yield
    except Exception as exc:
        error = _as_user_error(exc)
        if error is None:
            raise
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def _as_user_error(exc: Exception) -> UserError | None:
    for error in (exc, exc.__cause__):
        if isinstance(error, UserError):
            return error
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return UserError(
            f"disk full while writing {exc.filename or 'an output file'}: free space and run again "
            "(training resumes from its last complete checkpoint with ckpt_path=last)"
        )
    return None
