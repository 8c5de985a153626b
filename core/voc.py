"""PASCAL VOC annotations: one reader, one writer and one image/xml pairing used by every VOC path in the repo."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class VocObject:
    """One `<object>`: class name, box in pixels (VOC's 1-based corners, as written), and VOC's `<difficult>` flag
    (objects hard to recognise: PASCAL VOC leaves them out of training labels and ignores them in evaluation)."""

    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False


@dataclass
class VocAnnotation:
    filename: str
    width: int
    height: int
    objects: list[VocObject] = field(default_factory=list)


def read_voc(path: str | Path) -> VocAnnotation:
    """Parse one VOC xml; a file that does not parse or lacks a field is a UserError naming it.

    `<difficult>` is read as VOC's devkit reads it (an integer; absent means 0)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        annotation = VocAnnotation(
            filename=(root.findtext("filename") or "").strip(),
            width=int(float(size.findtext("width"))) if size is not None else 0,
            height=int(float(size.findtext("height"))) if size is not None else 0,
        )
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            annotation.objects.append(
                VocObject(
                    name=(obj.findtext("name") or "").strip(),
                    xmin=float(box.findtext("xmin")),
                    ymin=float(box.findtext("ymin")),
                    xmax=float(box.findtext("xmax")),
                    ymax=float(box.findtext("ymax")),
                    difficult=bool(int(float((obj.findtext("difficult") or "0").strip() or 0))),
                )
            )
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise UserError(f"VOC annotation {path} cannot be read: {exc}") from exc
    return annotation


def write_voc(path: str | Path, annotation: VocAnnotation) -> None:
    """Write `annotation` as VOC xml (boxes rounded to whole pixels, each object's difficult flag kept)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = annotation.filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", annotation.width), ("height", annotation.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for obj in annotation.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "difficult").text = "1" if obj.difficult else "0"
        box = ET.SubElement(node, "bndbox")
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(box, tag).text = str(int(round(getattr(obj, tag))))
    ET.indent(root)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=False)


@dataclass
class VocPair:
    xml: Path
    image: Path
    annotation: VocAnnotation


@dataclass
class VocPairing:
    """The outcome of pairing a VOC folder: usable pairs (sorted by xml) and every file left out, by path."""

    pairs: list[VocPair] = field(default_factory=list)
    xml_without_image: list[str] = field(default_factory=list)
    image_without_xml: list[str] = field(default_factory=list)
    unreadable_xml: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)  # one line per skipped xml: why its image is not certain

    @property
    def skipped(self) -> int:
        return (
            len(self.xml_without_image) + len(self.image_without_xml) + len(self.unreadable_xml) + len(self.ambiguous)
        )


def pair_voc(image_dir: str | Path, xml_dir: str | Path, suffixes: set[str] | None = None) -> VocPairing:
    """Pair each `xml_dir/*.xml` with its image in `image_dir`; the one pairing rule of the repo.

    An xml's image is the file its `<filename>` names when that file exists in `image_dir`; otherwise the single
    image whose stem is the stem of `<filename>` or, failing that, of the xml (Kaggle sets write `x.jpg` for
    `x.png`). Nothing is guessed: an xml with two candidate images (`visit.jpg` and `visit.png`, no usable
    `<filename>`), and every xml of an image that two xml claim, are skipped and listed in `ambiguous`; xml that
    do not parse, xml without an image and images without xml are skipped and listed too (all logged as warnings).
    `suffixes`: image extensions (lower case, with the dot; default `core.images.IMAGE_SUFFIXES`).
    """
    from core.images import IMAGE_SUFFIXES

    image_dir, xml_dir = Path(image_dir), Path(xml_dir)
    suffixes = suffixes or IMAGE_SUFFIXES
    images = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    by_name = {p.name: p for p in images}
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for p in images:
        by_stem[p.stem].append(p)
    result = VocPairing()
    claimed: dict[Path, list[VocPair]] = defaultdict(list)
    accounted: set[Path] = set()  # images reported through their xml, not as unpaired
    for xml in sorted(xml_dir.glob("*.xml")):
        try:
            annotation = read_voc(xml)
        except UserError as exc:
            result.unreadable_xml.append(str(xml))
            accounted.update(by_stem.get(xml.stem, []))
            log.warning("skipped: %s", exc)
            continue
        named = Path(annotation.filename).name if annotation.filename else ""
        if named in by_name:
            candidates = [by_name[named]]
        else:
            candidates = by_stem.get(Path(named).stem, []) if named else []
            candidates = candidates or by_stem.get(xml.stem, [])
        if len(candidates) > 1:
            accounted.update(candidates)
            result.ambiguous.append(
                f"{xml}: <filename> {annotation.filename!r} names no file in {image_dir}, and "
                f"{len(candidates)} images share its stem: {sorted(p.name for p in candidates)}"
            )
            continue
        if not candidates:
            result.xml_without_image.append(str(xml))
            log.warning("skipped %s: its image %r is not in %s", xml, annotation.filename or xml.stem, image_dir)
            continue
        claimed[candidates[0]].append(VocPair(xml, candidates[0], annotation))
    for image, pairs in claimed.items():
        accounted.add(image)
        if len(pairs) == 1:
            result.pairs.append(pairs[0])
        else:
            result.ambiguous += [
                f"{pair.xml}: {image.name} is also claimed by {[q.xml.name for q in pairs if q is not pair]}"
                for pair in pairs
            ]
    result.pairs.sort(key=lambda pair: pair.xml)
    result.ambiguous.sort()
    result.image_without_xml = [str(p) for p in images if p not in accounted]
    for line in result.ambiguous:
        log.warning("skipped, ambiguous image/xml pair: %s", line)
    for path in result.image_without_xml:
        log.warning("skipped %s: no annotation xml (an unlabelled image is not a safe background)", path)
    return result
