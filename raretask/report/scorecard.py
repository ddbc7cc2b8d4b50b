"""The paper's claims, judged on your runs.

Each claim's criterion is fixed in this module (the constants below), before any data is seen, and stated on the
report page. A claim is "reproduced" only when every run that can test it meets the criterion, "not reproduced"
when one misses it (the measured numbers say by how much), and "not run" when no run under the root can test it.

    verdicts = judge(Path("runs/demo"))           # every run under the root, found by its meta.json kind
    section = scorecard_section(verdicts)         # the first section of every report page

The checks are pure functions of plain tables (dicts of columns as read from Parquet, summary dicts), so a test can
hold every claim to a table built by hand where it holds and one where it fails: `judge_tables(runs)` takes those
tables, `judge(root)` reads them from the run directories first. Nothing here draws.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from raretask import runs, theory
from raretask.config import ConfigError
from raretask.report.html import Cell, Section, figure_anchor

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


# ------------------------------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Outcome:
    """One run's verdict on one claim, and the measured numbers behind it in a few words."""

    verdict: str
    numbers: str


@dataclass(frozen=True)
class Claim:
    """One testable claim of the paper: the run kind that can test it, the figure showing it, the criterion in
    words (for the page) and the check, a pure function from one run's tables to an Outcome."""

    id: str
    text: str
    kind: str
    figure: str  # a file name in the run directory, or a glob pattern (the first match is linked)
    criterion: str
    check: Callable[[dict[str, Any]], Outcome]


@dataclass(frozen=True)
class RunTables:
    """One run's plain tables (as LOADERS read them for its kind) under a label (its path below the root)."""

    label: str
    kind: str
    tables: dict[str, Any]
    run_dir: Path | None = None


@dataclass(frozen=True)
class Verdict:
    """A claim judged over every run of its kind: the combined verdict, the numbers per run, the figures to see."""

    claim: Claim
    verdict: str
    numbers: str
    figures: tuple[Path, ...] = ()


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
    if not learned:
        return Outcome(NOT_REPRODUCED, text + "; the rare task is learned nowhere")
    if not above:
        return Outcome(NOT_REPRODUCED, text + "; no width above the threshold to show the rare task waiting")
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
            vals = [loss.get((task, size, f), math.nan) for f in freqs]
            checked += 1
            line = f"{task}, {size}: " + " → ".join(_g(v) for v in vals)
            if not all(a < b for a, b in zip(vals, vals[1:])):
                bad.append(line)
            elif len(shown) < 2:
                shown.append(line)
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
        vals = [loss.get((task, f, size, g), math.nan) for g in gaps]
        checked += 1
        line = f"{task}, {size}, N = {' → '.join(map(str, gaps))}: " + " → ".join(_g(v) for v in vals)
        if not all(a < b for a, b in zip(vals, vals[1:])):
            bad.append(line)
        elif len(shown) < 2:
            shown.append(line)
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


# ------------------------------------------------------------------------------------------------- the claims


def _per_kind(check: Callable[[dict[str, Any], str], Outcome], kind: str) -> Callable[[dict[str, Any]], Outcome]:
    return lambda t: check(t, kind)


