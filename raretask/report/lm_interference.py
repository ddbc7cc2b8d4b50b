"""Figures and report sections of what follows an injection (`raretask lm analyze --what interference|retention`,
raretask.analysis.after_injection; meta.json kind "lm.interference" / "lm.retention"), drawn from the tables alone:

  fig9_interference.png     cos(g, g_r), cos(g_t, g_r), cos(g_nt, g_r) over the steps after an injection, one colour
                            per run (size), mean ± std over injections (paper Fig. 9)
  fig10_layer_ablation.png  change of the task loss when each MLP layer's output is zeroed, per run, last
                            checkpoint; the monitored layer circled (paper Fig. 10)
  fig8_retention.png        Δ task eval loss after an injection, mean ± std over injections, per run, with the fitted
                            decay -A exp(-k / tau) dashed over the gap it was fitted on (paper Fig. 8)

Each figure has one sentence read from the data; the interference section states the paper's numbers beside ours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raretask.report.html import Section, finished
from raretask.report.plotting import pyplot, save_figure

PANELS = [("cos_g", "batch gradient g"), ("cos_t", "task-token gradient g_t"), ("cos_nt", "non-task gradient g_nt")]
PAPER = ("the paper (OLMo, 100 instances every 100 batches): cos(g, g_r) at injection 0.08 ± 0.02 at 1B and "
         "0.04 ± 0.04 at 300M, oscillating at 20M; cos(g_nt, g_r) 0.10 ± 0.09 at 20M and 7.6e-5 ± 0.02 at 1B")


def _kind(run_dir: Path) -> str:
    return json.loads((Path(run_dir) / "meta.json").read_text()).get("kind", "")


def _table(run_dir: Path, name: str) -> pd.DataFrame:
    path = Path(run_dir) / f"{name}.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


def _runs(run_dir: Path) -> list[dict[str, Any]]:
    return json.loads((Path(run_dir) / "meta.json").read_text()).get("runs", [])


def _label(r: dict[str, Any] | pd.Series) -> str:
    return f"{r['size']} (N = {int(r['gap'])})" if r["gap"] else str(r["size"])


def _colours(n: int) -> list[Any]:
    cmap = pyplot().get_cmap("viridis")
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def _band(ax: Any, x: Any, mean: Any, std: Any, colour: Any, label: str) -> None:
    ax.plot(x, mean, "-", color=colour, lw=1.2, label=label)
    ax.fill_between(x, np.asarray(mean) - np.asarray(std), np.asarray(mean) + np.asarray(std), color=colour,
                    alpha=0.2, lw=0)


# ------------------------------------------------------------------------------------------------------ figures


def figures(run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    if _kind(run_dir) == "lm.retention":
        finished(run_dir, "decay.parquet")
        fig = _retention_figure(run_dir)
        return [] if fig is None else [fig]
    finished(run_dir, "ablation.parquet")
    return [p for p in (_interference_figure(run_dir), _ablation_figure(run_dir)) if p is not None]


def _interference_figure(run_dir: Path) -> Path | None:
    lined = _table(run_dir, "after_injection")
    if lined.empty:
        return None
    plt = pyplot()
    cells = [r for r in _runs(run_dir) if r["cell"] in set(lined["cell"])]
    colour = _colours(len(cells))
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True, layout="constrained")
    for ax, (metric, title) in zip(axes, PANELS):
        for r, c in zip(cells, colour):
            part = lined[(lined["cell"] == r["cell"]) & (lined["metric"] == metric)].sort_values("k")
            _band(ax, part["k"], part["mean"], part["std"], c, _label(r))
        ax.axhline(0, color="0.5", lw=0.6, ls=":")
        ax.set_ylabel("cosine with g_r")
        ax.set_title(f"{title} vs task reference", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[-1].set_xlabel("Δ training step after an injection")
    return save_figure(fig, run_dir / "fig9_interference.png", tight=False)


def _ablation_figure(run_dir: Path) -> Path | None:
    abl = _table(run_dir, "ablation")
    if abl.empty:
        return None
    plt = pyplot()
    cells = [r for r in _runs(run_dir) if r["cell"] in set(abl["cell"])]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for r, c in zip(cells, _colours(len(cells))):
        part = abl[(abl["cell"] == r["cell"]) & abl["layer"].notna()].sort_values("layer")
        ax.plot(part["layer"], part["delta_loss"], "o-", color=c, label=_label(r))
        watched = part["monitored_layer"].dropna()
        if len(watched):
            at = part[part["layer"] == watched.iloc[0]]
            ax.plot(at["layer"], at["delta_loss"], "o", ms=11, mfc="none", color=c)
    ax.axhline(0, color="0.5", lw=0.6, ls=":")
    ax.set_xlabel("MLP layer zero-ablated")
    ax.set_ylabel("Δ task loss (ablated − intact)")
    ax.legend(fontsize=7)
    return save_figure(fig, run_dir / "fig10_layer_ablation.png")


def _retention_figure(run_dir: Path) -> Path | None:
    curve, decay = _table(run_dir, "curve"), _table(run_dir, "decay")
    if curve.empty:
        return None
    plt = pyplot()
    cells = [r for r in _runs(run_dir) if r["cell"] in set(curve["cell"])]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r, c in zip(cells, _colours(len(cells))):
        part = curve[curve["cell"] == r["cell"]].sort_values("k")
        fit = decay[decay["cell"] == r["cell"]].iloc[0]
        tau = fit["tau"]
        label = _label(r) + (f", tau {tau:.3g}" if math.isfinite(tau) else ", tau inf" if tau == math.inf else "")
        _band(ax, part["k"], part["mean"], part["std"], c, label)
        if math.isfinite(tau) or tau == math.inf:
            k = np.arange(1, int(fit["until"]) + 1)
            ax.plot(k, -fit["amplitude"] * np.exp(-k / tau), "--", color=c, lw=1)
    ax.axhline(0, color="0.5", lw=0.6, ls=":")
    ax.set_xlabel("Δ training step after an injection")
    ax.set_ylabel("Δ task eval loss (w.r.t. the injection step)")
    ax.legend(fontsize=7)
    return save_figure(fig, run_dir / "fig8_retention.png")


# ------------------------------------------------------------------------------------------------------ sections


def _pm(part: pd.DataFrame, metric: str, k: int = 0) -> str:
    row = part[(part["metric"] == metric) & (part["k"] == k)]
    return "-" if row.empty else f"{row['mean'].iloc[0]:+.3f} ± {row['std'].iloc[0]:.3f}"


def _window(part: pd.DataFrame, metric: str) -> float:
    rows = part[part["metric"] == metric]
    return float(np.average(rows["mean"], weights=rows["count"])) if len(rows) else math.nan


def sentences(run_dir: Path) -> dict[str, str]:
    run_dir = Path(run_dir)
    out = {}
    if _kind(run_dir) == "lm.retention":
        decay, curve = _table(run_dir, "decay"), _table(run_dir, "curve")
        if not curve.empty:
            parts = []
            for r in _runs(run_dir):
                d = decay[decay["cell"] == r["cell"]]
                c = curve[curve["cell"] == r["cell"]]
                if d.empty or c.empty:
                    continue
                tau = d["tau"].iloc[0]
                what = "not fitted" if math.isnan(tau) else "inf (no forgetting within the gap)" if tau == math.inf \
                    else f"{tau:.3g} steps"
                parts.append(f"{_label(r)}: deepest mean drop {c['mean'].min():+.3f}, decay constant {what}")
            out["fig8_retention.png"] = "Task eval loss after an injection: " + "; ".join(parts) + "."
        return out
    lined, abl = _table(run_dir, "after_injection"), _table(run_dir, "ablation")
    if not lined.empty:
        parts = [f"{_label(r)}: cos(g, g_r) {_pm(p, 'cos_g')}, cos(g_nt, g_r) {_pm(p, 'cos_nt')} at the injection, "
                 f"cos(g_nt, g_r) {_window(p, 'cos_nt'):+.3f} on average after it"
                 for r in _runs(run_dir) for p in [lined[lined["cell"] == r["cell"]]] if not p.empty]
        out["fig9_interference.png"] = "Mean ± std over injections: " + "; ".join(parts) + "."
    if not abl.empty:
        parts = []
        for r in _runs(run_dir):
            part = abl[(abl["cell"] == r["cell"]) & abl["layer"].notna()]
            if part.empty:
                continue
            best = part.loc[part["delta_loss"].abs().idxmax()]
            watched = part["monitored_layer"].dropna()
            parts.append(f"{_label(r)}: layer {int(best['layer'])} ({best['delta_loss']:+.3f})"
                         + (f", monitored layer {int(watched.iloc[0])}" if len(watched) else ""))
        out["fig10_layer_ablation.png"] = ("The MLP layer whose ablation changes the task loss most: "
                                          + "; ".join(parts) + ".")
    return out


def sections(run_dir: Path) -> list[Section]:
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    if _kind(run_dir) == "lm.retention":
        decay = _table(run_dir, "decay")
        table: list[list[Any]] = [["run", "size", "task", "N", "source", "tau (steps)", "A", "points", "r² (log)"]]
        for _, d in decay.iterrows():
            table.append([d["cell"], str(d["size"]), d["task"], str(int(d["gap"])), d["source"], _fmt(d["tau"]),
                          _fmt(d["amplitude"]), str(int(d["points"])), _fmt(d["r2"])])
        text = (f"Retention after injections (paper Fig. 8) in {len(meta.get('runs', []))} burst-schedule run(s) of "
                f"{meta.get('source')}: the task's eval loss minus its value at the injection step, over the steps "
                "after each injection; tau from a least-squares fit of log(-Δ) = log A - k / tau between one "
                "injection and the next (raretask.analysis.retention). Longer tau = longer retention."
                + (f" Skipped (not a burst schedule): {', '.join(meta['skipped'])}." if meta.get("skipped") else ""))
        return [Section("Retention after injections (Fig. 8)", text, figures=_drawn(run_dir), table=table,
                        captions=sentences(run_dir))]
    lined, abl = _table(run_dir, "after_injection"), _table(run_dir, "ablation")
    table = [["run", "size", "task", "N", "cos(g, g_r) at injection", "cos(g_t, g_r)", "cos(g_nt, g_r)",
              "cos(g_nt, g_r) after", "ablation layer", "monitored layer"]]
    for r in _runs(run_dir):
        p = lined[lined["cell"] == r["cell"]] if not lined.empty else lined
        a = abl[(abl["cell"] == r["cell"]) & abl["layer"].notna()] if not abl.empty else abl
        best = a.loc[a["delta_loss"].abs().idxmax()] if len(a) else None
        watched = a["monitored_layer"].dropna() if len(a) else pd.Series(dtype=float)
        table.append([r["cell"], str(r["size"]), r["task"], str(r["gap"]),
                      *(_pm(p, m) if len(p) else "-" for m, _ in PANELS),
                      _fmt(_window(p, "cos_nt")) if len(p) else "-",
                      "-" if best is None else str(int(best["layer"])),
                      str(int(watched.iloc[0])) if len(watched) else "-"])
    text = (f"Gradient interference on the task neurons (paper Sec. 4.4, Fig. 9, 10) in {len(meta.get('runs', []))} "
            f"run(s) of {meta.get('source')}: the cosines of the batch gradient g, its task-token part g_t and the rest "
            f"g_nt with the task reference g_r on the top-K neurons of one MLP layer, mean ± std over injections at "
            f"the injection step; the zero-ablation of every MLP layer at the last checkpoint. For comparison, {PAPER}."
            + (f" Without a monitor table: {', '.join(meta['without_monitor'])}." if meta.get("without_monitor")
               else ""))
    return [Section("Gradient interference on task neurons (Fig. 9, 10)", text, figures=_drawn(run_dir), table=table,
                    captions=sentences(run_dir))]


def _drawn(run_dir: Path) -> list[Path]:
    names = ("fig9_interference.png", "fig10_layer_ablation.png", "fig8_retention.png")
    return [Path(run_dir) / n for n in names if (Path(run_dir) / n).is_file()]


def nested_figures(run_dir: Path) -> list[Path]:
    """The figures of run_dir/interference and run_dir/retention, analyses inside the run they analysed."""
    return [p for d in _nested(run_dir) for p in figures(d)]


def nested_sections(run_dir: Path) -> list[Section]:
    return [s for d in _nested(run_dir) for s in sections(d)]


def _nested(run_dir: Path) -> list[Path]:
    return [Path(run_dir) / name for name in ("interference", "retention")
            if (Path(run_dir) / name / "meta.json").is_file()
            and json.loads((Path(run_dir) / name / "meta.json").read_text()).get("status") == "finished"]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.3g}" if isinstance(v, float) else str(v)
