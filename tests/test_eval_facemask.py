"""YOLO evaluation as YOLO users expect it: ultralytics' AP on hand-built predictions (exact values), its plots
(PR/F1/P/R curves, confusion matrices, validation batches) and results.csv logged to the training run and to the
eval-facemask run, and eval-facemask reproducing the run's logged val/map50 on the validation split."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import compose, mlflow_runs
from tests.test_yolo import FAST, no_network, trained  # noqa: F401  (the module's tiny training run, reused)

NAMES = ["with_mask", "without_mask", "mask_weared_incorrect"]
PLOTS = {
    "BoxPR_curve.png",
    "BoxF1_curve.png",
    "BoxP_curve.png",
    "BoxR_curve.png",
    "confusion_matrix.png",
    "confusion_matrix_normalized.png",
}


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    """Two 160×120 images with one `with_mask` box each, converted for evaluation; its one validation batch."""
    from core.voc import VocAnnotation, VocObject, write_voc
    from facemask.data import YoloDataModule

    root = tmp_path_factory.mktemp("two_faces")
    voc = root / "voc"
    (voc / "images").mkdir(parents=True)
    for k in range(2):
        cv2.imwrite(str(voc / "images" / f"face{k}.png"), np.full((120, 160, 3), 60 + 40 * k, np.uint8))
        write_voc(
            voc / "annotations" / f"face{k}.xml",
            VocAnnotation(f"face{k}.png", 160, 120, [VocObject("with_mask", 10 + 20 * k, 20, 60 + 20 * k, 80)]),
        )
    data = YoloDataModule(str(voc), str(root / "yolo"), NAMES, imgsz=96, batch_size=1, val_fraction=1.0)
    data.prepare_data()
    data.setup()
    batch = next(iter(data.val_dataloader()))
    batch["img"] = batch["img"].float() / 255
    assert len(batch["im_file"]) == 2 and batch["cls"].view(-1).tolist() == [0.0, 0.0]
    return batch


def _raw_predictions(batch: dict, false_positive: bool) -> torch.Tensor:
    """Raw model outputs (B, 4 + classes, anchors), boxes xywh in the batch's letterboxed pixels: every ground-truth
    box exactly, `with_mask` at score 0.9; with `false_positive`, one more `with_mask` at 0.95 in image 0 where there
    is no face (IoU 0 with its box)."""
    _, _, height, width = batch["img"].shape
    scale = torch.tensor([width, height, width, height])
    preds = torch.zeros(len(batch["im_file"]), 4 + len(NAMES), 2)
    for si in range(len(batch["im_file"])):
        mine = batch["batch_idx"] == si
        (cls,), (box,) = batch["cls"][mine].view(-1).tolist(), batch["bboxes"][mine]
        preds[si, :4, 0], preds[si, 4 + int(cls), 0] = box * scale, 0.9
    if false_positive:
        preds[0, :4, 1], preds[0, 4 + 0, 1] = torch.tensor([0.85, 0.5, 0.2, 0.3]) * scale, 0.95
    return preds


def _evaluate(batch: dict, preds: torch.Tensor, save_dir: Path):
    from facemask.detector import DetectionMetrics

    metrics = DetectionMetrics(NAMES, save_dir)
    metrics.reset(SimpleNamespace(names=dict(enumerate(NAMES))), torch.device("cpu"))
    metrics.update(preds, batch)
    return metrics.compute(), metrics.snapshot


def ultralytics_ap(precision_envelope) -> float:
    """AP as ultralytics computes it (`ultralytics.utils.metrics.compute_ap`): the precision envelope p(r) (the
    best precision at recall ≥ r) sampled at the 101 recalls r = 0, 0.01, …, 1 (COCO's points) and integrated by
    the trapezoidal rule, with ultralytics' sentinel p(1.0) = 0. So a perfect detector scores 1 − 0.01/2 = 0.995,
    not COCO's 1.0 (COCO averages the 101 samples and keeps p(1.0) = 1)."""
    r = np.linspace(0, 1, 101)
    p = np.array([precision_envelope(x) for x in r[:-1]] + [0.0])
    return float(0.01 * (p.sum() - (p[0] + p[-1]) / 2))


def test_predictions_that_are_the_ground_truth_score_ultralytics_perfect_map50(two_faces, tmp_path):
    result, snapshot = _evaluate(two_faces, _raw_predictions(two_faces, false_positive=False), tmp_path)
    perfect = ultralytics_ap(lambda r: 1.0)
    assert perfect == pytest.approx(0.995, abs=1e-12)
    assert result["map50"] == pytest.approx(perfect, abs=1e-12) and result["map50_95"] == pytest.approx(perfect)
    assert result["ap50"] == {"with_mask": pytest.approx(perfect), "without_mask": None, "mask_weared_incorrect": None}
    # confusion matrix [predicted, true], last row/column background: both faces found, nothing else
    expected = np.zeros((4, 4))
    expected[0, 0] = 2
    np.testing.assert_array_equal(snapshot.confusion, expected)


def test_one_false_positive_gives_the_ap_computed_by_hand(two_faces, tmp_path):
    """Ranked by confidence: the false positive (0.95), then the two hits (0.9): recall 0, 1/2, 1 at precision
    0, 1/2, 2/3. The envelope is 2/3 up to recall 1, so AP = 0.01·(100·2/3 − (2/3 + 0)/2) = 199/300."""
    result, snapshot = _evaluate(two_faces, _raw_predictions(two_faces, false_positive=True), tmp_path)
    by_hand = ultralytics_ap(lambda r: 2 / 3)
    assert by_hand == pytest.approx(199 / 300, abs=1e-12)
    assert result["map50"] == pytest.approx(by_hand, abs=1e-9)
    assert result["ap50"]["with_mask"] == pytest.approx(by_hand, abs=1e-9)
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 3] = 2, 1  # two hits, one `with_mask` predicted on background
    np.testing.assert_array_equal(snapshot.confusion, expected)


