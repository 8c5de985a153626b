"""`make report`: the paper's figures and tables, read back from the MLflow store, on one markdown page.

Run selection, stated on the page as SELECTION_RULE: each training experiment is shown once per
configuration (data real or synthetic × model start × trainer profile), by the best finished run of that
configuration on the experiment's selection metric (`best/<selection.metric>`, max or min as `selection.mode`), real-data
configurations first. Tool runs (face detectors, LFW, open set) show their newest finished run. Demo-scale runs
(a profile cap bit) are marked, and the paper's claims are not judged from them. A missing run is listed
as "not run yet" with the command that makes it, never an error. Paths are printed relative to the repository.
The notebooks call the same table and figure functions, with the experiment lists of conf/report.yaml
(`report_sections`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime
from fractions import Fraction
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
from reporting.mlflow_runs import Configuration, demo_scale, repo_relative

NOT_RUN = "not run yet"
SELECTION_RULE = (
    "Which runs are shown: for each experiment, one run per configuration (data: real or synthetic × model start: "
    "pretrained or from scratch, where the experiment chooses × trainer profile, the run tag `profile`), namely the "
    "best FINISHED run of that configuration by the experiment's selection metric (`best/<selection.metric>`, the value "
    "its best.ckpt holds; highest or lowest as `selection.mode` says; runs without it rank last, ties go to the "
    "newest). Real-data configurations come first, synthetic ones after; then full-scale before demo-scale, then "
    "the better run first. Tool runs (face detectors, LFW, open set) "
    "show their newest finished run. A run is demo-scale when its profile capped what the experiment asks (the run "
    "tag `profile.caps`, e.g. fewer epochs or a narrower network) or a debug overlay made it."
)
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


param = mlflow_runs.run_param


def run_label(run: Run | None) -> str:
    """ "`<run id[:8]>` <run name> (<start, local time>)", or NOT_RUN for None."""
    if run is None:
        return NOT_RUN
    started = datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
    return f"`{run.info.run_id[:8]}` {run.info.run_name} ({started})"


def scale_label(run: Run | None) -> str | None:
    """ "demo-scale (<caps>)" or "full" (the experiment's own settings); None for no run."""
    if run is None:
        return None
    caps = demo_scale(run)
    return "full" if caps is None else f"demo-scale ({caps})"


def latest_runs(client: mlflow.MlflowClient, experiments: Mapping[str, str] | list[str]) -> dict[str, Run | None]:
    """The newest finished run of each experiment (None where there is none): the rule for tool runs."""
    return {name: mlflow_runs.latest_run(client, name) for name in experiments}


def selected_runs(
    client: mlflow.MlflowClient, experiments: Mapping[str, str] | list[str]
) -> dict[str, dict[Configuration, Run]]:
    """Per training experiment, the best run of each configuration in the report's order (mlflow_runs.best_runs);
    {} for an experiment without a finished run."""
    return {name: mlflow_runs.best_runs(client, name) for name in experiments}


def headline_runs(selected: Mapping[str, Mapping[Configuration, Run]]) -> dict[str, Run | None]:
    """Per experiment, the run of its first configuration (real data and full scale before the others), or None:
    the run the cross-experiment comparisons and the paper's claims use."""
    return {name: next(iter(runs.values()), None) for name, runs in selected.items()}


def runs_table(
    applications: Mapping[str, Mapping[str, Mapping[Configuration, Run]]], commands: Mapping[str, str]
) -> pd.DataFrame:
    """One row per experiment and configuration: the run selected for it, its scale, and the command that makes
    (or remakes) the experiment's run; an experiment without a run is one row saying NOT_RUN."""
    rows = []
    for app, experiments in applications.items():
        for name, runs in experiments.items():
            base = {"application": app, "MLflow experiment": name}
            if not runs:
                rows.append({**base, "configuration": "", "selected run": NOT_RUN, "command": f"`{commands[name]}`"})
            for config, run in runs.items():
                rows.append(
                    {
                        **base,
                        "configuration": config.label,
                        "selected run": run_label(run),
                        "scale": scale_label(run) if config.data is not None else None,  # tools: no profile
                        "command": f"`{commands[name]}`",
                    }
                )
    return pd.DataFrame(rows).reindex(
        columns=["application", "MLflow experiment", "configuration", "selected run", "scale", "command"]
    )


DCGAN_COLUMNS = [
    "experiment",
    "configuration",
    "scale",
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
    "diversity",
    "FID trustworthy",
    "run",
]


def dcgan_table(
    selected: Mapping[str, Mapping[Configuration, Run]], epochs: Mapping[str, int] | None = None
) -> pd.DataFrame:
    """One row per DCGAN experiment and configuration (`selected_runs`): the settings that differ, the
    loss-fluctuation statistic and the sample quality. `epochs`: {run id: epochs trained} where known (the length
    of its loss history), else the last logged `epoch` + 1."""
    rows = []
    for name, runs in selected.items():
        if not runs:
            rows.append({"experiment": name, "run": NOT_RUN})
        for config, run in runs.items():
            metrics = run.data.metrics
            rows.append(
                {
                    "experiment": name,
                    "configuration": config.label,
                    "scale": scale_label(run),
                    "data": Path(param(run, "data.root", "?")).parent.name,
                    "epochs": (epochs or {}).get(run.info.run_id, int(metrics.get(names.EPOCH, -1)) + 1),
                    "batch": param(run, "data.batch_size"),
                    "lr": param(run, "model.lr"),
                    "G layers": param(run, "model.generator.num_layers"),
                    "width ×": param(run, "model.generator.width_multiplier"),
                    "D loss std": metrics.get(names.gan_loss_std("d")),
                    "G loss std": metrics.get(names.gan_loss_std("g")),
                    "FID": metrics.get(names.FID),
                    "KID": metrics.get(names.KID),
                    "diversity": metrics.get(names.DIVERSITY),
                    "FID trustworthy": fid_trust(run),
                    "run": run_label(run),
                }
            )
    return pd.DataFrame(rows).reindex(columns=DCGAN_COLUMNS)


def fid_trust(run: Run) -> str | None:
    """ "yes", or "no (N samples)" when the FID came from fewer samples than feature dimensions (the run's
    `quality.*` tags, see dcgan/quality.py); None for a run from before the tags."""
    tags = run.data.tags
    if names.FID_TRUSTWORTHY_TAG not in tags:
        return None
    return (
        "yes" if tags[names.FID_TRUSTWORTHY_TAG] == "true" else f"no ({tags.get(names.REAL_SAMPLES_TAG, '?')} samples)"
    )


def width_fraction(value: str | None) -> str:
    """A width multiplier as the fraction of the paper's width: "0.125" → "1/8", "1.0" → "full", None → "?"."""
    try:
        fraction = Fraction(float(value)).limit_denominator(1024)
    except (TypeError, ValueError):
        return "?"
    return "full" if fraction >= 1 else f"{fraction.numerator}/{fraction.denominator}"


def demo_scale_summary(run: Run) -> str:
    """ "<N> epochs at <w> width" of a DCGAN run: the epochs it was set to train (`trainer.max_epochs`, else the
    last logged epoch + 1) and its generator's width multiplier as a fraction of the paper's net."""
    epochs = param(run, "trainer.max_epochs")
    if epochs in (None, "None", "-1"):
        epochs = str(int(run.data.metrics.get(names.EPOCH, -1)) + 1)
    unit = "epoch" if epochs == "1" else "epochs"
    return f"{epochs} {unit} at {width_fraction(param(run, 'model.generator.width_multiplier'))} width"


def paper_claims_table(runs: Mapping[str, Run | None], paper_scale: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The paper's DCGAN claims beside what the runs measured (`runs`: experiment → run, see `headline_runs`).

    Each claim is judged from the logged numbers ("holds" / "does not hold": a smaller loss std or FID is the
    better side) only when every run it compares ran at the experiment's own settings; when one is demo-scale
    (`mlflow_runs.demo_scale`) the verdict is "not judged: demo-scale run (…)" with the commands of
    `paper_scale` (experiment → command of the paper-scale run, conf/report.yaml) that would judge it."""
    paper_scale = paper_scale or {}

    def metric(name: str, key: str) -> float | None:
        run = runs.get(name)
        return None if run is None else run.data.metrics.get(key)

    def verdict(compared: tuple[str, ...], holds: bool | None) -> str:
        if holds is None:
            return NOT_RUN
        demo = [name for name in compared if demo_scale(runs[name]) is not None]
        if not demo:
            return "holds" if holds else "does not hold"
        what = "; ".join(f"{name}: {demo_scale_summary(runs[name])}" for name in demo)
        commands = " and ".join(f"`{paper_scale[name]}`" for name in compared if name in paper_scale)
        return f"not judged: demo-scale run ({what})" + (f"; judge with {commands}" if commands else "")

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
            verdict((e1,), compare(g[e1], d[e1])),
        ),
        (
            "exp2: the same net fails on complicated scenes (fluctuating losses, poor samples)",
            f"G std {fmt(g[e2])} vs exp1 {fmt(g[e1])}",
            verdict((e1, e2), compare(g[e1], g[e2])),
        ),
        (
            "exp3: the tricks stabilise training on complicated scenes",
            f"G std {fmt(g[e3])} vs exp2 {fmt(g[e2])}",
            verdict((e2, e3), compare(g[e3], g[e2])),
        ),
        (
            "exp3: better samples than exp2",
            f"FID {fmt(fid[e3])} vs exp2 {fmt(fid[e2])}",
            verdict((e2, e3), compare(fid[e3], fid[e2])),
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


VALIDATION_COLUMN = "validation (best.ckpt's epoch)"  # the figure that chose the checkpoint
TEST_COLUMN = "test (best.ckpt, 95 % interval)"  # the held-out figure nothing selected on


def value_at_best_epoch(client: mlflow.MlflowClient | None, run: Run, key: str) -> float | None:
    """`key`'s value at the epoch of the run's best checkpoint (`best/epoch`, 0-based): entry `best/epoch` of its
    history in step order, as the experiments validate once per epoch (`trainer.check_val_every_n_epoch: 1`). The
    run's last value when there is no client, no best epoch or a shorter history; None when `key` was never logged."""
    last = run.data.metrics.get(key)
    best = run.data.metrics.get("best/epoch")
    if client is None or best is None or last is None:
        return last
    history = mlflow_runs.metric_history(client, run.info.run_id, key)
    return float(history.value.iloc[int(best)]) if int(best) < len(history) else last


def test_figure(run: Run, key: str, photos: bool = True) -> str | None:
    """The run's test figure `key` as "0.54 [0.41, 0.66] on 23 test photos" (its 95 % interval from
    `core.metric_names.interval_names`, the count from `test/images`); without an interval the value alone
    ("0.5"); None when the run has no such test figure. `photos`: name the count (else the value and interval only)."""
    metrics = run.data.metrics
    value = metrics.get(key)
    if value is None:
        return None
    low, high = (metrics.get(name) for name in names.interval_names(key))
    if low is None or high is None:
        return f"{value:.4g}"
    text = f"{value:.2f} [{low:.2f}, {high:.2f}]"
    count = metrics.get(names.TEST_IMAGES)
    return f"{text} on {int(count)} test photos" if photos and count is not None else text


def yolo_table(
    run: Run, class_names: Mapping[str, str] | None = None, client: mlflow.MlflowClient | None = None
) -> pd.DataFrame:
    """mAP50, mAP50-95, precision, recall, and AP50 per class in class order, each class under its own name from
    `class_names` (the run's class_names.json, {metric name: class name}); a metric that is not in it (a run
    without the file, or the older `val/ap50_<name>` names) shows its metric name. Columns: the validation figure
    at the epoch of best.ckpt (`value_at_best_epoch`; the last validation without `client`), which chose the
    checkpoint, and the test figure of best.ckpt (`test_figure`; mAP50 with its interval), which nothing chose."""
    metrics = run.data.metrics
    rows = [
        {
            "metric": label,
            VALIDATION_COLUMN: value_at_best_epoch(client, run, key),
            TEST_COLUMN: test_figure(run, names.TEST + key.removeprefix(names.VAL)),
        }
        for label, key in YOLO_MAP_LABELS
    ]
    classes = dict(class_names or {})
    prefixes = (names.AP50_PREFIX, names.OLD_AP50_PREFIX)
    per_class = [key for key in classes if key in metrics]
    per_class += sorted(key for key in metrics if key.startswith(prefixes) and key not in classes)
    rows += [
        {
            "metric": f"AP50 {classes.get(key) or key.removeprefix(prefixes[0]).removeprefix(prefixes[1])}",
            VALIDATION_COLUMN: value_at_best_epoch(client, run, key),
            TEST_COLUMN: test_figure(run, key.replace(names.AP50_PREFIX, names.TEST_AP50_PREFIX, 1))
            if key.startswith(names.AP50_PREFIX)
            else None,
        }
        for key in per_class
    ]
    table = pd.DataFrame(rows)
    return table if table[TEST_COLUMN].notna().any() else table.drop(columns=TEST_COLUMN)  # runs without a test split


def run_class_names(client: mlflow.MlflowClient, run: Run) -> dict[str, str]:
    """The run's {metric name: class name} (core.metric_names.CLASS_NAMES_ARTIFACT), {} when it has none."""
    return mlflow_runs.load_json(client, run.info.run_id, CLASS_NAMES_ARTIFACT) or {}


def yolo_comparison_table(client: mlflow.MlflowClient, runs: Mapping[str, Run | None]) -> pd.DataFrame:
    """Runs side by side (label → run): how each started, how long it trained, its validation at best.ckpt's epoch
    and its test mAP50 with interval (`yolo_table`, `test_figure`)."""
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
                **yolo_table(run, run_class_names(client, run), client)
                .set_index("metric")[VALIDATION_COLUMN]
                .to_dict(),
                "test mAP50": test_figure(run, names.TEST_MAP50),
            }
        )
    return pd.DataFrame(rows)


