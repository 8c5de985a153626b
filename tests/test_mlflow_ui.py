"""`python -m experiments.mlflow_ui` (`make mlflow-ui`): the store's experiments prepared for MLflow's model-training
view, the printed links, and the UI they open, driven in real headless Chromium (web/e2e/mlflow_ui.mjs).

The browser test needs Node.js with the page's npm packages (`make web-deps`: playwright-core) and Debian's chromium
(`apt-get install -y chromium`, or $CHROMIUM); without them it skips and says which is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.mlflow_store import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, describe_experiment
from experiments import mlflow_ui
from tests.conftest import REPO

WEB = REPO / "web"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TASK = "exp1_dcgan_fruits"
LOSSES = ("train/d_loss", "train/g_loss")


def _finished_runs(tmp_path: Path, lightning: bool = True) -> tuple[str, list[str]]:
    """Two finished runs of TASK as experiments/train.py makes them (Lightning's MLFlowLogger creates the experiment
    and the run, `describe_experiment` marks it): 4 steps of both losses, their epoch means (not loss series
    the view charts) and `model.lr`. `lightning=False`: the same through MlflowClient, the calls MLFlowLogger makes,
    without importing Lightning. Returns the store's URI and the run names."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    names = []
    for lr, scale in ((2e-4, 1.0), (1e-4, 0.5)):
        name = f"{TASK}-lr{lr:g}"
        losses = [
            {"train/d_loss": 1.4 - scale * 0.1 * step, "train/g_loss": 0.7 + scale * 0.2 * step} for step in range(4)
        ]
        if lightning:
            from pytorch_lightning.loggers import MLFlowLogger

            logger = MLFlowLogger(
                experiment_name=TASK, run_name=name, tracking_uri=uri, artifact_location=str(tmp_path / "mlruns")
            )
            client, experiment_id, run_id = logger.experiment, logger.experiment_id, logger.run_id
        else:
            client = MlflowClient(uri)
            found = client.get_experiment_by_name(TASK)
            experiment_id = found.experiment_id if found else client.create_experiment(TASK, str(tmp_path / "mlruns"))
            run_id = client.create_run(experiment_id, run_name=name).info.run_id
        describe_experiment(client, experiment_id, "DCGAN experiment 1")
        client.log_param(run_id, "model.lr", lr)
        for step, values in enumerate(losses):
            for key, value in values.items():
                client.log_metric(run_id, key, value, step=step)
        client.log_metric(run_id, "train/d_loss_epoch", 1.3, step=3)
        client.set_terminated(run_id, "FINISHED")
        names.append(name)
    return uri, names


def test_loss_series_are_the_metrics_named_loss():
    keys = ["train/g_loss", "stability/d_loss_std", "train/d_loss_epoch", "val/loss", "train/d_loss", "quality/kid"]
    assert mlflow_ui.loss_metrics(keys) == ("train/d_loss", "train/g_loss", "val/loss")
    assert mlflow_ui.loss_metrics(["train/box_loss", "val/dfl_loss", "epoch"]) == ("train/box_loss", "val/dfl_loss")


def test_links_and_the_mlflow_command_line(monkeypatch, tmp_path):
    assert mlflow_ui.base_url("0.0.0.0", 5000, None) == "http://127.0.0.1:5000/"
    assert mlflow_ui.base_url("::", 5001, "/mlflow/") == "http://[::1]:5001/mlflow/"
    assert mlflow_ui.runs_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs"
        "?workflowType=machine_learning&compareRunsMode=CHART&viewStateShareKey=losses"
    )
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    command, options = mlflow_ui.mlflow_command(["--host", "127.0.0.1", "--port", "5005", "--workers", "1"])
    assert command == [
        sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", "5005", "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db", "--default-artifact-root", str(tmp_path / "mlruns"),
    ]  # fmt: skip
    assert (options.host, options.port) == ("127.0.0.1", 5005)
    command, options = mlflow_ui.mlflow_command(["server", "-p", "5001", "--backend-store-uri", "sqlite:///x.db"])
    assert command[3:] == ["server", "-p", "5001", "--backend-store-uri", "sqlite:///x.db"]
    assert (options.port, options.backend_store_uri) == (5001, "sqlite:///x.db")


