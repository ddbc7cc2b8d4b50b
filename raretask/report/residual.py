"""The report of a `raretask synth residual` run (raretask.synthetic.dynamics): Fig. 3 / 19 (rare-task signal
against the frequent set's residual), Theorem 4 along training, Fig. 21 (per-task loss), the phase diagrams; drawn
from the run directory alone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from raretask import runs
from raretask.config import load_config
from raretask.report import claims, scorecard
from raretask.report.html import Section, finished
from raretask.report.plotting import pyplot, save_figure
from raretask.report.synthetic import sweep_captions, sweep_figures
from raretask.synthetic.dynamics import PointTheory, ResidualConfig
from raretask.synthetic.mixture import Mixture
from raretask.synthetic.train import expand_grid, group_name, group_slug


def figures(run_dir: Path) -> list[Path]:
    """residual_signal.png (Fig. 3 / 19: one panel per grid point), theorem4.png, loss_curves*.png (Fig. 21), and the
    sweep's phase diagrams, from the run directory alone."""
    out = Path(run_dir)
    finished(out, "residual.parquet")
    cfg = load_config(ResidualConfig, out / "config.toml")
    base = cfg.synth()
    points = [(assign, PointTheory.of(point, cfg.residual.rare)) for assign, point in expand_grid(base)]
    table, thm4 = runs.read_table(out / "residual.parquet"), runs.read_table(out / "theorem4.parquet")
    curves = runs.read_table(out / "curves.parquet")
    paths = [residual_figure(table, points, cfg.sweep.widths, out / "residual_signal.png"),
             theorem4_figure(thm4, cfg.sweep.widths, out / "theorem4.png")]
    for assign, th in points:
        suffix = "" if len(points) == 1 else "_" + group_slug(assign)
        rows = [i for i in range(len(curves["task"])) if all(curves[k][i] == v for k, v in assign.items())]
        paths.append(loss_curves_figure(curves, rows, th.mixture, cfg.sweep.widths,
                                        f" ({group_name(assign)})" if assign else "", out / f"loss_curves{suffix}.png"))
    return paths + sweep_figures(runs.read_table(out / "results.parquet"), base, out)


def _width_colours(widths: list[int]) -> tuple[Any, Any]:
    from matplotlib import cm, colors

    norm = colors.LogNorm(vmin=min(widths), vmax=max(max(widths), min(widths) + 1))
    return cm.ScalarMappable(norm=norm, cmap="Greys"), lambda n: cm.Greys(0.25 + 0.75 * norm(n))


