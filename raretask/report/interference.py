"""The report of a `synth interference` run (figures are drawn by the run itself until they move here)."""

from __future__ import annotations

from pathlib import Path

from raretask.synthetic.interference import interference_sections


def figures(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob("*.png"))


def sections(run_dir: Path) -> list:
    return interference_sections(run_dir)
