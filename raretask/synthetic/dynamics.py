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

Along training, at every evaluation and for every cell (class Theorem4):

  Theorem 4     ||G_F(U)||_F, G_F(U) = 2 (I - P_U) M_F U with U an orthonormal basis of the encoder's row space,
                against 2 sqrt(lambda_1(M_F) delta_F(U)). This is an IDENTITY check: the bound holds for every
                orthonormal U (Cauchy-Schwarz), so it tests this code, not the training.
  applied       what can fail: the gradient of L_F with the current decoders, raw ||dL_F/dW||_F (scale-dependent:
                W -> cW, D -> D/c divides it by c) and its scale-free form ||G^D_F(U)||_F (equal to ||G_F(U)||_F at
                optimal decoders, not bounded otherwise), each over the same bound.
  order         the first evaluation with delta_F <= threshold_upper and the first at which the rare task's raw
                signal s_r has risen (learning_order): does r rise only after the frequent residual is low enough?

DIR/residual.parquet  one row per (grid point,) seed x width: delta_F (trained and at the optimum), s~ and s of the
                      frequent and rare task, threshold, threshold_upper, N_r^crit, lambda1_F = lambda_1(M_F), the
                      largest Theorem-4 and applied-gradient ratios over training, and the learning order
                      (step_residual, step_rare_rise, delta_F_at_rise, rare_learned, rare_after_residual)
DIR/theorem4.parquet  one row per (grid point,) seed x width x evaluation step: ||G_F||_F, the bound, their ratio,
                      the applied gradient (raw and scale-free) and its ratios
DIR/results.parquet, curves.parquet, phase diagrams: as `synth run` (curves carry grad_norm_F, grad_bound_F,
                      grad_applied_F, grad_applied_U_F)
