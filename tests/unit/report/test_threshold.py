"""Scorecard row L6 (the threshold frequency falls with size as a power law) and the report's f*(N) figure and
section, on hand-built results tables (tests/unit/lm/test_advise_sweep.py's `results_table`)."""

from __future__ import annotations

import re

from raretask.report import advise as report_advise
from raretask.report.scorecard import CLAIMS, NOT_REPRODUCED, NOT_RUN, REPRODUCED, RunTables, judge_tables
from tests.unit.lm.test_advise_sweep import GAMMA, SIZES, results_table


def l6(results: dict[str, list], kind: str = "comparison"):
    run = RunTables("lm/sweep", "lm.sweep", {"results": results, "curves": {}})
    claim = [c for c in CLAIMS if c.id == f"L6 ({kind.replace('_', ' ')})"]
    (v,) = judge_tables([run], claim)
    return v


def gamma_in(text: str) -> float:
    return float(re.search(r"gamma = (-?[0-9.]+)", text).group(1))


def test_l6_reproduced_on_a_falling_power_law_with_seed_noise():
    v = l6(results_table(noise=0.02))
    assert v.verdict == REPRODUCED, v.numbers
    assert abs(gamma_in(v.numbers) - GAMMA) < 0.1 and "over 4 sizes" in v.numbers
    assert all(f"{s} x1." in v.numbers for s in SIZES)  # every held-out error, as a factor near 1


def test_l6_not_reproduced_when_the_threshold_rises_with_size():
    v = l6(results_table(fstar=lambda n: 1e-4 * n**0.25, noise=0.02))
    assert v.verdict == NOT_REPRODUCED and abs(gamma_in(v.numbers) + 0.25) < 0.1


def test_l6_not_run_with_fewer_than_three_crossing_sizes_or_without_the_task():
    v = l6(results_table({"s0": 1.0, "s1": 1e4, "s2": 4e4}))  # s0 never crosses inside the grid
    assert v.verdict == NOT_RUN and "2 of 3 sizes cross 0.8" in v.numbers
    assert l6(results_table(), "modular_addition").verdict == NOT_RUN
    assert l6(results_table({"s1": 1e4})).verdict == NOT_RUN


def test_figure_and_section(tmp_path):
    res = results_table({"s0": 1.0, **SIZES}, noise=0.02)
    path = report_advise.threshold_figure(res, tmp_path / report_advise.FIGURE)
    assert path is not None and path.stat().st_size > 10_000
    (section,) = report_advise.threshold_sections(res, tmp_path)
    head, *rows = section.table
    assert head[-2:] == ["held-out prediction", "error factor"]
    assert [r[1] for r in rows] == ["s0", *SIZES] and rows[0][4] == "above" and rows[0][-1] == "-"
    assert all(r[-1].startswith("x1.") for r in rows[1:])
    assert abs(gamma_in(section.text) - GAMMA) < 0.1 and "held out: s1 x1." in section.text
    # two sizes that cannot cross: nothing to draw, and no section
    flat = results_table({"a": 1.0, "b": 2.0})
    assert report_advise.threshold_figure(flat, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    assert report_advise.threshold_sections(flat, tmp_path / "elsewhere") == []
