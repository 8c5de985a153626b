"""YOLO face-mask detection: Lightning training on the synthetic set, MLflow records, ONNX parity, the tool
entries, pretrained weights, and no network access anywhere."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import cv2
import pytest
import torch

from core.errors import UserError
from core.overrides import quote
from reporting.report import NOT_RUN, build_report, report_sections
from tests.conftest import FAST, SHARED_DATA, compose, mlflow_runs, needs_shared_data, no_network


def _train(overrides: dict) -> float:
    from experiments.train import train

    return train(compose("train", {"experiment": "yolo_facemask", **overrides}))


@pytest.fixture(scope="module")
def trained(yolo_trained):
    """The session's one tiny YOLO run (tests/conftest.py: `yolo_trained`), shared with the other YOLO test files."""
    return yolo_trained


def test_training_logs_losses_map_per_class_ap_and_a_prediction_figure(trained):
    client, runs = mlflow_runs(trained["root"], "yolo_facemask")
    run = runs[0]
    metrics = run.data.metrics
    for key in ("train/box_loss_epoch", "train/cls_loss_epoch", "train/dfl_loss_epoch", "val/box_loss"):
        assert torch.isfinite(torch.tensor(metrics[key])) and metrics[key] > 0, key
    # two AdamW steps from scratch: no box of the 8 validation images is found at IoU 0.5, so every detection
    # figure is exactly 0 (test_eval_ignores_predictions_on_difficult_boxes: perfect boxes give ultralytics' 0.995)
    assert [metrics[k] for k in ("val/map50", "val/map50_95", "val/precision", "val/recall")] == [0.0] * 4
    # ultralytics' fitness (0.1·mAP50 + 0.9·mAP50-95) picks best.ckpt; the entry returns its best value
    assert metrics["val/fitness"] == pytest.approx(0.1 * metrics["val/map50"] + 0.9 * metrics["val/map50_95"])
    assert metrics["best/val/fitness"] == pytest.approx(trained["metric"]) == pytest.approx(metrics["val/fitness"])
    assert metrics["best/epoch"] == 0.0  # one epoch: it is the best
    names = {
        "val/ap50/0_with_mask": "with_mask",
        "val/ap50/1_without_mask": "without_mask",
        "val/ap50/2_mask_weared_incorrect": "mask_weared_incorrect",
    }
    assert set(names) <= set(metrics)
    assert json.loads(Path(client.download_artifacts(run.info.run_id, "class_names.json")).read_text()) == names
    assert [a.path for a in client.list_artifacts(run.info.run_id, "predictions")] == [
        "predictions/epoch_0001.jpg"
    ]  # JPEG, as ultralytics writes these
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")} == {
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
    }
    pretrained = json.loads(Path(client.download_artifacts(run.info.run_id, "pretrained.json")).read_text())
    assert pretrained["pretrained"] is None and pretrained["transferred_tensors"] == 0


def test_two_epochs_end_with_one_test_of_best_ckpt_on_held_out_photos(tmp_path):
    """After fitting, best.ckpt is evaluated once on the test split (data.test_fraction 0.2 of the 40 scenes: 8),
    whose photos are in neither the training nor the validation split; nothing selects on its figures."""
    store = {
        "paths.log_dir": str(tmp_path / "logs"),
        "paths.mlflow_dir": str(tmp_path),
        "paths.data_dir": str(tmp_path / "data"),
        "paths.cache_dir": str(tmp_path / "cache"),
    }
    overrides = {
        **store,
        **FAST,
        "trainer.max_epochs": 2,
        "data.generate.images": 40,
        "model.pretrained": "null",
        "data.test_fraction": 0.2,
    }
    value = _train(overrides)
    client, runs = mlflow_runs(tmp_path, "yolo_facemask")
    run = runs[0]
    metrics = run.data.metrics
    converted = tmp_path / "data" / "yolo" / "synthetic_facemask" / "images"
    files = {split: {p.name for p in (converted / split).glob("*.png")} for split in ("train", "val", "test")}
    assert {split: len(names) for split, names in files.items()} == {"train": 24, "val": 8, "test": 8}
    assert not files["test"] & files["train"] and not files["test"] & files["val"] and not files["train"] & files["val"]
    assert metrics["test/images"] == 8
    # four AdamW steps from scratch find no face at IoU 0.5: 0 on the test photos too, and so is its interval
    assert (metrics["test/map50_low"], metrics["test/map50"], metrics["test/map50_high"]) == (0.0, 0.0, 0.0)
    assert {"test/map50_95", "test/precision", "test/recall", "test/ap50/0_with_mask"} <= set(metrics)
    assert run.data.tags["test.checkpoint"] == "best.ckpt"
    assert len(client.get_metric_history(run.info.run_id, "test/map50")) == 1  # once, after fitting
    # the sweep value and best.ckpt come from validation alone
    assert value == metrics["best/val/fitness"] and len(client.get_metric_history(run.info.run_id, "val/fitness")) == 2
    logged = {
        tag.value: dataset_input.dataset
        for dataset_input in run.inputs.dataset_inputs
        for tag in dataset_input.tags
        if tag.key == "mlflow.data.context"
    }
    assert json.loads(logged["test"].profile)["images"] == 8