def test_map50_interval_resamples_images_and_recomputes_ultralytics_ap(two_faces, tmp_path):
    """The two images of the false-positive case resampled: image 0 twice (its false positive at 0.95 twice, then
    two hits: precision ½ at recall 1, AP 0.4975) or image 1 twice (a perfect 0.995), each with probability 1/4,
    else one of each (199/300). The 2.5 % and 97.5 % quantiles of 1,000 resamples are the two extremes."""
    from facemask.detector import DetectionMetrics, map50, map50_interval

    metrics = DetectionMetrics(NAMES, tmp_path)
    metrics.reset(SimpleNamespace(names=dict(enumerate(NAMES))), torch.device("cpu"))
    metrics.update(_raw_predictions(two_faces, false_positive=True), two_faces)
    result = metrics.compute()
    assert len(metrics.per_image["tp"]) == 2 and result["images"] == 2
    assert map50(metrics.per_image) == pytest.approx(result["map50"], abs=1e-12) == pytest.approx(199 / 300, abs=1e-9)
    assert map50(metrics.per_image, np.array([0, 0])) == pytest.approx(ultralytics_ap(lambda r: 0.5), abs=1e-9)
    low, high = map50_interval(metrics.per_image)
    assert (low, high) == (pytest.approx(0.4975, abs=1e-9), pytest.approx(0.995, abs=1e-9))


def test_plots_are_ultralytics_files_with_labels_beside_predictions(two_faces, tmp_path):
    from facemask.plots import write_plots

    _, snapshot = _evaluate(two_faces, _raw_predictions(two_faces, false_positive=True), tmp_path / "val")
    assert len(snapshot.batches) == 1
    assert snapshot.batches[0]["preds"]["conf"].tolist() == pytest.approx([0.95, 0.9, 0.9])
    written = write_plots(snapshot, tmp_path / "plots")
    assert {p.name for p in written} == PLOTS | {"val_batch0_labels.jpg", "val_batch0_pred.jpg"}
    assert list((tmp_path / "val").iterdir()) == []  # the epoch's own computation draws nothing
    labels, pred = (cv2.imread(str(tmp_path / "plots" / f"val_batch0_{k}.jpg")) for k in ("labels", "pred"))
    assert labels.shape == pred.shape and not np.array_equal(labels, pred)  # the false positive is drawn


