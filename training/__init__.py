"""What every training shares: Lightning callbacks (checkpoints to MLflow, epoch metrics, datasets), the MLflow
server logger with its local fallback, ONNX export checks, and resumable shuffling."""

import core  # noqa: F401  (offline switches before mlflow is imported)
