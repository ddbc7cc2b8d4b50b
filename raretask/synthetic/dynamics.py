"""Residual controls learning (paper Sec. 3.2: Theorem 4, Corollary 5, Proposition 6; Fig. 3 / 19, App. D Fig. 15),
and the per-task loss along training (Fig. 21).

    cfg = load_config(ResidualConfig, "configs/synthetic/residual.toml")
    result = run_residual(cfg, Path("runs/residual"))     # `raretask synth residual CONFIG --out DIR`
    result.summary()

A residual config is a synthetic sweep config (every key of `raretask synth keys`) plus an optional [residual] table,
so any `synth run` config runs here too. Its width sweep (and grid, e.g. over the Zipf exponent beta) trains with the
batched sweep trainer. At the end of training, for every (grid point, seed, width), against the analytic threshold:

  delta_F      the frequent set's residual Tr((I - P_U) M_F), M_F = sum_{k in F} pi_k C_k, F the smallest top-frequency
               task set with mass >= eval.frequent_mass
  s~_f, s~_r   the corrected signal of the most frequent task f and of the rare task r (`residual.rare`)
  threshold    delta*_F(N_r^crit) = sum_{i > N_r^crit} mu^F_i (Cor. 5), N_r^crit = min{N : mu^F_N <= pi_r lambda_r1}
               (Prop. 6; r's top direction is the one that invades first)

Theory (orthogonal tasks): the rare task's top direction is kept at the width-N optimum only once every frequent
direction of higher utility is kept, i.e. once delta_F <= delta*_F(N_r^crit - 1) = threshold + mu^F_{N_r^crit}
(`threshold_upper`); the paper draws delta*_F(N_r^crit), the residual once the first frequent direction below the
rare one is kept as well. Other infrequent tasks compete too, so delta_F <= threshold_upper is necessary for
learning r, not sufficient. Prop. 6 takes r orthogonal to the frequent block (placement = "orthogonal"); with random
placement the thresholds are computed the same way from M_F's spectrum and are approximate.

Theorem 4 along training: at every evaluation and for every cell, ||G_F(U)||_F, G_F(U) = 2 (I - P_U) M_F U with U
an orthonormal basis of the encoder's row space, against its bound 2 sqrt(lambda_1(M_F) delta_F(U)).

DIR/residual.parquet  one row per (grid point,) seed x width: delta_F (trained and at the optimum), s~ and s of the
                      frequent and rare task, threshold, threshold_upper, N_r^crit, max Theorem-4 ratio over training
DIR/theorem4.parquet  one row per (grid point,) seed x width x evaluation step: ||G_F||_F, the bound, their ratio
DIR/results.parquet, curves.parquet, phase diagrams: as `synth run` (curves carry grad_norm_F, grad_bound_F)
DIR/residual_signal.png (Fig. 3 / 19), theorem4.png, loss_curves*.png (Fig. 21); summary.json (the --json object)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raretask import runs, theory
from raretask.config import Config, ConfigError, option
from raretask.synthetic.mixture import Mixture
from raretask.synthetic.model import SweepStudent
from raretask.synthetic.train import (SweepResult, SynthConfig, _null, _progress, expand_grid, grid_point, group_name,
                                      group_slug, resolve_device)

RAREST, LOWEST_UTILITY = "rarest", "lowest_utility"


@dataclass
class ResidualOptions(Config):
    rare: str = option(LOWEST_UTILITY, "the rare task r: lowest_utility (outside F, smallest pi_k Tr(C_k): the "
                                       "paper's lowest aggregate utility), rarest (smallest pi_k), or a task name")


@dataclass
class ResidualConfig(SynthConfig):
    residual: ResidualOptions = option(factory=ResidualOptions, doc="the residual analysis")

    def synth(self) -> SynthConfig:
        """The sweep to train: this config without its [residual] table."""
        return SynthConfig.from_dict({k: v for k, v in self.to_dict().items() if k != "residual"})

    def validate(self, path: str = "") -> None:
        for key in self.sweep.grid:
            if key.split(".")[0] == "residual":
                raise ConfigError(f"sweep.{key}: the analysis options cannot be swept (one rare task per run)")
        base = self.synth()
        base.validate()
        for _, point in expand_grid(base):  # the rare task must exist, outside F, at every grid point
            PointTheory.of(point, self.residual.rare)


# --------------------------------------------------------------------------------------------------------- theory


def pick_rare(mixture: Mixture, choice: str, frequent: list[int]) -> int:
    """Index of the rare task named by `choice` (see ResidualOptions.rare); ties go to the later task."""
    K = mixture.num_tasks
    if choice == RAREST:
        k = min(range(K), key=lambda i: (mixture.frequencies[i], -i))
    elif choice == LOWEST_UTILITY:
        outside = [i for i in range(K) if i not in frequent] or list(range(K))  # all in F: reported below
        k = min(outside, key=lambda i: (mixture.frequencies[i] * mixture.traces[i], -i))
    elif choice in mixture.names:
        k = mixture.names.index(choice)
    else:
        names = ", ".join(mixture.names[:6]) + (", ..." if K > 6 else "")
        raise ConfigError(f"residual.rare: no task named {choice!r} (tasks: {names}; or {RAREST}, {LOWEST_UTILITY})")
    if k in frequent:
        raise ConfigError(f"residual.rare: task {mixture.names[k]!r} is in the frequent set F = "
                          f"{{{', '.join(mixture.names[i] for i in frequent)}}} (pick a rarer task or lower "
                          f"eval.frequent_mass)")
    return k


@dataclass
class PointTheory:
    """The closed-form side of one grid point: F, mu^F, the frequent and rare task, N_r^crit and the thresholds."""

    mixture: Mixture
    F: list[int]
    mu_F: np.ndarray  # eigenvalues of M_F, high to low
    frequent: int  # the most frequent task (ties: the earlier)
    rare: int
    rare_utility: float  # pi_r lambda_r1
    critical_width: int  # N_r^crit
    threshold: float  # delta*_F(N_r^crit)
    threshold_upper: float  # delta*_F(N_r^crit - 1)

    @classmethod
    def of(cls, cfg: SynthConfig, rare: str) -> PointTheory:
        mixture = cfg.mixture.build()
        F = mixture.frequent_set(cfg.eval.frequent_mass)
        if mixture.orthogonal:  # M_F's eigenvalues are the frequent tasks' utilities: no d x d eigensolve
            mu_F = np.sort(np.concatenate([mixture.frequencies[k] * mixture.eigenvalues[k] for k in F]))[::-1]
        else:
            mu_F = theory.spectrum(mixture.mixture_covariance(F))
        r = pick_rare(mixture, rare, F)
        u_r = float(mixture.frequencies[r] * mixture.eigenvalues[r][0])
        n_crit = theory.critical_width(mu_F, u_r)
        return cls(mixture=mixture, F=F, mu_F=mu_F, frequent=int(np.argmax(mixture.frequencies)), rare=r,
                   rare_utility=u_r, critical_width=n_crit, threshold=theory.residual_threshold(mu_F, n_crit),
                   threshold_upper=theory.residual_threshold(mu_F, n_crit - 1))

    def optimum_residual(self, widths: list[int]) -> np.ndarray:
        """delta_F of the width-N optimum of the whole mixture (Theorem 3): sum_{k in F} pi_k l*_k(N). (len(widths),)"""
        losses = self.mixture.theory_losses(widths)  # (K, W)
        return (self.mixture.frequencies[self.F, None] * losses[self.F]).sum(0)


class Theorem4:
    """The `on_eval` hook of train_group: ||G_F(U)||_F and 2 sqrt(lambda_1(M_F) delta_F(U)) for every cell, float64.

    M_F = A_F^T A_F with A_F the stacked sqrt(pi_k) A_k, k in F, so nothing d x d is formed; delta_F(U) is computed
    as ||A_F (I - P_U)||_F^2 rather than Tr(M_F) - Tr(U^T M_F U), which cancels once the residual is small."""

    def __init__(self, mixture: Mixture, F: list[int], device: torch.device):
        A_F = np.concatenate([np.sqrt(mixture.frequencies[k]) * mixture.teacher(k) for k in F])  # (R_F, d)
        self.A_F = torch.as_tensor(A_F, dtype=torch.float64, device=device)
        self.lambda1 = float(theory.spectrum(A_F.T @ A_F)[0])

    @torch.no_grad()
    def __call__(self, step: int, student: SweepStudent) -> dict[str, np.ndarray]:
        S, C = student.num_cells
        norm, bound = np.zeros((S, C)), np.zeros((S, C))
        for c, n in enumerate(student.widths):
            o = student.starts[c]
            W = student.encoder.detach()[:, o:o + n].double()  # (S, N, d)
            _, sv, vh = torch.linalg.svd(W, full_matrices=False)  # rows of vh: U^T, an orthonormal row-space basis
            Ut = vh * (sv > 1e-7 * sv.amax(-1, keepdim=True).clamp_min(1e-300))[..., None]  # (S, N, d)
            AU = torch.einsum("rd,snd->srn", self.A_F, Ut)  # (S, R_F, N)   A_F U
            MU = torch.einsum("rd,srn->sdn", self.A_F, AU)  # (S, d, N)     M_F U
            G = 2 * (MU - torch.einsum("snd,snm->sdm", Ut, torch.einsum("snd,sdm->snm", Ut, MU)))  # (I - P_U) M_F U
            delta = (self.A_F - torch.einsum("srn,snd->srd", AU, Ut)).square().sum((1, 2))  # (S,)
            norm[:, c] = G.square().sum((1, 2)).sqrt().cpu().numpy()
            bound[:, c] = (2 * (self.lambda1 * delta).sqrt()).cpu().numpy()
        return {"grad_norm_F": norm, "grad_bound_F": bound}


def bound_ratio(norm: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """||G_F||_F / bound (Theorem 4 says <= 1); 0 where both vanish (U spans all of M_F)."""
    norm, bound = np.asarray(norm, float), np.asarray(bound, float)
    return np.where(bound > 0, norm / np.maximum(bound, 1e-300), np.where(norm > 0, np.inf, 0.0))


# ------------------------------------------------------------------------------------------------------------ run


@dataclass
class ResidualResult:
    out: Path
    config: ResidualConfig
    table: dict[str, list]  # residual.parquet
    points: list[tuple[dict[str, Any], PointTheory]]

    def summary(self) -> dict[str, Any]:
        """The `--json` object: per grid point the thresholds and, per width (means over seeds), delta_F, s~ of the
        frequent and rare task, and the largest Theorem-4 ratio over seeds and training."""
        t, widths = self.table, self.config.sweep.widths
        out_points = []
        for assign, th in self.points:
            rows = [i for i in range(len(t["width"])) if all(t[k][i] == v for k, v in assign.items())]

            def per_width(key: str, reduce: Any = np.mean) -> list[float | None]:
                return [_finite(reduce([t[key][i] for i in rows if t["width"][i] == n])) for n in widths]

            names = th.mixture.names
            entry = {"frequent_set": [names[k] for k in th.F], "frequent_task": names[th.frequent],
                     "rare_task": names[th.rare], "rare_utility": th.rare_utility,
                     "critical_width": th.critical_width, "threshold": th.threshold,
                     "threshold_upper": th.threshold_upper, "widths": widths, "delta_F": per_width("delta_F"),
                     "theory_delta_F": per_width("theory_delta_F"), "signal_frequent": per_width("signal_frequent"),
                     "signal_rare": per_width("signal_rare"),
                     "theorem4_max_ratio": per_width("theorem4_max_ratio", np.max)}
            out_points.append({"grid": assign, **entry} if self.config.sweep.grid else entry)
        return {"out": str(self.out), "points": out_points, "theorem4_max_ratio": _finite(max(t["theorem4_max_ratio"]))}


def run_residual(cfg: ResidualConfig, out: Path, *, progress: bool = True, overwrite: bool = False) -> ResidualResult:
    """Train the config's sweep (resuming a killed run, skipping finished grid points), then tabulate and draw."""
    out = Path(out)
    base = cfg.synth()
    device = resolve_device(base.train.device)  # a missing CUDA device is a user error: before anything is written
    points = [(assign, point, PointTheory.of(point, cfg.residual.rare)) for assign, point in expand_grid(base)]
    runs.prepare_run_dir(out, cfg.to_toml(), overwrite=overwrite)
    meta = runs.RunMeta(out, kind="synth.residual", seeds=base.sweep.seeds, widths=base.sweep.widths,
                        device=str(device), torch_threads=torch.get_num_threads())
    results, curves, timings = [], [], {}
    bar = _progress() if progress else None
    with bar or _null():
        for assign, point, th in points:
            res, cur = grid_point(assign, point, out, bar, timings, on_eval=Theorem4(th.mixture, th.F, device))
            results.append(res)
            curves.append(cur)
    all_res, all_cur = runs.concat_columns(results), runs.concat_columns(curves)
    runs.write_table(out / "results.parquet", all_res)
    runs.write_table(out / "curves.parquet", all_cur)
    thm4 = theorem4_table(all_cur, base)
    table = residual_table(all_res, thm4, [(a, th) for a, _, th in points], base)
    runs.write_table(out / "theorem4.parquet", thm4)
    runs.write_table(out / "residual.parquet", table)
    result = ResidualResult(out=out, config=cfg, table=table, points=[(a, th) for a, _, th in points])
    draw(result, all_cur, thm4)
    from raretask.report.synthetic import sweep_figures

    sweep_figures(all_res, base, out)
    runs.write_json(out / "summary.json", result.summary())
    meta.finish(groups=timings)
    return result