DIR/summary.json     the --json object
The figures (residual_signal.png: Fig. 3 / 19, theorem4.png, loss_curves*.png: Fig. 21, phase diagrams) are drawn
from these tables by raretask.report.residual.
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
from raretask.devices import choose_threads, resolve_device, torch_threads
from raretask.progress import progress_bar
from raretask.synthetic.mixture import Mixture
from raretask.synthetic.model import SweepStudent
from raretask.synthetic.train import SynthConfig, expand_grid, grid_point

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
    """The `on_eval` hook of train_group: for every cell, in float64,

      grad_norm_F       ||G_F(U)||_F, G_F(U) = 2 (I - P_U) M_F U, U an orthonormal basis of the encoder's row space:
                        Theorem 4's gradient, i.e. the one the frequent set sends the subspace at OPTIMAL decoders
      grad_bound_F      Theorem 4's bound 2 sqrt(lambda_1(M_F) delta_F(U))
      grad_applied_F    ||dL_F/dW||_F, L_F(W, D) = sum_{k in F} pi_k ||A_k - D_k^T W||_F^2 (the expected frequent-set
                        loss): the raw gradient the frequent tasks send the encoder with its CURRENT decoders (before
                        Adam's scaling and clipping). It depends on the parametrisation: W -> cW, D -> D/c leaves
                        every prediction unchanged and divides it by c.
      grad_applied_U_F  ||G^D_F(U)||_F, G^D_F(U) = 2 (I - P_U) sum_{k in F} pi_k A_k^T E_k, E_k = D_k^T W U: the same
                        gradient made scale-free, the one compared with the bound.

    Why G^D_F(U): the student's map for task k is D_k^T W = E_k U^T, E_k its decoder written in the basis U. As a
    function of U at fixed E, L_F has the Grassmann gradient -G^D_F(U) = (I - P_U) (dL_F/dW)^T W U: the part of the raw
    gradient orthogonal to the row space (the only part that rotates span(W)), with the encoder's scale taken out.
    It depends only on span(W) and the predictions, so W -> A W, D_k -> A^-T D_k (A invertible, c I among them)
    leaves it unchanged, and with optimal decoders (D_k^T W = A_k P_W, so E_k = A_k U) it is exactly G_F(U).

    What can fail and what cannot: ||G_F(U)||_F <= 2 sqrt(lambda_1 delta_F) holds for EVERY orthonormal U (Cauchy-
    Schwarz: ||(I - P_U) A_F^T A_F U||_F <= ||(I - P_U) A_F^T||_F ||A_F U||_2), so grad_norm_F <= grad_bound_F is an
    identity that checks this code, not the training. grad_applied_U_F obeys the same inequality with ||A_F U||_2
    replaced by the stacked current decoders' ||sqrt(pi_k) E_k||_2, which training does not bound by
    sqrt(lambda_1): decoders larger than optimal push it past the bound, so its ratio is a measurement.

    M_F = A_F^T A_F with A_F the stacked sqrt(pi_k) A_k, k in F, so nothing d x d is formed; delta_F(U) is computed
    as ||A_F (I - P_U)||_F^2 rather than Tr(M_F) - Tr(U^T M_F U), which cancels once the residual is small."""

    def __init__(self, mixture: Mixture, F: list[int], device: torch.device):
        A_F = np.concatenate([np.sqrt(mixture.frequencies[k]) * mixture.teacher(k) for k in F])  # (R_F, d)
        self.A_F = torch.as_tensor(A_F, dtype=torch.float64, device=device)
        self.lambda1 = float(theory.spectrum(A_F.T @ A_F)[0])
        self.F = list(F)
        self.A = torch.as_tensor(mixture.teachers()[F], dtype=torch.float64, device=device)  # (|F|, r_max, d)
        self.pi = torch.as_tensor(mixture.frequencies[F], dtype=torch.float64, device=device)[:, None, None]

    @torch.no_grad()
    def __call__(self, step: int, student: SweepStudent) -> dict[str, np.ndarray]:
        S, C = student.num_cells
        norm, bound, raw, scale_free = (np.zeros((S, C)) for _ in range(4))
        for c, n in enumerate(student.widths):
            o = student.starts[c]
            W = student.encoder.detach()[:, o:o + n].double()  # (S, N, d)
            D = student.decoder.detach()[:, self.F, o:o + n].double()  # (S, |F|, N, r)
            _, sv, vh = torch.linalg.svd(W, full_matrices=False)  # rows of vh: U^T, an orthonormal row-space basis
            Ut = vh * (sv > 1e-7 * sv.amax(-1, keepdim=True).clamp_min(1e-300))[..., None]  # (S, N, d)
            AU = torch.einsum("rd,snd->srn", self.A_F, Ut)  # (S, R_F, N)   A_F U
            MU = torch.einsum("rd,srn->sdn", self.A_F, AU)  # (S, d, N)     M_F U
            G = 2 * (MU - torch.einsum("snd,snm->sdm", Ut, torch.einsum("snd,sdm->snm", Ut, MU)))  # (I - P_U) M_F U
            delta = (self.A_F - torch.einsum("srn,snd->srd", AU, Ut)).square().sum((1, 2))  # (S,)
            norm[:, c] = G.square().sum((1, 2)).sqrt().cpu().numpy()
            bound[:, c] = (2 * (self.lambda1 * delta).sqrt()).cpu().numpy()
            E = torch.einsum("sknr,snd->skrd", D, W) - self.A  # (S, |F|, r, d)   D_k^T W - A_k
            g_W = 2 * torch.einsum("sknr,skrd->snd", self.pi * D, E)  # (S, N, d)   dL_F/dW
            raw[:, c] = g_W.square().sum((1, 2)).sqrt().cpu().numpy()
            DWU = torch.einsum("sknr,snm->skrm", D, torch.einsum("snd,smd->snm", W, Ut))  # (S, |F|, r, N)  E_k
            ZU = torch.einsum("krd,skrm->sdm", self.pi * self.A, DWU)  # (S, d, N)   sum_k pi_k A_k^T E_k
            GD = 2 * (ZU - torch.einsum("snd,snm->sdm", Ut, torch.einsum("snd,sdm->snm", Ut, ZU)))  # G^D_F(U)
            scale_free[:, c] = GD.square().sum((1, 2)).sqrt().cpu().numpy()
        return {"grad_norm_F": norm, "grad_bound_F": bound, "grad_applied_F": raw, "grad_applied_U_F": scale_free}


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
        """The `--json` object: per grid point the thresholds and, per width (means over seeds), delta_F, s~ and raw s
        of the frequent and rare task, the largest gradient ratios over seeds and training (Theorem 4's: an identity;
        the applied gradient's: a measurement), and per width the number of seeds where the rare task is learned and
        where its rise came after delta_F <= threshold_upper; totals of both over the run."""
        t, widths = self.table, self.config.sweep.widths
        out_points = []
        for assign, th in self.points:
            rows = [i for i in range(len(t["width"])) if all(t[k][i] == v for k, v in assign.items())]

            def per_width(key: str, reduce: Any = np.mean) -> list[float | None]:
                return [_finite(reduce([t[key][i] for i in rows if t["width"][i] == n])) for n in widths]

            def count(key: str) -> list[int]:
                return [sum(t[key][i] is True for i in rows if t["width"][i] == n) for n in widths]

            names = th.mixture.names
            entry = {"frequent_set": [names[k] for k in th.F], "frequent_task": names[th.frequent],
                     "rare_task": names[th.rare], "rare_utility": th.rare_utility,
                     "critical_width": th.critical_width, "threshold": th.threshold,
                     "threshold_upper": th.threshold_upper, "lambda1_F": float(th.mu_F[0]),
                     "rise_level": rise_level(th), "widths": widths, "delta_F": per_width("delta_F"),
                     "theory_delta_F": per_width("theory_delta_F"), "signal_frequent": per_width("signal_frequent"),
                     "signal_rare": per_width("signal_rare"), "raw_signal_rare": per_width("raw_signal_rare"),
                     "theorem4_max_ratio": per_width("theorem4_max_ratio", np.max),
                     "applied_max_ratio": per_width("applied_max_ratio", np.max),
                     "applied_raw_max_ratio": per_width("applied_raw_max_ratio", np.max),
                     "rare_learned": count("rare_learned"), "rare_after_residual": count("rare_after_residual")}
            out_points.append({"grid": assign, **entry} if self.config.sweep.grid else entry)
        learned = [i for i in range(len(t["width"])) if t["rare_learned"][i]]
        return {"out": str(self.out), "points": out_points, "theorem4_max_ratio": _finite(max(t["theorem4_max_ratio"])),
                "applied_max_ratio": _finite(np.max(t["applied_max_ratio"])),
                "rare_after_residual": {"cells": len(t["width"]), "rare_learned": len(learned),
                                        "after_residual": sum(t["rare_after_residual"][i] is True for i in learned),
                                        "rose_before_residual": sum(v is False for v in t["rare_after_residual"])}}