def face_accuracy_table(run: Run) -> pd.DataFrame:
    """The last epoch's train and validation accuracy and loss, the validation accuracy of best.ckpt (the figure
    that chose it, `best/val/acc`) and, when the run has a test split, best.ckpt's test accuracy with its
    interval (`test_figure`), which nothing chose."""
    metrics = run.data.metrics
    row = {
        "epochs": int(metrics.get(names.EPOCH, -1)) + 1,
        "train accuracy": metrics.get(names.TRAIN_ACC),
        "validation accuracy": metrics.get(names.VAL_ACC),
        "train loss": metrics.get(names.TRAIN_LOSS),
        "validation loss": metrics.get(names.VAL_LOSS),
    }
    if names.TEST_ACC in metrics:
        row["validation accuracy of best.ckpt"] = metrics.get(f"best/{names.VAL_ACC}")
        row[TEST_COLUMN] = test_figure(run, names.TEST_ACC)
    return pd.DataFrame([row])


def face_class_table(client: mlflow.MlflowClient, run: Run) -> pd.DataFrame:
    """Per identity: validation precision, recall and image count (the run's per_class.json)."""
    per_class = mlflow_runs.load_json(client, run.info.run_id, names.PER_CLASS_ARTIFACT) or {}
    return pd.DataFrame([{"identity": name, **values} for name, values in per_class.items()])


