"""Reading finished runs back from the MLflow store: the newest run of an experiment, a sweep's runs as a
table, metric histories and artifacts. `make report` and the notebooks both read through here."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run

from core.images import read_rgb
from core.metric_names import GAN_LOSS_KINDS, GAN_NETS, PRETRAINED_ARTIFACT, gan_loss
from core.offline import PROJECT_ROOT  # importing core applies the offline switches (no telemetry)

os.environ.setdefault(
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
)  # a bar per downloaded file would bury the report's log

FINISHED = "attributes.status = 'FINISHED'"
SWEEP_SUFFIX = "-sweep"  # conf/sweep/*.yaml log a sweep's runs to the experiment "<task>-sweep"


def default_tracking_uri() -> str:
    """The project's local store, or $ML_PLAYGROUND_MLFLOW_URI (tests and notebooks point it elsewhere)."""
    return os.environ.get("ML_PLAYGROUND_MLFLOW_URI", f"sqlite:///{PROJECT_ROOT}/mlflow.db")


def connect(tracking_uri: str) -> mlflow.MlflowClient:
    """A client on the store; also points `mlflow.search_runs` at it."""
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def latest_run(client: mlflow.MlflowClient, experiment: str, filter_string: str = "") -> Run | None:
    """The newest finished run of `experiment` (optionally also matching `filter_string`, e.g. a tag), or None."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = f"{FINISHED} AND {filter_string}" if filter_string else FINISHED
    runs = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def sweep_experiments(client: mlflow.MlflowClient) -> list[str]:
    """Names of the experiments that hold sweeps, sorted."""
    return sorted(e.name for e in client.search_experiments(filter_string=f"name LIKE '%{SWEEP_SUFFIX}'"))


DEFAULT_SWEEP_AXES = ("data.batch_size", "model.lr")  # the heat map's axes of a sweep whose trials name none
SWEEP_AXES_TAGS = ("tags.sweep.rows", "tags.sweep.columns")  # conf/sweep_space/*: the heat map's rows, columns
PARENT_RUN = "tags.mlflow.parentRunId"


def sweep_table(experiment: str, metric: str, params: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per finished trial of the newest sweep in `experiment`: columns `params` (numbers), `metric`,
    `run_id`, `run_name`. Empty when the experiment or the metric is missing.

    The newest sweep is the parent run (`mlflow.parentRunId`) of the newest finished trial, or, for runs without
    one, their `sweep` tag: a resumed sweep's trials, old and new, share their parent. `params` defaults to the
    sweep's own heat-map axes, its trials' tags `sweep.rows` and `sweep.columns` (conf/sweep_space/), else
    `DEFAULT_SWEEP_AXES`. Parameter names are matched with '.' or '/' as separator (Lightning's MLflow logger
    flattens with '/')."""
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=FINISHED, output_format="pandas")
    sweep = pd.Series(None, index=runs.index, dtype=object)
    for column in (PARENT_RUN, "tags.sweep"):  # the parent groups a sweep's trials, resumed or not; else the folder
        if column in runs.columns:
            sweep = sweep.fillna(runs[column])
    if sweep.notna().any():
        runs = runs[sweep == sweep[runs["start_time"].idxmax()]]
    if params is None:
        tagged = [runs[c].dropna() for c in SWEEP_AXES_TAGS if c in runs.columns]
        params = tuple(t.iloc[0] for t in tagged) if len(tagged) == 2 and all(len(t) for t in tagged) else None
        params = params or DEFAULT_SWEEP_AXES
    columns = {f"params.{p}": p for p in params} | {f"params.{p.replace('.', '/')}": p for p in params}
    runs = runs.rename(columns=columns | {"tags.mlflow.runName": "run_name"})
    needed = [*params, f"metrics.{metric}"]
    if runs.empty or any(c not in runs.columns for c in needed):
        return pd.DataFrame(columns=[*params, metric, "run_id", "run_name"])
    if "run_name" not in runs.columns:
        runs["run_name"] = runs["run_id"]
    table = runs[[*needed, "run_id", "run_name"]].rename(columns={f"metrics.{metric}": metric}).dropna()
    for p in params:
        table[p] = pd.to_numeric(table[p])
    return table.sort_values([*params, "run_name"]).reset_index(drop=True)


