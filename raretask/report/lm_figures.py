"""Figures of the LM lab (paper Sec. 4, App. F) drawn from a sweep's tables (raretask.lm.sweep: results.parquet,
curves.parquet) or one run's metrics.parquet (raretask.lm.train).

  Fig. 5    per task: size x frequency heat maps of the final train loss and test accuracy (mean over seeds)
  Fig. 6a   task train loss over steps, one line per frequency, reference-task losses (R_cmp, R_add) dashed
  Fig. 6b   matched frequency: task eval loss over steps, one line per burst gap N ("N instances every N batches")
  Fig. 22   task loss against the held-out LM loss over training, per frequency, one line per size
  Fig. 23   task eval loss against compute C = 6 N D, one line per size, with the compute-optimal frontier: the lowest
            loss any size reaches within a compute budget
  f*(N)     the threshold frequency per size and its power law in size (raretask.report.advise; needs two sizes
            whose accuracy crosses the target inside the frequency grid)

Every function takes the tables (dicts of columns) and a PNG path and returns the path, or None (and draws nothing)
when the tables lack the axis the figure needs: Fig. 5 needs two sizes or two frequencies, Fig. 6b two gaps > 0,
Fig. 22 a held-out loss, Fig. 23 two sizes. Figures 5, 6a, 22 and 23 use the cells of the task's own schedule
(gap 0); several seeds are averaged step by step. Frequencies are the grid's values in the sweep's unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raretask.report.advise import FIGURE as THRESHOLD_FIGURE
from raretask.report.advise import threshold_figure
from raretask.report.plotting import pyplot, save_figure


class _Table:
    """Column access over a dict of equal-length lists: object arrays, floats with None -> NaN."""

    def __init__(self, cols: dict[str, list]):
        self.cols = cols
        self.n = len(next(iter(cols.values()), []))
        self._cache: dict[tuple[str, bool], np.ndarray] = {}

    def col(self, key: str) -> np.ndarray:
        if (key, False) not in self._cache:
            out = np.empty(self.n, dtype=object)
            out[:] = self.cols.get(key, [None] * self.n)
            self._cache[key, False] = out
        return self._cache[key, False]

    def num(self, key: str) -> np.ndarray:
        if (key, True) not in self._cache:
            self._cache[key, True] = np.array([np.nan if v is None else float(v)
                                               for v in self.cols.get(key, [None] * self.n)], dtype=float)
        return self._cache[key, True]

    def unique(self, key: str, rows: np.ndarray) -> list[Any]:
        return list(dict.fromkeys(v for v in self.col(key)[rows] if v is not None))


LABELS = {"train_loss": "train loss", "test_loss": "test loss", "train_acc_labels": "train accuracy (label set)",
          "test_acc_labels": "test accuracy (label set)", "test_acc_vocab": "test accuracy (vocabulary)"}


def _label(key: str) -> str:
    return LABELS.get(key, key.replace("_", " "))


def _freq_key(t: _Table) -> str:
    return "grid_frequency" if "grid_frequency" in t.cols else "frequency"


def _freq_label(t: _Table, rows: np.ndarray) -> str:
    units = t.unique("unit", rows) if "unit" in t.cols else []
    return "per batch" if units == ["per_batch"] else "per token"


def _base_rows(t: _Table) -> np.ndarray:
    """Rows of injected tasks at their own schedule (gap 0; the matched-frequency cells are Fig. 6b's)."""
    rows = np.array([v is not None for v in t.col("task")], dtype=bool)
    if "gap" in t.cols:
        rows &= t.num("gap") == 0
    return rows


def _sizes(t: _Table, rows: np.ndarray) -> list[str]:
    """Sizes present in `rows`, smallest model first (by parameter count, then ladder order)."""
    from raretask.lm.models import PRESETS

    sizes = t.unique("size", rows)
    params = t.num("params")
    size_col = t.col("size")
    ladder = list(PRESETS)

    def order(s: str) -> tuple[float, int, str]:
        p = params[rows & (size_col == s)]
        return (float(np.nanmax(p)) if np.isfinite(p).any() else np.inf,
                ladder.index(s) if s in ladder else len(ladder), s)

    return sorted(sizes, key=order)


def _by_step(t: _Table, rows: np.ndarray, keys: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(steps, {key: mean over the rows at each step}) -- averages seeds, NaN where no row has a value."""
    steps = t.num("step")[rows]
    uniq = np.unique(steps[np.isfinite(steps)])
    out = {}
    for k in keys:
        v = t.num(k)[rows]
        means = []
        for s in uniq:
            x = v[(steps == s) & np.isfinite(v)]
            means.append(x.mean() if len(x) else np.nan)
        out[k] = np.array(means)
    return uniq, out


def _colors(n: int, cmap: str = "viridis") -> list[Any]:
    plt = pyplot()
    return [plt.get_cmap(cmap)(x) for x in (np.linspace(0.05, 0.9, n) if n > 1 else [0.3])]


def _ref_columns(t: _Table) -> list[str]:
    return sorted(k for k in t.cols if k.startswith("ref_") and k.endswith("_loss"))


def _log_axes(ax: Any, y: bool) -> None:
    """Log x (and y): decades labelled on x, plain numbers on a log y that may span less than a decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if y:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)


def _grid(nrows: int, ncols: int, w: float = 3.6, h: float = 2.9) -> tuple[Any, np.ndarray]:
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(0.6 + w * ncols, 0.5 + h * nrows), squeeze=False,
                                layout="constrained")
    return fig, axes


