import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from raretask.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli():
    """Run the raretask CLI in-process; returns click's Result (exit_code, stdout, stderr)."""

    def invoke(*args: str):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def run_module(*args: str, **kw) -> subprocess.CompletedProcess:
    """The real entry point, in a child process (`python -m raretask`)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "raretask", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, **kw)


def summary(result) -> dict:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)
