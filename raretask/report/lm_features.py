"""Figures and report sections of a feature analysis (`raretask lm analyze`, raretask.analysis.features; meta.json
kind "lm.features"), drawn from its tables alone:

  fig7a_order_r2.png      comparison: presence (the best layer's held-out R² of the value order) and test accuracy
                          over training, one colour per run (size); beside it the R² per layer at the last step
  fig7b_fourier_modes.png modular addition: present Fourier modes summed over layers, and test accuracy, over
                          training per run; beside it P_k per layer and frequency k of the largest run's last step
  fig7b_modes_pca.png     the class means c = (a + b) mod 100 on their top-2 principal coordinates at the layer with
                          the most present modes, largest run, last step
  das_iia.png             DAS interchange-intervention accuracy per layer at the last DAS step, per run; dashed:
                          the un-intervened model on the same counterfactual labels; dotted: chance 1/2

Each figure has one sentence computed from the data; the section's table gives per run and task the Spearman
correlation of presence with test accuracy over the analysed checkpoints.
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

FIGURES = ("fig7a_order_r2.png", "fig7b_fourier_modes.png", "fig7b_modes_pca.png", "das_iia.png")


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    finished(run_dir, "features.parquet")
    return {name: pd.read_parquet(run_dir / f"{name}.parquet") for name in ("features", "das", "fourier", "modes")
            if (run_dir / f"{name}.parquet").is_file()}


def _order(run_dir: Path) -> list[str]:
    """Runs (cells) in the order of meta.json (a sweep's: smaller sizes first)."""
    return [r["cell"] for r in json.loads((Path(run_dir) / "meta.json").read_text()).get("runs", [])]


def presence(features: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, size, task, step): presence (comparison: the best layer's R²; modular addition: present modes
    summed over layers) and the test accuracy at that step."""
    if features.empty:
        return pd.DataFrame(columns=["cell", "size", "task", "metric", "step", "presence", "test_acc"])
    g = features.groupby(["cell", "size", "task", "metric", "step"], sort=False)
    out = g.agg(best=("value", "max"), total=("value", "sum"), test_acc=("test_acc", "first")).reset_index()
    out["presence"] = np.where(out["metric"] == "order_r2", out["best"], out["total"])
    return out.drop(columns=["best", "total"])


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than 3 pairs or a constant series."""
    ok = x.notna() & y.notna()
    if ok.sum() < 3:
        return math.nan
    a, b = x[ok].rank().to_numpy(float), y[ok].rank().to_numpy(float)
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _colours(cells: list[str]) -> dict[str, Any]:
    cmap = pyplot().get_cmap("viridis")
    return {c: cmap(i / max(len(cells) - 1, 1)) for i, c in enumerate(cells)}


def _label(df: pd.DataFrame, cell: str) -> str:
    rows = df[df["cell"] == cell]
    return f"{rows['size'].iloc[0]} (f={rows['frequency'].iloc[0]:g})" if len(rows) else cell


def figures(run_dir: Path) -> list[Path]:
    """Every figure the tables allow (see the module docstring)."""
    run_dir = Path(run_dir)
    t, plt, order = _tables(run_dir), pyplot(), _order(run_dir)
    f = t["features"]
    paths = []
    for metric, name, ylabel in (("order_r2", "fig7a_order_r2.png", "held-out R² of the value order"),
                                 ("fourier_modes", "fig7b_fourier_modes.png", "present Fourier modes")):
        rows = f[f["metric"] == metric]
        if rows.empty:
            continue
        p = presence(rows)
        cells = [c for c in order if c in set(rows["cell"])]
        colour = _colours(cells)
        fig, (ax, side) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
        acc = ax.twinx()
        for cell in cells:
            for task, part in p[p["cell"] == cell].groupby("task", sort=False):
                ax.plot(part["step"], part["presence"], "o-", color=colour[cell], ms=3,
                        label=f"{_label(rows, cell)} {task}")
                acc.plot(part["step"], part["test_acc"], "--", color=colour[cell], lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel(("best layer's " if metric == "order_r2" else "summed over layers: ") + ylabel)
        acc.set_ylabel("test accuracy (dashed)")
        acc.set_ylim(0, 1.02)
        ax.legend(fontsize=6)
        if metric == "order_r2":
            last = rows[rows["step"] == rows.groupby("cell")["step"].transform("max")]
            for cell in cells:
                for task, part in last[last["cell"] == cell].groupby("task", sort=False):
                    side.plot(part["layer"], part["value"], "o-", color=colour[cell], label=_label(rows, cell))
            side.set_xlabel("residual layer (0 = embeddings)")
            side.set_ylabel("held-out R², last step")
            side.set_title("R² per layer", fontsize=9)
        else:
            fo = t["fourier"]
            big = cells[-1]
            part = fo[(fo["cell"] == big) & (fo["step"] == fo[fo["cell"] == big]["step"].max())]
            grid = part.pivot_table(index="layer", columns="k", values="power", aggfunc="mean")
            im = side.imshow(grid.to_numpy(), aspect="auto", cmap="magma", origin="lower",
                             extent=(grid.columns.min() - 0.5, grid.columns.max() + 0.5,
                                     grid.index.min() - 0.5, grid.index.max() + 0.5))
            fig.colorbar(im, ax=side, label="P_k")
            for _, r in part[part["present"]].iterrows():
                side.plot(r["k"], r["layer"], "c+", ms=5)
            side.set_xlabel("frequency k")
            side.set_ylabel("layer")
            side.set_title(f"{_label(rows, big)}, last step: P_k (+ present)", fontsize=9)
        paths.append(save_figure(fig, run_dir / name, tight=False))
    if "modes" in t and not t["modes"].empty:
        paths.append(_modes_figure(t, order, run_dir / "fig7b_modes_pca.png"))
    if "das" in t and not t["das"].empty:
        paths.append(_das_figure(t["das"], order, run_dir / "das_iia.png"))
    return paths


def _best_modes_layer(t: dict[str, pd.DataFrame], cell: str) -> tuple[int, pd.DataFrame]:
    fo = t["fourier"][t["fourier"]["cell"] == cell]
    last = fo[fo["step"] == fo["step"].max()]
    counts = last.groupby("layer")["present"].sum()
    return int(counts.idxmax()), last


def _modes_figure(t: dict[str, pd.DataFrame], order: list[str], path: Path) -> Path:
    plt = pyplot()
    modes = t["modes"]
    cell = [c for c in order if c in set(modes["cell"])][-1]
    layer, last = _best_modes_layer(t, cell)
    part = modes[(modes["cell"] == cell) & (modes["layer"] == layer)]
    top = last[last["layer"] == layer].sort_values("power", ascending=False).head(3)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    sc = ax.scatter(part["pc1"], part["pc2"], c=part["c"], cmap="twilight", s=18)
    for _, r in part.iterrows():
        ax.annotate(str(int(r["c"])), (r["pc1"], r["pc2"]), fontsize=5, alpha=0.6)
    fig.colorbar(sc, ax=ax, label="class c = (a + b) mod 100")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{cell}, layer {layer}: strongest k " + ", ".join(str(int(k)) for k in top["k"]), fontsize=8)
    return save_figure(fig, path)


def _das_figure(das: pd.DataFrame, order: list[str], path: Path) -> Path:
    plt = pyplot()
    cells = [c for c in order if c in set(das["cell"])]
    colour = _colours(cells)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for cell in cells:
        part = das[das["cell"] == cell]
        part = part[part["step"] == part["step"].max()]
        for task, rows in part.groupby("task", sort=False):
            ax.plot(rows["layer"], rows["iia"], "o-", color=colour[cell],
                    label=f"{_label(das, cell)} {task} (step {int(rows['step'].iloc[0])})")
            ax.plot(rows["layer"], rows["no_intervention"], "--", color=colour[cell], lw=0.8)
    ax.axhline(0.5, color="0.5", ls=":", lw=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("residual layer (0 = embeddings)")
    ax.set_ylabel("interchange-intervention accuracy")
    ax.legend(fontsize=6)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------------------ sections


def sentences(run_dir: Path) -> dict[str, str]:
    """One sentence per figure, from the tables."""
    run_dir = Path(run_dir)
    t, order = _tables(run_dir), _order(run_dir)
    f, out = t["features"], {}
    for metric, name in (("order_r2", "fig7a_order_r2.png"), ("fourier_modes", "fig7b_fourier_modes.png")):
        p = presence(f[f["metric"] == metric])
        parts = []
        for cell in [c for c in order if c in set(p["cell"])]:
            for task, rows in p[p["cell"] == cell].groupby("task", sort=False):
                first, last = rows.iloc[0], rows.iloc[-1]
                fmt = (lambda v: f"{v:.2f}") if metric == "order_r2" else (lambda v: f"{int(v)}")
                rho = spearman(rows["presence"], rows["test_acc"])
                parts.append(f"{_label(f, cell)} {task}: {fmt(first['presence'])} at step {int(first['step'])} → "
                             f"{fmt(last['presence'])} at step {int(last['step'])}"
                             + (f" (Spearman with test accuracy {rho:.2f})" if math.isfinite(rho) else ""))
        if parts:
            what = "best-layer R² of the value order" if metric == "order_r2" else "present Fourier modes"
            out[name] = f"{what[0].upper()}{what[1:]}: " + "; ".join(parts) + "."
    if "modes" in t and not t["modes"].empty:
        cell = [c for c in order if c in set(t["modes"]["cell"])][-1]
        layer, last = _best_modes_layer(t, cell)
        present = last[(last["layer"] == layer) & last["present"]].sort_values("power", ascending=False)
        out["fig7b_modes_pca.png"] = (
            f"{cell}, layer {layer} has {len(present)} present mode(s)"
            + (": k = " + ", ".join(f"{int(r.k)} (P_k {r.power:.2f})" for r in present.itertuples())
               if len(present) else " (none above 2 · 2/99)") + ".")
    if "das" in t and not t["das"].empty:
        das, parts = t["das"], []
        for cell in [c for c in order if c in set(das["cell"])]:
            part = das[das["cell"] == cell]
            part = part[part["step"] == part["step"].max()]
            best = part.loc[part["iia"].idxmax()]
            parts.append(f"{_label(das, cell)}: best layer {int(best['layer'])}, IIA {best['iia']:.2f} "
                         f"(without intervention {best['no_intervention']:.2f})")
        out["das_iia.png"] = "DAS at the last analysed step: " + "; ".join(parts) + "."
    return out


def sections(run_dir: Path) -> list[Section]:
    run_dir = Path(run_dir)
    t, order = _tables(run_dir), _order(run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    p = presence(t["features"])
    das = t.get("das", pd.DataFrame())
    head = ["run", "size", "task", "steps", "last step", "test acc", "presence", "Spearman (presence, acc)",
            "DAS best layer", "DAS IIA"]
    table: list[list[Any]] = [head]
    for cell in [c for c in order if c in set(p["cell"])]:
        for task, rows in p[p["cell"] == cell].groupby("task", sort=False):
            last = rows.iloc[-1]
            d = das[(das["cell"] == cell) & (das["task"] == task)] if not das.empty else das
            d = d[d["step"] == d["step"].max()] if not d.empty else d
            best = d.loc[d["iia"].idxmax()] if not d.empty else None
            table.append([cell, str(last["size"]), task, str(len(rows)), str(int(last["step"])),
                          _fmt(last["test_acc"]), _fmt(last["presence"]), _fmt(spearman(rows["presence"],
                                                                                        rows["test_acc"])),
                          "-" if best is None else str(int(best["layer"])),
                          "-" if best is None else _fmt(best["iia"])])
    text = (f"Feature presence (paper Fig. 7, App. B.4) in {len(meta.get('runs', []))} run(s) of {meta.get('source')}, "
            f"at the checkpoints saved along training. Comparison: the held-out R² of the value order on the top "
            f"principal components at {_config(run_dir).get('position', 'tok1').upper()} (presence = the best "
            f"layer's); modular addition: the Fourier modes with P_k > 2 · 2/99 of the class means at TOK2, summed "
            f"over layers. DAS: a 1-D interchange intervention per layer (pyvene), accuracy on held-out "
            f"counterfactual pairs (1/2 = no effect).")
    drawn = [run_dir / name for name in FIGURES if (run_dir / name).is_file()]
    return [Section("Feature presence over training (Fig. 7)", text, figures=drawn, table=table,
                    captions=sentences(run_dir))]


def nested_figures(run_dir: Path) -> list[Path]:
    """The figures of run_dir/features, an analysis inside the run it analysed (none if there is none)."""
    inner = Path(run_dir) / "features"
    return figures(inner) if (inner / "features.parquet").is_file() else []


def nested_sections(run_dir: Path) -> list[Section]:
    """The sections of run_dir/features, titled as part of the run's page (none if there is none)."""
    inner = Path(run_dir) / "features"
    return sections(inner) if (inner / "features.parquet").is_file() else []


def _config(run_dir: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads((Path(run_dir) / "config.toml").read_text())


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)
