"""The report of a `synth toys` run (figures are drawn by the run itself until they move here)."""

from __future__ import annotations

from pathlib import Path

from raretask.synthetic.toys import toy_sections


def figures(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob("*.png"))


def sections(run_dir: Path) -> list:
    return toy_sections(run_dir)