def metric_history(client: mlflow.MlflowClient, run_id: str, key: str) -> pd.DataFrame:
    """Every logged value of `key` in step order: columns step, value (empty when never logged)."""
    rows = [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]
    frame = pd.DataFrame(rows, columns=["step", "timestamp", "value"])
    return frame.sort_values(["step", "timestamp"]).drop(columns="timestamp").reset_index(drop=True)


def gan_history(client: mlflow.MlflowClient, run_id: str) -> dict[str, list[float]]:
    """The per-epoch D and G losses of a DCGAN run, in the shape `figures.gan_loss_curves` takes."""
    return {
        f"{net}_loss_{kind}": metric_history(client, run_id, gan_loss(net, kind))["value"].tolist()
        for net in GAN_NETS
        for kind in GAN_LOSS_KINDS
    }


def artifact_paths(client: mlflow.MlflowClient, run_id: str, folder: str) -> list[str]:
    """Files directly inside an artifact folder of the run, sorted (empty when the folder is absent)."""
    return sorted(a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir)


def newest_artifact(client: mlflow.MlflowClient, run_id: str, folder: str) -> str | None:
    """The last file of an artifact folder by name (samples/epoch_0005.png after epoch_0004.png), or None."""
    paths = artifact_paths(client, run_id, folder)
    return paths[-1] if paths else None


def download(client: mlflow.MlflowClient, run_id: str, artifact_path: str, dst_dir: str | Path) -> Path | None:
    """Download one artifact (file or folder) into `dst_dir`; None when the run has no such artifact."""
    parent = str(Path(artifact_path).parent)
    if artifact_path not in {a.path for a in client.list_artifacts(run_id, None if parent == "." else parent)}:
        return None
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, artifact_path, str(dst)))


def load_image(client: mlflow.MlflowClient, run_id: str, artifact_path: str) -> np.ndarray | None:
    """A logged image as an HxWx3 uint8 RGB array; None when the run has no such artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download(client, run_id, artifact_path, tmp)
        return None if path is None else read_rgb(path)


def load_json(client: mlflow.MlflowClient, run_id: str, artifact_path: str) -> dict | list | None:
    """A logged JSON artifact (log_dict), or None when absent."""
    with tempfile.TemporaryDirectory() as tmp:
        path = download(client, run_id, artifact_path, tmp)
        return None if path is None else json.loads(path.read_text())


# -- run selection: the best finished run of each configuration ---------------------------------------
REAL, SYNTHETIC = "real data", "synthetic data"
PROFILE_TAG, CAPS_TAG = "profile", "profile.caps"  # set by experiments/train.py on every training run
NO_CAPS = "none"
BEST_PREFIX = "best/"  # training/callbacks.py BestCheckpoint: `best/<monitor>` at the end of fitting


def run_param(run: Run, key: str, default: str | None = None) -> str | None:
    """A run parameter by its dotted name (older runs flattened with '/')."""
    params = run.data.params
    return params.get(key, params.get(key.replace(".", "/"), default))


def repo_relative(path: str | Path | None) -> str | None:
    """`path` as the report may print it: relative to the repository (`data/x`), or to the folder beside it
    (`../shared/data/x`); a path elsewhere becomes `<outside the repository>/<name>`, so that no machine's
    absolute path reaches a committed page. Relative paths and None come back unchanged (None stays None)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    for base, prefix in ((PROJECT_ROOT, ""), (PROJECT_ROOT.parent, "../")):
        if p.is_relative_to(base):
            return prefix + str(p.relative_to(base)) if p != base else (prefix.rstrip("/") or ".")
    return f"<outside the repository>/{p.name}"


def repo_relative_text(text: str) -> str:
    """`text` with the repository's absolute path, and its parent's, written relative (see `repo_relative`)."""
    return text.replace(f"{PROJECT_ROOT}/", "").replace(f"{PROJECT_ROOT.parent}/", "../")


def repo_relative_uri(tracking_uri: str) -> str:
    """A tracking URI for print: `sqlite:///<abs>/mlflow.db` → `sqlite:///mlflow.db` (relative to the repository);
    a server URI unchanged."""
    scheme = "sqlite:///"
    return scheme + repo_relative(tracking_uri[len(scheme) :]) if tracking_uri.startswith(scheme) else tracking_uri


def data_kind(run: Run) -> str | None:
    """REAL or SYNTHETIC for a training run (conf/data/*_real.yaml set `generate: null`, logged as the param
    `data.generate` = "None"; the synthetic sets log their generator as `data.generate._target_`), None for a tool
    run without a `data` config."""
    if run_param(run, "data.generate") == "None":
        return REAL
    if run_param(run, "data.generate._target_") is not None:
        return SYNTHETIC
    return None


