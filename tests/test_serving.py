"""The trained models as MLflow pyfunc models: the face-mask detector (photos in, predict-facemask's boxes out), a
gallery of known people (photos in, recognize's names out) and the DCGAN generator (a count and a seed in, PNGs out),
each run in process; `make serve`'s model resolution; and the served detector and gallery over HTTP (slow: a
scoring server starts in 20-40 s), a malformed request answered with a one-line 400 and the server still up."""

from __future__ import annotations

import base64
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import UserError
from core.images import read_rgb
from core.registry import MODEL_URI_TAG, ONNX_MODEL_URI_TAG
from tests.conftest import compose, mlflow_runs
from tests.test_checkpoint_trust import write_payload_checkpoint

# ---- the face-mask detector ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def facemask(yolo_trained):
    """The session's tiny YOLO run (trained with debug=fast, which logs no model) with its model logged by the
    training entry's `log_trained_model` on its checkpoint, registered as yolo_facemask version 1 by the register
    entry; the loaded pyfunc and the checkpoint it was built from."""
    from experiments.register import register
    from experiments.train import log_trained_model
    from facemask.inference import load_detector

    store = yolo_trained["store"]
    client, [run] = mlflow_runs(yolo_trained["root"], "yolo_facemask")
    cfg = compose("train", {"experiment": "yolo_facemask", **store})
    checkpoint = yolo_trained["checkpoint"]
    log_trained_model(cfg, load_detector(checkpoint), checkpoint, run.info.run_id)
    run = client.get_run(run.info.run_id)
    version = register(compose("register", {**store, "task": "yolo_facemask"}))
    mlflow.set_tracking_uri(f"sqlite:///{yolo_trained['root']}/mlflow.db")
    model = mlflow.pyfunc.load_model(run.data.tags[MODEL_URI_TAG])
    checkpoint = yolo_trained["checkpoint"].parent / model.metadata.metadata["checkpoint"]
    return {**yolo_trained, "run": run, "version": version, "model": model, "model_checkpoint": checkpoint}


def _scene(facemask) -> Path:
    return sorted((facemask["voc"] / "images").glob("*.png"))[0]


def _predict_facemask_rows(facemask, scene: Path, out: Path, conf: float) -> list[dict]:
    """detections.json's rows of `make predict-facemask SRC=<scene>` with the model's checkpoint."""
    from experiments.predict_facemask import predict

    cfg = compose(
        "predict_facemask",
        {
            **facemask["store"],
            "source": str(scene),
            "ckpt": str(facemask["model_checkpoint"]),
            "out_dir": str(out),
            "conf": conf,
        },
    )
    predict(cfg)
    return json.loads((out / "detections.json").read_text())["detections"]


def _as_predict_rows(table: pd.DataFrame) -> list[tuple]:
    """The pyfunc's boxes rounded as detections.json rounds them: (class, confidence, x0, y0, x1, y1)."""
    return [
        (r["class"], round(r["confidence"], 4), *(round(r[k], 1) for k in ("x0", "y0", "x1", "y1")))
        for r in table.to_dict("records")
    ]


def test_the_training_run_logs_the_detector_pyfunc_with_onnx_beside_it(facemask):
    from facemask.serving import DEFAULT_CONF, DEFAULT_IOU

    run, model = facemask["run"], facemask["model"]
    signature = model.metadata.signature
    assert signature.inputs.to_dict() == [{"type": "binary", "name": "image", "required": True}]
    assert [c["name"] for c in signature.outputs.to_dict()] == ["image", "class", "confidence", "x0", "y0", "x1", "y1"]
    assert {p.name: p.default for p in signature.params.params} == {"conf": DEFAULT_CONF, "iou": DEFAULT_IOU}
    defaults = compose("predict_facemask", facemask["store"])
    assert (DEFAULT_CONF, DEFAULT_IOU) == (defaults.conf, defaults.iou)  # predict-facemask's thresholds
    # models from code: the model file imports the class; nothing is unpickled when it loads
    assert model.metadata.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert ONNX_MODEL_URI_TAG in run.data.tags
    assert facemask["version"].version == 1  # make register took the pyfunc


