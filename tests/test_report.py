"""`make report` and the notebooks: against a small MLflow store made by smoke runs of the real entries (DCGAN),
and against one of the applications' runs made with MlflowClient under the names their producers log."""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
from mlflow.entities import Metric, Param
from nbclient import NotebookClient
from PIL import Image

from core.offline import PROJECT_ROOT
from experiments.report import report
from experiments.train import train
from reporting import mlflow_runs
from reporting.report import NOT_RUN, SELECTION_RULE, build_report, paper_claims_table, report_sections
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
    config = "synthetic data, debug=fast"  # the smoke runs' one configuration
    for name in DCGAN:
        assert images[f"{name} ({config}): samples of the last epoch"].name == (
            f"{name}_synthetic_data_debug_fast_samples.png"
        )
        assert f"{name} ({config}): D and G loss per epoch" in images
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

    # debug=fast runs are demo-scale: marked, and the paper's claims are not judged from them (issue 20).
    assert text.count("**Demo-scale run** (debug=fast smoke run, width_multiplier 1.0 → 0.0625") == 3
    claims = text[text.index("### The paper's claims") : text.index("Loss fluctuation:")]
    assert "| holds" not in claims and "does not hold" not in claims
    assert (
        "not judged: demo-scale run (exp1_dcgan_fruits: 1 epoch at 1/16 width; exp2_dcgan_hardhat: 1 epoch at 1/16 "
        'width); judge with `make exp1-dcgan ARGS="data=fruits360_real trainer=gpu"` and '
        '`make exp2-dcgan ARGS="data=hardhat_real trainer=gpu"`'
    ) in claims
    assert SELECTION_RULE in text and str(smoke_store) not in text and str(REPO) not in text


def test_empty_store_lists_every_run_as_not_run_yet(tmp_path):
    page = build_report(_uri(tmp_path), tmp_path / "reports", **report_sections())
    text = page.read_text()
    for command in (
        "make exp1-dcgan",
        "make exp2-dcgan",
        "make exp3-dcgan",
        "make sweep EXPERIMENT=<experiment>",
        "make yolo-facemask",
        "make vgg16-faces",
    ):
        assert f"{NOT_RUN}: `{command}`" in text
    assert not _linked_images(page) and not any((tmp_path / "reports" / "figures").iterdir())


def test_report_entry_writes_the_page_where_configured(smoke_store, tmp_path):
    cfg = compose("report", [f"paths.mlflow_dir={smoke_store}", f"out_dir={tmp_path / 'out'}"])
    page = report(cfg)
    assert (
        page == tmp_path / "out" / "README.md"
        and "exp1_dcgan_fruits_synthetic_data_debug_fast_samples.png" in page.read_text()
    )


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
    # and import this checkout's code, not whichever checkout the (possibly shared) editable install points at
    monkeypatch.setenv("PYTHONPATH", str(REPO))
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


def _claims_run(g_std, d_std, fid, caps="none", epochs="1000", width="1.0"):
    metrics = {"stability/g_loss_std": g_std, "stability/d_loss_std": d_std, "quality/fid": fid}
    return SimpleNamespace(
        data=SimpleNamespace(
            metrics=metrics,
            tags={"profile": "trainer=gpu", "profile.caps": caps},
            params={"trainer.max_epochs": epochs, "model.generator.width_multiplier": width},
        )
    )


def test_paper_claims_are_judged_from_the_logged_numbers():
    full = {
        "exp1_dcgan_fruits": _claims_run(0.01, 0.2, 30.0),
        "exp2_dcgan_hardhat": _claims_run(0.3, 0.1, 50.0),
        "exp3_dcgan_hardhat_tricks": _claims_run(0.5, 0.1, 40.0),
    }
    table = paper_claims_table(full, report_sections()["paper_scale"])
    assert table["verdict"].tolist() == ["holds", "holds", "does not hold", "holds"]
    empty = paper_claims_table(
        {"exp1_dcgan_fruits": None, "exp2_dcgan_hardhat": None, "exp3_dcgan_hardhat_tricks": None}
    )
    assert set(empty["verdict"]) == {"not run yet"}


