"""Data: readers of the real formats, the synthetic generators, and one datamodule per task."""

import core  # noqa: F401  (offline switches before albumentations/ultralytics are imported)
