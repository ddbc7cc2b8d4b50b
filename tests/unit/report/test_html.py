"""The page: the first section (the scorecard), then a table of contents linking every section, then the sections;
figures embedded as data URIs, so the page alone shows them."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

from raretask.report.html import Cell, Section, figure_anchor, write_report


def png(path, colour=(200, 30, 30)):
    Image.new("RGB", (8, 6), colour).save(path, format="PNG")
    return path


def test_page_order_anchors_and_embedded_figures(tmp_path):
    (tmp_path / "run").mkdir()
    fig = png(tmp_path / "run" / "fig.png")
    first = Section("Scorecard", "claims", table=[["claim", "figure"],
                                                  ["S1", [Cell("run/fig.png", href="#" + figure_anchor("run/fig.png"))]]])
    sections = [Section("Alpha & co", "a < b", figures=[fig], captions={"fig.png": "It rises from 1 to 2."}),
                Section("Beta", items=["one", "two"], figures=[tmp_path / "run" / "missing.png"])]
    page = write_report(tmp_path, "t", sections, first=first).read_text()

    ids = re.findall(r" id='([^']+)'", page)
    toc = re.findall(r"<li><a href='#([^']+)'>", page)
    assert toc == ["scorecard", "s1-alpha-co", "s2-beta"] and set(toc) <= set(ids)
    assert page.index("id='scorecard'") < page.index("<nav>") < page.index("id='s1-alpha-co'")
    assert "a &lt; b" in page and "<script" not in page

    (uri,) = re.findall(r"<img src='data:image/png;base64,([^']+)'", page)
    assert base64.b64decode(uri) == fig.read_bytes()
    assert Image.open(io.BytesIO(base64.b64decode(uri))).size == (8, 6)
    assert "id='fig-run-fig-png'" in page and "href='#fig-run-fig-png'" in page  # the scorecard's link lands
    assert "It rises from 1 to 2. (<a href='run/fig.png'>run/fig.png</a>)" in page
    assert "figure not drawn: run/missing.png" in page and "<li>two</li>" in page


def test_page_without_a_first_section_still_has_contents(tmp_path):
    page = write_report(tmp_path, "t", [Section("Only")]).read_text()
    assert re.findall(r"<li><a href='#([^']+)'>", page) == ["s1-only"] and "id='scorecard'" not in page