def test_checkpoint_is_plain_data_for_the_safe_loader(trained):
    from facemask.detector import YoloDetector
    from tests.test_checkpoint_trust import assert_plain_checkpoint

    module = assert_plain_checkpoint(trained["checkpoint"], YoloDetector, pretrained=None)
    assert module.names == ["with_mask", "without_mask", "mask_weared_incorrect"] and module.hparams.imgsz == 160


def test_report_shows_the_run_and_compares_real_data_runs_only(trained, tmp_path):
    run = mlflow_runs(trained["root"], "yolo_facemask")[1][0]
    text = build_report(f"sqlite:///{trained['root']}/mlflow.db", tmp_path, **report_sections()).read_text()
    section = text.split("## Face-mask detection (YOLO)")[1].split("\n## ")[0]
    assert "### yolo_facemask: synthetic data, from scratch, debug=fast" in section
    assert f"Run `{run.info.run_id[:8]}`" in section and "**Demo-scale run**" in section
    figure = "figures/yolo_synthetic_data_from_scratch_debug_fast_map.png"
    assert f"({figure})" in section and (tmp_path / figure).is_file()
    assert f"{NOT_RUN}: COCO-pretrained yolov5n: " in section  # a synthetic run is not a real-data one


def test_nothing_reaches_the_network(trained, tmp_path):
    assert trained["attempts"] == []  # training, conversion, validation, MLflow logging
    with no_network() as attempts:
        with pytest.raises(OSError):
            socket.socket().connect(("192.0.2.1", 443))  # the guard itself works (TEST-NET address)
        with pytest.raises(OSError):
            socket.getaddrinfo("example.com", 443)
    assert attempts == [("192.0.2.1", 443), "example.com"]


def test_onnx_export_gives_pytorchs_scores_and_boxes(trained, tmp_path):
    from facemask.export import BOX_TOLERANCE_PX, SCORE_TOLERANCE, export_onnx

    with no_network() as attempts:
        result = export_onnx(trained["checkpoint"], tmp_path / "facemask.onnx", imgsz=160)
    assert attempts == []
    assert (
        result["class_names"] == ["with_mask", "without_mask", "mask_weared_incorrect"] and result["image_size"] == 160
    )
    assert result["file"] == "facemask.onnx" and result["input"] == "images" and result["output"] == "output0"
    parity = result["parity"]
    assert parity["max_abs_difference"] <= parity["tolerance"] == SCORE_TOLERANCE  # class scores, absolute
    assert parity["box_max_abs_difference_px"] <= parity["box_tolerance_px"] == BOX_TOLERANCE_PX
    assert parity["detections_torch"] == parity["detections_onnx"]
    assert (tmp_path / "facemask.onnx").stat().st_size > 1_000_000


def test_onnx_parity_fails_on_a_class_score_off_by_a_little(trained, tmp_path, monkeypatch):
    """A score 0.01 off in one anchor is a parity failure (a tolerance relative to the raw output's range,
    the box pixels, would pass up to ~0.16 at 160 px), named with the file and the difference."""
    import numpy as np

    from facemask import export as yolo_export
    from training.onnx_export import ExportParityError, onnx_session

    def off_session(path):
        session = onnx_session(path)

        class Off:
            def run(self, names, feeds):
                raw = session.run(names, feeds)[0].copy()
                raw[0, 4, int(np.argmax(raw[0, 4]))] += 0.01
                return [raw]

        return Off()

    monkeypatch.setattr(yolo_export, "onnx_session", off_session)
    with pytest.raises(
        ExportParityError,
        match=r"facemask\.onnx: the class scores differ from PyTorch's by 0\.01 \(tolerance 0\.0001\)",
    ):
        yolo_export.export_onnx(trained["checkpoint"], tmp_path / "facemask.onnx", imgsz=160)


