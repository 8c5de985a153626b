"""Write the report: `python experiments/report.py [out_dir=...] [paths.mlflow_dir=...]` (conf/report.yaml)."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
