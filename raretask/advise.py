"""`raretask advise`: how wide a model, or how much of a task in the data mixture, before a task is learned?
Pure functions on a built synthetic Mixture and the closed forms of raretask.theory (paper Sec. 3); no I/O.

Two questions about a task T (position k, frequency pi_T, spectrum lambda_T1 >= lambda_T2 >= ...):

  width      the smallest width N at which the width-N optimum (Theorem 3) keeps T's m-th feature:
             N*_T(m) = min{N : n_T(N) >= m}, the 1-based position of u_Tm = pi_T lambda_Tm in the utilities sorted
             high to low with Theorem 3's tie rule (equal utilities: the earlier task, then the lower j).
             For a target normalised loss L: l*_T(N) / Tr(C_T) = sum_{j > n_T(N)} lambda_Tj / Tr(C_T) falls only when
             T gains a feature, so the answer is N*_T(m_L), m_L = min{m : sum_{j > m} lambda_Tj <= L Tr(C_T)}.
  frequency  at a fixed width N, the smallest pi_T for which the width-N optimum keeps T's m-th feature when the
             other tasks are scaled by s(pi_T) = (1 - pi_T) / (1 - pi_T,config), so frequencies still sum to 1.
             Every other task's utility c_i = pi_i lambda_ij scales by the same s, so their order is fixed; T's own
             features j < m stay ahead of its m-th, j > m behind. T's m-th feature is in the top N iff at most
             N - m other features rank ahead of it, i.e. iff the (N - m + 1)-th other feature (the competitor at the
             cut, utility c*) does not. Solving pi a = c* (1 - pi) / (1 - pi_0), a = lambda_Tm, pi_0 = pi_T,config:

                 pi*_T = c* / (a (1 - pi_0) + c*)                       (closed form, exact)

             The predicate is monotone in pi_T (T's utility rises, the others' fall). At pi*_T the two utilities tie;
             the tie rule gives the feature to T when T comes before the competitor's task in the mixture (the
             answer is then attained, `attained` true), otherwise T needs pi_T > pi*_T (`attained` false; pi*_T is
             the infimum). Upsampling factor: pi*_T / pi_0. The reported answer is pi*_T moved by at most a few
             ulps to the smallest double at which the predicate, evaluated in doubles, holds: at the answer the
             feature is kept, at the next double below it is not.
             When fewer than N - m + 1 other features exist, any pi_T > 0 works: the answer is 0.0 with a reason.

Alongside, Prop. 6: where T (at the answer's frequencies) is outside the frequent set F (the smallest top-frequency
set with mass >= eval.frequent_mass), its feature invades the frequent tasks' solution iff u_Tm > mu^F_N; evidence
gives N_crit = min{N : mu^F_N <= u_Tm} and delta*_F(N) = sum_{i > N} mu^F_i, the residual the frequent tasks must
reach (at N = N_crit for the width question, at the asked width for the frequency question).

Scaling-law view (paper Sec. 2, `scaling_law`): with Zipf frequencies pi_k ~ k^-beta and finite ranks, the number of
utilities pi_k lambda_kj above u grows as u^(-1/beta), so the i-th largest utility falls as i^-beta and the width-N
optimum's mixture loss L*(N) = sum_{i > N} u_(i) ~ N^-(beta - 1) (beta > 1; for beta <= 1 the tail sum diverges as
K grows and there is no power law). That exponent, as theory.ScalingLaw's alpha (infinite data: the synthetic lab
draws a fresh batch every step), is set against theory.fit_power_law on the closed-form L*(N) of the finite mixture
and on the trained mixture loss of a finished sweep, over the widths where L*(N) > 0 (past the total rank the
optimum holds everything and there is nothing to fit).

Scope of the width and frequency questions: orthogonal task subspaces only (there M's eigenvalues are exactly the
utilities and "T's m-th feature" is a direction of M). A mixture whose subspaces overlap is refused with a ConfigError rather than answered from M's
eigenspace, where a task's features mix with other tasks' and have no staircase of their own.

Impossible questions are ConfigErrors (one line): width outside 1..d, a width below m (it cannot hold m features),
m outside 1..rank_T, a target loss outside (0, 1), an unknown task.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raretask import theory
from raretask.config import ConfigError
from raretask.synthetic.mixture import Mixture


@dataclass(frozen=True)
class Advice:
    """One answer. JSON schema (`to_json`): task (null for the mixture-wide scaling-law view), question ("width" |
    "frequency" | "scaling_law"; LM sweeps: "size" | "frequency" | "exponent"), answer (int width | float pi_T |
    float exponent; LM: int parameter count | float frequency | float gamma; null where there is none), interval
    (null: closed forms are exact; LM: the bootstrap interval, a bound null when unbounded), extrapolated (true when
    an LM answer lies outside the measured sizes), evidence (question-specific)."""

    task: str | None
    question: str
    answer: int | float | None
    evidence: dict[str, Any] = field(default_factory=dict)
    interval: tuple[float | None, float | None] | None = None
    extrapolated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "question": self.question, "answer": self.answer,
                "interval": None if self.interval is None else list(self.interval),
                "extrapolated": self.extrapolated, "evidence": self.evidence}


# ------------------------------------------------------------------------------------------------- pure closed forms


def features_for_loss(eigenvalues: np.ndarray, target: float) -> int:
    """m_L = min{m >= 1 : sum_{j > m} lambda_j <= L * sum_j lambda_j}, spectrum high to low, 0 < L < 1."""
    lam = np.asarray(eigenvalues, float)
    tails = np.concatenate([np.cumsum(lam[::-1])[::-1][1:], [0.0]])  # tails[m - 1] = sum_{j > m} lambda_j
    return int(np.argmax(tails <= target * lam.sum())) + 1


def reweighted(frequencies: np.ndarray, task: int, pi: float) -> np.ndarray:
    """The mixture's frequencies with pi_T = pi and every other task scaled by (1 - pi) / (1 - pi_T,config)."""
    f = np.asarray(frequencies, float)
    out = f * (1.0 - pi) / (1.0 - f[task])
    out[task] = pi
    return out