# The heat map's axis labels by key (conf/sweep_space/*: each sweep's rows and columns); another key is its own label
SWEEP_AXIS_LABELS = {
    "data.batch_size": "batch size",
    "model.lr": "learning rate",
    "model.lr0": "learning rate",
    "detector_imgsz": "input size",
    "model.dropout": "dropout",
}


def sweep_results(client: mlflow.MlflowClient, experiment: str) -> tuple[str | None, pd.DataFrame]:
    """The metric a sweep optimised (its runs' `optimized_metric`) and the newest sweep's runs (sweep_table)."""
    newest = mlflow_runs.latest_run(client, experiment)
    metric = param(newest, "optimized_metric") if newest else None
    return metric, mlflow_runs.sweep_table(experiment, metric) if metric else pd.DataFrame()


def sweep_figure(client: mlflow.MlflowClient, experiment: str, metric: str, table: pd.DataFrame):
    """The heat map of a sweep's `table` (sweep_results): its metric over its first two columns (the sweep's
    rows and columns), colour scale by the newest run's `selection.mode` (min: lower is better), and its caption."""
    rows, cols = table.columns[:2]
    newest = mlflow_runs.latest_run(client, experiment)
    lower = (param(newest, "selection.mode") if newest else None) != "max"
    row_label, col_label = (SWEEP_AXIS_LABELS.get(key, key) for key in (rows, cols))
    fig = figures.sweep_heatmap(
        table,
        metric,
        rows=rows,
        cols=cols,
        title=f"{metric} over the sweep ({experiment})",
        lower_is_better=lower,
        row_label=row_label,
        col_label=col_label,
    )
    return fig, f"{metric} by {row_label} and {col_label}"


