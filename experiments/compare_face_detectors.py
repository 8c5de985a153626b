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

import hydra
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from core import figures
from core.errors import UserError
from core.metric_names import CLASS_NAMES_ARTIFACT, class_metric_names, slug
from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from faces.evaluation import (
    LFW_CENTRE_IOU,
    DetectorRun,
    best_f1,
    lfw_centre_faces,
    read_voc_folder,
    run_detector,
    score_sweep,
    scores,
)


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
    table = pd.DataFrame(
        [
            {"detector": d.name, **scores(runs[name].at_threshold(d.score_threshold), images, thresholds)}
            for name, d in zip(cfg.use, detectors)
        ]
    )

    name = cfg.name or voc.name
    stem = slug(name) or "faces"  # file and artifact names: the folder's name may hold any character
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    title = f"Face detectors on {name} ({len(images)} images, {int(table['faces'].iloc[0])} faces)"
    notes = _data_notes(labelled)
    sections = [f"## {title}\n", *([notes + "\n"] if notes else []), _markdown(table, thresholds, counts)]
    extra_files: list[str] = []
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
    sweep_metrics: dict[str, float] = {}
    if cfg.score_sweep.enabled:
        sets = {Path(voc).name: (images, runs, cfg.score_sweep.iou_threshold)}
        if cfg.lfw:
            lfw_images = lfw_centre_faces(cfg.lfw, cfg.lfw_per_person)
            sets[f"LFW ({Path(cfg.lfw).name})"] = (lfw_images, _runs(cfg, lfw_images), LFW_CENTRE_IOU)
        sweep = _score_sweeps(cfg, detectors, sets)
        sections.append(_sweep_markdown(sweep, detectors, sets))
        pd.DataFrame([{"set": s, "detector": d, **row} for (s, d), rows in sweep.items() for row in rows]).to_csv(
            report_dir / f"{stem}_score_sweep.csv", index=False
        )
        figure_files[f"{stem}_score_sweep.png"] = figures.metric_curves(
            {
                f"{d} {kind} ({s.split(' ')[0]})": ([r["threshold"] for r in rows], [r[kind] for r in rows])
                for (s, d), rows in sweep.items()
                for kind in ("precision", "recall")
            },
            "Precision and recall against the score threshold (own scale per detector)",
            "score threshold",
            "fraction",
        )
        extra_files.append(f"{stem}_score_sweep.csv")
        for (s, d), rows in sweep.items():
            best = best_f1(rows)
            key = f"{slug(d) or 'detector'}.{slug(s.split(' ')[0]) or 'set'}"
            sweep_metrics |= {f"{key}.best_f1_threshold": best["threshold"], f"{key}.best_f1": best["f1"]}
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
    count = int(round((grid.high - grid.low) / grid.step)) + 1
    return [round(grid.low + k * grid.step, 6) for k in range(count)]


def _score_sweeps(cfg: DictConfig, detectors: list, sets: dict) -> dict[tuple[str, str], list[dict[str, float]]]:
    """{(set, detector): score_sweep rows} over the configured grid plus the detector's configured threshold."""
    sweep = {}
    for set_name, (images, runs, iou) in sets.items():
        for name, detector in zip(cfg.use, detectors):
            grid = sorted(set(_sweep_thresholds(cfg, name)) | {float(detector.score_threshold)})
            grid = [t for t in grid if t > float("-inf")]
            sweep[set_name, detector.name] = score_sweep(runs[name], images, grid, iou)
    return sweep


def _sweep_markdown(sweep: dict, detectors: list, sets: dict) -> str:
    """Per set and detector: precision, recall and F1 at the configured threshold and at the best-F1 one."""
    rows = []
    for (set_name, name), sweep_rows in sweep.items():
        detector = next(d for d in detectors if d.name == name)
        configured = next((r for r in sweep_rows if r["threshold"] == float(detector.score_threshold)), sweep_rows[0])
        best = best_f1(sweep_rows)
        rows.append(
            {
                "set": set_name,
                "detector": name,
                "configured threshold": configured["threshold"],
                "P": configured["precision"],
                "R": configured["recall"],
                "F1": configured["f1"],
                "best-F1 threshold": best["threshold"],
                "P there": best["precision"],
                "R there": best["recall"],
                "best F1": best["f1"],
            }
        )
    ious = ", ".join(f"{s}: IoU ≥ {iou}" for s, (_, _, iou) in sets.items())
    return (
        f"\n### Precision (P), recall (R) and F1 against the score threshold ({ious})\n\n"
        "Each detector's own score (HOG: SVM margin, MMOD: CNN confidence, Haar: level weight, YuNet: face score); "
        "on LFW the face to find is the photo's central box and any other detection counts as false.\n\n"
        + pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )


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
