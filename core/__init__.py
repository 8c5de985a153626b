"""Cross-cutting pieces every package uses: offline switches, user-facing errors, MLflow helpers.

Importing `core` applies the offline switches before any third-party library reads them.
"""
from core import offline as _offline

_offline.configure()