def test_training_logs_results_csv_and_ultralytics_plots_of_the_last_epoch(trained):  # noqa: F811
    client, runs = mlflow_runs(trained["root"], "yolo_facemask")
    run = runs[0]
    metrics = run.data.metrics
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert PLOTS <= plots and {"val_batch0_labels.jpg", "val_batch0_pred.jpg"} <= plots
    path = Path(client.download_artifacts(run.info.run_id, "results.csv"))
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert len(rows) == 1 and float(rows[0]["epoch"]) == 1.0  # one epoch, 1-based as in ultralytics' results.csv
    for key in ("val/map50", "val/map50_95", "val/precision", "val/recall", "val/fitness", "train/box_loss_epoch"):
        assert float(rows[0][key]) == pytest.approx(metrics[key], rel=1e-6), key


def test_eval_on_the_validation_split_reproduces_the_logged_val_map50(trained, tmp_path, capsys):  # noqa: F811
    from experiments.eval_facemask import evaluate

    voc = tmp_path / "val-split"  # the run's validation images (as converted for training) with their annotations
    (voc / "images").mkdir(parents=True)
    (voc / "annotations").mkdir()
    val = sorted((trained["root"] / "data" / "yolo" / "synthetic_facemask" / "images" / "val").glob("*.png"))
    assert len(val) == 8
    for image in val:  # the converter names `a.png` `a_png.png`
        stem, extension = image.stem.rsplit("_", 1)
        shutil.copy(trained["voc"] / "images" / f"{stem}.{extension}", voc / "images")
        shutil.copy(trained["voc"] / "annotations" / f"{stem}.xml", voc / "annotations")
    out = tmp_path / "out" / "metrics.json"
    cfg = compose(
        "eval_facemask",
        {
            **trained["store"],
            "paths.mlflow_dir": str(tmp_path),
            "voc": str(voc),
            "ckpt": str(trained["checkpoint"]),  # last.ckpt: the weights validated at the end of the one epoch
            "out": str(out),
            "batch_size": FAST["data.batch_size"],  # the same batches, so the same letterbox shapes (rect)
        },
    )
    with no_network() as attempts:
        result = evaluate(cfg)
    assert attempts == []
    logged = mlflow_runs(trained["root"], "yolo_facemask")[1][0].data.metrics
    assert result["images"] == 8
    assert result["map50"] == pytest.approx(logged["val/map50"], abs=1e-6)
    assert result["map50_95"] == pytest.approx(logged["val/map50_95"], abs=1e-6)
    # the 2-step model finds no face (mAP 0 both times): its losses, never 0, show the same images and weights
    report = json.loads(out.read_text())
    for key in ("box_loss", "cls_loss", "dfl_loss"):
        # float32 sums of the same per-image terms in another order: equal to a few parts in a million
        assert report["losses"][key] > 0 and report["losses"][key] == pytest.approx(logged[f"val/{key}"], rel=1e-5)
    assert (report["precision"], report["recall"]) == pytest.approx((logged["val/precision"], logged["val/recall"]))

    written = report["plots"]
    assert {Path(p).name for p in written} >= PLOTS and all(Path(p).parent == out.parent / "plots" for p in written)
    client, runs = mlflow_runs(tmp_path, "eval_facemask")
    logged_plots = {a.path for a in client.list_artifacts(runs[0].info.run_id, "plots")}
    assert logged_plots == {f"plots/{Path(p).name}" for p in written}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["map50"] == result["map50"]


def test_results_csv_has_one_row_per_epoch_and_leaves_unlogged_values_empty(tmp_path):
    from facemask.detector import write_results_csv

    rows = [
        {"epoch": 1.0, "train/box_loss_epoch": 2.5, "val/map50": 0.125},
        {"epoch": 2.0, "train/box_loss_epoch": 2.0, "val/map50": 0.25, "val/ap50/1_without_mask": 0.5},
    ]
    write_results_csv(rows, tmp_path / "results.csv")
    assert (tmp_path / "results.csv").read_text(encoding="utf-8").splitlines() == [
        "epoch,train/box_loss_epoch,val/map50,val/ap50/1_without_mask",
        "1.0,2.5,0.125,",
        "2.0,2.0,0.25,0.5",
    ]


