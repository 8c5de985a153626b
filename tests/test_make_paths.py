"""Every make variable that takes a path reaches its entry unchanged, whatever characters the name holds.

The targets run for real with a stand-in interpreter (`PY=`): it runs core/overrides.py as the Makefile asks and,
in place of an entry, parses the overrides it receives with Hydra's own parser and OmegaConf, and prints them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from core.overrides import override, quote
from tests.conftest import REPO

NAMES = ["epoch=0-step=1.ckpt", "a=b, (c) [d] é's", 'say "hi" {x}', "戴口罩 $HOME ${oc.env:HOME} \\", "plain"]

STUB = r"""
import json, runpy, sys
if sys.argv[1] == "core/overrides.py":
    sys.argv = sys.argv[1:]
    runpy.run_path("core/overrides.py", run_name="__main__")
else:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    assert sys.argv[1] == "-m", sys.argv  # entries run as modules of the installed project
    parsed = OverridesParser.create().parse_overrides(sys.argv[3:])
    values = OmegaConf.create({o.key_or_group: o.value() for o in parsed})
    print(json.dumps({"entry": sys.argv[2], **OmegaConf.to_container(values, resolve=True)}))
"""

# target: (make variables → the override key the entry must receive)
TARGETS = {
    "capture-faces": {"NAME": "name", "SRC": "source", "OUT": "out_dir"},
    "recognize": {"IMAGES": "images", "OUT": "out_dir", "CKPT": "ckpt", "GALLERY": "gallery"},
    "eval-lfw": {"PAIRS": "pairs", "OUT": "out_dir"},
    "eval-openset": {"GALLERY": "gallery", "PROBES": "probes", "OUT": "out_dir"},
    "register": {"TASK": "task"},
    "register-gallery": {"GALLERY": "gallery"},
    "serve": {"TASK": "task", "MODEL": "model_uri"},
    "detect-faces": {"IN": "in_dir", "OUT": "out_dir"},
    "compare-face-detectors": {"VOC": "voc", "LFW": "lfw", "OUT": "report_dir"},
    "convert-facemask": {"SRC": "src", "OUT": "out"},
    "predict-facemask": {"SRC": "source", "CKPT": "ckpt", "OUT": "out_dir"},
    "monitor-facemask": {"SRC": "source", "CKPT": "ckpt", "OUT": "out_dir"},
    "eval-monitor": {"SRC": "source", "GT": "gt", "CKPT": "ckpt", "OUT": "out_dir"},
    "eval-facemask": {"VOC": "voc", "CKPT": "ckpt"},
    "export-facemask": {"CKPT": "ckpt", "OUT": "out_dir", "IMAGES": "images"},
}


def test_quote_gives_back_exactly_the_value_through_hydra_and_omegaconf():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    for value in [*NAMES, "", "'", "\\", "a\\'b", "end\\\\", "null", "1.5", "[a,b]", "a\\${b}", "tab\there"]:
        parsed = parser.parse_override(override("k", value))
        assert OmegaConf.create({"k": parsed.value()}).k == value, value
    assert quote("epoch=0-step=1.ckpt") == "'epoch=0-step=1.ckpt'" and quote("it's") == "'it\\'s'"


@pytest.fixture(scope="module")
def stub_python(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stub")
    (folder / "stub.py").write_text(STUB)
    python = folder / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{folder / "stub.py"}" "$@"\n')
    python.chmod(0o755)
    return python


def _make(target: str, variables: dict[str, str], python=None, args: str = "") -> subprocess.CompletedProcess:
    command = [
        "make",
        "--no-print-directory",
        "-o",
        ".venv/.installed",
        target,
        *(f"{k}={v}" for k, v in variables.items()),
    ]
    if python is not None:
        command.append(f"PY={python}")
    if args:
        command.append(f"ARGS={args}")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"IN", "OUT", "SRC", "VOC", "IMAGES", "CKPT", "NAME", "GALLERY", "PAIRS", "TASK", "MODEL", "ARGS"}
    }
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", TARGETS)
def test_every_path_variable_reaches_the_entry_unchanged(target, stub_python, tmp_path):
    variables = {
        var: str(tmp_path / NAMES[i % len(NAMES)]) + ("" if i == 0 else f" {var}")
        for i, var in enumerate(TARGETS[target])
    }
    done = _make(target, variables, stub_python, args="extra=1")
    assert done.returncode == 0, done.stderr
    received = json.loads(done.stdout.strip().splitlines()[-1])
    assert {key: received[key] for key in TARGETS[target].values()} == {
        TARGETS[target][v]: p for v, p in variables.items()
    }
    assert received["extra"] == 1  # ARGS still pass as Hydra overrides


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_optional_path_variables_left_empty_pass_nothing(stub_python):
    received = json.loads(_make("predict-facemask", {}, stub_python).stdout.strip().splitlines()[-1])
    assert received == {"entry": "experiments.predict_facemask"}
    received = json.loads(_make("eval-lfw", {}, stub_python).stdout.strip().splitlines()[-1])
    assert received == {"entry": "experiments.eval_lfw"}  # PAIRS: the config's default, ../shared/data/lfw-pairs
