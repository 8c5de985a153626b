"""`make report` and the notebooks against a small MLflow store made by smoke runs of the real entries."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from experiments.report import report
from experiments.train import train
from reporting import mlflow_runs
from reporting.report import NOT_RUN, build_report, report_sections
from tests.conftest import REPO, compose

DCGAN = ["exp1_dcgan_fruits", "exp2_dcgan_hardhat", "exp3_dcgan_hardhat_tricks"]
SWEEP = "exp3_dcgan_hardhat_tricks-sweep"
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _overrides(root: Path, data_dir: Path) -> list[str]:
    return [
        f"paths.log_dir={root / 'logs'}",
        f"paths.mlflow_dir={root}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={data_dir / 'cache'}",
    ]


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory, data_dir) -> Path:
    """Two-step runs of the three DCGAN experiments, and a sweep in two cells after an older sweep's run."""
    root = tmp_path_factory.mktemp("store")
    common = ["debug=fast", *_overrides(root, data_dir)]
    for experiment in DCGAN:
        train(compose("train", [f"experiment={experiment}", *common]))
    for sweep, batch, lr in (("older", 8, 1e-4), ("newest", 8, 1e-4), ("newest", 16, 2e-4)):
        train(
            compose(
                "train",
                [
                    "experiment=exp3_dcgan_hardhat_tricks",
                    *common,
                    f"logger.experiment_name={SWEEP}",
                    f"+tags.sweep={sweep}",
                    f"data.batch_size={batch}",
                    f"model.lr={lr}",
                ],
            )
        )
    return root


def _uri(root: Path) -> str:
    return f"sqlite:///{root}/mlflow.db"


def _linked_images(page: Path) -> dict[str, Path]:
    return {alt: page.parent / path for alt, path in re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", page.read_text())}


def test_report_shows_every_dcgan_figure_and_table(smoke_store, tmp_path):
    page = build_report(_uri(smoke_store), tmp_path / "reports", **report_sections())
    text = page.read_text()
    images = _linked_images(page)
    for name in DCGAN:
        assert images[f"{name}: samples of the last epoch"].name == f"{name}_samples.png"
        assert f"{name}: D and G loss per epoch" in images
    assert "D and G losses of the experiments side by side" in images
    assert "quality/kid by batch size and learning rate" in images  # the sweep optimises the monitor: KID
    for path in images.values():
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape[0] > 100 and pixels.std() > 5, path  # a real picture, not an empty canvas

    client = mlflow_runs.connect(_uri(smoke_store))
    for name in DCGAN:  # the table's numbers are the runs' logged metrics
        run = mlflow_runs.latest_run(client, name)
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} "))
        assert (
            f"{run.data.metrics['quality/fid']:.4g}" in row and f"{run.data.metrics['stability/g_loss_std']:.4g}" in row
        )
        assert run.info.run_id[:8] in row
        assert "| no (32 samples) " in row  # debug=fast: an FID from 32 samples, fewer than its 256 dimensions

    # The heat map covers the newest sweep only: two runs, not the older sweep's.
    table = mlflow_runs.sweep_table(SWEEP, "quality/fid")
    assert sorted(zip(table["data.batch_size"], table["model.lr"])) == [(8, 1e-4), (16, 2e-4)]
    assert "The newest sweep's 2 finished runs" in text

    # Applications without runs in this store are listed, with their commands, not failed on.
    assert f"{NOT_RUN}: `make yolo-facemask`" in text and f"{NOT_RUN}: `make vgg16-faces`" in text


def test_empty_store_lists_every_run_as_not_run_yet(tmp_path):
    page = build_report(_uri(tmp_path), tmp_path / "reports", **report_sections())
    text = page.read_text()
    for command in (
        "make exp1-dcgan",
        "make exp2-dcgan",
        "make exp3-dcgan",
        "make sweep-dcgan",
        "make yolo-facemask",
        "make vgg16-faces",
    ):
        assert f"{NOT_RUN}: `{command}`" in text
    assert not _linked_images(page) and not any((tmp_path / "reports" / "figures").iterdir())


def test_report_entry_writes_the_page_where_configured(smoke_store, tmp_path):
    cfg = compose("report", [f"paths.mlflow_dir={smoke_store}", f"out_dir={tmp_path / 'out'}"])
    page = report(cfg)
    assert page == tmp_path / "out" / "README.md" and "exp1_dcgan_fruits_samples.png" in page.read_text()


def test_notebooks_carry_no_outputs():
    assert {p.name for p in NOTEBOOKS} >= {
        "00_overview.ipynb",
        "01_dcgan.ipynb",
        "02_yolo_facemask.ipynb",
        "03_face_recognition.ipynb",
        "04_face_detection.ipynb",
    }
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, (
            f"{path.name}: cells {dirty} carry outputs — clear them (Jupyter: Edit → Clear Outputs of All Cells) before committing"
        )


def test_notebooks_execute_against_the_smoke_store(smoke_store, monkeypatch):
    monkeypatch.setenv("ML_PLAYGROUND_MLFLOW_URI", _uri(smoke_store))  # the kernels inherit it
    notebooks = {path.name: nbformat.read(path, as_version=4) for path in NOTEBOOKS}

    async def run_all():  # kernels start in parallel: their imports dominate
        await asyncio.gather(
            *(
                NotebookClient(
                    nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
                ).async_execute()
                for nb in notebooks.values()
            )
        )

    asyncio.run(run_all())
    outputs = {
        name: [o for c in nb.cells if c.cell_type == "code" for o in c.outputs] for name, nb in notebooks.items()
    }
    for name, outs in outputs.items():
        assert not [o for o in outs if o.output_type == "error"], name
        assert any(_uri(smoke_store) in o.get("text", "") for o in outs), f"{name} did not read the smoke store"
    dcgan_images = [o for o in outputs["01_dcgan.ipynb"] if "image/png" in o.get("data", {})]
    assert len(dcgan_images) == 3  # sample grids, loss curves side by side, sweep heat map
    overview = "".join(o["data"].get("text/markdown", "") for o in outputs["00_overview.ipynb"] if "data" in o)
    assert "exp1_dcgan_fruits" in overview and f"{NOT_RUN}" in overview  # the YOLO and VGG16 runs are missing here


def test_paper_claims_are_judged_from_the_logged_numbers():
    from types import SimpleNamespace

    from reporting.report import paper_claims_table

    def run(g_std, d_std, fid):
        metrics = {"stability/g_loss_std": g_std, "stability/d_loss_std": d_std, "quality/fid": fid}
        return SimpleNamespace(data=SimpleNamespace(metrics=metrics))

    table = paper_claims_table(
        {
            "exp1_dcgan_fruits": run(0.01, 0.2, 30.0),
            "exp2_dcgan_hardhat": run(0.3, 0.1, 50.0),
            "exp3_dcgan_hardhat_tricks": run(0.5, 0.1, 40.0),
        }
    )
    assert table["verdict"].tolist() == ["holds", "holds", "does not hold", "holds"]
    empty = paper_claims_table(
        {"exp1_dcgan_fruits": None, "exp2_dcgan_hardhat": None, "exp3_dcgan_hardhat_tricks": None}
    )
    assert set(empty["verdict"]) == {"not run yet"}
