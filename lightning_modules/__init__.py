"""Models: one LightningModule per task, with its networks beside it."""

import core  # noqa: F401  (offline switches before ultralytics/mlflow are imported)
