"""One self-contained HTML page per run directory (or directory of runs): an optional first section (the scorecard),
a table of contents, then the sections. Every figure is embedded as a base64 PNG, so the page can be mailed or moved
alone; the PNG files stay beside it, and each figure's caption names (and links) its file. No JavaScript."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from raretask import runs
from raretask.config import ConfigError


@dataclass(frozen=True)
class Cell:
    """A table cell with a link (href) and/or a CSS class; plain strings are cells too."""

    text: str
    href: str | None = None
    cls: str | None = None


TableCell = Union[str, Cell, list[Cell]]


@dataclass
class Section:
    title: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    table: list[list[TableCell]] | None = None  # first row is the header
    captions: dict[str, str] = field(default_factory=dict)  # figure file name -> one sentence read from the data
    items: list[str] = field(default_factory=list)  # a bulleted list after the text


def finished(run_dir: Path, name: str) -> Path:
    """run_dir/name, or a one-line error when a run has not written it (yet)."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {name} (is the run finished?)")
    return path


def figure_anchor(rel: str) -> str:
    """The page id of the figure whose file is `rel` (relative to the page's folder), for links to it."""
    return "fig-" + re.sub(r"[^A-Za-z0-9]+", "-", str(rel)).strip("-")


def _section_anchor(index: int, title: str) -> str:
    return f"s{index}-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         "img{max-width:100%;margin:.5em 0;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;vertical-align:top}th{background:#f3f3f3}"
         "table.wide td,table.wide th{text-align:left}figure{margin:1em 0}figcaption{font-size:14px;color:#333}"
         "td.ok{background:#d8f0d8;font-weight:bold}td.fail{background:#f6d2d2;font-weight:bold}"
         "td.none{background:#eee;color:#666}nav li{margin:.1em 0}li{font-size:14px}"
         "pre{background:#f7f7f7;padding:.5em}")


def _cell(c: TableCell, tag: str) -> str:
    if isinstance(c, list):
        inner = ", ".join(_link(x) for x in c)
        return f"<{tag}>{inner}</{tag}>"
    if isinstance(c, Cell):
        cls = f" class='{html.escape(c.cls)}'" if c.cls else ""
        return f"<{tag}{cls}>{_link(c)}</{tag}>"
    return f"<{tag}>{html.escape(c)}</{tag}>"


def _link(c: Cell) -> str:
    return f"<a href='{html.escape(c.href)}'>{html.escape(c.text)}</a>" if c.href else html.escape(c.text)


def _figure(fig: Path, out: Path, caption: str) -> str:
    """The figure embedded as a data URI, with its sentence and its file (relative to the page) below it."""
    fig = Path(fig)
    rel = fig.resolve().relative_to(out.resolve()) if fig.resolve().is_relative_to(out.resolve()) else fig
    if not fig.is_file():
        return f"<p><em>figure not drawn: {html.escape(str(rel))}</em></p>"
    data = base64.b64encode(fig.read_bytes()).decode("ascii")
    name = html.escape(str(rel))
    text = f"{html.escape(caption)} " if caption else ""
    return (f"<figure id='{figure_anchor(str(rel))}'><img src='data:image/png;base64,{data}' alt='{name}'>"
            f"<figcaption>{text}(<a href='{name}'>{name}</a>)</figcaption></figure>")


def _section(s: Section, anchor: str, out: Path) -> list[str]:
    parts = [f"<h2 id='{anchor}'>{html.escape(s.title)}</h2>"]
    if s.text:
        parts.append(f"<p>{html.escape(s.text)}</p>")
    if s.table:
        head, *body = s.table
        wide = any(isinstance(c, str) and len(c) > 60 for row in body for c in row)
        cls = " class='wide'" if wide else ""
        parts.append(f"<table{cls}><tr>" + "".join(_cell(h, "th") for h in head) + "</tr>")
        parts += ["<tr>" + "".join(_cell(c, "td") for c in row) + "</tr>" for row in body]
        parts.append("</table>")
    if s.items:
        parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in s.items) + "</ul>")
    parts += [_figure(f, out, s.captions.get(Path(f).name, "")) for f in s.figures]
    return parts


def write_report(out: Path, title: str, sections: list[Section], *, first: Section | None = None) -> Path:
    """Write out/report.html: `first` (the scorecard) if given, a table of contents, then the sections; figures
    embedded, their files named relative to `out`."""
    out = Path(out)
    anchored = ([("scorecard", first)] if first is not None else []) + \
        [(_section_anchor(i, s.title), s) for i, s in enumerate(sections, start=1)]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    if first is not None:
        parts += _section(first, "scorecard", out)
    parts.append("<nav><h2>Contents</h2><ol>" + "".join(f"<li><a href='#{a}'>{html.escape(s.title)}</a></li>"
                                                         for a, s in anchored) + "</ol></nav>")
    for anchor, s in anchored[1 if first is not None else 0:]:
        parts += _section(s, anchor, out)
    parts.append("</body></html>")
    path = out / "report.html"
    runs.write_text(path, "\n".join(parts))
    return path