def theorem4_table(curves: dict[str, list], cfg: SynthConfig) -> dict[str, list]:
    """One row per (grid point,) seed x width x step from the curves (whose rows repeat per task)."""
    keys = list(cfg.sweep.grid)
    first = [i for i in range(len(curves["task"])) if curves["task"][i] == curves["task"][0]]
    cols = {k: [curves[k][i] for i in first] for k in keys + ["seed", "width", "step", "grad_norm_F", "grad_bound_F"]}
    cols["delta_F"] = [curves["residual"][i] for i in first]
    cols["ratio"] = bound_ratio(cols["grad_norm_F"], cols["grad_bound_F"]).tolist()
    return cols


def residual_table(results: dict[str, list], thm4: dict[str, list], points: list[tuple[dict, PointTheory]],
                   cfg: SynthConfig) -> dict[str, list]:
    """residual.parquet: one row per (grid point,) seed x width at the end of training."""
    keys, widths = list(cfg.sweep.grid), cfg.sweep.widths
    cols: dict[str, list] = {k: [] for k in keys + [
        "seed", "width", "delta_F", "theory_delta_F", "frequent_task", "signal_frequent", "raw_signal_frequent",
        "rare_task", "signal_rare", "raw_signal_rare", "rare_utility", "critical_width", "threshold",
        "threshold_upper", "theorem4_max_ratio"]}
    for assign, th in points:
        names, optimum = th.mixture.names, dict(zip(widths, th.optimum_residual(widths)))
        rows = {(results["seed"][i], results["width"][i], results["task"][i]): i for i in range(len(results["task"]))
                if all(results[k][i] == v for k, v in assign.items())}  # == not hashing: grid values may be lists
        worst: dict[tuple[int, int], float] = {}
        for i in range(len(thm4["width"])):
            if all(thm4[k][i] == v for k, v in assign.items()):
                cell = (thm4["seed"][i], thm4["width"][i])
                worst[cell] = max(worst.get(cell, 0.0), thm4["ratio"][i])
        for seed in cfg.sweep.seeds:
            for n in widths:
                f, r = rows[(seed, n, names[th.frequent])], rows[(seed, n, names[th.rare])]
                for k, v in assign.items():
                    cols[k].append(v)
                values = [seed, n, results["residual"][f], float(optimum[n]), names[th.frequent],
                          results["signal_corrected"][f], results["signal"][f], names[th.rare],
                          results["signal_corrected"][r], results["signal"][r], th.rare_utility, th.critical_width,
                          th.threshold, th.threshold_upper, worst[(seed, n)]]
                for k, v in zip(list(cols)[len(keys):], values):
                    cols[k].append(v)
    return cols


