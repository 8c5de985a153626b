"""Face-mask monitoring: tracked people, smoothed mask state, one alert per unmasked person, streams that drop,
an absent camera, Ctrl-C. A generated video of moving synthetic faces with a stand-in detector that returns the
drawn boxes, so the counts are exact and do not depend on a trained model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import cv2
import numpy as np
import pytest

from core.errors import UserError
from core.overrides import quote
from core.video_sources import VideoSource, parse_source, redact
from facemask.alerts import EventSink, MaskAlerts, Webhook
from tests.conftest import REPO, compose, mlflow_runs

NAMES = ["with_mask", "without_mask", "mask_weared_incorrect"]
FPS, FRAMES, SIZE = 10, 80, (400, 300)  # 8 s of video at 400x300
# (first frame, last frame, start centre x, centre y, x step per frame, mask): each person keeps to a row
PEOPLE = [
    (0, 79, 30, 45, 2, "worn"),  # masked all along, but misdetected as unmasked on frames 20, 40, 60
    (5, 64, 370, 115, -3, "none"),  # unmasked 6 s: one alert
    (10, 45, 380, 255, -4, "worn"),  # masked, leaves
    (25, 79, 20, 185, 3, "incorrect"),  # mask below the nose 5.5 s: one alert
    (50, 59, 20, 255, 4, "none"),  # unmasked 1 s, less than alert_after_s: no alert
]
BLIPS = {20, 40, 60}  # frames where person 0 is detected as without_mask
CLASS = {"worn": 0, "none": 1, "incorrect": 2}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The generated video and, per frame, the (N, 6) ground-truth detections drawn in it."""
    from synthetic.faces import Identity, draw_face

    rng = np.random.default_rng(0)
    identities = [Identity.random(rng) for _ in PEOPLE]
    path = tmp_path_factory.mktemp("monitor") / "people.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    truth = []
    for frame in range(FRAMES):
        canvas = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
        boxes = []
        for person, (first, last, x, y, step, mask) in enumerate(PEOPLE):
            if first <= frame <= last:
                box = draw_face(canvas, (x + step * (frame - first), y), 32, identities[person], rng, mask=mask)
                cls = CLASS["none"] if person == 0 and frame in BLIPS else CLASS[mask]
                boxes.append([*box, 0.9, cls])
        truth.append(np.array(boxes, np.float32).reshape(-1, 6))
        writer.write(np.ascontiguousarray(canvas[..., ::-1]))
    writer.release()
    return {"path": path, "truth": truth}


