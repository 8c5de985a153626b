"""Compare face detectors: `python experiments/compare_face_detectors.py voc=<folder> use=[hog,yunet]`.

Precision and recall at each IoU threshold, recall per class and images/s on a labelled VOC folder, and
recall against in-plane rotation on generated ID cards; written as markdown and plots to `report_dir`,
printed, and logged to MLflow (experiment `compare_face_detectors`; per-class recall as
`<detector>.recall_iou<t>/<index>_<slug>`, the class names in `class_names.json`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import hydra
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from core import figures
from core.errors import UserError
from core.metric_names import CLASS_NAMES_ARTIFACT, class_metric_names, slug
from core.tracking import log_tool_run
from experiments import log, user_errors
from faces.evaluation import read_voc_folder, run_detector, scores


def compare_face_detectors(cfg: DictConfig) -> pd.DataFrame:
    """Run every detector in `cfg.use`; return the comparison table (one row per detector)."""
    unknown = [name for name in cfg.use if name not in cfg.detectors]
    if unknown:
        raise UserError(f"use: unknown detector(s) {unknown}; known: {sorted(cfg.detectors)}")
    detectors = [instantiate(cfg.detectors[name]) for name in cfg.use]
    voc = Path(cfg.voc) if cfg.voc else instantiate(cfg.id_cards)
    labelled = read_voc_folder(voc, cfg.max_images)
    images = labelled.images
    thresholds = list(cfg.iou_thresholds)
    counts = Counter(c for image in images for c in image.classes)
    classes = sorted(counts)
    table = pd.DataFrame(
        [{"detector": d.name, **scores(run_detector(d, images, cfg.progress), images, thresholds)} for d in detectors]
    )

    name = cfg.name or voc.name
    stem = slug(name) or "faces"  # file and artifact names: the folder's name may hold any character
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    title = f"Face detectors on {name} ({len(images)} images, {int(table['faces'].iloc[0])} faces)"
    notes = _data_notes(labelled)
    sections = [f"## {title}\n", *([notes + "\n"] if notes else []), _markdown(table, thresholds, counts)]
    figure_files = {
        f"{stem}.png": figures.face_detector_comparison(table.to_dict("records"), thresholds, classes, title)
    }
    if cfg.rotations.enabled:
        rotation = _rotation_recall(cfg, detectors)
        sections += [
            f"\n### Recall (IoU ≥ {cfg.rotations.iou_threshold}) against in-plane rotation, generated ID cards "
            f"({cfg.rotations.set.cards} per angle)\n",
            rotation.to_markdown(floatfmt=".2f") + "\n",
        ]
        figure_files[f"{stem}_rotation.png"] = figures.recall_vs_rotation(
            list(rotation.index), rotation.to_dict("list"), cfg.rotations.iou_threshold
        )
    markdown = "\n".join(sections)
    (report_dir / f"{stem}.md").write_text(markdown)
    for file, figure in figure_files.items():
        figure.savefig(report_dir / file)
    print(markdown)
    _log_mlflow(cfg, table, classes, report_dir, [f"{stem}.md", *figure_files], name)
    log.info("report written to %s", report_dir / f"{stem}.md")
    return table


def _data_notes(labelled) -> str:
    """One line on what the folder held besides the faces counted: difficult faces ignored, files skipped."""
    pairing, parts = labelled.pairing, []
    if labelled.difficult:
        parts.append(f"{labelled.difficult} face(s) marked difficult ignored (neither hit nor miss)")
    for what, files in (
        ("ambiguous image/xml pair(s)", pairing.ambiguous),
        ("xml without image", pairing.xml_without_image),
        ("image(s) without xml", pairing.image_without_xml),
        ("unreadable xml", pairing.unreadable_xml),
    ):
        if files:
            parts.append(
                f"{len(files)} {what} skipped: {', '.join(Path(f.split(': ')[0]).name for f in files[:3])}"
                + (" …" if len(files) > 3 else "")
            )
    return "; ".join(parts)


def _markdown(table: pd.DataFrame, thresholds: list[float], counts: dict[str, int]) -> str:
    classes = sorted(counts)
    main = table[
        ["detector"]
        + [f"{k}@{t}" for t in thresholds for k in ("precision", "recall")]
        + ["images_per_s", "detections"]
    ]
    main = main.rename(
        columns={f"{k}@{t}": f"{k} IoU≥{t}" for t in thresholds for k in ("precision", "recall")}
        | {"images_per_s": "images/s"}
    )
    per_class = table[["detector"] + [f"recall_{c}@{t}" for t in thresholds for c in classes]]
    per_class = per_class.rename(
        columns={f"recall_{c}@{t}": f"{c} ({counts[c]}) IoU≥{t}" for t in thresholds for c in classes}
    )
    return (
        main.to_markdown(index=False, floatfmt=".3f")
        + "\n\nRecall per ground-truth class:\n\n"
        + per_class.to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )


def _rotation_recall(cfg: DictConfig, detectors: list) -> pd.DataFrame:
    """Rows: angle; columns: detector; values: recall at the rotation IoU threshold."""
    root = instantiate(cfg.rotations.set)
    threshold = cfg.rotations.iou_threshold
    recall = {}
    for angle in cfg.rotations.set.angles:
        images = read_voc_folder(root / f"rot_{angle:02d}").images
        recall[angle] = {
            d.name: scores(run_detector(d, images, cfg.progress), images, [threshold])[f"recall@{threshold}"]
            for d in detectors
        }
    return pd.DataFrame.from_dict(recall, orient="index").rename_axis("angle (°)")


def _log_mlflow(
    cfg: DictConfig, table: pd.DataFrame, classes: list[str], report_dir: Path, files: list[str], name: str
) -> None:
    """The table as metrics `<detector>.<figure>`; per-class recalls under `recall_iou<t>/<index>_<slug>` of the
    sorted class list, with {metric name suffix: class name} in class_names.json. A store failure is a warning."""
    thresholds = list(cfg.iou_thresholds)
    per_class = {
        f"recall_{c}@{t}": key
        for t in thresholds
        for key, c in class_metric_names(classes, prefix=f"recall_iou{t}/").items()
    }
    names = {key: c for t in thresholds for key, c in class_metric_names(classes, prefix=f"recall_iou{t}/").items()}
    metrics = {
        f"{slug(row['detector']) or 'detector'}.{per_class.get(k) or k.replace('@', '_iou')}": v
        for row in table.to_dict("records")
        for k, v in row.items()
        if k != "detector"
    }
    log_tool_run(
        cfg,
        name,
        metrics=metrics,
        dicts={CLASS_NAMES_ARTIFACT: names},
        files=[report_dir / file for file in files],
        params={
            "voc": cfg.voc or "id_cards",
            "use": ",".join(cfg.use),
            "max_images": cfg.max_images,
            "iou_thresholds": ",".join(map(str, thresholds)),
        },
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="compare_face_detectors")
def main(cfg: DictConfig) -> None:
    with user_errors():
        compare_face_detectors(cfg)


if __name__ == "__main__":
    main()
