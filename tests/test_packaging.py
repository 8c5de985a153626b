"""The project is one installed package: a non-editable install (a wheel) runs the entries from any folder."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_a_wheel_install_trains_from_a_folder_outside_the_checkout(tmp_path):
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            *map(str, wheels.glob("*.whl")),
        ],
        check=True,
        capture_output=True,
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}  # no PROJECT_ROOT: found from cwd
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import experiments, core.offline as o; print(experiments.__file__); print(o.PROJECT_ROOT)",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where == [str(target / "experiments" / "__init__.py"), str(work)]  # the wheel's code, not the checkout's
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "experiment=exp1_dcgan_fruits",
            "debug=fast",
            "trainer.enable_progress_bar=false",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (work / "mlflow.db").is_file()
    assert len(list((work / "logs" / "exp1_dcgan_fruits").rglob("checkpoints/last.ckpt"))) == 1
