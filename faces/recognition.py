"""Recognise faces in a folder of images with a trained face classifier: detect, crop as in training,
classify, call a face `unknown` below a confidence threshold, draw the names, write recognitions.csv."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from core.checkpoints import load_checkpoint, load_module
from core.errors import UserError
from datamodules.faces import FaceCrop
from datamodules.images import UnreadableImage, find_images, read_rgb
from datamodules.outputs import output_name
from faces import Detection, FaceDetector
from faces.batch import check_folders

log = logging.getLogger(__name__)

CSV_COLUMNS = ["image", "face", "name", "confidence", "left", "top", "right", "bottom", "annotated"]
UNKNOWN = "unknown"


@dataclass
class Recognizer:
    model: torch.nn.Module  # a FaceClassifier in eval mode
    crop: FaceCrop
    threshold: float

    @property
    def class_names(self) -> list[str]:
        return self.model.class_names

    @classmethod
    def from_checkpoint(cls, path: str | Path, threshold: float, label_map: str | Path | None = None) -> Recognizer:
        """Load a face-recognition checkpoint and check its identities against the label map written beside
        it at training time (`<run>/label_map.json`) or the one given."""
        from lightning_modules.face_classifier import LABEL_MAP, FaceClassifier, head_outputs

        path = Path(path)
        if not path.is_file():
            raise UserError(f"CKPT={path}: checkpoint not found")
        checkpoint = load_checkpoint(path, key="CKPT")
        names = checkpoint.get("hyper_parameters", {}).get("class_names")
        data = checkpoint.get("datamodule_hyper_parameters")
        if not names or data is None:
            raise UserError(f"CKPT={path} is not a face-recognition checkpoint (no identities in it) — give one written by `make vgg16-faces`")
        if head_outputs(checkpoint["state_dict"]) != len(names):
            raise UserError(f"CKPT={path}: its head predicts {head_outputs(checkpoint['state_dict'])} identities but its label map names {len(names)}")
        label_file = Path(label_map) if label_map else path.resolve().parent.parent / LABEL_MAP
        if label_map and not label_file.is_file():
            raise UserError(f"label_map={label_file}: file not found")
        if label_file.is_file():
            expected = json.loads(label_file.read_text())["class_names"]
            if expected != list(names):
                raise UserError(f"label map mismatch: {label_file} names {expected} but CKPT={path} was trained on {list(names)} — "
                                "use the checkpoint and label_map.json of the same training run")
        model = load_module(FaceClassifier, path, key="CKPT", weights=None)  # the VGG16 weights are in the checkpoint
        model.eval()
        return cls(model, FaceCrop(data["image_size"], data["margin"], data.get("capture_size")), threshold)

    def recognize(self, rgb: np.ndarray, detections: list[Detection]) -> list[tuple[str, float]]:
        """(name or 'unknown', confidence) for each detection."""
        if not detections:
            return []
        faces = np.stack([self.crop(rgb, d) for d in detections])
        probs = self.model.predict_proba(torch.from_numpy(faces).permute(0, 3, 1, 2)).cpu()
        confidence, index = probs.max(dim=1)
        return [(self.class_names[i] if c >= self.threshold else UNKNOWN, float(c)) for c, i in zip(confidence.tolist(), index.tolist())]


def recognize_folder(recognizer: Recognizer, detector: FaceDetector, in_dir: str | Path, out_dir: str | Path,
                     progress: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Every face in every image under `in_dir` (recursively): `out_dir/recognitions.csv` (CSV_COLUMNS,
    `image` relative to `in_dir`, `annotated` relative to `out_dir`) and an annotated JPEG of each image at its
    relative path named by `datamodules.outputs.output_name` (`sub/a.png` → `sub/a_png.jpg`: never shared by two
    inputs). Returns the table and the files skipped as unreadable."""
    from tqdm.auto import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    check_folders(in_dir, out_dir)
    rows, skipped = [], []
    for file in tqdm(find_images(in_dir), desc=f"recognising ({detector.name})", unit="img", disable=not progress):
        relative = file.relative_to(in_dir)
        try:
            rgb = read_rgb(file)
        except UnreadableImage as exc:
            log.warning("skipped unreadable image %s", exc)
            skipped.append(relative.as_posix())
            continue
        detections = detector.detect(rgb)
        labels = recognizer.recognize(rgb, detections)
        annotated = output_name(relative, ".jpg")
        for k, (d, (name, confidence)) in enumerate(zip(detections, labels), start=1):
            rows.append({"image": relative.as_posix(), "face": k, "name": name, "confidence": round(confidence, 4),
                         "left": d.left, "top": d.top, "right": d.right, "bottom": d.bottom, "annotated": annotated.as_posix()})
        target = out_dir / annotated
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), np.ascontiguousarray(annotate_names(rgb, detections, labels)[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise UserError(f"cannot write {target} — check that OUT is writable")
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "recognitions.csv", index=False)
    return table, skipped


def annotate_names(rgb: np.ndarray, detections: list[Detection], labels: list[tuple[str, float]]) -> np.ndarray:
    """A copy with each face boxed and labelled 'name 0.97': green for a known person, red for unknown."""
    image = rgb.copy()
    thickness = max(1, round(max(rgb.shape[:2]) / 400))
    scale = 0.45 * thickness
    for d, (name, confidence) in zip(detections, labels):
        colour = (220, 40, 40) if name == UNKNOWN else (40, 200, 60)
        cv2.rectangle(image, (d.left, d.top), (d.right - 1, d.bottom - 1), colour, thickness)
        text = f"{name} {confidence:.2f}"
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, d.top - h - base - 2)
        cv2.rectangle(image, (d.left, top), (d.left + w + 2, top + h + base + 2), colour, -1)
        cv2.putText(image, text, (d.left + 1, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image
