"""The browser playground end to end: smoke-trained models → `export_web` (ONNX, checked against PyTorch, and the
built-in example images) → the page built with Vite → driven in real headless Chromium, whose samples, boxes and
identities must match ONNX Runtime and ultralytics' post-processing in Python.

Needs Node.js with npm and the page's packages (`make web-deps`; the test skips without them) and Debian's chromium
(`apt-get install -y chromium`, or $CHROMIUM); without them the browser test skips and says which is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from omegaconf import open_dict
from PIL import Image

from experiments.export_web import export_web
from experiments.train import train
from tests.conftest import REPO, compose
from training.onnx_export import ExportedModel

WEB = REPO / "web"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FACEMASK_IMGSZ = 160
FACES_IMGSZ = 32
IDENTITIES = ["alice", "bob", "carol", "dave"]  # the built-in set's first four (synthetic/identities.py)


def _store(root: Path, data_dir: Path) -> list[str]:
    return [
        f"paths.log_dir={root / 'logs'}",
        f"paths.mlflow_dir={root}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={data_dir / 'cache'}",
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir) -> dict:
    """Two-step runs of DCGAN exp1 (PyTorch's default init: varied samples even untrained), the YOLO face-mask
    detector (from scratch, 40 images at 160 px) and the face classifier (VGG16 from a random init at 32 px on 16
    built-in crops, one view each), then `export_web` into a public/ folder of the test's own."""
    root = tmp_path_factory.mktemp("web")
    store = _store(root, data_dir)
    # PyTorch's default init, not the demo recipe's N(0, 0.02): after 2 steps a generator from N(0, 0.02) still draws
    # near-flat grey tiles, and the page test checks that each tile shows an image
    train(compose("train", ["experiment=exp1_dcgan_fruits", "debug=fast", "model.weight_init=default", *store]))
    yolo = compose(
        "train",
        [
            "experiment=yolo_facemask",
            "debug=fast",
            *store,
            f"profile.detector_imgsz={FACEMASK_IMGSZ}",
            "data.batch_size=8",
            "data.num_workers=0",
            "data.generate.images=40",
            "model.pretrained=null",
        ],
    )
    with open_dict(yolo):
        yolo.model.pop("quality", None)  # debug=fast's DCGAN-only key
    train(yolo)
    # model.backbone explicitly: the default may become dlib's ResNet, which does not export; a small head and no
    # misclassified-faces figure keep the run short (the backbone's 14.7 M weights are VGG16's whatever the size)
    faces = [
        "model.backbone=vgg16",
        f"data.image_size={FACES_IMGSZ}",
        "data.views=1",
        "max_images=16",
        "model.hidden=[16,16,16]",
        "model.misclassified_examples=0",
    ]
    train(compose("train", ["experiment=vgg16_faces", "debug=fast", *store, *faces]))
    public = root / "public"
    manifest = export_web(compose("export_web", [*store, f"out_dir={public / 'models'}", f"imgsz={FACEMASK_IMGSZ}"]))
    return {"root": root, "public": public, "manifest": manifest, "data_dir": data_dir}


def test_export_writes_checked_models_and_a_manifest(exported):
    models = exported["public"] / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(exported["manifest"]))
    (generator,) = manifest["generators"]
    assert (
        generator["task"] == "exp1_dcgan_fruits"
        and generator["parity"]["max_abs_difference"] <= generator["parity"]["tolerance"] == 1e-4
    )
    session = ort.InferenceSession(str(models / generator["file"]), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(0).standard_normal((3, generator["latent_dim"])).astype(np.float32)
    images = session.run([generator["output"]], {generator["input"]: z})[0]
    assert images.shape == (3, 3, generator["image_size"], generator["image_size"]) and np.abs(images).max() <= 1
    facemask = manifest["facemask"]
    assert (
        facemask["class_names"] == ["with_mask", "without_mask", "mask_weared_incorrect"]
        and facemask["image_size"] == FACEMASK_IMGSZ
    )
    assert (models / facemask["file"]).is_file() and facemask["parity"]["max_abs_difference"] <= facemask["parity"][
        "tolerance"
    ]
    faces = manifest["faces"]
    assert faces["class_names"] == IDENTITIES and faces["image_size"] == FACES_IMGSZ and faces["margin"] == 0.2
    assert faces["parity"]["max_abs_difference"] <= faces["parity"]["tolerance"]
    for entry in (generator, facemask, faces):  # one schema (training.onnx_export.ExportedModel)
        assert set(ExportedModel.__required_keys__) <= set(entry) and entry["checkpoint"].endswith(".ckpt")
    missing = {m["task"]: m["command"] for m in manifest["missing"]}
    assert missing == {"exp2_dcgan_hardhat": "make exp2-dcgan", "exp3_dcgan_hardhat_tricks": "make exp3-dcgan"}


def _absolute_paths(value, where: str = "manifest") -> list[str]:
    """Every string of `value` (walked through dicts and lists) that is an absolute path or holds one."""
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _absolute_paths(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [hit for k, v in enumerate(value) for hit in _absolute_paths(v, f"{where}[{k}]")]
    if isinstance(value, str) and (Path(value).is_absolute() or re.search(r"(^|[\s(='\"])/[^/\s]+/", value)):
        return [f"{where}={value!r}"]
    return []


def test_the_manifest_holds_no_absolute_path(exported):
    """The page downloads the manifest: its files are relative to the page, its provenance (checkpoints, which run
    gave the identities) relative to the repository, and nothing names this machine's folders."""
    text = (exported["public"] / "models" / "manifest.json").read_text()
    assert _absolute_paths(json.loads(text)) == []
    assert str(exported["root"]) not in text and str(REPO) not in text
    assert _absolute_paths({"a": [{"b": "/home/x/y.ckpt"}], "c": "from /tmp/z/w"}) == [
        "manifest.a[0].b='/home/x/y.ckpt'",
        "manifest.c='from /tmp/z/w'",
    ]  # the walk finds them


def test_each_entry_says_what_its_model_learned_from_its_mlflow_run(exported):
    """ "trained": the MLflow run of the checkpoint, its data and epochs, the validation figure of the kind, and the
    2-step detector from scratch marked as one that did not learn, with the reasons its run records."""
    from tests.conftest import mlflow_runs

    manifest = exported["manifest"]
    root = exported["root"]
    for entry in (*manifest["generators"], manifest["facemask"], manifest["faces"]):
        _client, (run,) = mlflow_runs(root, entry["task"])
        trained = entry["trained"]
        assert trained["run_id"] == run.info.run_id and trained["experiment"] == entry["task"]
        assert trained["data"] == "built-in synthetic" and trained["epochs"] == 1
        assert trained["checkpoint"] == entry["checkpoint"] == "<outside the repository>/best.ckpt"
        assert trained["scale"].startswith("demo-scale (debug=fast smoke run")
    generator, facemask, faces = (
        manifest["generators"][0]["trained"],
        manifest["facemask"]["trained"],
        manifest["faces"]["trained"],
    )
    _client, (run,) = mlflow_runs(root, "exp1_dcgan_fruits")
    assert generator["metric"] == {
        "name": "KID",
        "key": "quality/kid",
        "value": run.data.metrics["quality/kid"],
        "epoch": None,
    }
    assert generator["learned"] is None  # one validation: whether it moved cannot be told
    assert facemask["metric"] == {"name": "val mAP50", "key": "val/map50", "value": 0.0, "epoch": 1}
    assert facemask["learned"] is False
    assert facemask["reason"] == "val mAP50 never above 0 (1 validation(s)); from scratch (model.pretrained=null)"
    # 4 identities, 1 of the 4 validation faces right: chance
    assert faces["metric"] == {"name": "val accuracy", "key": "val/acc", "value": 0.25, "epoch": None}
    assert (
        faces["learned"] is False
        and faces["reason"] == "val accuracy never above chance, 0.25 (1 validation(s)); vgg16, random init"
    )
    note = json.loads(
        _node(
            "import { trainedNote } from './src/notes.js';"
            f"console.log(JSON.stringify(trainedNote({json.dumps(manifest['facemask'])})))"
        )
    )
    assert note == {
        "learned": False,
        "text": f"Did not learn: {facemask['reason']}. Trained on built-in synthetic data, 1 epoch, {facemask['scale']}"
        f" · best val mAP50 0.000 (epoch 1) · MLflow run {facemask['run_id']} (yolo_facemask, <outside the repository>/best.ckpt).",
    }


def test_export_writes_the_built_in_examples(exported):
    """The face-mask example is the built-in scene with most faces among the first 8 (the same pixels as the set the
    detector trained on, alpha dropped); the face examples are each identity's first crop, byte for byte."""
    from core.voc import read_voc

    models, data = exported["public"] / "models", exported["data_dir"] / "synthetic"
    examples = exported["manifest"]["examples"]
    counts = [len(read_voc(data / "facemask-voc" / "annotations" / f"maksssksksss{k}.xml").objects) for k in range(8)]
    best = counts.index(max(counts))
    assert examples["facemask"] == [{"file": "examples/facemask.png", "faces": counts[best]}] and counts[best] >= 2
    scene = np.asarray(Image.open(data / "facemask-voc" / "images" / f"maksssksksss{best}.png").convert("RGB"))
    example = Image.open(models / "examples" / "facemask.png")
    assert example.mode == "RGB" and np.array_equal(np.asarray(example), scene)
    assert examples["faces"] == [{"file": f"examples/face-{k}.jpg", "name": n} for k, n in enumerate(IDENTITIES)]
    for k, name in enumerate(IDENTITIES):
        assert (models / f"examples/face-{k}.jpg").read_bytes() == (data / "faces" / name / "0001.jpg").read_bytes()


def test_an_unexportable_classifier_is_missing_with_why_and_the_command_that_exports(tmp_path, monkeypatch):
    """A dlib-ResNet checkpoint (NotExportable) leaves the recognise pane a note naming the VGG16 command; the note
    is the page's own text (web/src/notes.js run by Node)."""
    import experiments.export_web as export_web_module
    from training.onnx_export import NotExportable

    reason = "backbone 'dlib_resnet' aligns faces in dlib, not in a tensor graph; only vgg16 exports to ONNX"

    def refuse(checkpoint, out_path, key):
        raise NotExportable(reason)

    monkeypatch.setattr(export_web_module, "exporter", lambda kind, cfg: refuse)
    monkeypatch.setattr(export_web_module, "log_tool_run", lambda *args, **kwargs: None)  # a new MLflow store: 8 s
    checkpoint = tmp_path / "dlib.ckpt"
    checkpoint.write_bytes(b"")  # never read: the exporter refuses first
    cfg = compose("export_web", [f"out_dir={tmp_path / 'models'}", f"+checkpoints.vgg16_faces={checkpoint}"])
    with open_dict(cfg):
        cfg.models = {"vgg16_faces": cfg.models.vgg16_faces}
    manifest = export_web(cfg)
    command = 'make vgg16-faces ARGS="model.backbone=vgg16 model.weights=<file>"'
    assert manifest["faces"] is None and manifest["examples"] == {"facemask": [], "faces": []}
    assert manifest["missing"] == [{"task": "vgg16_faces", "kind": "faces", "command": command, "reason": reason}]
    note = _node(
        f"import {{ missingNote }} from './src/notes.js'; console.log(missingNote({json.dumps(manifest)}, 'faces'))"
    )
    assert note.strip() == (
        f"vgg16_faces cannot run in the browser ({reason}): train one that can with {command}, then run make export-web."
    )


def _fake_run(client, experiment: str, start_ms: int, kid: list[float], folder: Path) -> str:
    """A finished DCGAN run in `experiment` (its KID history, `best/quality/kid` its lowest) and its run folder
    with an empty best.ckpt and its mlflow_run_id, as experiments/train.py leaves them; the run id."""
    experiment_id = client.get_experiment_by_name(experiment) or client.create_experiment(experiment)
    experiment_id = getattr(experiment_id, "experiment_id", experiment_id)
    run = client.create_run(
        experiment_id, start_time=start_ms, tags={"profile": "trainer=cpu_small", "profile.caps": "none"}
    )
    for key, value in {
        "selection.metric": "quality/kid",
        "selection.mode": "min",
        "data.generate._target_": "x",
    }.items():
        client.log_param(run.info.run_id, key, value)
    for step, value in enumerate(kid):
        client.log_metric(run.info.run_id, "quality/kid", value, step=step)
        client.log_metric(run.info.run_id, "epoch", step, step=step)
    client.log_metric(run.info.run_id, "best/quality/kid", min(kid))
    client.set_terminated(run.info.run_id, "FINISHED")
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best.ckpt").write_bytes(b"")
    (folder / "mlflow_run_id").write_text(run.info.run_id)
    return run.info.run_id


def test_export_takes_the_run_the_report_selects_and_its_best_checkpoint_not_the_newest(tmp_path):
    """Three runs of exp1: an older one with the best KID, a newer worse one whose KID never moved, and the newest,
    a sweep trial (experiment "exp1_dcgan_fruits-sweep"). The newest checkpoint is the sweep trial's; the export
    takes the report's selection (its SELECTION_RULE), and `checkpoints.<task>` still overrides it."""
    import mlflow

    from core.checkpoints import find_checkpoint
    from experiments.export_web import checkpoint_for, training_summary

    logs, task = tmp_path / "logs", "exp1_dcgan_fruits"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    best = _fake_run(client, task, 1_000, [0.30, 0.10, 0.12], logs / task / "runs" / "a")
    flat = _fake_run(client, task, 2_000, [0.40, 0.40], logs / task / "runs" / "b")
    _fake_run(client, f"{task}-sweep", 3_000, [0.05], logs / task / "multiruns" / "c" / "0")
    assert find_checkpoint(logs, task) == logs / task / "multiruns" / "c" / "0" / "checkpoints" / "best.ckpt"
    cfg = compose("export_web", [f"paths.log_dir={logs}", f"paths.mlflow_dir={tmp_path}", f"out_dir={tmp_path / 'm'}"])
    path, run = checkpoint_for(cfg, task, "make exp1-dcgan", client)
    assert path == logs / task / "runs" / "a" / "checkpoints" / "best.ckpt" and run.info.run_id == best
    trained = training_summary(client, run, "generator", path)
    assert trained["metric"] == {"name": "KID", "key": "quality/kid", "value": 0.12, "epoch": None}
    assert trained["learned"] is True and trained["epochs"] == 3 and trained["scale"] == "full"
    flat_run = client.get_run(flat)
    trained = training_summary(client, flat_run, "generator", logs / task / "runs" / "b" / "checkpoints" / "best.ckpt")
    assert trained["learned"] is False and trained["reason"] == "quality/kid never improved on 0.400 in 2 epochs"
    chosen = logs / task / "runs" / "b" / "checkpoints" / "best.ckpt"
    cfg = compose(
        "export_web", [*[f"paths.log_dir={logs}", f"paths.mlflow_dir={tmp_path}"], f"+checkpoints.{task}={chosen}"]
    )
    path, run = checkpoint_for(cfg, task, "make exp1-dcgan", client)
    assert path == chosen and run.info.run_id == flat


def test_a_missing_checkpoint_file_is_a_user_error(tmp_path):
    from core.errors import UserError

    cfg = compose("export_web", [f"out_dir={tmp_path}", f"+checkpoints.exp1_dcgan_fruits={tmp_path / 'nope.ckpt'}"])
    with pytest.raises(UserError, match=r"checkpoints\.exp1_dcgan_fruits=.*nope\.ckpt: file not found"):
        export_web(cfg)


def _node(script: str) -> str:
    """Run an ES module `script` with Node in web/ (the page's pure modules import without a browser); its stdout."""
    if shutil.which("node") is None:
        pytest.skip("node not found: the page's modules are not checked (Debian: apt-get install -y nodejs)")
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script], cwd=WEB, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_page_box_maths_equal_ultralytics_on_a_hand_made_head_output():
    """web/src/boxes.js (score threshold, class-aware NMS, boxes back to a 517×300 image letterboxed to 160) against
    ultralytics' non_max_suppression and scale_boxes on seven hand-placed anchors: two under the threshold, one
    suppressed by a better box of its class, one kept over the same box because its class differs, one clipped."""
    from facemask.inference import postprocess

    anchors = [  # centre x, centre y, width, height (input px), class, score
        (40, 60, 20, 30, 0, 0.9),
        (42, 61, 20, 30, 0, 0.8),  # IoU 0.8 with the first, same class: suppressed
        (42, 61, 20, 30, 1, 0.7),
        (120, 100, 30, 20, 2, 0.6),
        (100, 80, 10, 10, 0, 0.2),  # under conf 0.25
        (5, 30, 20, 10, 1, 0.5),  # past the left edge and in the top grey band: clipped to 0
        (80, 80, 10, 10, 2, 0.05),  # a seventh: ultralytics reads a last axis of 6 as end-to-end (N, 300, 6) output
    ]
    raw = np.full((1, 7, len(anchors)), 0.01, np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(anchors):
        raw[0, :4, i] = cx, cy, w, h
        raw[0, 4 + cls, i] = score
    wanted = postprocess(raw, (160, 160), [(300, 517)], 0.25, 0.45)[0]
    # per-axis gains 160/517 and 93/300 (the rounded content): x0 = (40 - 10) · 517/160, y0 = (60 - 15 - 33) · 300/93
    assert wanted[:, 5].tolist() == [0, 1, 2, 1]
    assert wanted[0, :4] == pytest.approx([96.9375, 38.709677, 161.5625, 135.483871], abs=1e-4)
    assert wanted[3, :4] == pytest.approx([0, 0, 48.46875, 6.451613], abs=1e-4)
    output = {"dims": list(raw.shape), "data": raw.ravel().tolist()}
    script = (
        "import { decode, letterboxGeometry, unletterbox } from './src/boxes.js';"
        f"const output = {json.dumps(output)}; output.data = Float32Array.from(output.data);"
        "const geometry = letterboxGeometry(517, 300, 160);"
        "console.log(JSON.stringify([geometry, unletterbox(decode(output, 0.25, 0.45), geometry)]))"
    )
    geometry, boxes = json.loads(_node(script))
    # 517 × 300 into 160: 160 × round(92.84) = 93 px, round((160 - 93) / 2 - 0.1) = 33 px of grey above
    assert geometry == {
        "ratio": 160 / 517,
        "newWidth": 160,
        "newHeight": 93,
        "left": 0,
        "top": 33,
        "width": 517,
        "height": 300,
    }
    got = [[b["x0"], b["y0"], b["x1"], b["y1"], b["score"], b["cls"]] for b in boxes]
    assert np.allclose(got, wanted, atol=1e-4), (got, wanted)


def _tool_or_skip() -> None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} not found: the browser test needs Node.js 20+ with npm (Debian: apt-get install -y nodejs npm)"
            )
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's (apt-get install -y chromium) or set $CHROMIUM")


