"""Open-set identification with a folder of known people: `known/<Name>/*.jpg` (any number of photos each,
the layout of ../shared/data/faces and of `make capture-faces`) is the whole model.

Each gallery photo gives one descriptor (dlib's 128-d face descriptor of its central face, see
`faces.descriptors.FaceDescriber`); a face is named after the nearest gallery descriptor by Euclidean
distance, and called `unknown` when even that one is farther than `tolerance` (dlib's and face_recognition's
convention: 0.6, the margin the descriptor was trained with). Unlike a softmax over the known people, this
can say "nobody I know".

Gallery descriptors are cached in one `.npz` file keyed by each photo's path, size and modification time and
by the describer's and detector's settings, so a gallery is described once and a changed photo again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.images import IMAGE_SUFFIXES, UnreadableImage, read_rgb
from faces import Detection, FaceDetector
from faces.descriptors import FaceDescriber, central_face
from faces.recognition import UNKNOWN

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.6  # dlib / face_recognition: same person when the descriptors are closer than this


class DescriptorCache:
    """Descriptors (float32, D) of image files in one `.npz` file, keyed by `tag`, the file's resolved path, size
    and mtime: a changed or moved file, or another describer/detector (another `tag`), is described again. Each
    entry may carry a short label (e.g. how its face was found). Without a path (None) it keeps nothing between
    runs. Several processes may share the file: each save holds a lock (`<file>.lock`), merges what the others
    saved since this one read it, and replaces the file atomically, so no process's new entries are lost."""

    def __init__(self, path: str | Path | None, tag: str) -> None:
        self.path = Path(path) if path else None
        self.tag = tag
        self.entries, self.labels = self._read()
        self.changed = False

    def _read(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The file's {key: descriptor} and {key: label}; empty when there is no file or it is damaged."""
        if self.path is None or not self.path.is_file():
            return {}, {}
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                keys = stored["keys"].tolist()
                labels = dict(zip(keys, stored["labels"].tolist())) if "labels" in stored.files else {}
                return dict(zip(keys, stored["descriptors"])), labels
        except (OSError, ValueError, KeyError) as exc:  # a damaged cache is rebuilt, not an error
            log.warning("ignoring unreadable descriptor cache %s (%s)", self.path, exc)
            return {}, {}

    def key(self, file: Path) -> str:
        stat = file.stat()
        return hashlib.sha1(f"{self.tag}|{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()

    def get(self, file: Path) -> np.ndarray | None:
        return self.entries.get(self.key(file))

    def get_labelled(self, file: Path) -> tuple[np.ndarray, str] | None:
        """(descriptor, label) of `file`, or None when it is not cached under this tag."""
        key = self.key(file)
        return (self.entries[key], self.labels.get(key, "")) if key in self.entries else None

    def put(self, file: Path, descriptor: np.ndarray, label: str = "") -> None:
        key = self.key(file)
        self.entries[key] = np.asarray(descriptor, np.float32)
        self.labels[key] = label
        self.changed = True

    def save(self) -> None:
        """Write the file when something was added: under the lock, the entries on disk (another process's saves
        since this one read the file) merged with this one's, written to a temporary file renamed over it."""
        if self.path is None or not self.changed or not self.entries:
            return
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.path}.lock"):
            stored, stored_labels = self._read()
            self.entries, self.labels = {**stored, **self.entries}, {**stored_labels, **self.labels}
            keys = list(self.entries)
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp.npz")  # one per writer
            np.savez(
                temporary,
                keys=np.array(keys),
                descriptors=np.stack([self.entries[k] for k in keys]),
                labels=np.array([self.labels.get(k, "") for k in keys]),
            )
            temporary.replace(self.path)
        self.changed = False


@dataclass
class Gallery:
    """Known people's descriptors: `descriptors` float32 (M, D), row m of person `names[m]` from photo
    `files[m]`; `skipped` lists the photos that gave no descriptor (unreadable, or no face found)."""

    names: list[str]
    descriptors: np.ndarray
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def people(self) -> list[str]:
        """The known people, sorted."""
        return sorted(set(self.names))

    def identify(self, descriptors: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> list[tuple[str, float]]:
        """(name, distance) for each query row of `descriptors` (N, D): the person of the nearest gallery
        descriptor by Euclidean distance, or `unknown` when that distance is `tolerance` or more (face_recognition's
        `compare_faces` rule: a match is distance <= tolerance; here strictly below it, as the LFW threshold)."""
        descriptors = np.asarray(descriptors, np.float32).reshape(-1, self.descriptors.shape[1])
        if len(descriptors) == 0:
            return []
        distances = np.linalg.norm(descriptors[:, None, :] - self.descriptors[None, :, :], axis=2)  # (N, M)
        nearest = distances.argmin(axis=1)
        best = distances[np.arange(len(descriptors)), nearest]
        return [
            (self.names[m] if d < tolerance else UNKNOWN, float(d)) for m, d in zip(nearest.tolist(), best.tolist())
        ]


def gallery_photos(folder: str | Path) -> dict[str, list[Path]]:
    """{person: photos} of `folder/<Name>/*` (image files, sorted; hidden entries skipped). Raises UserError
    when the folder is missing or names nobody with a photo."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"gallery={folder}: folder not found — give a folder of known people, one sub-folder of photos per person"
        )
    people = {}
    for person in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(
            f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
        )
        if photos:
            people[person.name] = photos
    if not people:
        raise UserError(
            f"gallery={folder}: no <Name>/ sub-folder with photos in it — put each known person's photos "
            "in a folder named after them (make capture-faces NAME=... writes that layout)"
        )
    return people


def build_gallery(
    folder: str | Path,
    detector: FaceDetector,
    describer: FaceDescriber,
    cache_file: str | Path | None = None,
    progress: bool = False,
) -> Gallery:
    """Describe every photo of `folder/<Name>/`: its face nearest the image centre (`central_face`), aligned and
    described by `describer`. A photo with no face found, or unreadable, is skipped with a warning (its path in
    `Gallery.skipped`). Raises UserError when no photo gives a descriptor."""
    from tqdm.auto import tqdm

    people = gallery_photos(folder)
    cache = DescriptorCache(cache_file, f"{describer.tag()}|{detector!r}")
    names, rows, files, skipped = [], [], [], []
    photos = [(name, photo) for name, list_ in people.items() for photo in list_]
    for name, photo in tqdm(photos, desc="describing the gallery", unit="photo", disable=not progress):
        descriptor = cache.get(photo)
        if descriptor is None:
            try:
                rgb = read_rgb(photo)
            except UnreadableImage as exc:
                log.warning("gallery: skipped unreadable photo %s", exc)
                skipped.append(str(photo))
                continue
            face = central_face(detector.detect(rgb), rgb.shape)
            if face is None:
                log.warning("gallery: no face found in %s (%s) — skipped", photo, detector.name)
                skipped.append(str(photo))
                continue
            descriptor = describer(rgb, [face])[0]
            cache.put(photo, descriptor)
        names.append(name)
        rows.append(descriptor)
        files.append(str(photo))
    cache.save()
    if not rows:
        raise UserError(
            f"gallery={folder}: no face found in any of its {len(photos)} photo(s) by the {detector.name} detector"
        )
    missing = sorted(set(people) - set(names))
    if missing:
        log.warning("gallery: no usable photo of %s — they cannot be recognised", ", ".join(missing))
    return Gallery(names, np.stack(rows).astype(np.float32), files, skipped)


@dataclass
class GalleryRecognizer:
    """Names faces by the gallery (the interface of `faces.recognition.Recognizer`): each detection is described
    by `describer` and identified by `Gallery.identify` with `tolerance`; its score is the distance to the
    nearest known face (smaller is surer)."""

    gallery: Gallery
    describer: FaceDescriber
    tolerance: float = DEFAULT_TOLERANCE
    score_column = "distance"

    @property
    def class_names(self) -> list[str]:
        return self.gallery.people

    def recognize(self, rgb: np.ndarray, detections: list[Detection]) -> list[tuple[str, float]]:
        """(name or 'unknown', distance) for each detection in `rgb` (HxWx3 uint8 RGB)."""
        return self.gallery.identify(self.describer(rgb, detections), self.tolerance)


@dataclass
class OpenSetResult:
    """Open-set identification of P probes against a gallery, at each of T tolerances. `known` (P,) marks the
    probes whose person is in the gallery; `nearest` (P,) names the nearest gallery descriptor's person and
    `distance` (P,) gives its Euclidean distance. `identification_accuracy` (T,): the fraction of known probes
    named right (nearest person correct AND distance < tolerance); `stranger_rejection` (T,): the fraction of
    the other probes (strangers) called `unknown` (distance >= tolerance). These are the open-set rates of
    Phillips, Grother and Micheals ("Evaluation Methods in Face Recognition", Handbook of Face Recognition,
    2005): the detection-and-identification rate at rank 1, and 1 − the false-alarm rate."""

    tolerances: np.ndarray
    identification_accuracy: np.ndarray
    stranger_rejection: np.ndarray
    names: list[str]
    known: np.ndarray
    nearest: list[str]
    distance: np.ndarray

    def at(self, tolerance: float) -> tuple[float, float]:
        """(identification accuracy, stranger rejection) at one tolerance (Gallery.identify's rule)."""
        named = self.distance < tolerance
        truth = np.array(self.names, dtype=object)
        right = named & (np.array(self.nearest, dtype=object) == truth)
        return float(right[self.known].mean()), float((~named)[~self.known].mean())


def open_set_rates(
    gallery: Gallery, descriptors: np.ndarray, names: list[str], tolerances: np.ndarray | list[float]
) -> OpenSetResult:
    """`OpenSetResult` of the probes `descriptors` (P, D) whose true people are `names` (P,): a probe is known when
    its name is one of `gallery.people`. Raises ValueError when the probes hold no known person or no stranger
    (one of the two rates would be undefined) or when `names` and `descriptors` differ in length."""
    descriptors = np.asarray(descriptors, np.float32)
    if len(names) != len(descriptors):
        raise ValueError(f"{len(names)} probe names for {len(descriptors)} probe descriptors")
    known = np.array([n in set(gallery.names) for n in names], bool)
    if not known.any() or known.all():
        raise ValueError(
            f"open-set evaluation needs known probes and strangers; got {known.sum()} known, {(~known).sum()} strangers"
        )
    identified = gallery.identify(descriptors, tolerance=np.inf)  # nearest person and distance, no rejection
    nearest, distance = [n for n, _ in identified], np.array([d for _, d in identified])
    tolerances = np.asarray(tolerances, float)
    right_person = np.array([a == b for a, b in zip(nearest, names)], bool)
    within = distance[None, :] < tolerances[:, None]  # (T, P)
    accuracy = (within & right_person[None, :])[:, known].mean(axis=1)
    rejection = (~within)[:, ~known].mean(axis=1)
    return OpenSetResult(tolerances, accuracy, rejection, list(names), known, nearest, distance)