# ------------------------------------------------------------------------------------------------------- Fig. 5


def fig5_heatmaps(results: dict[str, list], path: Path, *, loss: str = "train_loss",
                  acc: str = "test_acc_labels") -> Path | None:
    """Per task (rows): final `loss` and `acc` over frequency (most frequent at top) x size (smallest left)."""
    t = _Table(results)
    rows = _base_rows(t)
    tasks = t.unique("task", rows)
    fk = _freq_key(t)
    task_col, size_col, freq = t.col("task"), t.col("size"), t.num(fk)
    panels = []
    for task in tasks:
        r = rows & (task_col == task)
        sizes, freqs = _sizes(t, r), sorted({f for f in freq[r] if np.isfinite(f)}, reverse=True)
        if len(sizes) >= 2 or len(freqs) >= 2:
            panels.append((task, r, sizes, freqs))
    if not panels:
        return None
    ncols = max(len(p[2]) for p in panels)
    nfreq = max(len(p[3]) for p in panels)
    fig, axes = _grid(len(panels), 2, w=1.6 + 0.9 * ncols, h=1.0 + 0.45 * nfreq)
    for i, (task, r, sizes, freqs) in enumerate(panels):
        for j, (key, cmap, what, lims) in enumerate([(loss, "viridis_r", _label(loss), (None, None)),
                                                      (acc, "viridis", _label(acc), (0.0, 1.0))]):
            values = t.num(key)
            table = np.full((len(freqs), len(sizes)), np.nan)
            for a, f in enumerate(freqs):
                for b, s in enumerate(sizes):
                    v = values[r & (freq == f) & (size_col == s)]
                    v = v[np.isfinite(v)]
                    table[a, b] = v.mean() if len(v) else np.nan
            ax = axes[i, j]
            im = ax.imshow(table, cmap=cmap, aspect="auto", vmin=lims[0], vmax=lims[1])
            fig.colorbar(im, ax=ax, fraction=0.05)
            for (a, b), v in np.ndenumerate(table):
                if np.isfinite(v):  # dark text on the bright (good) end of either colour map
                    bright = sum(im.cmap(im.norm(v))[:3]) > 1.5
                    ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if bright else "white")
            ax.set_xticks(range(len(sizes)), sizes, fontsize=8)
            ax.set_yticks(range(len(freqs)), [f"{f:.2g}" for f in freqs], fontsize=8)
            ax.set_xlabel("model size")
            ax.set_ylabel(f"frequency ({_freq_label(t, r)})")
            ax.set_title(f"{task}: {what}", fontsize=9)
    fig.suptitle("Fig. 5: final task loss and accuracy by frequency and size (brighter = better)", fontsize=10)
    return save_figure(fig, path, dpi=110, tight=False)


