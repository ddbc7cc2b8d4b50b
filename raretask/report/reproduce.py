"""The report of a `raretask reproduce` directory: a table of what ran (status, wall time, the error line of what
failed), then every finished run inside it, each section titled with the run's path."""

from __future__ import annotations

import json
from pathlib import Path

from raretask.report import pages
from raretask.report.html import Section, finished


def figures(root: Path) -> list[Path]:
    return [p for run_dir in pages.runs_under(root) for p in pages.draw(run_dir)]


def sections(root: Path) -> list[Section]:
    meta = json.loads(finished(root, "meta.json").read_text())
    rows = [["experiment", "status", "wall time (s)", "error"]]
    experiments = meta.get("experiments")
    for name, e in experiments.items() if isinstance(experiments, dict) else ():  # a list while running
        rows.append([name, e.get("status", "-"), f"{e.get('wall_s') or 0:.0f}", e.get("error") or ""])
    head = Section(f"Reproduce, scale {meta.get('scale')}",
                   f"{meta.get('workers')} process(es) side by side with {meta.get('threads')} thread(s) each, "
                   f"{meta.get('free_cores')} core(s) idle at the start; status {meta.get('status')}.",
                   table=rows if len(rows) > 1 else None)
    return [head] + pages.labelled_sections(root)