def residual_figure(table: dict[str, list], points: list[tuple[dict, PointTheory]], widths: list[int],
                    path: Path) -> Path:
    """s~ of the most frequent (o) and rare (^) task against delta_F, every (seed, width) cell; width by shade;
    dashed: delta*_F(N_r^crit), dotted: delta*_F(N_r^crit - 1). delta_F below a floor is drawn at the floor."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(points), figsize=(1.0 + 3.6 * len(points), 3.4), sharey=True, squeeze=False)
    mappable, colour = _width_colours(widths)
    for ax, (assign, th) in zip(axes[0], points):
        rows = [i for i in range(len(table["width"])) if all(table[k][i] == v for k, v in assign.items())]
        x = np.array([table["delta_F"][i] for i in rows])
        floor = max(th.threshold, x.max(initial=0.0), 1e-12) * 1e-4
        x = np.maximum(x, floor)
        c = [colour(table["width"][i]) for i in rows]
        ax.scatter(x, [table["signal_frequent"][i] for i in rows], c=c, marker="o", edgecolors="tab:blue",
                   label=f"most frequent ({th.mixture.names[th.frequent]})")
        ax.scatter(x, [table["signal_rare"][i] for i in rows], c=c, marker="^", edgecolors="tab:red",
                   label=f"rare ({th.mixture.names[th.rare]})")
        ax.axvline(max(th.threshold, floor), color="k", ls="--", lw=1, label="δ*_F(N_r^crit)")
        ax.axvline(max(th.threshold_upper, floor), color="0.4", ls=":", lw=1, label="δ*_F(N_r^crit − 1)")
        ax.set_xscale("log")
        ax.set_xlabel("residual δ_F")
        ax.set_title(f"{group_name(assign) + ': ' if assign else ''}N_r^crit = {th.critical_width}", fontsize=9)
    axes[0][0].set_ylabel("normalised signal s~ (end of training)")
    axes[0][0].legend(fontsize=7, loc="center left")
    _width_colorbar(fig, mappable, axes[0].tolist(), widths)
    return save_figure(fig, path)


def _width_colorbar(fig: Any, mappable: Any, axes: Any, widths: list[int]) -> None:
    bar = fig.colorbar(mappable, ax=axes, label="width N")
    bar.set_ticks(widths, labels=[str(n) for n in widths])
    bar.ax.minorticks_off()


def theorem4_figure(thm4: dict[str, list], widths: list[int], path: Path) -> Path:
    """Left: ||G_F(U)||_F (optimal decoders) against Theorem 4's bound at every evaluation of every cell; below y = x
    by Cauchy-Schwarz for any U, so it checks the code. Right: the scale-free gradient with the current decoders,
    ||G^D_F(U)||_F (see Theorem4), against the same bound: a measurement, free to cross y = x."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.2), sharex=True, sharey=True)
    mappable, colour = _width_colours(widths)
    b = np.array(thm4["grad_bound_F"])
    for ax, key, ratio_key, title in [(axes[0], "grad_norm_F", "ratio", "Theorem 4 (identity)"),
                                      (axes[1], "grad_applied_U_F", "ratio_applied", "current decoders")]:
        g = np.array(thm4[key], float)
        keep = (b > 0) & (g > 0)
        ax.scatter(b[keep], g[keep], s=8, c=[colour(n) for n, k in zip(thm4["width"], keep) if k], alpha=0.8)
        lim = [b[keep].min() * 0.8, b[keep].max() * 1.25] if keep.any() else [1e-6, 1.0]
        ax.plot(lim, lim, "k--", lw=1, label="bound = norm")
        ratio = np.array(thm4[ratio_key], float)
        ax.set_title(f"{title}: max ratio {ratio[np.isfinite(ratio)].max(initial=0.0):.3f}", fontsize=10)
        ax.set(xscale="log", yscale="log", xlabel="2 sqrt(λ1(M_F) δ_F(U))")
    axes[0].set_ylabel("||G_F(U)||_F (optimal decoders)")
    axes[1].set_ylabel("||G^D_F(U)||_F (current decoders)")
    axes[0].legend(fontsize=7)
    _width_colorbar(fig, mappable, axes.tolist(), widths)
    return save_figure(fig, path)