# ------------------------------------------------------------------------------------------------------ Fig. 6a


def fig6a_task_loss(curves: dict[str, list], path: Path, *, metric: str = "train_loss") -> Path | None:
    """Task `metric` over steps (log-log), one line per frequency; rows = tasks, columns = sizes. The corpus'
    reference tasks (ref_*_loss, mean over the panel's runs) dashed."""
    t = _Table(curves)
    rows = _base_rows(t) & (t.num("step") > 0)
    tasks = t.unique("task", rows)
    if not tasks:
        return None
    sizes = _sizes(t, rows)
    fk = _freq_key(t)
    freq, task_col, size_col = t.num(fk), t.col("task"), t.col("size")
    freqs = sorted({f for f in freq[rows] if np.isfinite(f)}, reverse=True)
    colors = _colors(len(freqs), "plasma")
    refs = _ref_columns(t)
    fig, axes = _grid(len(tasks), len(sizes))
    for i, task in enumerate(tasks):
        for j, size in enumerate(sizes):
            ax, panel = axes[i, j], rows & (task_col == task) & (size_col == size)
            for f, c in zip(freqs, colors):
                steps, m = _by_step(t, panel & (freq == f), [metric])
                if len(steps):
                    ax.plot(steps, m[metric], color=c, lw=1.5, label=f"{f:.2g} {_freq_label(t, panel)}")
            if refs:
                steps, m = _by_step(t, panel, refs)
                for k, ls in zip(refs, ["--", "-.", ":"] * len(refs)):
                    if np.isfinite(m[k]).any():
                        ax.plot(steps, m[k], color="0.3", ls=ls, lw=1.2, label=f"R_{k[4:-5]} (corpus)")
            _log_axes(ax, y=True)
            ax.set_title(f"{task}, {size}", fontsize=9)
            ax.set_xlabel("training step")
            ax.set_ylabel(_label(metric))
            ax.grid(alpha=0.3, which="both")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Fig. 6a: tasks are learned in the order of frequency", fontsize=10)
    return save_figure(fig, path, dpi=110, tight=False)


# ------------------------------------------------------------------------------------------------------ Fig. 6b


def fig6b_matched(curves: dict[str, list], path: Path, *, metric: str = "test_loss") -> Path | None:
    """Matched-frequency injection: task `metric` over steps, one line per burst gap N (same long-run frequency);
    rows = tasks (x frequencies), columns = sizes. Cells of the task's own schedule, if any, dotted."""
    t = _Table(curves)
    if "gap" not in t.cols:
        return None
    gap = t.num("gap")
    rows = np.array([v is not None for v in t.col("task")], dtype=bool) & np.isfinite(gap)
    gaps = sorted({int(g) for g in gap[rows] if g > 0})
    if len(gaps) < 2:
        return None
    fk = _freq_key(t)
    freq, task_col, size_col = t.num(fk), t.col("task"), t.col("size")
    tasks = t.unique("task", rows)
    sizes = _sizes(t, rows)
    panel_rows = [(task, f) for task in tasks
                  for f in sorted({f for f in freq[rows & (task_col == task)] if np.isfinite(f)}, reverse=True)]
    colors = _colors(len(gaps), "viridis")
    fig, axes = _grid(len(panel_rows), len(sizes))
    for i, (task, f) in enumerate(panel_rows):
        for j, size in enumerate(sizes):
            ax, panel = axes[i, j], rows & (task_col == task) & (size_col == size) & (freq == f)
            for g, c in zip(gaps, colors):
                steps, m = _by_step(t, panel & (gap == g), [metric])
                if len(steps):
                    ax.plot(steps, m[metric], color=c, lw=1.5, label=f"N = {g}")
            steps, m = _by_step(t, panel & (gap == 0), [metric])
            if len(steps):
                ax.plot(steps, m[metric], color="0.3", ls=":", lw=1.2, label="own schedule")
            ax.set_title(f"{task}, {size}, {f:.2g} {_freq_label(t, panel)}", fontsize=9)
            ax.set_xlabel("training step")
            ax.set_ylabel(_label(metric))
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, title="N instances every N batches", title_fontsize=7)
    fig.suptitle("Fig. 6b: matched frequency, larger injection gap N", fontsize=10)
    return save_figure(fig, path, dpi=110, tight=False)


