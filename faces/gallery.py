"""Open-set identification with a folder of known people: `known/<Name>/*.jpg` (any number of photos each,
the layout of ../shared/data/faces and of `make capture-faces`) is the whole model.

Each gallery photo gives one descriptor (dlib's 128-d face descriptor of its central face, see
`faces.descriptors.FaceDescriber`); a face is scored against each known person by its mean Euclidean distance to
that person's photos, named after the best-scoring person, and called `unknown` when even that score is the
threshold or more. Unlike a softmax over the known people, this can say "nobody I know".

dlib's 0.6 is a one-to-one verification threshold; a gallery makes one comparison per photo, so at a fixed 0.6 the
more photos it holds the more strangers it names. The default threshold (`Gallery.open_set_threshold`) is instead
set on the gallery itself for a target false-positive identification rate (strangers named), see there.

Gallery photos are described by `faces.photos.PhotoPipeline` and kept in its cache, keyed by each photo's bytes
and the describer's and detector's settings, so a gallery is described once and a changed photo again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np

from core.errors import UserError
from core.images import list_inputs
from faces import Detection, FaceDetector
from faces.descriptors import FaceDescriber
from faces.recognition import UNKNOWN

log = logging.getLogger(__name__)

# dlib / face_recognition: same person when two descriptors are closer than this (one-to-one verification); the
# open-set threshold never goes above it
DEFAULT_TOLERANCE = 0.6
# the false-positive identification rate (fraction of strangers named) the default open-set threshold is set for
DEFAULT_TARGET_FAR = 0.01
# (mean, sd) of dlib's one-to-one impostor distances: all 2,168,403 pairs of one photo each of 2,083 LFW people
# (../shared/data/lfw-pairs, folds 1-5, outside ../shared/data/faces), described by this pipeline (68-landmark
# alignment, mirrored-chip average); the prior of `Gallery.open_set_threshold`, worth REFERENCE_PAIRS person pairs
REFERENCE_IMPOSTOR = (0.816, 0.088)
REFERENCE_PAIRS = 10


@dataclass(frozen=True)
class OpenSetThreshold:
    """A gallery's decision threshold: a face is named when its best per-person score (`Gallery.person_scores`, a
    mean Euclidean distance in descriptor units) is below `threshold`; `target_far` is the false-positive identification rate (fraction of strangers
    named) it is set for; `rule` says in one line how it was set."""

    threshold: float
    target_far: float
    rule: str


def person_distances(queries: np.ndarray, references: np.ndarray, person: np.ndarray, people: int) -> np.ndarray:
    """Mean Euclidean distance (Q, people), float64, from each row of `queries` (Q, D) to the rows of `references`
    (M, D) of each person: `person` (M,) gives each reference row's person index in 0 … people − 1 (a person with
    no row gets inf). Computed 1,024 queries at a time, so memory stays O(1024 · M)."""
    queries, references = np.asarray(queries, np.float64), np.asarray(references, np.float64)
    member = np.zeros((len(references), people))
    member[np.arange(len(references)), person] = 1
    counts = member.sum(axis=0)
    average = np.divide(member, counts, out=np.zeros_like(member), where=counts > 0)  # (M, people)
    out = np.empty((len(queries), people), np.float64)
    for start in range(0, len(queries), 1024):
        block = np.linalg.norm(queries[start : start + 1024, None, :] - references[None, :, :], axis=2)  # (q, M)
        out[start : start + 1024] = block @ average
    out[:, counts == 0] = np.inf
    return out


@dataclass
class Gallery:
    """Known people's descriptors: `descriptors` float32 (M, D), row m of person `names[m]` from photo
    `files[m]`; `skipped` lists the photos that gave no descriptor (unreadable, no face found, or several faces
    none of which can be told apart as the person's), `reasons` says why for each.

    A face's score against a person is its mean Euclidean distance to that person's photos (a per-person model:
    its expected value does not depend on how many photos the person has, where the nearest photo's distance
    falls as photos are added); it is named after the person with the lowest score when that score is below the
    threshold (`open_set_threshold`). With one photo a person this is the plain nearest-descriptor rule. The
    gallery is read-only once built: its calibrated thresholds are kept."""

    names: list[str]
    descriptors: np.ndarray
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # skipped photo → why it was left out
    _thresholds: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def people(self) -> list[str]:
        """The known people, sorted."""
        return sorted(set(self.names))

    def _person_index(self) -> np.ndarray:
        index = {name: k for k, name in enumerate(self.people)}
        return np.array([index[name] for name in self.names], np.int64)

    def person_scores(self, descriptors: np.ndarray) -> np.ndarray:
        """Scores (N, P), float64: the mean Euclidean distance from each row of `descriptors` (N, D) to the photos
        of each of the P `people` (sorted, as `people`)."""
        descriptors = np.asarray(descriptors, np.float32).reshape(-1, self.descriptors.shape[1])
        return person_distances(descriptors, self.descriptors, self._person_index(), len(self.people))

    def impostor_scores(self) -> np.ndarray:
        """The gallery's own impostor scores (n,), float64: every gallery photo's score (`person_scores`) against
        every other person, i.e. M · (P − 1) scores. Empty with fewer than two people."""
        if len(self.people) < 2:
            return np.empty(0)
        scores = self.person_scores(self.descriptors)
        own = np.zeros_like(scores, bool)
        own[np.arange(len(scores)), self._person_index()] = True
        return scores[~own]

    def open_set_threshold(self, target_far: float | None = None) -> OpenSetThreshold:
        """The default decision threshold of this gallery for a false-positive identification rate `target_far`
        (FPIR: the fraction of strangers named; None: DEFAULT_TARGET_FAR).

        Rule (Grother & Phillips, "Models of large population recognition performance", CVPR 2004: an open-set
        search of P independent gallery people makes a false alarm when any of its P impostor comparisons does;
        open-set terms of Phillips, Grother & Micheals, "Evaluation Methods in Face Recognition", Handbook of
        Face Recognition, 2005): a stranger is named when its lowest per-person score (`person_scores`) is below
        the threshold t, so FPIR(t) = 1 − (1 − FMR(t))^P with FMR the per-person false-match rate, and t is set
        where FMR(t) = 1 − (1 − target_far)^(1/P). FMR is modelled as normal, FMR(t) = Φ((t − μ) / σ), with μ and
        σ those of the gallery's own impostor scores (`impostor_scores`: each photo scored against every other
        person), pooled with the reference `REFERENCE_IMPOSTOR` (dlib's descriptor on LFW strangers) weighted as
        REFERENCE_PAIRS person pairs against the gallery's P(P − 1)/2 (each parameter shrunk towards the reference):
        μ = (1 − w) μ₀ + w μ̂, σ² = (1 − w) σ₀² + w σ̂², w = pairs / (pairs + REFERENCE_PAIRS). Finally t is capped
        at DEFAULT_TOLERANCE (dlib's one-to-one 0.6): never more lenient than verification.

        Why this rule: the per-person score's impostor distribution does not depend on the photos a person has,
        and the threshold falls with the number of people, so the rate of strangers named stays at the target as
        photos and people are added; the normal model extrapolates the far tail that a gallery's few people
        cannot sample (their own impostor scores are too few, and too distinct, for an empirical percentile).

        Small galleries: with one person there is no impostor score and the reference alone sets t (then the cap
        0.6: dlib's verification threshold); with a few people the reference outweighs them (2 people: w = 1/11),
        so two look-alike or two far-apart people cannot move t far. Raises ValueError when target_far is not in
        (0, 1)."""
        target_far = DEFAULT_TARGET_FAR if target_far is None else float(target_far)
        if not 0 < target_far < 1:
            raise ValueError(f"target_far must be in (0, 1), got {target_far}")
        if target_far in self._thresholds:
            return self._thresholds[target_far]
        people = len(self.people)
        pairs = people * (people - 1) // 2
        mean0, sd0 = REFERENCE_IMPOSTOR
        scores = self.impostor_scores()
        if len(scores):
            weight = pairs / (pairs + REFERENCE_PAIRS)
            gallery_mean, gallery_sd = float(scores.mean()), float(scores.std())
            mean = (1 - weight) * mean0 + weight * gallery_mean
            sd = float(np.sqrt((1 - weight) * sd0**2 + weight * gallery_sd**2))
            source = (
                f"impostor scores of this gallery ({len(scores)}: mean {gallery_mean:.3f}, sd {gallery_sd:.3f}, "
                f"{pairs} person pair(s)) pooled with dlib's LFW reference (weight {1 - weight:.2f})"
            )
        else:
            mean, sd = mean0, sd0
            source = "one person, no impostor score: dlib's LFW reference impostor distances"
        match_rate = 1 - (1 - target_far) ** (1 / people)
        calibrated = mean + NormalDist().inv_cdf(match_rate) * sd
        threshold = min(calibrated, DEFAULT_TOLERANCE)
        capped = (
            f", capped at dlib's {DEFAULT_TOLERANCE} (calibrated {calibrated:.4f})" if calibrated > threshold else ""
        )
        result = OpenSetThreshold(
            float(threshold),
            target_far,
            f"normal model (mean {mean:.3f}, sd {sd:.3f}) of {source}; per-person false-match rate "
            f"{match_rate:.3g} for {people} people{capped}",
        )
        self._thresholds[target_far] = result
        return result

    def nearest(self, descriptors: np.ndarray) -> list[tuple[str, float]]:
        """(person, score) of the lowest `person_scores` score (the nearest person) for each row of `descriptors`
        (N, D), without rejection."""
        scores = self.person_scores(descriptors)
        if len(scores) == 0:
            return []
        best = scores.argmin(axis=1)
        people = self.people
        return [(people[k], float(scores[n, k])) for n, k in enumerate(best.tolist())]

    def identify(self, descriptors: np.ndarray, tolerance: float | None = None) -> list[tuple[str, float]]:
        """(name, score) for each query row of `descriptors` (N, D): the person with the lowest score (mean
        Euclidean distance to their photos; with one photo each, the nearest descriptor's distance), or `unknown`
        when that score is `tolerance` or more (strictly below is a match, as the LFW threshold). `tolerance`
        None: this gallery's `open_set_threshold()`."""
        if tolerance is None:
            tolerance = self.open_set_threshold().threshold
        return [(name if score < tolerance else UNKNOWN, score) for name, score in self.nearest(descriptors)]


def gallery_photos(folder: str | Path) -> dict[str, list[Path]]:
    """{person: photos} of `folder/<Name>/**` (image files, sorted, sub-folders and symlinked folders included: a
    person's photos may be sorted by year; `core.images.list_inputs`). What is not used is named in one warning
    each: a person folder without a photo, files beside the person folders, other files inside them. Raises
    UserError when the folder is missing or names nobody with a photo."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            f"gallery={folder}: folder not found — give a folder of known people, one sub-folder of photos per person"
        )
    people, empty, loose = {}, [], []
    for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not entry.is_dir():
            loose.append(entry.name)
            continue
        listing = list_inputs(entry)
        if listing.left_out:
            log.warning("gallery: %s: %d photo(s)%s", entry.name, len(listing.files), listing.summary())
        if listing.files:
            people[entry.name] = listing.files
        else:
            empty.append(entry.name)
    if empty:
        log.warning("gallery: no photo in the folder(s) of %s — they cannot be recognised", ", ".join(empty))
    if loose:
        log.warning(
            "gallery: %d file(s) beside the person folders, not used (put each in its person's folder): %s",
            len(loose),
            ", ".join(loose[:5]) + (" …" if len(loose) > 5 else ""),
        )
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
    cache_dir: str | Path | None = None,
    progress: bool = False,
    workers: int = 1,
) -> Gallery:
    """Describe every photo of `folder/<Name>/` (`gallery_photos`): each face found by `detector`, aligned and
    described by `describer` (`faces.photos.PhotoPipeline`, kept under `cache_dir`, in `workers` processes). A
    photo with one face gives that face. A photo with several faces (a group photo, a passer-by) gives the face
    that can be told apart as the person's: the one whose mean distance to the person's one-face photos is below
    dlib's one-to-one tolerance (0.6) while every other face's is not; else the photo is left out, and so is a
    group photo of a person without a one-face photo to compare with. A photo with no face, or unreadable, is left
    out too. Each photo left out is logged with its reason and listed in `Gallery.skipped` (reasons in
    `Gallery.reasons`). Raises UserError when no photo gives a descriptor."""
    from faces.photos import PhotoPipeline

    people = gallery_photos(folder)
    pipeline = PhotoPipeline(
        detector,
        describer,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
        every_face=True,
        use_centre_box=False,
    )
    names, rows, files, reasons = [], [], [], {}
    groups: list[tuple[str, Path, np.ndarray]] = []
    photos = [(name, photo) for name, list_ in people.items() for photo in list_]
    for (name, photo), described in zip(photos, pipeline.describe_each([photo for _, photo in photos])):
        if isinstance(described, str):
            reasons[str(photo)] = described
            continue
        faces = described[0]
        if len(faces) == 1:
            names.append(name)
            rows.append(faces[0])
            files.append(str(photo))
        else:
            groups.append((name, photo, faces))
    single = {name: np.stack([r for n, r in zip(names, rows) if n == name]) for name in set(names)}
    for name, photo, faces in groups:
        chosen, why = face_of_person(faces, single.get(name), name)
        if chosen is None:
            reasons[str(photo)] = why
            continue
        log.info("gallery: %s holds %d faces; %s", photo, len(faces), why)
        names.append(name)
        rows.append(faces[chosen])
        files.append(str(photo))
    for photo, why in reasons.items():
        log.warning("gallery: left out %s: %s", photo, why)
    if not rows:
        first, why = next(iter(reasons.items()), ("", ""))
        raise UserError(
            f"gallery={folder}: no face found in any of its {len(photos)} photo(s) by the {detector.name} detector "
            f"that could be used (e.g. {Path(first).name}: {why})"
        )
    missing = sorted(set(people) - set(names))
    if missing:
        log.warning("gallery: no usable photo of %s — they cannot be recognised", ", ".join(missing))
    order = sorted(range(len(files)), key=lambda i: (names[i], files[i]))  # people and photos in folder order
    return Gallery(
        [names[i] for i in order],
        np.stack([rows[i] for i in order]).astype(np.float32),
        [files[i] for i in order],
        list(reasons),
        reasons,
    )


def face_of_person(faces: np.ndarray, references: np.ndarray | None, name: str) -> tuple[int | None, str]:
    """Which of a photo's faces (K, D) is `name`'s: (its index, how it was told apart), or (None, why not). The face
    is the one whose mean Euclidean distance to `references` (the person's one-face photos, (R, D)) is below
    `DEFAULT_TOLERANCE` while every other face's is not: one-to-one verification against the person, as LFW's
    protocol decides "same person" (dlib's 0.6). None when `references` is None or empty, or when no face or more
    than one face passes."""
    if references is None or not len(references):
        return None, f"{len(faces)} faces and no one-face photo of {name} to tell which is theirs"
    distance = np.linalg.norm(faces[:, None, :] - references[None, :, :], axis=2).mean(axis=1)  # (K,)
    passing = np.flatnonzero(distance < DEFAULT_TOLERANCE)
    shown = ", ".join(f"{d:.2f}" for d in distance)
    if len(passing) != 1:
        return None, (
            f"{len(faces)} faces, {len(passing)} of them within {DEFAULT_TOLERANCE} of {name}'s other photos "
            f"(mean distances {shown}): which is {name} cannot be told"
        )
    return int(passing[0]), f"face {int(passing[0]) + 1} is {name} (mean distances to {name}'s other photos {shown})"


@dataclass
class GalleryRecognizer:
    """Names faces by the gallery (the interface of `faces.recognition.Recognizer`): each detection is described
    by `describer` and identified by `Gallery.identify` with `tolerance` (None: the gallery's calibrated
    `open_set_threshold()`); its score is the distance to the
    best-scoring known person, the mean distance to their photos (smaller is surer)."""

    gallery: Gallery
    describer: FaceDescriber
    tolerance: float | None = None  # None: the gallery's open_set_threshold()
    score_column = "distance"

    @property
    def class_names(self) -> list[str]:
        return self.gallery.people

    def scores(self, rgb: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """Per-person scores (N, P), float64 (`Gallery.person_scores`: mean descriptor distance to each known
        person's photos) of the N detections in `rgb` (H, W, 3 uint8 RGB)."""
        if not detections:
            return np.empty((0, len(self.gallery.people)))
        return self.gallery.person_scores(self.describer(rgb, detections))

    def decide(self, scores: np.ndarray) -> tuple[str, float]:
        """(name or 'unknown', distance) of one face's per-person scores (P,), or of their mean over a track's
        frames: the lowest-scoring person, `unknown` at the threshold or beyond (`Gallery.identify`'s rule)."""
        tolerance = self.tolerance if self.tolerance is not None else self.gallery.open_set_threshold().threshold
        k = int(np.argmin(scores))
        return (self.gallery.people[k] if scores[k] < tolerance else UNKNOWN, float(scores[k]))

    def recognize(self, rgb: np.ndarray, detections: list[Detection]) -> list[tuple[str, float]]:
        """(name or 'unknown', distance) for each detection in `rgb` (HxWx3 uint8 RGB)."""
        return [self.decide(row) for row in self.scores(rgb, detections)]


@dataclass
class OpenSetResult:
    """Open-set identification of P probes against a gallery, at each of T tolerances. `known` (P,) marks the
    probes whose person is in the gallery; `nearest` (P,) names the best-scoring gallery person and
    `distance` (P,) its score (`Gallery.person_scores`). `identification_accuracy` (T,): the fraction of known probes
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
    identified = gallery.nearest(descriptors)  # best-scoring person and score, no rejection
    nearest, distance = [n for n, _ in identified], np.array([d for _, d in identified])
    tolerances = np.asarray(tolerances, float)
    right_person = np.array([a == b for a, b in zip(nearest, names)], bool)
    within = distance[None, :] < tolerances[:, None]  # (T, P)
    accuracy = (within & right_person[None, :])[:, known].mean(axis=1)
    rejection = (~within)[:, ~known].mean(axis=1)
    return OpenSetResult(tolerances, accuracy, rejection, list(names), known, nearest, distance)
