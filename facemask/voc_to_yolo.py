"""PASCAL VOC (images/ + annotations/*.xml) → the YOLO layout ultralytics reads.

Output: `images/{train,val,test}/<name>.png`, `labels/{train,val,test}/<name>.txt` (`class cx cy w h`,
normalised), `difficult/{train,val,test}/<name>.txt` (the boxes VOC marks `<difficult>`, same format, for
evaluation to ignore), `data.yaml` (ultralytics' dataset file; `test:` only with a test split) and `report.json`. `<name>` is the source image's file name with its
extension folded in (`visit.jpg` → `visit_jpg`, `core.outputs.output_name`), so two sources never share
an output. Images and xml are paired by `core.voc.pair_voc` (the xml's `<filename>` first, then the stem;
ambiguous pairs are skipped and reported). Every fix and drop is reported by file:
boxes outside the image are clipped, zero-area and inverted boxes are dropped, unknown class names are an
error unless `unknown_classes="drop"`, difficult objects are left out of the labels unless `keep_difficult`
(PASCAL VOC's convention) and counted, xml whose image is missing or unreadable is skipped, images without
xml are skipped (they may hold unlabelled objects), and images with no objects are kept as backgrounds.
Concurrent conversions into one `out` (DDP ranks, sweep jobs) take turns on a file lock beside it; each writes
a private temporary folder renamed into place, and a waiter finding the same conversion done reuses it.
Images are decoded by `read_rgb` and written as RGB PNG (RGBA, gray and 16-bit sources become RGB).
The split is deterministic, and byte-identical images always land on the same side. The test split
(`test_fraction`, off by default) is the images whose output names have the lowest SHA-1: it depends on neither the
seed nor the other fractions, so a sweep over seeds never trains on it and nothing that selects a checkpoint sees
it. The validation split is drawn from the rest with the seed; the training split is what is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from core.errors import UserError
from core.images import IMAGE_SUFFIXES, UnreadableImage, read_rgb
from core.outputs import output_name
from core.voc import VocPairing, pair_voc

log = logging.getLogger(__name__)

SPEC_FILE = "conversion.json"
SPLITS = ("train", "val", "test")
DIFFICULT_DIR = "difficult"
LAYOUT = 3  # bumped when output names or files change, so older conversions are redone


@dataclass
class ConversionReport:
    """What the conversion kept, fixed and dropped, by file (stems or paths)."""

    images: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    boxes: dict[str, int] = field(default_factory=dict)  # kept boxes per class
    backgrounds: list[str] = field(default_factory=list)  # images with no objects, kept
    clipped: dict[str, int] = field(default_factory=dict)  # boxes clipped to the image
    zero_area: dict[str, int] = field(default_factory=dict)  # dropped after clipping
    inverted: dict[str, int] = field(default_factory=dict)  # xmin > xmax or ymin > ymax, dropped
    unknown_classes: dict[str, list[str]] = field(default_factory=dict)  # dropped (unknown_classes="drop")
    difficult: dict[str, int] = field(default_factory=dict)  # <difficult> boxes by file: out of labels unless kept
    keep_difficult: bool = False
    size_mismatch: list[str] = field(default_factory=list)  # xml <size> differs from the decoded image
    converted_to_rgb: int = 0  # sources that were not 8-bit RGB (RGBA, gray, 16-bit)
    xml_without_image: list[str] = field(default_factory=list)
    image_without_xml: list[str] = field(default_factory=list)
    unreadable_images: list[str] = field(default_factory=list)
    unreadable_xml: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)  # xml skipped: which image is theirs is not certain

    def summary(self) -> str:
        """One line: counts of everything kept, fixed, dropped and skipped, naming the files whose xml `<size>`
        differs from the image and the ambiguous pairs (first 3 of each)."""
        fixed = sum(self.clipped.values())
        dropped = (
            sum(self.zero_area.values())
            + sum(self.inverted.values())
            + sum(len(v) for v in self.unknown_classes.values())
        )
        skipped = (
            len(self.xml_without_image)
            + len(self.image_without_xml)
            + len(self.unreadable_images)
            + len(self.unreadable_xml)
            + len(self.ambiguous)
        )
        difficult = sum(self.difficult.values())
        line = (
            f"{self.images['train']} train / {self.images['val']} val / {self.images.get('test', 0)} test images, "
            f"boxes {self.boxes}, "
            f"{len(self.backgrounds)} backgrounds; {difficult} difficult box(es) "
            f"{'kept as labels' if self.keep_difficult else 'left out of labels, ignored by evaluation'}; "
            f"clipped {fixed} box(es), dropped {dropped}, skipped {skipped} file(s), {self.converted_to_rgb} converted to RGB"
        )
        if self.ambiguous:
            line += f"; {len(self.ambiguous)} ambiguous image/xml pair(s) skipped: {_first(Path(a.split(': ')[0]).name for a in self.ambiguous)}"
        if self.size_mismatch:
            line += f"; xml <size> differs from the image in {len(self.size_mismatch)} file(s): {_first(self.size_mismatch)}"
        return line

    def to_dict(self) -> dict:
        return asdict(self)


def convert_voc(
    src: str | Path,
    out: str | Path,
    classes: Sequence[str],
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    unknown_classes: str = "error",
    images_dir: str = "images",
    annotations_dir: str = "annotations",
    keep_difficult: bool = False,
) -> ConversionReport:
    """Convert `src/{images_dir,annotations_dir}` into `out` (see the module docstring); returns the report.

    A second call with the same source files and arguments returns the stored report without converting.
    `val_fraction=1.0` puts every image in val (for evaluating a checkpoint on a whole folder). `test_fraction`
    of the images (by count, rounded, at least 1 when > 0) form the test split, which nothing trains or selects on;
    both fractions are of all usable images, so train gets `1 - val_fraction - test_fraction`.
    `keep_difficult`: write VOC's difficult objects as ordinary labels (default: left out, written to
    `difficult/` for evaluation to ignore). Raises UserError for bad arguments, missing folders, no usable pair.
    """
    src, out, classes = Path(src), Path(out), list(classes)
    if unknown_classes not in ("error", "drop"):
        raise UserError(f"unknown_classes must be 'error' or 'drop', got {unknown_classes!r}")
    if not 0.0 < val_fraction <= 1.0:
        raise UserError(f"val_fraction must be in (0, 1], got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction > 1.0:
        raise UserError(
            f"test_fraction must be in [0, 1) with val_fraction + test_fraction <= 1, got test_fraction={test_fraction} "
            f"and val_fraction={val_fraction}"
        )
    if len(set(classes)) != len(classes) or not classes:
        raise UserError(f"the class map must list distinct class names, got {classes}")
    image_root, xml_root = src / images_dir, src / annotations_dir
    for folder in (image_root, xml_root):
        if not folder.is_dir():
            raise UserError(
                f"VOC folder {src} has no {folder.name}/ — expected {images_dir}/ and {annotations_dir}/ "
                "(docs/facemask.md)"
            )
    xml_files = sorted(xml_root.glob("*.xml"))
    image_files = sorted(p for p in image_root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    spec = {
        "src": str(src.resolve()),
        "classes": classes,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "unknown_classes": unknown_classes,
        "keep_difficult": bool(keep_difficult),
        "layout": LAYOUT,
        "sources": _fingerprint(xml_files + image_files),
    }
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    # One writer at a time; the others wait, then find the same spec done and reuse it.
    with FileLock(out.parent / f".{out.name}.lock"):
        spec_file = out / SPEC_FILE
        if spec_file.exists() and json.loads(spec_file.read_text()).get("spec") == spec:
            return ConversionReport(**json.loads((out / "report.json").read_text()))
        # a private folder per writer (never a fixed name a crashed or concurrent run could share), renamed into place
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            report = _convert_into(
                tmp,
                src,
                out,
                pair_voc(image_root, xml_root),
                classes,
                val_fraction,
                test_fraction,
                seed,
                unknown_classes,
                keep_difficult,
            )
            (tmp / SPEC_FILE).write_text(json.dumps({"spec": spec}, indent=2))
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            if out.exists():
                out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s → %s: %s", src, out, report.summary())
    return report


def _convert_into(
    tmp: Path,
    src: Path,
    out: Path,
    pairing: VocPairing,
    classes: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    unknown_classes: str,
    keep_difficult: bool,
) -> ConversionReport:
    report = ConversionReport(
        keep_difficult=bool(keep_difficult),
        xml_without_image=pairing.xml_without_image,
        image_without_xml=pairing.image_without_xml,
        unreadable_xml=pairing.unreadable_xml,
        ambiguous=pairing.ambiguous,
    )
    staging = tmp / "decoded"
    staging.mkdir(parents=True)
    items = _read_pairs(pairing, classes, unknown_classes, keep_difficult, report, staging)
    if not items:
        raise UserError(f"no usable image/xml pair in {src} — see the messages above for each skipped file")
    split = _split(items, val_fraction, test_fraction, seed)
    for name in SPLITS:
        if not split[name] and (name == "val" or (name == "train" and val_fraction < 1.0)):
            raise UserError(
                f"the {name} split of {src} is empty ({len(items)} usable images, val_fraction={val_fraction}, "
                f"test_fraction={test_fraction}); add images or change the fractions"
            )

    for name in SPLITS:
        if name == "test" and not test_fraction:
            continue
        (tmp / "images" / name).mkdir(parents=True)
        (tmp / "labels" / name).mkdir(parents=True)
        for item in split[name]:
            (staging / f"{item['name']}.png").rename(tmp / "images" / name / f"{item['name']}.png")
            (tmp / "labels" / name / f"{item['name']}.txt").write_text("".join(f"{line}\n" for line in item["lines"]))
            if item["difficult"]:
                (tmp / DIFFICULT_DIR / name).mkdir(parents=True, exist_ok=True)
                (tmp / DIFFICULT_DIR / name / f"{item['name']}.txt").write_text(
                    "".join(f"{line}\n" for line in item["difficult"])
                )
        report.images[name] = len(split[name])
    staging.rmdir()
    names = dict(enumerate(classes))
    dataset = {"path": str(out.resolve()), "train": "images/train", "val": "images/val"}
    if test_fraction:
        dataset["test"] = "images/test"
    (tmp / "data.yaml").write_text(yaml.safe_dump({**dataset, "names": names}, sort_keys=False))
    (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


def difficult_boxes(image_file: str | Path) -> np.ndarray:
    """The difficult boxes left out of the labels of one converted image (`<out>/images/<split>/<name>.png`),
    as a (N, 5) float32 array `class, cx, cy, w, h` normalised to the image; (0, 5) when it has none."""
    parts = list(Path(image_file).parts)
    if "images" not in parts:
        return np.zeros((0, 5), np.float32)
    at = len(parts) - 1 - parts[::-1].index("images")  # the last "images", as ultralytics maps images/ → labels/
    side = Path(*parts[:at], DIFFICULT_DIR, *parts[at + 1 :]).with_suffix(".txt")
    if not side.is_file():
        return np.zeros((0, 5), np.float32)
    return np.array(
        [[float(v) for v in line.split()] for line in side.read_text().splitlines() if line.strip()], np.float32
    ).reshape(-1, 5)


def _first(names, shown: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:shown]) + (f" (+{len(names) - shown} more)" if len(names) > shown else "")


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha1()
    for f in sorted(files):
        stat = f.stat()
        digest.update(f"{f.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_pairs(
    pairing: VocPairing,
    classes: list[str],
    unknown_classes: str,
    keep_difficult: bool,
    report: ConversionReport,
    staging: Path,
) -> list[dict]:
    """Decode each pair once, write its RGB PNG into `staging`; return its output name, label lines, difficult
    lines (left out of the labels) and pixel hash."""
    from tqdm.auto import tqdm

    index = {name: i for i, name in enumerate(classes)}
    counts = dict.fromkeys(classes, 0)
    unknown: dict[str, list[str]] = {}
    items = []
    for pair in tqdm(pairing.pairs, desc="converting VOC", unit="img", leave=False, disable=len(pairing.pairs) < 200):
        xml, image_path, annotation = pair.xml, pair.image, pair.annotation
        try:
            rgb, was_rgb = _decode(image_path)
        except UnreadableImage as exc:
            report.unreadable_images.append(str(image_path))
            log.warning("skipped unreadable image %s", exc)
            continue
        report.converted_to_rgb += not was_rgb
        height, width = rgb.shape[:2]
        if (annotation.width, annotation.height) not in ((width, height), (0, 0)):
            report.size_mismatch.append(xml.stem)
        names_here = [obj.name for obj in annotation.objects if obj.name not in index]
        if names_here:
            unknown[xml.stem] = names_here
        lines, difficult = [], []
        for obj in annotation.objects:
            if obj.name not in index:
                continue
            line = _yolo_line(obj, index[obj.name], width, height, xml.stem, report)
            if not line:
                continue
            if obj.difficult:
                report.difficult[xml.stem] = report.difficult.get(xml.stem, 0) + 1
                if not keep_difficult:
                    difficult.append(line)
                    continue
            lines.append(line)
            counts[obj.name] += 1
        if not annotation.objects:
            report.backgrounds.append(xml.stem)
        name = output_name(image_path.name, "").as_posix()
        cv2.imwrite(str(staging / f"{name}.png"), rgb[..., ::-1])
        items.append(
            {"name": name, "lines": lines, "difficult": difficult, "hash": hashlib.sha1(rgb.tobytes()).hexdigest()}
        )
    if unknown:
        listing = "; ".join(f"{stem}: {sorted(set(v))}" for stem, v in list(unknown.items())[:10])
        if unknown_classes == "error":
            raise UserError(
                f"class names not in the class map {classes} in {len(unknown)} file(s): {listing} — add them to "
                "the class map, or set unknown_classes=drop to drop those boxes"
            )
        report.unknown_classes = unknown
        log.warning("dropped boxes of classes not in the class map in %d file(s): %s", len(unknown), listing)
    for kind in ("clipped", "zero_area", "inverted", "difficult"):
        if getattr(report, kind):
            log.warning("%s boxes by file: %s", kind, dict(getattr(report, kind)))
    if report.size_mismatch:
        log.warning(
            "xml <size> differs from the decoded image in %d file(s): %s",
            len(report.size_mismatch),
            report.size_mismatch,
        )
    report.boxes = counts
    return items


def _decode(path: Path) -> tuple[np.ndarray, bool]:
    """RGB pixels and whether the source already was 8-bit RGB (counted for the report)."""
    from PIL import Image

    rgb = read_rgb(path)
    with Image.open(path) as image:
        return rgb, image.mode == "RGB"


def _yolo_line(obj, cls: int, width: int, height: int, stem: str, report: ConversionReport) -> str | None:
    if obj.xmin > obj.xmax or obj.ymin > obj.ymax:
        report.inverted[stem] = report.inverted.get(stem, 0) + 1
        return None
    x0, y0 = min(max(obj.xmin, 0.0), width), min(max(obj.ymin, 0.0), height)
    x1, y1 = min(max(obj.xmax, 0.0), width), min(max(obj.ymax, 0.0), height)
    if (x0, y0, x1, y1) != (obj.xmin, obj.ymin, obj.xmax, obj.ymax):
        report.clipped[stem] = report.clipped.get(stem, 0) + 1
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        report.zero_area[stem] = report.zero_area.get(stem, 0) + 1
        return None
    return f"{cls} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"


def name_rank(name: str) -> str:
    """The key that orders images for the test split: the SHA-1 (hex) of the output name, a fixed pseudo-random order
    that depends on the name alone."""
    return hashlib.sha1(name.encode()).hexdigest()


def _split(items: list[dict], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Groups of byte-identical images, each kept on one side. Test: the groups with the lowest `name_rank` (of
        their first name) until `test_fraction` of the images (rounded, at least 1 when > 0); val: the next groups of
        a seeded shuffle of the rest until `val_fraction` of the images; train: the remaining ones. A folder too small for
    all three keeps an image for train and one for val before the test split (with a warning)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        groups[item["hash"]].append(item)
    split: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    test_target = max(1, round(len(items) * test_fraction)) if test_fraction > 0 else 0
    room = max(0, len(items) - (1 if val_fraction >= 1.0 else 2))  # train and val keep an image each
    if test_target > room:
        log.warning(
            "%d usable image(s): too few for a test split of %g beside train and val; %d go to test",
            len(items),
            test_fraction,
            room,
        )
        test_target = room
    rest = []
    for h in sorted(groups, key=lambda h: name_rank(groups[h][0]["name"])):
        if len(split["test"]) < test_target:
            split["test"].extend(groups[h])
        else:
            rest.append(h)
    order = sorted(rest, key=lambda h: groups[h][0]["name"])
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    target = len(items) if val_fraction >= 1.0 else max(1, round(len(items) * val_fraction))
    for h in order:
        side = "val" if len(split["val"]) < target else "train"
        split[side].extend(groups[h])
    return split