APPLICATIONS = {"face-mask detection": "yolo", "face recognition": "faces"}  # training runs: best per configuration
TOOLS = {"face detection": "face_detectors", "LFW verification": "lfw", "open-set recognition": "open_set"}  # newest
TOOL_RUN = Configuration(None, "", "")  # a tool run's configuration: the label "newest finished run"
# open-set recognition (another entry logs it): its metrics, in table order, and its figure
OPEN_SET_METRICS = (
    ("identification accuracy", "open_set/identification_accuracy"),
    ("stranger rejection", "open_set/stranger_rejection"),
)
OPEN_SET_FIGURE = "figures/open_set.png"
OPEN_SET_SIZE_FIGURE = "figures/gallery_size.png"  # eval-openset: both rates against photos a person
# experiments/eval_lfw.py: its summary metrics, in table order, and its ROC figure
LFW_METRICS = (
    ("accuracy (k-fold thresholds)", "accuracy"),
    ("std over the folds", "std"),
    ("accuracy at the fixed tolerance", "accuracy_at_tolerance"),
    ("pairs", "pairs"),
    ("photos", "images"),
    ("photos without a detected face", "faces_not_found"),
)
LFW_FIGURE = "roc.png"


def tool_runs(client: mlflow.MlflowClient, experiment: str) -> dict[Configuration, Run]:
    """{TOOL_RUN: the newest finished run of `experiment`}, or {} when it has none."""
    run = mlflow_runs.latest_run(client, experiment)
    return {} if run is None else {TOOL_RUN: run}


def overview(
    client: mlflow.MlflowClient, sections: Mapping
) -> tuple[dict[str, dict[str, dict[Configuration, Run]]], pd.DataFrame]:
    """The runs the report shows, by application → experiment → configuration (`selected_runs` for trainings,
    `tool_runs` for tools), and the table of them (`runs_table`)."""
    runs = {"DCGAN": selected_runs(client, sections["dcgan"])}
    commands = dict(sections["dcgan"])
    for application, key in (*APPLICATIONS.items(), *TOOLS.items()):
        experiment = sections[key]["experiment"]
        runs[application] = (
            selected_runs(client, [experiment])
            if key in APPLICATIONS.values()
            else {experiment: tool_runs(client, experiment)}
        )
        commands[experiment] = sections[key]["command"]
    return runs, runs_table(runs, commands)


def metrics_table(run: Run, labels: tuple[tuple[str, str], ...]) -> pd.DataFrame:
    """The run's metrics `labels` ((label, metric key), …) as rows (metric, value); an absent metric is empty."""
    return pd.DataFrame([{"metric": label, "value": run.data.metrics.get(key)} for label, key in labels])