# -------------------------------------------------------------------------------------------------------- figures


def draw(result: ResidualResult, curves: dict[str, list], thm4: dict[str, list]) -> list[Path]:
    """residual_signal.png (Fig. 3 / 19: one panel per grid point), theorem4.png, loss_curves*.png (Fig. 21)."""
    out, cfg = result.out, result.config
    paths = [residual_figure(result.table, result.points, cfg.sweep.widths, out / "residual_signal.png"),
             theorem4_figure(thm4, cfg.sweep.widths, out / "theorem4.png")]
    for assign, th in result.points:
        suffix = "" if len(result.points) == 1 else "_" + group_slug(assign)
        rows = [i for i in range(len(curves["task"])) if all(curves[k][i] == v for k, v in assign.items())]
        paths.append(loss_curves_figure(curves, rows, th.mixture, cfg.sweep.widths,
                                        f" ({group_name(assign)})" if assign else "", out / f"loss_curves{suffix}.png"))
    return paths


def _width_colours(widths: list[int]) -> tuple[Any, Any]:
    from matplotlib import cm, colors

    norm = colors.LogNorm(vmin=min(widths), vmax=max(max(widths), min(widths) + 1))
    return cm.ScalarMappable(norm=norm, cmap="Greys"), lambda n: cm.Greys(0.25 + 0.75 * norm(n))


