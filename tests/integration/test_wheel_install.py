"""A plain (non-editable) install works: the wheel carries the presets, and `raretask theory`, a synthetic sweep and
its report run on them from a fresh virtualenv, outside any clone. (The demo itself, every part, is
tests/integration/test_cli.py's; here a shortened packaged preset stands for it.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel of this tree installed (no editable hook). The dependencies are this
    environment's (a .pth line), so nothing is downloaded; the package itself comes only from the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("raretask-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return env_dir


def _raretask(env_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([env_dir / "bin" / "raretask", *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_the_wheel_runs_theory_a_sweep_and_its_report_on_packaged_presets(installed, tmp_path):
    where = _raretask(installed, tmp_path, "presets")
    assert where.returncode == 0, where.stderr
    assert "configs/synthetic/default.toml" in where.stdout.split()
    assert "configs/lm/demo.toml" in where.stdout.split()
    origin = subprocess.run([installed / "bin" / "python", "-c", "import raretask; print(raretask.__file__)"],
                            cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert str(installed) in origin and str(ROOT) not in origin  # the wheel's copy, not this clone

    theory = _raretask(installed, tmp_path, "theory", "configs/synthetic/default.toml", "--json")
    assert theory.returncode == 0, theory.stderr
    assert len(json.loads(theory.stdout)["tasks"]) == 6

    sweep = _raretask(installed, tmp_path, "synth", "run", "configs/synthetic/default.toml", "sweep.seeds=[0]",
                      "sweep.widths=[1,4,16]", "train.steps=300", "eval.every=100", "--out", "run", "--no-progress")
    assert sweep.returncode == 0, sweep.stderr
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["status"] == "finished"
    (tmp_path / "run" / "phase_diagram.png").unlink()
    report = _raretask(installed, tmp_path, "report", "run")  # redrawn by the wheel's report package alone
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "run" / "phase_diagram.png").stat().st_size > 5000
    assert "Scorecard" in (tmp_path / "run" / "report.html").read_text()

    missing = _raretask(installed, tmp_path, "theory", "configs/synthetic/nope.toml")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "raretask presets" in missing.stderr
