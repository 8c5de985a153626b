"""Face-mask detection: `detector.YoloDetector` (the LightningModule on ultralytics' YOLO), `data` (its datamodule)
and `voc_to_yolo` (PASCAL VOC → YOLO), the checkpoint readers (`ultralytics_checkpoint`, `yolov5_checkpoint`), the
runtime for trained checkpoints (`inference`: load and detect; `export`: ONNX and ultralytics' formats), and the
entrance monitor (`monitor`, with `alerts`: one alert per unmasked person)."""

import core  # noqa: F401  (offline switches before ultralytics/mlflow are imported)
