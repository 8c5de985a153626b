"""Write the report: `python experiments/report.py [out_dir=...] [paths.mlflow_dir=...]` (conf/report.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments import user_errors


def report(cfg: DictConfig) -> Path:
    from reporting.report import build_report

    page = build_report(cfg.tracking_uri, cfg.out_dir, **OmegaConf.to_container(cfg.sections, resolve=True))
    return page


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    with user_errors():
        print(f"report: {report(cfg)}")


if __name__ == "__main__":
    main()
