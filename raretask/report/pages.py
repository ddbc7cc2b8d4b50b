"""Which report a run directory gets: its meta.json `kind` names the module that draws its figures and sections.

    draw(run_dir)           every figure of the run, redrawn from its config.toml and tables alone
    sections(run_dir)       the report sections (text, tables, figure paths)
    write(run_dir)          both, then run_dir/report.html (the scorecard of the run's claims first)
    write_root(root, ...)   root/report.html from sections already gathered, the scorecard of every run under root
    write_tree(root)        every run under root (found by meta.json kind) drawn and reported on one page

Every page starts with the scorecard (raretask.report.scorecard): the paper's claims judged on the runs under the
page's folder, those no run can test marked "not run".

Each module named in KINDS has `figures(run_dir) -> list[Path]` and `sections(run_dir) -> list[Section]`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from types import ModuleType

from raretask.config import ConfigError
from raretask.report import scorecard
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
    "lm.features": "raretask.report.lm_features",
    "lm.interference": "raretask.report.lm_interference",
    "lm.retention": "raretask.report.lm_interference",
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
    return write_root(run_dir, title or f"raretask report: {run_dir.name}", sections(run_dir))


def write_root(root: Path, title: str, sections: list[Section]) -> Path:
    """root/report.html: the scorecard of every run under root, a table of contents, then `sections` (gathered by
    the caller, figures already drawn)."""
    root = Path(root)
    return write_report(root, title, sections, first=scorecard.section(root))


def runs_under(root: Path) -> list[Path]:
    """The run directories under root with a report (found by meta.json kind), synthetic sweeps first, LM last."""
    order = list(KINDS)
    found = [(k, d) for k, d in scorecard.find_runs(Path(root)) if k in KINDS]
    return [d for _, d in sorted(found, key=lambda kd: (order.index(kd[0]), kd[1]))]


def labelled_sections(root: Path) -> list[Section]:
    """The sections of every run under root, each title prefixed with the run's path below root (which run, where
    several share a page)."""
    root, gathered = Path(root), []
    for run_dir in runs_under(root):
        label = "" if run_dir == root else f"{run_dir.relative_to(root)}: "
        gathered += [dataclasses.replace(s, title=label + s.title) for s in sections(run_dir)]
    return gathered


def write_tree(root: Path, title: str | None = None) -> Path:
    """Every run under root (a run directory, or a folder of them such as a full reproduction's) drawn, then one
    page for all of them: root/report.html. Runs of kinds without a report are skipped."""
    root = Path(root)
    for run_dir in runs_under(root):
        draw(run_dir)
    return write_root(root, title or f"raretask report: {root.name}", labelled_sections(root))
