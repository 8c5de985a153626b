"""`make report`: the paper's figures and tables, read back from the MLflow store, on one markdown page.

Each section takes the newest finished run of its experiment; a missing run is listed as "not run yet"
with the command that makes it, never an error. The notebooks call the same table and figure functions,
with the experiment lists of conf/report.yaml (`report_sections`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from omegaconf import OmegaConf

from core import figures
from core import metric_names as names
from core.metric_names import CLASS_NAMES_ARTIFACT
from core.offline import PROJECT_ROOT
from reporting import mlflow_runs

NOT_RUN = "not run yet"
PAGE = "README.md"
FIGURES = "figures"
# label → metric of the detector's last validation, in table order
YOLO_MAP_LABELS = (
    ("mAP50", names.MAP50),
    ("mAP50-95", names.MAP50_95),
    ("precision", names.PRECISION),
    ("recall", names.RECALL),
)


def report_sections(config: str | Path = PROJECT_ROOT / "conf" / "report.yaml") -> dict:
    """The experiments each section reads (conf/report.yaml `sections`), for notebooks that run without Hydra."""
    return OmegaConf.to_container(OmegaConf.load(config).sections)


def param(run: Run, key: str, default: str | None = None) -> str | None:
    """A run parameter by its dotted name (older runs flattened with '/')."""
    params = run.data.params
    return params.get(key, params.get(key.replace(".", "/"), default))


def run_label(run: Run | None) -> str:
    if run is None:
        return NOT_RUN
    started = datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
    return f"`{run.info.run_id[:8]}` {run.info.run_name} ({started})"


def latest_runs(client: mlflow.MlflowClient, experiments: Mapping[str, str] | list[str]) -> dict[str, Run | None]:
    """The newest finished run of each experiment (None where there is none)."""
    return {name: mlflow_runs.latest_run(client, name) for name in experiments}


def runs_table(applications: Mapping[str, Mapping[str, Run | None]], commands: Mapping[str, str]) -> pd.DataFrame:
    """Which experiment has a run, and the command that makes (or remakes) it."""
    rows = [
        {
            "application": app,
            "MLflow experiment": name,
            "newest finished run": run_label(run),
            "command": f"`{commands[name]}`",
        }
        for app, runs in applications.items()
        for name, run in runs.items()
    ]
    return pd.DataFrame(rows)


DCGAN_COLUMNS = [
    "experiment",
    "data",
    "epochs",
    "batch",
    "lr",
    "G layers",
    "width ×",
    "D loss std",
    "G loss std",
    "FID",
    "KID",
    "FID trustworthy",
    "run",
]


def dcgan_table(runs: Mapping[str, Run | None], epochs: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Per DCGAN experiment: the settings that differ, the loss-fluctuation statistic and the sample quality."""
    rows = []
    for name, run in runs.items():
        if run is None:
            rows.append({"experiment": name, "run": NOT_RUN})
            continue
        metrics = run.data.metrics
        rows.append(
            {
                "experiment": name,
                "data": Path(param(run, "data.root", "?")).parent.name,
                "epochs": (epochs or {}).get(name, int(metrics.get(names.EPOCH, -1)) + 1),
                "batch": param(run, "data.batch_size"),
                "lr": param(run, "model.lr"),
                "G layers": param(run, "model.generator.num_layers"),
                "width ×": param(run, "model.generator.width_multiplier"),
                "D loss std": metrics.get(names.gan_loss_std("d")),
                "G loss std": metrics.get(names.gan_loss_std("g")),
                "FID": metrics.get(names.FID),
                "KID": metrics.get(names.KID),
                "FID trustworthy": fid_trust(run),
                "run": run_label(run),
            }
        )
    return pd.DataFrame(rows).reindex(columns=DCGAN_COLUMNS)


