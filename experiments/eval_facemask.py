"""Evaluate a face-mask checkpoint on a VOC folder: `python experiments/eval_facemask.py voc=... [ckpt=...]`.

Every image of the folder is converted (clipping and reporting as for training) and validated by the model's own
validation step, so the figures are the same as `val/*` in training. Prints as its last line one JSON object
`{"map50", "map50_95", "ap50": {class: AP50 or null when the class has no box}, "images"}`, and writes it to `out`
with precision and recall (ultralytics': at the confidence of best mean F1), the box/cls/dfl `losses`, the
checkpoint, the folder and the conversion report; logs the numbers to MLflow (experiment `eval_facemask`; per-class AP50 as `ap50/<index>_<slug>`, the class names in
`class_names.json`). ultralytics' evaluation plots (PR, F1, P and R curves, the confusion matrix as counts and
normalised, the first three batches with ground truth and predictions; `facemask.plots`) go to
`plots/` beside `out` and to the run's artifacts under `plots/` (`plots=false`: none). The result is printed and
written whatever the tracking store does: an MLflow failure is a warning.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from core.checkpoints import tool_checkpoint
from core.errors import UserError
from core.metric_names import CLASS_NAMES_ARTIFACT, class_metric_names
from core.mlflow_store import log_tool_run
from experiments import log, user_errors
from facemask.detector import PLOTS_FOLDER
from facemask.evaluation import evaluate_folder, test_split_view
from facemask.inference import TASK_NAME, TRAINED_BY, load_detector


def evaluate(cfg: DictConfig) -> dict:
    if not cfg.voc:
        raise UserError("eval_facemask: pass voc=<folder with images/ and annotations/> (make eval-facemask VOC=...)")
    source = Path(cfg.voc).resolve()
    ckpt = tool_checkpoint(cfg, TASK_NAME, TRAINED_BY)
    module = load_detector(ckpt)
    voc = _split(cfg, source, list(module.names))
    out = Path(cfg.out)
    plots_dir = out.parent / PLOTS_FOLDER
    evaluation = evaluate_folder(
        module,
        voc,
        work_dir=cfg.work_dir,
        imgsz=int(cfg.imgsz or module.hparams.imgsz),
        batch_size=cfg.batch_size,
        unknown_classes=cfg.unknown_classes,
        root_dir=out.parent,
        plots_dir=plots_dir,
        plots=cfg.plots,
    )
    result = evaluation.result()
    if cfg.recall_by_size:
        result["recall_by_size"] = _recall_by_size(cfg, module, voc, evaluation.imgsz)
    if cfg.portraits:
        result["portraits"] = _portrait_recall(cfg, module, evaluation.imgsz)
    out.parent.mkdir(parents=True, exist_ok=True)
    extras = {key: result[key] for key in ("recall_by_size", "portraits") if key in result}
    out.write_text(json.dumps(evaluation.report(ckpt, voc) | extras, indent=2))
    names = class_metric_names(module.names, prefix="ap50/")
    run_id = log_tool_run(
        cfg,
        source.name if cfg.split is None else f"{source.name} ({cfg.split})",
        params={"voc": str(source), "split": str(cfg.split), "checkpoint": str(ckpt), "imgsz": evaluation.imgsz},
        metrics=evaluation.metrics(names)
        | {
            # MLflow's names take no '<' or '>': lt16, 16-32, …, ge128
            f"{table}/{label.replace('>=', 'ge').replace('<', 'lt')}": row["recall"]
            for table, rows in extras.items()
            for label, row in rows.items()
            if row["recall"] is not None
        },
        dicts={CLASS_NAMES_ARTIFACT: names},
        files=[out],
    )
    if run_id is not None and evaluation.plots:
        log_plots(cfg.paths.mlflow_uri, run_id, plots_dir)
    log.info(
        "evaluated %s on %s (%s, %d images) -> %s", ckpt, source, cfg.split or "every image", result["images"], out
    )
    print(json.dumps(result), flush=True)
    return result


def _split(cfg: DictConfig, voc: Path, names: list[str]) -> Path:
    """The folder to evaluate: `voc`, or with `split=test` the photos of it that training holds out
    (`facemask.evaluation.test_split_view`, at `test_fraction`). UserError for another split."""
    if cfg.split is None:
        return voc
    if cfg.split != "test":
        raise UserError(f"eval_facemask: split={cfg.split!r}: null (every image) or test (the held-out photos)")
    return test_split_view(voc, cfg.work_dir, names, float(cfg.test_fraction), cfg.unknown_classes)


def _recall_by_size(cfg: DictConfig, module, voc: Path, imgsz: int) -> dict:
    """`facemask.size_recall.recall_by_size` of the checkpoint as the monitor runs it (`yolo_detector`), printed as
    a table."""
    from facemask.monitor import yolo_detector
    from facemask.size_recall import recall_by_size

    rows = recall_by_size(voc, yolo_detector(module, imgsz, cfg.conf, 0.45), list(module.names), cfg.size_bins)
    _print_rows(rows, f"recall by face size (sqrt(w*h) px) at conf {cfg.conf}, IoU 0.5")
    return rows


def _portrait_recall(cfg: DictConfig, module, imgsz: int) -> dict:
    """`facemask.size_recall.size_recall` on the photos of `cfg.portraits` (every image under it): the truth is
    each photo's central face as `cfg.portrait_detector` finds it (dlib's HOG; LFW's convention names the face
    nearest the centre), unmasked; photos where it finds none are counted and left out. Matched at
    `cfg.portrait_iou`, printed as a table."""
    from hydra.utils import instantiate

    from core.images import IMAGE_SUFFIXES, read_rgb
    from facemask.monitor import yolo_detector
    from facemask.size_recall import size_recall
    from faces.descriptors import central_face

    folder = Path(cfg.portraits)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"portraits={folder}: no images in it (photos of unmasked people, e.g. ../shared/data/faces)")
    truth_detector = instantiate(cfg.portrait_detector)
    unmasked = list(module.names).index(cfg.portrait_class)
    skipped = []

    def samples():
        for file in files:
            rgb = read_rgb(file)
            face = central_face(truth_detector.detect(rgb), rgb.shape)
            if face is None:
                skipped.append(file.name)
                continue
            yield rgb, np.array([[face.left, face.top, face.right, face.bottom]], np.float64), np.array([unmasked])

    rows = size_recall(samples(), yolo_detector(module, imgsz, cfg.conf, 0.45), cfg.size_bins, cfg.portrait_iou)
    _print_rows(
        rows,
        f"recall on the central face of {len(files) - len(skipped)} portraits in {folder} (truth: "
        f"{type(truth_detector).__name__}; {len(skipped)} photo(s) without a face left out) at conf {cfg.conf}, "
        f"IoU {cfg.portrait_iou}; class: {cfg.portrait_class}",
    )
    return rows


def _print_rows(rows: dict, title: str) -> None:
    print(f"{title}: faces, found (any class), with its class; recall [95 % Wilson interval], class recall")
    for label, row in rows.items():
        share = (
            ""
            if row["recall"] is None
            else f"{row['recall']:.3f} [{row['recall_low']:.3f}, {row['recall_high']:.3f}] {row['class_recall']:.3f}"
        )
        print(f"  {label:>8} {row['faces']:>5} {row['found']:>5} {row['correct']:>5}  {share}")


def log_plots(tracking_uri: str, run_id: str, folder: Path) -> None:
    """Add the plots to the tool's finished run under `plots/` (`log_tool_run` logs files at the artifact root
    only); as there, a failing store is one warning and the result stands."""
    import mlflow

    try:
        mlflow.MlflowClient(tracking_uri).log_artifacts(run_id, str(folder), PLOTS_FOLDER)
    except Exception as exc:  # noqa: BLE001  (whatever the store raised: the plots are on disk)
        log.warning("MLflow did not take the plots in %s: %s: %s", folder, type(exc).__name__, exc)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval_facemask")
def main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


if __name__ == "__main__":
    main()