def test_paper_claims_are_not_judged_from_demo_scale_runs():
    runs = {
        "exp1_dcgan_fruits": _claims_run(0.01, 0.2, 30.0),
        "exp2_dcgan_hardhat": _claims_run(
            0.3, 0.1, 50.0, caps="max_epochs 800 → 5, width_multiplier 1.0 → 0.125", epochs="5", width="0.125"
        ),
        "exp3_dcgan_hardhat_tricks": _claims_run(0.5, 0.1, 40.0),
    }
    table = paper_claims_table(runs, report_sections()["paper_scale"])
    exp2 = 'make exp2-dcgan ARGS="data=hardhat_real trainer=gpu"'
    not_judged = "not judged: demo-scale run (exp2_dcgan_hardhat: 5 epochs at 1/8 width); judge with "
    assert table["verdict"].tolist() == [
        "holds",  # exp1 alone: full scale
        f'{not_judged}`make exp1-dcgan ARGS="data=fruits360_real trainer=gpu"` and `{exp2}`',
        f'{not_judged}`{exp2}` and `make exp3-dcgan ARGS="data=hardhat_real trainer=gpu"`',
        f'{not_judged}`{exp2}` and `make exp3-dcgan ARGS="data=hardhat_real trainer=gpu"`',
    ]
    assert table["measured here"][1] == "G std 0.3 vs exp1 0.01"  # the numbers stay on show


def test_paths_are_written_relative_to_the_repository():
    assert mlflow_runs.repo_relative(PROJECT_ROOT / "data" / "x.png") == "data/x.png"
    assert mlflow_runs.repo_relative(PROJECT_ROOT.parent / "shared" / "data" / "faces") == "../shared/data/faces"
    assert mlflow_runs.repo_relative("/elsewhere/on/a/machine/voc") == "<outside the repository>/voc"
    assert mlflow_runs.repo_relative("data/x") == "data/x"
    assert mlflow_runs.repo_relative_uri(f"sqlite:///{PROJECT_ROOT}/mlflow.db") == "sqlite:///mlflow.db"
    assert mlflow_runs.repo_relative_uri("http://127.0.0.1:5001") == "http://127.0.0.1:5001"
    assert mlflow_runs.repo_relative_text(f"read {PROJECT_ROOT}/data/voc and {PROJECT_ROOT.parent}/shared/x") == (
        "read data/voc and ../shared/x"
    )


# -- a store of the applications' runs, made with MlflowClient: the metrics, params, tags and artifacts the
# report's YOLO, face, face-detector, LFW and open-set sections read, under the names their producers log ----------
RED, GREEN, BLUE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)
SHARED = PROJECT_ROOT.parent / "shared" / "data"
FULL = {"profile": "trainer=gpu", "profile.caps": "none"}
SMALL_YOLO = {"profile": "trainer=cpu_small", "profile.caps": "max_epochs 30 → 5, detector_imgsz 640 → 320"}
YOLO_PARAMS = {"selection.metric": "val/fitness", "selection.mode": "max", "model.arch": "yolov5n.yaml", "epochs": "30"}
REAL_DATA = {"data.generate": "None"}
SYNTHETIC_DATA = {"data.generate._target_": "synthetic.make_facemask"}
WEIGHTS = str(SHARED / "weights" / "yolov5n.pt")


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.fromarray(np.full((120, 160, 3), colour, np.uint8)).save(path)
    return path


