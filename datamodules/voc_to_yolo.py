"""PASCAL VOC (images/ + annotations/*.xml) → the YOLO layout ultralytics reads.

Output: `images/{train,val}/<stem>.png`, `labels/{train,val}/<stem>.txt` (`class cx cy w h`, normalised),
`data.yaml` (ultralytics' dataset file) and `report.json`. Every fix and drop is reported by file:
boxes outside the image are clipped, zero-area and inverted boxes are dropped, unknown class names are an
error unless `unknown_classes="drop"`, xml whose image is missing or unreadable is skipped, images without
xml are skipped (they may hold unlabelled objects), and images with no objects are kept as backgrounds.
Images are decoded by `read_rgb` and written as RGB PNG (RGBA, gray and 16-bit sources become RGB).
The split is deterministic from the seed; byte-identical images always land on the same side.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from core.errors import UserError
from datamodules.images import IMAGE_SUFFIXES, UnreadableImage, read_rgb
from datamodules.voc import VocAnnotation, read_voc

log = logging.getLogger(__name__)

SPEC_FILE = "conversion.json"
SPLITS = ("train", "val")


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
    size_mismatch: list[str] = field(default_factory=list)  # xml <size> differs from the decoded image
    converted_to_rgb: int = 0  # sources that were not 8-bit RGB (RGBA, gray, 16-bit)
    xml_without_image: list[str] = field(default_factory=list)
    image_without_xml: list[str] = field(default_factory=list)
    unreadable_images: list[str] = field(default_factory=list)
    unreadable_xml: list[str] = field(default_factory=list)

    def summary(self) -> str:
        fixed = sum(self.clipped.values())
        dropped = sum(self.zero_area.values()) + sum(self.inverted.values()) + sum(len(v) for v in self.unknown_classes.values())
        skipped = len(self.xml_without_image) + len(self.image_without_xml) + len(self.unreadable_images) + len(self.unreadable_xml)
        return (f"{self.images['train']} train / {self.images['val']} val images, boxes {self.boxes}, "
                f"{len(self.backgrounds)} backgrounds; clipped {fixed} box(es), dropped {dropped}, skipped {skipped} file(s), "
                f"{self.converted_to_rgb} converted to RGB")

    def to_dict(self) -> dict:
        return asdict(self)


def convert_voc(
    src: str | Path,
    out: str | Path,
    classes: Sequence[str],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    unknown_classes: str = "error",
    images_dir: str = "images",
    annotations_dir: str = "annotations",
) -> ConversionReport:
    """Convert `src/{images_dir,annotations_dir}` into `out` (see the module docstring); returns the report.

    A second call with the same source files and arguments returns the stored report without converting.
    `val_fraction=1.0` puts every image in val (for evaluating a checkpoint on a whole folder).
    """
    src, out, classes = Path(src), Path(out), list(classes)
    if unknown_classes not in ("error", "drop"):
        raise UserError(f"unknown_classes must be 'error' or 'drop', got {unknown_classes!r}")
    if not 0.0 < val_fraction <= 1.0:
        raise UserError(f"val_fraction must be in (0, 1], got {val_fraction}")
    if len(set(classes)) != len(classes) or not classes:
        raise UserError(f"the class map must list distinct class names, got {classes}")
    image_root, xml_root = src / images_dir, src / annotations_dir
    for folder in (image_root, xml_root):
        if not folder.is_dir():
            raise UserError(f"VOC folder {src} has no {folder.name}/ — expected {images_dir}/ and {annotations_dir}/ "
                            "(README, section 'Face-mask detection (YOLO)')")
    xml_files = sorted(xml_root.glob("*.xml"))
    image_files = {p.stem: p for p in sorted(image_root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    spec = {
        "src": str(src.resolve()), "classes": classes, "val_fraction": val_fraction, "seed": seed,
        "unknown_classes": unknown_classes, "sources": _fingerprint(xml_files + list(image_files.values())),
    }
    spec_file = out / SPEC_FILE
    if spec_file.exists() and json.loads(spec_file.read_text()).get("spec") == spec:
        return ConversionReport(**json.loads((out / "report.json").read_text()))

    report = ConversionReport()
    tmp = out.with_name(f"{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    staging = tmp / "decoded"
    staging.mkdir(parents=True)
    items = _read_pairs(xml_files, image_files, classes, unknown_classes, report, staging)
    if not items:
        raise UserError(f"no usable image/xml pair in {src} — see the messages above for each skipped file")
    split = _split(items, val_fraction, seed)
    for name in SPLITS:
        if not split[name] and (name == "val" or val_fraction < 1.0):
            raise UserError(f"the {name} split of {src} is empty ({len(items)} usable images, val_fraction={val_fraction}); "
                            "add images or change val_fraction")

    for name in SPLITS:
        (tmp / "images" / name).mkdir(parents=True)
        (tmp / "labels" / name).mkdir(parents=True)
        for item in split[name]:
            (staging / f"{item['stem']}.png").rename(tmp / "images" / name / f"{item['stem']}.png")
            (tmp / "labels" / name / f"{item['stem']}.txt").write_text("".join(f"{line}\n" for line in item["lines"]))
        report.images[name] = len(split[name])
    staging.rmdir()
    names = dict(enumerate(classes))
    (tmp / "data.yaml").write_text(yaml.safe_dump({"path": str(out.resolve()), "train": "images/train", "val": "images/val", "names": names}, sort_keys=False))
    (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    (tmp / SPEC_FILE).write_text(json.dumps({"spec": spec}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("converted %s → %s: %s", src, out, report.summary())
    return report


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha1()
    for f in sorted(files):
        stat = f.stat()
        digest.update(f"{f.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_pairs(xml_files: list[Path], image_files: dict[str, Path], classes: list[str], unknown_classes: str,
                report: ConversionReport, staging: Path) -> list[dict]:
    """Decode each pair once, write its RGB PNG into `staging`, and return its stem, label lines and pixel hash."""
    from tqdm.auto import tqdm

    index = {name: i for i, name in enumerate(classes)}
    counts = dict.fromkeys(classes, 0)
    unknown: dict[str, list[str]] = {}
    items, seen_images = [], set()
    for xml in tqdm(xml_files, desc="converting VOC", unit="img", leave=False, disable=len(xml_files) < 200):
        try:
            annotation = read_voc(xml)
        except UserError as exc:
            report.unreadable_xml.append(str(xml))
            seen_images.add(xml.stem)  # its image is reported through this xml, not as unpaired
            log.warning("skipped: %s", exc)
            continue
        image_path = _image_for(xml, annotation, image_files)
        if image_path is None:
            report.xml_without_image.append(str(xml))
            log.warning("skipped %s: its image %r is not in %s", xml, annotation.filename or xml.stem, xml.parent.parent)
            continue
        seen_images.add(image_path.stem)
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
        lines = []
        for obj in annotation.objects:
            if obj.name not in index:
                continue
            line = _yolo_line(obj, index[obj.name], width, height, xml.stem, report)
            if line:
                lines.append(line)
                counts[obj.name] += 1
        if not annotation.objects:
            report.backgrounds.append(xml.stem)
        cv2.imwrite(str(staging / f"{xml.stem}.png"), rgb[..., ::-1])
        items.append({"stem": xml.stem, "lines": lines, "hash": hashlib.sha1(rgb.tobytes()).hexdigest()})
    if unknown:
        listing = "; ".join(f"{stem}: {sorted(set(v))}" for stem, v in list(unknown.items())[:10])
        if unknown_classes == "error":
            raise UserError(f"class names not in the class map {classes} in {len(unknown)} file(s): {listing} — add them to "
                            "the class map, or set unknown_classes=drop to drop those boxes")
        report.unknown_classes = unknown
        log.warning("dropped boxes of classes not in the class map in %d file(s): %s", len(unknown), listing)
    report.image_without_xml = sorted(str(p) for stem, p in image_files.items() if stem not in seen_images)
    for path in report.image_without_xml:
        log.warning("skipped %s: no annotation xml (an unlabelled image is not a safe background)", path)
    for kind in ("clipped", "zero_area", "inverted"):
        if getattr(report, kind):
            log.warning("%s boxes by file: %s", kind, dict(getattr(report, kind)))
    report.boxes = counts
    return items


def _image_for(xml: Path, annotation: VocAnnotation, image_files: dict[str, Path]) -> Path | None:
    named = Path(annotation.filename).stem if annotation.filename else xml.stem
    return image_files.get(named) or image_files.get(xml.stem)


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


def _split(items: list[dict], val_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Shuffle groups of byte-identical images with the seed; the first `val_fraction` of images go to val."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        groups[item["hash"]].append(item)
    order = sorted(groups, key=lambda h: groups[h][0]["stem"])
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    target = len(items) if val_fraction >= 1.0 else max(1, round(len(items) * val_fraction))
    split: dict[str, list[dict]] = {"train": [], "val": []}
    for h in order:
        side = "val" if len(split["val"]) < target else "train"
        split[side].extend(groups[h])
    return split
