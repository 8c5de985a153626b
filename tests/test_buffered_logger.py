"""Metric rows logged through `training.loggers.BufferedMLFlowLogger` (`logger=mlflow`) reach the store together,
and the store ends with every row, at its step, whichever way they get there: the interval, `flush()`, a read of
the run, or `finalize`."""

from __future__ import annotations

import mlflow
from hydra.utils import instantiate

from tests.conftest import compose
from training.loggers import BufferedMLFlowLogger


def _logger(tmp_path, flush_every_s):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return BufferedMLFlowLogger("exp", tracking_uri=uri, flush_every_s=flush_every_s), mlflow.MlflowClient(uri)


def _rows(client, logger, key="train/loss"):
    return [(m.step, m.value) for m in client.get_metric_history(logger.run_id, key)]


def test_rows_are_held_until_a_flush_and_written_at_their_steps(tmp_path):
    logger, client = _logger(tmp_path, flush_every_s=3600)
    for step in range(5):
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    assert _rows(client, logger) == []  # nothing written yet: one write for all five
    logger.flush()
    assert _rows(client, logger) == [(step, 1.0 / (step + 1)) for step in range(5)]


def test_a_read_through_the_logger_and_finalize_write_the_held_rows_first(tmp_path):
    logger, client = _logger(tmp_path, flush_every_s=3600)
    logger.log_metrics({"train/loss": 0.5}, step=3)
    assert [(m.step, m.value) for m in logger.experiment.get_metric_history(logger.run_id, "train/loss")] == [(3, 0.5)]
    logger.log_metrics({"train/loss": 0.25}, step=4)
    logger.finalize("success")
    assert _rows(client, logger) == [(3, 0.5), (4, 0.25)]
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_with_no_interval_each_row_is_written_at_once(tmp_path):
    logger, client = _logger(tmp_path, flush_every_s=0)
    logger.log_metrics({"train/loss": 0.5}, step=1)
    assert _rows(client, logger) == [(1, 0.5)]


def test_the_training_config_logs_through_it(tmp_path):
    cfg = compose("train", {"experiment": "exp1_dcgan_fruits", "paths.mlflow_dir": str(tmp_path)})
    assert isinstance(instantiate(cfg.logger), BufferedMLFlowLogger)
