"""`make mlflow-ui` / `make mlflow-server`: prepare the store's experiments for MLflow's model-training view, print
the links to each training experiment's runs with their loss curves, then exec `mlflow ui` (or `mlflow server`).

    python -m experiments.mlflow_ui [ui|server] [the `mlflow ui` / `mlflow server` options ...]

Every option goes to MLflow unchanged; without `--backend-store-uri` (and `--default-artifact-root` for `ui`) the
project's store is used: `<repo>/mlflow.db`, `<repo>/mlruns`.

What MLflow 3.17's UI honours, read from its built JS (mlflow/server/js/build):
- The view (GenAI or model training) follows the URL parameter `workflowType` (`machine_learning`), else the choice
  the browser stored from the sidebar's GenAI / Model training switch (localStorage `mlflow.workflowType_v1`,
  `genai` until the user switches). The experiment tag `mlflow.experimentKind` no longer picks the view (a feature
  flag routes the experiment page by the workflow type), so the links printed here carry the parameter.
- The runs page shows charts with `compareRunsMode=CHART`, and loads a saved view with `viewStateShareKey=<id>`: the
  experiment tag `mlflow.sharedViewState.<id>` holding {"name", "createdAt", "updatedAt", "state": the page's state
  as JSON}, the same tag the page's "Views → Save as new view" writes. The view written here, "Losses", puts one
  full-width line chart per loss metric (all runs overlaid) in a first section; the UI adds its own sections for the
  other metrics below it.
- The Home page's "Information about UI telemetry" notice reads only the browser's localStorage
  (`mlflow.telemetry.info.alert.dismissed_v1`, set by its close button), never the server: with
  MLFLOW_DISABLE_TELEMETRY=true the server already tells the UI that telemetry is off
  (`/ajax-api/3.0/mlflow/ui-telemetry` answers `disable_ui_telemetry: true`) and drops what it is sent. The printed
  links open the runs page, which has no such notice.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import core  # noqa: F401  (offline switches: MLFLOW_DISABLE_TELEMETRY=true unless the user set it)
from core.mlflow_store import describe_experiment, store_lock
from core.offline import project_root

VIEW_ID = "losses"
VIEW_NAME = "Losses"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
SECTION_ID = "losses"
# A loss series: the last part of the metric's name ends in "loss" (train/d_loss, train/box_loss, val/loss);
# derived values such as stability/d_loss_std or train/d_loss_epoch are not.
LOSS_METRIC = re.compile(r"(^|/)[^/]*loss$")
MAX_CHARTS = 12  # a saved view is one experiment tag: at most 20,000 characters (MAX_EXPERIMENT_TAG_VAL_LENGTH)
RUNS_SCANNED = 1000  # the newest runs of an experiment whose metric names choose its loss charts


@dataclass(frozen=True)
class TrainingExperiment:
    """An experiment with runs that logged a loss series, and the loss metrics its view charts."""

    experiment_id: str
    name: str
    loss_metrics: tuple[str, ...]


def loss_metrics(metric_keys: Sequence[str]) -> tuple[str, ...]:
    """The loss series among `metric_keys`, sorted (train/ before val/), at most MAX_CHARTS."""
    return tuple(sorted({key for key in metric_keys if LOSS_METRIC.search(key)}))[:MAX_CHARTS]


def _line_chart(metric: str) -> dict:
    """One line chart of `metric` against the step, every visible run overlaid: the fields the runs page writes for
    a chart it generates (mlflow/server/js RunsChartsLineCardConfig)."""
    return {
        "uuid": f"{SECTION_ID}-{metric}",
        "type": "LINE",
        "runsCountToCompare": 10,
        "metricSectionId": SECTION_ID,
        "deleted": False,
        "isGenerated": False,
        "displayName": metric,
        "metricKey": metric,
        "selectedMetricKeys": [metric],
        "lineSmoothness": 0,
        "xAxisScaleType": "linear",
        "scaleType": "linear",
        "range": {},
        "xAxisKey": "step",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": True,
        "useGlobalLineSmoothing": True,
    }


def view_state(metrics: Sequence[str]) -> dict:
    """The runs page's chart state of the "Losses" view: a first section "Losses" in one column (full-width charts,
    titles whole), one line chart per metric of `metrics`. `isAccordionReordered` keeps that section first (the page
    sorts sections by name otherwise); the page fills in every other setting with its defaults."""
    return {
        "compareRunCharts": [_line_chart(metric) for metric in metrics],
        "compareRunSections": [
            {"uuid": SECTION_ID, "name": VIEW_NAME, "display": True, "isReordered": True, "columns": 1}
        ],
        "isAccordionReordered": True,
    }


def write_view(client, experiment_id: str, metrics: Sequence[str], tags: dict[str, str]) -> bool:
    """Set the experiment's "Losses" saved view (tag VIEW_TAG) to chart `metrics`, keeping its creation time; no
    write when it already does. `tags`: the experiment's tags. Returns whether the tag was written."""
    state = view_state(metrics)
    created = now = int(time.time() * 1000)  # the UI's times: milliseconds since the epoch
    if VIEW_TAG in tags:
        try:
            saved = json.loads(tags[VIEW_TAG])
            if json.loads(saved["state"]) == state:
                return False
            created = int(saved["createdAt"])
        except (ValueError, KeyError, TypeError):
            pass  # not a view of this module's: replaced
    envelope = {"name": VIEW_NAME, "createdAt": created, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(envelope))
    return True


