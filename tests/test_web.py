"""The browser playground end to end: smoke-trained models → `export_web` (ONNX, checked against PyTorch) →
the page built with Vite → driven in real headless Chromium, whose boxes must match ONNX Runtime in Python.

Needs Node.js with npm and the page's packages (`make web-deps`; the test skips without them) and Debian's chromium
(`apt-get install -y chromium`, or $CHROMIUM); without them the browser test skips and says which is missing.
"""

from __future__ import annotations

import json
import os
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
from lightning_modules.onnx_export import ExportedModel
from tests.conftest import REPO, compose

WEB = REPO / "web"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FACEMASK_IMGSZ = 160


def _store(root: Path, data_dir: Path) -> list[str]:
    return [
        f"paths.log_dir={root / 'logs'}",
        f"paths.mlflow_dir={root}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={data_dir / 'cache'}",
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir) -> dict:
    """Two-step runs of DCGAN exp1 (PyTorch's default init: varied samples even untrained) and the YOLO face-mask
    detector (from scratch, 40 images at 160 px), then `export_web` into a public/ folder of the test's own."""
    root = tmp_path_factory.mktemp("web")
    store = _store(root, data_dir)
    train(compose("train", ["experiment=exp1_dcgan_fruits", "debug=fast", *store]))
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
    public = root / "public"
    manifest = export_web(compose("export_web", [*store, f"out_dir={public / 'models'}", f"imgsz={FACEMASK_IMGSZ}"]))
    return {"root": root, "public": public, "manifest": manifest}


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
    for entry in (generator, facemask):  # one schema (lightning_modules.onnx_export.ExportedModel)
        assert set(ExportedModel.__required_keys__) <= set(entry) and entry["checkpoint"].endswith(".ckpt")
    missing = {m["task"]: m["command"] for m in manifest["missing"]}
    assert missing["exp3_dcgan_hardhat_tricks"] == "make exp3-dcgan" and "exp1_dcgan_fruits" not in missing
    if manifest["faces"] is None:
        assert missing["vgg16_faces"] == "make vgg16-faces"


def test_a_missing_checkpoint_file_is_a_user_error(tmp_path):
    from core.errors import UserError

    cfg = compose("export_web", [f"out_dir={tmp_path}", f"+checkpoints.exp1_dcgan_fruits={tmp_path / 'nope.ckpt'}"])
    with pytest.raises(UserError, match=r"checkpoints\.exp1_dcgan_fruits=.*nope\.ckpt: file not found"):
        export_web(cfg)


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


def test_page_generates_samples_and_draws_the_python_boxes_in_headless_chromium(exported, tmp_path):
    _tool_or_skip()
    if not (WEB / "node_modules" / ".package-lock.json").is_file():  # the test installs nothing itself
        pytest.skip("the page's npm packages are not installed: run `make web-deps` (CI's .ci/run does)")
    dist = tmp_path / "dist"
    _npm(
        "run", "build", "--", "--outDir", str(dist), "--emptyOutDir", env={"PLAYGROUND_PUBLIC": str(exported["public"])}
    )

    from datamodules.synthetic.faces import real_face_photos
    from lightning_modules.onnx_export import onnx_session
    from lightning_modules.yolo_export import onnx_detect

    facemask = exported["manifest"]["facemask"]
    # A test image at the detector's input size, so the browser's letterbox is a copy and the inputs are identical.
    image = np.asarray(
        Image.fromarray(real_face_photos()[0].rgb).resize((FACEMASK_IMGSZ, FACEMASK_IMGSZ), Image.BILINEAR)
    )
    image_path = tmp_path / "astronaut.png"
    Image.fromarray(image).save(image_path)
    session = onnx_session(exported["public"] / "models" / facemask["file"])
    raw = session.run(None, {"images": (image.transpose(2, 0, 1)[None] / 255).astype(np.float32)})[0][0]
    conf = _threshold(raw[4:].max(axis=0))
    expected = onnx_detect(session, [image], FACEMASK_IMGSZ, conf=conf, iou=0.45)[0]
    assert len(expected) >= 1

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
    screenshot = tmp_path / "playground.png"
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, server)
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
                "--facemask-image",
                str(image_path),
                "--conf",
                repr(conf),
            ],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert driven.returncode == 0, driven.stderr[-3000:]
    result = json.loads(driven.stdout.strip().splitlines()[-1])
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    assert result["status"]["state"] == "ready" and not result["errors"], result
    assert not [line for line in result["console"] if line.startswith(("error", "pageerror"))], result["console"]

    generator = result["generator"]  # 16 samples in a 4×4 grid of 64 px tiles with 2 px gaps
    assert generator["tile"] == [64, 64] and generator["canvas"] == [4 * 66 + 2, 4 * 66 + 2]
    assert min(generator["tile_std"]) > 5  # every tile painted with an image, none flat
    assert generator["differing_fraction"] > 0.25  # another seed, other images (a 2-step generator varies little)
    entry = exported["manifest"]["generators"][0]
    session = ort.InferenceSession(
        str(exported["public"] / "models" / entry["file"]), providers=["CPUExecutionProvider"]
    )
    tile = session.run([entry["output"]], {entry["input"]: np.array([generator["z0"]], np.float32)})[0][0]
    expected_tile = np.clip(np.round((tile + 1) / 2 * 255), 0, 255).transpose(1, 2, 0).ravel()
    assert np.abs(np.array(generator["tile0"]) - expected_tile).max() <= 1  # the browser's pixels are ONNX Runtime's

    detections = result["detections"]
    assert detections["canvas"] == [FACEMASK_IMGSZ, FACEMASK_IMGSZ]
    boxes = detections["boxes"]
    assert len(boxes) == len(expected), (boxes, expected)
    # The same detections, matched one to one by class, box and score: with a barely trained model several classes
    # of one box can score within 1e-6 of each other, so the order of such ties is not part of the contract.
    unmatched = list(boxes)
    for x0, y0, x1, y1, score, cls in expected:
        match = next(
            (
                box
                for box in unmatched
                if box["cls"] == int(cls)
                and np.allclose([box["x0"], box["y0"], box["x1"], box["y1"]], [x0, y0, x1, y1], atol=0.5)
                and box["score"] == pytest.approx(float(score), abs=1e-4)
            ),
            None,
        )
        assert match is not None, (f"no browser box for {(x0, y0, x1, y1, score, cls)}", boxes)
        unmatched.remove(match)
    assert max(detections["edge_colour_error"]) < 40  # each box is drawn on the canvas in its class colour
