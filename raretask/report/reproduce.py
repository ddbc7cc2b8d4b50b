"""The report of a `raretask reproduce` directory: every finished run inside it, in the order the scale lists them,
after a table of what ran (status, wall time, the error line of what failed)."""

from __future__ import annotations

import json
from pathlib import Path

from raretask.report import pages
from raretask.report.html import Section, finished


def runs_inside(root: Path) -> list[Path]:
    """The finished run directories under `root`, in the order its meta.json lists the experiments."""
    meta = json.loads(finished(root, "meta.json").read_text())
    names = meta.get("experiments") or []
    dirs = [Path(root) / n for n in names]
    return [d for d in dirs if (d / "meta.json").is_file()
            and json.loads((d / "meta.json").read_text()).get("status") == "finished"]


def figures(root: Path) -> list[Path]:
    return [p for d in runs_inside(root) for p in pages.draw(d)]


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
    return [head] + [s for d in runs_inside(root) for s in pages.sections(d)]