def test_the_detector_pyfunc_gives_predict_facemasks_boxes_on_a_built_in_scene(facemask, tmp_path):
    scene = _scene(facemask)
    expected = _predict_facemask_rows(facemask, scene, tmp_path / "out", conf=0.001)
    assert expected  # the tiny detector finds boxes at this threshold
    table = facemask["model"].predict(pd.DataFrame({"image": [scene.read_bytes()]}), params={"conf": 0.001})
    assert (table["image"] == 0).all()
    assert _as_predict_rows(table) == [
        (r["class"], r["confidence"], r["x0"], r["y0"], r["x1"], r["y1"]) for r in expected
    ]
    # a second, larger photo in the same request: its boxes in its own pixels
    big = cv2.resize(cv2.imread(str(scene)), None, fx=2, fy=2)
    table = facemask["model"].predict(
        pd.DataFrame({"image": [scene.read_bytes(), cv2.imencode(".png", big)[1].tobytes()]}),
        params={"conf": 0.001},
    )
    assert sorted(set(table["image"])) == [0, 1]
    assert table[table["image"] == 1]["x1"].max() > table[table["image"] == 0]["x1"].max()


def test_a_photo_that_is_no_image_is_a_one_line_bad_request(facemask):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        facemask["model"].predict(pd.DataFrame({"image": [b"not an image"]}))
    assert caught.value.get_http_status_code() == 400
    assert caught.value.message.startswith("row 0: cannot identify image file") and "\n" not in caught.value.message
    with pytest.raises(MlflowException, match="params.conf=1.5: a threshold in"):
        facemask["model"].predict(pd.DataFrame({"image": [_scene(facemask).read_bytes()]}), params={"conf": 1.5})


def test_a_checkpoint_whose_pickle_asks_for_code_is_refused_when_the_model_is_built(tmp_path):
    from dcgan.serving import pyfunc_spec as dcgan_spec
    from facemask.serving import pyfunc_spec as facemask_spec

    marker = tmp_path / "payload-ran"
    bad = write_payload_checkpoint(tmp_path / "bad.ckpt", marker)
    for build in (facemask_spec, dcgan_spec):
        with pytest.raises(UserError, match=r"^the trained checkpoint=.*bad\.ckpt") as caught:
            build(bad, tmp_path)
        assert "system" in str(caught.value)  # the import the pickle asked for
    assert not marker.exists() and not list(tmp_path.glob("*weights.ckpt"))


# ---- the DCGAN generator -------------------------------------------------------------------------------------------


