"""Compare face detectors: `python experiments/compare_face_detectors.py voc=<folder> [lfw=<folder>] use=[hog,yunet]`.

Precision and recall at each IoU threshold, recall per class and images/s on a labelled VOC folder, recall
against in-plane rotation on generated ID cards, and precision, recall and F1 against each detector's score
threshold on the VOC folder and on LFW photos (`lfw`, the named face in the centre: `faces.evaluation`), with the
threshold of the best F1; written as markdown, CSV and plots to `report_dir`, printed, and logged to MLflow
(experiment `compare_face_detectors`; per-class recall as `<detector>.recall_iou<t>/<index>_<slug>`, the class
names in `class_names.json`; the sweep's best as `<detector>.<set>.best_f1_threshold` and `.best_f1`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from core import figures
from core.errors import UserError
from core.metric_names import CLASS_NAMES_ARTIFACT, slug
from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from faces.evaluation import (
    LFW_CENTRE_IOU,
    DetectorRun,
    comparison_markdown,
    comparison_metrics,
    comparison_table,
    data_notes,
    lfw_centre_faces,
    read_voc_folder,
    run_detector,
    score_sweep,
    scores,
    sweep_best_metrics,
    sweep_curves,
    sweep_frame,
    sweep_markdown,
    threshold_grid,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    runs = _runs(cfg, images)
    table = comparison_table(detectors, [runs[name] for name in cfg.use], images, thresholds)

    name = cfg.name or voc.name
    stem = slug(name) or "faces"  # file and artifact names: the folder's name may hold any character
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    title = f"Face detectors on {name} ({len(images)} images, {int(table['faces'].iloc[0])} faces)"
    notes = data_notes(labelled)
    sections = [f"## {title}\n", *([notes + "\n"] if notes else []), comparison_markdown(table, thresholds, counts)]
    extra_files: list[str] = []
    figure_files = {
        f"{stem}.png": figures.face_detector_comparison(table.to_dict("records"), thresholds, classes, title)
    }
    if cfg.rotations.enabled:
        _rotation_section(cfg, detectors, stem, sections, figure_files)
    sweep_metrics: dict[str, float] = {}
    if cfg.score_sweep.enabled:
        figure_files[f"{stem}_score_sweep.png"], sweep_metrics = _sweep_section(
            cfg, detectors, Path(voc).name, images, runs, report_dir / f"{stem}_score_sweep.csv", sections
        )
        extra_files.append(f"{stem}_score_sweep.csv")
    markdown = "\n".join(sections)
    (report_dir / f"{stem}.md").write_text(markdown)
    for file, figure in figure_files.items():
        figure.savefig(report_dir / file)
    print(markdown)
    _log_mlflow(cfg, table, classes, report_dir, [f"{stem}.md", *figure_files, *extra_files], name, sweep_metrics)
    log.info("report written to %s", report_dir / f"{stem}.md")
    return table


def _runs(cfg: DictConfig, images: list) -> dict[str, DetectorRun]:
    """One run of each detector of `cfg.use` over `images`: at the lowest threshold of its score sweep (or its
    configured one, if lower) when the sweep is on, so that every threshold's detections are a subset of it
    (`DetectorRun.at_threshold`); else at its configured threshold. images/s is that run's."""
    runs = {}
    for name in cfg.use:
        options = {}
        if cfg.score_sweep.enabled:
            configured = cfg.detectors[name].get("score_threshold", float("-inf"))
            options["score_threshold"] = min(configured, min(_sweep_thresholds(cfg, name)))
        runs[name] = run_detector(instantiate(cfg.detectors[name], **options), images, cfg.progress)
    return runs


def _sweep_thresholds(cfg: DictConfig, name: str) -> list[float]:
    """The score thresholds swept for detector `name`: `low` to `high` inclusive by `step`."""
    grid = cfg.score_sweep.thresholds.get(name)
    if grid is None:
        raise UserError(f"score_sweep.thresholds.{name}: no threshold grid for detector {name} (low, high, step)")
    return threshold_grid(grid.low, grid.high, grid.step)


def _score_sweeps(cfg: DictConfig, detectors: list, sets: dict) -> dict[tuple[str, str], list[dict[str, float]]]:
    """{(set, detector): score_sweep rows} over the configured grid plus the detector's configured threshold."""
    sweep = {}
    for set_name, (images, runs, iou) in sets.items():
        for name, detector in zip(cfg.use, detectors):
            grid = sorted(set(_sweep_thresholds(cfg, name)) | {float(detector.score_threshold)})
            grid = [t for t in grid if t > float("-inf")]
            sweep[set_name, detector.name] = score_sweep(runs[name], images, grid, iou)
    return sweep


def _sweep_section(
    cfg: DictConfig, detectors: list, voc_name: str, images: list, runs: dict, csv: Path, sections: list[str]
) -> tuple[Figure, dict[str, float]]:
    """The score sweep on the VOC folder and, with `cfg.lfw`, on LFW: its markdown appended to `sections`, its rows
    written to `csv`; returns (its figure, its best-F1 metrics)."""
    sets = {voc_name: (images, runs, cfg.score_sweep.iou_threshold)}
    if cfg.lfw:
        lfw_images = lfw_centre_faces(cfg.lfw, cfg.lfw_per_person)
        sets[f"LFW ({Path(cfg.lfw).name})"] = (lfw_images, _runs(cfg, lfw_images), LFW_CENTRE_IOU)
    sweep = _score_sweeps(cfg, detectors, sets)
    sections.append(sweep_markdown(sweep, detectors, {s: iou for s, (_, _, iou) in sets.items()}))
    sweep_frame(sweep).to_csv(csv, index=False)
    figure = figures.metric_curves(
        sweep_curves(sweep),
        "Precision and recall against the score threshold (own scale per detector)",
        "score threshold",
        "fraction",
    )
    return figure, sweep_best_metrics(sweep)


def _rotation_section(cfg: DictConfig, detectors: list, stem: str, sections: list[str], figure_files: dict) -> None:
    """Recall against in-plane rotation: its markdown appended to `sections`, its figure added to `figure_files`."""
    rotation = _rotation_recall(cfg, detectors)
    sections += [
        f"\n### Recall (IoU ≥ {cfg.rotations.iou_threshold}) against in-plane rotation, generated ID cards "
        f"({cfg.rotations.set.cards} per angle)\n",
        rotation.to_markdown(floatfmt=".2f") + "\n",
    ]
    figure_files[f"{stem}_rotation.png"] = figures.recall_vs_rotation(
        list(rotation.index), rotation.to_dict("list"), cfg.rotations.iou_threshold
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
    cfg: DictConfig,
    table: pd.DataFrame,
    classes: list[str],
    report_dir: Path,
    files: list[str],
    name: str,
    extra_metrics: dict[str, float],
) -> None:
    """The table as metrics `<detector>.<figure>`; per-class recalls under `recall_iou<t>/<index>_<slug>` of the
    sorted class list, with {metric name suffix: class name} in class_names.json. A store failure is a warning."""
    thresholds = list(cfg.iou_thresholds)
    metrics, names = comparison_metrics(table, classes, thresholds)
    log_tool_run(
        cfg,
        name,
        metrics=metrics | extra_metrics,
        dicts={CLASS_NAMES_ARTIFACT: names},
        files=[report_dir / file for file in files],
        params={
            "voc": cfg.voc or "id_cards",
            "lfw": cfg.lfw or "",
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
