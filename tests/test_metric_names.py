"""Class names from the data as MLflow metric names: valid, distinct, stable, the originals kept in the run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mlflow.utils.validation import _validate_metric_name
from PIL import Image

from core.metric_names import CLASS_NAMES_ARTIFACT, class_key, class_metric_names, slug
from core.overrides import override
from tests.conftest import compose, mlflow_runs

# What the case showed (CJK, brackets), names that slugify alike, and names that look like paths.
ODD_NAMES = [
    "戴口罩",
    "未戴口罩",
    "mask (incorrect)",
    "mask [incorrect]",
    "with mask",
    "with_mask",
    "",
    "../up",
    "a/b",
    "é" * 60,
    "mask: on",
]
LIGHTNING_KEEPS = re.compile(r"^[a-zA-Z0-9_/. -]+$")  # pytorch_lightning.loggers.mlflow strips anything else


def test_every_class_gets_its_own_valid_stable_metric_name():
    names = class_metric_names(ODD_NAMES, prefix="val/ap50/")
    assert list(names.values()) == ODD_NAMES  # the mapping keeps every original name, in class order
    assert list(names) == [
        "val/ap50/0",
        "val/ap50/1",
        "val/ap50/2_mask_incorrect",
        "val/ap50/3_mask_incorrect",
        "val/ap50/4_with_mask",
        "val/ap50/5_with_mask",
        "val/ap50/6",
        "val/ap50/7_up",
        "val/ap50/8_a_b",
        f"val/ap50/9_{'e' * 40}",
        "val/ap50/10_mask_on",
    ]
    for key in names:
        _validate_metric_name(key)  # raises on a name MLflow refuses
        assert LIGHTNING_KEEPS.match(key), key
    assert class_metric_names(ODD_NAMES, prefix="val/ap50/") == names  # stable: the same names every run


def test_slug_and_class_key():
    assert slug("mask (incorrect)") == "mask_incorrect" and slug("Café au lait") == "Cafe_au_lait"
    assert slug("戴口罩") == "" and class_key(0, "戴口罩") == "0" and class_key(3, "with-mask.v2") == "3_with-mask.v2"
    assert class_metric_names(["a", "a"], prefix="p/", suffix="/recall") == {"p/0_a/recall": "a", "p/1_a/recall": "a"}


def test_yolo_module_names_its_per_class_metrics_by_index_and_slug():
    from facemask.detector import YoloDetector

    model = YoloDetector(names=["戴口罩", "未戴口罩", "mask (incorrect)"], imgsz=64)
    assert model.ap50_metric_names == {
        "val/ap50/0": "戴口罩",
        "val/ap50/1": "未戴口罩",
        "val/ap50/2_mask_incorrect": "mask (incorrect)",
    }


def test_report_shows_per_class_ap_under_the_class_names_of_the_mapping():
    from reporting.report import VALIDATION_COLUMN, yolo_table

    metrics = {"val/map50": 0.5, "val/ap50/1": 0.25, "val/ap50/0": 0.75, "val/ap50/2_mask_incorrect": 0.5}
    run = SimpleNamespace(data=SimpleNamespace(metrics=metrics))
    mapping = {"val/ap50/0": "戴口罩", "val/ap50/1": "未戴口罩", "val/ap50/2_mask_incorrect": "mask (incorrect)"}
    rows = yolo_table(run, mapping).set_index("metric")[VALIDATION_COLUMN].to_dict()
    assert [k for k in rows if k.startswith("AP50")] == ["AP50 戴口罩", "AP50 未戴口罩", "AP50 mask (incorrect)"]
    assert rows["AP50 戴口罩"] == 0.75 and rows["AP50 未戴口罩"] == 0.25
    old = SimpleNamespace(data=SimpleNamespace(metrics={"val/ap50_with_mask": 0.5}))  # a run from before the mapping
    assert yolo_table(old).set_index("metric")[VALIDATION_COLUMN].to_dict()["AP50 with_mask"] == 0.5


def _voc(folder: Path, names: list[str], images: int = 2) -> Path:
    (folder / "images").mkdir(parents=True), (folder / "annotations").mkdir()
    rng = np.random.default_rng(0)
    for k in range(images):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(folder / "images" / f"im{k}.png")
        objects = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{4 + 30 * i}</xmin><ymin>10</ymin><xmax>{30 + 30 * i}</xmax>"
            f"<ymax>40</ymax></bndbox></object>"
            for i, n in enumerate(names)
        )
        (folder / "annotations" / f"im{k}.xml").write_text(
            f"<annotation><filename>im{k}.png</filename><size><width>128</width><height>96</height><depth>3</depth></size>"
            f"{objects}</annotation>",
            encoding="utf-8",
        )
    return folder


def test_detector_comparison_logs_each_class_recall_under_its_own_name(tmp_path, store):
    from experiments.compare_face_detectors import compare_face_detectors

    classes = ["戴口罩", "未戴口罩", "mask (incorrect)", "mask [incorrect]"]
    voc = _voc(tmp_path / "a=b, (c) [d] é's", classes)
    cfg = compose(
        "compare_face_detectors",
        [
            override("voc", str(voc)),
            *(f"{k}={v}" for k, v in store.items()),
            "use=[haar]",
            "rotations.enabled=false",
            f"report_dir={tmp_path / 'reports'}",
            "progress=false",
        ],
    )
    compare_face_detectors(cfg)
    assert (tmp_path / "reports" / "a_b_c_d_e_s.md").is_file()  # file names from the folder name, made safe
    client, runs = mlflow_runs(tmp_path, "compare_face_detectors")
    run = runs[0]
    assert run.info.status == "FINISHED"
    per_class = sorted(k for k in run.data.metrics if k.startswith("haar.recall_iou0.5/"))
    expected = class_metric_names(sorted(classes), prefix="recall_iou0.5/")  # classes sorted, as in the tables
    assert per_class == sorted(f"haar.{k}" for k in expected) and len(per_class) == 4
    mapping = json.loads(
        Path(client.download_artifacts(run.info.run_id, CLASS_NAMES_ARTIFACT, str(tmp_path))).read_text()
    )
    assert {k: v for k, v in mapping.items() if k.startswith("recall_iou0.5/")} == expected


def test_a_failing_tracking_store_is_a_warning_not_a_lost_result(tmp_path, store, monkeypatch, caplog):
    import mlflow

    from core.mlflow_store import log_tool_run

    def refuse(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("store refused the metric")

    monkeypatch.setattr(mlflow, "log_metrics", refuse)
    cfg = compose("eval_facemask", {**store, "voc": "x"})
    assert log_tool_run(cfg, "run", params={"p": 1}, metrics={"a": 1.0}) is None
    assert "MLflow logging failed" in caplog.text and "store refused the metric" in caplog.text
    client, runs = mlflow_runs(tmp_path, "eval_facemask")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_tool_run_logs_params_metrics_dicts_files_and_the_resolved_config(tmp_path, store):
    from core.mlflow_store import log_tool_run

    (tmp_path / "result.csv").write_text("a,b\n1,2\n")
    cfg = compose("eval_facemask", {**store, "voc": "x"})
    run_id = log_tool_run(
        cfg,
        "run",
        params={"p": 1},
        metrics={"a": 1.5},
        dicts={"d.json": {"k": "戴口罩"}},
        files=[tmp_path / "result.csv"],
    )
    client, runs = mlflow_runs(tmp_path, "eval_facemask")
    assert [(r.info.run_id, r.info.run_name, r.info.status) for r in runs] == [(run_id, "run", "FINISHED")]
    assert runs[0].data.params == {"p": "1"} and runs[0].data.metrics == {"a": 1.5}
    assert {a.path for a in client.list_artifacts(run_id)} == {"config", "d.json", "result.csv"}
    assert json.loads(Path(client.download_artifacts(run_id, "d.json", str(tmp_path / "dl"))).read_text()) == {
        "k": "戴口罩"
    }


def test_a_tool_whose_store_fails_still_writes_and_prints_its_result(tmp_path, store, monkeypatch, caplog, capsys):
    """The same funnel in another tool: convert_voc's conversion and summary line survive a refusing store."""
    import mlflow

    from experiments.convert_voc import convert

    def refuse(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("store is locked")

    monkeypatch.setattr(mlflow, "log_params", refuse)
    voc, out = _voc(tmp_path / "voc", ["with_mask", "without_mask"], images=5), tmp_path / "yolo"
    report = convert(compose("convert_voc", {**store, "src": str(voc), "out": str(out)}))
    assert report.images == {"train": 3, "val": 1, "test": 1} and (out / "data.yaml").is_file()
    assert f"{voc} -> {out}" in capsys.readouterr().out
    assert "MLflow logging failed" in caplog.text and "store is locked" in caplog.text
    client, runs = mlflow_runs(tmp_path, "convert_voc")
    assert [r.info.status for r in runs] == ["FAILED"]