def _log_run(
    client,
    root: Path,
    experiment: str,
    start: int,
    *,
    params=None,
    tags=None,
    metrics=None,
    histories=None,
    dicts=None,
    files=None,
    status="FINISHED",
) -> str:
    """One run as its producer would leave it: `histories` {key: [value per epoch]} at steps 1…n, `metrics` once,
    `dicts` {artifact: JSON value}, `files` {artifact path: RGB colour of a PNG}."""
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, str(root / "mlruns" / experiment))
    run = client.create_run(exp_id, start_time=start, tags=tags or {}, run_name=f"{experiment}-{start}")
    run_id = run.info.run_id
    steps = max((len(v) for v in (histories or {}).values()), default=0)
    client.log_batch(
        run_id,
        metrics=[
            *(
                Metric(key, value, start + step, step)
                for key, values in (histories or {}).items()
                for step, value in enumerate(values, 1)
            ),
            *(Metric(key, value, start + steps + 1, steps) for key, value in (metrics or {}).items()),
        ],
        params=[Param(key, value) for key, value in (params or {}).items()],
    )
    for artifact, value in (dicts or {}).items():
        client.log_dict(run_id, value, artifact)
    with tempfile.TemporaryDirectory() as tmp:
        for artifact, content in (files or {}).items():
            local = Path(tmp) / Path(artifact).name
            if isinstance(content, str):
                local.write_text(content)
            else:
                _png(local, content)
            folder = str(Path(artifact).parent)
            client.log_artifact(run_id, str(local), None if folder == "." else folder)
    client.set_terminated(run_id, status, end_time=start + 1000)
    return run_id


def _yolo(
    client, root, start, *, fitness, map50, pretrained, colour, data=REAL_DATA, tags=FULL, status="FINISHED", test=None
):
    return _log_run(
        client,
        root,
        "yolo_facemask",
        start,
        params={**YOLO_PARAMS, **data, "model.pretrained": "auto", "model.imgsz": "640", "trainer.max_epochs": "30"},
        tags=tags,
        metrics={"best/val/fitness": fitness, "best/epoch": 1.0, "val/ap50/0_with_mask": map50 + 0.1, **(test or {})},
        histories={
            "val/map50": [map50 / 2, map50],
            "val/map50_95": [map50 / 4, map50 / 2],
            "val/fitness": [fitness / 2, fitness],
            "train/box_loss_epoch": [2.0, 1.5],
            "val/box_loss": [2.5, 1.75],
        },
        dicts={
            "pretrained.json": {
                "pretrained": pretrained,
                "transferred_tensors": 342 if pretrained else 0,
                "model_tensors": 427,
            },
            "class_names.json": {"val/ap50/0_with_mask": "with_mask"},
        },
        files={"predictions/epoch_0001.jpg": GREY, "predictions/epoch_0002.jpg": colour},  # JPEG, as logged
        status=status,
    )


def _faces(client, root, start, *, acc, data, tags, backbone="dlib_resnet", colour=GREY, test=None):
    return _log_run(
        client,
        root,
        "vgg16_faces",
        start,
        params={
            "selection.metric": "val/acc",
            "selection.mode": "max",
            "model.backbone": backbone,
            "model.weights": "None",
            "model.image_size": "150",
            "epochs": "20",
            "trainer.max_epochs": "20",
            **data,
        },
        tags=tags,
        metrics={"best/val/acc": acc, "epoch": 1.0, "train/loss": 0.25, "val/loss": 0.5, **(test or {})},
        histories={"train/acc": [0.5, 0.95], "val/acc": [acc / 2, acc]},
        dicts={"per_class.json": {"Ada_Lovelace": {"precision": 1.0, "recall": 0.5, "images": 4}}},
        files={"figures/confusion_matrix.png": colour},
    )


