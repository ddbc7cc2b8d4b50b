"""`raretask advise` on an LM sweep, drawn for the report: per task, the threshold frequency f*(N) where test accuracy
crosses the scorecard's THRESHOLD_ACCURACY, measured per size with its seed spread, the power-law fit
f*(N) = a N^-gamma, its bootstrap band carried beyond the measured sizes (the extrapolation the advice relies on),
and each size's leave-one-out prediction (fit on the other sizes). The numbers come from raretask.lm.advise.

    threshold_figure(results, run_dir / FIGURE)     # None (nothing drawn) when no task has two crossing sizes
    threshold_sections(results, run_dir)            # the report section with the table of thresholds and errors
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from raretask.config import ConfigError
from raretask.lm import advise
from raretask.report.claims import THRESHOLD_ACCURACY, THRESHOLD_LEVEL, lm_rows
from raretask.report.html import Section
from raretask.report.plotting import pyplot, save_figure

FIGURE = "threshold_power_law.png"
EXTEND = (1 / 3, 10.0)  # the band is drawn from a third of the smallest to ten times the largest measured size


def fits(results: dict[str, list], target: float = THRESHOLD_ACCURACY) -> list[advise.ThresholdFit]:
    """The threshold fit of every task of the sweep that has one (two sizes crossing inside the grid)."""
    out = []
    for task in dict.fromkeys(results["task"][i] for i in lm_rows(results)):
        try:
            fit = advise.fit_thresholds(advise.task_grid(results, task), target)
        except ConfigError:  # one size only
            continue
        if fit.law is not None:
            out.append(fit)
    return out


def threshold_figure(results: dict[str, list], path: Path, target: float = THRESHOLD_ACCURACY) -> Path | None:
    """One panel per task: f*(N) measured (dots, bars: the seeds' own f*), sizes outside the grid (triangles at
    the grid's edge), the fit (solid over the measured sizes, dashed beyond), the bootstrap band, and the held-out
    predictions (open circles)."""
    found = fits(results, target)
    if not found:
        return None
    fig, axes = pyplot().subplots(1, len(found), figsize=(0.6 + 4.6 * len(found), 3.8), squeeze=False,
                                  layout="constrained")
    for ax, fit in zip(axes[0], found):
        g, law = fit.grid, fit.law
        lo, hi = fit.measured_range()
        n = np.geomspace(min(g.params.min(), lo) * EXTEND[0], max(g.params.max(), hi) * EXTEND[1], 200)
        band = np.quantile(fit.boot_frequency(n), [(1 - THRESHOLD_LEVEL) / 2, (1 + THRESHOLD_LEVEL) / 2], axis=0)
        ax.fill_between(n, band[0], band[1], color="C0", alpha=0.18, lw=0,
                        label=f"{THRESHOLD_LEVEL:.0%} bootstrap band")
        inside = (n >= lo) & (n <= hi)
        ax.plot(n[inside], law.frequency(n[inside]), color="C0", lw=1.8,
                label=f"fit: gamma = {law.gamma:.2f}")
        for part in (n <= lo, n >= hi):
            ax.plot(n[part], law.frequency(n[part]), color="C0", lw=1.2, ls="--")
        for t in fit.used:
            seeds = [v for v in t.seed_fstar if v is not None]
            err = [[t.fstar - min(seeds, default=t.fstar)], [max(seeds, default=t.fstar) - t.fstar]]
            ax.errorbar([t.params], [t.fstar], yerr=err, fmt="o", color="k", ms=5, capsize=3)
        ax.plot([], [], "ok", ms=5, label="measured f* (bars: seeds)")
        for status, marker, edge in [(advise.ABOVE, "^", g.frequencies[-1]), (advise.BELOW, "v", g.frequencies[0])]:
            xs = [t.params for t in fit.sizes if t.status == status]
            if xs:
                ax.plot(xs, [edge] * len(xs), marker, color="0.4", ms=7, ls="none",
                        label=f"f* {'>' if status == advise.ABOVE else '<'} grid")
        if fit.held_out:
            ax.plot([h["params"] for h in fit.held_out], [h["predicted"] for h in fit.held_out], "o", mfc="none",
                    color="C3", ms=8, label="held out: predicted")
        for f in (g.frequencies[0], g.frequencies[-1]):
            ax.axhline(f, color="0.6", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel(f"threshold frequency f* ({g.unit.replace('_', ' ')})")
        ax.set_title(f"{g.task}: accuracy >= {target:g}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("f*(N): threshold frequency by size (dotted: the grid)", fontsize=10)
    return save_figure(fig, path, dpi=110, tight=False)


def _g(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3g}"


def fit_sentence(fit: advise.ThresholdFit) -> str:
    """gamma with its interval, and every held-out error, in one sentence."""
    lo, hi = advise.interval(fit.boot_gamma, THRESHOLD_LEVEL) or (None, None)
    text = (f"{fit.grid.task}: gamma = {fit.law.gamma:.3g} ({THRESHOLD_LEVEL:.0%} interval {_g(lo)} to {_g(hi)}) "
            f"over {len(fit.used)} of {len(fit.sizes)} sizes")
    if fit.held_out:
        text += "; held out: " + ", ".join(f"{h['size']} x{h['factor']:.2f}" for h in fit.held_out)
    else:
        text += "; too few sizes to hold one out"
    return text


def threshold_sections(results: dict[str, list], run_dir: Path) -> list[Section]:
    """The section of the figure (when drawn): what is plotted, the fit per task, and per size the measured f*,
    the held-out prediction and its error as a factor."""
    path = Path(run_dir) / FIGURE
    found = fits(results)
    if not path.is_file() or not found:
        return []
    rows = [["task", "size", "N (non-embedding)", "f*", "status", "seeds' f*", "held-out prediction",
             "error factor"]]
    for fit in found:
        held = {h["size"]: h for h in fit.held_out}
        for t in fit.sizes:
            seeds = [v for v in t.seed_fstar if v is not None]
            h = held.get(t.size)
            rows.append([fit.grid.task, t.size, f"{t.params:,.0f}", _g(t.fstar), t.status,
                         f"{min(seeds):.3g} to {max(seeds):.3g}" if seeds else "-",
                         _g(h["predicted"]) if h else "-", f"x{h['factor']:.2f}" if h else "-"])
    text = (f"Per size N, the threshold frequency f* where the mean-over-seeds test accuracy (label set) crosses "
            f"{THRESHOLD_ACCURACY:g}, interpolated in log-frequency between the grid points around the crossing; "
            f"sizes that never cross inside the grid are marked and left out of the fit. The fit f*(N) = a N^-gamma "
            f"is least squares in log-log; the band is the {THRESHOLD_LEVEL:.0%} percentile band of "
            f"{advise.RESAMPLES} bootstrap resamples (seeds within each cell, then the sizes), drawn beyond the "
            f"measured sizes where `raretask advise` extrapolates. Held out: each size's f* predicted by the fit on "
            f"the other sizes, its error a factor in frequency (1 = exact). " + "; ".join(map(fit_sentence, found))
            + ".")
    return [Section("Threshold frequency vs size (raretask advise)", text, table=rows, figures=[path])]
