"""raretask.lm.advise on hand-built results tables: thresholds from an accuracy that is linear in log-frequency around
a known f*(N) = A N^-GAMMA (so interpolation is exact), censored sizes, the power law and its bootstrap, leave-one-out,
the three questions and their JSON, and the budget helper."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from raretask.config import ConfigError
from raretask.lm import advise, budget

A, GAMMA = 1.0, 0.5
SIZES = {"s1": 1e4, "s2": 4e4, "s3": 1.6e5, "s4": 6.4e5}  # non-embedding N; f* = 1e-2, 5e-3, 2.5e-3, 1.25e-3
FREQS = [float(f) for f in 1e-4 * 2.0 ** np.arange(10)]    # 1e-4 .. 5.12e-2, steps of x2
TOKENS, TOKENS_PER_BATCH = 1e6, 1000


def accuracy(f: float, fstar: float) -> float:
    """Linear in log f through (f*, 0.8), slope 0.1 per e-fold, clipped to [0.5, 1]: the crossing is exactly f*."""
    return float(np.clip(0.8 + 0.1 * math.log(f / fstar), 0.5, 1.0))


def results_table(sizes: dict[str, float] = SIZES, *, seeds=(0, 1, 2), noise: float = 0.0, fstar=None,
                  task: str = "comparison", freqs=FREQS, seed: int = 0) -> dict[str, list]:
    """results.parquet columns as raretask.lm.sweep writes them (one row per cell x task), accuracy from
    `accuracy(f, fstar(N))` plus N(0, noise) per seed."""
    fstar = fstar or (lambda n: A * n ** -GAMMA)
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in [
        "cell", "size", "tasks", "unit", "grid_frequency", "gap", "seed", "params", "non_embedding_params", "step",
        "tokens_seen", "task", "kind", "frequency", "train_loss", "test_loss", "test_acc_labels", "test_acc_vocab",
        "heldout_loss", "compute"]}
    for size, n in sizes.items():
        for f in freqs:
            for s in seeds:
                acc = float(np.clip(accuracy(f, fstar(n)) + noise * rng.standard_normal(), 0.0, 1.0))
                row = {"cell": f"{size}_f{f:g}_{task}_s{s}", "size": size, "tasks": task, "unit": "per_token",
                       "grid_frequency": f, "gap": 0, "seed": s, "params": int(3 * n), "non_embedding_params": int(n),
                       "step": int(TOKENS / TOKENS_PER_BATCH), "tokens_seen": TOKENS, "task": task, "kind": task,
                       "frequency": f, "train_loss": 1.0 - acc, "test_loss": 1.0 - acc, "test_acc_labels": acc,
                       "test_acc_vocab": acc, "heldout_loss": 5.0, "compute": 6.0 * 3 * n * TOKENS}
                for k, v in row.items():
                    cols[k].append(v)
    return cols


def test_crossing_interpolates_in_log_frequency_and_flags_censored_rows():
    freqs = np.array([1e-3, 1e-2, 1e-1])
    acc = np.array([[0.5, 0.7, 0.9],    # crosses half-way (in log f) between 1e-2 and 1e-1
                    [0.5, 0.6, 0.7],    # never reaches 0.8: above the grid
                    [0.85, 0.9, 0.95],  # already there at the lowest frequency: below the grid
                    [0.9, 0.5, 0.9]])   # learned only at the top: the dip is not a crossing
    f, status = advise.crossing(freqs, acc, 0.8)
    assert f[0] == pytest.approx(10 ** -1.5, rel=1e-12) and f[3] == pytest.approx(10 ** -1.25, rel=1e-12)
    assert np.isnan(f[1]) and np.isnan(f[2])
    assert status.tolist() == [0, 1, 2, 0]


def test_exact_power_law_is_recovered_and_left_out_sizes_are_predicted_exactly():
    grid = advise.task_grid(results_table(), "comparison")
    assert grid.sizes == list(SIZES) and grid.unit == "per_token" and grid.tokens == TOKENS
    fit = advise.fit_thresholds(grid)
    for t in fit.sizes:
        assert t.status == "crosses" and t.fstar == pytest.approx(A * t.params ** -GAMMA, rel=1e-9)
        assert t.seed_fstar == pytest.approx([t.fstar] * 3, rel=1e-9)
    assert fit.law.gamma == pytest.approx(GAMMA, rel=1e-9) and fit.law.a == pytest.approx(A, rel=1e-6)
    assert [h["size"] for h in fit.held_out] == list(SIZES)
    assert all(h["factor"] == pytest.approx(1.0, abs=1e-9) for h in fit.held_out)


def test_bootstrap_interval_contains_the_true_exponent_under_seed_noise():
    res = results_table(noise=0.03, seeds=(0, 1, 2, 3))
    fit = advise.fit_thresholds(advise.task_grid(res, "comparison"), resamples=1000, seed=1)
    lo, hi = advise.interval(fit.boot_gamma)
    assert lo < GAMMA < hi
    assert lo > 0 and hi - lo < 0.5  # informative: four sizes over 1.8 decades
    assert abs(fit.law.gamma - GAMMA) < 0.1
    # same seed, same interval; another seed moves it a little
    again = advise.fit_thresholds(advise.task_grid(res, "comparison"), resamples=1000, seed=1)
    assert advise.interval(again.boot_gamma) == [lo, hi]
    # held-out errors stay within a factor 1.5 under this noise, and are reported per size
    assert all(h["factor"] < 1.5 for h in fit.held_out) and len(fit.held_out) == 4


def test_a_size_that_never_crosses_is_reported_and_left_out_of_the_fit():
    # s0: f* = 1 is above the grid (accuracy <= 0.8 + 0.1 ln(0.0512) < 0.8); s5: f* below the lowest frequency
    sizes = {"s0": 1.0, **SIZES, "s5": 1e10}
    fit = advise.fit_thresholds(advise.task_grid(results_table(sizes), "comparison"))
    status = {t.size: t.status for t in fit.sizes}
    assert status == {"s0": "above", "s1": "crosses", "s2": "crosses", "s3": "crosses", "s4": "crosses",
                      "s5": "below"}
    assert fit.law.gamma == pytest.approx(GAMMA, rel=1e-9)  # from the four crossing sizes only
    censored = {c["size"]: c for c in fit.censored()}
    assert censored["s0"]["bound"] == f"> {FREQS[-1]:g}" and censored["s0"]["agrees"] is True
    assert censored["s5"]["bound"] == f"< {FREQS[0]:g}" and censored["s5"]["agrees"] is True
    assert [h["size"] for h in fit.held_out] == ["s1", "s2", "s3", "s4"]


def test_frequency_question_for_a_size_in_and_beyond_the_sweep():
    tables = advise.SweepTables(results_table(noise=0.02), natural={"comparison": 1e-4},
                                natural_note={"comparison": "test"})
    a = advise.advise_sweep(tables, "comparison", size="s3", resamples=300)
    assert a.question == "frequency" and a.extrapolated is False and a.evidence["warning"] is None
    assert a.answer == pytest.approx(A * 1.6e5 ** -GAMMA, rel=0.1)
    assert a.interval[0] <= a.answer <= a.interval[1]
    assert a.evidence["upsample"] == pytest.approx(a.answer / 1e-4)
    assert a.evidence["upsample_interval"] == pytest.approx([b / 1e-4 for b in a.interval])
    far = advise.advise_sweep(tables, "comparison", size="1e8", resamples=300)
    assert far.extrapolated is True and "outside the measured sizes" in far.evidence["warning"]
    assert far.answer == pytest.approx(A * 1e8 ** -GAMMA, rel=0.3)
    assert far.interval[1] / far.interval[0] > a.interval[1] / a.interval[0]  # the band widens away from the data


def test_size_question_inverts_the_law():
    tables = advise.SweepTables(results_table())
    a = advise.advise_sweep(tables, "comparison", frequency=2e-3, resamples=200)
    assert a.question == "size" and isinstance(a.answer, int)
    assert a.answer == math.ceil((A / 2e-3) ** (1 / GAMMA))  # 250,000 within 1e4 .. 6.4e5
    assert a.extrapolated is False
    rare = advise.advise_sweep(tables, "comparison", frequency=1e-5, resamples=200)
    assert rare.extrapolated is True and rare.answer == pytest.approx(1e10, rel=1e-6)


def test_json_schema_is_stable():
    tables = advise.SweepTables(results_table(noise=0.02))
    for kw, question in [({}, "exponent"), ({"size": "s2"}, "frequency"), ({"frequency": 3e-3}, "size")]:
        j = json.loads(json.dumps(advise.advise_sweep(tables, "comparison", resamples=100, **kw).to_json()))
        assert list(j) == ["task", "question", "answer", "interval", "extrapolated", "evidence"]
        assert j["task"] == "comparison" and j["question"] == question and len(j["interval"]) == 2
        e = j["evidence"]
        assert {"target_accuracy", "unit", "sizes", "fit", "censored", "leave_one_out", "warning"} <= set(e)
        assert [s["size"] for s in e["sizes"]] == list(SIZES)
        assert e["fit"]["resamples"] == 100 and e["fit"]["level"] == advise.LEVEL


def test_budget_follows_6ND_and_the_device_table():
    tables = advise.SweepTables(results_table())
    a = advise.advise_sweep(tables, "comparison", size="s2", resamples=50, budget={"device": "a100", "mfu": 0.5})
    b = a.evidence["budget"]
    assert b["params"] == 3 * 4e4 and b["params_counted"] == "all parameters"  # the sweep's size: all parameters
    assert b["flops"] == pytest.approx(6 * 3 * 4e4 * TOKENS)
    assert b["hours"] == pytest.approx(b["flops"] / (312e12 * 0.5) / 3600)
    assert b["instances"] == pytest.approx(a.answer * TOKENS)
    raw = budget.plan(2e6, None, 1e9, 1e-3, "per_batch", 1e6, "cpu", 1.0)
    assert raw["params_counted"].startswith("non-embedding") and raw["instances"] == pytest.approx(1e-3 * 1e3)
    assert raw["hours"] == pytest.approx(6 * 2e6 * 1e9 / 96e9 / 3600) and raw["hours_unit"] == "core-hours"


@pytest.mark.parametrize("kw,field", [
    ({"task": "nope"}, "--task"), ({"target": 1.0}, "--target-acc"), ({"target": 0.0}, "--target-acc"),
    ({"frequency": 0.0}, "--frequency"), ({"frequency": -1e-3}, "--frequency"), ({"size": "huge"}, "--size"),
    ({"frequency": 1e-3, "size": "s1"}, "--frequency"), ({"budget": {"device": "tpu"}, "size": "s1"}, "--device"),
    ({"budget": {"mfu": 1.5}, "size": "s1"}, "--mfu")])
def test_bad_questions_are_config_errors(kw, field):
    tables = advise.SweepTables(results_table())
    task = kw.pop("task", "comparison")
    with pytest.raises(ConfigError, match=f"^{field}:"):
        advise.advise_sweep(tables, task, resamples=10, **kw)


def test_one_size_is_refused_and_so_is_a_fit_with_one_crossing_size():
    with pytest.raises(ConfigError, match="needs >= 2"):
        advise.task_grid(results_table({"s1": 1e4}), "comparison")
    tables = advise.SweepTables(results_table({"s0": 1.0, "s1": 1e4}))
    with pytest.raises(ConfigError, match="^--target-acc: only 1 size"):
        advise.advise_sweep(tables, "comparison", resamples=10)