@pytest.fixture(scope="module")
def app_store(tmp_path_factory) -> dict:
    """The applications' runs; returns {"root": store folder, role: run id} for the runs the tests look for."""
    root = tmp_path_factory.mktemp("apps")
    client = mlflow_runs.connect(_uri(root))
    t = 1_790_000_000_000  # ms; each run one second after the one before
    ids = {"root": root}
    held_out = {"test/map50": 0.5432, "test/map50_low": 0.4112, "test/map50_high": 0.6634, "test/images": 23.0}
    held_out |= {"test/map50_95": 0.25, "test/ap50/0_with_mask": 0.61}
    ids["yolo_best"] = _yolo(
        client, root, t + 1000, fitness=0.45, map50=0.39, pretrained=WEIGHTS, colour=RED, test=held_out
    )
    ids["yolo_newer_worse"] = _yolo(client, root, t + 3000, fitness=0.30, map50=0.25, pretrained=WEIGHTS, colour=GREEN)
    ids["yolo_scratch"] = _yolo(client, root, t + 4000, fitness=0.05, map50=0.01, pretrained=None, colour=BLUE)
    ids["yolo_synthetic_demo"] = _yolo(
        client,
        root,
        t + 5000,
        fitness=0.9,
        map50=0.8,
        pretrained=WEIGHTS,
        colour=GREY,
        data=SYNTHETIC_DATA,
        tags=SMALL_YOLO,
    )
    ids["yolo_failed"] = _yolo(
        client, root, t + 6000, fitness=0.99, map50=0.99, pretrained=WEIGHTS, colour=GREY, status="FAILED"
    )
    real_faces = {"data.generate": "None", "data.root": str(SHARED / "faces")}
    ids["faces_best"] = _faces(
        client,
        root,
        t + 7000,
        acc=0.9,
        data=real_faces,
        tags={"profile": "trainer=cpu_real", "profile.caps": "none"},
        colour=RED,
        test={"test/acc": 0.875, "test/acc_low": 0.7891, "test/acc_high": 0.9287, "test/images": 88.0},
    )
    ids["faces_newer_worse"] = _faces(
        client,
        root,
        t + 8000,
        acc=0.7,
        data=real_faces,
        tags={"profile": "trainer=cpu_real", "profile.caps": "none"},
        colour=GREEN,
    )
    ids["faces_synthetic"] = _faces(
        client,
        root,
        t + 9000,
        acc=1.0,
        backbone="vgg16",
        data={
            "data.generate._target_": "synthetic.make_faces",
            "data.root": str(PROJECT_ROOT / "data" / "synthetic" / "faces"),
        },
        tags={"profile": "trainer=cpu_small", "profile.caps": "max_epochs 20 → 5, max_images all → 512"},
    )
    table = f"# Face detectors on {PROJECT_ROOT}/data/voc\n\n| detector | recall@0.5 |\n|:--|--:|\n| hog | 0.75 |\n"
    for start, recall in ((t + 10_000, "0.5"), (t + 11_000, "0.75")):
        ids["detectors"] = _log_run(
            client,
            root,
            "compare_face_detectors",
            start,
            params={"voc": str(PROJECT_ROOT / "data" / "voc")},
            metrics={"hog.recall_iou0.5": float(recall)},
            files={"face_detectors.md": table.replace("0.75", recall), "recall_vs_rotation.png": BLUE},
        )
    ids["lfw"] = _log_run(
        client,
        root,
        "eval_lfw",
        t + 12_000,
        params={"pairs": str(SHARED / "lfw-pairs"), "tolerance": "0.6"},
        metrics={
            "accuracy": 0.9873,
            "std": 0.0025,
            "accuracy_at_tolerance": 0.9737,
            "pairs": 3000.0,
            "images": 3811.0,
            "faces_not_found": 22.0,
        },
        files={"roc.png": GREEN},
    )
    ids["open_set"] = _log_run(
        client,
        root,
        "eval_openset",
        t + 13_000,
        params={"tolerance": "None", "threshold": "0.5452", "target_far": "0.01"},
        metrics={"open_set/identification_accuracy": 0.95, "open_set/stranger_rejection": 0.8125},
        files={"figures/open_set.png": RED, "figures/gallery_size.png": GREEN},
    )
    return ids


def _section(text: str, heading: str) -> str:
    """The text from `heading` to the next heading of the same level."""
    level = heading.split(" ")[0]
    start = text.index(heading)
    following = [m.start() for m in re.finditer(rf"^{level} ", text[start + 1 :], re.M)]
    return text[start : start + 1 + following[0]] if following else text[start:]


def _colour(path: Path) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.asarray(Image.open(path).convert("RGB"))[60, 80])


