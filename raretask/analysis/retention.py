"""Retention after injections (paper Fig. 8): how the task's eval loss moves in the steps after each injection of a
burst schedule (N instances every N batches), and how fast the gain is forgotten.

    rows = after_injections(steps, loss, injections, window=500)     # injection, k, delta
    curve = mean_curve(rows)                                          # k, mean, std, count over injections
    fit = fit_decay(curve["k"], curve["mean"], until=gap)             # tau, amplitude, points, r2

Steps are the injection plan's (batch s; the loss at step s is the model after s updates, metrics.parquet's and the
interference monitor's convention), so for an injection in batch s0 the loss at s0 is the value just before the
injected update and delta(k) = loss(s0 + k) - loss(s0), delta(0) = 0. The window runs over `window` steps whatever
comes next (the paper's Fig. 8 spans five injections of a 100-batch burst).

Decay. Between one injection and the next (k = 1 .. gap, gap = N: the loss at s0 + N is still before the next
injected update) the drop the injection made is forgotten. The fit models the mean curve over injections as

    delta(k) = -A exp(-k / tau)

the drop A decaying back to the pre-injection loss with time constant tau (in steps), fitted by ordinary least
squares of log(-delta(k)) = log A - k / tau on the points of 1 <= k <= gap with delta(k) < 0 (a closed form, no
optimiser; points at or above the pre-injection loss carry no log and are left out, and `points` says how many were
used). A slope >= 0 (the drop holds or deepens until the next injection) gives tau = inf: nothing forgotten within
the gap. Fewer than 3 points give NaN. r2 is the fit's coefficient of determination in log space. Larger tau =
longer retention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_POINTS = 3


def after_injections(steps: Sequence[int], loss: Sequence[float], injections: Sequence[int], window: int = 500
                     ) -> dict[str, list]:
    """Columns injection, k, delta: for each injection step s0 whose loss was measured at s0, every measured step s
    in [s0, s0 + window], k = s - s0, delta = loss(s) - loss(s0)."""
    at = {int(s): float(v) for s, v in zip(steps, loss) if v is not None and math.isfinite(v)}
    ordered = np.array(sorted(at), dtype=np.int64)
    out: dict[str, list] = {"injection": [], "k": [], "delta": []}
    for s0 in sorted({int(s) for s in injections}):
        if s0 not in at:
            continue
        for s in ordered[(ordered >= s0) & (ordered <= s0 + window)]:
            out["injection"].append(s0)
            out["k"].append(int(s - s0))
            out["delta"].append(at[int(s)] - at[s0])
    return out


def mean_curve(rows: dict[str, list]) -> dict[str, list]:
    """Per k: mean, std (population) and count of delta over injections."""
    k, d = np.asarray(rows["k"], dtype=np.int64), np.asarray(rows["delta"], dtype=float)
    ks = np.unique(k)
    return {"k": ks.tolist(), "mean": [float(d[k == x].mean()) for x in ks],
            "std": [float(d[k == x].std()) for x in ks], "count": [int((k == x).sum()) for x in ks]}


@dataclass(frozen=True)
class DecayFit:
    tau: float  # steps; inf: no forgetting within the gap; NaN: fewer than MIN_POINTS usable points
    amplitude: float  # A, the drop extrapolated to k = 0
    points: int
    r2: float


def fit_decay(k: Sequence[float], delta: Sequence[float], until: int | None = None) -> DecayFit:
    """The module docstring's fit on the points 1 <= k <= until (all k >= 1 when None) with delta < 0."""
    k, d = np.asarray(k, dtype=float), np.asarray(delta, dtype=float)
    use = (k >= 1) & (d < 0) & np.isfinite(d) & (k <= (np.inf if until is None else until))
    n = int(use.sum())
    if n < MIN_POINTS:
        return DecayFit(math.nan, math.nan, n, math.nan)
    x, y = k[use], np.log(-d[use])
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx == 0:
        return DecayFit(math.nan, math.nan, n, math.nan)
    slope = float(((x - xm) * (y - ym)).sum()) / sxx
    intercept = ym - slope * xm
    resid = y - (intercept + slope * x)
    syy = float(((y - ym) ** 2).sum())
    r2 = 1 - float((resid ** 2).sum()) / syy if syy > 0 else 1.0
    return DecayFit(-1 / slope if slope < 0 else math.inf, float(math.exp(intercept)), n, r2)
