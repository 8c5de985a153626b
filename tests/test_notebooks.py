"""Notebooks 00 and 02–04 executed against a store that holds the applications' runs (tests/test_report.py
`app_store`), so their branches that show runs are the ones that run, not only "not run yet"."""

from __future__ import annotations

import asyncio

import nbformat
import pytest
from nbclient import NotebookClient

from reporting.report import NOT_RUN
from tests.conftest import REPO
from tests.test_report import _uri, app_store  # noqa: F401  (the fixture)

NOTEBOOKS = ("00_overview.ipynb", "02_yolo_facemask.ipynb", "03_face_recognition.ipynb", "04_face_detection.ipynb")


def _outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _text(outputs: list) -> str:
    """Everything printed and every markdown table shown, in order."""
    return "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "") for o in outputs)


def _images(outputs: list) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow  # four kernels: about 30 s on 2 cores, 90 s when they are shared
def test_application_notebooks_show_the_stores_runs(app_store, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ML_PLAYGROUND_MLFLOW_URI", _uri(app_store["root"]))  # the kernels inherit it
    # and import this checkout's code, not whichever checkout the (possibly shared) editable install points at
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    notebooks = {name: nbformat.read(REPO / "notebooks" / name, as_version=4) for name in NOTEBOOKS}

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
    outputs = {name: _outputs(nb) for name, nb in notebooks.items()}
    for name, outs in outputs.items():
        assert not [o for o in outs if o.output_type == "error"], name
    ids = {role: run_id[:8] for role, run_id in app_store.items() if role != "root"}

    yolo = _text(outputs["02_yolo_facemask.ipynb"])
    assert f"yolo_facemask | real data, pretrained (yolov5n.pt), trainer=gpu | `{ids['yolo_best']}`" in yolo
    assert f"yolo_facemask | real data, from scratch, trainer=gpu | `{ids['yolo_scratch']}`" in yolo
    assert ids["yolo_newer_worse"] not in yolo and NOT_RUN not in yolo
    # the best run's table: validation at best.ckpt's epoch beside best.ckpt's test figure with its interval
    assert "| mAP50          |                            0.39  | 0.54 [0.41, 0.66] on 23 test photos |" in yolo
    assert "| AP50 with_mask |                            0.49  | 0.61 " in yolo
    assert "| 342 of 427 " in yolo and "| 0 of 427 " in yolo  # the pretrained-vs-scratch comparison
    # per configuration (3): mAP and loss curves; then one panel of the three runs' predictions
    assert _images(outputs["02_yolo_facemask.ipynb"]) == 3 * 2 + 1

    faces = _text(outputs["03_face_recognition.ipynb"])
    assert f"vgg16_faces | real data, dlib_resnet, trainer=cpu_real | `{ids['faces_best']}` " in faces
    assert ids["faces_newer_worse"] not in faces
    assert "demo-scale (max_epochs 20 → 5, max_images all → 512)" in faces
    assert "| Ada_Lovelace |           1 |      0.5 |        4 |" in faces
    assert f"eval_lfw `{ids['lfw']}`" in faces and "| accuracy (k-fold thresholds)    |    0.9873 |" in faces
    assert f"eval_openset `{ids['open_set']}`" in faces and "| stranger rejection      |  0.8125 |" in faces
    # accuracy curves of the 2 configurations, their confusion matrices in one panel, the LFW and open-set figures
    assert _images(outputs["03_face_recognition.ipynb"]) == 2 + 1 + 2

    detectors = _text(outputs["04_face_detection.ipynb"])
    assert f"compare_face_detectors `{ids['detectors']}`" in detectors
    assert "# Face detectors on data/voc" in detectors and "| hog | 0.75 |" in detectors
    assert _images(outputs["04_face_detection.ipynb"]) == 1

    overview = _text(outputs["00_overview.ipynb"])
    for role in ("yolo_best", "yolo_scratch", "faces_best", "detectors", "lfw", "open_set"):
        assert ids[role] in overview, role
