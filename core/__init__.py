"""Cross-cutting pieces every package uses: offline switches, user-facing errors, MLflow helpers.

Importing `core` applies the offline switches before any third-party library reads them, and registers the
`${cap:asked,limit}` config resolver (core/config.py) before any config is composed.
"""

from core import offline as _offline

_offline.configure()

from core import config as _config  # noqa: E402,F401  (registers the resolver after the offline switches)
