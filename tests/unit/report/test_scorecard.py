"""Every claim of the scorecard on tables built by hand: one where it holds ("reproduced"), one where it fails
("not reproduced"), and none of its kind ("not run"). The tables have the columns the labs write."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raretask import theory
from raretask.report import claims, scorecard
from raretask.report.scorecard import NOT_REPRODUCED, NOT_RUN, REPRODUCED, RunTables, judge_tables


def verdict(claim_id: str, *run_tables: RunTables) -> scorecard.Verdict:
    (v,) = [v for v in judge_tables(list(run_tables)) if v.claim.id == claim_id]
    return v


# ------------------------------------------------------------------------------------------------- synthetic


def synthetic(tasks: list[tuple[str, float, list[float]]], widths: list[int], *, shift: dict | None = None,
              signal_late: int = 0) -> RunTables:
    """A `synthetic` run that meets Theorem 3 exactly (two seeds), except `shift[(task, width)]` added to a normalised
    loss; rank-1 signals are 1 from the staircase width on, `signal_late` widths later."""
    freqs = np.array([f for _, f, _ in tasks])
    eigs = [np.array(lam) for _, _, lam in tasks]
    loss = theory.orthogonal_task_losses(freqs, eigs, widths)
    stairs = theory.staircase(freqs, eigs, 1)
    cols: dict[str, list] = {k: [] for k in ("seed", "width", "task", "normalised_loss", "theory_normalised_loss",
                                             "signal")}
    for seed in (0, 1):
        for w, n in enumerate(widths):
            for k, (name, _, lam) in enumerate(tasks):
                pred = loss[k, w] / sum(lam)
                held = w - signal_late >= 0 and widths[w - signal_late] >= stairs[k]
                cols["seed"].append(seed)
                cols["width"].append(n)
                cols["task"].append(name)
                cols["theory_normalised_loss"].append(pred)
                cols["normalised_loss"].append(pred + (shift or {}).get((name, n), 0.0))
                cols["signal"].append(1.0 if held else 0.0)
    point = {"grid": {}, "orthogonal": True,
             "tasks": [{"name": n, "frequency": f, "eigenvalues": lam} for n, f, lam in tasks]}
    return RunTables("synthetic", "synthetic", {"results": cols, "widths": widths, "points": [point]})


# common: most frequent, flat spectrum; rare: rarer but with the larger top utility (0.3 x 3 > 0.5 x 1)
DISCORDANT = [("common", 0.5, [1.0, 0.9, 0.8]), ("rare", 0.3, [3.0]), ("tail", 0.2, [0.5, 0.1])]
WIDTHS = [1, 2, 3, 4, 5, 6]


def test_s1_trained_matches_theory():
    assert verdict("S1", synthetic(DISCORDANT, WIDTHS, shift={("common", 2): 0.004})).verdict == REPRODUCED
    # tail's tolerance: min(0.02, 0.1 / (2 x 0.6)) = 0.02; 0.03 off at one width fails it
    v = verdict("S1", synthetic(DISCORDANT, WIDTHS, shift={("tail", 4): 0.03}))
    assert v.verdict == NOT_REPRODUCED and "tail" in v.numbers and "0.0300" in v.numbers
    assert verdict("S1").verdict == NOT_RUN


def test_s1_tolerance_is_half_the_smallest_share_capped_at_2_percent():
    assert claims.theory_tolerance([1.0]) == 0.02
    assert claims.theory_tolerance([1.0, 0.25, 0.04]) == pytest.approx(0.5 * 0.04 / 1.29)


def test_s2_learning_follows_utility():
    assert verdict("S2", synthetic(DISCORDANT, WIDTHS)).verdict == REPRODUCED
    # learned by frequency: the rare task only once the common task's three directions are held
    late = {("rare", n): 1.0 for n in (1, 2, 3)}
    v = verdict("S2", synthetic(DISCORDANT, WIDTHS, shift=late))
    assert v.verdict == NOT_REPRODUCED and "rare" in v.numbers


def test_s2_fails_a_swapped_pair_even_within_one_width_step():
    # theory: b (utility 0.8) at N = 1, a (0.6) at N = 2; measured the other way round, each one step off
    tasks = [("a", 0.6, [1.0]), ("b", 0.4, [2.0])]
    swapped = synthetic(tasks, [1, 2, 3], shift={("a", 1): -1.0, ("b", 1): 1.0})
    assert verdict("S2", swapped).verdict == NOT_REPRODUCED
    assert verdict("S2", synthetic(tasks, [1, 2, 3])).verdict == REPRODUCED


def test_s2_is_not_run_where_frequency_and_utility_agree():
    agree = [("a", 0.6, [2.0]), ("b", 0.4, [1.0])]
    v = verdict("S2", synthetic(agree, [1, 2, 3]))
    assert v.verdict == NOT_RUN and "frequency and utility orders" in v.numbers
    assert verdict("S2").verdict == NOT_RUN


RANK1 = [(f"t{k}", 1 / k**2, [1.0]) for k in range(1, 9)]
RANK1_WIDTHS = [1, 2, 3, 4, 6, 8]


def test_s3_rank1_staircase():
    assert verdict("S3", synthetic(RANK1, RANK1_WIDTHS)).verdict == REPRODUCED
    v = verdict("S3", synthetic(RANK1, RANK1_WIDTHS, signal_late=1))
    assert v.verdict == NOT_REPRODUCED and "N_emp = N_crit for 0 of 8" in v.numbers
    assert verdict("S3", synthetic(DISCORDANT, WIDTHS)).verdict == NOT_RUN  # not a rank-1 sweep
    assert verdict("S3").verdict == NOT_RUN


def residual(learned: list[bool], after: list[bool | None]) -> RunTables:
    cols = {"seed": [0, 0, 0], "width": [2, 8, 12], "theory_delta_F": [0.46, 0.112, 0.03],
            "threshold_upper": [0.112] * 3, "rare_learned": learned, "rare_after_residual": after}
    return RunTables("residual", "synth.residual", {"residual": cols})


def test_s4_rare_task_waits_for_the_residual():
    assert verdict("S4", residual([False, False, True], [None, None, True])).verdict == REPRODUCED
    assert verdict("S4", residual([True, False, True], [False, None, True])).verdict == NOT_REPRODUCED  # at N = 2
    assert verdict("S4", residual([False, False, True], [None, None, False])).verdict == NOT_REPRODUCED  # rose early
    assert verdict("S4", residual([False, False, False], [None, None, None])).verdict == NOT_RUN  # never rises
    old = residual([False, False, True], [None, None, True])
    del old.tables["residual"]["rare_after_residual"]
    assert verdict("S4", old).verdict == NOT_RUN
    assert verdict("S4").verdict == NOT_RUN


def test_s4_a_run_without_widths_on_both_sides_of_the_threshold_cannot_test_it():
    """Fig. 21's long run (every width above the threshold) and a run of wide models only (none above) cannot show
    the order: they are "not run", and beside a run that shows it they leave its verdict alone."""
    beyond = residual([False] * 3, [None] * 3)
    beyond.tables["residual"]["theory_delta_F"] = [0.46, 0.3, 0.2]
    wide = residual([True] * 3, [True] * 3)
    wide.tables["residual"]["theory_delta_F"] = [0.05, 0.03, 0.01]
    assert verdict("S4", beyond).verdict == NOT_RUN and verdict("S4", wide).verdict == NOT_RUN
    shows = residual([False, False, True], [None, None, True])
    assert verdict("S4", beyond, shows).verdict == REPRODUCED


def retention(values: dict[tuple[int, int], float]) -> RunTables:
    cols: dict[str, list] = {"gap": [], "width": [], "seed": [], "signal_rare": []}
    for (gap, width), v in values.items():
        for seed, noise in ((0, -0.001), (1, 0.001)):
            cols["gap"].append(gap)
            cols["width"].append(width)
            cols["seed"].append(seed)
            cols["signal_rare"].append(v + noise)
    return RunTables("retention", "synth.retention", {"final": cols})


def test_s5_retention_pattern():
    good = {(4, 8): 0.06, (4, 16): 0.16, (4, 32): 0.4, (12, 8): 0.02, (12, 16): 0.08, (12, 32): 0.2}
    assert verdict("S5", retention(good)).verdict == REPRODUCED
    flat = {**good, (12, 16): 0.02, (12, 32): 0.02}  # the longer gap: no gain with width
    assert verdict("S5", retention(flat)).verdict == NOT_REPRODUCED
    reversed_gap = {**good, (12, 32): 0.5}
    assert verdict("S5", retention(reversed_gap)).verdict == NOT_REPRODUCED
    assert verdict("S5", retention({(4, 8): 0.1, (4, 16): 0.2})).verdict == NOT_RUN  # one gap
    assert verdict("S5").verdict == NOT_RUN


def test_monotone_allows_noise_within_the_slack_only():
    assert claims.monotone([0.5, 0.995, 0.99], +1, 0.01)
    assert not claims.monotone([0.5, 0.99, 0.97], +1, 0.01)
    assert not claims.monotone([0.5, 0.505], +1, 0.01)  # no real rise


def toy(error: float) -> RunTables:
    cols: dict[str, list] = {"lr": [], "g": [], "ratio": [], "linear": []}
    for lr in (0.002, 0.05):
        for g in range(21):
            cols["lr"].append(lr)
            cols["g"].append(g)
            cols["linear"].append((1 - 2 * lr) ** g)
            cols["ratio"].append((1 - 2 * lr) ** g * (1 + error * g / 20))
    return RunTables("toy", "synth.toy", {"decay": cols})


def test_s6_example7_decay():
    assert verdict("S6", toy(0.004)).verdict == REPRODUCED
    v = verdict("S6", toy(0.02))
    assert v.verdict == NOT_REPRODUCED and "2.00%" in v.numbers
    assert verdict("S6").verdict == NOT_RUN


# ------------------------------------------------------------------------------------------------------- LM

SIZES = {"small": 30_000, "large": 2_000_000}


def lm(acc: dict, train: dict, *, kind: str = "comparison", gap_loss: dict | None = None,
       curves: dict | None = None) -> RunTables:
    """An `lm.sweep` run, two seeds a cell (values +- 0.01): acc / train[(frequency, size)], gap_loss[(gap, size)]
    at frequency 1e-3, curves[size] = [(held-out loss, task test loss), ...] by step at the lowest frequency."""
    res: dict[str, list] = {k: [] for k in ("size", "params", "task", "kind", "grid_frequency", "gap", "seed",
                                            "train_loss", "test_loss", "test_acc_labels")}

    def row(size, f, gap, seed, train_loss, test_loss, acc_):
        for k, v in zip(res, (size, SIZES[size], "t", kind, f, gap, seed, train_loss, test_loss, acc_)):
            res[k].append(v)

    for (f, size), a in acc.items():
        for seed, d in ((0, -0.01), (1, 0.01)):
            row(size, f, 0, seed, train[f, size] + d, 1.0, a + d)
    for (gap, size), loss in (gap_loss or {}).items():
        for seed, d in ((0, -0.01), (1, 0.01)):
            row(size, 1e-3, gap, seed, 1.0, loss + d, 0.5)
    cur: dict[str, list] = {k: [] for k in ("size", "params", "task", "kind", "grid_frequency", "gap", "seed",
                                            "step", "heldout_loss", "test_loss")}
    low = min(f for f, _ in acc)
    for size, points in (curves or {}).items():
        for step, (h, y) in enumerate(points):
            for k, v in zip(cur, (size, SIZES[size], "t", kind, low, 0, 0, step * 10, h, y)):
                cur[k].append(v)
    return RunTables("lm/sweep", "lm.sweep", {"results": res, "curves": cur})


ACC = {(1e-2, "small"): 0.9, (1e-2, "large"): 0.95, (1e-3, "small"): 0.55, (1e-3, "large"): 0.9}
TRAIN = {(1e-2, "small"): 1.0, (1e-2, "large"): 0.5, (1e-3, "small"): 2.0, (1e-3, "large"): 1.5}


def test_l1_all_sizes_learn_at_high_frequency():
    assert verdict("L1 (comparison)", lm(ACC, TRAIN)).verdict == REPRODUCED
    v = verdict("L1 (comparison)", lm({**ACC, (1e-2, "small"): 0.7}, TRAIN))
    assert v.verdict == NOT_REPRODUCED and "0.70 (small)" in v.numbers
    assert verdict("L1 (modular addition)", lm(ACC, TRAIN)).verdict == NOT_RUN  # no such task in the sweep
    assert verdict("L1 (modular addition)", lm(ACC, TRAIN, kind="modular_addition")).verdict == REPRODUCED
    assert verdict("L1 (comparison)").verdict == NOT_RUN


def test_l2_only_larger_models_learn_rare_tasks():
    assert verdict("L2 (comparison)", lm(ACC, TRAIN)).verdict == REPRODUCED
    both = {**ACC, (1e-3, "small"): 0.85}  # the small model learns it too
    assert verdict("L2 (comparison)", lm(both, TRAIN)).verdict == NOT_REPRODUCED
    close = {**ACC, (1e-3, "large"): 0.65}  # 0.10 ahead only
    assert verdict("L2 (comparison)", lm(close, TRAIN)).verdict == NOT_REPRODUCED
    assert verdict("L2 (modular addition)", lm(ACC, TRAIN)).verdict == NOT_RUN


def test_l3_learned_in_order_of_frequency():
    assert verdict("L3", lm(ACC, TRAIN)).verdict == REPRODUCED
    v = verdict("L3", lm(ACC, {**TRAIN, (1e-3, "large"): 0.4}))
    assert v.verdict == NOT_REPRODUCED and "large" in v.numbers
    assert verdict("L3", lm({(1e-2, "small"): 0.9, (1e-2, "large"): 0.9}, TRAIN)).verdict == NOT_RUN
    assert verdict("L3").verdict == NOT_RUN


def test_l4_larger_gaps_hurt_at_a_matched_rate():
    rising = {(1, "small"): 1.0, (10, "small"): 1.4, (1, "large"): 0.5, (10, "large"): 0.7}
    assert verdict("L4", lm(ACC, TRAIN, gap_loss=rising)).verdict == REPRODUCED
    v = verdict("L4", lm(ACC, TRAIN, gap_loss={**rising, (10, "large"): 0.5}))
    assert v.verdict == NOT_REPRODUCED
    assert verdict("L4", lm(ACC, TRAIN, gap_loss={(1, "small"): 1.0})).verdict == NOT_RUN  # one gap
    assert verdict("L4").verdict == NOT_RUN


def test_l5_lower_task_loss_at_equal_lm_loss():
    small = [(8.0, 6.0), (6.0, 5.0), (5.0, 4.0)]  # ends at held-out loss 5.0, task loss 4.0
    large = [(8.0, 6.0), (6.0, 4.0), (4.0, 2.0)]  # at 5.0 (half way from 6 to 4): task loss 3.0
    v = verdict("L5", lm(ACC, TRAIN, curves={"small": small, "large": large}))
    assert v.verdict == REPRODUCED and "held-out loss 5: small 4, large 3" in v.numbers
    worse = [(8.0, 6.0), (6.0, 5.0), (4.0, 4.6)]  # at 5.0: 4.8
    assert verdict("L5", lm(ACC, TRAIN, curves={"small": small, "large": worse})).verdict == NOT_REPRODUCED
    assert verdict("L5", lm(ACC, TRAIN)).verdict == NOT_RUN  # no held-out loss curves
    assert verdict("L5").verdict == NOT_RUN


def test_curve_at_interpolates_in_the_heldout_loss():
    assert claims.curve_at([8.0, 6.0, 4.0], [6.0, 4.0, 2.0], 5.0) == 3.0
    assert claims.curve_at([8.0, 6.0], [6.0, 4.0], 6.0) == 4.0
    assert np.isnan(claims.curve_at([8.0, 6.0], [6.0, 4.0], 5.0))


# ------------------------------------------------------------------------------------------------- combining


def test_every_run_that_can_test_a_claim_must_reproduce_it():
    good, bad = synthetic(DISCORDANT, WIDTHS), synthetic(DISCORDANT, WIDTHS, shift={("tail", 4): 0.03})
    good2 = RunTables("synthetic-2", good.kind, good.tables)
    v = verdict("S1", good, bad)
    assert v.verdict == NOT_REPRODUCED and v.numbers.startswith("synthetic: ")
    assert verdict("S1", good, good2).verdict == REPRODUCED
    # a run that cannot test S2 (frequency and utility agree) leaves the verdict to the one that can
    agree = synthetic([("a", 0.6, [2.0]), ("b", 0.4, [1.0])], [1, 2, 3])
    assert verdict("S2", agree, good).verdict == REPRODUCED


def test_find_runs_by_kind_leaves_nested_runs_to_their_parent(tmp_path):
    for rel, kind in [("synthetic", "synthetic"), ("lm/sweep", "lm.sweep"), ("lm/sweep/cells/c0", "lm.train"),
                      ("toy", "synth.toy")]:
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "meta.json").write_text(json.dumps({"kind": kind}))
    found = [(k, str(d.relative_to(tmp_path))) for k, d in scorecard.find_runs(tmp_path)]
    assert found == [("lm.sweep", "lm/sweep"), ("synthetic", "synthetic"), ("synth.toy", "toy")]
    assert [k for k, _ in scorecard.find_runs(tmp_path / "toy")] == ["synth.toy"]  # a run directory alone
    # an unfinished run (no tables yet) is skipped with a note, not an error
    tables, skipped = scorecard.load_runs(tmp_path)
    assert tables == [] and [s.split(":")[0] for s in skipped] == ["lm/sweep", "synthetic", "toy"]


def test_the_section_states_every_criterion_and_links_the_figures(tmp_path):
    run = tmp_path / "toy"
    run.mkdir()
    (run / "forget.png").write_bytes(b"png")
    t = toy(0.004)
    verdicts = judge_tables([RunTables("toy", t.kind, t.tables, run)])
    section = scorecard.scorecard_section(verdicts, tmp_path, skipped=["lm/sweep: no results.parquet"])
    head, *rows = section.table
    assert head == ["claim", "statement", "verdict", "measured", "figure"] and len(rows) == len(scorecard.CLAIMS)
    s6 = next(r for r in rows if r[0] == "S6")
    assert s6[2].text == REPRODUCED and s6[4][0].href == "#fig-toy-forget-png"
    assert len(section.items) == len(scorecard.CLAIMS) and any("<= 1%" in i for i in section.items)
    assert "1 reproduced, 0 not reproduced" in section.text and "lm/sweep: no results.parquet" in section.text


def test_a_reproduce_directory_is_a_folder_of_runs(tmp_path):
    """The runs inside `raretask reproduce`'s directory are judged; the directory itself is no run, and an LM
    sweep's cells stay the sweep's."""
    import json

    for sub, kind in [(".", "reproduce"), ("toy", "synth.toy"), ("lm/sweep", "lm.sweep"),
                      ("lm/sweep/cells/c0", "lm.train")]:
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / sub / "meta.json").write_text(json.dumps({"kind": kind}))
    assert scorecard.find_runs(tmp_path) == [("lm.sweep", tmp_path / "lm" / "sweep"), ("synth.toy", tmp_path / "toy")]


# ------------------------------------------------------------------------------- why larger models learn it


def features_run(r2_by_size: dict[str, float], params: dict[str, int] | None = None) -> RunTables:
    """An `lm.features` analysis: per size one run, R² per layer at two steps (the last decides)."""
    cols = {k: [] for k in ("cell", "size", "frequency", "step", "task", "kind", "layer", "metric", "value",
                            "test_acc", "params")}
    for size, r2 in r2_by_size.items():
        for step, scale in ((10, 0.1), (20, 1.0)):
            for layer, share in enumerate((0.5, 1.0, 0.7)):
                for k, v in zip(cols, (f"{size}-cell", size, 1e-3, step, "cmp", "comparison", layer, "order_r2",
                                       r2 * share * scale, 0.5, (params or {}).get(size))):
                    cols[k].append(v)
    return RunTables("features", "lm.features", {"features": cols})


def test_l7_larger_models_embed_the_feature():
    assert verdict("L7", features_run({"cpu-30k": 0.2, "cpu-150k": 0.5, "cpu-600k": 0.8})).verdict == REPRODUCED
    v = verdict("L7", features_run({"cpu-30k": 0.6, "cpu-150k": 0.5, "cpu-600k": 0.3}))
    assert v.verdict == NOT_REPRODUCED and "0.60 (cpu-30k)" in v.numbers
    # parameter counts order the sizes where known: a name the ladder does not have still sorts
    by_params = features_run({"big": 0.9, "small": 0.1}, params={"big": 10_000, "small": 100})
    assert verdict("L7", by_params).verdict == REPRODUCED
    assert verdict("L7", features_run({"cpu-30k": 0.5})).verdict == NOT_RUN  # one size
    assert verdict("L7").verdict == NOT_RUN


def interference_run(cos_nt: dict[str, float]) -> RunTables:
    cols = {k: [] for k in ("cell", "size", "params", "task", "frequency", "gap", "k", "metric", "mean", "std",
                            "count")}
    for size, c in cos_nt.items():
        for k in range(0, 600, 50):  # the claim's window stops at 500: beyond it the sign flips
            for metric, value in (("cos_nt", c if k <= 500 else -c), ("cos_g", 0.1)):
                for key, v in zip(cols, (size, size, None, "cmp", 1.0, 16, k, metric, value, 0.01, 4)):
                    cols[key].append(v)
    return RunTables("interference", "lm.interference", {"after_injection": cols})


def test_l8_interference_falls_with_size():
    assert verdict("L8", interference_run({"cpu-30k": 0.10, "cpu-600k": 0.001})).verdict == REPRODUCED
    v = verdict("L8", interference_run({"cpu-30k": 0.01, "cpu-600k": 0.05}))
    assert v.verdict == NOT_REPRODUCED and "+0.050 (cpu-600k)" in v.numbers
    assert verdict("L8", interference_run({"cpu-600k": 0.0})).verdict == NOT_RUN
    assert verdict("L8", RunTables("i", "lm.interference", {"after_injection": {}})).verdict == NOT_RUN


def retention_run(tau: dict[str, float]) -> RunTables:
    cols = {"cell": list(tau), "size": list(tau), "params": [None] * len(tau), "task": ["cmp"] * len(tau),
            "frequency": [1.0] * len(tau), "gap": [16] * len(tau), "tau": list(tau.values())}
    return RunTables("retention", "lm.retention", {"decay": cols})


def test_l9_larger_models_retain_longer():
    assert verdict("L9", retention_run({"cpu-30k": 12.0, "cpu-600k": 40.0})).verdict == REPRODUCED
    assert verdict("L9", retention_run({"cpu-30k": 12.0, "cpu-600k": float("inf")})).verdict == REPRODUCED
    assert verdict("L9", retention_run({"cpu-30k": 40.0, "cpu-600k": 12.0})).verdict == NOT_REPRODUCED
    assert verdict("L9", retention_run({"cpu-30k": float("nan"), "cpu-600k": 12.0})).verdict == NOT_RUN
    assert verdict("L9").verdict == NOT_RUN