def fid_trust(run: Run) -> str | None:
    """ "yes", or "no (N samples)" when the FID came from fewer samples than feature dimensions (the run's
    `quality.*` tags, see lightning_modules/sample_quality.py); None for a run from before the tags."""
    tags = run.data.tags
    if names.FID_TRUSTWORTHY_TAG not in tags:
        return None
    return (
        "yes" if tags[names.FID_TRUSTWORTHY_TAG] == "true" else f"no ({tags.get(names.REAL_SAMPLES_TAG, '?')} samples)"
    )


def paper_claims_table(runs: Mapping[str, Run | None]) -> pd.DataFrame:
    """The paper's DCGAN claims beside what the runs measured, each judged from the logged numbers."""

    def metric(name: str, key: str) -> float | None:
        run = runs.get(name)
        return None if run is None else run.data.metrics.get(key)

    def verdict(holds: bool | None) -> str:
        return "not run yet" if holds is None else ("holds" if holds else "does not hold")

    def compare(a: float | None, b: float | None) -> bool | None:
        return None if a is None or b is None else a < b

    e1, e2, e3 = "exp1_dcgan_fruits", "exp2_dcgan_hardhat", "exp3_dcgan_hardhat_tricks"
    g = {n: metric(n, names.gan_loss_std("g")) for n in (e1, e2, e3)}
    d = {n: metric(n, names.gan_loss_std("d")) for n in (e1, e2, e3)}
    fid = {n: metric(n, names.FID) for n in (e1, e2, e3)}
    fmt = lambda v: "—" if v is None else f"{v:.4g}"  # noqa: E731
    rows = [
        (
            "exp1: G loss stable, D loss fluctuating",
            f"G std {fmt(g[e1])}, D std {fmt(d[e1])}",
            verdict(compare(g[e1], d[e1])),
        ),
        (
            "exp2: the same net fails on complicated scenes (fluctuating losses, poor samples)",
            f"G std {fmt(g[e2])} vs exp1 {fmt(g[e1])}",
            verdict(compare(g[e1], g[e2])),
        ),
        (
            "exp3: the tricks stabilise training on complicated scenes",
            f"G std {fmt(g[e3])} vs exp2 {fmt(g[e2])}",
            verdict(compare(g[e3], g[e2])),
        ),
        (
            "exp3: better samples than exp2",
            f"FID {fmt(fid[e3])} vs exp2 {fmt(fid[e2])}",
            verdict(compare(fid[e3], fid[e2])),
        ),
    ]
    return pd.DataFrame(rows, columns=["the paper says", "measured here", "verdict"])


def epoch_series(
    client: mlflow.MlflowClient, run: Run, keys: Mapping[str, str]
) -> dict[str, tuple[list[int], list[float]]]:
    """Per-epoch metrics as (epoch, value) series named by `keys` (label → metric key); absent metrics are left out."""
    series = {}
    for label, key in keys.items():
        values = mlflow_runs.metric_history(client, run.info.run_id, key)["value"].tolist()
        if values:
            series[label] = (list(range(1, len(values) + 1)), values)
    return series


def yolo_curves(client: mlflow.MlflowClient, run: Run) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """The detector's validation mAP, and its training and validation loss terms, per epoch."""
    return {
        "map": epoch_series(client, run, dict(YOLO_MAP_LABELS)),
        # the train terms are logged per step and per epoch (Lightning's `_epoch` suffix), the val terms per epoch
        "loss": epoch_series(
            client,
            run,
            {
                f"{split} {term}": f"{prefix}{term}{suffix}"
                for split, prefix, suffix in (("train", names.TRAIN, names.EPOCH_SUFFIX), ("val", names.VAL, ""))
                for term in names.YOLO_LOSSES
            },
        ),
    }


