"""The paper's testable claims as pure checks: each takes one run's plain tables (dicts of columns as read from
Parquet, summary dicts) and returns an Outcome, a verdict and the measured numbers behind it. The criteria are the
constants below, fixed before any data is seen and stated on the report page (raretask.report.scorecard gathers
the claims, finds the runs and draws the section; the figures' sentences reuse the table helpers here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from raretask import theory

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"


# ------------------------------------------------------------------------------------------------------ criteria

THEORY_TOLERANCE_CAP = 0.02
"""S1: task k's trained normalised loss (mean over seeds) may leave the Theorem-3 optimum's by at most
tol_k = min(THEORY_TOLERANCE_CAP, lambda_min,k / (2 Tr C_k)) at every width. Half the smallest eigenvalue's share, so
a run that misses or wrongly keeps any one direction of the task fails; the 2% cap keeps a rank-1 task (share 1)
from getting 50%."""

HELD_SHARE = 0.5
"""S2: task k holds its top direction at width N when its mean normalised loss is at most
1 - HELD_SHARE * lambda_k1 / Tr C_k: half-way between the theory's value before N*_k(1) (1, nothing held) and at it
(1 - lambda_k1 / Tr C_k). The loss, not the signal s_k, because the loss is what Fig. 2 plots and does not count a
direction the encoder spans but the decoder ignores."""

WIDTH_STEPS = 1
"""S2: the first width holding the top direction may sit at most this many steps of the sweep's width list from the
smallest trained width >= N*_k(1). A task never held (or a staircase beyond the sweep) counts as one step past the
widest width."""

SIGNAL_HELD = 0.5
"""S3 (Fig. 18): N_emp(k) = min{N : s_k > SIGNAL_HELD}, s_k the raw signal Tr(P_W C_k) / Tr(C_k), mean over seeds."""

STAIRCASE_FRACTION = 0.9
"""S3: the share of tasks whose N_emp(k) must equal the smallest trained width >= N_crit(k) (= N*_k(1), = k in the
paper's rank-1 mixture); a task the theory puts beyond the sweep must not be held at any width."""

AFTER_RESIDUAL_FRACTION = 0.9
"""S4: of the residual run's cells that learn the rare task, the share whose rise comes at or after the first
evaluation with delta_F <= delta*_F(N_r^crit - 1) (residual.parquet's rare_after_residual, recorded by the lab)."""

RETENTION_SLACK = 0.01
"""S5: the final raw rare-task signal s_r (mean over seeds) "rises with width" at a gap when no step to the next
wider width lowers it by more than RETENTION_SLACK and the widest width beats the narrowest by more than it;
"falls with the gap" likewise. 0.01 = 1% of the rare task's variance: flat or reversed patterns fail, seed noise in
a saturated corner does not."""

DECAY_TOLERANCE = 0.01
"""S6 (Example 7): |(theta_G / theta_0) / (1 - 2 eta)^G - 1| <= DECAY_TOLERANCE for every eta, G the forget gap."""

LEARNED_ACCURACY = 0.85
"""L1: a size has learned the task when its mean-over-seeds test accuracy (argmax over the label set) is at least
this (chance: 0.5 for comparison, 0.01 for modular addition)."""

SIZE_ADVANTAGE = 0.15
"""L2: the largest size's test accuracy must beat the smallest's by at least this at some frequency below the
grid's highest..."""

NOT_LEARNED_ACCURACY = 0.65
"""L2: ... while the smallest size's is at most this (not learned)."""

THRESHOLD_ACCURACY = 0.8
"""L6: a size's threshold frequency f*(N) is where its mean-over-seeds test accuracy (label set) crosses this,
interpolated in log-frequency (raretask.lm.advise; `raretask advise SWEEP --target-acc` defaults to the same)."""

THRESHOLD_SIZES = 3
"""L6: the fit f*(N) = a N^-gamma is judged only over at least this many sizes whose f* falls inside the frequency
grid (two points always lie on a power law; a third can miss it); fewer: not run."""

THRESHOLD_LEVEL = 0.90
"""L6: f* falls with size when gamma > 0 and the lower end of its THRESHOLD_LEVEL bootstrap percentile interval
(raretask.lm.advise: seeds within each cell, then sizes, resampled) is above 0. The leave-one-out errors (each
size's f* predicted from the others, as a factor in frequency) are reported, not judged: no tolerance for them was
fixed before the runs."""

EMBED_SLACK = 0.02
"""L7 (Fig. 7a): the best layer's held-out R² of the value order at the last analysed checkpoint (mean over the runs
of one size) "rises with size" when no step to the next larger size lowers it by more than EMBED_SLACK and the
largest size beats the smallest by more than it, at every comparison task and frequency with two sizes."""

INTERFERENCE_WINDOW = 500
"""L8 (Fig. 9): the steps after each injection over which cos(g_nt, g_r) is averaged (k = 0 .. INTERFERENCE_WINDOW,
every logged step of every injection's window counted once per window); the analysis's `window` caps it."""

INTERFERENCE_MARGIN = 0.0
"""L8: the largest size's mean cos(g_nt, g_r) after injections must be below the smallest size's by more than this,
at every (task, frequency, gap) with two sizes. Signed, as the paper reports it (0.10 at 20M, ~0 at 1B)."""

RETENTION_RATIO = 1.0
"""L9 (Fig. 8): the largest size's fitted decay constant tau (raretask.analysis.retention; inf = nothing forgotten
between injections) must exceed RETENTION_RATIO x the smallest size's, at every (task, frequency, gap) where both
were fitted (NaN: fewer than 3 points below the pre-injection loss; such a group cannot test it)."""


# ------------------------------------------------------------------------------------------------- outcome


@dataclass(frozen=True)
class Outcome:
    """One run's verdict on one claim, and the measured numbers behind it in a few words."""

    verdict: str
    numbers: str


# --------------------------------------------------------------------------------------------- table helpers


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def means(cols: dict[str, list], by: tuple[str, ...], key: str, rows: Iterable[int] | None = None
          ) -> dict[tuple, float]:
    """Mean of cols[key] over the rows sharing the values of `by` (e.g. over seeds); None and NaN are skipped,
    groups with no value left out."""
    acc: dict[tuple, list[float]] = {}
    for i in range(len(cols[key])) if rows is None else rows:
        if _finite(cols[key][i]):
            acc.setdefault(tuple(cols[b][i] for b in by), []).append(float(cols[key][i]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _rows_where(cols: dict[str, list], **where: Any) -> list[int]:
    n = len(next(iter(cols.values()), []))
    return [i for i in range(n) if all(cols[k][i] == v for k, v in where.items())]


def _g(v: float) -> str:
    return f"{v:.3g}"


# ------------------------------------------------------------------------------------------- synthetic claims


def theory_tolerance(eigenvalues: Iterable[float]) -> float:
    """tol_k of S1 for a task with these eigenvalues."""
    lam = np.asarray(list(eigenvalues), float)
    return min(THEORY_TOLERANCE_CAP, 0.5 * float(lam.min()) / float(lam.sum()))


def _point_rows(t: dict[str, Any], point: dict[str, Any]) -> list[int]:
    return _rows_where(t["results"], **point.get("grid", {}))


def _point_name(point: dict[str, Any]) -> str:
    grid = point.get("grid") or {}
    return ", ".join(f"{k} = {v}" for k, v in grid.items())


def _with_point(point: dict[str, Any], text: str) -> str:
    name = _point_name(point)
    return f"{name}: {text}" if name else text


def check_theory_match(t: dict[str, Any]) -> Outcome:
    """S1 on a `synthetic` run: {"results": results.parquet, "points": [{"grid", "tasks": [{"name", "frequency",
    "eigenvalues"}]}]}."""
    res, worst, misses = t["results"], None, []
    for point in t["points"]:
        rows = _point_rows(t, point)
        obs = means(res, ("task", "width"), "normalised_loss", rows)
        pred = means(res, ("task", "width"), "theory_normalised_loss", rows)
        for task in point["tasks"]:
            errs = {w: abs(v - pred[n, w]) for (n, w), v in obs.items() if n == task["name"] and (n, w) in pred}
            if not errs:
                continue
            width = max(errs, key=errs.get)
            tol = theory_tolerance(task["eigenvalues"])
            entry = (errs[width] / tol, errs[width], tol, task["name"], width, point)
            worst = entry if worst is None or entry[0] > worst[0] else worst
            if errs[width] > tol:
                misses.append(entry)
    if worst is None:
        return Outcome(NOT_RUN, "no trained cells")
    _, err, tol, name, width, point = worst
    text = _with_point(point, f"worst task {name}: max |trained - theory| {err:.4f} at N = {width} "
                              f"(tolerance {tol:.4f})")
    if misses:
        text += f"; {len(misses)} task(s) outside their tolerance"
    return Outcome(NOT_REPRODUCED if misses else REPRODUCED, text)


def first_width(widths: list[int], values: dict[int, float], holds: Callable[[float], bool]) -> int | None:
    """The smallest width whose value holds, or None."""
    return next((w for w in sorted(widths) if w in values and holds(values[w])), None)


def staircase_widths(point: dict[str, Any], widths: list[int], m: int = 1) -> dict[str, int | None]:
    """Per task: the smallest trained width >= N*_k(m) (Theorem 3, orthogonal tasks), None beyond the sweep."""
    freqs = np.array([task["frequency"] for task in point["tasks"]], float)
    stairs = theory.staircase(freqs, [np.asarray(task["eigenvalues"], float) for task in point["tasks"]], m)
    return {task["name"]: next((w for w in sorted(widths) if w >= n), None) if math.isfinite(n) else None
            for task, n in zip(point["tasks"], stairs)}


def discordant_pairs(tasks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs (more frequent task, rarer task with the higher top utility pi_k lambda_k1): where frequency order and
    utility order disagree, the only tasks that can tell learning by utility from learning by frequency."""
    return [(a["name"], b["name"]) for a in tasks for b in tasks if a["frequency"] > b["frequency"]
            and a["frequency"] * max(a["eigenvalues"]) < b["frequency"] * max(b["eigenvalues"])]


def held_widths(t: dict[str, Any], point: dict[str, Any]) -> dict[str, int | None]:
    """Per task: the first trained width holding its top direction (HELD_SHARE, mean normalised loss over seeds)."""
    loss = means(t["results"], ("task", "width"), "normalised_loss", _point_rows(t, point))
    out = {}
    for task in point["tasks"]:
        lam = np.asarray(task["eigenvalues"], float)
        level = 1 - HELD_SHARE * lam.max() / lam.sum()
        out[task["name"]] = first_width(t["widths"], {w: v for (n, w), v in loss.items() if n == task["name"]},
                                        lambda v, level=level: v <= level)
    return out


def check_utility_order(t: dict[str, Any]) -> Outcome:
    """S2 on a `synthetic` run. Every task within WIDTH_STEPS of its staircase, and every discordant pair that the
    theory puts on different trained widths held in utility order (the rarer, higher-utility task strictly first);
    "not run" when no grid point has such a pair (frequency and utility would predict the same picture)."""
    widths = sorted(t["widths"])
    step = {w: i for i, w in enumerate(widths)}
    idx = lambda w: step.get(w, len(widths))  # noqa: E731 -- None (never / beyond the sweep): one past the widest
    shown, bad, pairs = [], [], 0
    for point in t["points"]:
        if not point.get("orthogonal", True):
            continue
        theory_w, held = staircase_widths(point, widths), held_widths(t, point)
        resolved = [(a, b) for a, b in discordant_pairs(point["tasks"]) if idx(theory_w[b]) < idx(theory_w[a])]
        if not resolved:
            continue
        pairs += len(resolved)
        for task in point["tasks"]:
            name = task["name"]
            if abs(idx(held[name]) - idx(theory_w[name])) > WIDTH_STEPS:
                bad.append(_with_point(point, f"{name} held from N = {held[name]}, theory {theory_w[name]}"))
        for a, b in resolved:
            line = _with_point(point, f"{b} (rarer than {a}, higher utility) held from N = {held[b]} (theory "
                                      f"{theory_w[b]}), {a} from N = {held[a]} (theory {theory_w[a]})")
            if idx(held[b]) >= idx(held[a]):
                bad.append("frequency order: " + line)
            elif len(shown) < 2:
                shown.append(line)
    if not pairs:
        return Outcome(NOT_RUN, "no two tasks whose frequency and utility orders differ on different trained widths")
    if bad:
        return Outcome(NOT_REPRODUCED, f"{len(bad)} miss(es): " + "; ".join(bad[:3]))
    return Outcome(REPRODUCED, "; ".join(shown) + f"; {pairs} pair(s) in utility order, every task within "
                   f"{WIDTH_STEPS} width step of N*_k(1)")


def check_rank1_staircase(t: dict[str, Any]) -> Outcome:
    """S3 (Fig. 18) on a `synthetic` run whose tasks all have rank 1; "not run" otherwise."""
    widths = sorted(t["widths"])
    hits, total, misses = 0, 0, []
    for point in t["points"]:
        if not point.get("orthogonal", True) or any(len(task["eigenvalues"]) != 1 for task in point["tasks"]):
            continue
        target = staircase_widths(point, widths)
        signal = means(t["results"], ("task", "width"), "signal", _point_rows(t, point))
        for task in point["tasks"]:
            name = task["name"]
            emp = first_width(widths, {w: v for (n, w), v in signal.items() if n == name}, lambda v: v > SIGNAL_HELD)
            total += 1
            if emp == target[name]:
                hits += 1
            else:
                misses.append(_with_point(point, f"{name}: N_emp {emp}, N_crit width {target[name]}"))
    if not total:
        return Outcome(NOT_RUN, "no rank-1 sweep")
    ok = hits >= STAIRCASE_FRACTION * total
    return Outcome(REPRODUCED if ok else NOT_REPRODUCED,
                   f"N_emp = N_crit for {hits} of {total} tasks" + (f" (misses: {'; '.join(misses[:3])})"
                                                                     if misses else ""))


def check_residual_order(t: dict[str, Any]) -> Outcome:
    """S4 on a `synth.residual` run: {"residual": residual.parquet}."""
    r = t["residual"]
    if "rare_after_residual" not in r:
        return Outcome(NOT_RUN, "the run predates the learning-order columns (rerun synth residual)")
    n = len(r["width"])
    learned = [i for i in range(n) if r["rare_learned"][i]]
    after = sum(1 for i in learned if r["rare_after_residual"][i] is True)
    above = [i for i in range(n) if r["theory_delta_F"][i] > r["threshold_upper"][i] * (1 + 1e-9)]
    early = sorted({r["width"][i] for i in above if r["rare_learned"][i]})
    text = (f"learned in {len(learned)} of {n} cells, {after} of them after δ_F fell below δ*_F(N_r^crit - 1); "
            f"learned at widths above the threshold: {early or 'none'} ({len(above)} cells there)")
    # A run can test the order only with widths on both sides of the threshold (Fig. 21's long run has none below)
    if len(above) == n:
        return Outcome(NOT_RUN, text + "; no width lets the optimum hold the rare task: nothing to order")
    if not above:
        return Outcome(NOT_RUN, text + "; no width above the threshold to show the rare task waiting")
    if not learned:  # never rising contradicts no order (other rare tasks may outrank it at every width)
        return Outcome(NOT_RUN, text + "; the rare task is learned nowhere: no rise to order")
    ok = after >= AFTER_RESIDUAL_FRACTION * len(learned) and not early
    return Outcome(REPRODUCED if ok else NOT_REPRODUCED, text)


def monotone(values: list[float], direction: int, slack: float) -> bool:
    """values move in `direction` (+1 rises, -1 falls): no step the wrong way by more than `slack`, and the last
    beyond the first by more than `slack`."""
    steps = np.diff(np.asarray(values, float)) * direction
    return bool(len(steps) and steps.min() >= -slack and steps.sum() > slack)


def check_retention(t: dict[str, Any]) -> Outcome:
    """S5 (Fig. 4) on a `synth.retention` run: {"final": final.parquet}."""
    m = means(t["final"], ("gap", "width"), "signal_rare")
    gaps, widths = sorted({g for g, _ in m}), sorted({w for _, w in m})
    if len(gaps) < 2 or len(widths) < 2:
        return Outcome(NOT_RUN, "needs two gaps and two widths")
    by_width = [g for g in gaps if not monotone([m[g, w] for w in widths], +1, RETENTION_SLACK)]
    by_gap = [w for w in widths if not monotone([m[g, w] for g in gaps], -1, RETENTION_SLACK)]
    lo, hi = min(m, key=m.get), max(m, key=m.get)
    text = (f"s_r from {m[lo]:.3f} (G = {lo[0]}, N = {lo[1]}) to {m[hi]:.3f} (G = {hi[0]}, N = {hi[1]}); rises with "
            f"width at {len(gaps) - len(by_width)} of {len(gaps)} gaps, falls with the gap at "
            f"{len(widths) - len(by_gap)} of {len(widths)} widths")
    return Outcome(NOT_REPRODUCED if by_width or by_gap else REPRODUCED, text)


def decay_errors(decay: dict[str, list]) -> dict[float, float]:
    """Per eta: |ratio / (1 - 2 eta)^G - 1| at the last common step G of the decay table."""
    out = {}
    for lr in dict.fromkeys(decay["lr"]):
        rows = _rows_where(decay, lr=lr)
        last = max(rows, key=lambda i: decay["g"][i])
        out[lr] = abs(decay["ratio"][last] / decay["linear"][last] - 1)
    return out


def check_decay(t: dict[str, Any]) -> Outcome:
    """S6 (Example 7) on a `synth.toy` run: {"decay": decay.parquet}."""
    errs = decay_errors(t["decay"])
    if not errs:
        return Outcome(NOT_RUN, "empty decay table")
    lr = max(errs, key=errs.get)
    return Outcome(REPRODUCED if errs[lr] <= DECAY_TOLERANCE else NOT_REPRODUCED,
                   f"largest |ratio / (1-2η)^G - 1| = {errs[lr]:.2%} at η = {lr:g} ({len(errs)} values of η)")


# -------------------------------------------------------------------------------------------------- LM claims


def lm_rows(results: dict[str, list], *, task_kind: str | None = None, gap: int | None = 0) -> list[int]:
    """Rows of injected tasks (of one kind: the `kind` column, else the task name) at burst gap `gap` (0: the task's
    own schedule; None: any gap)."""
    n = len(results.get("task", []))
    kinds = results.get("kind") or results["task"]
    return [i for i in range(n) if results["task"][i] is not None
            and (task_kind is None or kinds[i] == task_kind)
            and (gap is None or results.get("gap", [0] * n)[i] == gap)]


def sizes_by_params(results: dict[str, list], rows: Iterable[int]) -> list[str]:
    """The sizes in `rows`, smallest model first (by parameter count, then name)."""
    params: dict[str, float] = {}
    for i in rows:
        params[results["size"][i]] = max(params.get(results["size"][i], -math.inf), float(results["params"][i] or 0))
    return sorted(params, key=lambda s: (params[s], s))


def _accuracy_grid(res: dict[str, list], kind: str) -> tuple[list[str], list[float], dict[tuple, float]] | None:
    rows = lm_rows(res, task_kind=kind)
    if not rows:
        return None
    sizes = sizes_by_params(res, rows)
    freqs = sorted({res["grid_frequency"][i] for i in rows}, reverse=True)
    return sizes, freqs, means(res, ("grid_frequency", "size"), "test_acc_labels", rows)


def check_all_sizes_learn(t: dict[str, Any], kind: str) -> Outcome:
    """L1 on an `lm.sweep` run ({"results", "curves"}) for one task kind."""
    grid = _accuracy_grid(t["results"], kind)
    if grid is None:
        return Outcome(NOT_RUN, f"no {kind} task in the sweep")
    sizes, freqs, acc = grid
    if len(sizes) < 2:
        return Outcome(NOT_RUN, "needs two sizes")
    top = freqs[0]
    vals = {s: acc.get((top, s), math.nan) for s in sizes}
    worst = min(sizes, key=lambda s: vals[s] if math.isfinite(vals[s]) else -1)
    ok = all(math.isfinite(v) and v >= LEARNED_ACCURACY for v in vals.values())
    return Outcome(REPRODUCED if ok else NOT_REPRODUCED,
                   f"at {top:g}: test accuracy " + ", ".join(f"{vals[s]:.2f} ({s})" for s in sizes)
                   + ("" if ok else f"; lowest {worst}"))


def check_larger_learn_rare(t: dict[str, Any], kind: str) -> Outcome:
    """L2 on an `lm.sweep` run for one task kind."""
    grid = _accuracy_grid(t["results"], kind)
    if grid is None:
        return Outcome(NOT_RUN, f"no {kind} task in the sweep")
    sizes, freqs, acc = grid
    if len(sizes) < 2 or len(freqs) < 2:
        return Outcome(NOT_RUN, "needs two sizes and two frequencies")
    small, large = sizes[0], sizes[-1]
    best = None
    for f in freqs[1:]:
        a, b = acc.get((f, small), math.nan), acc.get((f, large), math.nan)
        if math.isfinite(a) and math.isfinite(b):
            ok = b - a >= SIZE_ADVANTAGE and a <= NOT_LEARNED_ACCURACY
            if best is None or (ok, b - a) > (best[0], best[3] - best[2]):
                best = (ok, f, a, b)
    if best is None:
        return Outcome(NOT_RUN, "no lower frequency with both sizes")
    ok, f, a, b = best
    return Outcome(REPRODUCED if ok else NOT_REPRODUCED,
                   f"at {f:g}: {small} {a:.2f}, {large} {b:.2f} (difference {b - a:+.2f})")


def rising(label: str, values: list[float], bad: list[str], shown: list[str]) -> None:
    """File `label: v1 → v2 → ...` under `bad` unless the values strictly rise; keep up to two that do in `shown`."""
    line = label + " → ".join(_g(v) for v in values)
    if not all(a < b for a, b in zip(values, values[1:])):
        bad.append(line)
    elif len(shown) < 2:
        shown.append(line)


def check_frequency_order(t: dict[str, Any]) -> Outcome:
    """L3 on an `lm.sweep` run: at every (task, size), final train loss strictly lower at every higher frequency."""
    res = t["results"]
    rows = lm_rows(res)
    loss = means(res, ("task", "size", "grid_frequency"), "train_loss", rows)
    checked, bad, shown = 0, [], []
    for task in dict.fromkeys(res["task"][i] for i in rows):
        task_rows = [i for i in rows if res["task"][i] == task]
        freqs = sorted({res["grid_frequency"][i] for i in task_rows}, reverse=True)
        if len(freqs) < 2:
            continue
        for size in sizes_by_params(res, task_rows):
            checked += 1
            rising(f"{task}, {size}: ", [loss.get((task, size, f), math.nan) for f in freqs], bad, shown)
    if not checked:
        return Outcome(NOT_RUN, "needs two frequencies")
    if bad:
        return Outcome(NOT_REPRODUCED, f"out of order at {len(bad)} of {checked} (task, size; final train loss, "
                       "highest frequency first): " + "; ".join(bad[:2]))
    return Outcome(REPRODUCED, f"in order at {checked} of {checked} (task, size), highest frequency first: "
                   + "; ".join(shown))


def check_matched_gap(t: dict[str, Any]) -> Outcome:
    """L4 (Fig. 6b) on an `lm.sweep` run with burst gaps: at every (task, frequency, size), final test loss strictly
    higher at every larger gap."""
    res = t["results"]
    rows = [i for i in lm_rows(res, gap=None) if res["gap"][i] > 0]
    gaps = sorted({res["gap"][i] for i in rows})
    if len(gaps) < 2:
        return Outcome(NOT_RUN, "needs two burst gaps N > 0")
    loss = means(res, ("task", "grid_frequency", "size", "gap"), "test_loss", rows)
    checked, bad, shown = 0, [], []
    for task, f, size in dict.fromkeys(k[:3] for k in loss):
        checked += 1
        rising(f"{task}, {size}, N = {' → '.join(map(str, gaps))}: ",
               [loss.get((task, f, size, g), math.nan) for g in gaps], bad, shown)
    if bad:
        return Outcome(NOT_REPRODUCED, f"not rising at {len(bad)} of {checked} (final test loss by gap): "
                       + "; ".join(bad[:2]))
    return Outcome(REPRODUCED, f"rising at {checked} of {checked} (final test loss by gap): " + "; ".join(shown))


def curve_at(heldout: list[float], task_loss: list[float], level: float) -> float:
    """The task loss where a training curve (in step order) first reaches held-out loss <= level, interpolated
    linearly in the held-out loss between the evaluations around it; NaN if it never does."""
    for i, h in enumerate(heldout):
        if h <= level:
            if i == 0 or heldout[i - 1] == h:
                return task_loss[i]
            w = (heldout[i - 1] - level) / (heldout[i - 1] - h)
            return task_loss[i - 1] + w * (task_loss[i] - task_loss[i - 1])
    return math.nan


def task_vs_lm(curves: dict[str, list], task: str, frequency: float, size: str) -> tuple[list[float], list[float]]:
    """(held-out loss, task test loss) by step, means over seeds, for one (task, frequency, size) at gap 0."""
    rows = [i for i in lm_rows(curves) if curves["task"][i] == task and curves["grid_frequency"][i] == frequency
            and curves["size"][i] == size]
    h = means(curves, ("step",), "heldout_loss", rows)
    y = means(curves, ("step",), "test_loss", rows)
    steps = sorted(set(h) & set(y))
    return [h[s] for s in steps], [y[s] for s in steps]


def equal_lm_loss(curves: dict[str, list], task: str) -> dict[str, Any] | None:
    """L5's measurement for one task at its lowest frequency: the smallest and largest size's task loss at
    h* = the larger of their lowest held-out losses (the lowest LM loss both reach); None without the axes."""
    rows = [i for i in lm_rows(curves) if curves["task"][i] == task]
    if not rows:
        return None
    f = min(curves["grid_frequency"][i] for i in rows)
    sizes = sizes_by_params(curves, [i for i in rows if curves["grid_frequency"][i] == f])
    if len(sizes) < 2:
        return None
    (hs, ys), (hl, yl) = (task_vs_lm(curves, task, f, s) for s in (sizes[0], sizes[-1]))
    if not hs or not hl:
        return None
    level = max(min(hs), min(hl))
    return {"frequency": f, "small": sizes[0], "large": sizes[-1], "level": level,
            "small_loss": curve_at(hs, ys, level), "large_loss": curve_at(hl, yl, level)}


def check_equal_lm_loss(t: dict[str, Any]) -> Outcome:
    """L5 (Fig. 22) on an `lm.sweep` run, every task: the largest size's task loss is lower at h*."""
    curves = t["curves"]
    found = [(task, equal_lm_loss(curves, task)) for task in dict.fromkeys(curves["task"][i] for i in lm_rows(curves))]
    found = [(task, e) for task, e in found if e is not None]
    if not found:
        return Outcome(NOT_RUN, "needs two sizes and the held-out loss")
    lines, ok = [], True
    for task, e in found:
        ok &= e["large_loss"] < e["small_loss"]
        lines.append(f"{task} at {e['frequency']:g}, held-out loss {e['level']:.3g}: {e['small']} "
                     f"{e['small_loss']:.3g}, {e['large']} {e['large_loss']:.3g}")
    return Outcome(REPRODUCED if ok else NOT_REPRODUCED, "; ".join(lines))


def check_threshold_power_law(t: dict[str, Any], kind: str) -> Outcome:
    """L6 on an `lm.sweep` run for one task kind: gamma > 0 with its bootstrap interval above 0, over at least
    THRESHOLD_SIZES sizes that cross THRESHOLD_ACCURACY inside the grid; the held-out factor errors in the numbers."""
    from raretask.config import ConfigError
    from raretask.lm.advise import fit_thresholds, interval, task_grid

    try:
        grid = task_grid(t["results"], kind)
    except ConfigError as e:
        return Outcome(NOT_RUN, f"no {kind} task in the sweep" if "not a task" in str(e) else "needs two sizes")
    fit = fit_thresholds(grid, THRESHOLD_ACCURACY)
    if len(fit.used) < THRESHOLD_SIZES or fit.law is None:
        return Outcome(NOT_RUN, f"{len(fit.used)} of {len(fit.sizes)} sizes cross {THRESHOLD_ACCURACY:g} inside the "
                                f"frequency grid (needs {THRESHOLD_SIZES})")
    lo, hi = interval(fit.boot_gamma, THRESHOLD_LEVEL) or (None, None)
    ok = fit.law.gamma > 0 and lo is not None and lo > 0
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    held = ", ".join(f"{h['size']} x{h['factor']:.2f}" for h in fit.held_out)
    return Outcome(REPRODUCED if ok else NOT_REPRODUCED,
                   f"gamma = {fit.law.gamma:.2f} ({THRESHOLD_LEVEL:.0%} interval {fmt(lo)} to {fmt(hi)}) over "
                   f"{len(fit.used)} sizes; held-out f* error factors: {held}")

# --------------------------------------------------------------------------------- why larger models learn it


def size_order(sizes: Iterable[str], params: dict[str, float | None]) -> list[str]:
    """Sizes smallest first: by parameter count where known, else by the model ladder's order (raretask.lm.models
    PRESETS), then by name."""
    from raretask.lm.models import PRESETS

    ladder = list(PRESETS)

    def key(s: str) -> tuple:
        p = params.get(s)
        return (0 if _finite(p) else 1, p if _finite(p) else 0, ladder.index(s) if s in ladder else len(ladder), s)

    return sorted(set(sizes), key=key)


def _params_by_size(cols: dict[str, list]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for s, p in zip(cols["size"], cols.get("params") or [None] * len(cols["size"])):
        if _finite(p):
            out[s] = max(float(p), out.get(s) or 0.0)
        else:
            out.setdefault(s, None)
    return out


def check_embed(t: dict[str, Any]) -> Outcome:
    """L7 on an `lm.features` analysis: {"features": features.parquet with a `params` column (None if unknown)}."""
    f = t["features"]
    rows = [i for i in range(len(f.get("metric", []))) if f["metric"][i] == "order_r2"]
    if not rows:
        return Outcome(NOT_RUN, "no comparison task analysed")
    last: dict[str, int] = {}
    for i in rows:
        last[f["cell"][i]] = max(last.get(f["cell"][i], -1), f["step"][i])
    best: dict[tuple, float] = {}  # (task, frequency, cell) -> best layer's R² at the cell's last step
    sizes_of: dict[str, str] = {}
    for i in rows:
        if f["step"][i] == last[f["cell"][i]] and _finite(f["value"][i]):
            key = (f["task"][i], f["frequency"][i], f["cell"][i])
            best[key] = max(best.get(key, -math.inf), float(f["value"][i]))
            sizes_of[f["cell"][i]] = f["size"][i]
    params = _params_by_size(f)
    checked, bad, shown = 0, [], []
    for task, freq in dict.fromkeys((k[0], k[1]) for k in best):
        by_size: dict[str, list[float]] = {}
        for (tk, fq, cell), v in best.items():
            if (tk, fq) == (task, freq):
                by_size.setdefault(sizes_of[cell], []).append(v)
        order = size_order(by_size, params)
        if len(order) < 2:
            continue
        checked += 1
        values = [float(np.mean(by_size[s])) for s in order]
        line = f"{task} at {freq:g}: " + " → ".join(f"{v:.2f} ({s})" for s, v in zip(order, values))
        (shown if monotone(values, +1, EMBED_SLACK) else bad).append(line)
    if not checked:
        return Outcome(NOT_RUN, "needs two sizes of one comparison task and frequency")
    if bad:
        return Outcome(NOT_REPRODUCED, f"not rising at {len(bad)} of {checked}: " + "; ".join(bad[:2]))
    return Outcome(REPRODUCED, f"rising at {checked} of {checked}: " + "; ".join(shown[:2]))


def _groups(cols: dict[str, list], rows: list[int]) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    for i in rows:
        out.setdefault((cols["task"][i], cols["frequency"][i], cols["gap"][i]), []).append(i)
    return out


def window_mean(lined: dict[str, list], rows: list[int], metric: str = "cos_nt",
                window: int = INTERFERENCE_WINDOW) -> dict[str, float]:
    """Per size: the count-weighted mean of `metric` over k = 0 .. window of after_injection.parquet's rows."""
    acc: dict[str, list[float]] = {}
    for i in rows:
        if lined["metric"][i] == metric and lined["k"][i] <= window and _finite(lined["mean"][i]):
            a = acc.setdefault(lined["size"][i], [0.0, 0.0])
            a[0] += lined["mean"][i] * lined["count"][i]
            a[1] += lined["count"][i]
    return {s: a[0] / a[1] for s, a in acc.items() if a[1] > 0}


def check_interference(t: dict[str, Any]) -> Outcome:
    """L8 on an `lm.interference` analysis: {"after_injection": after_injection.parquet}."""
    lined = t["after_injection"]
    if not lined.get("k"):
        return Outcome(NOT_RUN, "no monitored run (train with a [monitor] table)")
    params = _params_by_size(lined)
    checked, bad, shown = 0, [], []
    for (task, freq, gap), rows in _groups(lined, list(range(len(lined["k"])))).items():
        m = window_mean(lined, rows)
        order = size_order(m, params)
        if len(order) < 2:
            continue
        checked += 1
        small, large = order[0], order[-1]
        line = (f"{task} at {freq:g}, N = {gap}: mean cos(g_nt, g_r) {m[small]:+.3f} ({small}), "
                f"{m[large]:+.3f} ({large})")
        (shown if m[large] < m[small] - INTERFERENCE_MARGIN else bad).append(line)
    if not checked:
        return Outcome(NOT_RUN, "needs two monitored sizes of one task, frequency and gap")
    if bad:
        return Outcome(NOT_REPRODUCED, f"not lower at the largest size at {len(bad)} of {checked}: "
                       + "; ".join(bad[:2]))
    return Outcome(REPRODUCED, "; ".join(shown[:2]))


def check_retain_longer(t: dict[str, Any]) -> Outcome:
    """L9 on an `lm.retention` analysis: {"decay": decay.parquet}."""
    d = t["decay"]
    if not d.get("tau"):
        return Outcome(NOT_RUN, "no burst-schedule run")
    params = _params_by_size(d)
    checked, bad, shown, unfit = 0, [], [], []
    for (task, freq, gap), rows in _groups(d, list(range(len(d["tau"])))).items():
        taus: dict[str, list[float]] = {}
        for i in rows:
            taus.setdefault(d["size"][i], []).append(float(d["tau"][i]))
        order = size_order(taus, params)
        if len(order) < 2:
            continue
        small, large = order[0], order[-1]
        a, b = float(np.mean(taus[small])), float(np.mean(taus[large]))
        line = f"{task} at {freq:g}, N = {gap}: tau {a:.3g} ({small}), {b:.3g} ({large})"
        if math.isnan(a) or math.isnan(b):
            unfit.append(line)
            continue
        checked += 1
        (shown if b > RETENTION_RATIO * a else bad).append(line)
    if not checked:
        return Outcome(NOT_RUN, "needs two sizes with a fitted decay constant" + (f" ({unfit[0]})" if unfit else ""))
    if bad:
        return Outcome(NOT_REPRODUCED, f"not longer at the largest size at {len(bad)} of {checked}: "
                       + "; ".join(bad[:2]))
    return Outcome(REPRODUCED, "; ".join(shown[:2]))
