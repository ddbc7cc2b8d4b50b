"""One self-contained HTML page per run directory: sections of text, tables and the PNG figures beside it."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from raretask import runs
from raretask.config import ConfigError


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    table: list[list[str]] | None = None  # first row is the header


def finished(run_dir: Path, name: str) -> Path:
    """run_dir/name, or a one-line error when a run has not written it (yet)."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {name} (is the run finished?)")
    return path


def write_report(out: Path, title: str, sections: list[Section]) -> Path:
    """Write out/report.html; figure paths are made relative to `out` so the folder can be moved."""
    out = Path(out)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "img{max-width:100%;margin:.5em 0;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}"
             "pre{background:#f7f7f7;padding:.5em}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        if s.table:
            head, *body = s.table
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
            for row in body:
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        for fig in s.figures:
            rel = Path(fig).resolve().relative_to(out.resolve()) if Path(fig).resolve().is_relative_to(
                out.resolve()) else Path(fig)
            parts.append(f"<div><img src='{html.escape(str(rel))}' alt='{html.escape(Path(fig).stem)}'></div>")
    parts.append("</body></html>")
    path = out / "report.html"
    runs.write_text(path, "\n".join(parts))
    return path