CLAIMS: list[Claim] = [
    Claim("S1", "Trained students match the Theorem-3 optimum at every width.", "synthetic",
          "observed_vs_predicted.png",
          f"every task: max over widths of |trained - theory| normalised loss (mean over seeds) <= min("
          f"{THEORY_TOLERANCE_CAP:g}, λ_min,k / (2 Tr C_k)).", check_theory_match),
    Claim("S2", "Tasks are learned in the order of their utility π_k λ_k1, not their frequency.", "synthetic",
          "phase_diagram*.png",
          f"every task holds its top direction (mean normalised loss <= 1 - {HELD_SHARE:g} λ_k1 / Tr C_k) first "
          f"within {WIDTH_STEPS} step of the sweep's widths from the smallest trained width >= N*_k(1), and of every "
          "two tasks whose frequency and utility (π_k λ_k1) orders differ and whose N*_k(1) fall on different "
          "trained widths, the higher-utility one is held at a smaller width; not run without such a pair.",
          check_utility_order),
    Claim("S3", "Rank-1 staircase (Fig. 18): each task is first held at its critical width.", "synthetic",
          "phase_diagram*.png",
          f"on a sweep of rank-1 tasks, N_emp(k) = min{{N: s_k > {SIGNAL_HELD:g}}} equals the smallest trained width "
          f">= N_crit(k) = N*_k(1) for >= {STAIRCASE_FRACTION:.0%} of tasks.", check_rank1_staircase),
    Claim("S4", "The rare task rises only once the frequent set's residual δ_F falls below δ*_F (Cor. 5, Prop. 6).",
          "synth.residual", "residual_signal.png",
          f"the rare task's rise comes after δ_F <= δ*_F(N_r^crit - 1) in >= {AFTER_RESIDUAL_FRACTION:.0%} of the "
          "cells that learn it, and it is learned at no width whose theory δ_F is above δ*_F(N_r^crit - 1); at "
          "least one cell of each. Theorem 4 itself is an identity at optimal decoders, not a claim a run can fail.",
          check_residual_order),
    Claim("S5", "Retention (Fig. 4): wider encoders keep more of the rare task, longer gaps keep less.",
          "synth.retention", "retention_final.png",
          f"final raw s_r (mean over seeds) rises with width at every gap and falls with the gap at every width: no "
          f"step the wrong way by more than {RETENTION_SLACK:g}, end to end more than {RETENTION_SLACK:g}.",
          check_retention),
    Claim("S6", "Update-and-forget (Example 7): G common steps shrink θ by (1 - 2η)^G.", "synth.toy", "forget.png",
          f"|θ_G/θ_0 ÷ (1-2η)^G - 1| <= {DECAY_TOLERANCE:.0%} for every η.", check_decay),
]
for _kind, _name in [("comparison", "comparison"), ("modular_addition", "modular addition")]:
    CLAIMS += [
        Claim(f"L1 ({_name})", f"At high frequency every model size learns {_name}.", "lm.sweep",
              "fig5_heatmaps.png",
              f"at the grid's highest frequency every size's test accuracy (label set, mean over seeds) >= "
              f"{LEARNED_ACCURACY:g}; needs two sizes.", _per_kind(check_all_sizes_learn, _kind)),
        Claim(f"L2 ({_name})", f"Rare {_name} is learned only by larger models.", "lm.sweep", "fig5_heatmaps.png",
              f"at some lower frequency the largest size's test accuracy beats the smallest's by >= "
              f"{SIZE_ADVANTAGE:g} and the smallest's is <= {NOT_LEARNED_ACCURACY:g}.",
              _per_kind(check_larger_learn_rare, _kind)),
    ]
CLAIMS += [
    Claim("L3", "Tasks are learned in the order of frequency.", "lm.sweep", "fig6a_task_loss.png",
          "at every task and size, final train loss (mean over seeds) strictly lower at every higher frequency.",
          check_frequency_order),
    Claim("L4", "At a matched rate, larger injection gaps hurt (Fig. 6b).", "lm.sweep",
          "fig6b_matched_frequency.png",
          "at every task, frequency and size, final test loss (mean over seeds) strictly higher at every larger "
          "burst gap N.", check_matched_gap),
    Claim("L5", "At low frequency larger models reach a lower task loss at the same LM loss (Fig. 22).", "lm.sweep",
          "fig22_task_vs_lm_loss.png",
          "every task, at its lowest frequency: at h* = the larger of the smallest and largest size's lowest "
          "held-out losses, the largest size's task test loss (interpolated on its curve) is lower.",
          check_equal_lm_loss),
]


# ------------------------------------------------------------------------------------------------ judging


def judge_tables(run_tables: list[RunTables], claims: list[Claim] | None = None) -> list[Verdict]:
    """Every claim on every run of its kind (pure): "not run" with no such run, or when each says it cannot test
    the claim; otherwise "reproduced" only if every run that tested it reproduces it."""
    out = []
    for claim in CLAIMS if claims is None else claims:
        tested = [(r, claim.check(r.tables)) for r in run_tables if r.kind == claim.kind]
        judged = [(r, o) for r, o in tested if o.verdict != NOT_RUN]
        shown = judged or tested
        label = (lambda r: f"{r.label}: ") if len(shown) > 1 else (lambda r: "")
        numbers = "; ".join(label(r) + o.numbers for r, o in shown) or f"no {claim.kind} run"
        if not judged:
            verdict = NOT_RUN
        else:
            verdict = REPRODUCED if all(o.verdict == REPRODUCED for _, o in judged) else NOT_REPRODUCED
        figures = tuple(found[0] for r, _ in judged if r.run_dir is not None
                        for found in [sorted(r.run_dir.glob(claim.figure))] if found)
        out.append(Verdict(claim, verdict, numbers, figures))
    return out


def find_runs(root: Path) -> list[tuple[str, Path]]:
    """(kind, run directory) of every run under root (root itself included), found by meta.json, in path order; runs
    inside another run (an LM sweep's cells) are left to it."""
    root = Path(root)
    found: list[tuple[str, Path]] = []
    for meta in sorted(root.rglob("meta.json"), key=lambda p: (len(p.parts), p)):
        run_dir = meta.parent
        if any(run_dir.is_relative_to(d) for _, d in found):
            continue
        try:
            kind = json.loads(meta.read_text()).get("kind", "synthetic")
        except (OSError, ValueError):
            continue
        found.append((kind, run_dir))
    return sorted(found, key=lambda kd: kd[1])