def _run_in_store(tmp_path: Path) -> tuple[str, str]:
    """A fresh store in `tmp_path` and one run in it: (tracking URI, run id)."""
    from core.mlflow_store import use_store

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    use_store(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("served", artifact_location=str(tmp_path / "mlruns"))
    return uri, client.create_run(experiment).info.run_id


def test_the_generator_pyfunc_draws_a_seeds_images_as_pngs(tmp_path):
    from hydra.utils import instantiate

    from core.registry import log_pyfunc_model
    from dcgan.serving import noise, pyfunc_spec, to_uint8

    cfg = compose("train", {"experiment": "exp1_dcgan_fruits", "paths.log_dir": str(tmp_path / "logs")})
    module = instantiate(cfg.model, _convert_="partial")
    checkpoint = tmp_path / "dcgan.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    uri, run_id = _run_in_store(tmp_path)
    model_uri = log_pyfunc_model(uri, run_id, pyfunc_spec(checkpoint, tmp_path))
    model = mlflow.pyfunc.load_model(model_uri)

    table = model.predict(pd.DataFrame({"count": [3, 1], "seed": [5, 5]}))
    assert list(zip(table["request"], table["index"])) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    generator = module.generator.eval()
    with torch.no_grad():
        expected = to_uint8(generator(torch.from_numpy(noise(5, 3, generator.latent_dim))).numpy())
    got = [
        cv2.imdecode(np.frombuffer(base64.b64decode(png), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        for png in table["png"]
    ]
    assert got[0].shape == (64, 64, 3)
    np.testing.assert_array_equal(np.stack(got[:3]), expected)
    np.testing.assert_array_equal(got[3], expected[0])  # the same seed, the same first image
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="^row 0: count=0: ask for 1 to 256 images$"):
        model.predict(pd.DataFrame({"count": [0], "seed": [1]}))


# ---- the gallery of known people -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """Two built-in cartoon people (bob, dave), three photos each, registered as faces_gallery by the
    register-gallery entry; as probes each one's fourth photo, a third person (alice, a stranger) and skimage's
    astronaut (a real stranger). Only photos HOG finds a face in are used (it misses most of alice's and carol's)."""
    from experiments.register_gallery import register_gallery
    from faces.detectors import HogDetector
    from synthetic.faces import real_face_photos
    from synthetic.identities import make_identities

    root = tmp_path_factory.mktemp("gallery")
    people = make_identities(root / "people", identities=4, per_identity=12, seed=0)
    detector = HogDetector(score_threshold=0.0)
    found = {
        person.name: [photo for photo in sorted(person.glob("*.jpg")) if detector.detect(read_rgb(photo))]
        for person in sorted(p for p in people.iterdir() if p.is_dir())
    }
    known, probes = root / "known", root / "probes"
    probes.mkdir()
    for name in ("bob", "dave"):
        (known / name).mkdir(parents=True)
        for photo in found[name][:3]:
            shutil.copy(photo, known / name / photo.name)
        shutil.copy(found[name][3], probes / f"{name}.jpg")
    shutil.copy(found["alice"][0], probes / "alice.jpg")
    astronaut = real_face_photos()[0]
    cv2.imwrite(str(probes / "astronaut.jpg"), astronaut.rgb[..., ::-1])
    store = {
        "paths.log_dir": str(root / "logs"),
        "paths.mlflow_dir": str(root),
        "paths.data_dir": str(root / "data"),
        "paths.cache_dir": str(root / "cache"),
    }
    result = register_gallery(compose("register_gallery", {**store, "gallery": str(known), "progress": False}))
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    return {"root": root, "store": store, "known": known, "probes": probes, "result": result}


def _recognitions(gallery, out: Path) -> pd.DataFrame:
    """recognitions.csv of `make recognize IMAGES=<probes> GALLERY=<known>`."""
    from experiments.recognize import recognize

    settings = {
        **gallery["store"],
        "images": str(gallery["probes"]),
        "gallery": str(gallery["known"]),
        "out_dir": str(out),
        "workers": 1,
        "progress": False,
    }
    recognize(compose("recognize", settings))
    return pd.read_csv(out / "recognitions.csv")


def _as_recognize_rows(table: pd.DataFrame, names: list[str]) -> list[tuple]:
    return [
        (names[r["image"]], r["face"], r["name"], round(r["distance"], 4), r["left"], r["top"], r["right"], r["bottom"])
        for r in table.to_dict("records")
    ]


def test_the_gallery_pyfunc_names_faces_as_recognize_does(gallery, tmp_path):
    from faces.serving import load_gallery

    result = gallery["result"]
    assert (result["version"], result["people"], result["photos"]) == (1, 2, 6)
    model = mlflow.pyfunc.load_model(result["model_uri"])
    [threshold] = model.metadata.signature.params.params
    assert (threshold.name, threshold.default) == ("threshold", result["threshold"])
    artifacts = Path(mlflow.artifacts.download_artifacts(result["model_uri"])) / "artifacts"
    assert sorted(p.name for p in artifacts.iterdir()) == ["gallery.npz"]
    known, packaged, _ = load_gallery(artifacts / "gallery.npz")
    assert known.people == ["bob", "dave"] and packaged == result["threshold"]

    expected = _recognitions(gallery, tmp_path / "out")
    photos = sorted(gallery["probes"].iterdir())
    table = model.predict(pd.DataFrame({"image": [p.read_bytes() for p in photos]}))
    names = [p.name for p in photos]
    rows = [tuple(r) for r in expected[["image", "face", "name", "distance", "left", "top", "right", "bottom"]].values]
    assert _as_recognize_rows(table, names) == rows
    named = dict(zip([names[k] for k in table["image"]], table["name"]))
    assert (named["bob.jpg"], named["dave.jpg"], named["astronaut.jpg"]) == ("bob", "dave", "unknown")


def test_a_gallery_file_is_read_without_pickle(tmp_path):
    from faces.serving import load_gallery

    np.savez(tmp_path / "g.npz", descriptors=np.zeros((1, 2)), names=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match=r"gallery=.*g\.npz: not a gallery file.*pickle"):
        load_gallery(tmp_path / "g.npz")


# ---- make serve --------------------------------------------------------------------------------------------------


def test_make_serve_takes_the_champion_else_the_newest_version_else_says_to_register(facemask):
    from experiments.serve import serving_uri

    uri = f"sqlite:///{facemask['root']}/mlflow.db"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    assert client.get_model_version_by_alias("yolo_facemask", "champion").version == 1  # given at registration
    assert serving_uri(uri, "yolo_facemask") == "models:/yolo_facemask@champion"
    client.delete_registered_model_alias("yolo_facemask", "champion")
    assert serving_uri(uri, "yolo_facemask") == "models:/yolo_facemask/1"
    client.create_model_version("yolo_facemask", facemask["run"].data.tags[MODEL_URI_TAG], facemask["run"].info.run_id)
    assert serving_uri(uri, "yolo_facemask") == "models:/yolo_facemask/2"
    client.set_registered_model_alias("yolo_facemask", "champion", "1")
    try:
        assert serving_uri(uri, "yolo_facemask") == "models:/yolo_facemask@champion"
    finally:
        client.delete_registered_model_alias("yolo_facemask", "champion")
    assert serving_uri(uri, "yolo_facemask", "models:/other/3") == "models:/other/3"
    with pytest.raises(UserError, match="^task=never_registered: no registered model .* run `make register"):
        serving_uri(uri, "never_registered")


# ---- the served models over HTTP ---------------------------------------------------------------------------------


def served(store: dict, task: str):
    """The server `make serve TASK=<task>` starts, over the test's store (`experiments.serve.running_server`)."""
    from experiments.serve import running_server

    return running_server([f"task={task}", *(f"{key}={value}" for key, value in store.items())])


def post(url: str, body: dict) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of a JSON POST to `url`."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def photo_request(*photos: bytes, **params) -> dict:
    """The JSON body of a request with these photos (base64, MLflow's encoding of a binary column)."""
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(p).decode()] for p in photos]}}
    return {**body, "params": params} if params else body


