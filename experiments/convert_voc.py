"""Convert a PASCAL VOC folder to the YOLO layout: `python experiments/convert_voc.py src=... [out=...]`.

Writes images/, labels/, difficult/, data.yaml and report.json (what was clipped, dropped or skipped, by file), prints the
summary, and logs the report to MLflow (experiment `convert_voc`).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from core.errors import UserError
from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from facemask.voc_to_yolo import ConversionReport, convert_voc


def convert(cfg: DictConfig) -> ConversionReport:
    if not cfg.src:
        raise UserError("convert_voc: pass src=<folder with images/ and annotations/> (make convert-facemask SRC=...)")
    src = Path(cfg.src)
    out = Path(cfg.out) if cfg.out else Path(cfg.paths.data_dir) / "yolo" / src.resolve().name
    report = convert_voc(
        src,
        out,
        list(cfg.classes),
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        unknown_classes=cfg.unknown_classes,
        images_dir=cfg.images_dir,
        annotations_dir=cfg.annotations_dir,
        keep_difficult=cfg.keep_difficult,
    )
    log_tool_run(
        cfg,
        src.name,
        params={
            "src": str(src),
            "out": str(out),
            "classes": ",".join(cfg.classes),
            "val_fraction": cfg.val_fraction,
            "test_fraction": cfg.test_fraction,
            "seed": cfg.seed,
            "unknown_classes": cfg.unknown_classes,
            "keep_difficult": cfg.keep_difficult,
        },
        metrics={
            "train_images": report.images["train"],
            "val_images": report.images["val"],
            "test_images": report.images["test"],
            "clipped_boxes": sum(report.clipped.values()),
            "backgrounds": len(report.backgrounds),
            "difficult_boxes": sum(report.difficult.values()),
            "ambiguous_pairs": len(report.ambiguous),
        },
        dicts={"report.json": report.to_dict()},
    )
    log.info("converted %s -> %s", src, out)
    print(f"{src} -> {out}: {report.summary()} (details: {out / 'report.json'})")
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="convert_voc")
def main(cfg: DictConfig) -> None:
    with user_errors():
        convert(cfg)


if __name__ == "__main__":
    main()