# ------------------------------------------------------------------------------------------------------- Fig. 22


def fig22_task_vs_lm(curves: dict[str, list], path: Path, *, metric: str = "test_loss") -> Path | None:
    """Task `metric` against the held-out LM loss over training; rows = tasks, columns = frequencies, one line per
    size (equal LM loss, lower task loss = the size learns the task beyond general language modelling)."""
    t = _Table(curves)
    rows = _base_rows(t) & np.isfinite(t.num("heldout_loss")) & np.isfinite(t.num(metric))
    tasks = t.unique("task", rows)
    if not tasks:
        return None
    fk = _freq_key(t)
    freq, task_col, size_col = t.num(fk), t.col("task"), t.col("size")
    freqs = sorted({f for f in freq[rows] if np.isfinite(f)}, reverse=True)
    sizes = _sizes(t, rows)
    colors = _colors(len(sizes))
    fig, axes = _grid(len(tasks), len(freqs))
    for i, task in enumerate(tasks):
        for j, f in enumerate(freqs):
            ax, panel = axes[i, j], rows & (task_col == task) & (freq == f)
            for s, c in zip(sizes, colors):
                _, m = _by_step(t, panel & (size_col == s), ["heldout_loss", metric])
                if len(m[metric]):
                    ax.plot(m["heldout_loss"], m[metric], color=c, lw=1.5, marker=".", ms=3, label=s)
            ax.set_title(f"{task}, {f:.2g} {_freq_label(t, panel)}", fontsize=9)
            ax.set_xlabel("held-out LM loss")
            ax.set_ylabel(f"task {_label(metric)}")
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, title="size", title_fontsize=7)
    fig.suptitle("Fig. 22: task loss vs general language-modelling loss", fontsize=10)
    return save_figure(fig, path, dpi=110, tight=False)


# ------------------------------------------------------------------------------------------------------- Fig. 23