@pytest.mark.slow
def test_the_served_detector_answers_predict_facemasks_boxes_and_survives_a_malformed_request(facemask, tmp_path):
    scene = _scene(facemask)
    expected = _predict_facemask_rows(facemask, scene, tmp_path / "out", conf=0.001)
    with served(facemask["store"], "yolo_facemask") as url:
        status, answer = post(url, photo_request(scene.read_bytes(), conf=0.001))
        assert status == 200
        got = pd.DataFrame(answer["predictions"])
        assert _as_predict_rows(got) == [
            (r["class"], r["confidence"], r["x0"], r["y0"], r["x1"], r["y1"]) for r in expected
        ]
        status, answer = post(url, photo_request(b"these bytes are no photo"))
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert answer["message"].startswith("row 0: cannot identify image file") and "\n" not in answer["message"]
        status, answer = post(url, photo_request(scene.read_bytes(), conf=0.001))  # still up
        assert status == 200 and _as_predict_rows(pd.DataFrame(answer["predictions"])) == _as_predict_rows(got)


@pytest.mark.slow
def test_the_served_gallery_names_a_face_as_recognize_does(gallery, tmp_path):
    expected = _recognitions(gallery, tmp_path / "out")
    photo = gallery["probes"] / "bob.jpg"
    with served(gallery["store"], "faces_gallery") as url:
        status, answer = post(url, photo_request(photo.read_bytes()))
    assert status == 200
    rows = [
        tuple(r)
        for r in expected[expected["image"] == "bob.jpg"][
            ["image", "face", "name", "distance", "left", "top", "right", "bottom"]
        ].values
    ]
    assert _as_recognize_rows(pd.DataFrame(answer["predictions"]), ["bob.jpg"]) == rows
    assert rows and rows[0][2] == "bob"


def test_a_task_without_a_pyfunc_logs_its_network_in_the_pytorch_flavour(tmp_path):
    """The face classifier's path (`log_trained_model` for a task with no `pyfunc`): the tensor-graph model, tagged as
    the run's servable model."""
    from core.registry import log_pytorch_model

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)).eval()
    example = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    uri, run_id = _run_in_store(tmp_path)
    model_uri = log_pytorch_model(uri, run_id, module, example)
    assert mlflow.MlflowClient(uri).get_run(run_id).data.tags[MODEL_URI_TAG] == model_uri
    model = mlflow.pyfunc.load_model(model_uri)
    queries = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(queries), module(torch.from_numpy(queries)).numpy(), atol=1e-6)
