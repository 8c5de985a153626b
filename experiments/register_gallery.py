"""Package a gallery of known people as an MLflow model and register it: `python -m experiments.register_gallery
[gallery=<folder>]` (`make register-gallery [GALLERY=<folder>]`, conf/register_gallery.yaml).

The gallery is built as `make recognize` builds it (`faces.gallery.build_gallery` with the configured detector and
its second look, dlib's descriptor with conf/describer/dlib.yaml's options) and decided at the same threshold
(`faces.openset.decision_threshold`: the gallery's own for `target_far`, or `tolerance`). The folder: `gallery`,
else `default_gallery` (make capture-faces' captures) when it holds photos, else the built-in synthetic people. One
MLflow run of the experiment `faces_gallery` holds the model (`faces.serving`: the gallery as an .npz, the
detector's and describer's settings) and its params; it is registered as a new version of `name`, which
`make serve TASK=faces_gallery` serves. Prints the threshold and, as its last line, `registered … models:/<name>/<n>`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from core.errors import UserError
from core.mlflow_store import log_tool_run
from core.registry import log_pyfunc_model, register_run_model
from experiments import log, user_errors
from faces.descriptors import FaceDescriber
from faces.detectors import SecondLook
from faces.gallery import build_gallery, gallery_photos
from faces.openset import decision_threshold


def gallery_folder(cfg: DictConfig) -> Path:
    """`gallery`, else `default_gallery` when it holds a person's photo, else the built-in synthetic people
    (generated on first use)."""
    if cfg.gallery:
        return Path(cfg.gallery)
    if cfg.default_gallery and Path(cfg.default_gallery).is_dir():
        try:
            gallery_photos(cfg.default_gallery)
            return Path(cfg.default_gallery)
        except UserError:  # an empty capture folder: the built-in people
            pass
    return Path(instantiate(cfg.builtin))


def register_gallery(cfg: DictConfig) -> dict:
    """Build, log and (with `register`) register the gallery model; returns {"run_id", "model_uri", "version",
    "threshold", "people", "photos"} (version None without `register`). UserError for a gallery folder that is
    missing or gives no descriptor, and when the MLflow run could not be written."""
    from faces.serving import pyfunc_spec

    folder = gallery_folder(cfg)
    detector = instantiate(cfg.detector)
    second = cfg.second_look.score_threshold
    looking_twice = (
        detector if second is None else SecondLook(detector, instantiate(cfg.detector, score_threshold=second))
    )
    describer_args = {"num_jitters": cfg.num_jitters, "flip": cfg.flip, "landmarks": cfg.landmarks}
    known = build_gallery(folder, looking_twice, FaceDescriber(**describer_args), cfg.gallery_cache, cfg.progress)
    threshold, rule, calibrated = decision_threshold(known, cfg.target_far, cfg.tolerance)
    print(f"threshold {threshold:.4f} ({rule})", flush=True)
    params = {
        "gallery": str(folder),
        "threshold": threshold,
        "threshold_rule": rule[:500],
        "target_far": calibrated.target_far,
        "tolerance": cfg.tolerance,
        "detector": repr(detector),
        **describer_args,
        "second_look": second,
    }
    metrics = {"people": len(known.people), "photos": len(known.files), "photos_skipped": len(known.skipped)}
    run_id = log_tool_run(cfg, f"{folder.name} ({len(known.people)} people)", params=params, metrics=metrics)
    if run_id is None:
        raise UserError(f"tracking_uri={cfg.tracking_uri}: the gallery's run could not be written (see the warning)")
    with tempfile.TemporaryDirectory() as tmp:
        spec = pyfunc_spec(
            known,
            threshold,
            rule,
            OmegaConf.to_container(cfg.detector, resolve=True),
            describer_args,
            second,
            Path(known.files[0]).read_bytes(),
            tmp,
        )
        uri = log_pyfunc_model(
            cfg.tracking_uri, run_id, spec, metadata={"task": cfg.task_name, "gallery": str(folder), "rule": rule}
        )
    version = register_run_model(cfg.tracking_uri, run_id, cfg.name) if cfg.register else None
    log.info("gallery %s (%d people, %d photos) → %s", folder, len(known.people), len(known.files), uri)
    if version is not None:
        print(
            f"registered run {run_id} as {version.name} version {version.version}: models:/{version.name}/{version.version}"
        )
    return {
        "run_id": run_id,
        "model_uri": uri,
        "version": None if version is None else int(version.version),
        "threshold": threshold,
        "people": len(known.people),
        "photos": len(known.files),
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="register_gallery")
def main(cfg: DictConfig) -> None:
    with user_errors():
        register_gallery(cfg)


if __name__ == "__main__":
    main()