def yolo_table(run: Run, class_names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The last validation: mAP50, mAP50-95, precision, recall, and AP50 per class in class order, each class
    under its own name from `class_names` (the run's class_names.json, {metric name: class name}); a metric that
    is not in it (a run without the file, or the older `val/ap50_<name>` names) shows its metric name."""
    metrics = run.data.metrics
    rows = [{"metric": label, "value": metrics.get(key)} for label, key in YOLO_MAP_LABELS]
    classes = dict(class_names or {})
    prefixes = (names.AP50_PREFIX, names.OLD_AP50_PREFIX)
    per_class = [key for key in classes if key in metrics]
    per_class += sorted(key for key in metrics if key.startswith(prefixes) and key not in classes)
    rows += [
        {
            "metric": f"AP50 {classes.get(key) or key.removeprefix(prefixes[0]).removeprefix(prefixes[1])}",
            "value": metrics[key],
        }
        for key in per_class
    ]
    return pd.DataFrame(rows)


def run_class_names(client: mlflow.MlflowClient, run: Run) -> dict[str, str]:
    """The run's {metric name: class name} (core.metric_names.CLASS_NAMES_ARTIFACT), {} when it has none."""
    return mlflow_runs.load_json(client, run.info.run_id, CLASS_NAMES_ARTIFACT) or {}


def yolo_comparison_table(client: mlflow.MlflowClient, runs: Mapping[str, Run | None]) -> pd.DataFrame:
    """Runs side by side (label → run): how each started, how long it trained, and its last validation."""
    rows = []
    for label, run in runs.items():
        if run is None:
            rows.append({"start": label, "run": NOT_RUN})
            continue
        start = mlflow_runs.load_json(client, run.info.run_id, names.PRETRAINED_ARTIFACT) or {}
        rows.append(
            {
                "start": label,
                "run": run_label(run),
                "epochs": len(mlflow_runs.metric_history(client, run.info.run_id, names.MAP50)),
                "tensors from the checkpoint": f"{start.get('transferred_tensors', '?')} of {start.get('model_tensors', '?')}",
                **yolo_table(run, run_class_names(client, run)).set_index("metric")["value"].to_dict(),
            }
        )
    return pd.DataFrame(rows)


def face_accuracy_table(run: Run) -> pd.DataFrame:
    """The last epoch's train and validation accuracy and loss."""
    metrics = run.data.metrics
    return pd.DataFrame(
        [
            {
                "epochs": int(metrics.get(names.EPOCH, -1)) + 1,
                "train accuracy": metrics.get(names.TRAIN_ACC),
                "validation accuracy": metrics.get(names.VAL_ACC),
                "train loss": metrics.get(names.TRAIN_LOSS),
                "validation loss": metrics.get(names.VAL_LOSS),
            }
        ]
    )


def face_class_table(client: mlflow.MlflowClient, run: Run) -> pd.DataFrame:
    """Per identity: validation precision, recall and image count (the run's per_class.json)."""
    per_class = mlflow_runs.load_json(client, run.info.run_id, names.PER_CLASS_ARTIFACT) or {}
    return pd.DataFrame([{"identity": name, **values} for name, values in per_class.items()])


def sweep_results(client: mlflow.MlflowClient, experiment: str) -> tuple[str | None, pd.DataFrame]:
    """The metric a sweep optimised (its runs' `optimized_metric`) and the newest sweep's runs (sweep_table)."""
    newest = mlflow_runs.latest_run(client, experiment)
    metric = param(newest, "optimized_metric") if newest else None
    return metric, mlflow_runs.sweep_table(experiment, metric) if metric else pd.DataFrame()


APPLICATIONS = {"face-mask detection": "yolo", "face recognition": "faces", "face detection": "face_detectors"}


def overview(client: mlflow.MlflowClient, sections: Mapping) -> tuple[dict[str, dict[str, Run | None]], pd.DataFrame]:
    """The newest run of every experiment the report reads, by application, and the table of them."""
    runs = {"DCGAN": latest_runs(client, sections["dcgan"])}
    commands = dict(sections["dcgan"])
    for application, key in APPLICATIONS.items():
        experiment = sections[key]["experiment"]
        runs[application] = latest_runs(client, [experiment])
        commands[experiment] = sections[key]["command"]
    return runs, runs_table(runs, commands)


def markdown(table: pd.DataFrame) -> str:
    """A GitHub markdown table; missing cells stay empty."""
    return table.astype(object).where(table.notna(), None).to_markdown(index=False, floatfmt=".4g", missingval="")


class ReportWriter:
    """Collects markdown and writes figures next to it (reports/figures/, emptied first so nothing stale stays)."""

    def __init__(self, client: mlflow.MlflowClient, out_dir: str | Path) -> None:
        self.client = client
        self.out_dir = Path(out_dir)
        self.fig_dir = self.out_dir / FIGURES
        shutil.rmtree(self.fig_dir, ignore_errors=True)
        self.fig_dir.mkdir(parents=True)
        self.lines: list[str] = []

    def add(self, *paragraphs: str) -> None:
        for paragraph in paragraphs:
            self.lines += [paragraph, ""]

    def figure(self, fig, name: str, alt: str) -> None:
        fig.savefig(self.fig_dir / name, bbox_inches="tight")
        plt.close(fig)
        self.add(f"![{alt}]({FIGURES}/{name})")

    def artifact_image(self, run: Run, artifact: str, name: str, alt: str) -> bool:
        """Copy a logged image into the report; False when the run has no such artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow_runs.download(self.client, run.info.run_id, artifact, tmp)
            if path is None:
                return False
            shutil.copyfile(path, self.fig_dir / name)
        self.add(f"![{alt}]({FIGURES}/{name})")
        return True

    def newest_artifact_image(self, run: Run, folder: str, name: str, alt: str) -> str | None:
        """The newest image of an artifact folder into the report; its artifact path, or None."""
        path = mlflow_runs.newest_artifact(self.client, run.info.run_id, folder)
        return path if path and self.artifact_image(run, path, name, alt) else None

    def write(self) -> Path:
        page = self.out_dir / PAGE
        page.write_text("\n".join(self.lines).rstrip() + "\n")
        return page


def dcgan_section(report: ReportWriter, runs: Mapping[str, Run | None], commands: Mapping[str, str]) -> None:
    report.add("## DCGAN: the three experiments")
    histories = {}
    for name, run in runs.items():
        report.add(f"### {name}")
        if run is None:
            report.add(f"{NOT_RUN}: `{commands[name]}`")
            continue
        report.add(f"Run {run_label(run)}.")
        shown = report.newest_artifact_image(
            run, names.SAMPLES_FOLDER, f"{name}_samples.png", f"{name}: samples of the last epoch"
        )
        if shown:
            report.add(f"Final sample grid ({Path(shown).stem.replace('_', ' ')}): the 32 fixed noise vectors.")
        history = mlflow_runs.gan_history(report.client, run.info.run_id)
        if history["g_loss_epoch"]:
            histories[name] = history
            window = int(param(run, "model.fluctuation_window", "10"))
            report.figure(
                figures.gan_loss_curves(history, f"D and G loss per epoch ({name})", window),
                f"{name}_losses.png",
                f"{name}: D and G loss per epoch",
            )
    report.add("### The three experiments compared")
    if histories:
        report.figure(
            figures.gan_loss_comparison(histories),
            "dcgan_loss_comparison.png",
            "D and G losses of the experiments side by side",
        )
    fid_series = {
        name: curve
        for name, run in runs.items()
        if run is not None
        for curve in epoch_series(report.client, run, {name: names.FID}).values()
    }
    if fid_series:
        report.figure(
            figures.metric_curves(
                fid_series, "FID per epoch (random-feature network)", "epoch", "FID (lower is better)"
            ),
            "dcgan_fid.png",
            "FID per epoch of each experiment",
        )
    report.add(
        "### The paper's claims beside these runs",
        "Judged from the logged numbers of the runs above (their data and sizes are in the table below); "
        "short CPU runs of a few epochs say little about a 200–1000-epoch claim.",
        markdown(paper_claims_table(runs)),
    )
    report.add(
        "Loss fluctuation: the standard deviation of the epoch-mean loss over the last `model.fluctuation_window` "
        "epochs (the paper's stability argument). FID/KID: on a fixed random-feature network (no Inception weights "
        'offline), comparable between runs of this project only; lower is better. "FID trustworthy: no": the FID came '
        "from fewer samples than its 256 feature dimensions (a small data set), so it is biased high; KID then uses "
        "subsets as large as the data allows.",
        markdown(dcgan_table(runs, {name: len(h["g_loss_epoch"]) for name, h in histories.items()})),
    )


def sweep_section(report: ReportWriter, command: str) -> None:
    report.add("## Sweeps: batch size × learning rate")
    experiments = mlflow_runs.sweep_experiments(report.client)
    if not experiments:
        report.add(f"{NOT_RUN}: `{command}`")
    for experiment in experiments:
        metric, table = sweep_results(report.client, experiment)
        report.add(f"### {experiment}")
        if table.empty:
            report.add(f"{NOT_RUN}: no finished run of `{experiment}` logged its `optimized_metric`.")
            continue
        fig = figures.sweep_heatmap(table, metric, title=f"{metric} over the sweep ({experiment})")
        report.figure(fig, f"{experiment}_heatmap.png", f"{metric} by batch size and learning rate")
        report.add(
            f"The newest sweep's {len(table)} finished runs (tag `sweep`):",
            markdown(table.assign(run_id=table.run_id.str[:8])),
        )


def yolo_section(
    report: ReportWriter, run: Run | None, experiment: str, command: str, compare: Mapping[str, Mapping[str, str]]
) -> None:
    report.add("## Face-mask detection (YOLO)")
    if run is None:
        report.add(f"{NOT_RUN}: `{command}` (MLflow experiment `{experiment}`)")
        return
    yolo_run_section(report, run, experiment)
    yolo_compare_section(report, experiment, compare)


def yolo_compare_section(report: ReportWriter, experiment: str, compare: Mapping[str, Mapping[str, str]]) -> None:
    """The newest run of each `compare` variant (label → {filter, command}), side by side."""
    runs = {
        label: mlflow_runs.latest_run(report.client, experiment, variant["filter"])
        for label, variant in compare.items()
    }
    report.add(
        "### Real face-mask subset: COCO-pretrained start vs from scratch",
        "The newest finished run of each start on `data=facemask_real` (the same deterministic val split); AP50 per "
        "class and mAP at the last validation.",
        markdown(yolo_comparison_table(report.client, runs)),
    )
    missing = [f"{label}: `{compare[label]['command']}`" for label, run in runs.items() if run is None]
    if missing:
        report.add(f"{NOT_RUN}: " + "; ".join(missing))
    series = {
        f"{label} {name}": curve
        for label, run in runs.items()
        if run is not None
        for name, curve in epoch_series(report.client, run, dict(YOLO_MAP_LABELS[:2])).items()
    }
    if series:
        report.figure(
            figures.metric_curves(series, "Real face-mask val mAP per epoch, by start", "epoch", "mAP (fraction)"),
            "yolo_real_pretrained_vs_scratch.png",
            "val mAP per epoch, COCO-pretrained vs from scratch",
        )


def yolo_run_section(report: ReportWriter, run: Run, experiment: str) -> None:
    report.add(
        f"Newest run {run_label(run)}, architecture `{param(run, 'model.arch', '?')}`, input {param(run, 'model.imgsz', '?')} px."
    )
    curves = yolo_curves(report.client, run)
    if curves["map"]:
        report.figure(
            figures.metric_curves(
                curves["map"],
                f"Validation detection metrics ({experiment})",
                "epoch",
                "value (fraction, IoU 0.5 / 0.5–0.95)",
            ),
            "yolo_map.png",
            "validation mAP per epoch",
        )
    if curves["loss"]:
        report.figure(
            figures.metric_curves(
                curves["loss"], f"Loss terms per epoch ({experiment})", "epoch", "loss (ultralytics' units, per image)"
            ),
            "yolo_losses.png",
            "training and validation losses per epoch",
        )
    shown = report.newest_artifact_image(
        run, names.PREDICTIONS_FOLDER, "yolo_predictions.png", "validation predictions"
    )
    if shown:
        report.add(f"Predictions on validation images ({Path(shown).stem.replace('_', ' ')}).")
    report.add(markdown(yolo_table(run, run_class_names(report.client, run))))


def faces_section(report: ReportWriter, run: Run | None, experiment: str, command: str) -> None:
    report.add("## Face recognition (VGG16 transfer learning)")
    if run is None:
        report.add(f"{NOT_RUN}: `{command}` (MLflow experiment `{experiment}`)")
        return
    report.add(
        f"Run {run_label(run)}, backbone `{param(run, 'model.backbone', '?')}`, input {param(run, 'model.image_size', '?')} px."
    )
    accuracy = epoch_series(
        report.client, run, {"train accuracy": names.TRAIN_ACC, "validation accuracy": names.VAL_ACC}
    )
    if accuracy:
        report.figure(
            figures.metric_curves(
                accuracy, f"Accuracy per epoch ({experiment})", "epoch", "accuracy (fraction of faces)"
            ),
            "faces_accuracy.png",
            "accuracy per epoch",
        )
    report.add(
        markdown(face_accuracy_table(run)),
        f"Data: `{param(run, 'data.root', '?')}`. The paper (3 people, ~100 webcam crops each, VGG16 with "
        "ImageNet weights, 3 epochs) reported 98.39 % train and 50.97 % validation accuracy.",
    )
    report.artifact_image(
        run, names.CONFUSION_MATRIX_ARTIFACT, "faces_confusion_matrix.png", "validation confusion matrix"
    )
    report.add("Per identity, on the validation faces:", markdown(face_class_table(report.client, run)))


def face_detector_results(client: mlflow.MlflowClient, run: Run) -> tuple[list[str], dict[str, np.ndarray]]:
    """What compare_face_detectors logged at its run's top level: its markdown tables and its figures."""
    texts, images = [], {}
    for artifact in client.list_artifacts(run.info.run_id):
        if artifact.path.endswith(".md"):
            with tempfile.TemporaryDirectory() as tmp:
                texts.append(mlflow_runs.download(client, run.info.run_id, artifact.path, tmp).read_text())
        elif artifact.path.endswith(".png"):
            images[artifact.path] = mlflow_runs.load_image(client, run.info.run_id, artifact.path)
    return texts, images


def face_detectors_section(report: ReportWriter, run: Run | None, experiment: str, command: str) -> None:
    report.add("## Face detectors compared")
    if run is None:
        report.add(f"{NOT_RUN}: `{command}` (MLflow experiment `{experiment}`)")
        return
    report.add(f"Run {run_label(run)} on `{param(run, 'voc', '?')}`.")
    texts, images = face_detector_results(report.client, run)
    for text in texts:  # its headings one level down, under this section's
        report.add("\n".join(f"#{line}" if line.startswith("#") else line for line in text.splitlines()))
    for path in images:
        report.artifact_image(run, path, f"face_detectors_{Path(path).name}", Path(path).stem)


def build_report(tracking_uri: str, out_dir: str | Path, **sections) -> Path:
    """Write `out_dir`/README.md and its figures from the runs `sections` names (conf/report.yaml); return the page."""
    client = mlflow_runs.connect(tracking_uri)
    report = ReportWriter(client, out_dir)
    runs, table = overview(client, sections)
    report.add(
        "# ml-playground report",
        f"Generated by `make report` from the MLflow store `{tracking_uri}`. Every figure is redrawn from the "
        "newest finished run of its experiment; `make mlflow-ui` shows every run.",
        "## Runs",
        markdown(table),
    )
    dcgan_section(report, runs["DCGAN"], sections["dcgan"])
    sweep_section(report, sections["sweep_command"])
    for application, key, section in (
        ("face-mask detection", "yolo", yolo_section),
        ("face recognition", "faces", faces_section),
        ("face detection", "face_detectors", face_detectors_section),
    ):
        section(report, runs[application][sections[key]["experiment"]], **sections[key])
    return report.write()