def test_best_run_per_configuration_not_the_newest(app_store):
    client = mlflow_runs.connect(_uri(app_store["root"]))
    selected = mlflow_runs.best_runs(client, "yolo_facemask")
    assert [(c.label, r.info.run_id) for c, r in selected.items()] == [
        ("real data, pretrained (yolov5n.pt), trainer=gpu", app_store["yolo_best"]),  # fitness 0.45, not the newer 0.30
        ("real data, from scratch, trainer=gpu", app_store["yolo_scratch"]),  # full scale, fitness 0.05
        ("synthetic data, pretrained (yolov5n.pt), trainer=cpu_small", app_store["yolo_synthetic_demo"]),  # 0.9, demo
    ]  # the FAILED run with fitness 0.99 is never picked
    faces = mlflow_runs.best_runs(client, "vgg16_faces")
    assert [r.info.run_id for r in faces.values()] == [app_store["faces_best"], app_store["faces_synthetic"]]
    assert [c.label for c in faces] == [
        "real data, dlib_resnet, trainer=cpu_real",
        "synthetic data, vgg16, random init, trainer=cpu_small",
    ]


def test_report_shows_the_applications_runs(app_store, tmp_path):
    page = build_report(_uri(app_store["root"]), tmp_path / "reports", **report_sections())
    text = page.read_text()
    images = _linked_images(page)
    run_ids = {role: run_id[:8] for role, run_id in app_store.items() if role != "root"}

    yolo = _section(text, "## Face-mask detection (YOLO)")
    real_pretrained = _section(yolo, "### yolo_facemask: real data, pretrained (yolov5n.pt), trainer=gpu")
    assert run_ids["yolo_best"] in real_pretrained and run_ids["yolo_newer_worse"] not in yolo
    # beside the validation figure that chose best.ckpt (at its epoch), best.ckpt's test figure with its interval
    assert (
        "| mAP50          |                            0.39  | 0.54 [0.41, 0.66] on 23 test photos |" in real_pretrained
    )
    assert "| AP50 with_mask |                            0.49  | 0.61 " in real_pretrained
    assert "test (best.ckpt" not in _section(yolo, "### yolo_facemask: real data, from scratch")  # no test split
    # the predictions shown are the selected run's (red), not the newest run's
    shown = images["validation predictions (real data, pretrained (yolov5n.pt), trainer=gpu)"]
    assert shown.suffix == ".jpg"  # the logged JPEG under its own suffix
    np.testing.assert_allclose(_colour(shown), RED, atol=2)  # JPEG: within 2 levels
    np.testing.assert_allclose(
        _colour(images["validation predictions (real data, from scratch, trainer=gpu)"]), BLUE, atol=2
    )
    assert (
        yolo.index("pretrained (yolov5n.pt), trainer=gpu")
        < yolo.index("from scratch, trainer=gpu")
        < yolo.index("synthetic data")
    )  # real data first, the better start first
    synthetic = _section(yolo, "### yolo_facemask: synthetic data")
    assert "**Demo-scale run** (max_epochs 30 → 5, detector_imgsz 640 → 320)" in synthetic
    assert "Demo-scale" not in real_pretrained
    compare = _section(yolo, "### Real face-mask subset")
    rows = [line for line in compare.splitlines() if line.startswith("| COCO") or line.startswith("| from scratch")]
    assert run_ids["yolo_best"] in rows[0] and "342 of 427" in rows[0] and "0.39" in rows[0]
    assert rows[0].endswith("| 0.54 [0.41, 0.66] on 23 test photos |")
    assert run_ids["yolo_scratch"] in rows[1] and "0 of 427" in rows[1] and "0.01" in rows[1]
    assert images["val mAP per epoch, COCO-pretrained vs from scratch"].is_file()

    faces = _section(text, "## Face recognition (VGG16 transfer learning)")
    best = _section(faces, "### vgg16_faces: real data, dlib_resnet, trainer=cpu_real")
    assert run_ids["faces_best"] in best and run_ids["faces_newer_worse"] not in faces
    assert "data `../shared/data/faces`" in best
    assert "|        2 |             0.95 |                   0.9 |         0.25 |               0.5 |" in best
    assert "|                                0.9 | 0.88 [0.79, 0.93] on 88 test photos |" in best
    assert "| Ada_Lovelace |           1 |      0.5 |        4 |" in best
    assert _colour(images["validation confusion matrix (real data, dlib_resnet, trainer=cpu_real)"]) == RED
    assert "**Demo-scale run** (max_epochs 20 → 5, max_images all → 512)" in faces

    detectors = _section(text, "## Face detectors compared")
    assert run_ids["detectors"] in detectors and "on `data/voc`" in detectors
    assert "### Face detectors on data/voc" in detectors and "| hog | 0.75 |" in detectors  # the newest run's table
    assert _colour(images["recall_vs_rotation"]) == BLUE

    lfw = _section(text, "## Face verification on LFW")
    assert run_ids["lfw"] in lfw and "`../shared/data/lfw-pairs`, fixed tolerance 0.6" in lfw
    assert (
        "| accuracy (k-fold thresholds)    |    0.9873 |" in lfw
        and "| photos without a detected face  |   22      |" in lfw
    )
    assert _colour(images["LFW verification ROC curve"]) == GREEN

    open_set = _section(text, "## Open-set recognition")
    assert run_ids["open_set"] in open_set and "threshold 0.5452 set for a false-alarm rate of 0.01" in open_set
    np.testing.assert_allclose(_colour(images["open-set rates by gallery size"]), GREEN, atol=2)
    assert "| identification accuracy |  0.95   |" in open_set and "| stranger rejection      |  0.8125 |" in open_set
    assert _colour(images["open-set recognition"]) == RED

    # the runs table: one row per configuration, real data first, with its scale
    runs_rows = [line for line in _section(text, "## Runs").splitlines() if "| yolo_facemask " in line]
    assert [run_ids["yolo_best"] in runs_rows[0], run_ids["yolo_scratch"] in runs_rows[1]] == [True, True]
    assert "| full " in runs_rows[0] and "| demo-scale (max_epochs 30 → 5" in runs_rows[2]
    assert NOT_RUN not in _section(text, "## Runs").split("| face-mask detection", 1)[1]  # every application ran
    assert str(PROJECT_ROOT) not in text and str(app_store["root"]) not in text  # no machine's absolute path
    assert text.count("<outside the repository>") == 1  # the store itself, outside this checkout in the test