def _npm(*args: str, env: dict | None = None) -> None:
    done = subprocess.run(
        ["npm", *args], cwd=WEB, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, f"vite preview exited: {server.stdout.read()}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {seconds} s")


def _threshold(scores: np.ndarray) -> float:
    """A confidence threshold that keeps a few boxes and lies far (in float32 terms) from every score, so that
    rounding differences between ONNX Runtime builds cannot move a box across it."""
    top = np.sort(scores)[::-1][:40]
    gaps = top[:-1] - top[1:]
    k = int(np.argmax(gaps[2:])) + 2  # keep at least three candidates
    return float(f"{(top[k] + top[k + 1]) / 2:.6g}")  # short enough for the slider to keep every digit


def _letterboxed(image: np.ndarray, imgsz: int) -> np.ndarray:
    """ultralytics' LetterBox, as `facemask.inference.letterbox_batch` applies it: uint8 HWC."""
    from ultralytics.data.augment import LetterBox

    return LetterBox((imgsz, imgsz), auto=False, stride=32)(image=image)


def _conf_for(session, image: np.ndarray) -> float:
    raw = session.run(
        None, {"images": (_letterboxed(image, FACEMASK_IMGSZ).transpose(2, 0, 1)[None] / 255).astype(np.float32)}
    )
    return _threshold(raw[0][0][4:].max(axis=0))