def yolo_compare_runs(
    selected: Mapping[Configuration, Run], compare: Mapping[str, Mapping[str, str]]
) -> dict[str, Run | None]:
    """Per `compare` label, the run of the first real-data configuration whose model start begins with the
    label's `start` ("pretrained" or "from scratch"), in `selected`'s order (full scale first); None if none."""
    return {
        label: next(
            (
                run
                for config, run in selected.items()
                if config.data == mlflow_runs.REAL and config.start.startswith(variant["start"])
            ),
            None,
        )
        for label, variant in compare.items()
    }


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
        """Copy a logged image into the report as `name` with the artifact's own suffix (a .jpg stays a .jpg); False
        when the run has no such artifact."""
        name = str(Path(name).with_suffix(Path(artifact).suffix or Path(name).suffix))
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


def configuration_heading(report: ReportWriter, level: str, name: str, config: Configuration, run: Run) -> None:
    """A heading per shown configuration, then the run, the mark of a run that did not learn (its monitored metric
    never moved: `mlflow_runs.learning_verdict`, with the reason the run recorded) and, for a demo-scale run, the
    mark saying so."""
    report.add(f"{level} {name}: {config.label}")
    verdict = mlflow_runs.learning_verdict(report.client, run)
    caps = demo_scale(run)
    marks = []
    if verdict:
        marks.append(f" **{verdict[0].upper()}{verdict[1:]}.**")
    if caps:
        marks.append(
            f" **Demo-scale run** ({caps}): "
            + ("a run of this size that learns" if verdict else "it")
            + " shows the pipeline works, not what the experiment achieves."
        )
    report.add(f"Run {run_label(run)}.{''.join(marks)}")


def dcgan_section(
    report: ReportWriter,
    selected: Mapping[str, Mapping[Configuration, Run]],
    commands: Mapping[str, str],
    paper_scale: Mapping[str, str] | None = None,
) -> None:
    report.add("## DCGAN: the three experiments")
    histories, epochs = {}, {}
    headline = headline_runs(selected)
    for name, runs in selected.items():
        if not runs:
            report.add(f"### {name}", f"{NOT_RUN}: `{commands[name]}`")
            continue
        for config, run in runs.items():
            configuration_heading(report, "###", name, config, run)
            prefix = f"{name}_{config.slug}"
            shown = report.newest_artifact_image(
                run,
                names.SAMPLES_FOLDER,
                f"{prefix}_samples.png",
                f"{name} ({config.label}): samples of the last epoch",
            )
            if shown:
                report.add(f"Final sample grid ({Path(shown).stem.replace('_', ' ')}): the 32 fixed noise vectors.")
            history = mlflow_runs.gan_history(report.client, run.info.run_id)
            if history["g_loss_epoch"]:
                epochs[run.info.run_id] = len(history["g_loss_epoch"])
                if run is headline[name]:
                    histories[name] = history
                window = int(param(run, "model.fluctuation_window", "10"))
                report.figure(
                    figures.gan_loss_curves(history, f"D and G loss per epoch ({name}, {config.label})", window),
                    f"{prefix}_losses.png",
                    f"{name} ({config.label}): D and G loss per epoch",
                )
    report.add(
        "### The three experiments compared",
        "Each experiment by its first configuration above (real data and full scale before the others).",
    )
    if histories:
        report.figure(
            figures.gan_loss_comparison(histories),
            "dcgan_loss_comparison.png",
            "D and G losses of the experiments side by side",
        )
    fid_series = {
        name: curve
        for name, run in headline.items()
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
        "Judged from the logged numbers of each experiment's first configuration (its data and sizes are in the "
        "table below), and only where every run compared ran at the experiment's own settings: the paper's claims "
        "are about 200–1000 epochs of full-width nets, which a demo-scale run cannot confirm or refute.",
        markdown(paper_claims_table(headline, paper_scale)),
    )
    report.add(
        "Loss fluctuation: the standard deviation of the epoch-mean loss over the last `model.fluctuation_window` "
        "epochs (the paper's stability argument). FID/KID: on a fixed random-feature network (no Inception weights "
        'offline), comparable between runs of this project only; lower is better. "FID trustworthy: no": the FID came '
        "from fewer samples than its 256 feature dimensions (a small data set), so it is biased high; KID then uses "
        "subsets as large as the data allows. Diversity: the samples' mean pairwise feature distance over the real "
        "images' (the diversity score of Mao et al., Mode Seeking GANs, CVPR 2019, on the same features); 1 is as "
        "varied as the data, and a low value beside a good KID means one image drawn for every z (mode collapse), "
        "which KID alone does not see.",
        markdown(dcgan_table(selected, epochs)),
    )