def prepare_store(tracking_uri: str) -> list[TrainingExperiment]:
    """Mark every active experiment of the store as a model-training one (`describe_experiment`) and give
    each training experiment (one whose newest RUNS_SCANNED runs logged a loss series) its "Losses" view.
    Returns the training experiments, the most recently updated first. Raises what the store raises."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri)
    found = []
    with store_lock(tracking_uri):
        experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, order_by=["last_update_time DESC"])
        for experiment in experiments:
            describe_experiment(client, experiment.experiment_id, None)
            runs = client.search_runs([experiment.experiment_id], max_results=RUNS_SCANNED)
            metrics = loss_metrics([key for run in runs for key in run.data.metrics])
            if metrics:
                write_view(client, experiment.experiment_id, metrics, experiment.tags)
                found.append(TrainingExperiment(experiment.experiment_id, experiment.name, metrics))
    return found


def base_url(host: str, port: int, static_prefix: str | None) -> str:
    """The address a browser on this machine opens: a wildcard host is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{(static_prefix or '').rstrip('/')}/"


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs in the model-training view, as charts, with the "Losses" view loaded."""
    return (
        f"{base}#/experiments/{experiment_id}/runs"
        f"?workflowType=machine_learning&compareRunsMode=CHART&viewStateShareKey={VIEW_ID}"
    )


def _parser() -> argparse.ArgumentParser:
    # the options of `mlflow ui` / `mlflow server` that the links and the store depend on; the rest pass through
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-h", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--static-prefix", default=None)
    parser.add_argument("--backend-store-uri", default=None)
    parser.add_argument("--default-artifact-root", default=None)
    parser.add_argument("--help", action="store_true")
    return parser


def mlflow_command(argv: Sequence[str]) -> tuple[list[str], argparse.Namespace]:
    """The `mlflow` command line for `argv` ([ui|server] and MLflow's options) and the options it reads; the
    project's store is added where `argv` names none."""
    argv = list(argv)
    command = argv.pop(0) if argv and argv[0] in ("ui", "server") else "ui"
    options, _ = _parser().parse_known_args(argv)
    if options.backend_store_uri is None:
        options.backend_store_uri = f"sqlite:///{project_root() / 'mlflow.db'}"
        argv += ["--backend-store-uri", options.backend_store_uri]
        if command == "ui" and options.default_artifact_root is None:
            argv += ["--default-artifact-root", str(project_root() / "mlruns")]
    return [sys.executable, "-m", "mlflow", command, *argv], options


def main(argv: Sequence[str] | None = None) -> None:
    command, options = mlflow_command(sys.argv[1:] if argv is None else argv)
    if options.help:
        os.execv(command[0], command)
    uri = options.backend_store_uri
    base = base_url(options.host, options.port, options.static_prefix)
    database = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    experiments: list[TrainingExperiment] = []
    if database is None or Path(database).is_file():  # a store not created yet has no runs to link to
        try:
            experiments = prepare_store(uri)
        except Exception as exc:  # noqa: BLE001  (the UI still starts; MLflow reports the store's problem itself)
            print(f"warning: could not prepare the experiments of {uri}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"MLflow {'UI' if command[3] == 'ui' else 'tracking server and UI'} on {base} (store {uri})")
    if experiments:
        print("Training runs with their loss curves, in the model-training view (newest experiment first):")
        width = max(len(e.name) for e in experiments)
        for experiment in experiments:
            print(f"  {experiment.name:<{width}}  {runs_url(base, experiment.experiment_id)}")
    else:
        print("No training runs yet: after a training, start this again to print the links to its runs.")
    sys.stdout.flush()  # exec replaces the process: what is buffered would be lost
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