def test_recall_by_size_counts_each_face_in_its_size_bin(tmp_path):
    from core.voc import pair_voc, read_voc
    from facemask.size_recall import recall_by_size
    from synthetic.facemask import FACEMASK_CLASSES, make_facemask

    voc = make_facemask(tmp_path / "voc", images=6, seed=3)
    boxes = [
        np.array(
            [[o.xmin, o.ymin, o.xmax, o.ymax, 0.9, FACEMASK_CLASSES.index(o.name)] for o in read_voc(p.xml).objects]
        )
        for p in pair_voc(voc / "images", voc / "annotations").pairs
    ]
    calls = iter(boxes)

    def large_faces_only(rgb):  # finds the faces of 32 px and more, calling every one with_mask
        found = next(calls).reshape(-1, 6).copy()
        keep = np.sqrt((found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])) >= 32
        found[:, 5] = 0
        return found[keep]

    rows = recall_by_size(voc, large_faces_only, FACEMASK_CLASSES)
    sizes = np.sqrt(np.concatenate([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes if len(b)]))
    assert list(rows) == ["<16", "16-32", "32-64", "64-128", ">=128"]
    assert sum(r["faces"] for r in rows.values()) == len(sizes)
    assert rows["16-32"]["recall"] == 0.0 and rows["16-32"]["faces"] == int(((sizes >= 16) & (sizes < 32)).sum())
    assert rows["32-64"]["recall"] == 1.0 and rows["32-64"]["faces"] == int(((sizes >= 32) & (sizes < 64)).sum())
    # the Wilson interval: all found still leaves room below 1 on a handful of faces, none found room above 0
    n = rows["32-64"]["faces"]
    assert rows["32-64"]["recall_high"] == 1.0 and rows["32-64"]["recall_low"] == round(
        n / (n + 1.959963984540054**2), 4
    )
    assert rows["16-32"]["recall_low"] == 0.0 < rows["16-32"]["recall_high"]
    classes = np.concatenate([b[:, 5] for b in boxes if len(b)])
    middle = (sizes >= 32) & (sizes < 64)
    # found with the right class: only the masked ones, since every detection says with_mask
    assert rows["32-64"]["correct"] == int((middle & (classes == 0)).sum()) < rows["32-64"]["faces"]


class CentreFace:
    """A stand-in truth detector for portraits: one 120-px face in the middle of any image that is not black."""

    def __init__(self, **_) -> None:
        pass

    def detect(self, rgb):
        from faces import Detection

        return [] if rgb.max() == 0 else [Detection(65, 65, 185, 185, 1.0)]


def test_portraits_count_the_central_face_found_and_called_unmasked(trained, tmp_path, monkeypatch, capsys):  # noqa: F811
    import facemask.monitor
    from experiments.eval_facemask import evaluate

    portraits = tmp_path / "portraits" / "someone"
    portraits.mkdir(parents=True)
    for k, grey in enumerate((100, 150, 200, 0)):  # unmasked and found, found as masked, missed, no face at all
        cv2.imwrite(str(portraits / f"{k}.jpg"), np.full((250, 250, 3), grey, np.uint8))

    def stub(module, imgsz, conf, iou):
        def detect(rgb):
            grey = int(rgb.mean().round())
            box = [[70, 60, 190, 190, 0.9, 1 if abs(grey - 100) < 3 else 0]]  # IoU 0.8 with the truth
            return np.array(box if grey < 175 else [], np.float32).reshape(-1, 6)

        return detect

    monkeypatch.setattr(facemask.monitor, "yolo_detector", stub)
    cfg = compose(
        "eval_facemask",
        {
            **trained["store"],
            "paths.mlflow_dir": str(tmp_path),
            "voc": str(trained["voc"]),
            "ckpt": str(trained["checkpoint"]),
            "out": str(tmp_path / "out" / "metrics.json"),
            "plots": False,
            "portraits": str(tmp_path / "portraits"),
            "portrait_detector._target_": "tests.test_eval_facemask.CentreFace",
        },
    )
    result = evaluate(cfg)
    row = result["portraits"][">=128"]  # sqrt(120 · 120) = 120 px: the 64-128 bin
    assert row["faces"] == 0 and result["portraits"]["64-128"] == {
        "faces": 3,
        "found": 2,
        "correct": 1,
        "recall": 0.6667,
        "recall_low": pytest.approx(0.2077, abs=1e-4),
        "recall_high": pytest.approx(0.9385, abs=1e-4),
        "class_recall": 0.3333,
    }
    assert "1 photo(s) without a face left out" in capsys.readouterr().out
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["portraits"] == result["portraits"]
    logged = mlflow_runs(tmp_path, "eval_facemask")[1][0].data.metrics
    assert logged["portraits/64-128"] == pytest.approx(0.6667)