def test_a_run_whose_monitored_metric_never_moved_is_marked_did_not_learn(tmp_path):
    client = mlflow_runs.connect(_uri(tmp_path))
    note = f"model.pretrained=auto: {WEIGHTS} not found"
    t = 1_790_000_000_000

    def run(start, fitness, pretrained=None):
        run_id = _log_run(
            client,
            tmp_path,
            "yolo_facemask",
            start,
            params={**YOLO_PARAMS, **SYNTHETIC_DATA, "model.pretrained": "auto"},
            tags=SMALL_YOLO,
            histories={"val/fitness": fitness},
            dicts={"pretrained.json": {"pretrained": pretrained, "note": "" if pretrained else note}},
        )
        return client.get_run(run_id)

    stuck = run(t, [0.0, 0.0004, 0.0, 0.0009])
    assert mlflow_runs.learning_verdict(client, stuck) == (
        "did not learn: val/fitness never improved on 0.000 in 4 epochs; "
        "from scratch (model.pretrained=auto: ../shared/data/weights/yolov5n.pt not found)"
    )
    page = build_report(_uri(tmp_path), tmp_path / "reports", **report_sections())  # the store's only run
    section = _section(page.read_text(), "## Face-mask detection (YOLO)")
    assert f"Run `{stuck.info.run_id[:8]}`" in section
    assert "**Did not learn: val/fitness never improved on 0.000 in 4 epochs; from scratch" in section
    assert mlflow_runs.learning_verdict(client, run(t + 1000, [0.0, 0.0, 0.0011])) is None  # moved by more than 1e-3
    assert mlflow_runs.learning_verdict(client, run(t + 2000, [0.3, 0.3], WEIGHTS)) == (
        "did not learn: val/fitness never improved on 0.300 in 2 epochs; pretrained (yolov5n.pt)"
    )
    assert mlflow_runs.learning_verdict(client, run(t + 3000, [0.0])) is None  # one epoch: nothing to judge
    # a metric whose better direction is down: a KID that only rose never moved in its own direction
    kid = _log_run(
        client,
        tmp_path,
        "exp1_dcgan_fruits",
        t + 4000,
        params={"selection.metric": "quality/kid", "selection.mode": "min"},
        histories={"quality/kid": [1.1, 1.3, 1.2]},
    )
    assert mlflow_runs.learning_verdict(client, client.get_run(kid)) == (
        "did not learn: quality/kid never improved on 1.100 in 3 epochs"
    )


