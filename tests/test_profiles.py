"""Experiment × trainer profile: the experiment states what it asks, the profile caps it (never raises it).

Every experiment in conf/experiment is composed with every profile in conf/trainer (a new file in either folder
is covered without editing this file). The expected values come from the raw YAML files, not from the composed
config: asked values from the experiment file (or conf/train.yaml's default), caps from the profile file (with
its own defaults list, e.g. ddp → gpu). Composition only, no training.
"""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from core.config import CAPS, cap, caps_that_bite, cpu_mixed_precision, describe_bites
from tests.conftest import REPO, compose

CONF = REPO / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PROFILES = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))
TRAIN = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml"), resolve=False)


def _raw(path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _profile_file(name: str) -> dict:
    """conf/trainer/<name>.yaml merged over the profiles in its defaults list (raw values)."""
    own = _raw(CONF / "trainer" / f"{name}.yaml")
    merged = OmegaConf.create()
    for entry in own.pop("defaults", []):
        if entry != "_self_":
            merged = OmegaConf.merge(merged, _profile_file(entry))
    return OmegaConf.to_container(OmegaConf.merge(merged, own), resolve=False)


def _recipe_file(experiment: str, profile: str) -> dict:
    """conf/recipe/<experiment>/<profile>.yaml (what conf/train.yaml's `optional recipe: ${experiment}/${trainer}`
    selects) merged over the recipes in its defaults list (raw values); {} when the pair has none."""

    def read(path) -> OmegaConf:
        own = _raw(path)
        merged = OmegaConf.create()
        for entry in own.pop("defaults", []):
            if entry != "_self_":
                merged = OmegaConf.merge(merged, read(CONF / f"{entry.lstrip('/')}.yaml"))
        return OmegaConf.merge(merged, own)

    path = CONF / "recipe" / experiment / f"{profile}.yaml"
    return OmegaConf.to_container(read(path), resolve=False) if path.is_file() else {}


def _settings_file(experiment: str, profile: str) -> dict:
    """The profile file with the experiment's recipe for it merged over (raw values): what the run's settings are."""
    return OmegaConf.to_container(
        OmegaConf.merge(_profile_file(profile), _recipe_file(experiment, profile)), resolve=False
    )


def _leaves(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _recipe_or(value, prof_file: dict):
    """`value`, or for "${oc.select:recipe.<dotted key>,<default>}" (or `profile.`) the settings file's <dotted key>
    when it has one, else <default> parsed as YAML (written out here, independently of OmegaConf's resolver)."""
    if not (isinstance(value, str) and value.startswith(("${oc.select:recipe.", "${oc.select:profile."))):
        return value
    section, rest = value[len("${oc.select:") :].split(".", 1)
    key, default = rest[:-1].split(",", 1)
    node = prof_file.get(section, {})
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return yaml.safe_load(default)
        node = node[part]
    return node


def _task_setting(value, prof_file: dict, task: str):
    """`value`, or for "${oc.select:profile.task_<x>.${task_name},<default>}" the profile file's entry for `task`,
    else <default>; a `${cpu_mixed_precision:}` there is what core.config.cpu_mixed_precision says of this CPU."""
    if isinstance(value, str) and "${task_name}" in value:
        value = _recipe_or(value.replace("${task_name}", task), prof_file)
    return cpu_mixed_precision() if value == "${cpu_mixed_precision:}" else value


def _min(asked, limit):
    """The expected final value, written out independently of core.config.cap (None: no limit)."""
    if limit is None:
        return asked
    if asked is None:
        return limit
    return min(asked, limit)


def _at_most(value, asked) -> bool:
    return asked is None or (value is not None and value <= asked)


ASKS = {c.ask for c in CAPS}
TARGETS = {c.name: c.targets for c in CAPS}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:  # one folder for the whole module: composition writes no files worth keeping
    tmp = tmp_path_factory.mktemp("profiles")
    return {
        "paths.log_dir": str(tmp / "logs"),
        "paths.mlflow_dir": str(tmp),
        "paths.data_dir": str(tmp / "data"),
        "paths.cache_dir": str(tmp / "cache"),
    }


def test_every_experiment_and_profile_is_listed():
    assert EXPERIMENTS == [
        "exp1_dcgan_fruits",
        "exp2_dcgan_hardhat",
        "exp3_dcgan_hardhat_tricks",
        "vgg16_faces",
        "vgg16_faces_paper",
        "yolo_facemask",
    ]
    assert PROFILES == ["cpu_real", "cpu_small", "ddp", "gpu"]


def test_no_experiment_or_profile_sets_the_final_epochs_directly():
    """The experiment asks with `epochs`, the profile caps with `profile.max_epochs`; neither writes
    trainer.max_epochs (which would silently win over the other, depending on the defaults order)."""
    for name in EXPERIMENTS:
        assert "max_epochs" not in _raw(CONF / "experiment" / f"{name}.yaml").get("trainer", {}), name
        assert "epochs" in _raw(CONF / "experiment" / f"{name}.yaml"), name
    for name in PROFILES:
        assert "max_epochs" not in _profile_file(name).get("trainer", {}), name
        assert set(_profile_file(name)["profile"]) >= {c.name for c in CAPS} | {"name"}, name


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_profile_caps_what_the_experiment_asks(experiment, profile, store):
    cfg = compose("train", {"experiment": experiment, "trainer": profile, **store})
    exp_file = _raw(CONF / "experiment" / f"{experiment}.yaml")
    exp_file.pop("defaults", None)
    prof_file = _settings_file(experiment, profile)
    # the cap as the composed run resolves it (cpu_small's epochs cap depends on the task: test_known_pairs)
    caps = {c.name: cfg.profile[c.name] for c in CAPS}
    asked = {c.name: _recipe_or(exp_file.get(c.ask, TRAIN[c.ask]), prof_file) for c in CAPS}

    assert cfg.profile.name == f"trainer={profile}"
    # the asks stay as the experiment states them; the values the task reads are min(asked, cap)
    for c in CAPS:
        assert cfg[c.ask] == asked[c.name], c.ask
    assert cfg.trainer.max_epochs == _min(asked["max_epochs"], caps["max_epochs"])
    assert cfg.data.max_images == _min(asked["max_images"], caps["max_images"])
    read = {"max_epochs": cfg.trainer.max_epochs, "max_images": cfg.data.max_images}
    if "generator" in cfg.model:  # DCGAN
        want = _min(asked["width_multiplier"], caps["width_multiplier"])
        # a profile's DCGAN recipe may give D its own width (cpu_small: ¼, so that D can tell the modes apart)
        d_cap = (prof_file.get("recipe", {}).get("dcgan") or {}).get("d_width_multiplier", caps["width_multiplier"])
        d_want = _min(asked["width_multiplier"], d_cap)
        assert (cfg.model.generator.width_multiplier, cfg.model.discriminator.width_multiplier) == (want, d_want)
        read["width_multiplier"] = want
    if "imgsz" in cfg.model:  # YOLO
        assert cfg.model.imgsz == cfg.data.imgsz == _min(asked["detector_imgsz"], caps["detector_imgsz"])
        read["detector_imgsz"] = cfg.model.imgsz
    # caps only ever lower
    for name, value in read.items():
        assert _at_most(value, asked[name]), name
    # the caps that bite are exactly those reported (log line and MLflow tag)
    biting = [name for name, value in read.items() if value != asked[name]]
    assert [b.name for b in caps_that_bite(cfg)] == [c.name for c in CAPS if c.name in biting]
    # every other setting of the experiment is what the experiment states, whatever the profile; a setting the
    # experiment leaves to its recipe for the profile (`${oc.select:recipe.<key>,<paper value>}`) is the recipe's value
    # when it gives one, else the paper value
    for key, value in _leaves({k: v for k, v in exp_file.items() if k not in ASKS}).items():
        assert OmegaConf.select(cfg, key) == _recipe_or(value, prof_file), key
    # the profile's settings (accelerator, precision, max_time …) are settings: taken as the profile states them
    for key, value in _leaves(prof_file.get("trainer", {}), "trainer.").items():
        assert OmegaConf.select(cfg, key) == _task_setting(value, prof_file, cfg.task_name), key


@pytest.mark.parametrize(
    ("experiment", "profile", "epochs", "caps"),
    [
        (
            "exp1_dcgan_fruits",
            "cpu_small",
            30,
            "trainer=cpu_small caps max_epochs 1000 → 30, width_multiplier 1.0 → 0.125, max_images all → 512",
        ),
        ("exp1_dcgan_fruits", "cpu_real", 1000, "trainer=cpu_real caps width_multiplier 1.0 → 0.25"),
        ("exp1_dcgan_fruits", "gpu", 1000, None),
        ("exp3_dcgan_hardhat_tricks", "ddp", 200, None),
        ("vgg16_faces_paper", "cpu_small", 3, "trainer=cpu_small caps max_images all → 512"),  # the paper's 3, not 5
        ("vgg16_faces_paper", "cpu_real", 3, None),
        ("vgg16_faces", "cpu_small", 20, "trainer=cpu_small caps max_images all → 512"),
        (
            "exp2_dcgan_hardhat",
            "cpu_small",
            10,
            "trainer=cpu_small caps max_epochs 800 → 10, width_multiplier 1.0 → 0.125, max_images all → 512",
        ),
        (
            "exp3_dcgan_hardhat_tricks",
            "cpu_small",
            10,
            "trainer=cpu_small caps max_epochs 200 → 10, width_multiplier 1.0 → 0.125, max_images all → 512",
        ),
        (
            "yolo_facemask",
            "cpu_small",
            16,
            "trainer=cpu_small caps max_epochs 30 → 16, max_images all → 512, detector_imgsz 640 → 320",
        ),
        ("yolo_facemask", "cpu_real", 55, "trainer=cpu_real caps detector_imgsz 640 → 416"),
        ("yolo_facemask", "gpu", 30, None),
    ],
)
def test_known_pairs(experiment, profile, epochs, caps, store):
    cfg = compose("train", {"experiment": experiment, "trainer": profile, **store})
    assert cfg.trainer.max_epochs == epochs
    assert describe_bites(cfg) == caps


def test_the_cpu_real_profile_keeps_its_wall_clock_budget_and_sizes(store):
    cfg = compose("train", {"experiment": "yolo_facemask", "trainer": "cpu_real", **store})
    assert (cfg.trainer.max_time, cfg.trainer.accelerator, cfg.model.imgsz, cfg.data.max_images) == (
        "00:00:12:00",
        "cpu",
        416,
        None,
    )
    cfg = compose("train", {"experiment": "exp2_dcgan_hardhat", "trainer": "ddp", **store})
    assert (
        cfg.trainer.devices,
        cfg.trainer.precision,
        cfg.trainer.max_epochs,
        cfg.model.generator.width_multiplier,
    ) == (-1, "bf16-mixed", 800, 1.0)


def test_cpu_real_trains_the_detector_in_bf16_on_a_cpu_with_amx_only(store, monkeypatch):
    """cpu_real's detector: bf16 autocast where the CPU has AMX tiles, fp32 elsewhere and for every other task;
    channels_last for the detector in every profile; a command-line precision is taken as given."""
    import torch

    def precision(experiment: str, profile: str = "cpu_real", **more) -> str:
        return compose("train", {"experiment": experiment, "trainer": profile, **more, **store}).trainer.precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_init_amx", lambda: True)  # the kernel grants the tiles
    assert precision("yolo_facemask") == "bf16-mixed"
    assert precision("yolo_facemask", **{"trainer.precision": "32-true"}) == "32-true"
    assert [precision(e) for e in EXPERIMENTS if e != "yolo_facemask"] == ["32-true"] * (len(EXPERIMENTS) - 1)
    assert (precision("yolo_facemask", "cpu_small"), precision("yolo_facemask", "gpu")) == ("32-true", "bf16-mixed")
    monkeypatch.setattr(torch.cpu, "_init_amx", lambda: False)  # tiles present, use not granted: emulated bf16
    assert precision("yolo_facemask") == "32-true"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_init_amx", lambda: True)
    assert precision("yolo_facemask") == "32-true"
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the query
    assert precision("yolo_facemask") == "32-true"
    assert all(compose("train", {"experiment": "yolo_facemask", "trainer": p, **store}).channels_last for p in PROFILES)


def test_a_command_line_ask_is_capped_and_a_command_line_setting_is_not(store):
    base = {"experiment": "yolo_facemask", **store}
    assert compose("train", {**base, "epochs": 50}).trainer.max_epochs == 16  # cpu_small caps the ask
    assert compose("train", {**base, "epochs": 2}).trainer.max_epochs == 2  # under the cap: as asked
    # an experiment without a recipe for cpu_small (conf/recipe/<experiment>/cpu_small.yaml) is capped at 5 epochs
    assert compose("train", {**store, "experiment": "vgg16_faces_paper", "epochs": 50}).trainer.max_epochs == 5
    assert (
        compose("train", {**base, "detector_imgsz": 200, "trainer": "cpu_real"}).model.imgsz == 200
    )  # never raised to 416
    forced = compose("train", {**base, "trainer.max_epochs": 7})  # the final value, taken as given
    assert forced.trainer.max_epochs == 7 and "max_epochs" not in [b.name for b in caps_that_bite(forced)]
    assert compose("train", {**base, "profile.detector_imgsz": 160}).model.imgsz == 160  # a tighter cap (tests use it)


@pytest.mark.parametrize(
    ("profile", "batch", "nbs"), [("cpu_small", 8, 8), ("cpu_real", 8, 8), ("gpu", 16, 64), ("ddp", 16, 64)]
)
def test_a_profile_may_set_the_detectors_batch_and_nominal_batch(profile, batch, nbs, store):
    """cpu_* profiles step the optimizer every batch on their few images; the others keep ultralytics' nominal 64;
    a command-line value is taken as given."""
    cfg = compose("train", {"experiment": "yolo_facemask", "trainer": profile, **store})
    assert (cfg.data.batch_size, cfg.model.nbs) == (batch, nbs)
    cfg = compose(
        "train", {"experiment": "yolo_facemask", "trainer": profile, "data.batch_size": 4, "model.nbs": 32, **store}
    )
    assert (cfg.data.batch_size, cfg.model.nbs) == (4, 32)


@pytest.mark.parametrize("profile", PROFILES)
def test_debug_fast_forces_one_epoch_and_tightens_every_cap(profile, store):
    cfg = compose("train", {"experiment": "exp1_dcgan_fruits", "trainer": profile, "debug": "fast", **store})
    assert (cfg.trainer.max_epochs, cfg.trainer.limit_train_batches) == (1, 2)
    assert (cfg.model.generator.width_multiplier, cfg.data.max_images, cfg.profile.name) == (0.0625, 128, "debug=fast")
    debug = _raw(CONF / "debug" / "fast.yaml")["profile"]
    for name in ("width_multiplier", "max_images"):
        assert _at_most(debug[name], _profile_file(profile)["profile"][name]), name


def test_the_cap_resolver():
    assert (cap(1000, 5), cap(3, 5), cap(5, 5), cap(None, 512), cap(640, None), cap(None, None)) == (
        5,
        3,
        5,
        512,
        640,
        None,
    )
    assert (cap(-1, 5), cap(1.0, 0.125), cap(0.5, 1.0)) == (5, 0.125, 0.5)


@pytest.mark.parametrize(
    ("experiment", "profile", "want"),
    [
        # cpu_small: DCGAN's own recipe (Radford et al. 2016) for the demo; exp3 keeps its own batch and lr
        ("exp1_dcgan_fruits", "cpu_small", (16, 2e-4, [0.5, 0.999], 0.5, False)),
        ("exp2_dcgan_hardhat", "cpu_small", (16, 2e-4, [0.5, 0.999], 0.5, False)),
        ("exp3_dcgan_hardhat_tricks", "cpu_small", (8, 2e-4, [0.5, 0.999], 0.5, False)),
        # every other profile: the paper code's (batch 64 / 8, lr 1e-4 / 2e-4, Adam's default betas, D with BN on
        # its input layer); D's dropout is the paper code's 0.5 in all
        ("exp1_dcgan_fruits", "cpu_real", (64, 1e-4, [0.9, 0.999], 0.5, True)),
        ("exp2_dcgan_hardhat", "gpu", (64, 1e-4, [0.9, 0.999], 0.5, True)),
        ("exp3_dcgan_hardhat_tricks", "ddp", (8, 2e-4, [0.9, 0.999], 0.5, True)),
    ],
)
def test_the_demo_profile_trains_the_dcgans_with_dcgans_own_recipe(experiment, profile, want, store):
    cfg = compose("train", {"experiment": experiment, "trainer": profile, **store})
    assert cfg.model.weight_init == ("normal_0.02" if profile == "cpu_small" or "exp3" in experiment else "default")
    got = (
        cfg.data.batch_size,
        cfg.model.lr,
        list(cfg.model.betas),
        cfg.model.discriminator.dropout,
        cfg.model.discriminator.batchnorm_first,
    )
    assert got == want
    # a command-line value is taken as given
    cfg = compose("train", {"experiment": experiment, "trainer": profile, "model.lr": 3e-4, **store})
    assert cfg.model.lr == 3e-4