def test_eval_entry_prints_one_json_line_with_map_and_per_class_ap(trained, tmp_path, capsys, caplog):
    from experiments.eval_facemask import evaluate

    out = tmp_path / "metrics.json"  # no ckpt: the newest run's best checkpoint, named in the log and the file
    cfg = compose("eval_facemask", {**trained["store"], "voc": str(trained["voc"]), "out": str(out), "batch_size": 8})
    with no_network() as attempts, caplog.at_level("INFO"):
        evaluate(cfg)
    best = trained["checkpoint"].parent / "best.ckpt"
    assert json.loads(out.read_text())["checkpoint"] == str(best) and f"evaluated {best} on " in caplog.text
    assert attempts == []
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"map50", "map50_95", "ap50", "images"}
    assert last["images"] == 40 and set(last["ap50"]) == {"with_mask", "without_mask", "mask_weared_incorrect"}
    assert json.loads(out.read_text())["map50"] == last["map50"]


ODD_NAMES = {"with_mask": "戴口罩", "without_mask": "未戴口罩", "mask_weared_incorrect": "mask (incorrect)"}


@pytest.fixture(scope="module")
def odd_names(trained, tmp_path_factory):
    """The trained checkpoint and its VOC folder with the classes renamed to names MLflow refuses as metric names."""
    root = tmp_path_factory.mktemp("odd")
    from core.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(trained["checkpoint"])  # the project's own checkpoints need no unpickled code
    checkpoint["hyper_parameters"]["names"] = list(ODD_NAMES.values())
    torch.save(checkpoint, root / "epoch=0-step=1.ckpt")
    voc = root / "voc"
    shutil.copytree(trained["voc"] / "images", voc / "images")
    (voc / "annotations").mkdir()
    for xml in (trained["voc"] / "annotations").glob("*.xml"):
        text = xml.read_text(encoding="utf-8")
        for old, new in ODD_NAMES.items():
            text = text.replace(f"<name>{old}</name>", f"<name>{new}</name>")
        (voc / "annotations" / xml.name).write_text(text, encoding="utf-8")
    return {"checkpoint": root / "epoch=0-step=1.ckpt", "voc": voc}


def test_eval_logs_each_odd_class_name_under_its_own_metric_with_the_names_kept(trained, odd_names, tmp_path, capsys):
    from experiments.eval_facemask import evaluate

    store = {**trained["store"], "paths.mlflow_dir": str(tmp_path)}
    cfg = compose(
        "eval_facemask",
        {
            **store,
            "voc": str(odd_names["voc"]),
            "ckpt": quote(str(odd_names["checkpoint"])),
            "out": str(tmp_path / "metrics.json"),
            "batch_size": 8,
        },
    )
    evaluate(cfg)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(last["ap50"]) == list(ODD_NAMES.values())
    client, runs = mlflow_runs(tmp_path, "eval_facemask")
    run = runs[0]
    assert run.info.status == "FINISHED"
    names = {"ap50/0": "戴口罩", "ap50/1": "未戴口罩", "ap50/2_mask_incorrect": "mask (incorrect)"}
    logged = {k: v for k, v in run.data.metrics.items() if k.startswith("ap50/")}
    assert logged == {key: last["ap50"][name] for key, name in names.items() if last["ap50"][name] is not None}
    assert (
        json.loads(Path(client.download_artifacts(run.info.run_id, "class_names.json", str(tmp_path))).read_text())
        == names
    )