def residual_figure(table: dict[str, list], points: list[tuple[dict, PointTheory]], widths: list[int],
                    path: Path) -> Path:
    """s~ of the most frequent (o) and rare (^) task against delta_F, every (seed, width) cell; width by shade;
    dashed: delta*_F(N_r^crit), dotted: delta*_F(N_r^crit - 1). delta_F below a floor is drawn at the floor."""
    from raretask.report.plotting import pyplot as _plt, save_figure as _save

    plt = _plt()
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
    return _save(fig, path)


def _width_colorbar(fig: Any, mappable: Any, axes: Any, widths: list[int]) -> None:
    bar = fig.colorbar(mappable, ax=axes, label="width N")
    bar.set_ticks(widths, labels=[str(n) for n in widths])
    bar.ax.minorticks_off()


def theorem4_figure(thm4: dict[str, list], widths: list[int], path: Path) -> Path:
    """||G_F(U)||_F against Theorem 4's bound at every evaluation of every cell; the bound holds below y = x."""
    from raretask.report.plotting import pyplot as _plt, save_figure as _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    mappable, colour = _width_colours(widths)
    b, g = np.array(thm4["grad_bound_F"]), np.array(thm4["grad_norm_F"])
    keep = (b > 0) & (g > 0)
    ax.scatter(b[keep], g[keep], s=8, c=[colour(n) for n, k in zip(thm4["width"], keep) if k], alpha=0.8)
    lim = [b[keep].min() * 0.8, b[keep].max() * 1.25] if keep.any() else [1e-6, 1.0]
    ax.plot(lim, lim, "k--", lw=1, label="bound = norm")
    ax.set(xscale="log", yscale="log", xlabel="2 sqrt(λ1(M_F) δ_F(U))", ylabel="||G_F(U)||_F")
    ratio = np.array(thm4["ratio"])
    ax.set_title(f"Theorem 4: max ratio {ratio[np.isfinite(ratio)].max(initial=0.0):.3f}", fontsize=10)
    ax.legend(fontsize=7)
    _width_colorbar(fig, mappable, ax, widths)
    return _save(fig, path)