def model_start(client: mlflow.MlflowClient, run: Run) -> str:
    """How the model started, where an experiment chooses: a YOLO run is "pretrained (<checkpoint>)" or "from
    scratch" (its pretrained.json, which records what `model.pretrained: auto` resolved to; the param when the
    artifact is absent), a face classifier names its backbone and weights; "" for the others (DCGAN)."""
    pretrained = run_param(run, "model.pretrained")
    if pretrained is not None:
        start = load_json(client, run.info.run_id, PRETRAINED_ARTIFACT)
        source = start.get("pretrained") if isinstance(start, dict) else (None if pretrained == "None" else pretrained)
        return f"pretrained ({Path(source).name})" if source else "from scratch"
    backbone = run_param(run, "model.backbone")
    if backbone == "vgg16":  # the one backbone with a weights choice (dlib's descriptor ships trained)
        weights = run_param(run, "model.weights", "None")
        return "vgg16, " + ("random init" if weights == "None" else f"weights {Path(weights).name}")
    return backbone or ""


def demo_scale(run: Run) -> str | None:
    """What made the run demo-scale, or None for a run at the experiment's own settings.

    A run is demo-scale when its trainer profile's caps bite (the `profile.caps` tag, e.g. "max_epochs 1000 → 5,
    width_multiplier 1.0 → 0.125") or a debug overlay made it (`profile` tag "debug=…"). A run from before the
    tags is judged by its params: fewer `trainer.max_epochs` than the experiment's `epochs`."""
    tags = run.data.tags
    profile, caps = tags.get(PROFILE_TAG, ""), tags.get(CAPS_TAG)
    if profile.startswith("debug="):
        return f"{profile} smoke run" + (f", {caps}" if caps and caps != NO_CAPS else "")
    if caps is not None:
        return None if caps == NO_CAPS else caps
    asked, trained = run_param(run, "epochs"), run_param(run, "trainer.max_epochs")
    try:
        if asked not in (None, "None") and trained is not None and 0 <= int(trained) < int(asked):
            return f"max_epochs {asked} → {trained}"
    except ValueError:
        pass
    return None


@dataclass(frozen=True)
class Configuration:
    """What a run is an instance of, beside its experiment: its data (REAL / SYNTHETIC / None for a tool), how
    its model started (`model_start`) and its trainer profile (the `profile` tag, "" before the tag)."""

    data: str | None
    start: str
    profile: str

    @property
    def label(self) -> str:
        """e.g. "real data, pretrained (yolov5n.pt), trainer=cpu_real"."""
        return ", ".join(part for part in (self.data, self.start, self.profile) if part) or "newest finished run"

    @property
    def slug(self) -> str:
        """The label as a file-name part: "real_data_pretrained_yolov5n_pt_trainer_cpu_real"."""
        return re.sub(r"[^a-z0-9]+", "_", self.label.lower()).strip("_")


def configuration(client: mlflow.MlflowClient, run: Run) -> Configuration:
    """The run's Configuration: `data_kind`, `model_start` (may download its pretrained.json) and `profile` tag."""
    return Configuration(data_kind(run), model_start(client, run), run.data.tags.get(PROFILE_TAG, ""))


def selection(run: Run) -> tuple[str | None, str]:
    """The run's selection metric `best/<selection.metric>` and its mode ("max" or "min"); (None, "max") for a run
    that selects by nothing. Runs logged before the key was named `selection` carry it as `monitor.*`."""
    metric = run_param(run, "selection.metric", run_param(run, "monitor.metric"))
    mode = run_param(run, "selection.mode", run_param(run, "monitor.mode", "max"))
    return (None if metric in (None, "None") else f"{BEST_PREFIX}{metric}"), mode


# A monitored metric that moved less than this (absolute, in the metric's own units) over a run has not moved: a
# detector whose fitness stays at 0.000 for every epoch, a classifier stuck at chance.
UNMOVED = 1e-3


