"""Upload runs kept locally while their MLflow server was away: `python experiments/upload_offline_runs.py`
(`make mlflow-upload`, conf/upload_offline_runs.yaml). Prints one line per run; a server still away is an error."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from core.errors import UserError
from experiments import user_errors


def upload(cfg: DictConfig) -> list[str]:
    """Upload every finished, not yet uploaded stand-in run of the local store; return the server run ids."""
    from mlflow import MlflowClient

    from core.mlflow_store import server_answers
    from core.server_fallback import OFFLINE_SERVER, pending_offline_runs, upload_offline_run

    local = MlflowClient(cfg.paths.mlflow_uri)
    uploaded = []
    for run in pending_offline_runs(local):
        server = run.data.tags[OFFLINE_SERVER]
        if not server_answers(server):
            raise UserError(f"MLflow server {server} is still unreachable; local run {run.info.run_id} waits for it")
        uploaded.append(upload_offline_run(local, run.info.run_id))
        print(f"uploaded local run {run.info.run_id} into {server} run {uploaded[-1]}")
    print(f"{len(uploaded)} run(s) uploaded from {cfg.paths.mlflow_uri}")
    return uploaded


@hydra.main(version_base="1.3", config_path="../conf", config_name="upload_offline_runs")
def main(cfg: DictConfig) -> None:
    with user_errors():
        upload(cfg)


if __name__ == "__main__":
    main()