def sweep_section(report: ReportWriter, command: str) -> None:
    report.add("## Sweeps")
    experiments = mlflow_runs.sweep_experiments(report.client)
    if not experiments:
        report.add(f"{NOT_RUN}: `{command}`")
    for experiment in experiments:
        metric, table = sweep_results(report.client, experiment)
        report.add(f"### {experiment}")
        if table.empty:
            report.add(f"{NOT_RUN}: no finished run of `{experiment}` logged its `optimized_metric`.")
            continue
        fig, caption = sweep_figure(report.client, experiment, metric, table)
        report.figure(fig, f"{experiment}_heatmap.png", caption)
        report.add(
            f"The newest sweep's {len(table)} finished runs (one parent run; a cell holds the best of its runs, "
            "over the sweep's other axes):",
            markdown(table.assign(run_id=table.run_id.str[:8])),
        )


def yolo_section(
    report: ReportWriter,
    selected: Mapping[Configuration, Run],
    experiment: str,
    command: str,
    compare: Mapping[str, Mapping[str, str]],
) -> None:
    report.add("## Face-mask detection (YOLO)")
    if not selected:
        report.add(f"{NOT_RUN}: `{command}` (MLflow experiment `{experiment}`)")
        return
    for config, run in selected.items():
        configuration_heading(report, "###", experiment, config, run)
        yolo_run_section(report, run, experiment, config)
    yolo_compare_section(report, selected, compare)