def competitor_at_cut(frequencies: np.ndarray, eigenvalues: list[np.ndarray], task: int, width: int,
                      m: int = 1) -> theory.Utility | None:
    """The (N - m + 1)-th feature of the other tasks in Theorem 3's order (config utilities), or None if they have
    fewer features: T's m-th feature is in the top N iff this one does not rank ahead of it."""
    others = [u for u in theory.utilities(frequencies, eigenvalues) if u.task != task]
    cut = width - m + 1
    return others[cut - 1] if cut <= len(others) else None


def ranks_ahead(a: theory.Utility, b: theory.Utility) -> bool:
    """Does feature a precede feature b in Theorem 3's order (value high to low, then earlier task, lower j)?"""
    return (-a.utility, a.task, a.index) < (-b.utility, b.task, b.index)


def minimum_frequency(frequencies: np.ndarray, eigenvalues: list[np.ndarray], task: int, width: int,
                      m: int = 1) -> tuple[float, theory.Utility | None, bool]:
    """(pi*_T, competitor, attained): the smallest pi_T (others rescaled) at which the width-N optimum keeps T's m-th
    feature, pi*_T = c* / (lambda_Tm (1 - pi_0) + c*); attained False when the tie at pi*_T goes to the competitor
    (then T needs pi_T > pi*_T). (0.0, None, False) when any pi_T > 0 works."""
    f = np.asarray(frequencies, float)
    comp = competitor_at_cut(f, eigenvalues, task, width, m)
    if comp is None:
        return 0.0, None, False
    a, c, pi0 = float(eigenvalues[task][m - 1]), comp.utility, float(f[task])
    pi = c / (a * (1.0 - pi0) + c)
    # Round-off: move by at most a few ulps to the smallest double at which Theorem 3's order, evaluated on the
    # reweighted frequencies as `keeps_feature` does, keeps the feature (the tie at the exact pi* is decided by the
    # tie rule, `attained`; in doubles the two utilities rarely tie exactly).
    keeps = functools.partial(frequency_keeps, f, eigenvalues, task, width, m)
    for _ in range(64):
        if keeps(pi):
            break
        pi = float(np.nextafter(pi, 1.0))
    for _ in range(64):
        below = float(np.nextafter(pi, 0.0))
        if not keeps(below):
            break
        pi = below
    return pi, comp, task < comp.task


