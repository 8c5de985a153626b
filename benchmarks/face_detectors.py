"""Face detection speed, two comparisons each measured in one run:

1. `make detect-faces` on its default input (the generated ID cards of conf/detect_faces.yaml `id_cards`, including
   the large 2982×1926 card) with its default detector: `faces.batch.detect_folder` serial (1 worker) against the
   parallel path the target runs (`workers: null`, a process per available core), and against as many threads of
   one process (dlib and OpenCV release the GIL); images/s and each one's ratio to serial (goal ≥ 1.8× on 2
   cores). Each time holds reading, detecting, cropping, writing crops and annotated copies, faces.csv/json and
   the contact sheet, and starting the pool; not the MLflow logging, the same for all three.
2. HOG, Haar, MMOD and YuNet, each as configured in conf/detector/, on real photos resized to 640×480:
   images/s of `detect` alone and the ratio to HOG (`--detectors` picks some; the first is the reference).

    python -m benchmarks.face_detectors [--folder IMAGES] [--cards 24] [--workers N] [--photos IMAGES] [--seconds 5] [--detectors hog yunet]
    make bench-face-detectors ARGS="--seconds 2"

The printed headline (`ratio …`) is the parallel path's (processes) to serial. Defaults for (2): the photos shipped
in packages (skimage's astronaut, matplotlib's Grace Hopper) plus, when ../shared/data is there, the first photo of
each LFW identity.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import core  # noqa: F401  (offline switches)
from benchmarks.common import print_ratio
from core.images import find_images, read_rgb
from faces.batch import detect_folder
from synthetic.faces import real_face_photos

REPO = Path(__file__).resolve().parents[1]
DETECTORS = ["hog", "haar", "mmod", "yunet"]
DEFAULT_DETECTOR = "hog"  # conf/detect_faces.yaml's default
LFW = Path(os.environ.get("ML_PLAYGROUND_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"


def detect_faces_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="detect_faces", overrides=overrides)


def configured_detector(name: str):
    return instantiate(detect_faces_config([f"detector={name}"]).detector)


def serial_vs_parallel(folder: Path, workers: int) -> float:
    """Print images/s of detect-faces' folder path: serial, `workers` processes, `workers` threads; return the
    processes' ratio to serial."""
    images = len(find_images(folder))
    runs = {
        "serial (1 process)": (1, False),
        f"{workers} processes": (workers, False),
        f"{workers} threads": (workers, True),
    }
    speeds = {}
    with tempfile.TemporaryDirectory() as out:
        for k, (name, (count, threads)) in enumerate(runs.items()):
            detector = configured_detector(DEFAULT_DETECTOR)
            start = time.perf_counter()
            detect_folder(detector, folder, Path(out) / str(k), workers=count, progress=False, threads=threads)
            speeds[name] = images / (time.perf_counter() - start)
    serial = speeds["serial (1 process)"]
    print(
        f"\n1. detect-faces ({DEFAULT_DETECTOR}) over {images} images of {folder}, {len(os.sched_getaffinity(0))} cores available"
    )
    for name, speed in speeds.items():
        print(f"   {name:<20} {speed:6.2f} images/s   {speed / serial:.2f}× serial")
    winner = max(list(speeds)[1:], key=speeds.get)
    print(f"   faster parallel path: {winner}")
    return speeds[f"{workers} processes"] / serial


def detector_speeds(photos: list, seconds: float, detectors: list[str]) -> None:
    print(
        f"\n2. detect() alone on {len(photos)} real photos resized to 640×480, one process, ≥ {seconds:.0f} s per detector"
    )
    print(f"   {'detector':<8} {'images/s':>9} {'s/image':>8} {'vs ' + detectors[0]:>7} {'faces/image':>12}")
    reference = None
    for name in detectors:
        detector = configured_detector(name)
        detector.detect(photos[0])  # warm-up: builds the native detector, loads the model
        calls, faces, start = 0, 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < seconds:  # photos in turn; MMOD may manage only 2
            faces += len(detector.detect(photos[calls % len(photos)]))
            calls += 1
        rate = calls / (time.perf_counter() - start)
        reference = reference or rate
        print(f"   {name:<8} {rate:9.2f} {1 / rate:8.3f} {rate / reference:6.2f}× {faces / calls:12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--folder", type=Path, help="images for the serial/parallel comparison (default: detect-faces' ID cards)"
    )
    parser.add_argument("--cards", type=int, help="ID cards to generate (default: detect-faces' own count)")
    parser.add_argument("--photos", type=Path, help="photos for the detector comparison (default: see above)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="default: cores available")
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum time per detector")
    parser.add_argument(
        "--detectors", nargs="+", default=DETECTORS, choices=DETECTORS, help="for (2); the first is the reference"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cards = detect_faces_config([]).id_cards  # detect-faces' default input, generated here
        count = {"cards": args.cards} if args.cards else {}
        folder = args.folder or instantiate(cards, out_dir=str(Path(tmp) / "id_cards"), **count) / "images"
        ratio = serial_vs_parallel(folder, args.workers)

    if args.photos:
        pixels = [read_rgb(p) for p in find_images(args.photos)]
    else:
        pixels = [photo.rgb for photo in real_face_photos()]
        if LFW.is_dir():
            pixels += [read_rgb(sorted(person.glob("*.jpg"))[0]) for person in sorted(LFW.iterdir()) if person.is_dir()]
    detector_speeds(
        [cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_LINEAR) for rgb in pixels], args.seconds, args.detectors
    )
    print_ratio(f"detect-faces speed, {args.workers} processes / serial", ratio, 1.8)


if __name__ == "__main__":
    main()
