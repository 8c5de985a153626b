"""PASCAL VOC annotations: one reader and one writer used by every VOC path in the repo."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError


@dataclass
class VocObject:
    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass
class VocAnnotation:
    filename: str
    width: int
    height: int
    objects: list[VocObject] = field(default_factory=list)


def read_voc(path: str | Path) -> VocAnnotation:
    """Parse one VOC xml; a file that does not parse or lacks a field is a UserError naming it."""
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
                )
            )
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise UserError(f"VOC annotation {path} cannot be read: {exc}") from exc
    return annotation


def write_voc(path: str | Path, annotation: VocAnnotation) -> None:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = annotation.filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", annotation.width), ("height", annotation.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for obj in annotation.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "difficult").text = "0"
        box = ET.SubElement(node, "bndbox")
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(box, tag).text = str(int(round(getattr(obj, tag))))
    ET.indent(root)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=False)