def frequency_keeps(frequencies: np.ndarray, eigenvalues: list[np.ndarray], task: int, width: int, m: int,
                    pi: float) -> bool:
    """Does width N keep T's m-th feature when pi_T = pi and the other tasks are rescaled (`reweighted`)?"""
    return keeps_feature(reweighted(frequencies, task, pi), eigenvalues, task, width, m)


def keeps_feature(frequencies: np.ndarray, eigenvalues: list[np.ndarray], task: int, width: int, m: int = 1) -> bool:
    """Does the width-N optimum (Theorem 3, orthogonal tasks, tie rule) keep task T's m-th feature?"""
    return bool(theory.features_kept(np.asarray(frequencies, float), eigenvalues, width)[task] >= m)


# --------------------------------------------------------------------------------------------- answers on a Mixture


def prop6(mixture: Mixture, task: int, utility: float, frequent_mass: float, width: int | None = None
          ) -> dict[str, Any]:
    """Prop. 6 for feature utility u of `task`: the frequent set F, and where task is outside F, N_crit and
    delta*_F at N_crit (or at `width` when given)."""
    F = mixture.frequent_set(frequent_mass)
    out: dict[str, Any] = {"frequent_set": [mixture.names[k] for k in F], "critical_width": None,
                           "residual_threshold": None}
    if task in F:
        return out
    mu_F = theory.spectrum(mixture.mixture_covariance(F))
    n_crit = theory.critical_width(mu_F, utility)
    out["critical_width"] = n_crit
    out["residual_threshold"] = theory.residual_threshold(mu_F, n_crit if width is None else width)
    return out


def check_orthogonal(mixture: Mixture) -> None:
    if not mixture.orthogonal:
        raise ConfigError("mixture.placement: advise needs mutually orthogonal task subspaces (placement = "
                          "\"orthogonal\"); overlapping subspaces have no per-task staircase")


def task_index(mixture: Mixture, name: str) -> int:
    if name not in mixture.names:
        raise ConfigError(f"--task: {name!r} is not a task of the config (tasks: {', '.join(mixture.names)})")
    return mixture.names.index(name)


def min_width(mixture: Mixture, name: str, features: int | None = None, target_loss: float | None = None,
              frequent_mass: float = 0.8) -> Advice:
    """The width question: N*_T(m) for m = `features` (default 1), or for the m_L a target normalised loss needs."""
    check_orthogonal(mixture)
    k = task_index(mixture, name)
    m = resolve_features(mixture, k, features, target_loss)
    lam, pi = mixture.eigenvalues[k], mixture.frequencies[k]
    n = int(mixture.staircase(m)[k])
    loss = float(theory.orthogonal_task_losses(mixture.frequencies, mixture.eigenvalues, [n])[k, 0])
    evidence = {"features": m, "target_loss": target_loss, "frequency": float(pi), "utility": float(pi * lam[m - 1]),
                "normalised_loss": loss / float(mixture.traces[k]),
                "staircase": {str(j): int(mixture.staircase(j)[k]) for j in range(1, min(3, len(lam)) + 1)},
                **prop6(mixture, k, float(pi * lam[m - 1]), frequent_mass)}
    return Advice(task=name, question="width", answer=n, evidence=evidence)