class GroundTruth:
    """A detector that returns the drawn boxes of the next frame (and checks it is given real frames)."""

    def __init__(self, truth, interrupt_at: int | None = None):
        self.truth, self.calls, self.interrupt_at = truth, 0, interrupt_at

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        assert rgb.shape == (SIZE[1], SIZE[0], 3) and rgb.dtype == np.uint8
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls += 1
        return self.truth[self.calls - 1]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One MLflow store for the tests that do not read it (creating a store costs seconds)."""
    return tmp_path_factory.mktemp("mlflow")


def _cfg(tmp_path, source, mlflow_dir=None, **overrides):
    store = {
        "paths.log_dir": str(tmp_path / "logs"),
        "paths.mlflow_dir": str(mlflow_dir or tmp_path),
        "out_dir": str(tmp_path / "out"),
    }
    return compose("monitor_facemask", {**store, "source": quote(str(source)), **overrides})


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_generated_video_gives_exact_people_unmasked_people_and_one_alert_per_person(clip, tmp_path, capsys):
    from experiments.monitor_facemask import run

    detector = GroundTruth(clip["truth"])
    summary = run(_cfg(tmp_path, clip["path"]), detector=detector, names=NAMES)
    assert detector.calls == FRAMES
    printed = capsys.readouterr().out.strip().splitlines()
    assert _last_json("\n".join(printed)) == {"frames": 80, "people": 5, "unmasked_people": 3, "alerts": 2}
    assert summary["interrupted"] is False and summary["kind"] == "file"

    out = tmp_path / "out"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    # ByteTrack confirms a new track on its second frame; the alert comes alert_after_s (2 s = 20 frames) later.
    assert [(e["track_id"], e["class"], e["frame"], e["time_s"]) for e in events] == [
        (2, "without_mask", 26, 2.6),
        (4, "mask_weared_incorrect", 46, 4.6),
    ]
    assert events[0]["confidence"] == pytest.approx(0.9) and len(events[0]["box"]) == 4
    assert [json.loads(line) for line in printed if line.startswith('{"event"')] == events  # also on stdout

    rows = (out / "tracks.csv").read_text().splitlines()
    assert (
        rows[0]
        == "track_id,first_frame,last_frame,first_time_s,last_time_s,frames_seen,state,mean_confidence,unmasked,alert_time_s"
    )
    tracks = {int(r.split(",")[0]): r.split(",") for r in rows[1:]}
    assert {t: (r[1], r[2], r[6], r[8]) for t, r in tracks.items()} == {
        1: ("0", "79", "with_mask", "0"),
        2: ("6", "64", "without_mask", "1"),
        3: ("11", "45", "with_mask", "0"),
        4: ("26", "79", "mask_weared_incorrect", "1"),
        5: ("51", "59", "without_mask", "1"),
    }
    assert tracks[5][9] == ""  # seen unmasked 0.8 s: no alert
    assert cv2.VideoCapture(str(out / "annotated.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
    assert json.loads((out / "summary.json").read_text())["people"] == 5

    _, runs = mlflow_runs(tmp_path, "monitor_facemask")
    assert runs[0].data.metrics["alerts"] == 2 and runs[0].data.metrics["unmasked_people"] == 3
    assert runs[0].data.params["source"] == str(clip["path"])


def test_without_smoothing_a_misdetected_masked_person_counts_as_unmasked(clip, tmp_path, shared_store, capsys):
    from experiments.monitor_facemask import run

    summary = run(
        _cfg(tmp_path, clip["path"], shared_store, smooth_frames=1, save_video="false"),
        detector=GroundTruth(clip["truth"]),
        names=NAMES,
    )
    assert (summary["people"], summary["unmasked_people"], summary["alerts"]) == (5, 4, 2)


def test_alert_after_longer_than_anyone_stays_unmasked_raises_none(clip, tmp_path, shared_store, capsys):
    from experiments.monitor_facemask import run

    summary = run(
        _cfg(tmp_path, clip["path"], shared_store, alert_after_s=6.0, save_video="false"),
        detector=GroundTruth(clip["truth"]),
        names=NAMES,
    )
    assert (summary["unmasked_people"], summary["alerts"]) == (3, 0)
    assert (tmp_path / "out" / "events.jsonl").read_text() == ""


def test_ctrl_c_ends_cleanly_with_the_summary_written(clip, tmp_path, shared_store, capsys):
    from experiments.monitor_facemask import run

    summary = run(
        _cfg(tmp_path, clip["path"], shared_store), detector=GroundTruth(clip["truth"], interrupt_at=30), names=NAMES
    )
    assert _last_json(capsys.readouterr().out) == {"frames": 30, "people": 4, "unmasked_people": 2, "alerts": 1}
    assert summary["interrupted"] is True
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames"] == 30
    assert cv2.VideoCapture(str(tmp_path / "out" / "annotated.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 30


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_stream_that_does_not_answer_gives_reconnect_messages_then_the_summary(tmp_path, shared_store, capsys, caplog):
    from experiments.monitor_facemask import run

    url = f"http://127.0.0.1:{_closed_port()}/stream.mjpg"
    cfg = _cfg(tmp_path, url, shared_store, **{"stream.reconnect_attempts": 3, "stream.backoff_s": 0.1})
    summary = run(cfg, detector=GroundTruth([]), names=NAMES)
    messages = [r.getMessage() for r in caplog.records if r.name == "core.video_sources"]
    assert messages[0] == f"stream {url} does not answer"
    assert [m.split(" — ")[1] for m in messages[1:4]] == [
        f"reopening in {w} s (attempt {i}/3)" for i, w in ((1, "0.1"), (2, "0.2"), (3, "0.4"))
    ]
    assert messages[4] == f"stream {url}: gave up after 3 attempts to reopen it"
    assert _last_json(capsys.readouterr().out) == {"frames": 0, "people": 0, "unmasked_people": 0, "alerts": 0}
    assert (summary["reconnects"], summary["stream_gave_up"]) == (3, True)


class FakeCapture:
    """A capture that yields `frames` frames then fails (0: never opens)."""

    def __init__(self, frames: int):
        self.left, self.opened = frames, frames > 0

    def isOpened(self):  # noqa: N802  (OpenCV's name)
        return self.opened

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((4, 4, 3), np.uint8)

    def get(self, prop):
        return 5.0

    def release(self):
        pass


def test_a_stream_that_drops_is_reopened_with_back_off_and_counted_once(caplog):
    opens = iter([FakeCapture(3), FakeCapture(0), FakeCapture(2), FakeCapture(0), FakeCapture(0)])
    waits: list[float] = []
    clock = iter(float(t) for t in range(100))
    source = VideoSource(
        "rtsp://127.0.0.1/cam",
        reconnect_attempts=2,
        backoff_s=1.0,
        backoff_max_s=1.5,
        open_capture=lambda s: next(opens),
        sleep=waits.append,
        clock=lambda: next(clock),
    )
    frames = list(source.frames())
    assert [f.index for f in frames] == [0, 1, 2, 3, 4] and [f.time_s for f in frames] == [0, 1, 2, 3, 4]
    assert waits == [1.0, 1.5, 1.0, 1.5]  # drop 1: fail, reopened; drop 2: fail, fail, gave up
    assert (source.reconnects, source.gave_up) == (4, True)


def test_sources_parse_to_camera_index_url_or_file(tmp_path):
    assert parse_source(0) == 0 and parse_source("0") == 0 and parse_source(" 2 ") == 2
    assert parse_source("rtsp://127.0.0.1:8554/cam?x=1") == "rtsp://127.0.0.1:8554/cam?x=1"
    video = tmp_path / "a clip=1.mp4"
    video.write_bytes(b"")
    assert parse_source(str(video)) == str(video)
    with pytest.raises(UserError, match=r"^source=.*missing\.mp4: video file not found"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(UserError, match="^source: give a video file"):
        parse_source(None)
    # a stream's password stays out of logs, summaries and MLflow
    assert redact("rtsp://admin:s3:cr@t@10.0.0.5:554/live?a=b") == "rtsp://admin:***@10.0.0.5:554/live?a=b"
    assert redact("http://127.0.0.1:8080/video.mjpg") == "http://127.0.0.1:8080/video.mjpg"
    assert redact("rtsp://user@cam/live") == "rtsp://user@cam/live"
    assert redact("http://cam:8080/a:b@c") == "http://cam:8080/a:b@c"


def test_absent_camera_is_a_one_line_error_through_make(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"SRC", "CKPT", "ARGS"}}
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            "monitor-facemask",
            "SRC=97",
            f"ARGS=paths.log_dir={quote(str(tmp_path))}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-2] == (
        "error: source=97: no camera at index 97 on this machine — give another index, a video file or a stream URL"
    )


class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_gets_each_alert_once_and_a_dead_webhook_is_only_a_warning(
    clip, tmp_path, shared_store, capsys, caplog
):
    from experiments.monitor_facemask import run

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.received = []
    try:
        url = f"http://127.0.0.1:{server.server_port}/alerts"
        run(
            _cfg(tmp_path, clip["path"], shared_store, save_video="false", **{"webhook.url": url}),
            detector=GroundTruth(clip["truth"]),
            names=NAMES,
        )
    finally:
        server.shutdown()
    assert [(e["track_id"], e["class"]) for e in Receiver.received] == [
        (2, "without_mask"),
        (4, "mask_weared_incorrect"),
    ]

    dead = Webhook(f"http://127.0.0.1:{_closed_port()}/alerts", attempts=2, timeout_s=0.5, backoff_s=0.01)
    alerts = MaskAlerts(NAMES, ["without_mask"], alert_after_s=0, window=1)
    with EventSink(tmp_path / "events.jsonl", webhook=dead) as sink:
        for event in alerts.update(0, 0.0, [(7, [1, 2, 3, 4], 0.8, 1)]):
            sink.emit(event)
    assert (dead.delivered, dead.failed) == (0, 1)
    assert any("not delivered after 2 attempts" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "events.jsonl").read_text())["track_id"] == 7


def test_alert_classes_must_be_classes_of_the_detector():
    with pytest.raises(UserError, match=r"^alert_classes: \['no_mask'\] are not classes"):
        MaskAlerts(NAMES, ["no_mask"], 2.0, 5)


def test_unknown_tracker_setting_is_a_user_error():
    from core.trackers import make_tracker

    assert make_tracker({"track_buffer": 60}).max_frames_lost == 60
    with pytest.raises(UserError, match=r"^tracker: unknown key\(s\) \['buffer'\]"):
        make_tracker({"buffer": 60})
    with pytest.raises(UserError, match=r"^tracker_type: 'sort' is none of \['bytetrack', 'botsort'\]"):
        make_tracker(tracker_type="sort")


def test_botsort_without_reid_tracks_the_generated_video_to_the_same_people_and_alerts(clip, tmp_path, capsys):
    from ultralytics.trackers.bot_sort import BOTSORT

    from core.trackers import make_tracker
    from experiments.monitor_facemask import run

    tracker = make_tracker(tracker_type="botsort")
    assert (
        isinstance(tracker, BOTSORT) and tracker.args.with_reid is False and tracker.args.gmc_method == "sparseOptFlow"
    )
    # Its motion compensation reads every frame (without one it fails): the run itself shows the frame reaches it.
    run(_cfg(tmp_path, clip["path"], tracker_type="botsort"), detector=GroundTruth(clip["truth"]), names=NAMES)
    # The same unmasked people and alerts as ByteTrack; 8 ids for the 5 people (measured: BoT-SORT's association,
    # not ByteTrack's, re-identifies 3 of them as new on this clip of jumping cartoon faces).
    assert _last_json(capsys.readouterr().out) == {"frames": 80, "people": 8, "unmasked_people": 3, "alerts": 2}


class MjpegStream(BaseHTTPRequestHandler):
    """An MJPEG camera over HTTP (multipart/x-mixed-replace, as IP cameras serve it) that sends 5 frames per
    connection and then hangs up; from the third connection on it answers 503 (the camera went away)."""

    connections = 0

    def do_GET(self):  # noqa: N802
        MjpegStream.connections += 1
        if MjpegStream.connections > 2:
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for i in range(5):
            jpg = cv2.imencode(".jpg", np.full((SIZE[1], SIZE[0], 3), 40 * i, np.uint8))[1].tobytes()
            self.wfile.write(
                b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpg), jpg)
            )

    def log_message(self, *args):
        pass


def test_http_mjpeg_stream_that_drops_is_reopened_then_given_up_with_the_summary(
    tmp_path, shared_store, capsys, caplog
):
    from http.server import ThreadingHTTPServer

    from experiments.monitor_facemask import run

    MjpegStream.connections = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), MjpegStream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/video.mjpg"
    try:
        cfg = _cfg(tmp_path, url, shared_store, **{"stream.reconnect_attempts": 2, "stream.backoff_s": 0.1})
        summary = run(cfg, detector=GroundTruth([np.zeros((0, 6), np.float32)] * 20), names=NAMES)
    finally:
        server.shutdown()
    messages = [r.getMessage() for r in caplog.records if r.name == "core.video_sources"]
    assert messages == [
        f"stream {url}: no frames — reopening in 0.1 s (attempt 1/2)",
        f"stream {url}: reopened",
        f"stream {url}: no frames — reopening in 0.1 s (attempt 1/2)",
        f"stream {url}: no frames — reopening in 0.2 s (attempt 2/2)",
        f"stream {url}: gave up after 2 attempts to reopen it",
    ]
    assert _last_json(capsys.readouterr().out) == {"frames": 10, "people": 0, "unmasked_people": 0, "alerts": 0}
    assert (summary["kind"], summary["reconnects"], summary["stream_gave_up"], MjpegStream.connections) == (
        "stream",
        3,
        True,
        4,
    )
    assert cv2.VideoCapture(str(tmp_path / "out" / "annotated.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 10


def test_the_tools_that_only_log_a_run_do_not_load_lightning():
    """pytorch_lightning's import chain took 3 s of a 6-second monitor call: the monitor (whose ONNX path loads the
    LightningModule only when it has to export), eval-lfw and recognize import without it."""
    import sys

    code = (
        "import sys, experiments.monitor_facemask, experiments.eval_lfw, experiments.recognize, "
        "facemask.export; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pytorch_lightning', 'lightning_fabric')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout[:500]
