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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from raretask import runs
from raretask.config import ConfigError
from raretask.report.claims import (AFTER_RESIDUAL_FRACTION, DECAY_TOLERANCE, EMBED_SLACK, HELD_SHARE,
                                    INTERFERENCE_MARGIN, INTERFERENCE_WINDOW, LEARNED_ACCURACY, NOT_LEARNED_ACCURACY,
                                    NOT_REPRODUCED, NOT_RUN, Outcome, REPRODUCED, RETENTION_RATIO, RETENTION_SLACK,
                                    SIGNAL_HELD, SIZE_ADVANTAGE, STAIRCASE_FRACTION, THEORY_TOLERANCE_CAP,
                                    THRESHOLD_ACCURACY, THRESHOLD_LEVEL, THRESHOLD_SIZES, WIDTH_STEPS,
                                    check_all_sizes_learn, check_decay, check_embed, check_equal_lm_loss,
                                    check_frequency_order, check_interference, check_larger_learn_rare,
                                    check_matched_gap, check_rank1_staircase, check_residual_order,
                                    check_retain_longer, check_retention, check_theory_match,
                                    check_threshold_power_law, check_utility_order)
from raretask.report.html import Cell, Section, figure_anchor

CONTAINERS = ("reproduce",)  # kinds of folders of runs: the runs inside them are judged, not the folder
ANALYSES = ("lm.features", "lm.interference", "lm.retention")  # judged also where they sit inside the run analysed

# ------------------------------------------------------------------------------------------------- data types


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
          "cells that learn it, and it is learned at no width whose theory δ_F is above δ*_F(N_r^crit - 1). A run "
          "tests this only with widths on both sides of that threshold and at least one cell that learns the rare "
          "task (else: not run). Theorem 4 itself is an identity at optimal decoders, not a claim a run can fail.",
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
        Claim(f"L6 ({_name})", f"The threshold frequency of {_name} falls with model size as a power law.",
              "lm.sweep", "threshold_power_law.png",
              f"f*(N), where test accuracy (label set, mean over seeds) crosses {THRESHOLD_ACCURACY:g} "
              f"(interpolated in log-frequency), fitted as a N^-gamma over the sizes that cross inside the grid: "
              f"gamma > 0 and its {THRESHOLD_LEVEL:.0%} bootstrap interval (seeds, then sizes, resampled) above 0; "
              f"needs {THRESHOLD_SIZES} such sizes (else not run); each size's held-out error (fit on the others) "
              "reported as a factor in frequency.", _per_kind(check_threshold_power_law, _kind)),
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
    Claim("L7", "Larger models embed the task's feature (Fig. 7a).", "lm.features", "fig7a_order_r2.png",
          f"every comparison task and frequency: the best layer's held-out R² of the value order at the last analysed "
          f"checkpoint (mean over runs of a size) rises with size: no step down by more than {EMBED_SLACK:g}, the "
          f"largest above the smallest by more than {EMBED_SLACK:g}; needs two sizes.", check_embed),
    Claim("L8", "Interference on the task neurons falls with size (Fig. 9).", "lm.interference",
          "fig9_interference.png",
          f"every (task, frequency, gap): the mean of cos(g_nt, g_r) over the {INTERFERENCE_WINDOW} steps after each "
          f"injection is lower at the largest size than at the smallest (by more than {INTERFERENCE_MARGIN:g}); "
          "needs two monitored sizes.", check_interference),
    Claim("L9", "Larger models retain the task longer after an injection (Fig. 8).", "lm.retention",
          "fig8_retention.png",
          f"every (task, frequency, gap) with both fitted: the decay constant tau of the task-loss drop between "
          f"injections is longer at the largest size than {RETENTION_RATIO:g}x the smallest's (inf: nothing "
          "forgotten); needs two sizes.", check_retain_longer),
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
    inside another run (an LM sweep's cells) are left to it. A `raretask reproduce` directory is a folder of runs,
    not a run: what is inside it counts."""
    root = Path(root)
    found: list[tuple[str, Path]] = []
    for meta in sorted(root.rglob("meta.json"), key=lambda p: (len(p.parts), p)):
        run_dir = meta.parent
        if any(run_dir.is_relative_to(d) for k, d in found if k not in CONTAINERS):
            continue
        try:
            kind = json.loads(meta.read_text()).get("kind", "synthetic")
        except (OSError, ValueError):
            continue
        found.append((kind, run_dir))
    found = [(k, d) for k, d in found if k not in CONTAINERS]
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
    "lm.features": lambda d: {"features": with_params(d, _table(d, "features.parquet"))},
    "lm.interference": lambda d: {"after_injection": _optional(d, "after_injection.parquet")},
    "lm.retention": lambda d: {"decay": _table(d, "decay.parquet")},
}


def _optional(run_dir: Path, name: str) -> dict[str, list]:
    """A table a finished analysis may lack (no monitored run): empty then."""
    if not (Path(run_dir) / "meta.json").is_file() or \
            json.loads((Path(run_dir) / "meta.json").read_text()).get("status") != "finished":
        raise ConfigError(f"{run_dir}: unfinished analysis")
    path = Path(run_dir) / name
    return runs.read_table(path) if path.is_file() else {}


def with_params(analysis_dir: Path, cols: dict[str, list]) -> dict[str, list]:
    """cols with a `params` column: each analysed run's parameter count from its meta.json (None where unknown)."""
    params = {}
    for r in json.loads((Path(analysis_dir) / "meta.json").read_text()).get("runs", []):
        meta = Path(r.get("run_dir", "")) / "meta.json"
        params[r["cell"]] = json.loads(meta.read_text()).get("params") if meta.is_file() else None
    return {**cols, "params": [params.get(c) for c in cols.get("cell", [])]}


def load_runs(root: Path) -> tuple[list[RunTables], list[str]]:
    """The tables of every run under root that some claim reads, and a note for each that could not be read (an
    unfinished run)."""
    root = Path(root)
    tables, skipped = [], []
    found = find_runs(root)
    seen = {d for _, d in found}
    for meta in sorted(root.rglob("meta.json")):  # RUN/features, SWEEP/interference, ...: inside what they analyse
        try:
            kind = json.loads(meta.read_text()).get("kind")
        except (OSError, ValueError):
            continue
        if kind in ANALYSES and meta.parent not in seen:
            found.append((kind, meta.parent))
    for kind, run_dir in found:
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
            "them). Each criterion was fixed in raretask/report/claims.py before any run was made; a claim is "
            "reproduced only if every run that can test it meets it.")
    if skipped:
        text += " Runs not read (unfinished?): " + "; ".join(skipped) + "."
    return Section("Scorecard: the paper's claims on these runs", text, table=rows,
                   items=[f"{v.claim.id} ({v.claim.kind}): {v.claim.criterion}" for v in verdicts])
