"""Experiment asks, trainer profile caps: the one place where the two meet.

An experiment states what it asks (conf/train.yaml's top-level `epochs`, `width_multiplier`, `max_images`,
`detector_imgsz`, which conf/experiment/*.yaml set); a trainer profile (conf/trainer/*.yaml) states caps under
`profile:` with the same meaning. The configs read the final value as `${cap:<asked>,<cap>}`: the smaller of the
two, so a profile only ever lowers what the experiment asks and never rewrites it. `None` means "no limit" on
either side (Lightning's `max_epochs: -1` too). A value set on the command line (`trainer.max_epochs=3`) or by a
debug overlay replaces the interpolation and is not capped.

The resolver is registered when `core` is imported, which every entry and tests/conftest.py do before composing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

RESOLVER = "cap"


def cap(asked: Any, limit: Any) -> Any:
    """min(asked, limit), where None (or a negative number: Lightning's "no limit") means unbounded."""
    if limit is None or (isinstance(limit, (int, float)) and limit < 0):
        return asked
    if asked is None or (isinstance(asked, (int, float)) and asked < 0):
        return limit
    return min(asked, limit)


OmegaConf.register_new_resolver(RESOLVER, cap, replace=True)

FACE_BACKBONE_RESOLVER = "face_backbone"


def face_backbone(weights: Any) -> str:
    """The face-recognition backbone when the config says `auto`: VGG16 (the paper's) when its ImageNet weights
    are given, else dlib's ResNet face descriptor, the one backbone with pretrained weights on every install
    (face-recognition-models): VGG16 with random weights learns nothing a person could use."""
    return "vgg16" if weights else "dlib_resnet"


OmegaConf.register_new_resolver(FACE_BACKBONE_RESOLVER, face_backbone, replace=True)

CPU_PRECISION_RESOLVER = "cpu_mixed_precision"


def cpu_mixed_precision() -> str:
    """Lightning's `precision` for a CPU run that may use bf16 autocast: "bf16-mixed" on a CPU with Intel AMX tiles
    (Sapphire Rapids and later), whose oneDNN convolutions multiply bf16 in hardware, else "32-true" (elsewhere bf16
    is converted in software and slower than fp32). Measured on this project's AMX machine, a YOLOv5u-n training
    step at 416 px, batch 8, channels_last: 0.45 s in bf16 against 0.81 s in fp32 (docs/development.md, benchmarks)."""
    import torch  # here, not at import: composing a config needs no torch

    # torch's own queries: the CPU reports AMX tiles (cpuinfo), and the kernel grants their use to this process
    # (without that, oneDNN falls back to emulated bf16, slower than fp32)
    supported, granted = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_init_amx"))
    return "bf16-mixed" if supported is not None and granted is not None and supported() and granted() else "32-true"


OmegaConf.register_new_resolver(CPU_PRECISION_RESOLVER, cpu_mixed_precision, replace=True)


@dataclass(frozen=True)
class Cap:
    name: str  # the key under `profile:`
    ask: str  # the top-level key the experiment sets
    targets: tuple  # the config paths that read `${cap:${<ask>},${profile.<name>}}`


CAPS = (
    Cap("max_epochs", "epochs", ("trainer.max_epochs",)),
    Cap(
        "width_multiplier",
        "width_multiplier",
        ("model.generator.width_multiplier", "model.discriminator.width_multiplier"),
    ),
    Cap("max_images", "max_images", ("data.max_images",)),
    Cap("detector_imgsz", "detector_imgsz", ("model.imgsz",)),
)


@dataclass(frozen=True)
class Bite:
    name: str
    asked: Any
    capped: Any

    def __str__(self) -> str:
        return f"{self.name} {'all' if self.asked is None else self.asked} → {self.capped}"


def _reads_cap(cfg: DictConfig, path: str) -> bool:
    """Whether the config value at `path` exists and is still the `${cap:...}` interpolation (not replaced
    by a command-line value or a debug overlay)."""
    parent_path, _, key = path.rpartition(".")
    parent = OmegaConf.select(cfg, parent_path) if parent_path else cfg
    if not isinstance(parent, DictConfig) or key not in parent or not OmegaConf.is_interpolation(parent, key):
        return False
    return f"${{{RESOLVER}:" in str(parent._get_node(key)._value())


def caps_that_bite(cfg: DictConfig) -> list[Bite]:
    """The caps of the composed run that lower what its experiment asks, for the values this task reads."""
    bites = []
    for c in CAPS:
        if not any(_reads_cap(cfg, t) for t in c.targets):
            continue
        asked, limit = OmegaConf.select(cfg, c.ask), OmegaConf.select(cfg, f"profile.{c.name}")
        capped = cap(asked, limit)
        if capped != asked:
            bites.append(Bite(c.name, asked, capped))
    return bites


def describe_bites(cfg: DictConfig) -> str | None:
    """ "trainer=cpu_small caps max_epochs 1000 → 5, max_images all → 512", or None when no cap bites."""
    bites = caps_that_bite(cfg)
    if not bites:
        return None
    return f"{OmegaConf.select(cfg, 'profile.name')} caps " + ", ".join(map(str, bites))