def run_residual(cfg: ResidualConfig, out: Path, *, progress: bool = True, overwrite: bool = False) -> ResidualResult:
    """Train the config's sweep (resuming a killed run, skipping finished grid points), then tabulate."""
    out = Path(out)
    base = cfg.synth()
    device = resolve_device(base.train.device)  # a missing CUDA device is a user error: before anything is written
    points = [(assign, point, PointTheory.of(point, cfg.residual.rare)) for assign, point in expand_grid(base)]
    runs.prepare_run_dir(out, cfg.to_toml(), overwrite=overwrite)
    threads = choose_threads(base.train.threads)
    meta = runs.RunMeta(out, kind="synth.residual", seeds=base.sweep.seeds, widths=base.sweep.widths,
                        device=str(device), torch_threads=threads)
    results, curves, timings = [], [], {}
    with torch_threads(threads), progress_bar(enabled=progress) as bar:
        for assign, point, th in points:
            res, cur = grid_point(assign, point, out, bar, timings, on_eval=Theorem4(th.mixture, th.F, device))
            results.append(res)
            curves.append(cur)
    all_res, all_cur = runs.concat_columns(results), runs.concat_columns(curves)
    runs.write_table(out / "results.parquet", all_res)
    runs.write_table(out / "curves.parquet", all_cur)
    thm4 = theorem4_table(all_cur, base)
    table = residual_table(all_res, all_cur, thm4, [(a, th) for a, _, th in points], base)
    runs.write_table(out / "theorem4.parquet", thm4)
    runs.write_table(out / "residual.parquet", table)
    result = ResidualResult(out=out, config=cfg, table=table, points=[(a, th) for a, _, th in points])
    runs.write_json(out / "summary.json", result.summary())
    meta.finish(groups=timings)
    return result


def theorem4_table(curves: dict[str, list], cfg: SynthConfig) -> dict[str, list]:
    """One row per (grid point,) seed x width x step from the curves (whose rows repeat per task). ratio: Theorem 4's
    (an identity, <= 1 for any U); ratio_applied / ratio_applied_raw: the current-decoder gradient, scale-free / raw,
    over the same bound (see Theorem4). Curves written before the applied gradient was recorded give NaN there."""
    keys = list(cfg.sweep.grid)
    first = [i for i in range(len(curves["task"])) if curves["task"][i] == curves["task"][0]]
    cols = {k: [curves[k][i] for i in first] for k in keys + ["seed", "width", "step", "grad_norm_F", "grad_bound_F"]}
    cols["delta_F"] = [curves["residual"][i] for i in first]
    cols["ratio"] = bound_ratio(cols["grad_norm_F"], cols["grad_bound_F"]).tolist()
    for key in ("grad_applied_F", "grad_applied_U_F"):
        cols[key] = [curves[key][i] for i in first] if key in curves else [math.nan] * len(first)
    cols["ratio_applied"] = bound_ratio(cols["grad_applied_U_F"], cols["grad_bound_F"]).tolist()
    cols["ratio_applied_raw"] = bound_ratio(cols["grad_applied_F"], cols["grad_bound_F"]).tolist()
    return cols


def rise_level(th: PointTheory) -> float:
    """How far the rare task's raw s_r must climb above its step-0 value to count as risen: half the share of its
    variance on its top direction, 0.5 lambda_r1 / Tr(C_r), the direction Prop. 6 is about. Raw s_r rather than s~,
    whose chance correction N/d moves with the width."""
    return 0.5 * float(th.mixture.eigenvalues[th.rare][0] / th.mixture.traces[th.rare])