def _check_detections(
    found: dict, session, image: np.ndarray, conf: float, top: int, left: int, size: int = FACEMASK_IMGSZ
) -> None:
    """The page's face-mask steps against Python's on `image`: the letterbox (geometry `top`/`left` worked out by
    hand from ultralytics' rule, grey 114 borders exact, the resized content within resampling differences), the
    ONNX output of the page's own input, and ultralytics' NMS and box scaling on the page's raw output."""
    from facemask.inference import postprocess

    height, width = image.shape[:2]
    ratio = min(size / width, size / height)
    assert found["conf"] == conf and found["canvas"] == [width, height]
    new_width, new_height = round(width * ratio), round(height * ratio)
    assert found["letterbox"] == {
        "ratio": pytest.approx(ratio, abs=1e-12),
        "newWidth": new_width,
        "newHeight": new_height,
        "left": left,
        "top": top,
        "width": width,
        "height": height,
    }
    pixels = np.array(found["input"]["data"], np.uint8).reshape(3, size, size)
    content = np.zeros((size, size), bool)
    content[top : top + new_height, left : left + new_width] = True
    expected = _letterboxed(image, size).transpose(2, 0, 1)
    assert (pixels[:, ~content] == 114).all() and (expected[:, ~content] == 114).all()
    difference = np.abs(pixels[:, content].astype(int) - expected[:, content]).mean()
    print(f"letterbox {width}x{height}: mean |browser - cv2| = {difference:.2f} levels")
    assert difference < 6  # Chromium's filter is not cv2's INTER_LINEAR (4.1, 1.9); 1 px off: 16 on the photo
    raw = np.array(found["raw"]["data"], np.float32).reshape(found["raw"]["dims"])
    ours = session.run(None, {"images": (pixels[None] / 255).astype(np.float32)})[0]
    # onnxruntime-web's forward pass is ONNX Runtime's: the class scores to 1e-4, the boxes (input pixels, up to
    # imgsz) to 1e-4 plus a few float32 steps of their size (measured at 320 px: 1.2e-4 on a coordinate near 290)
    assert np.abs(raw[:, 4:] - ours[:, 4:]).max() <= 1e-4
    assert np.allclose(raw[:, :4], ours[:, :4], rtol=1e-6, atol=1e-4), np.abs(raw[:, :4] - ours[:, :4]).max()
    wanted = postprocess(raw, (size, size), [(height, width)], conf, 0.45)[0]
    boxes = found["boxes"]
    assert len(wanted) >= 1 and len(boxes) == len(wanted), (boxes, wanted)
    # The same detections, matched one to one by class, box and score: with a barely trained model several classes
    # of one box can score within 1e-6 of each other, so the order of such ties is not part of the contract.
    unmatched = list(boxes)
    for x0, y0, x1, y1, score, cls in wanted:
        match = next(
            (
                box
                for box in unmatched
                if box["cls"] == int(cls)
                and np.allclose([box["x0"], box["y0"], box["x1"], box["y1"]], [x0, y0, x1, y1], atol=0.01)
                and box["score"] == pytest.approx(float(score), abs=1e-6)
            ),
            None,
        )
        assert match is not None, (f"no browser box for {(x0, y0, x1, y1, score, cls)}", boxes)
        unmatched.remove(match)
    assert max(found["edge_colour_error"]) < 40  # each box is drawn on the canvas in its class colour