def min_frequency(mixture: Mixture, name: str, width: int, features: int | None = None,
                  target_loss: float | None = None, frequent_mass: float = 0.8) -> Advice:
    """The frequency question at width N: pi*_T (closed form above), with the upsampling factor, the competitor at
    the cut and Prop. 6 on the reweighted mixture."""
    check_orthogonal(mixture)
    k = task_index(mixture, name)
    if not 1 <= width <= mixture.dim:
        raise ConfigError(f"--width: {width} is outside 1..mixture.dim = {mixture.dim}")
    m = resolve_features(mixture, k, features, target_loss)
    if width < m:
        raise ConfigError(f"--width: width {width} cannot hold {m} features of task {name!r}")
    pi0 = float(mixture.frequencies[k])
    if mixture.num_tasks == 1:
        pi, comp, attained = 0.0, None, False
    else:
        pi, comp, attained = minimum_frequency(mixture.frequencies, mixture.eigenvalues, k, width, m)
    evidence: dict[str, Any] = {"width": width, "features": m, "target_loss": target_loss, "config_frequency": pi0,
                                "upsample": pi / pi0, "attained": attained, "competitor": None}
    if comp is None:
        evidence["reason"] = (f"the other tasks have fewer than {width - m + 1} features: width {width} keeps "
                              f"feature {m} of {name!r} at any frequency > 0")
        return Advice(task=name, question="frequency", answer=0.0, evidence=evidence)
    scale = (1.0 - pi) / (1.0 - pi0)
    evidence["competitor"] = {"task": mixture.names[comp.task], "index": comp.index, "utility": comp.utility,
                              "utility_at_answer": comp.utility * scale}
    evidence["other_scale"] = scale
    moved = dataclasses.replace(mixture, frequencies=reweighted(mixture.frequencies, k, pi))
    evidence.update(prop6(moved, k, pi * float(mixture.eigenvalues[k][m - 1]), frequent_mass, width))
    return Advice(task=name, question="frequency", answer=float(pi), evidence=evidence)


def resolve_features(mixture: Mixture, k: int, features: int | None, target_loss: float | None) -> int:
    """m from --features or --target-loss (not both), checked against the task's rank; default 1."""
    rank = mixture.ranks[k]
    if features is not None and target_loss is not None:
        raise ConfigError("--features: give either --features or --target-loss, not both")
    if target_loss is not None:
        if not 0.0 < target_loss < 1.0:
            raise ConfigError(f"--target-loss: must be in (0, 1), got {target_loss}")
        return features_for_loss(mixture.eigenvalues[k], target_loss)
    m = 1 if features is None else features
    if not 1 <= m <= rank:
        raise ConfigError(f"--features: {m} is outside 1..rank = {rank} of task {mixture.names[k]!r}")
    return m


def advise(mixture: Mixture, name: str, width: int | None = None, features: int | None = None,
           target_loss: float | None = None, frequent_mass: float = 0.8) -> Advice:
    """The command's answer: the frequency question when a width is given, else the width question."""
    if width is None:
        return min_width(mixture, name, features, target_loss, frequent_mass)
    return min_frequency(mixture, name, width, features, target_loss, frequent_mass)


# ------------------------------------------------------------------------------------------- scaling-law view


def zipf_exponent(mixture: Mixture, zipf: float | None) -> tuple[float, str]:
    """beta: the config's mixture.zipf, else fitted to the frequencies sorted high to low against their rank."""
    if zipf is not None:
        return float(zipf), "mixture.zipf"
    if mixture.num_tasks < 2:
        raise ConfigError("--scaling-law: a mixture of one task has no Zipf exponent")
    _, beta = theory.fit_power_law(np.arange(1, mixture.num_tasks + 1), np.sort(mixture.frequencies)[::-1])
    return beta, "fitted to the task frequencies sorted high to low"