def _size_rows(recalls: dict[str, tuple[int, int, int]]) -> dict:
    """A size_recall table as eval-facemask writes it: bin → (faces, found, correct)."""
    from core.intervals import wilson_interval

    rows = {}
    for label in ("<16", "16-32", "32-64", "64-128", ">=128"):
        faces, found, correct = recalls.get(label, (0, 0, 0))
        low, high = wilson_interval(found, faces) if faces else (None, None)
        rows[label] = {
            "faces": faces,
            "found": found,
            "correct": correct,
            "recall": found / faces if faces else None,
            "recall_low": low,
            "recall_high": high,
            "class_recall": correct / faces if faces else None,
        }
    return rows


def test_recall_by_face_size_is_shown_per_checkpoint_with_its_training_runs_zoom(tmp_path):
    import json

    from mlflow import MlflowClient

    from reporting.report import size_recall_rows

    client = MlflowClient(_uri(tmp_path))
    folders = {}
    for start, zoom in (
        (1_000, None),
        (2_000, {"data.zoom.p": "0.5", "data.zoom.max_zoom": "8", "data.zoom.max_fraction": "0.7"}),
    ):
        folders[start] = f"logs/yolo_facemask/runs/{start}"
        _log_run(
            client,
            tmp_path,
            "yolo_facemask",
            start,
            params=zoom or {"data.zoom": "None"},
            tags={"output_dir": str(REPO / folders[start])},
        )
    held_out = {1_000: {"64-128": (13, 10, 10)}, 2_000: {"64-128": (13, 13, 12)}}
    portraits = {
        1_000: {"64-128": (402, 3, 3), ">=128": (35, 0, 0)},
        2_000: {"64-128": (402, 269, 189), ">=128": (35, 16, 4)},
    }
    for start in (1_000, 2_000):
        for offset, written in (
            (10, {}),
            (20, {"recall_by_size": _size_rows(held_out[start]), "portraits": _size_rows(portraits[start])}),
        ):
            _log_run(  # an older measurement first, written before the rows were in the file: passed over
                client,
                tmp_path,
                "eval_facemask",
                start + offset,
                params={"checkpoint": f"{folders[start]}/checkpoints/best.ckpt", "split": "test"},
                metrics={"map50": 0.8 + start / 1e5, "images": 23, "portraits/64-128": 0.5},
                files={"metrics.json": json.dumps(written)},
            )
    rows = size_recall_rows(client, "eval_facemask", "yolo_facemask")
    assert [r["start"].split(", ", 1)[1] for r in rows] == ["zoom p 0.5, max ×8, to 0.7 of the side", "no zoom"]
    assert [r["portraits"]["64-128"]["found"] for r in rows] == [269, 3]
    page = build_report(_uri(tmp_path), tmp_path / "reports", **report_sections()).read_text()
    section = _section(page, "## Face-mask detection: recall by face size")
    assert "0.669 [0.62, 0.71] of 402" in section and "0.007 [0.00, 0.02] of 402" in section  # portraits, both starts
    assert "1.000 [0.77, 1.00] of 13" in section and "<16 px" not in section  # bins without faces are left out
    assert "0.4416" in section  # found and called without_mask: (189 + 4) / 437