def test_eval_prints_its_json_line_and_writes_its_file_when_mlflow_fails(
    trained, tmp_path, capsys, caplog, monkeypatch
):
    import mlflow

    from experiments.eval_facemask import evaluate

    def refuse(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("Invalid metric name: 'ap50_mask (incorrect)'")

    monkeypatch.setattr(mlflow, "log_metrics", refuse)
    out = tmp_path / "metrics.json"
    cfg = compose(
        "eval_facemask",
        {
            **trained["store"],
            "paths.mlflow_dir": str(tmp_path),
            "voc": str(trained["voc"]),
            "ckpt": str(trained["checkpoint"]),
            "out": str(out),
            "batch_size": 8,
        },
    )
    evaluate(cfg)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["images"] == 40 and json.loads(out.read_text())["map50"] == last["map50"]
    assert "MLflow logging failed" in caplog.text and "Invalid metric name" in caplog.text


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_eval_facemask_takes_lightnings_checkpoint_name(trained, odd_names, tmp_path):
    """The documented command with CKPT=.../epoch=0-step=1.ckpt (Lightning's own name) and a VOC folder whose
    name holds '=', ',', brackets, a quote and non-ASCII: the JSON line, exit 0. A bad ARGS override: one line."""
    import subprocess

    from tests.conftest import REPO

    voc = tmp_path / "a=b, (c) [d] é's"
    shutil.copytree(odd_names["voc"], voc)
    env = {k: v for k, v in os.environ.items() if k not in {"VOC", "CKPT", "ARGS"}}

    def make(args: str):
        return subprocess.run(
            [
                "make",
                "--no-print-directory",
                "-o",
                ".venv/.installed",
                "eval-facemask",
                f"VOC={voc}",
                f"CKPT={odd_names['checkpoint']}",
                f"ARGS={args}",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = make(f"out={tmp_path / 'metrics.json'} paths.mlflow_dir={tmp_path} batch_size=8")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["images"] == 40
    assert json.loads((tmp_path / "metrics.json").read_text())["voc"] == str(voc)
    bad = make("out=[")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "no viable alternative at input '['" in bad.stderr


def test_predict_entry_annotates_images_and_video_and_counts_unmasked_faces(trained, tmp_path, capsys):
    from experiments.predict_facemask import predict

    folder = tmp_path / "in"
    folder.mkdir()
    sources = sorted((trained["voc"] / "images").glob("*.png"))[:3]
    for path in sources:
        shutil.copy(path, folder / path.name)
    cv2.imwrite(str(folder / f"{sources[0].stem}.jpg"), cv2.imread(str(sources[1])))  # another image, same stem
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (400, 300))
    for path in sources:
        writer.write(cv2.imread(str(path))[..., :3])
    writer.release()

    for source, out in ((folder, tmp_path / "out_images"), (video, tmp_path / "out_video")):
        cfg = compose(
            "predict_facemask",
            {
                **trained["store"],
                "source": str(source),
                "ckpt": str(trained["checkpoint"]),
                "out_dir": str(out),
                "conf": 0.001,
            },
        )
        with no_network() as attempts:
            summary = predict(cfg)
        assert attempts == []
        frames = 4 if source == folder else 3
        assert summary["frames"] == frames
        printed = [line for line in capsys.readouterr().out.splitlines() if "without_mask of" in line]
        assert len(printed) == frames
        rows = (out / "detections.csv").read_text().splitlines()
        assert (
            rows[0] == "source,frame,time_s,class,confidence,x0,y0,x1,y1,annotated"
            and len(rows) - 1 == summary["detections"]
        )
        assert json.loads((out / "detections.json").read_text())["names"][1] == "without_mask"
    written = sorted(p.name for p in (tmp_path / "out_images" / "annotated").glob("*.jpg"))
    assert written == sorted(
        [f"{sources[0].stem}_jpg.jpg"] + [f"{p.stem}_png.jpg" for p in sources]
    )  # none overwritten
    assert cv2.VideoCapture(str(tmp_path / "out_video" / "clip_mp4_annotated.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3


def test_monitor_entry_tracks_with_the_trained_checkpoint(trained, tmp_path, capsys):
    """monitor-facemask end to end on the tiny trained model (its counts depend on the model: they must agree with
    its own files); tests/test_monitor.py checks the exact counts with a stand-in detector."""
    from experiments.monitor_facemask import run

    sources = sorted((trained["voc"] / "images").glob("*.png"))[:2]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (400, 300))
    for path in sources:
        for _ in range(3):
            writer.write(cv2.resize(cv2.imread(str(path))[..., :3], (400, 300)))
    writer.release()
    out = tmp_path / "out"
    cfg = compose(
        "monitor_facemask",
        {
            **trained["store"],
            "source": quote(str(video)),
            "ckpt": quote(str(trained["checkpoint"])),
            "out_dir": str(out),
            "conf": 0.001,
            "alert_after_s": 0,
            "device": "cpu",
        },
    )
    with no_network() as attempts:
        summary = run(cfg)
    assert attempts == []
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        printed == {key: summary[key] for key in ("frames", "people", "unmasked_people", "alerts")}
        and printed["frames"] == 6
    )
    assert summary["checkpoint"] == str(trained["checkpoint"])
    assert len((out / "tracks.csv").read_text().splitlines()) - 1 == summary["people"]
    assert len((out / "events.jsonl").read_text().splitlines()) == summary["alerts"] == summary["unmasked_people"]
    assert cv2.VideoCapture(str(out / "annotated.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 6


def test_missing_pretrained_file_says_where_to_put_it(tmp_path):
    from facemask.detector import YoloDetector

    with pytest.raises(UserError, match="pretrained weights not found: .*put the file there"):
        YoloDetector(pretrained=str(tmp_path / "yolov5n.pt"))
    assert YoloDetector(pretrained="auto", auto_pretrained=str(tmp_path / "absent.pt")).transferred == 0


def test_state_dict_of_the_same_architecture_loads_and_another_is_refused(tmp_path):
    from facemask.detector import build_model
    from facemask.yolov5_checkpoint import load_pretrained

    names = ["a", "b", "c"]
    torch.save(build_model("yolov8n.yaml", names).state_dict(), tmp_path / "v8.pt")
    assert load_pretrained(build_model("yolov8n.yaml", names), tmp_path / "v8.pt") == 355
    with pytest.raises(UserError, match="matches only"):
        load_pretrained(build_model("yolov5n.yaml", names), tmp_path / "v8.pt")


def test_ultralytics_checkpoint_transfers_through_stand_ins(tmp_path, monkeypatch):
    """A pickled ultralytics model (as `YOLO.save` writes it) is read as data: the 319 tensors outside the 80-class
    head transfer; ultralytics' own loader (weights_only=False) is not used."""
    from ultralytics import YOLO

    from facemask.detector import build_model
    from facemask.yolov5_checkpoint import load_pretrained

    YOLO("yolov8n.yaml").save(tmp_path / "yolov8n.pt")
    for loader in ("load_checkpoint", "torch_safe_load"):
        monkeypatch.setattr(
            f"ultralytics.nn.tasks.{loader}", lambda *a, **k: pytest.fail("ultralytics' unpickler was used")
        )
    model = build_model("yolov8n.yaml", ["a", "b", "c"])
    assert load_pretrained(model, tmp_path / "yolov8n.pt") == 319


@needs_shared_data("weights", "yolov5n.pt")
def test_yolov5_repo_checkpoint_transfers_backbone_and_neck_and_is_refused_elsewhere():
    from facemask.detector import build_model
    from facemask.yolov5_checkpoint import load_pretrained, read_yolov5_state_dict

    path = SHARED_DATA / "weights" / "yolov5n.pt"
    source = read_yolov5_state_dict(path)
    model = build_model("yolov5n.yaml", ["with_mask", "without_mask", "mask_weared_incorrect"])
    assert load_pretrained(model, path) == 342 and len(model.state_dict()) == 427
    assert torch.equal(model.state_dict()["model.23.cv3.conv.weight"], source["model.23.cv3.conv.weight"])
    with pytest.raises(UserError, match="matches only 57 of the model's 427 tensors"):
        load_pretrained(build_model("yolov5s.yaml", ["a", "b", "c"]), path)


@needs_shared_data("facemask-voc")
@needs_shared_data("weights", "yolov5n.pt")
def test_real_facemask_fine_tune_from_yolov5n_and_eval(tmp_path, capsys):
    from experiments.eval_facemask import evaluate

    store = {
        "paths.log_dir": str(tmp_path / "logs"),
        "paths.mlflow_dir": str(tmp_path),
        "paths.data_dir": str(tmp_path / "data"),
        "paths.cache_dir": str(tmp_path / "cache"),
    }
    with no_network() as attempts:
        _train({**store, **FAST, "data": "facemask_real"})
        client, runs = mlflow_runs(tmp_path, "yolo_facemask")
        pretrained = json.loads(Path(client.download_artifacts(runs[0].info.run_id, "pretrained.json")).read_text())
        assert pretrained["transferred_tensors"] == 342
        # two steps at 160 px leave the new 3-class head untrained: nothing is found yet (exact, seeds fixed)
        assert runs[0].data.metrics["val/map50"] == 0.0
        checkpoint = next((tmp_path / "logs").rglob("last.ckpt"))
        evaluate(
            compose(
                "eval_facemask",
                {
                    **store,
                    "voc": str(SHARED_DATA / "facemask-voc"),
                    "ckpt": str(checkpoint),
                    "out": str(tmp_path / "eval.json"),
                },
            )
        )
    assert attempts == []
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["images"] == 114 and last["map50"] == last["map50_95"] == 0.0

    text = build_report(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "reports", **report_sections()).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| COCO-pretrained yolov5n "))
    assert runs[0].info.run_id[:8] in row and "342 of 427" in row and f"{runs[0].data.metrics['val/map50']:.4g}" in row
    assert 'from scratch: `make yolo-facemask ARGS="data=facemask_real trainer=cpu_real model.pretrained=null"`' in text


def _difficult_set(tmp_path):
    """Two 160×120 images, each with one ordinary and one difficult `with_mask` box, converted for evaluation."""
    import numpy as np

    from core.voc import VocAnnotation, VocObject, write_voc
    from facemask.data import YoloDataModule

    voc = tmp_path / "voc"
    (voc / "images").mkdir(parents=True)
    for k in range(2):
        cv2.imwrite(str(voc / "images" / f"crowd{k}.png"), np.full((120, 160, 3), 60 + 40 * k, np.uint8))
        write_voc(
            voc / "annotations" / f"crowd{k}.xml",
            VocAnnotation(
                f"crowd{k}.png",
                160,
                120,
                [VocObject("with_mask", 10, 20, 60, 80), VocObject("with_mask", 100, 30, 140, 70, difficult=True)],
            ),
        )
    data = YoloDataModule(
        str(voc),
        str(tmp_path / "yolo"),
        ["with_mask", "without_mask", "mask_weared_incorrect"],
        imgsz=96,
        batch_size=1,
        val_fraction=1.0,
    )
    data.prepare_data()
    data.setup()
    return data


def _predictions(batch: dict, names: list[str], extra_on_difficult: bool) -> torch.Tensor:
    """Raw model outputs (B, 4 + classes, anchors) that hit every labelled box (score 0.9), plus, when asked, a more
    confident prediction (0.95) on each difficult box."""
    from facemask.voc_to_yolo import difficult_boxes

    _, _, height, width = batch["img"].shape
    preds = torch.zeros(len(batch["im_file"]), 4 + len(names), 4)
    for si, image in enumerate(batch["im_file"]):
        mine = batch["batch_idx"] == si
        boxes = [
            (int(c), b * torch.tensor([width, height, width, height]), 0.9)
            for c, b in zip(batch["cls"][mine].view(-1), batch["bboxes"][mine])
        ]
        if extra_on_difficult:
            (gain, _), (pad_x, pad_y) = batch["ratio_pad"][si]  # original pixels → letterboxed input pixels
            h0, w0 = batch["ori_shape"][si]
            for c, cx, cy, w, h in difficult_boxes(image).tolist():
                boxes.append(
                    (
                        int(c),
                        torch.tensor([cx * w0 * gain + pad_x, cy * h0 * gain + pad_y, w * w0 * gain, h * h0 * gain]),
                        0.95,
                    )
                )
        for a, (c, xywh, score) in enumerate(boxes):
            preds[si, :4, a], preds[si, 4 + c, a] = xywh, score
    return preds


def _map50(preds: torch.Tensor, batch: dict, names: list[str], save_dir) -> float:
    """mAP50 of `preds` on `batch` through the validation metric code."""
    from types import SimpleNamespace

    from facemask.detector import DetectionMetrics

    metrics = DetectionMetrics(names, save_dir)
    metrics.reset(SimpleNamespace(names=dict(enumerate(names))), torch.device("cpu"))
    metrics.update(preds, batch)
    return metrics.compute()["map50"]


def test_eval_ignores_predictions_on_difficult_boxes(tmp_path):
    data = _difficult_set(tmp_path)
    assert data.report.difficult == {"crowd0": 1, "crowd1": 1}
    batch = next(iter(data.val_dataloader()))
    batch["img"] = batch["img"].float() / 255
    assert len(batch["im_file"]) == 2 and len(batch["cls"]) == 2  # the difficult boxes are no ground truth
    names, perfect = data.classes, _predictions(batch, data.classes, extra_on_difficult=False)
    extra = _predictions(batch, data.classes, extra_on_difficult=True)
    best = _map50(perfect, batch, names, tmp_path / "val")
    assert best == pytest.approx(0.995)  # ultralytics' perfect AP (its 101-point interpolation ends at 0.99)
    assert (
        _map50(extra, batch, names, tmp_path / "val") == best
    )  # the predictions on difficult boxes: neither hit nor miss
    shutil.move(tmp_path / "yolo" / "difficult", tmp_path / "aside")  # control: without the side files they are false
    assert _map50(extra, batch, names, tmp_path / "val") < 0.6  # positives, more confident than every hit