def _face_square(width: int, height: int, box: dict | None, margin: float) -> dict:
    """web/src/classifier.js faceSquare as faces.crop.face_square computes it, keyed as the page's."""
    from faces.crop import face_square

    corners = None if box is None else tuple(box[k] for k in ("x0", "y0", "x1", "y1"))
    return dict(zip(("x", "y", "side"), face_square(width, height, corners, margin)))


@contextlib.contextmanager
def _served_page(public: Path, tmp_path: Path):
    """Build the page on `public` (its models/ and manifest) into tmp_path/dist and serve it with vite preview on a
    free port; yields the page's URL once it answers, and stops the server on exit."""
    dist = tmp_path / "dist"
    _npm("run", "build", "--", "--outDir", str(dist), "--emptyOutDir", env={"PLAYGROUND_PUBLIC": str(public)})
    port = _free_port()
    server = subprocess.Popen(
        [
            str(WEB / "node_modules" / ".bin" / "vite"),
            "preview",
            "--outDir",
            str(dist),
            "--port",
            str(port),
            "--strictPort",
        ],
        cwd=WEB,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _drive_page(public: Path, tmp_path: Path, *args: str) -> dict:
    """Build the page on `public` (its models/ and manifest), serve it with vite preview and drive it in headless
    Chromium with web/e2e/playground.mjs `args`; the page's result (checked: ready, no error, no console error)."""
    screenshot = tmp_path / "playground.png"
    with _served_page(public, tmp_path) as url:
        driven = subprocess.run(
            [
                "node",
                "e2e/playground.mjs",
                "--url",
                url,
                "--screenshot",
                str(screenshot),
                "--chromium",
                CHROMIUM,
                *args,
            ],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert driven.returncode == 0, driven.stderr[-3000:]
    result = json.loads(driven.stdout.strip().splitlines()[-1])
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    assert result["status"]["state"] == "ready" and not result["errors"], result["errors"]
    assert not [line for line in result["console"] if line.startswith(("error", "pageerror"))], result["console"]
    return result


def _page_tools_or_skip() -> None:
    _tool_or_skip()
    if not (WEB / "node_modules" / ".package-lock.json").is_file():  # the test installs nothing itself
        pytest.skip("the page's npm packages are not installed: run `make web-deps` (CI's .ci/run does)")


def test_page_generates_samples_and_draws_the_python_boxes_in_headless_chromium(exported, tmp_path):
    _page_tools_or_skip()
    from synthetic.faces import real_face_photos
    from training.onnx_export import onnx_session

    manifest = exported["manifest"]
    models = exported["public"] / "models"
    detector = onnx_session(models / manifest["facemask"]["file"])
    # Larger than the detector's input and not square, so that the page's letterbox scales and pads.
    image = np.asarray(Image.fromarray(real_face_photos()[0].rgb).resize((517, 300), Image.BILINEAR))
    image_path = tmp_path / "astronaut.png"
    Image.fromarray(image).save(image_path)
    conf = _conf_for(detector, image)
    scene = np.asarray(Image.open(models / manifest["examples"]["facemask"][0]["file"]))
    example_conf = _conf_for(detector, scene)
    result = _drive_page(
        exported["public"],
        tmp_path,
        "--facemask-image",
        str(image_path),
        "--conf",
        repr(conf),
        "--facemask-example",
        "--example-conf",
        repr(example_conf),
        "--face-example",
        IDENTITIES[1],
    )

    generator = result["generator"]  # 16 samples in a 4×4 grid of 64 px tiles with 2 px gaps
    assert generator["tile"] == [64, 64] and generator["canvas"] == [4 * 66 + 2, 4 * 66 + 2]
    assert min(generator["tile_std"]) > 5  # every tile painted with an image, none flat
    assert generator["differing_fraction"] > 0.25  # another seed, other images (a 2-step generator varies little)
    entry = manifest["generators"][0]
    session = ort.InferenceSession(str(models / entry["file"]), providers=["CPUExecutionProvider"])
    tile = session.run([entry["output"]], {entry["input"]: np.array([generator["z0"]], np.float32)})[0][0]
    expected_tile = np.clip(np.round((tile + 1) / 2 * 255), 0, 255).transpose(1, 2, 0).ravel()
    assert np.abs(np.array(generator["tile0"]) - expected_tile).max() <= 1  # the browser's pixels are ONNX Runtime's

    # 517 × 300 → 160 × 93 (ratio 160/517), top margin round(67/2 - 0.1) = 33; the 400 × 300 scene → 160 × 120, 20.
    assert result["detections"]["source"] == "astronaut.png"
    _check_detections(result["detections"], detector, image, conf, top=33, left=0)
    assert result["example_detections"]["source"] == "examples/facemask.png" and scene.shape == (300, 400, 3)
    _check_detections(result["example_detections"], detector, scene, example_conf, top=20, left=0)

    recognised = result["example_recognised"]  # the second identity's built-in crop, through the upload's code
    faces = manifest["faces"]
    assert recognised["source"] == "examples/face-1.jpg" and recognised["size"] == [128, 128]
    assert recognised["canvas"] == [FACES_IMGSZ, FACES_IMGSZ]
    square = _face_square(128, 128, recognised["faceBox"], faces["margin"])
    assert recognised["square"] == pytest.approx(square, abs=1e-9)
    crop = np.array(recognised["crop"], np.uint8).reshape(FACES_IMGSZ, FACES_IMGSZ, 3)
    photo = np.asarray(Image.open(models / "examples" / "face-1.jpg").convert("RGB"))
    x, y, side = (int(round(square[k])) for k in ("x", "y", "side"))
    ours = np.asarray(Image.fromarray(photo[y : y + side, x : x + side]).resize((FACES_IMGSZ,) * 2, Image.BOX))
    difference = np.abs(crop.astype(int) - ours).mean()
    print(f"face crop: mean |browser - PIL| = {difference:.2f} levels")
    assert difference < 6  # the page cropped the square Python computes (resampling filters differ)
    classifier = onnx_session(models / faces["file"])
    logits = classifier.run(None, {"images": crop.transpose(2, 0, 1)[None].astype(np.float32)})[0][0].astype(np.float64)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert {r["name"]: r["probability"] for r in recognised["ranked"]} == pytest.approx(
        dict(zip(IDENTITIES, probabilities)), abs=1e-5
    )
    assert recognised["ranked"][0]["name"] == IDENTITIES[int(np.argmax(probabilities))]

    # Beside each model, what it learned: the generator's line with its run and KID, the detector marked
    trained = {task: manifest[task]["trained"] for task in ("facemask", "faces")}
    generator_trained = manifest["generators"][0]["trained"]
    assert result["trained"]["dcgan"] == {
        "exp1_dcgan_fruits": {
            "marked": False,
            "text": f"Trained on built-in synthetic data, 1 epoch, {generator_trained['scale']} · KID "
            f"{generator_trained['metric']['value']:.3f} (last validation) · MLflow run {generator_trained['run_id']} "
            "(exp1_dcgan_fruits, <outside the repository>/best.ckpt).",
        }
    }
    assert result["trained"]["facemask"]["marked"] and result["trained"]["facemask"]["text"].startswith(
        f"Did not learn: {trained['facemask']['reason']}. "
    )
    assert result["trained"]["faces"]["marked"] and trained["faces"]["run_id"] in result["trained"]["faces"]["text"]


# The face-mask pane's live view: web/src/tracker.js against ultralytics' BYTETracker and facemask.alerts.

MONITOR_NAMES = ["with_mask", "without_mask", "mask_weared_incorrect"]


def _monitor_truth() -> list[np.ndarray]:
    """tests/test_monitor.py's clip as detections, without the video: per frame (N, 6) boxes x0 y0 x1 y1 conf cls
    of faces 32 px wide moving along rows (the boxes draw_face returns for those centres)."""
    from synthetic.faces import Identity, draw_face
    from tests.test_monitor import BLIPS, CLASS, FRAMES, PEOPLE, SIZE

    rng = np.random.default_rng(0)
    identities = [Identity.random(rng) for _ in PEOPLE]
    truth = []
    for frame in range(FRAMES):
        canvas = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
        boxes = []
        for person, (first, last, x, y, step, mask) in enumerate(PEOPLE):
            if first <= frame <= last:
                box = draw_face(canvas, (x + step * (frame - first), y), 32, identities[person], rng, mask=mask)
                boxes.append([*box, 0.9, CLASS["none"] if person == 0 and frame in BLIPS else CLASS[mask]])
        truth.append(np.array(boxes, np.float32).reshape(-1, 6))
    return truth


def _python_monitor(sequence: list[np.ndarray], settings: dict, fps: float) -> dict:
    """ultralytics' BYTETracker (core.trackers.track) and MaskAlerts on `sequence`: per frame [[track id, class]],
    the events and the summary, as the Python monitor computes them."""
    from core.trackers import make_tracker, track
    from facemask.alerts import MaskAlerts

    tracker = make_tracker({k: v for k, v in settings["tracker"].items()})
    alerts = MaskAlerts(MONITOR_NAMES, settings["alert_classes"], settings["alert_after_s"], settings["smooth_frames"])
    frames, events = [], []
    for index, detections in enumerate(sequence):
        people = track(tracker, detections)
        frames.append(sorted([track_id, cls] for track_id, _box, _conf, cls in people))
        events += [
            {k: v for k, v in e.to_dict().items() if k not in ("wall_time", "box", "confidence")}
            for e in alerts.update(index, round(index / fps, 6), people)
        ]
    return {"frames": frames, "events": events, "summary": alerts.summary()}


def _js_monitor(sequence: list[np.ndarray], settings: dict, fps: float) -> dict:
    """The same through web/src/tracker.js, run by Node."""
    detections = [
        [
            {"x0": float(x0), "y0": float(y0), "x1": float(x1), "y1": float(y1), "score": float(s), "cls": int(c)}
            for x0, y0, x1, y1, s, c in frame
        ]
        for frame in sequence
    ]
    script = (
        "import { ByteTracker, MaskAlerts } from './src/tracker.js';"
        f"const settings = {json.dumps(settings)}; const sequence = {json.dumps(detections)};"
        "const tracker = new ByteTracker(settings.tracker);"
        f"const alerts = new MaskAlerts({json.dumps(MONITOR_NAMES)}, settings.alert_classes, settings.alert_after_s,"
        " settings.smooth_frames);"
        "const frames = []; const events = [];"
        "sequence.forEach((detections, index) => {"
        "  const people = tracker.update(detections);"
        "  frames.push(people.map((p) => [p.trackId, p.cls]).sort((a, b) => a[0] - b[0]));"
        f"  for (const e of alerts.update(index, Math.round(index / {fps} * 1e6) / 1e6, people)) {{"
        "    const { box, confidence, ...rest } = e; events.push(rest); }"
        "});"
        "console.log(JSON.stringify({ frames, events, summary: alerts.summary() }));"
    )
    return json.loads(_node(script))


def _monitor_settings() -> dict:
    from experiments.export_web import monitor_settings

    return monitor_settings(REPO / "conf" / "monitor_facemask.yaml")


def test_manifest_monitor_settings_are_ultralytics_bytetrack_and_the_monitor_config():
    from omegaconf import OmegaConf
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    settings = _monitor_settings()
    monitor = OmegaConf.load(REPO / "conf" / "monitor_facemask.yaml")
    assert settings == {
        "tracker": YAML.load(check_yaml("bytetrack.yaml")),  # the config's `tracker: {}` overrides nothing
        "alert_classes": ["without_mask", "mask_weared_incorrect"],
        "alert_after_s": monitor.alert_after_s,
        "smooth_frames": monitor.smooth_frames,
    }
    assert settings["tracker"]["track_buffer"] == 30 and settings["tracker"]["match_thresh"] == 0.8


def test_page_tracker_and_alerts_equal_the_python_monitor_on_the_monitor_test_clip():
    """tests/test_monitor.py's five people (one misdetected for single frames, two alerts, one unmasked too briefly):
    the page's ids per frame, alerts and summary are those of ultralytics' ByteTrack and facemask.alerts."""
    from tests.test_monitor import FPS

    settings = _monitor_settings()
    truth = _monitor_truth()
    python, page = _python_monitor(truth, settings, FPS), _js_monitor(truth, settings, FPS)
    assert page["summary"] == python["summary"] == {"people": 5, "unmasked_people": 3, "alerts": 2}
    wanted = [(2, "without_mask", 26, 2.6), (4, "mask_weared_incorrect", 46, 4.6)]  # as test_monitor's events
    assert [(e["track_id"], e["class"], e["frame"], e["time_s"]) for e in page["events"]] == wanted
    assert page["events"] == python["events"]
    assert page["frames"] == python["frames"]


def _person(frames: range, start: tuple[float, float], step: float, score=lambda frame: 0.9, cls: int = 1):
    """(frame, box, score, class) of a 40 px face moving `step` px per frame to the right from `start`."""
    return [
        (
            f,
            [start[0] + step * (f - frames[0]), start[1], start[0] + step * (f - frames[0]) + 40, start[1] + 40],
            score(f),
            cls,
        )
        for f in frames
    ]


def test_page_tracker_keeps_ids_through_gaps_and_low_scores_and_gives_a_late_returner_a_new_id():
    """Box sequences with known answers (and ultralytics' the same): A leaves for 10 frames (< track_buffer 30) and
    keeps id 1; B is detected at score 0.15 (ByteTrack's low-score second stage) for 10 frames and keeps id 2; C (id
    3) leaves for 41 frames (> 30) and comes back as id 5; D, there on frame 5 only, is never confirmed but uses id
    4. A and C are unmasked (alert_after_s out of reach): 4 people seen, 3 of them unmasked, no alert."""
    settings = _monitor_settings()
    people = [
        *_person(range(0, 20), (10, 10), 2),
        *_person(range(30, 60), (70, 10), 2),  # A back after 10 frames, where it was heading
        *_person(range(0, 60), (10, 100), 1, score=lambda f: 0.15 if 20 <= f < 30 else 0.9, cls=0),  # B
        *_person(range(0, 10), (10, 200), 0, cls=2),  # C ...
        *_person(range(51, 60), (10, 200), 0, cls=2),  # ... back 41 frames later
        *_person(range(5, 6), (300, 300), 0),  # D
    ]
    sequence = [
        np.array([[*box, s, c] for f, box, s, c in people if f == frame], np.float32).reshape(-1, 6)
        for frame in range(60)
    ]
    page = _js_monitor(sequence, {**settings, "alert_after_s": 100.0}, fps=10)
    assert page["frames"] == _python_monitor(sequence, {**settings, "alert_after_s": 100.0}, fps=10)["frames"]
    ids = lambda frame: [track_id for track_id, _ in page["frames"][frame]]  # noqa: E731
    assert ids(0) == [1, 2, 3] and ids(25) == [2] and ids(35) == [1, 2] and ids(55) == [1, 2, 5]
    assert page["summary"] == {"people": 4, "unmasked_people": 3, "alerts": 0}


# The live view in Chromium: a fake webcam playing generated faces, a stand-in detector exported as ONNX.

LIVE_SIZE, LIVE_FPS, LIVE_FRAMES, LIVE_IMGSZ = (640, 480), 10, 40, 320
LIVE_FACE = 96  # px wide in the video, 48 in the detector's input
# (centre x, centre y, mask): three people who stay in view, swaying ±20 px once per clip, so that the webcam's loop
# of the file is seamless and the counts do not depend on how many frames the page manages to process.
LIVE_PEOPLE = [(130, 150, "worn"), (330, 330, "none"), (520, 150, "incorrect")]
MASK_SHARE = {"none": 0.0, "incorrect": 0.27, "worn": 0.43}  # measured: mask pixels / face pixels of LIVE_IDENTITY


class _FirstMaskColour:
    """draw_face's rng for the mask colour: always MASK_COLOURS[0], a blue no skin tone comes near."""

    def integers(self, n: int) -> int:
        return 0


def _live_frames() -> list[np.ndarray]:
    from synthetic.faces import Identity, draw_face

    identity = Identity(
        skin=(224, 172, 105),
        hair=(30, 25, 20),
        hair_style=2,
        aspect=1.3,
        eye_gap=0.4,
        eye_colour=(40, 40, 40),
        glasses=False,
        beard=False,
    )
    frames = []
    for k in range(LIVE_FRAMES):
        canvas = np.full((LIVE_SIZE[1], LIVE_SIZE[0], 3), 90, np.uint8)
        for x, y, mask in LIVE_PEOPLE:
            sway = 20 * np.sin(2 * np.pi * k / LIVE_FRAMES)
            draw_face(canvas, (x + sway, y), LIVE_FACE, identity, _FirstMaskColour(), mask=mask)
        frames.append(canvas)
    return frames


def _write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Raw YUV 4:2:0 frames in a YUV4MPEG2 file, the format Chromium's fake capture device plays (and loops)."""
    import cv2

    height, width = frames[0].shape[:2]
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420mpeg2\n".encode())
        for rgb in frames:
            handle.write(b"FRAME\n" + cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())


def _stand_in_detector(path: Path) -> dict:
    """A deterministic face-mask 'detector' for LIVE_IDENTITY's faces on the grey 90 background, exported as ONNX with
    the YOLO head's layout (1, 4 + 3 classes, anchors), so the page runs it as it runs the trained model. Each anchor
    is a face-sized box (stride 2): its objectness rises with the share of non-background pixels inside and falls
    with those in an 8 px ring around it; class c scores objectness · (1 − |mask share − MASK_SHARE of c|), the mask
    share being the blue mask pixels over the face pixels in the box. Returns the manifest entry."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    kh, kw, ring, stride = 62, 54, 8, 2

    class StandIn(torch.nn.Module):
        def forward(self, images):
            face = ((images - 90 / 255).abs().amax(1, keepdim=True) > 0.12).float()
            blue = ((images[:, 2:3] - images[:, 0:1]) > 0.15).float()
            inside = F.avg_pool2d(face, (kh, kw), stride)
            outer = (
                F.avg_pool2d(face, (kh + 2 * ring, kw + 2 * ring), stride, padding=ring)
                * (kh + 2 * ring)
                * (kw + 2 * ring)
            )
            around = (outer - inside * kh * kw) / ((kh + 2 * ring) * (kw + 2 * ring) - kh * kw)
            objectness = ((inside - 0.55) / 0.17).clamp(0, 1) * (1 - around).clamp(0, 1) ** 3
            share = F.avg_pool2d(blue, (kh, kw), stride) / inside.clamp(min=1e-6)
            scores = torch.cat(
                [
                    objectness * (1 - (share - MASK_SHARE[m]).abs() / 0.08).clamp(0, 1)
                    for m in ("worn", "none", "incorrect")
                ],
                1,
            )
            rows, cols = scores.shape[2:]
            cy = (torch.arange(rows, dtype=torch.float32) * stride + kh / 2).view(rows, 1).expand(rows, cols)
            cx = (torch.arange(cols, dtype=torch.float32) * stride + kw / 2).view(1, cols).expand(rows, cols)
            boxes = torch.stack([cx, cy, torch.full_like(cx, kw), torch.full_like(cx, kh)]).unsqueeze(0)
            return torch.cat([boxes, scores], 1).flatten(2)

    torch.onnx.export(
        StandIn(),
        torch.zeros(1, 3, LIVE_IMGSZ, LIVE_IMGSZ),
        str(path),
        input_names=["images"],
        output_names=["output0"],
        opset_version=17,
        dynamo=False,
    )
    return {
        "task": "stand_in",
        "file": path.name,
        "input": "images",
        "output": "output0",
        "image_size": LIVE_IMGSZ,
        "class_names": MONITOR_NAMES,
    }


def test_stand_in_detector_finds_each_live_face_with_its_mask_state(tmp_path):
    """The stand-in is reliable on the generated frames (ultralytics' NMS on its ONNX output, as the page decodes
    it): one box per person, the right class, on every frame."""
    from facemask.inference import postprocess
    from training.onnx_export import onnx_session

    entry = _stand_in_detector(tmp_path / "stand_in.onnx")
    session = onnx_session(tmp_path / entry["file"])
    for rgb in _live_frames()[::4]:
        raw = session.run(
            None, {"images": (_letterboxed(rgb, LIVE_IMGSZ).transpose(2, 0, 1)[None] / 255).astype(np.float32)}
        )
        found = postprocess(raw[0], (LIVE_IMGSZ, LIVE_IMGSZ), [rgb.shape[:2]], 0.25, 0.45)[0]
        found = found[np.argsort(found[:, 0])]
        assert [int(c) for c in found[:, 5]] == [0, 1, 2], found


@pytest.mark.slow  # a Vite build and about 4 s of live tracking: 40 s on a busy machine
def test_page_tracks_a_fake_webcam_and_warns_once_per_unmasked_person_in_headless_chromium(tmp_path):
    """Chromium's fake webcam plays (and loops) three generated people who stay in view: masked, unmasked, mask below
    the nose. With the stand-in detector, the page must count exactly 3 people, 2 unmasked and 2 alerts — one
    warning per unmasked person, whatever the frame rate it manages — with the monitor's settings from the manifest."""
    _tool_or_skip()
    if not (WEB / "node_modules" / ".package-lock.json").is_file():
        pytest.skip("the page's npm packages are not installed: run `make web-deps` (CI's .ci/run does)")
    models = tmp_path / "public" / "models"
    models.mkdir(parents=True)
    settings = _monitor_settings()
    manifest = {
        "generators": [],
        "facemask": _stand_in_detector(models / "stand_in.onnx"),
        "faces": None,
        "missing": [],
        "examples": {"facemask": [], "faces": []},
        "monitor": settings,
    }
    (models / "manifest.json").write_text(json.dumps(manifest))
    video = tmp_path / "people.y4m"
    _write_y4m(video, _live_frames(), LIVE_FPS)
    seconds = settings["alert_after_s"] + 2  # every unmasked person stays in view past alert_after_s
    with _served_page(tmp_path / "public", tmp_path) as url:
        driven = subprocess.run(
            [
                "node",
                "e2e/live.mjs",
                "--url",
                url,
                "--video",
                str(video),
                "--seconds",
                str(seconds),
                "--screenshot",
                str(tmp_path / "live.png"),
                "--chromium",
                CHROMIUM,
            ],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert driven.returncode == 0, driven.stderr[-3000:]
    result = json.loads(driven.stdout.strip().splitlines()[-1])
    assert not result["errors"], result["errors"]
    assert not [line for line in result["console"] if line.startswith(("error", "pageerror"))], result["console"]
    live = result["live"]
    print(f"live: {live['frames']} frames tracked, screenshot {tmp_path / 'live.png'}")
    assert live["source"] == "webcam" and live["summary"] == {"people": 3, "unmasked_people": 2, "alerts": 2}
    assert live["shown"] == ["3", "2", "2"]
    # one alert per unmasked person: their classes, each on a track id of the people in view at the end
    assert sorted(e["class"] for e in live["events"]) == ["mask_weared_incorrect", "without_mask"]
    by_id = {p["trackId"]: p["state"] for p in live["people"]}
    assert sorted(by_id) == [1, 2, 3] and all(by_id[e["track_id"]] == e["class"] for e in live["events"])
    assert all(e["time_s"] >= settings["alert_after_s"] for e in live["events"])
    assert live["warnings"] == [f"id {e['track_id']}: {e['class']} at {e['time_s']:.1f} s" for e in live["events"]]
    assert sorted(by_id.values()) == sorted(MONITOR_NAMES)


@pytest.fixture(scope="module")
def dlib_exported(tmp_path_factory, data_dir) -> dict:
    """A face model on dlib's ResNet (the default backbone; 2 steps of its head, which the descriptor export does not
    use) exported alone: the recognise pane gets dlib's descriptor network and a gallery of the built-in identities.
    With no face-mask detector exported, the gallery and the page both crop the centre square. Strangers, people not
    in the gallery: `astronaut`, skimage's astronaut photo whole (`skimage.data.astronaut()`), and `stranger`, the
    same photo cut to her face box grown by the crops' margin."""
    from faces.crop import face_square, square_crop
    from synthetic.faces import real_face_photos

    root = tmp_path_factory.mktemp("web-dlib")
    store = _store(root, data_dir)
    faces = ["model.backbone=dlib_resnet", "data.views=1", "max_images=16", "model.misclassified_examples=0"]
    train(compose("train", ["experiment=vgg16_faces", "debug=fast", *store, *faces]))
    public = root / "public"
    cfg = compose("export_web", [*store, f"out_dir={public / 'models'}"])
    with open_dict(cfg):
        cfg.models = {"vgg16_faces": cfg.models.vgg16_faces}
    manifest = export_web(cfg)
    astronaut = real_face_photos()[0]
    x, y, side = face_square(*astronaut.rgb.shape[1::-1], astronaut.face, manifest["faces"]["margin"])
    stranger = root / "stranger.png"
    Image.fromarray(square_crop(astronaut.rgb, (x, y, side), round(side))).save(stranger)
    whole = root / "astronaut.png"
    Image.fromarray(astronaut.rgb).save(whole)
    return {"public": public, "manifest": manifest, "data_dir": data_dir, "stranger": stranger, "astronaut": whole}


def _square_crop_of(rgb: np.ndarray) -> np.ndarray:
    """The page's 150-px crop of `rgb` without a face box (the centre square), as export_web computes it."""
    from faces.crop import face_square, square_crop

    return square_crop(rgb, face_square(rgb.shape[1], rgb.shape[0], None, 0.0), 150)


def _descriptor_of_chip(port, chip: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return port(torch.from_numpy(np.array(chip)).permute(2, 0, 1)[None]).numpy()[0]


def _port_descriptor(port, rgb: np.ndarray) -> np.ndarray:
    """dlib's descriptor (the PyTorch port, not the exported ONNX) of the page's crop of `rgb` without a face box."""
    return _descriptor_of_chip(port, _square_crop_of(rgb))


def _manifest_gallery(faces: dict):
    """faces.gallery.Gallery of the manifest's per-photo descriptors."""
    from faces.gallery import Gallery

    return Gallery(
        [g["name"] for g in faces["gallery"] for _ in g["descriptors"]],
        np.array([d for g in faces["gallery"] for d in g["descriptors"]]),
    )


def test_a_dlib_face_model_exports_the_descriptor_a_gallery_and_its_open_set_threshold(dlib_exported):
    """The gallery holds one descriptor per photo, each identity's first 20 (recomputed here with the PyTorch port;
    the export used ONNX Runtime), and the threshold is faces.gallery's open-set rule on them, below dlib's
    one-to-one 0.6. Each identity's example is named after it;
    the stranger's face crop and the whole astronaut photo, which 0.6 named after a cartoon, are unknown."""
    from faces.dlib_resnet_port import load_dlib_face_resnet
    from faces.gallery import DEFAULT_TARGET_FAR

    faces = dlib_exported["manifest"]["faces"]
    assert faces["face_model"] == "descriptor" and faces["output_kind"] == "descriptor"
    assert faces["class_names"] == IDENTITIES and faces["image_size"] == 150 and "tolerance" not in faces
    assert faces["parity"]["max_abs_difference"] <= faces["parity"]["tolerance"] == 1e-4
    assert faces["gallery_crop"] == "the centre square" and faces["margin"] == 0.2 and faces["gallery_skipped"] == 0
    assert [(g["name"], g["images"], len(g["descriptors"])) for g in faces["gallery"]] == [
        (n, 20, 20) for n in IDENTITIES
    ]
    port = load_dlib_face_resnet()
    root = dlib_exported["data_dir"] / "synthetic" / "faces"
    for entry in faces["gallery"]:
        photos = sorted((root / entry["name"]).glob("*.jpg"))[:20]
        ours = np.array([_port_descriptor(port, np.asarray(Image.open(p).convert("RGB"))) for p in photos])
        assert np.abs(np.array(entry["descriptors"]) - ours).max() <= 1e-4
    gallery = _manifest_gallery(faces)
    rule = gallery.open_set_threshold()
    assert (faces["threshold"], faces["target_far"], faces["threshold_rule"]) == (
        rule.threshold,
        DEFAULT_TARGET_FAR,
        rule.rule,
    )
    print(f"open-set threshold {faces['threshold']:.3f}: {faces['threshold_rule']}")
    assert faces["threshold"] < 0.6
    models = dlib_exported["public"] / "models"
    examples = dlib_exported["manifest"]["examples"]["faces"]
    assert [e["name"] for e in examples] == IDENTITIES
    for example in examples:
        descriptor = _port_descriptor(port, np.asarray(Image.open(models / example["file"]).convert("RGB")))
        ((name, distance),) = gallery.identify(descriptor[None], faces["threshold"])
        print(f"{example['name']}: named {name} at {distance:.3f}")
        assert name == example["name"]
    for key in ("stranger", "astronaut"):
        rgb = np.asarray(Image.open(dlib_exported[key]).convert("RGB"))
        descriptor = _port_descriptor(port, rgb)
        ((name, distance),) = gallery.identify(descriptor[None], faces["threshold"])
        ((at_06, _),) = gallery.identify(descriptor[None], 0.6)
        print(f"{key}: {name} at {distance:.3f} (at 0.6: {at_06})")
        assert name == "unknown"
    assert faces["trained"]["metric"] is None and faces["trained"]["run_id"]  # the head's accuracy is not the pane's


def test_the_descriptor_tolerance_setting_overrides_the_open_set_rule(dlib_exported, tmp_path, monkeypatch):
    """descriptor.tolerance=0.6 gives the fixed distance in place of the open-set rule, and says so."""
    import experiments.export_web as export_web_module

    manifest = {"faces": dlib_exported["manifest"]["faces"], "facemask": None}
    models = dlib_exported["public"] / "models"
    cfg = compose(
        "export_web",
        [
            f"examples.faces_root={dlib_exported['data_dir'] / 'synthetic' / 'faces'}",
            "descriptor.tolerance=0.6",
            "descriptor.gallery_images=2",
        ],
    )
    found = export_web_module.descriptor_gallery(cfg, manifest, models)
    assert (found["threshold"], found["target_far"]) == (0.6, None)
    assert (
        found["threshold_rule"]
        == "descriptor.tolerance=0.6 (conf/export_web.yaml): a fixed distance, not the open-set rule"
    )
    assert [g["images"] for g in found["gallery"]] == [2] * 4


def test_page_names_a_built_in_identity_and_calls_strangers_unknown_in_headless_chromium(dlib_exported, tmp_path):
    """The descriptor pane in Chromium: the second identity's built-in example is named after it, and the stranger's
    face photo and the whole astronaut photo are "unknown" at the gallery's open-set threshold, each with the
    distances the PyTorch port gives for the crop the page drew (onnxruntime-web runs the exported graph: 1e-4), the
    crop itself within resampling differences of Python's."""
    _page_tools_or_skip()
    from faces.dlib_resnet_port import load_dlib_face_resnet

    result = _drive_page(
        dlib_exported["public"],
        tmp_path,
        "--face-example",
        IDENTITIES[1],
        "--face-image",
        str(dlib_exported["stranger"]),
        "--face-image",
        str(dlib_exported["astronaut"]),
    )
    faces = dlib_exported["manifest"]["faces"]
    photos = {g["name"]: np.array(g["descriptors"]) for g in faces["gallery"]}
    port = load_dlib_face_resnet()
    models = dlib_exported["public"] / "models"
    for found, photo, wanted in (
        (result["example_recognised"], models / "examples" / "face-1.jpg", IDENTITIES[1]),
        (result["recognised"][0], dlib_exported["stranger"], "unknown"),
        (result["recognised"][1], dlib_exported["astronaut"], "unknown"),
    ):
        print(f"{photo.name}: {found['name']} at {found['distance']:.3f}, ranked {found['ranked']}")
        assert found["name"] == wanted and found["canvas"] == [150, 150] and found["faceBox"] is None
        assert found["threshold"] == faces["threshold"] and found["noFace"] is False
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        assert found["square"] == pytest.approx(_face_square(rgb.shape[1], rgb.shape[0], None, faces["margin"]))
        crop = np.array(found["crop"], np.uint8).reshape(150, 150, 3)
        difference = np.abs(crop.astype(int) - _square_crop_of(rgb)).mean()
        print(f"{photo.name} crop: mean |browser - PIL| = {difference:.2f} levels")
        assert difference < 6
        descriptor = _descriptor_of_chip(port, crop)
        assert np.abs(np.array(found["descriptor"]) - descriptor).max() <= 1e-4
        # each identity's score: the mean distance to its photos (faces.gallery.Gallery.person_scores)
        distances = {name: float(np.linalg.norm(rows - descriptor, axis=1).mean()) for name, rows in photos.items()}
        assert {r["name"]: r["distance"] for r in found["ranked"]} == pytest.approx(distances, abs=1e-4)
        assert found["distance"] == pytest.approx(min(distances.values()), abs=1e-4)
    assert result["trained"]["faces"]["text"].startswith(
        f"dlib's descriptor network (trained by dlib) against a gallery of 4 identities, 80 photos (the centre square); "
        f"named below a mean distance of {faces['threshold']:.3f} to a person's photos (false-positive identification "
        f"rate {faces['target_far']})"
    )


@pytest.fixture(scope="module")
def learned_exported(tmp_path_factory, data_dir) -> dict:
    """The built-in face-mask training as `make yolo-facemask` runs it on a CPU (the cpu_small profile; ML_PLAYGROUND_
    SHARED_DATA pointing nowhere, so from scratch as on a clone with nothing beside it) and a dlib face model, exported
    together: the recognise pane crops around the detector's boxes."""
    root = tmp_path_factory.mktemp("web-learned")
    store = [*_store(root, data_dir), "paths.shared_data=/nonexistent"]
    train(compose("train", ["experiment=yolo_facemask", *store]))
    faces = ["model.backbone=dlib_resnet", "data.views=1", "max_images=16", "model.misclassified_examples=0"]
    train(compose("train", ["experiment=vgg16_faces", "debug=fast", *store, *faces]))
    public = root / "public"
    cfg = compose("export_web", [*store, f"out_dir={public / 'models'}"])
    with open_dict(cfg):
        cfg.models = {task: cfg.models[task] for task in ("yolo_facemask", "vgg16_faces")}
    manifest = export_web(cfg)
    from synthetic.faces import real_face_photos

    astronaut = root / "astronaut.png"
    Image.fromarray(real_face_photos()[0].rgb).save(astronaut)
    return {"public": public, "manifest": manifest, "astronaut": astronaut}


@pytest.mark.slow  # the built-in face-mask training: minutes on a CPU
def test_page_draws_boxes_of_a_detector_that_learned_and_names_nobody_without_a_face(learned_exported, tmp_path):
    """At the page's default confidence (0.25) the built-in example gets the boxes ultralytics' post-processing
    gives in Python, at least one. The recognise pane crops around the detector's box (a close-up face photo is
    found in a grey canvas 4x its size, `export_web.face_box`): the second identity's example is named after it;
    in the astronaut photo, a real face, the detector that learned cartoon faces finds none, and the pane names
    nobody (where a centre crop of the photo was named after a cartoon identity at dlib's 0.6)."""
    _page_tools_or_skip()
    from training.onnx_export import onnx_session

    manifest, public = learned_exported["manifest"], learned_exported["public"]
    facemask, faces = manifest["facemask"], manifest["faces"]
    print(f"detector: {facemask['trained']}")
    assert facemask["trained"]["learned"] is True and facemask["trained"]["metric"]["value"] > 0
    assert faces["face_boxes"] == "facemask" and faces["gallery_crop"] == "around the face-mask detector's best box"
    print(f"gallery: {[(g['name'], g['images']) for g in faces['gallery']]}, {faces['gallery_skipped']} left out")
    assert [g["name"] for g in faces["gallery"]] == IDENTITIES
    result = _drive_page(
        public,
        tmp_path,
        "--facemask-example",
        "--face-example",
        IDENTITIES[1],
        "--face-image",
        str(learned_exported["astronaut"]),
    )
    scene = np.asarray(Image.open(public / "models" / manifest["examples"]["facemask"][0]["file"]))
    found = result["example_detections"]
    print(f"built-in example: {len(found['boxes'])} boxes: {found['boxes']}")
    assert len(found["boxes"]) >= 1
    # the 400 × 300 scene → 320 × 240 (the export's imgsz), 40 px of grey above
    detector = onnx_session(public / "models" / facemask["file"])
    _check_detections(found, detector, scene, 0.25, top=40, left=0, size=facemask["image_size"])
    example = result["example_recognised"]
    print(f"example: {example['name']} at {example['distance']:.3f}, face box {example['faceBox']}")
    assert example["name"] == IDENTITIES[1] and example["faceBox"] is not None and not example["noFace"]
    (astronaut,) = result["recognised"]
    assert astronaut["noFace"] is True and astronaut["name"] is None and astronaut["ranked"] == []