def yolo_compare_section(
    report: ReportWriter, selected: Mapping[Configuration, Run], compare: Mapping[str, Mapping[str, str]]
) -> None:
    """The selected real-data run of each `compare` start (label → {start, command}, `yolo_compare_runs`), side by side."""
    runs = yolo_compare_runs(selected, compare)
    report.add(
        "### Real face-mask subset: COCO-pretrained start vs from scratch",
        "The selected run of each start on `data=facemask_real` (the same deterministic val and test splits); AP50 "
        "per class and mAP of validation at best.ckpt's epoch (the figures that chose it), and best.ckpt's test mAP50 "
        "with its 95 % bootstrap interval (photos nothing selected on).",
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


def yolo_run_section(report: ReportWriter, run: Run, experiment: str, config: Configuration) -> None:
    report.add(f"Architecture `{param(run, 'model.arch', '?')}`, input {param(run, 'model.imgsz', '?')} px.")
    curves = yolo_curves(report.client, run)
    if curves["map"]:
        report.figure(
            figures.metric_curves(
                curves["map"],
                f"Validation detection metrics ({experiment}, {config.label})",
                "epoch",
                "value (fraction, IoU 0.5 / 0.5–0.95)",
            ),
            f"yolo_{config.slug}_map.png",
            f"validation mAP per epoch ({config.label})",
        )
    if curves["loss"]:
        report.figure(
            figures.metric_curves(
                curves["loss"],
                f"Loss terms per epoch ({experiment}, {config.label})",
                "epoch",
                "loss (ultralytics' units, per image)",
            ),
            f"yolo_{config.slug}_losses.png",
            f"training and validation losses per epoch ({config.label})",
        )
    shown = report.newest_artifact_image(
        run, names.PREDICTIONS_FOLDER, f"yolo_{config.slug}_predictions.png", f"validation predictions ({config.label})"
    )
    if shown:
        report.add(f"Predictions on validation images ({Path(shown).stem.replace('_', ' ')}).")
    report.add(markdown(yolo_table(run, run_class_names(report.client, run), report.client)))


def faces_section(report: ReportWriter, selected: Mapping[Configuration, Run], experiment: str, command: str) -> None:
    report.add("## Face recognition (VGG16 transfer learning)")
    if not selected:
        report.add(f"{NOT_RUN}: `{command}` (MLflow experiment `{experiment}`)")
        return
    for config, run in selected.items():
        configuration_heading(report, "###", experiment, config, run)
        faces_run_section(report, run, experiment, config)
    report.add(
        "The paper (3 people, ~100 webcam crops each, VGG16 with ImageNet weights, 3 epochs) reported 98.39 % train "
        "and 50.97 % validation accuracy."
    )


def faces_run_section(report: ReportWriter, run: Run, experiment: str, config: Configuration) -> None:
    report.add(
        f"Backbone `{param(run, 'model.backbone', '?')}`, input {param(run, 'model.image_size', '?')} px, "
        f"data `{repo_relative(param(run, 'data.root', '?'))}`."
    )
    accuracy = epoch_series(
        report.client, run, {"train accuracy": names.TRAIN_ACC, "validation accuracy": names.VAL_ACC}
    )
    if accuracy:
        report.figure(
            figures.metric_curves(
                accuracy, f"Accuracy per epoch ({experiment}, {config.label})", "epoch", "accuracy (fraction of faces)"
            ),
            f"faces_{config.slug}_accuracy.png",
            f"accuracy per epoch ({config.label})",
        )
    report.add(markdown(face_accuracy_table(run)))
    report.artifact_image(
        run,
        names.CONFUSION_MATRIX_ARTIFACT,
        f"faces_{config.slug}_confusion_matrix.png",
        f"validation confusion matrix ({config.label})",
    )
    report.add("Per identity, on the validation faces:", markdown(face_class_table(report.client, run)))


def face_detector_results(client: mlflow.MlflowClient, run: Run) -> tuple[list[str], dict[str, np.ndarray]]:
    """What compare_face_detectors logged at its run's top level: its markdown tables (paths in them written
    relative to the repository) and its figures."""
    texts, images = [], {}
    for artifact in client.list_artifacts(run.info.run_id):
        if artifact.path.endswith(".md"):
            with tempfile.TemporaryDirectory() as tmp:
                text = mlflow_runs.download(client, run.info.run_id, artifact.path, tmp).read_text()
                texts.append(mlflow_runs.repo_relative_text(text))
        elif artifact.path.endswith(".png"):
            images[artifact.path] = mlflow_runs.load_image(client, run.info.run_id, artifact.path)
    return texts, images


def face_detectors_section(report: ReportWriter, run: Run | None, experiment: str, command: str) -> None:
    report.add("## Face detectors compared")
    if run is None:
        report.add(f"{NOT_RUN}: `{command}` (MLflow experiment `{experiment}`)")
        return
    report.add(f"Newest run {run_label(run)} on `{repo_relative(param(run, 'voc', '?'))}`.")
    texts, images = face_detector_results(report.client, run)
    for text in texts:  # its headings two levels down, under this section's "##"
        report.add("\n".join(f"##{line}" if line.startswith("#") else line for line in text.splitlines()))
    for path in images:
        report.artifact_image(run, path, f"face_detectors_{Path(path).name}", Path(path).stem)


def lfw_section(report: ReportWriter, run: Run | None, experiment: str, command: str) -> None:
    """LFW verification (experiments/eval_lfw.py): the newest finished run's summary and its ROC curve."""
    report.add("## Face verification on LFW (View 2, k-fold)")
    if run is None:
        report.add(f"{NOT_RUN}: `{command}` (MLflow experiment `{experiment}`)")
        return
    report.add(
        f"Newest run {run_label(run)} on `{repo_relative(param(run, 'pairs', '?'))}`, fixed tolerance "
        f"{param(run, 'tolerance', '?')} (Euclidean distance between dlib descriptors). Accuracy: the mean over the "
        "folds of each fold's accuracy at the threshold chosen on the other folds (Huang et al. 2007).",
        markdown(metrics_table(run, LFW_METRICS)),
    )
    report.artifact_image(run, LFW_FIGURE, "lfw_roc.png", "LFW verification ROC curve")


def open_set_section(report: ReportWriter, run: Run | None, experiment: str, command: str) -> None:
    """Open-set recognition: the newest finished run's identification accuracy and stranger rejection, and its
    figure."""
    report.add("## Open-set recognition: known people and strangers")
    if run is None:
        report.add(f"{NOT_RUN}: `{command}` (MLflow experiment `{experiment}`)")
        return
    tolerance = param(run, "tolerance", "None")
    if tolerance in ("None", "null"):  # the default: the gallery's own threshold for a target false-alarm rate
        rule = f"threshold {param(run, 'threshold', '?')} set for a false-alarm rate of {param(run, 'target_far', '?')}"
    else:
        rule = f"tolerance {tolerance}"
    report.add(
        f"Newest run {run_label(run)}, {rule}. Identification accuracy: the fraction of known people's faces given "
        "their own name; stranger rejection: the fraction of strangers' faces called unknown.",
        markdown(metrics_table(run, OPEN_SET_METRICS)),
    )
    report.artifact_image(run, OPEN_SET_FIGURE, "open_set.png", "open-set recognition")
    report.artifact_image(run, OPEN_SET_SIZE_FIGURE, "open_set_gallery_size.png", "open-set rates by gallery size")


SIZE_RECALL_TABLES = (
    ("recall_by_size", "Held-out photos of the VOC folder (`SPLIT=test`), boxes from its annotations, IoU 0.5"),
    ("portraits", "The central face of each portrait (`portraits=`), found by dlib's HOG, unmasked, IoU 0.3"),
)


def size_recall_rows(client: mlflow.MlflowClient, experiment: str, trained_by: str, newest: int = 4) -> list[dict]:
    """The newest eval-facemask run per checkpoint that measured recall by face size, newest first, at most
    `newest`, ordered by their training runs, newest first: {"trained" (its start, ms), "run", "checkpoint", "start" (the checkpoint's training run and its `data.zoom`), "split", "map50",
    "images", and the tables `recall_by_size` and/or `portraits` (bin label → faces, recall, its interval)} from the
    JSON file the run logged (`make eval-facemask` writes its rows there)."""
    import json

    trainings = mlflow_runs.finished_runs(client, trained_by)
    rows, seen = [], set()
    for run in mlflow_runs.finished_runs(client, experiment):
        checkpoint = repo_relative(run.data.params.get("checkpoint"))
        if checkpoint in seen or not any(k.startswith(("recall_by_size/", "portraits/")) for k in run.data.metrics):
            continue
        written = {}
        with tempfile.TemporaryDirectory() as tmp:
            for artifact in client.list_artifacts(run.info.run_id):
                if artifact.path.endswith(".json") and artifact.path != CLASS_NAMES_ARTIFACT:
                    path = mlflow_runs.download(client, run.info.run_id, artifact.path, tmp)
                    written = json.loads(Path(path).read_text())
        tables = {key: written[key] for key, _ in SIZE_RECALL_TABLES if key in written}
        if not tables:
            continue  # written before the rows were part of the file
        seen.add(checkpoint)
        training = next(
            (
                t
                for t in trainings
                if checkpoint and checkpoint.startswith(f"{repo_relative(t.data.tags.get('output_dir'))}/")
            ),
            None,
        )
        zoom = "?"
        if training is not None:
            p = training.data.params
            zoom = (
                f"zoom p {p['data.zoom.p']}, max ×{p.get('data.zoom.max_zoom', '?')}, to {p.get('data.zoom.max_fraction', '?')} of the side"
                if "data.zoom.p" in p
                else "no zoom"
            )
        rows.append(
            {
                "trained": training.info.start_time if training is not None else 0,
                "run": run_label(run),
                "checkpoint": checkpoint,
                "start": f"{run_label(training)}, {zoom}" if training is not None else "training run not found",
                "split": run.data.params.get("split", "None"),
                "map50": run.data.metrics.get("map50"),
                "images": int(run.data.metrics.get("images", 0)),
                **tables,
            }
        )
        if len(rows) == newest:
            break
    return sorted(rows, key=lambda row: -row["trained"])  # the newest training first


def size_recall_table(rows: list[dict], key: str) -> pd.DataFrame:
    """One row per checkpoint of `size_recall_rows`, one column per face-size bin with faces: "recall [low, high]
    of n"."""
    bins = [b for b in next(r[key] for r in rows if key in r) if any(key in r and r[key][b]["faces"] for r in rows)]
    cells = []
    for row in rows:
        if key not in row:
            continue
        cell = {"trained by": row["start"], "eval run": row["run"]}
        if key == "recall_by_size":
            cell["mAP50"] = row["map50"]
        for b in bins:
            r = row[key][b]
            cell[f"{b} px"] = (
                f"{r['recall']:.3f} [{r['recall_low']:.2f}, {r['recall_high']:.2f}] of {r['faces']}"
                if r["faces"]
                else ""
            )
        faces = sum(r["faces"] for r in row[key].values())
        cell["found with its class, all sizes"] = (
            sum(r["correct"] for r in row[key].values()) / faces if faces else None
        )
        cells.append(cell)
    return pd.DataFrame(cells)


def size_recall_section(report: ReportWriter, experiment: str, trained_by: str, command: str) -> None:
    """The detector's recall by face size (`make eval-facemask ... recall_by_size=true portraits=...`): the
    newest measurement of each recent checkpoint, on held-out photos and on portraits, the newest training first."""
    report.add("## Face-mask detection: recall by face size")
    rows = size_recall_rows(report.client, experiment, trained_by)
    if not rows:
        report.add(f"{NOT_RUN}: `{command}` (MLflow experiment `{experiment}`)")
        return
    report.add(
        f"Made by `{command}` for each checkpoint (`CKPT=`). A face's size is sqrt(w·h) of its box in the photo's "
        "pixels; a face counts as found when a detection at confidence 0.25 overlaps it, whatever the class. Each "
        "cell: recall [95 % Wilson interval] of the faces in that bin; the last column counts a face only when the "
        "detection also names its class (for portraits: without_mask, the class that raises an alert)."
    )
    for key, title in SIZE_RECALL_TABLES:
        if any(key in r for r in rows):
            report.add(f"{title}:", markdown(size_recall_table(rows, key)))


def build_report(tracking_uri: str, out_dir: str | Path, **sections) -> Path:
    """Write `out_dir`/README.md and its figures from the runs `sections` names (conf/report.yaml); return the page."""
    client = mlflow_runs.connect(tracking_uri)
    report = ReportWriter(client, out_dir)
    runs, table = overview(client, sections)
    report.add(
        "# ml-playground report",
        f"Generated by `make report` from the MLflow store `{mlflow_runs.repo_relative_uri(tracking_uri)}`; "
        "`make mlflow-ui` shows every run.",
        SELECTION_RULE,
        "## Runs",
        markdown(table),
    )
    dcgan_section(report, runs["DCGAN"], sections["dcgan"], sections.get("paper_scale"))
    sweep_section(report, sections["sweep_command"])
    yolo_section(report, runs["face-mask detection"][sections["yolo"]["experiment"]], **sections["yolo"])
    size_recall_section(report, **sections["size_recall"], trained_by=sections["yolo"]["experiment"])
    faces_section(report, runs["face recognition"][sections["faces"]["experiment"]], **sections["faces"])
    for application, key, section in (
        ("face detection", "face_detectors", face_detectors_section),
        ("LFW verification", "lfw", lfw_section),
        ("open-set recognition", "open_set", open_set_section),
    ):
        newest = runs[application][sections[key]["experiment"]]
        section(report, newest.get(TOOL_RUN), **sections[key])
    return report.write()
