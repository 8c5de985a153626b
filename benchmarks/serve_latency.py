"""Request latency and throughput of the served face-mask detector against the same pyfunc called in process, in
one run:

    python -m benchmarks.serve_latency [--model URI | --ckpt CKPT] [--requests N] [--conf C] [--tracking-uri URI]
    make bench-serve ARGS="--requests 50 --conf 0.05"

Served: `make serve`'s path (`experiments.serve`: `mlflow models serve --env-manager local`, one worker) on a free
loopback port, one JSON request at a time (`dataframe_split`, the photo in base64, as docs/serving.md sends it),
over a kept-open HTTP connection; each request's time from sending to the parsed answer. In process:
`mlflow.pyfunc.load_model(uri).predict` on the photo's bytes, timed the same way, before and after the server's
run (this machine's speed drifts; bracketing keeps the drift out of the ratio). Both run the same model URI on the
same photo, the first of the built-in face-mask scenes (`make predict-facemask`'s default input), after 3 untimed
calls each, at the model's NMS thresholds unless `--conf` sets one (for both; a barely trained detector finds
boxes only at a low one).

The model: `--model`, else the registered yolo_facemask of the store (`make serve TASK=yolo_facemask`'s choice),
else the pyfunc of `--ckpt` or of the newest face-mask checkpoint under logs/ (else of a tiny one trained here
first), logged to a temporary store.

Printed: median and p90 latency (ms) and requests/s of each, and `ratio …` = served requests/s / in-process
requests/s (goal ≥ 0.5: HTTP, JSON and base64 cost less than the detector itself).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import core  # noqa: F401  (offline switches, PROJECT_ROOT)
from benchmarks.common import REPO, compose, print_ratio

GOAL = 0.5
WARM_UP = 3


def builtin_photo() -> Path:
    """The first built-in face-mask scene (generated on first use), `make predict-facemask`'s default input."""
    from hydra.utils import instantiate

    return sorted((Path(instantiate(compose("predict_facemask", []).builtin)) / "images").glob("*.png"))[0]


def model_uri(tracking_uri: str, model: str | None, ckpt: Path | None, work: Path) -> tuple[str, str]:
    """(tracking URI, model URI) to benchmark, see the module docstring."""
    from core.errors import UserError
    from experiments.serve import serving_uri

    if ckpt is None:
        try:
            return tracking_uri, serving_uri(tracking_uri, "yolo_facemask", model)
        except UserError:
            pass
    import mlflow

    from benchmarks.monitor_facemask import trained_checkpoint
    from core.mlflow_store import use_store
    from core.registry import log_pyfunc_model
    from facemask.serving import pyfunc_spec

    checkpoint = trained_checkpoint(ckpt, work)
    print(f"the pyfunc of {checkpoint}, logged to a temporary store", flush=True)
    store = f"sqlite:///{work}/mlflow.db"
    use_store(store)
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("bench_serve", artifact_location=str(work / "mlruns")))
    return store, log_pyfunc_model(store, run.info.run_id, pyfunc_spec(checkpoint, work))


def summary(seconds: list[float]) -> dict[str, float]:
    """Median and p90 latency (ms) and requests/s (requests over their summed time) of per-request `seconds`."""
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median_ms": 1000 * statistics.median(ordered),
        "p90_ms": 1000 * p90,
        "requests_per_s": len(ordered) / sum(ordered),
    }


def time_in_process(model, photo: bytes, requests: int, params: dict) -> list[float]:
    import pandas as pd

    for _ in range(WARM_UP):
        model.predict(pd.DataFrame({"image": [photo]}), params=params)
    seconds = []
    for _ in range(requests):
        start = time.perf_counter()
        model.predict(pd.DataFrame({"image": [photo]}), params=params)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_served(port: int, photo: bytes, requests: int, params: dict) -> tuple[list[float], int]:
    """Seconds per request and the boxes of the last answer."""
    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(photo).decode()]]}}
    body = json.dumps({**body, "params": params} if params else body)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    seconds, boxes = [], 0
    for k in range(WARM_UP + requests):
        start = time.perf_counter()
        connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        payload = json.loads(answer.read())
        if answer.status != 200:
            raise RuntimeError(f"the server answered {answer.status}: {payload}")
        if k >= WARM_UP:
            seconds.append(time.perf_counter() - start)
        boxes = len(payload["predictions"])
    connection.close()
    return seconds, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model URI (default: the registered yolo_facemask)")
    parser.add_argument("--ckpt", type=Path, help="a face-mask checkpoint to serve (instead of a registered model)")
    parser.add_argument("--requests", type=int, default=30, help="timed requests of each (default 30)")
    parser.add_argument("--conf", type=float, help="NMS's confidence threshold (default: the model's)")
    parser.add_argument(
        "--tracking-uri", default=f"sqlite:///{REPO}/mlflow.db", help="the store (default: the local one)"
    )
    args = parser.parse_args()

    import mlflow
    import pandas as pd

    from experiments.serve import running_server

    photo_path = builtin_photo()
    photo = photo_path.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        tracking_uri, uri = model_uri(args.tracking_uri, args.model, args.ckpt, Path(tmp))
        print(f"model {uri} ({tracking_uri}); photo {photo_path} ({len(photo)} bytes)", flush=True)
        mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.pyfunc.load_model(uri)
        params = {} if args.conf is None else {"conf": args.conf}
        boxes = len(model.predict(pd.DataFrame({"image": [photo]}), params=params))
        local = time_in_process(model, photo, args.requests, params)
        started = time.perf_counter()
        with running_server([f"tracking_uri={tracking_uri}", f"model_uri={uri}"]) as url:
            print(f"server up in {time.perf_counter() - started:.1f} s", flush=True)
            remote, served_boxes = time_served(int(url.split(":")[2].split("/")[0]), photo, args.requests, params)
        local += time_in_process(model, photo, args.requests, params)
    if served_boxes != boxes:
        raise RuntimeError(f"the server found {served_boxes} boxes, the in-process call {boxes}")
    ours, peer = summary(remote), summary(local)
    for name, figures in (("served (HTTP, JSON)", ours), ("in process (pyfunc.predict)", peer)):
        print(
            f"{name:28s} median {figures['median_ms']:.1f} ms, p90 {figures['p90_ms']:.1f} ms, "
            f"{figures['requests_per_s']:.2f} requests/s ({boxes} boxes a photo)",
            flush=True,
        )
    print_ratio("served / in-process requests/s", ours["requests_per_s"] / peer["requests_per_s"], GOAL)


if __name__ == "__main__":
    sys.exit(main())