def learning_verdict(client: mlflow.MlflowClient, run: Run) -> str | None:
    """ "did not learn: <why>" when the run's monitored metric (`selection.metric`, e.g. `val/fitness`, `quality/kid`)
    never moved by more than `UNMOVED` from its first epoch's value in the run's own better direction; None when it
    did, when the run monitors nothing, or when it has fewer than two epochs of it (nothing to judge). The reason
    names what the run recorded about how its model started (`model_start`, with the start's own note, e.g.
    "model.pretrained=auto: ../shared/data/weights/yolov5n.pt not found")."""
    metric, mode = selection(run)
    if metric is None:
        return None
    key = metric[len(BEST_PREFIX) :]
    history = [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
    history = [v for v in history if v == v]  # NaN epochs say nothing
    if len(history) < 2:
        return None
    first, best = history[0], (max(history) if mode == "max" else min(history))
    if abs(best - first) > UNMOVED:
        return None
    why = f"{key} never improved on {first:.3f} in {len(history)} epochs"
    begun = start_reason(client, run)
    return f"did not learn: {why}" + (f"; {begun}" if begun else "")


def start_reason(client: mlflow.MlflowClient, run: Run) -> str | None:
    """How the run's model started, with the note its pretrained.json recorded: "from scratch (model.pretrained=auto:
    ../shared/data/weights/yolov5n.pt not found)", "pretrained (yolov5n.pt)"; None for a model without that choice
    (DCGAN)."""
    begun = model_start(client, run)
    if not begun:
        return None
    start = load_json(client, run.info.run_id, PRETRAINED_ARTIFACT)
    note = start.get("note") if isinstance(start, dict) else None
    return begun + (f" ({repo_relative_text(note)})" if note else "")


def rank_best(runs: list[Run]) -> list[Run]:
    """`runs` best first: by the value of their `best/<monitor>` metric, higher first for mode "max", lower first
    for "min"; runs without the metric after those with it; ties and the rest newest first."""

    def key(run: Run) -> tuple:
        metric, mode = selection(run)
        value = run.data.metrics.get(metric) if metric else None
        if value is None or value != value:  # absent or NaN
            return (1, 0.0, -run.info.start_time)
        return (0, -value if mode == "max" else value, -run.info.start_time)

    return sorted(runs, key=key)


def champion_key(run: Run) -> tuple:
    """The sort key (ascending: best first) by which a task's runs compete for the registry's `champion`: real data
    before built-in (a model that learned the real task beats a quick built-in run, whatever their figures on their
    own data), full scale before demo-scale, then the better `best/<selection.metric>` in its mode (runs without it
    after), then the newer run."""
    metric, mode = selection(run)
    value = run.data.metrics.get(metric) if metric else None
    scored = value is not None and value == value  # absent or NaN: after the scored ones
    return (
        data_kind(run) != REAL,
        demo_scale(run) is not None,
        not scored,
        (-value if mode == "max" else value) if scored else 0.0,
        -run.info.start_time,
    )


def describe_for_champion(run: Run) -> str:
    """The facts `champion_key` ranks by, in words: e.g. "real data, full scale, best/val/fitness 0.8172"."""
    metric, _ = selection(run)
    value = run.data.metrics.get(metric) if metric else None
    scale = "full scale" if demo_scale(run) is None else "demo-scale"
    figure = f"{metric} {value:.4f}" if value is not None else f"no {metric or 'selection metric'}"
    return f"{'real' if data_kind(run) == REAL else 'built-in'} data, {scale}, {figure}"


def finished_runs(client: mlflow.MlflowClient, experiment: str) -> list[Run]:
    """Every finished run of `experiment`, newest first (empty when the experiment is missing)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(
        client.search_runs([exp.experiment_id], FINISHED, order_by=["attributes.start_time DESC"], max_results=5000)
    )


def best_runs(client: mlflow.MlflowClient, experiment: str) -> dict[Configuration, Run]:
    """The best finished run (`rank_best`) of each configuration of `experiment`, in the report's order: real-data
    configurations first, then synthetic; within each, runs at the experiment's own settings before demo-scale
    ones, then the configurations by their best run (`rank_best` again, so a COCO-pretrained detector with the
    higher fitness comes before one from scratch). Empty when the experiment has no finished run."""
    groups: dict[Configuration, list[Run]] = {}
    for run in finished_runs(client, experiment):
        groups.setdefault(configuration(client, run), []).append(run)
    best = {config: rank_best(runs)[0] for config, runs in groups.items()}
    rank = {run.info.run_id: i for i, run in enumerate(rank_best(list(best.values())))}
    order = sorted(
        best,
        key=lambda c: (c.data != REAL, c.data is None, demo_scale(best[c]) is not None, rank[best[c].info.run_id]),
    )
    return {config: best[config] for config in order}