def trained_mixture_loss(mixture: Mixture, results: dict[str, list]) -> dict[int, float]:
    """width -> sum_k pi_k l_k(N), l_k the mean over seeds of a finished synthetic sweep's trained loss (its
    results.parquet columns width, task, seed, frequency, loss). One grid point of this mixture only."""
    seen: set[tuple] = set()
    loss: dict[tuple[str, int], list[float]] = {}
    pi = dict(zip(mixture.names, mixture.frequencies))
    for w, t, s, f, v in zip(results["width"], results["task"], results["seed"], results["frequency"],
                             results["loss"]):
        if (w, t, s) in seen:
            raise ConfigError("--scaling-law: the run has several grid points; give a run of one mixture")
        seen.add((w, t, s))
        if t not in pi or not np.isclose(f, pi[t], rtol=1e-9):
            raise ConfigError(f"--scaling-law: the run was trained on another mixture (task {t!r} at frequency "
                              f"{f:g}, the config has {pi.get(t, 'no such task')})")
        loss.setdefault((t, int(w)), []).append(float(v))
    widths = sorted({w for _, w in loss})
    return {w: float(sum(pi[t] * np.mean(loss[t, w]) for t in mixture.names if (t, w) in loss)) for w in widths}


def scaling_law(mixture: Mixture, widths: list[int], zipf: float | None = None,
                trained: dict[str, list] | None = None) -> Advice:
    """The loss exponent predicted from the Zipf exponent (beta - 1) against the exponents fitted to the closed-form
    optimum and, given a finished sweep's results, to the trained losses (module docstring). `widths`: where to
    evaluate the closed form (the run's widths when `trained` is given)."""
    beta, source = zipf_exponent(mixture, zipf)
    trained_loss = trained_mixture_loss(mixture, trained) if trained is not None else None
    if trained_loss is not None:
        widths = list(trained_loss)
    widths = sorted(n for n in set(widths) if 1 <= n <= mixture.dim)
    optimum = mixture.frequencies @ mixture.theory_losses(widths)  # L*(N), noise excluded
    keep = [i for i, v in enumerate(optimum) if v > 1e-12 * max(optimum.max(), 1e-300)]
    fit_widths = np.array([widths[i] for i in keep], float)
    if len(fit_widths) < 2:
        raise ConfigError(f"--scaling-law: the optimum's loss is > 0 at {len(fit_widths)} of the widths "
                          f"{widths}; a power law needs 2")
    closed = optimum[keep]
    predicted = beta - 1.0 if beta > 1.0 else None
    evidence: dict[str, Any] = {"zipf": beta, "zipf_source": source, "predicted_exponent": predicted,
                                "widths": fit_widths.astype(int).tolist(), "closed_form_loss": closed.tolist(),
                                "closed_form_exponent": theory.fit_power_law(fit_widths, closed)[1],
                                "scaling_law_loss": None, "trained_loss": None, "trained_exponent": None}
    if predicted is None:
        evidence["reason"] = f"zipf {beta:.3g} <= 1: the tail sum of k^-beta diverges with K, no power law in N"
    else:
        # theory.ScalingLaw at D -> infinity: L_inf(N) = A N^-alpha, A by least squares in log space at fixed alpha
        amp = float(np.exp(np.mean(np.log(closed) + predicted * np.log(fit_widths))))
        law = theory.ScalingLaw(L0=0.0, A=amp, B=0.0, alpha=predicted, beta=1.0)
        evidence["scaling_law_loss"] = law.infinite_data_loss(fit_widths).tolist()
    if trained_loss is not None:
        y = np.array([trained_loss[int(n)] for n in fit_widths])
        evidence["trained_loss"] = y.tolist()
        if np.all(y > 0):
            evidence["trained_exponent"] = theory.fit_power_law(fit_widths, y)[1]
    return Advice(task=None, question="scaling_law", answer=predicted, evidence=evidence)

