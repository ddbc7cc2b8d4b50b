"""`raretask report DIR` redraws every figure of a finished run from its directory alone: delete the PNGs, report,
and each comes back byte for byte (matplotlib's Agg PNGs carry no time stamp, so equal inputs give equal files)."""

from __future__ import annotations

import base64

import pytest

from .conftest import ROOT

PRESETS = ROOT / "configs" / "synthetic"

RUNS = {  # command, preset, overrides that make it a few seconds
    "synthetic": ("run", "default.toml", ["sweep.seeds=[0]", "sweep.widths=[1,2,4]", "train.steps=300",
                                          "eval.every=150"]),
    "toy": ("toy", "toy.toml", ["forget.steps=100", "competition.steps=100", "forget.gap=20", "seeds=[0,1]"]),
    "residual": ("residual", "residual.toml", ["sweep.seeds=[0]", "sweep.widths=[2,8,12]", "train.steps=400",
                                               "eval.every=100"]),
    "retention": ("retention", "retention.toml", ["sweep.seeds=[0]", "sweep.widths=[8,16]", "sweep.gaps=[4,12]",
                                                  "train.steps=144", "eval.cycles=4", "train.checkpoint_every=72"]),
    "interference": ("interference", "interference.toml", ["sweep.seeds=[0]", "train.steps=200", "eval.every=100"]),
    "neurons": ("neurons", "neurons.toml", ["tasks.count=3", "sweep.widths=[2,4]", "sweep.seeds=[0]",
                                            "train.steps=200", "eval.every=100", "eval.samples=256",
                                            "solutions.width=2", "solutions.steps_reweighted=100",
                                            "solutions.steps_natural=100"]),
}


def png_bytes(run_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.glob("*.png"))}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_report_redraws_every_figure_from_the_run_directory(cli, tmp_path, name):
    command, preset, overrides = RUNS[name]
    out = tmp_path / name
    r = cli("synth", command, PRESETS / preset, *overrides, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.stderr
    drawn = png_bytes(out)
    assert drawn, "the run command draws its figures"
    for name_ in drawn:
        (out / name_).unlink()
    assert cli("report", out).exit_code == 0
    assert png_bytes(out) == drawn
    page = (out / "report.html").read_text()
    # every figure embedded in the page (base64), under its file name
    assert all(f"base64,{base64.b64encode(png).decode()}' alt='{n}'" in page for n, png in drawn.items())