def synthetic_tables(cfg: Any, results: dict[str, list]) -> dict[str, Any]:
    """The plain tables of a width sweep (a SynthConfig and its results table): the results, the widths and, per
    grid point, each task's frequency and spectrum (what the synthetic checks and the figures' sentences read)."""
    from raretask.synthetic.train import expand_grid

    points = []
    for assign, gcfg in expand_grid(cfg):
        mixture = gcfg.mixture.build()
        points.append({"grid": assign, "orthogonal": mixture.orthogonal,
                       "tasks": [{"name": n, "frequency": float(f), "eigenvalues": lam.tolist()}
                                 for n, f, lam in zip(mixture.names, mixture.frequencies, mixture.eigenvalues)]})
    return {"results": results, "widths": list(cfg.sweep.widths), "points": points}


def load_synthetic(run_dir: Path) -> dict[str, Any]:
    """synthetic_tables of a `synthetic` run directory."""
    from raretask.config import load_config
    from raretask.synthetic.train import SynthConfig

    cfg = load_config(SynthConfig, Path(run_dir) / "config.toml")
    return synthetic_tables(cfg, _table(run_dir, "results.parquet"))


def _table(run_dir: Path, name: str) -> dict[str, list]:
    path = Path(run_dir) / name
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no {name} (is the run finished?)")
    return runs.read_table(path)


LOADERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "synthetic": load_synthetic,
    "synth.residual": lambda d: {"residual": _table(d, "residual.parquet")},
    "synth.retention": lambda d: {"final": _table(d, "final.parquet")},
    "synth.toy": lambda d: {"decay": _table(d, "decay.parquet")},
    "lm.sweep": lambda d: {"results": _table(d, "results.parquet"), "curves": _table(d, "curves.parquet")},
}


def load_runs(root: Path) -> tuple[list[RunTables], list[str]]:
    """The tables of every run under root that some claim reads, and a note for each that could not be read (an
    unfinished run)."""
    root = Path(root)
    tables, skipped = [], []
    for kind, run_dir in find_runs(root):
        if kind not in LOADERS:
            continue
        label = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
        try:
            tables.append(RunTables(label, kind, LOADERS[kind](run_dir), run_dir))
        except ConfigError as e:
            skipped.append(f"{label}: {e}")
    return tables, skipped


def judge(root: Path) -> list[Verdict]:
    """Every claim judged on the runs under root (a directory of runs, or one run directory)."""
    return judge_tables(load_runs(root)[0])


def section(root: Path) -> Section:
    """The scorecard section of the runs under root (the first section of its report page)."""
    tables, skipped = load_runs(root)
    return scorecard_section(judge_tables(tables), Path(root), skipped)


# ------------------------------------------------------------------------------------------------- the section


VERDICT_CLASS = {REPRODUCED: "ok", NOT_REPRODUCED: "fail", NOT_RUN: "none"}


def scorecard_section(verdicts: list[Verdict], root: Path | None = None, skipped: list[str] | None = None
                      ) -> Section:
    """The page's first section: one row per claim (verdict, measured numbers, a link to the figure on the page),
    the criteria fixed in this module stated below it; `skipped`: runs that could not be read (load_runs)."""
    counts = {v: sum(1 for x in verdicts if x.verdict == v) for v in (REPRODUCED, NOT_REPRODUCED, NOT_RUN)}
    rows: list[list[Any]] = [["claim", "statement", "verdict", "measured", "figure"]]
    for v in verdicts:
        links = []
        for fig in v.figures:
            rel = fig.relative_to(root) if root is not None and fig.is_relative_to(root) else Path(fig.name)
            links.append(Cell(str(rel), href="#" + figure_anchor(str(rel))))
        rows.append([v.claim.id, v.claim.text, Cell(v.verdict, cls=VERDICT_CLASS[v.verdict]), v.numbers,
                     links or "-"])
    text = (f"The paper's testable claims, judged on the runs of this report: {counts[REPRODUCED]} reproduced, "
            f"{counts[NOT_REPRODUCED]} not reproduced, {counts[NOT_RUN]} not run (no run of the kind that can test "
            "them). Each criterion was fixed in raretask/report/scorecard.py before any run was made; a claim is "
            "reproduced only if every run that can test it meets it.")
    if skipped:
        text += " Runs not read (unfinished?): " + "; ".join(skipped) + "."
    return Section("Scorecard: the paper's claims on these runs", text, table=rows,
                   items=[f"{v.claim.id} ({v.claim.kind}): {v.claim.criterion}" for v in verdicts])