def test_prepare_store_marks_the_experiments_and_writes_the_losses_view_once(tmp_path):
    import mlflow

    uri, _ = _finished_runs(tmp_path, lightning=False)
    client = mlflow.MlflowClient(uri)
    tool = client.create_experiment("eval_lfw")  # a tool's experiment: no loss series, so no view and no link
    (found,) = mlflow_ui.prepare_store(uri)
    assert (found.name, found.loss_metrics) == (TASK, LOSSES)
    tags = client.get_experiment(found.experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert client.get_experiment(tool).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert mlflow_ui.VIEW_TAG not in client.get_experiment(tool).tags
    view = json.loads(tags[mlflow_ui.VIEW_TAG])
    state = json.loads(view["state"])
    assert view["name"] == "Losses" and [c["metricKey"] for c in state["compareRunCharts"]] == list(LOSSES)
    assert state["compareRunSections"] == [
        {"uuid": "losses", "name": "Losses", "display": True, "isReordered": True, "columns": 1}
    ]
    # a second start writes nothing; a new loss series rewrites the view and keeps its creation time
    assert not mlflow_ui.write_view(client, found.experiment_id, LOSSES, tags)
    assert mlflow_ui.write_view(client, found.experiment_id, (*LOSSES, "val/loss"), tags)
    again = json.loads(client.get_experiment(found.experiment_id).tags[mlflow_ui.VIEW_TAG])
    assert again["createdAt"] == view["createdAt"] and len(json.loads(again["state"])["compareRunCharts"]) == 3


def _browser_or_skip() -> None:
    if shutil.which("node") is None:
        pytest.skip("node not found: the MLflow UI test needs Node.js 20+ (Debian: apt-get install -y nodejs npm)")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        pytest.skip("web/node_modules/playwright-core is missing: run `make web-deps`")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's (apt-get install -y chromium) or set $CHROMIUM")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _printed_links(log: Path, server: subprocess.Popen, seconds: float = 60) -> list[str]:
    """The experiment lines the launcher printed before it exec'd MLflow."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines()
        if any(line.startswith("MLflow UI on ") for line in lines):
            return [line.split() for line in lines if "#/experiments/" in line]
        assert server.poll() is None, f"the launcher exited ({server.returncode}):\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no links printed in {seconds} s:\n{log.read_text()[-3000:]}")


def _get(url: str, server: subprocess.Popen, log: Path, seconds: float = 90) -> bytes:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the MLflow UI exited ({server.returncode}):\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.read()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_the_printed_link_opens_the_training_runs_with_both_loss_curves(tmp_path):
    """The link `make mlflow-ui` prints opens the experiment's runs in the model-training view (its sidebar: Runs,
    Models, Traces; no traces overview, no telemetry notice) as charts whose first section, "Losses", holds one
    full-width chart per loss with both runs overlaid: 0 clicks; the runs table is 1 click away and the charts are
    back with the next. Screenshots of each step are in tmp_path/screenshots."""
    _browser_or_skip()
    uri, runs = _finished_runs(tmp_path)
    port, log = _free_port(), tmp_path / "ui.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "experiments.mlflow_ui", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", uri, "--default-artifact-root", str(tmp_path / "mlruns")]
    with log.open("w") as out:  # its own process group: `mlflow ui` runs uvicorn as a child process
        server = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        links = _printed_links(log, server)
        assert [name for name, _ in links] == [TASK]
        url = links[0][1]
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/") and "workflowType=machine_learning" in url
        _get(f"http://127.0.0.1:{port}/health", server, log)
        # the UI's telemetry is off at the server: what the banner's text is about
        settings = json.loads(_get(f"http://127.0.0.1:{port}/ajax-api/3.0/mlflow/ui-telemetry", server, log))
        assert settings["disable_ui_telemetry"] is True

        shots = tmp_path / "screenshots"
        shots.mkdir()
        done = subprocess.run(
            ["node", "e2e/mlflow_ui.mjs", "--url", url, "--screenshots", str(shots), "--chromium", CHROMIUM],
            cwd=WEB, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert "error" not in result and result["console"] == [], result
    landing, table, charts = result["steps"]
    assert [step["clicks"] for step in result["steps"]] == [0, 1, 2]
    for step in (landing, table, charts):
        # the model-training view's experiment sidebar; the GenAI view's has Overview, Sessions, Judges …
        assert step["sidebar"][:4] == [TASK, "Runs", "Models", "Traces"], step["sidebar"]
        assert not step["tracesOverview"] and not step["telemetryNotice"]
        assert "workflowType=machine_learning" in step["url"]
    assert table["viewMode"] == "TABLE" and set(runs) <= set(table["runRows"])
    for step in (landing, charts):
        assert step["viewMode"] == "CHART" and step["sections"][0] == "Losses"
        assert [card["title"] for card in step["cards"]] == list(LOSSES)
        for card, metric in zip(step["cards"], LOSSES, strict=True):
            legend = {line for line in card["lines"] if line.endswith(f"({metric})")}
            assert legend == {f"{run} ({metric})" for run in runs}  # both runs overlaid in one chart
            assert card["width"] >= 400 and card["height"] >= 300  # one column: not 150-px tiles with cut titles