def loss_curves_figure(curves: dict[str, list], rows: list[int], mixture: Mixture, widths: list[int], title: str,
                       path: Path) -> Path:
    """Fig. 21: per-task normalised loss against step (log x) for each width, mean over seeds; task colour from
    orange (most frequent) to purple (rarest); grey: the mean predictor's 1."""
    from raretask.report.plotting import pyplot as _plt, save_figure as _save

    plt = _plt()
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
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------------- report


def residual_sections(run_dir: Path) -> list[Any]:
    """The report of a `synth residual` run directory."""
    import json

    from raretask.report.html import Section

    run_dir = Path(run_dir)
    for name in ("residual.parquet", "summary.json"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{run_dir}: no {name} (is the run finished?)")
    s = json.loads((run_dir / "summary.json").read_text())
    head = ["grid", "width", "δ_F", "δ_F optimum", "s~ frequent", "s~ rare", "δ_F vs threshold", "max Thm-4 ratio"]
    rows, texts = [head], []
    for p in s["points"]:
        grid = group_name(p.get("grid", {}))
        texts.append(f"{grid}: F = {{{', '.join(p['frequent_set'])}}}, rare task {p['rare_task']} (pi_r lambda_r1 = "
                     f"{p['rare_utility']:.3g}), N_r^crit = {p['critical_width']}, δ*_F(N_r^crit) = "
                     f"{p['threshold']:.3g}, δ*_F(N_r^crit - 1) = {p['threshold_upper']:.3g}.")
        for j, n in enumerate(p["widths"]):
            d = p["delta_F"][j]
            side = "above" if d > p["threshold"] else "below ½" if d < 0.5 * p["threshold"] else "below"
            rows.append([grid, str(n), f"{d:.3g}", f"{p['theory_delta_F'][j]:.3g}", _fmt(p["signal_frequent"][j]),
                         _fmt(p["signal_rare"][j]), side, f"{p['theorem4_max_ratio'][j]:.3f}"])
    phase = sorted(run_dir.glob("phase_diagram*.png")) + [run_dir / "observed_vs_predicted.png"]
    return [
        Section("Residual controls learning (Fig. 3 / 19)",
                "End of training, every (seed, width) cell: corrected signal of the most frequent and the rare task "
                "against the frequent set's residual δ_F; dashed line: the analytic threshold δ*_F(N_r^crit) "
                "(Cor. 5, Prop. 6). Table: means over seeds. " + " ".join(texts),
                figures=[run_dir / "residual_signal.png"], table=rows),
        Section("Theorem 4 along training",
                f"||G_F(U)||_F against 2 sqrt(λ1(M_F) δ_F(U)) at every evaluation of every cell; largest ratio "
                f"{s['theorem4_max_ratio']:.4f} (the theorem says <= 1).", figures=[run_dir / "theorem4.png"]),
        Section("Per-task loss along training (Fig. 21)",
                "Tasks the width cannot hold stay at the mean predictor's normalised loss 1; the others fall to 0.",
                figures=sorted(run_dir.glob("loss_curves*.png"))),
        Section("Phase diagrams (Fig. 2 / 13)", "Width x task normalised loss with the utility staircases N*_k(m).",
                figures=[f for f in phase if f.is_file()]),
    ]


def _finite(v: float) -> float | None:
    """JSON has no NaN or inf: s~ is undefined at N = d; a ratio is inf if the bound vanishes and the norm does not."""
    return float(v) if math.isfinite(v) else None


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
