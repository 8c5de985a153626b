"""`make recognize` against face_recognition's command line (ageitgey/face_recognition 1.3), the same photos and the
same gallery, measured in one run: photos/s of each whole command (process start, reading the gallery, detecting and
describing every probe, writing the answers), and how many known people each names right and how many strangers
each rejects.

The photos (../shared/data): a gallery of `--per-person` photos of each of the 10 people of `faces/`, the rest of
their photos as known probes (at most `--known`), and `--strangers` photos of other LFW people (`lfw-pairs/images`)
as strangers. face_recognition reads a flat folder of known photos named by person (`<Name>_<k>.jpg`) and prints
every gallery photo within `--tolerance` of a face (0.6, its default); a face is named after the nearest of them.
Ours runs as the target runs: `python -m experiments.recognize images=… gallery=…` with its defaults (the
gallery's open-set threshold, a second look where no face is found, its torch threads), first with an empty
descriptor cache (cold: it describes the gallery, as face_recognition does on every run), then again (warm: the
gallery's descriptors from the cache, what a user's second run does).

    python -m benchmarks.recognize_vs_face_recognition [--per-person 10] [--known 150] [--strangers 40] [--cpus 1]
    make bench-recognize ARGS="--strangers 20"

face_recognition installs without building dlib: `pip install --no-deps face_recognition==1.3.0` (dlib comes from
dlib-bin, its models from face-recognition-models); the target does that when it is missing. The headline `ratio`
is ours (cold) / face_recognition's photos/s.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_ratio

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ML_PLAYGROUND_SHARED_DATA", REPO.parent / "shared" / "data"))
PERSON = re.compile(r"^(?P<name>.+)_\d{4}\.\w+$")  # LFW's <Name>_<NNNN>.jpg


def person_of(file: str) -> str:
    match = PERSON.match(Path(file).name)
    return match["name"] if match else Path(file).stem


def build_inputs(root: Path, per_person: int, known: int, strangers: int) -> dict:
    """gallery/<Name>/ (ours), known_flat/<Name>_<k>.jpg (face_recognition's), probes/ (flat, LFW names) as
    symlinks; {probe file name: person} and the 10 people."""
    people = sorted(p.name for p in (SHARED / "faces").iterdir() if p.is_dir())
    probes: dict[str, str] = {}
    known_probes = []
    for name in people:
        photos = sorted((SHARED / "faces" / name).glob("*.jpg"))
        for k, photo in enumerate(photos[:per_person]):
            (root / "gallery" / name).mkdir(parents=True, exist_ok=True)
            (root / "gallery" / name / photo.name).symlink_to(photo)
            (root / "known_flat").mkdir(exist_ok=True)
            (root / "known_flat" / f"{name}_{k:04d}{photo.suffix}").symlink_to(photo)
        known_probes += photos[per_person:]
    step = max(1, len(known_probes) // known) if known else 1
    chosen = known_probes[::step][:known]
    others = sorted(p for p in (SHARED / "lfw-pairs" / "images").iterdir() if p.is_dir() and p.name not in people)
    step = max(1, len(others) // max(1, strangers))
    chosen += [sorted(p.glob("*.jpg"))[0] for p in others[::step][:strangers]]
    (root / "probes").mkdir()
    for photo in chosen:
        (root / "probes" / photo.name).symlink_to(photo)
        probes[photo.name] = person_of(photo.name)
    return {"probes": probes, "people": set(people)}


def run_ours(root: Path, out: Path, cache: Path) -> tuple[float, dict[str, str]]:
    command = [
        sys.executable,
        "-m",
        "experiments.recognize",
        f"images={root / 'probes'}",
        f"gallery={root / 'gallery'}",
        f"out_dir={out}",
        f"paths.cache_dir={cache}",
        f"paths.mlflow_dir={root}",
        f"paths.log_dir={root / 'logs'}",
        "progress=false",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"experiments.recognize failed:\n{done.stderr[-2000:]}")
    answers: dict[str, str] = {}
    with open(out / "recognitions.csv") as handle:
        for row in csv.DictReader(handle):  # one row per face: the probe's answer is its best-scoring face
            best = answers.get(row["image"])
            if best is None or float(row["distance"]) < best[1]:
                answers[row["image"]] = (row["name"], float(row["distance"]))
    return seconds, {image: name for image, (name, _) in answers.items()}


def run_face_recognition(root: Path, cpus: int, tolerance: float) -> tuple[float, dict[str, str]]:
    cli = shutil.which("face_recognition", path=str(Path(sys.executable).parent))
    if cli is None:
        sys.exit("face_recognition is not installed: pip install --no-deps face_recognition==1.3.0")
    command = [cli, "--show-distance", "true", "--tolerance", str(tolerance), "--cpus", str(cpus)]
    # face_recognition_models finds its files with pkg_resources, which setuptools 81 removed: a one-function
    # stand-in on its path (importlib.resources does the same lookup), so the project's setuptools stays as it is
    shim = root / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "pkg_resources.py").write_text(
        "from importlib.resources import files\n\n\n"
        "def resource_filename(package, name):\n    return str(files(package) / name)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run(
        [*command, str(root / "known_flat"), str(root / "probes")], capture_output=True, text=True, cwd=root, env=env
    )
    seconds = time.perf_counter() - start
    if done.returncode or "," not in done.stdout:
        sys.exit(f"face_recognition failed:\n{(done.stdout + done.stderr)[-2000:]}")
    nearest: dict[str, tuple[str, float]] = {}
    for line in done.stdout.splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) != 3:
            continue
        image, name, distance = Path(parts[0]).name, parts[1], parts[2]
        if name in ("unknown_person", "no_persons_found"):
            nearest.setdefault(image, ("unknown", 9.0))
            continue
        d = float(distance)
        if image not in nearest or d < nearest[image][1]:
            nearest[image] = (person_of(name + ".jpg"), d)
    return seconds, {image: name for image, (name, _) in nearest.items()}


def rates(answers: dict[str, str], probes: dict[str, str], people: set[str]) -> tuple[float, float, int]:
    """(known named right, strangers rejected, probes with no answer = no face found)."""
    known = [f for f, p in probes.items() if p in people]
    strangers = [f for f, p in probes.items() if p not in people]
    right = sum(answers.get(f) == probes[f] for f in known) / max(1, len(known))
    rejected = sum(answers.get(f, "unknown") == "unknown" for f in strangers) / max(1, len(strangers))
    return right, rejected, sum(f not in answers for f in probes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-person", type=int, default=10, help="gallery photos of each of the 10 people")
    parser.add_argument("--known", type=int, default=150, help="known probes at most (the people's other photos)")
    parser.add_argument("--strangers", type=int, default=40, help="photos of other LFW people")
    parser.add_argument("--cpus", type=int, default=1, help="face_recognition's --cpus (its default 1)")
    parser.add_argument("--tolerance", type=float, default=0.6, help="face_recognition's --tolerance (its default)")
    args = parser.parse_args()
    if not (SHARED / "faces").is_dir() or not (SHARED / "lfw-pairs" / "images").is_dir():
        sys.exit(f"needs {SHARED}/faces and {SHARED}/lfw-pairs/images (docs/data.md)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = build_inputs(root, args.per_person, args.known, args.strangers)
        probes, people = inputs["probes"], inputs["people"]
        n = len(probes)
        print(
            f"{n} probe photos ({sum(p in people for p in probes.values())} of the 10 people, "
            f"{sum(p not in people for p in probes.values())} strangers); gallery {args.per_person} a person"
        )
        theirs_s, theirs = run_face_recognition(root, args.cpus, args.tolerance)
        cold_s, cold = run_ours(root, root / "ours-cold", root / "cache")
        warm_s, warm = run_ours(root, root / "ours-warm", root / "cache")
        for label, seconds, answers in (
            (f"face_recognition (--cpus {args.cpus}, tolerance {args.tolerance})", theirs_s, theirs),
            ("make recognize, empty cache", cold_s, cold),
            ("make recognize, cached gallery", warm_s, warm),
        ):
            right, rejected, no_face = rates(answers, probes, people)
            print(
                f"{label:55s} {seconds:7.2f} s  {n / seconds:6.2f} photos/s  known named {right:.3f}  "
                f"strangers rejected {rejected:.3f}  no face {no_face}"
            )
        print_ratio("make recognize (empty cache) / face_recognition, photos/s", theirs_s / cold_s, 1.0)


if __name__ == "__main__":
    main()
