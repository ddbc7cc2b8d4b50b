"""`raretask advise SWEEP_DIR`: from a finished LM sweep, how large a model, or how frequent a task, before the task
is learned? Pure functions on the sweep's results table (raretask.lm.sweep's results.parquet columns), plus one
loader (`read_sweep_tables`) that gathers what they need from the directory.

    tables = read_sweep_tables(Path("runs/lm-cpu"))
    a = advise_sweep(tables, "comparison", size="cpu-2m")          # an Advice: the lowest frequency, with interval
    fit = fit_thresholds(task_grid(tables.results, "comparison"))  # per-size f*, the power law, bootstrap, held-out

Per size N (non-embedding parameters, `non_embedding_params`), the threshold frequency f*(N) is where the mean over
seeds of the test accuracy on the task's label set (`test_acc_labels`, at each cell's last evaluation, gap-0 cells)
crosses the target accuracy:

  crosses  f_hi = the lowest grid frequency such that the accuracy is >= target there and at every higher grid
           frequency (the run down from the top), f_lo the grid frequency just below it (accuracy < target); f* is
           interpolated linearly in log f between (f_lo, acc_lo) and (f_hi, acc_hi). A dip and recovery further
           down the grid is not a crossing: learning needs every higher frequency to be learned too.
  above    the accuracy is below target even at the highest grid frequency: f* > max grid (censored).
  below    the accuracy is >= target at every grid frequency: f* < min grid (censored).

Censored sizes are left out of the fit (their bound is reported next to the fit's prediction there, and whether the
two agree). The fit is f*(N) = a N^-gamma, least squares in log-log over the sizes that cross (theory.fit_power_law;
needs two). Its uncertainty is a bootstrap over seeds and grid points: each of RESAMPLES resamples (a seeded numpy
Generator) draws every cell's seeds with replacement and recomputes each size's f*, then draws the crossing sizes
with replacement (a case bootstrap over the fit's points, so that the scatter between sizes counts, not only seed
noise) and refits; resamples with fewer than two distinct sizes are dropped. Intervals are the LEVEL percentile
interval (inverted CDF) of the resampled quantity; a bound at infinity (gamma <= 0 in a resample, for the size
question) is null.

Questions (`advise_sweep`):
  --frequency F   "size": the smallest N with f*(N) <= F, N = (a / F)^(1 / gamma); an integer parameter count.
  --size S        "frequency": f*(N_S) for a size of the sweep, a preset of the ladder or a parameter count; with
                  the upsampling factor over the task's natural rate in the corpus when that rate is known (the
                  cells' meta.json natural_occurrences, train + test instances, over the corpus' training tokens).
  neither         "exponent": gamma itself.
An answer outside the measured sizes (the fit's smallest to largest N) is `extrapolated` with a warning.
`leave_one_out` refits without each crossing size in turn and predicts its f*: the out-of-sample error as a factor.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raretask import runs, theory
from raretask.advise import Advice
from raretask.config import ConfigError
from raretask.lm import budget as budgets

TARGET_ACCURACY = 0.8
RESAMPLES = 1000
LEVEL = 0.90
SEED = 0  # of the bootstrap's Generator: the same sweep gives the same interval
CROSSES, ABOVE, BELOW = "crosses", "above", "below"

# ------------------------------------------------------------------------------------------------------ tables


@dataclass
class SweepTables:
    """What advise reads from a sweep directory: the results table and, per task, its natural rate per token in
    the corpus (None when unknown) with a note saying where it came from or why it is missing."""

    results: dict[str, list]
    natural: dict[str, float | None] = field(default_factory=dict)
    natural_note: dict[str, str] = field(default_factory=dict)
    arch: str = "olmo_0724"


def is_sweep_dir(path: Path) -> bool:
    """A directory whose meta.json says it is an LM sweep."""
    try:
        return json.loads((Path(path) / "meta.json").read_text()).get("kind") == "lm.sweep"
    except (OSError, ValueError):
        return False


def read_sweep_tables(sweep_dir: Path) -> SweepTables:
    """results.parquet of a finished LM sweep, with each task's natural rate: the cells' meta.json
    natural_occurrences (train + test instances of the task already in the training split) over the training
    split's tokens (the corpus manifest named by config.toml's data.manifest)."""
    d = Path(sweep_dir)
    if not is_sweep_dir(d):
        raise ConfigError(f"{d}: not an LM sweep directory (no meta.json of kind lm.sweep)")
    if not (d / "results.parquet").is_file():
        raise ConfigError(f"{d}: no results.parquet (is the sweep finished?)")
    results = runs.read_table(d / "results.parquet")
    cfg: dict[str, Any] = {}
    if (d / "config.toml").is_file():
        cfg = tomllib.loads((d / "config.toml").read_text())
    tables = SweepTables(results, arch=str(cfg.get("model", {}).get("arch", "olmo_0724")))
    corpus_tokens = manifest_train_tokens(cfg.get("data", {}).get("manifest"))
    counts: dict[str, int] = {}
    for cell in dict.fromkeys(results.get("cell", [])):
        try:
            natural = json.loads((d / "cells" / str(cell) / "meta.json").read_text()).get("natural_occurrences")
        except (OSError, ValueError):
            continue
        for task, c in (natural or {}).items():
            counts.setdefault(task, int(c.get("train", 0)) + int(c.get("test", 0)))
    for task in dict.fromkeys(t for t in results.get("task", []) if t is not None):
        if task not in counts:
            tables.natural[task], tables.natural_note[task] = None, "no natural_occurrences in the cells' meta.json"
        elif corpus_tokens is None:
            tables.natural[task], tables.natural_note[task] = None, "the corpus manifest is not readable"
        elif counts[task] == 0:
            tables.natural[task] = None
            tables.natural_note[task] = f"0 natural occurrences in the corpus' {corpus_tokens:,} training tokens"
        else:
            tables.natural[task] = counts[task] / corpus_tokens
            tables.natural_note[task] = f"{counts[task]} natural occurrences in {corpus_tokens:,} training tokens"
    return tables


def manifest_train_tokens(manifest: str | None) -> int | None:
    """The training split's token count from a corpus manifest directory, or None."""
    if not manifest:
        return None
    try:
        data = json.loads((Path(manifest) / "manifest.json").read_text())
        return int(data["files"]["train"]["tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -------------------------------------------------------------------------------------------------------- grid


@dataclass
class Grid:
    """One task's accuracy grid: acc[s, f, r] = test accuracy of size s (smallest N first) at frequency f
    (ascending) and seed r, NaN where that cell is missing."""

    task: str
    sizes: list[str]
    params: np.ndarray       # (S,) non-embedding parameters
    total_params: np.ndarray  # (S,) all parameters
    frequencies: np.ndarray  # (F,) grid values, ascending, in `unit`
    seeds: list[int]
    acc: np.ndarray          # (S, F, R)
    unit: str
    tokens: float            # tokens each run trained on (median of tokens_seen)
    tokens_per_batch: float  # tokens_seen / step


def task_rows(results: dict[str, list], task: str) -> list[int]:
    """Rows of `task` (its name; else every task of that kind) at its own schedule (gap 0)."""
    n = len(results.get("task", []))
    gaps = results.get("gap") or [0] * n
    kinds = results.get("kind") or [None] * n
    named = [i for i in range(n) if results["task"][i] == task and gaps[i] == 0]
    return named or [i for i in range(n) if kinds[i] == task and gaps[i] == 0]


def task_grid(results: dict[str, list], task: str) -> Grid:
    """The accuracy grid of `task`; ConfigError for a task not in the sweep or fewer than two sizes."""
    n_col = "non_embedding_params" if "non_embedding_params" in results else "params"  # tables before the count
    rows = [i for i in task_rows(results, task) if results[n_col][i] is not None]
    if not rows:
        known = sorted({t for t in results.get("task", []) if t is not None})
        raise ConfigError(f"--task: {task!r} is not a task of the sweep (tasks: {', '.join(known) or 'none'})")
    params = {results["size"][i]: float(results[n_col][i]) for i in rows}
    sizes = sorted(params, key=lambda s: (params[s], s))
    if len(sizes) < 2:
        raise ConfigError(f"--task: the sweep has {len(sizes)} size for {task!r}; a power law in size needs >= 2")
    freqs = sorted({float(results["grid_frequency"][i]) for i in rows})
    seeds = sorted({int(results["seed"][i]) for i in rows})
    acc = np.full((len(sizes), len(freqs), len(seeds)), np.nan)
    for i in rows:
        v = results["test_acc_labels"][i]
        if v is not None and math.isfinite(v):
            acc[sizes.index(results["size"][i]), freqs.index(float(results["grid_frequency"][i])),
                seeds.index(int(results["seed"][i]))] = float(v)
    total = {results["size"][i]: float(results.get("params", [None] * len(results["task"]))[i] or math.nan)
             for i in rows}
    tokens = [float(results["tokens_seen"][i]) for i in rows if results.get("tokens_seen")
              and results["tokens_seen"][i] is not None]
    per_batch = [float(results["tokens_seen"][i]) / results["step"][i] for i in rows if results.get("step")
                 and results.get("tokens_seen") and results["step"][i] and results["tokens_seen"][i] is not None]
    units = {results["unit"][i] for i in rows} if "unit" in results else {"per_token"}
    return Grid(task=task, sizes=sizes, params=np.array([params[s] for s in sizes]),
                total_params=np.array([total[s] for s in sizes]), frequencies=np.array(freqs), seeds=seeds,
                acc=acc, unit=units.pop() if len(units) == 1 else "mixed",
                tokens=float(np.median(tokens)) if tokens else math.nan,
                tokens_per_batch=float(np.median(per_batch)) if per_batch else math.nan)


# ------------------------------------------------------------------------------------------------- thresholds


def crossing(frequencies: np.ndarray, acc: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """(f*, status) of accuracy rows acc[..., F] over ascending `frequencies` (the module docstring's rule):
    status 0 crosses (f* interpolated in log f), 1 above (f* > max grid, f* NaN), 2 below (f* < min grid, NaN)."""
    acc = np.asarray(acc, float)
    x = np.log(np.asarray(frequencies, float))
    ok = acc >= target
    run = np.cumprod(ok[..., ::-1], axis=-1).sum(axis=-1)  # how many of the highest frequencies are learned
    F = acc.shape[-1]
    status = np.where(run == 0, 1, np.where(run == F, 2, 0))
    hi = np.clip(F - run, 1, F - 1)
    a_hi = np.take_along_axis(acc, hi[..., None], -1)[..., 0]
    a_lo = np.take_along_axis(acc, (hi - 1)[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # rows that do not cross: discarded
        w = (target - a_lo) / (a_hi - a_lo)
        fstar = np.exp(x[hi - 1] + w * (x[hi] - x[hi - 1]))
    return np.where(status == 0, fstar, np.nan), status


@dataclass(frozen=True)
class Threshold:
    """One size's threshold frequency (mean over seeds), its status, and each seed's own f* (None: censored)."""

    size: str
    params: float
    fstar: float | None
    status: str
    seed_fstar: list[float | None]
    accuracy: dict[float, float]  # grid frequency -> mean test accuracy


STATUS = {0: CROSSES, 1: ABOVE, 2: BELOW}


def size_threshold(grid: Grid, s: int, acc: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """crossing() of size s over the frequencies it has: acc (..., F) with NaN columns for missing cells."""
    have = np.isfinite(grid.acc[s]).any(axis=-1)
    if have.sum() < 2:  # status 3: too few frequencies to bracket a crossing
        return np.full(acc.shape[:-1], np.nan), np.full(acc.shape[:-1], 3)
    return crossing(grid.frequencies[have], acc[..., have], target)


def thresholds(grid: Grid, target: float = TARGET_ACCURACY) -> list[Threshold]:
    """Per size: f* of the mean-over-seeds accuracy and of each seed alone."""
    out = []
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(grid.acc, axis=-1)  # (S, F)
    for s, size in enumerate(grid.sizes):
        f, st = size_threshold(grid, s, mean[s], target)
        per_seed, _ = size_threshold(grid, s, np.moveaxis(grid.acc[s], -1, 0), target)
        out.append(Threshold(size, float(grid.params[s]), None if np.isnan(f) else float(f),
                             STATUS.get(int(st), "too few frequencies"),
                             [None if np.isnan(v) else float(v) for v in np.atleast_1d(per_seed)],
                             {float(fr): float(m) for fr, m in zip(grid.frequencies, mean[s]) if np.isfinite(m)}))
    return out


# -------------------------------------------------------------------------------------------------------- fits


@dataclass(frozen=True)
class PowerLaw:
    """f*(N) = a N^-gamma."""

    a: float
    gamma: float

    def frequency(self, n: float | np.ndarray) -> np.ndarray:
        return self.a * np.asarray(n, float) ** -self.gamma

    def size(self, f: float) -> float:
        """The smallest N with f*(N) <= f; inf when f* does not fall with N (gamma <= 0) and f is below it."""
        if self.gamma <= 0:
            return 0.0 if f >= self.a else math.inf
        return (self.a / f) ** (1.0 / self.gamma)


def fit_law(params: np.ndarray, fstar: np.ndarray) -> PowerLaw:
    a, gamma = theory.fit_power_law(params, fstar)
    return PowerLaw(a, gamma)


def leave_one_out(measured: list[Threshold]) -> list[dict[str, Any]]:
    """For each crossing size: fit on the other crossing sizes (>= 2), predict its f*; the error as a ratio
    (predicted / measured) and a factor (max(ratio, 1 / ratio), 1 = exact). Empty with fewer than 3 crossing sizes."""
    pts = [t for t in measured if t.status == CROSSES]
    if len(pts) < 3:
        return []
    out = []
    for t in pts:
        rest = [u for u in pts if u is not t]
        law = fit_law(np.array([u.params for u in rest]), np.array([u.fstar for u in rest]))
        pred = float(law.frequency(t.params))
        ratio = pred / t.fstar
        out.append({"size": t.size, "params": t.params, "measured": t.fstar, "predicted": pred, "ratio": ratio,
                    "factor": max(ratio, 1.0 / ratio)})
    return out


def weighted_lines(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise weighted least squares y = c + slope x: (intercepts, slopes) of (B, S) rows; NaN where fewer than
    two distinct x carry weight."""
    n = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(1) / n
        my = np.nansum(w * y, 1) / n
        dx = x - mx[:, None]
        sxx = (w * dx**2).sum(1)
        slope = np.nansum(w * dx * (y - my[:, None]), 1) / sxx
    ok = sxx > 1e-12 * np.maximum(1.0, (w * x**2).sum(1))
    return np.where(ok, my - slope * mx, np.nan), np.where(ok, slope, np.nan)


def bootstrap(grid: Grid, target: float = TARGET_ACCURACY, resamples: int = RESAMPLES,
              seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(a, gamma) of every resample (module docstring: seeds within each cell, then the crossing sizes), NaN for
    dropped resamples."""
    rng = np.random.default_rng(seed)
    S, F, _ = grid.acc.shape
    fstar = np.full((resamples, S), np.nan)
    for s in range(S):
        acc = np.full((resamples, F), np.nan)
        for f in range(F):
            v = grid.acc[s, f][np.isfinite(grid.acc[s, f])]
            if len(v):
                acc[:, f] = v[rng.integers(0, len(v), (resamples, len(v)))].mean(1)
        fstar[:, s], _ = size_threshold(grid, s, acc, target)
    crossing_sizes = np.isfinite(fstar)
    weights = np.zeros((resamples, S))
    for b in range(resamples):  # a case bootstrap over the sizes that cross in this resample
        idx = np.flatnonzero(crossing_sizes[b])
        if len(idx):
            weights[b, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)))
    with np.errstate(divide="ignore", invalid="ignore"):
        logf = np.where(crossing_sizes, np.log(fstar), 0.0)
    c, slope = weighted_lines(np.log(grid.params)[None, :], logf, weights)
    return np.exp(c), -slope


def interval(values: np.ndarray, level: float = LEVEL) -> list[float | None] | None:
    """The level percentile interval (inverted CDF) of the finite-or-infinite values, NaN dropped; an infinite
    bound is None. None when no value is left."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if not len(v):
        return None
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return [None if not math.isfinite(x) else float(x) for x in (lo, hi)]


@dataclass
class ThresholdFit:
    """A task's thresholds, the power law over the crossing sizes (None with fewer than two), its bootstrap and the
    held-out errors."""

    grid: Grid
    target: float
    sizes: list[Threshold]
    law: PowerLaw | None
    boot_a: np.ndarray
    boot_gamma: np.ndarray
    held_out: list[dict[str, Any]]

    @property
    def used(self) -> list[Threshold]:
        return [t for t in self.sizes if t.status == CROSSES]

    def measured_range(self) -> tuple[float, float]:
        n = [t.params for t in self.used]
        return min(n), max(n)

    def boot_frequency(self, n: float | np.ndarray) -> np.ndarray:
        """(B, ...) f*(N) under every kept resample."""
        ok = np.isfinite(self.boot_gamma)
        n = np.asarray(n, float)
        return self.boot_a[ok].reshape(-1, *[1] * n.ndim) * n[None] ** -self.boot_gamma[ok].reshape(-1, *[1] * n.ndim)

    def censored(self) -> list[dict[str, Any]]:
        """Sizes left out of the fit: their bound, the fit's prediction there, and whether the two agree."""
        g = self.grid.frequencies
        out = []
        for t in self.sizes:
            if t.status not in (ABOVE, BELOW):
                continue
            pred = None if self.law is None else float(self.law.frequency(t.params))
            bound = float(g[-1] if t.status == ABOVE else g[0])
            agrees = None if pred is None else (pred > bound if t.status == ABOVE else pred < bound)
            out.append({"size": t.size, "params": t.params, "status": t.status,
                        "bound": (">" if t.status == ABOVE else "<") + f" {bound:g}", "fit": pred, "agrees": agrees})
        return out

    def evidence(self) -> dict[str, Any]:
        kept = int(np.isfinite(self.boot_gamma).sum())
        fit = None if self.law is None else {
            "gamma": self.law.gamma, "gamma_interval": interval(self.boot_gamma), "coefficient": self.law.a,
            "sizes_used": [t.size for t in self.used], "resamples": len(self.boot_gamma), "resamples_kept": kept,
            "level": LEVEL, "bootstrap_seed": SEED}
        return {"target_accuracy": self.target, "unit": self.grid.unit, "tokens_per_run": self.grid.tokens,
                "frequencies": self.grid.frequencies.tolist(), "seeds": self.grid.seeds,
                "sizes": [{"size": t.size, "params": t.params, "threshold": t.fstar, "status": t.status,
                           "seed_thresholds": t.seed_fstar,
                           "accuracy": {f"{f:g}": a for f, a in t.accuracy.items()}} for t in self.sizes],
                "fit": fit, "censored": self.censored(), "leave_one_out": self.held_out}


def fit_thresholds(grid: Grid, target: float = TARGET_ACCURACY, resamples: int = RESAMPLES,
                   seed: int = SEED) -> ThresholdFit:
    check_target(target)
    sizes = thresholds(grid, target)
    used = [t for t in sizes if t.status == CROSSES]
    law = fit_law(np.array([t.params for t in used]), np.array([t.fstar for t in used])) if len(used) >= 2 else None
    a, gamma = bootstrap(grid, target, resamples, seed) if law is not None else (np.zeros(0), np.zeros(0))
    return ThresholdFit(grid, target, sizes, law, a, gamma, leave_one_out(sizes))


def check_target(target: float) -> None:
    if not (math.isfinite(target) and 0.0 < target < 1.0):
        raise ConfigError(f"--target-acc: must be in (0, 1), got {target}")


# ----------------------------------------------------------------------------------------------------- answers


def resolve_size(grid: Grid, size: str, arch: str) -> tuple[str, float, float | None]:
    """(label, non-embedding N, all parameters or None) of a size of the sweep, a preset, or a parameter count."""
    if size in grid.sizes:
        s = grid.sizes.index(size)
        total = float(grid.total_params[s])
        return size, float(grid.params[s]), total if math.isfinite(total) else None
    from raretask.lm.models import PRESETS

    if size in PRESETS:
        from raretask.lm.models import LMModelConfig, count_params

        n = count_params(LMModelConfig(preset=size, arch=arch), PRESETS[size].vocab_size)
        return size, float(n.non_embedding_params), float(n.params)
    try:
        value = float(size)
    except ValueError:
        raise ConfigError(f"--size: {size!r} is neither a size of the sweep, a preset ({', '.join(PRESETS)}) nor "
                          f"a parameter count") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"--size: a parameter count must be > 0, got {size}")
    return f"{value:g} parameters", value, None


def natural_rate(tables: SweepTables, grid: Grid) -> tuple[float | None, str]:
    """The task's natural rate in the sweep's unit (None when unknown), and where it came from."""
    rate = tables.natural.get(grid.task)
    note = tables.natural_note.get(grid.task, "unknown")
    if rate is not None and grid.unit == "per_batch":
        rate = rate * grid.tokens_per_batch
    return rate, note


def advise_sweep(tables: SweepTables, task: str, frequency: float | None = None, size: str | None = None,
                 target: float = TARGET_ACCURACY, budget: dict[str, Any] | None = None,
                 resamples: int = RESAMPLES, seed: int = SEED) -> Advice:
    """The command's answer on an LM sweep (module docstring). `budget`: {"device", "mfu"} adds the compute and
    device-hours of the run the answer calls for (raretask.lm.budget)."""
    check_target(target)
    if frequency is not None and size is not None:
        raise ConfigError("--frequency: give either --frequency or --size, not both")
    if frequency is not None and not (math.isfinite(frequency) and frequency > 0):
        raise ConfigError(f"--frequency: must be > 0, got {frequency}")
    grid = task_grid(tables.results, task)
    fit = fit_thresholds(grid, target, resamples, seed)
    evidence = fit.evidence()
    if fit.law is None:
        where = ", ".join(f"{t.size}: {t.status}" for t in fit.sizes)
        raise ConfigError(f"--target-acc: only {len(fit.used)} size(s) of {task!r} cross {target:g} inside the "
                          f"frequency grid; the power law needs 2 ({where})")
    law, (lo, hi) = fit.law, fit.measured_range()
    warning = None
    if frequency is None and size is None:
        return Advice(task=task, question="exponent", answer=law.gamma, interval=_pair(interval(fit.boot_gamma)),
                      evidence={**evidence, "warning": None})
    if frequency is not None:
        question = "size"
        n = law.size(frequency)
        ok = np.isfinite(fit.boot_gamma)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            boot = np.where(fit.boot_gamma[ok] > 0, (fit.boot_a[ok] / frequency) ** (1 / fit.boot_gamma[ok]), np.inf)
        answer: Any = None if not math.isfinite(n) else int(math.ceil(n))
        band = interval(boot)
        evidence["asked_frequency"] = frequency
        if answer is None:
            warning = f"f* does not fall with size (gamma = {law.gamma:.3g} <= 0): no size is predicted to learn it"
        extrapolated = answer is None or not lo <= n <= hi
        params, total = n, None
    else:
        label, params, total = resolve_size(grid, size, tables.arch)
        question = "frequency"
        answer = float(law.frequency(params))
        band = interval(fit.boot_frequency(params))
        extrapolated = not lo <= params <= hi
        rate, note = natural_rate(tables, grid)
        evidence.update(asked_size=label, asked_params=params, natural_rate=rate, natural_note=note,
                        upsample=None if rate is None else answer / rate,
                        upsample_interval=None if rate is None or band is None else
                        [None if b is None else b / rate for b in band])
    if extrapolated and warning is None:
        warning = (f"N = {params:.4g} is outside the measured sizes ({lo:.4g} to {hi:.4g} non-embedding "
                   f"parameters): the answer extrapolates the power law")
    evidence["warning"] = warning
    if budget is not None and answer is not None:
        f = frequency if frequency is not None else answer
        evidence["budget"] = budgets.plan(params, total, grid.tokens, f, grid.unit, grid.tokens_per_batch,
                                          budget.get("device", "h100"), budget.get("mfu", 0.4))
    return Advice(task=task, question=question, answer=answer, interval=_pair(band), extrapolated=extrapolated,
                  evidence=evidence)


def _pair(band: list[float | None] | None) -> tuple[Any, Any] | None:
    return None if band is None else (band[0], band[1])
