"""Face detection speed, two comparisons each measured in one run:

1. `detect_folder` serial (1 process) against parallel (a pool of `--workers`), images/s over the same
   folder and the ratio (issue 5's goal: ≥ 1.8× on 2 cores). Both include reading, cropping and writing;
   the parallel time includes starting the pool.
2. HOG, Haar, MMOD and YuNet, each as configured in conf/detector/, on real photos resized to 640×480:
   images/s of `detect` alone and the ratio to HOG.

    python -m benchmarks.face_detectors [--folder IMAGES] [--photos IMAGES] [--workers 2] [--seconds 5]

Defaults: 128 generated ID cards for (1); for (2) the photos shipped in packages (skimage's astronaut,
matplotlib's Grace Hopper) plus, when ../shared/data is there, the first photo of each LFW identity.
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
from core.images import find_images, read_rgb
from datamodules.synthetic import make_id_cards
from datamodules.synthetic.faces import real_face_photos
from faces.batch import detect_folder

REPO = Path(__file__).resolve().parents[1]
LFW = Path(os.environ.get("ML_PLAYGROUND_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"


def configured_detector(name: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="detect_faces", overrides=[f"detector={name}"])
    return instantiate(cfg.detector)


def serial_vs_parallel(folder: Path, workers: int) -> None:
    images = len(find_images(folder))
    speeds = {}
    with tempfile.TemporaryDirectory() as out:
        for count in (1, workers):
            start = time.perf_counter()
            detect_folder(configured_detector("hog"), folder, Path(out) / str(count), workers=count, progress=False)
            speeds[count] = images / (time.perf_counter() - start)
    print(f"\n1. detect-faces (hog) over {images} images of {folder}, {len(os.sched_getaffinity(0))} cores available")
    print(f"   serial (1 process):      {speeds[1]:6.2f} images/s")
    print(
        f"   parallel ({workers} processes): {speeds[workers]:6.2f} images/s   ratio {speeds[workers] / speeds[1]:.2f}× (goal ≥ 1.8× on 2 cores)"
    )


def detector_speeds(photos: list, seconds: float) -> None:
    print(
        f"\n2. detect() alone on {len(photos)} real photos resized to 640×480, one process, ≥ {seconds:.0f} s per detector"
    )
    print(f"   {'detector':<8} {'images/s':>9} {'s/image':>8} {'vs hog':>7} {'faces/image':>12}")
    reference = None
    for name in ("hog", "haar", "mmod", "yunet"):
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
        "--folder", type=Path, help="images for the serial/parallel comparison (default: generated ID cards)"
    )
    parser.add_argument(
        "--cards",
        type=int,
        default=128,
        help="how many ID cards to generate (the pool's start-up needs a few seconds of work to amortise)",
    )
    parser.add_argument("--photos", type=Path, help="photos for the detector comparison (default: see above)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum time per detector")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or make_id_cards(Path(tmp) / "id_cards", seed=0, cards=args.cards, large=0) / "images"
        serial_vs_parallel(folder, args.workers)

    if args.photos:
        pixels = [read_rgb(p) for p in find_images(args.photos)]
    else:
        pixels = [photo.rgb for photo in real_face_photos()]
        if LFW.is_dir():
            pixels += [read_rgb(sorted(person.glob("*.jpg"))[0]) for person in sorted(LFW.iterdir()) if person.is_dir()]
    detector_speeds([cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_LINEAR) for rgb in pixels], args.seconds)


if __name__ == "__main__":
    main()