def loss_curves_figure(curves: dict[str, list], rows: list[int], mixture: Mixture, widths: list[int], title: str,
                       path: Path) -> Path:
    """Fig. 21: per-task normalised loss against step (log x) for each width, mean over seeds; task colour from
    orange (most frequent) to purple (rarest); grey: the mean predictor's 1."""
    plt = pyplot()
    cols = min(3, len(widths))
    nrows = -(-len(widths) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.6 * nrows), sharey=True, squeeze=False,
                             constrained_layout=True)
    order = sorted(range(mixture.num_tasks), key=lambda k: (-mixture.frequencies[k], k))
    cmap = plt.get_cmap("plasma_r")
    acc: dict[tuple[int, str], dict[int, list[float]]] = {}  # (width, task) -> step -> losses over seeds
    for i in rows:
        if curves["step"][i] > 0:  # log x
            cell = acc.setdefault((curves["width"][i], curves["task"][i]), {})
            cell.setdefault(curves["step"][i], []).append(curves["normalised_loss"][i])
    for ax, n in zip(axes.flat, widths):
        for rank, k in enumerate(order):
            by_step = acc.get((n, mixture.names[k]), {})
            steps = sorted(by_step)
            ax.plot(steps, [np.mean(by_step[s]) for s in steps], lw=1,
                    color=cmap(0.1 + 0.8 * rank / max(mixture.num_tasks - 1, 1)))
        ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # decades only: minor labels overlap
        ax.set_title(f"N = {n}", fontsize=9)
        ax.set_ylim(-0.05, 1.3)
    for ax in axes.flat[len(widths):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("normalised loss")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle(f"per-task loss along training{title}; orange = most frequent, purple = rarest", fontsize=9)
    return save_figure(fig, path)


def sections(run_dir: Path) -> list[Section]:
    """The report of a `synth residual` run directory."""
    run_dir = Path(run_dir)
    for name in ("residual.parquet", "summary.json"):
        finished(run_dir, name)
    s = json.loads((run_dir / "summary.json").read_text())
    head = ["grid", "width", "δ_F", "δ_F optimum", "δ_F vs thresholds", "s~ frequent", "s~ rare", "s rare (raw)",
            "rare learned / after δ_F ≤ δ*_F(N_r^crit - 1)", "max ratio, current decoders"]
    rows, texts = [head], []
    for p in s["points"]:
        grid = group_name(p.get("grid", {}))
        texts.append(f"{grid}: F = {{{', '.join(p['frequent_set'])}}}, rare task {p['rare_task']} (pi_r lambda_r1 = "
                     f"{p['rare_utility']:.3g}), N_r^crit = {p['critical_width']}, δ*_F(N_r^crit) = "
                     f"{p['threshold']:.3g}, δ*_F(N_r^crit - 1) = {p['threshold_upper']:.3g}, λ1(M_F) = "
                     f"{p.get('lambda1_F', math.nan):.3g}.")
        learned, after = p.get("rare_learned"), p.get("rare_after_residual")
        for j, n in enumerate(p["widths"]):
            d = p["delta_F"][j]
            side = ("above both" if d > p["threshold_upper"] else "between" if d > p["threshold"]
                    else "below ½" if d < 0.5 * p["threshold"] else "below")
            order = f"{learned[j]} / {after[j]}" if learned else "n/a"
            rows.append([grid, str(n), f"{d:.3g}", f"{p['theory_delta_F'][j]:.3g}", side,
                         _fmt(p["signal_frequent"][j]), _fmt(p["signal_rare"][j]),
                         _fmt(p.get("raw_signal_rare", [None] * len(p["widths"]))[j]), order,
                         _fmt(p.get("applied_max_ratio", [None] * len(p["widths"]))[j])])
    phase = sorted(run_dir.glob("phase_diagram*.png")) + [run_dir / "observed_vs_predicted.png"]
    order = s.get("rare_after_residual")  # absent from runs written before it was recorded
    order_text = "" if order is None else (
        f" Learning order: the rare task counts as risen once its raw signal s_r is half its top direction's share "
        f"of its variance above its step-0 value; it is learned in {order['rare_learned']} of {order['cells']} "
        f"cells, and in {order['after_residual']} of those it rose at or after the first evaluation with δ_F ≤ "
        f"δ*_F(N_r^crit - 1) ({order['rose_before_residual']} cells, learned or not, rose before). Columns "
        "step_residual, step_rare_rise, delta_F_at_rise of residual.parquet.")
    applied = s.get("applied_max_ratio")
    cfg = load_config(ResidualConfig, run_dir / "config.toml")
    phase_captions = sweep_captions(scorecard.synthetic_tables(cfg.synth(), runs.read_table(run_dir /
                                                                                          "results.parquet")))
    return [
        Section("Residual controls learning (Fig. 3 / 19)",
                "End of training, every (seed, width) cell: corrected signal s~ = (s - N/d) / (1 - N/d) of the most "
                "frequent and the rare task against the frequent set's residual δ_F; dashed line: the analytic "
                "threshold δ*_F(N_r^crit) (Cor. 5, Prop. 6), dotted: δ*_F(N_r^crit - 1), below which the width-N "
                "optimum takes the rare task's top direction. A cell holding nothing of the rare task has s~ = "
                "-N/(d - N), lower at larger N, so compare widths on the raw s_r column. Table: means over seeds; "
                "learned / after: numbers of seeds." + order_text + " " + " ".join(texts),
                figures=[run_dir / "residual_signal.png"], table=rows,
                captions={"residual_signal.png": " ".join(residual_sentence(p) for p in s["points"])}),
        Section("Theorem 4 along training",
                "Left: ||G_F(U)||_F, the frequent set's gradient at optimal decoders, against 2 sqrt(λ1(M_F) "
                f"δ_F(U)) at every evaluation of every cell; largest ratio {s['theorem4_max_ratio']:.4f}. This is an "
                "identity check, not an empirical result: by Cauchy-Schwarz the bound holds for every orthonormal "
                "U, so a ratio above 1 would mean a bug in the code, and it says nothing about training. Right: "
                "||G^D_F(U)||_F = ||2 (I - P_U) Σ_{k∈F} π_k A_kᵀ D_kᵀ W U||_F, the gradient the frequent tasks send "
                "the subspace with the decoders training actually has (equal to the left one at optimal decoders, "
                "unchanged by W -> cW, D -> D/c); the theorem does not bound it (decoders larger than optimal push "
                "it past the bound), so its ratio, largest " + ("n/a" if applied is None else f"{applied:.4f}") +
                ", is a measurement. theorem4.parquet also has "
                "the raw ||dL_F/dW||_F (grad_applied_F), which scales as 1/c under W -> cW, D -> D/c.",
                figures=[run_dir / "theorem4.png"],
                captions={"theorem4.png": f"Largest ratio to the bound: {s['theorem4_max_ratio']:.3f} at optimal "
                                          "decoders (at most 1 by construction), "
                                          + ("n/a" if applied is None else f"{applied:.3f}") +
                                          " with the decoders training has."}),
        Section("Per-task loss along training (Fig. 21)",
                "Tasks the width cannot hold stay at the mean predictor's normalised loss 1; the others fall to 0.",
                figures=sorted(run_dir.glob("loss_curves*.png")), captions=loss_curve_captions(cfg, run_dir)),
        Section("Phase diagrams (Fig. 2 / 13)", "Width x task normalised loss with the utility staircases N*_k(m).",
                figures=[f for f in phase if f.is_file()], captions=phase_captions),
    ]


def residual_sentence(p: dict[str, Any]) -> str:
    """Fig. 3 / 19 in words for one grid point of summary.json: the widths that learn the rare task and their δ_F
    against the threshold (raw s_r where the run predates the learned flag)."""
    grid = group_name(p.get("grid", {}))
    head = (f"{grid}: the" if p.get("grid") else "The") + f" rare task {p['rare_task']} "
    pairs = list(zip(p["widths"], p["delta_F"]))
    if p.get("rare_learned") is None:
        return head + "ends with raw s_r " + ", ".join(f"{_fmt(v)} (N = {n})" for n, v in
                                                       zip(p["widths"], p.get("raw_signal_rare", p["signal_rare"])))
    yes = [(n, d) for (n, d), k in zip(pairs, p["rare_learned"]) if k]
    no = [(n, d) for (n, d), k in zip(pairs, p["rare_learned"]) if not k]

    def listed(cells: list[tuple[int, float]]) -> str:
        return "no width" if not cells else (f"N = {', '.join(str(n) for n, _ in cells)} (δ_F "
                                             f"{', '.join(f'{d:.3g}' for _, d in cells)})")

    return (head + f"is learned (in some seed) at {listed(yes)} and not at {listed(no)}; δ*_F(N_r^crit) = "
            f"{p['threshold']:.3g}, δ*_F(N_r^crit - 1) = {p['threshold_upper']:.3g}.")


def loss_curve_captions(cfg: ResidualConfig, run_dir: Path) -> dict[str, str]:
    """Fig. 21 in words, per grid point: how many tasks end below half the mean predictor's loss at each width."""
    curves = runs.read_table(run_dir / "curves.parquet")
    points = list(expand_grid(cfg.synth()))
    out = {}
    for assign, point in points:
        rows = [i for i in range(len(curves["task"])) if all(curves[k][i] == v for k, v in assign.items())]
        last = max((curves["step"][i] for i in rows), default=0)
        final = claims.means(curves, ("width", "task"), "normalised_loss",
                                [i for i in rows if curves["step"][i] == last])
        tasks = point.mixture.build().num_tasks
        below = ", ".join(f"{sum(1 for (w, _), v in final.items() if w == n and v < 0.5)} of {tasks} at N = {n}"
                          for n in cfg.sweep.widths)
        suffix = "" if len(points) == 1 else "_" + group_slug(assign)
        out[f"loss_curves{suffix}.png"] = f"At step {last}, tasks below normalised loss 0.5 (mean over seeds): {below}."
    return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
