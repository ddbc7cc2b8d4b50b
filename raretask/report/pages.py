"""Which report a run directory gets: its meta.json `kind` names the module that draws its figures and sections.

    draw(run_dir)           every figure of the run, redrawn from its config.toml and tables alone
    sections(run_dir)       the report sections (text, tables, figure paths)
    write(run_dir)          both, then run_dir/report.html

Each module named in KINDS has `figures(run_dir) -> list[Path]` and `sections(run_dir) -> list[Section]`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

from raretask.config import ConfigError
from raretask.report.html import Section, write_report

KINDS = {
    "synthetic": "raretask.report.synthetic",
    "synth.residual": "raretask.report.residual",
    "synth.retention": "raretask.report.retention",
    "synth.toy": "raretask.report.toys",
    "synth.interference": "raretask.report.interference",
    "synth.neurons": "raretask.report.neurons",
    "lm.sweep": "raretask.report.lm",
    "lm.train": "raretask.report.lm",
    "lm.corpus": "raretask.report.lm",
    "reproduce": "raretask.report.reproduce",
}


def run_kind(run_dir: Path) -> str:
    """The kind in run_dir/meta.json; one-line errors for a folder that is no run of a known kind."""
    meta_path = Path(run_dir) / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(f"{run_dir}: no meta.json (not a raretask run directory)")
    kind = json.loads(meta_path.read_text()).get("kind", "synthetic")
    if kind not in KINDS:
        raise ConfigError(f"{run_dir}: unknown run kind {kind!r}")
    return kind


def _module(run_dir: Path) -> ModuleType:
    return importlib.import_module(KINDS[run_kind(run_dir)])


def draw(run_dir: Path) -> list[Path]:
    """Every figure of a finished run, drawn into run_dir from its saved config and tables."""
    return _module(run_dir).figures(Path(run_dir))


def sections(run_dir: Path) -> list[Section]:
    return _module(run_dir).sections(Path(run_dir))


def write(run_dir: Path, title: str | None = None) -> Path:
    """Redraw the figures, then write run_dir/report.html."""
    run_dir = Path(run_dir)
    draw(run_dir)
    return write_report(run_dir, title or f"raretask report: {run_dir.name}", sections(run_dir))