def learning_order(steps: list[int], delta_F: list[float], s_r: list[float], upper: float,
                   rise: float) -> dict[str, Any]:
    """Does the rare task rise only after the frequent residual is below threshold_upper = delta*_F(N_r^crit - 1)?
    One cell's evaluations, steps ascending:

      step_residual        the first step with delta_F <= upper (None: never)
      step_rare_rise       the first step with s_r >= s_r(step 0) + rise (None: never)
      delta_F_at_rise      delta_F at that step
      rare_learned         s_r risen at the last evaluation
      rare_after_residual  step_residual <= step_rare_rise; None where s_r never rises (nothing to order)

    Resolution is eval.every: equal steps mean both happened in the same interval, and at that evaluation the rare
    task is up while delta_F is already below the threshold. Theory (Prop. 6) says the width-N optimum holds r's top
    direction only where delta_F <= upper; along training this can fail."""
    s0 = s_r[0]
    below = next((t for t, d in zip(steps, delta_F) if d <= upper), None)
    up = next((j for j, s in enumerate(s_r) if s >= s0 + rise), None)
    return {"step_residual": below, "step_rare_rise": None if up is None else steps[up],
            "delta_F_at_rise": None if up is None else delta_F[up], "rare_learned": bool(s_r[-1] >= s0 + rise),
            "rare_after_residual": None if up is None else below is not None and below <= steps[up]}


ORDER_KEYS = ["step_residual", "step_rare_rise", "delta_F_at_rise", "rare_learned", "rare_after_residual"]


def residual_table(results: dict[str, list], curves: dict[str, list], thm4: dict[str, list],
                   points: list[tuple[dict, PointTheory]], cfg: SynthConfig) -> dict[str, list]:
    """residual.parquet: one row per (grid point,) seed x width at the end of training, with the largest ratios over
    training and the learning order of the rare task against the residual (learning_order)."""
    keys, widths = list(cfg.sweep.grid), cfg.sweep.widths
    cols: dict[str, list] = {k: [] for k in keys + [
        "seed", "width", "delta_F", "theory_delta_F", "frequent_task", "signal_frequent", "raw_signal_frequent",
        "rare_task", "signal_rare", "raw_signal_rare", "rare_utility", "critical_width", "threshold",
        "threshold_upper", "theorem4_max_ratio", "applied_max_ratio", "applied_raw_max_ratio", "lambda1_F",
        *ORDER_KEYS]}
    for assign, th in points:
        names, optimum = th.mixture.names, dict(zip(widths, th.optimum_residual(widths)))
        rows = {(results["seed"][i], results["width"][i], results["task"][i]): i for i in range(len(results["task"]))
                if all(results[k][i] == v for k, v in assign.items())}  # == not hashing: grid values may be lists
        worst: dict[tuple[int, int], list[float]] = {}  # cell -> largest ratio, ratio_applied, ratio_applied_raw
        for i in range(len(thm4["width"])):
            if all(thm4[k][i] == v for k, v in assign.items()):
                w = worst.setdefault((thm4["seed"][i], thm4["width"][i]), [0.0, 0.0, 0.0])
                for j, key in enumerate(("ratio", "ratio_applied", "ratio_applied_raw")):
                    w[j] = float(np.maximum(w[j], thm4[key][i]))  # NaN (applied gradient not recorded) stays NaN
        trace: dict[tuple[int, int], list[tuple[int, float, float]]] = {}  # cell -> (step, delta_F, s_r)
        for i in range(len(curves["task"])):
            if curves["task"][i] == names[th.rare] and all(curves[k][i] == v for k, v in assign.items()):
                trace.setdefault((curves["seed"][i], curves["width"][i]), []).append(
                    (curves["step"][i], curves["residual"][i], curves["signal"][i]))
        for seed in cfg.sweep.seeds:
            for n in widths:
                f, r = rows[(seed, n, names[th.frequent])], rows[(seed, n, names[th.rare])]
                steps, delta, s_r = zip(*sorted(trace[(seed, n)]))
                order = learning_order(list(steps), list(delta), list(s_r), th.threshold_upper, rise_level(th))
                for k, v in assign.items():
                    cols[k].append(v)
                values = [seed, n, results["residual"][f], float(optimum[n]), names[th.frequent],
                          results["signal_corrected"][f], results["signal"][f], names[th.rare],
                          results["signal_corrected"][r], results["signal"][r], th.rare_utility, th.critical_width,
                          th.threshold, th.threshold_upper, *worst[(seed, n)], float(th.mu_F[0]),
                          *[order[k] for k in ORDER_KEYS]]
                for k, v in zip(list(cols)[len(keys):], values):
                    cols[k].append(v)
    return cols


def _finite(v: float) -> float | None:
    """JSON has no NaN or inf: s~ is undefined at N = d; a ratio is inf if the bound vanishes and the norm does not."""
    return float(v) if math.isfinite(v) else None
