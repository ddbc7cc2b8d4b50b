"""A real report page in headless Chromium: a tiny synthetic run reported, the page opened with no console errors,
every embedded image a PNG equal to its file on disk, the scorecard and contents first, a non-blank screenshot.
Skipped where Debian's `chromium` is not installed (`make test` installs it where apt can)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import pytest
from PIL import Image

from .conftest import ROOT

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--hide-scrollbars"]


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True,
                          text=True, timeout=120)


def console_errors(log: str) -> list[str]:
    """Chromium's log lines from the page's console. The page has no JavaScript, so any is an error (Chromium logs
    uncaught exceptions and console.error alike as ...:CONSOLE:n] "message"); its own dbus and GPU noise is not."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_page_opens_in_headless_chromium(cli, tmp_path):
    out = tmp_path / "run"
    r = cli("synth", "run", ROOT / "configs" / "synthetic" / "default.toml", "sweep.seeds=[0]", "sweep.widths=[1,2,4]",
            "train.steps=300", "eval.every=150", "--out", out, "--no-progress")
    assert r.exit_code == 0, r.stderr
    assert cli("report", out).exit_code == 0
    page_path = out / "report.html"
    page = page_path.read_text()

    # every image is embedded, decodes as a PNG and is the file its caption names
    images = re.findall(r"<img src='data:image/png;base64,([^']+)' alt='([^']+)'>", page)
    assert {name for _, name in images} == {p.name for p in out.glob("*.png")} and images
    for data, name in images:
        raw = base64.b64decode(data)
        assert raw == (out / name).read_bytes()
        image = Image.open(io.BytesIO(raw))
        assert image.format == "PNG" and min(image.size) > 100
    assert page.index("id='scorecard'") < page.index("<nav>") < page.index("<h2 id='s1-")

    dom = chromium(tmp_path, "--dump-dom", page_path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_errors(dom.stderr) == []
    assert dom.stdout.count("<img ") == len(images) and "Scorecard" in dom.stdout

    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, "--window-size=1200,2400", f"--screenshot={shot}", page_path.as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    assert console_errors(run.stderr) == []
    pixels = Image.open(shot).convert("L")
    dark = sum(pixels.histogram()[:200]) / (pixels.width * pixels.height)
    assert dark > 0.02, "the screenshot is blank"


def test_a_root_of_runs_gets_one_page_with_their_scorecard(cli, tmp_path):
    """pages.write_tree on a folder of runs (what a full reproduction writes): each run found by its kind, its
    sections under its path, and the scorecard judging the claims those runs can test, with links to the figures."""
    from raretask.report import pages

    root = tmp_path / "all"
    r = cli("synth", "run", ROOT / "configs" / "synthetic" / "default.toml", "sweep.seeds=[0]", "sweep.widths=[1,2,4]",
            "train.steps=300", "eval.every=150", "--out", root / "synthetic", "--no-progress")
    assert r.exit_code == 0, r.stderr
    r = cli("synth", "toy", ROOT / "configs" / "synthetic" / "toy.toml", "forget.steps=100", "competition.steps=100",
            "forget.gap=20", "seeds=[0,1]", "--out", root / "toy", "--no-progress")
    assert r.exit_code == 0, r.stderr
    page = pages.write_tree(root).read_text()
    rows = dict(re.findall(r"<tr><td>(S\d|L\d[^<]*)</td><td>[^<]*</td><td class='(\w+)'>", page))
    assert rows["S6"] == "ok"  # Example 7 holds at any length
    assert rows["S1"] in ("ok", "fail") and rows["S4"] == rows["L1 (comparison)"] == "none"
    for target in ("fig-synthetic-observed-vs-predicted-png", "fig-toy-forget-png"):
        assert f"href='#{target}'" in page and f"id='{target}'" in page
    assert "synthetic: Synthetic sweep: trained vs theory" in page and "toy: Example 7" in page
