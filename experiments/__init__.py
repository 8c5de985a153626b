"""Entry points: thin Hydra mains over the library packages. Run them as `python experiments/<name>.py`."""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import core  # noqa: F401  (offline switches first)
from core.errors import UserError

log = logging.getLogger("ml-playground")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a UserError's message without a traceback and exit with status 2."""
    try:
        yield
    except UserError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