def lower_envelope(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The compute-optimal frontier: at each compute C (log-spaced over all curves), the lowest loss reachable with
    a budget of at most C -- the lower envelope of the curves (each interpolated linearly in log C within its own
    range), then its running minimum (a budget need not be spent; where a smaller model's run ends, the frontier
    stays at its best loss until a larger model beats it)."""
    curves = [(np.asarray(c, float), np.asarray(y, float)) for c, y in curves if len(c)]
    lo = min(float(c.min()) for c, _ in curves)
    hi = max(float(c.max()) for c, _ in curves)
    grid = np.logspace(np.log10(lo), np.log10(hi), points)
    stack = np.full((len(curves), points), np.inf)
    for k, (c, y) in enumerate(curves):
        order = np.argsort(c)
        c, y = c[order], y[order]
        inside = (grid >= c[0]) & (grid <= c[-1])
        stack[k, inside] = np.interp(np.log(grid[inside]), np.log(c), y)
    return grid, np.minimum.accumulate(stack.min(axis=0))


def fig23_compute(curves: dict[str, list], path: Path, *, metric: str = "test_loss") -> Path | None:
    """Task `metric` against compute C = 6 N D (log x), one line per size, the lower envelope over sizes dashed;
    rows = tasks, columns = frequencies."""
    t = _Table(curves)
    compute = t.num("compute")
    rows = _base_rows(t) & np.isfinite(compute) & (compute > 0) & np.isfinite(t.num(metric))
    sizes = _sizes(t, rows)
    if len(sizes) < 2:
        return None
    fk = _freq_key(t)
    freq, task_col, size_col = t.num(fk), t.col("task"), t.col("size")
    tasks = t.unique("task", rows)
    freqs = sorted({f for f in freq[rows] if np.isfinite(f)}, reverse=True)
    colors = _colors(len(sizes))
    fig, axes = _grid(len(tasks), len(freqs))
    for i, task in enumerate(tasks):
        for j, f in enumerate(freqs):
            ax, panel = axes[i, j], rows & (task_col == task) & (freq == f)
            lines = []
            for s, c in zip(sizes, colors):
                _, m = _by_step(t, panel & (size_col == s), ["compute", metric])
                ok = np.isfinite(m["compute"]) & np.isfinite(m[metric])
                if ok.any():
                    lines.append((m["compute"][ok], m[metric][ok]))
                    ax.plot(*lines[-1], color=c, lw=1.5, label=s)
            if lines:
                ax.plot(*lower_envelope(lines), color="k", ls="--", lw=1.2, label="compute-optimal frontier")
            _log_axes(ax, y=False)
            ax.set_title(f"{task}, {f:.2g} {_freq_label(t, panel)}", fontsize=9)
            ax.set_xlabel("compute C = 6 N D (FLOP)")
            ax.set_ylabel(f"task {_label(metric)}")
            ax.grid(alpha=0.3, which="both")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Fig. 23: task loss vs compute by model size", fontsize=10)
    return save_figure(fig, path, dpi=110, tight=False)


# ------------------------------------------------------------------------------------------------- one run, all


def run_curves(metrics: dict[str, list], path: Path) -> Path | None:
    """One training run (metrics.parquet): task train (solid) and test (dashed) loss, test accuracy over the label
    set (solid) and the vocabulary (dotted), and the LM losses (held-out, training, reference tasks)."""
    t = _Table(metrics)
    if t.n == 0:
        return None
    tasks = t.unique("task", np.ones(t.n, dtype=bool))
    fig, axes = _grid(1, 3 if tasks else 1)
    colors = [pyplot().get_cmap("tab10")(i % 10) for i in range(len(tasks))]
    for task, c in zip(tasks, colors):
        steps, m = _by_step(t, t.col("task") == task, ["train_loss", "test_loss", "test_acc_labels",
                                                       "test_acc_vocab"])
        axes[0, 0].plot(steps, m["train_loss"], color=c, label=f"{task} train")
        axes[0, 0].plot(steps, m["test_loss"], color=c, ls="--", label=f"{task} test")
        axes[0, 1].plot(steps, m["test_acc_labels"], color=c, label=f"{task} (labels)")
        axes[0, 1].plot(steps, m["test_acc_vocab"], color=c, ls=":", label=f"{task} (vocabulary)")
    if tasks:
        axes[0, 0].set_title("task loss", fontsize=9)
        axes[0, 1].set_title("task test accuracy", fontsize=9)
        axes[0, 1].set_ylim(-0.03, 1.03)
    lm_ax = axes[0, -1]
    first = t.col("task") == (tasks[0] if tasks else None)  # the per-step columns repeat on every task row
    steps, m = _by_step(t, first, ["heldout_loss", "lm_loss", *_ref_columns(t)])
    for k, label, ls in [("heldout_loss", "held-out", "-"), ("lm_loss", "training", "-")] + \
            [(r, f"R_{r[4:-5]}", "--") for r in _ref_columns(t)]:
        if np.isfinite(m[k]).any():
            lm_ax.plot(steps, m[k], ls=ls, label=label)
    lm_ax.set_title("language-modelling loss", fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110, tight=False)


FIGURES = {  # file name -> (function, table it reads)
    "fig5_heatmaps.png": (fig5_heatmaps, "results"),
    "fig6a_task_loss.png": (fig6a_task_loss, "curves"),
    "fig6b_matched_frequency.png": (fig6b_matched, "curves"),
    "fig22_task_vs_lm_loss.png": (fig22_task_vs_lm, "curves"),
    "fig23_compute.png": (fig23_compute, "curves"),
    THRESHOLD_FIGURE: (threshold_figure, "results"),  # raretask advise: f*(N) and its power law
}


def sweep_figures(results: dict[str, list], curves: dict[str, list], out: Path) -> list[Path]:
    """Draw every figure the sweep has the axes for into `out` (an older copy of a skipped one is removed)."""
    paths = []
    for name, (fn, table) in FIGURES.items():
        p = fn(results if table == "results" else curves, Path(out) / name)
        if p is None:
            (Path(out) / name).unlink(missing_ok=True)
        else:
            paths.append(p)
    return paths
