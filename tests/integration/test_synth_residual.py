"""`raretask synth residual`: the rare task is held on the theory's side of the residual threshold and rises after
the frequent set's residual falls (Fig. 3), Theorem 4's identity and the applied gradient along training, complexity
reorders learning by utility (App. D), tasks beyond capacity stay at the mean-predictor baseline (Fig. 21), and bad
input is refused before anything is written."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from raretask import theory
from raretask.config import load_config
from raretask.synthetic.dynamics import PointTheory, ResidualConfig

from .conftest import ROOT, summary

PRESETS = ROOT / "configs" / "synthetic"


def _rows(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_residual_preset_rare_task_held_on_the_theory_side_of_the_threshold(cli, tmp_path):
    """The CPU preset, every seed, against the width-N optimum (Theorem 3). Widths whose optimum leaves the rare task
    out (N <= 8): s~_r <= 0 and delta_F >= threshold_upper = delta*_F(N_r^crit - 1), the optimum's side (README: s~_r
    <= 0 above the threshold). Widths whose optimum leaves delta_F below threshold_upper (N >= 10): the rare task's
    top direction is held, raw s_r >= 0.69 (it is 0.70 of the task's variance; s~_r >= 0.65), and delta_F <
    threshold_upper. N = 9, where the optimum takes the rare direction with delta_F = threshold_upper exactly and the
    rare utility (0.0372) competes with task00's fourth direction (0.0342): a seed has learned the rare direction
    exactly when its delta_F is nearer threshold_upper than threshold (keeping task00's direction instead leaves
    delta_F = threshold). Learning order along training, Theorem 4 (an identity) and the applied gradient (a
    measurement)."""
    out = tmp_path / "o"
    s = summary(cli("synth", "residual", PRESETS / "residual.toml", "--out", out, "--json", "--no-progress"))
    (point,) = s["points"]
    assert (point["frequent_task"], point["rare_task"]) == ("task00", "task05")
    threshold, upper = point["threshold"], point["threshold_upper"]
    table = _rows(out / "residual.parquet")
    cfg = load_config(ResidualConfig, PRESETS / "residual.toml")
    assert len(table) == len(cfg.sweep.seeds) * len(cfg.sweep.widths)
    for r in table:
        n, delta, cell = r["width"], r["delta_F"], (r["seed"], r["width"], r["delta_F"], r["signal_rare"])
        assert r["signal_frequent"] > 0.6, cell
        if n <= 8:
            assert r["signal_rare"] <= 0 and delta >= upper and delta > threshold, cell
        elif n >= 10:
            assert r["raw_signal_rare"] >= 0.69 and r["signal_rare"] >= 0.65 and delta < upper, cell
        else:
            held = r["rare_learned"]  # raw s_r half its top direction above step 0 (still climbing: 0.67-0.68)
            assert held == (abs(delta - upper) < abs(delta - threshold)), cell
            assert held or r["signal_rare"] <= 0, cell
    # trained residuals sit at the width-N optimum's (Theorem 3), except at N = 7, where the 7th utilities 0.0489
    # (task04) and 0.0483 (task01, in F) nearly tie and delta_F settles between the two choices' optima
    widths = point["widths"]
    far = [j for j, n in enumerate(widths) if n != 7]
    assert np.allclose(np.array(point["delta_F"])[far], np.array(point["theory_delta_F"])[far], rtol=0.1, atol=0.01)
    assert all(upper <= r["delta_F"] <= r["theory_delta_F"] for r in table if r["width"] == 7)
    assert all(r["lambda1_F"] == pytest.approx(0.5469, abs=1e-4) for r in table)  # task00's pi_0 lambda_01

    # Learning order: the rare task rises (raw s_r half its top direction above step 0) once delta_F <= upper.
    # Measured: 16 of the 17 learned cells; seed 1 at N = 11 rose at step 150 with delta_F = 0.1143 (1.8% above
    # upper; 0.0945 one evaluation later), while the last frequent direction above it was still being learned.
    # Never before the one above that: delta_F < delta*_F(N_r^crit - 2) at every rise.
    learned = [r for r in table if r["rare_learned"]]
    assert {(r["seed"], r["width"]) for r in learned} == {(sd, n) for sd in cfg.sweep.seeds for n in widths
                                                          if n >= 10} | {(0, 9), (2, 9)}
    early = [(r["seed"], r["width"], r["delta_F_at_rise"]) for r in learned if not r["rare_after_residual"]]
    assert len(early) <= 1, early
    before_last_but_one = theory.residual_threshold(
        PointTheory.of(cfg.synth(), cfg.residual.rare).mu_F, point["critical_width"] - 2)
    assert all(r["delta_F_at_rise"] < before_last_but_one for r in learned)
    assert all(r["step_residual"] is not None and r["step_rare_rise"] is not None for r in learned)
    order = s["rare_after_residual"]
    assert (order["cells"], order["rare_learned"], order["after_residual"]) == (
        len(table), len(learned), len(learned) - len(early))
    assert sum(point["rare_learned"]) == len(learned)

    thm4 = _rows(out / "theorem4.parquet")
    evals = cfg.train.steps // cfg.eval.every + 1
    assert len(thm4) == len(table) * evals
    # Theorem 4 at optimal decoders is an identity (any orthonormal U): this checks the code, not the training
    assert all(r["grad_norm_F"] <= r["grad_bound_F"] * (1 + 1e-9) for r in thm4)
    assert 0.3 < s["theorem4_max_ratio"] <= 1.0
    assert s["theorem4_max_ratio"] == pytest.approx(max(r["ratio"] for r in thm4))
    # the gradient with the current decoders is measured: random decoders at step 0 give it a larger ratio than the
    # optimal ones (all cells); by the end the decoders track the optimum (within 10%, measured 0.95..1.06); the
    # raw ||dL_F/dW|| is scale-dependent and exceeds the bound at step 0 (measured up to 1.33)
    assert all(np.isfinite(r["ratio_applied"]) for r in thm4)
    assert all(r["grad_applied_U_F"] > r["grad_norm_F"] for r in thm4 if r["step"] == 0)
    assert all(abs(r["grad_applied_U_F"] / r["grad_norm_F"] - 1) < 0.1 for r in thm4 if r["step"] == cfg.train.steps)
    assert max(r["ratio_applied_raw"] for r in thm4) > 1.0
    assert s["applied_max_ratio"] == pytest.approx(max(r["ratio_applied"] for r in thm4))
    # Cor. 5: the bound on the frequent tasks' gradient fades as width absorbs them, narrowest vs widest at the end.
    # (Not the gradient itself: G_F(U) vanishes at the optimum of every width, so at the end it measures how far
    # each cell still wanders from its optimum; at 3000 steps, N = 2's is ~0.02-0.03 and N = 24's, whose exact fit
    # Adam destabilises after ~2000 steps (delta_F 1e-7 -> 3e-4), 0.013-0.018.)
    last = {r["width"]: r["grad_bound_F"] for r in thm4 if r["step"] == cfg.train.steps and r["seed"] == 0}
    assert last[max(last)] < 0.1 * last[min(last)]

    assert cli("report", out).exit_code == 0
    page = (out / "report.html").read_text()
    assert "Theorem 4 along training" in page and "residual_signal.png" in page and "identity check" in page
    for name in ("residual_signal.png", "theorem4.png", "loss_curves.png", "phase_diagram.png"):
        assert (out / name).stat().st_size > 1000, name
    assert json.loads((out / "meta.json").read_text())["kind"] == "synth.residual"
    # the same command again reads the finished run back
    again = summary(cli("synth", "residual", PRESETS / "residual.toml", "--out", out, "--json", "--no-progress"))
    assert again == s


COMPLEXITY = """
[mixture]
dim = 32
zipf = 1.0
tasks_from = { count = 5, rank = 3, energy90 = [1, 3] }
[train]
steps = 2500
batch_size = 64
lr = 0.01
warmup = 100
[eval]
every = 500
[sweep]
widths = [1, 3, 6, 7, 8]
seeds = [0, 1]
"""
# Left out: N = 2 and 4, where utilities 1.25x-1.5x apart (and the rarest task's three tied directions) take longer
# than 2500 steps to sort out for some seeds.


def test_complexity_learning_order_follows_utility_not_frequency(cli, tmp_path):
    """Task 0 (most frequent) is nearly rank-1, task 4 (rarest) flat: theory gives the rarest task its second and
    third directions before any more frequent task gets its second; training follows (per seed)."""
    path = tmp_path / "cx.toml"
    path.write_text(COMPLEXITY)
    cfg = load_config(ResidualConfig, path)
    mix = cfg.mixture.build()
    second = mix.staircase(2)
    assert list(np.argsort(second, kind="stable")) != list(range(mix.num_tasks))  # not frequency order
    assert second[4] < second[3] < second[0]
    kept7 = theory.features_kept(mix.frequencies, mix.eigenvalues, 7)
    assert kept7.tolist() == [1, 1, 1, 1, 3]

    out = tmp_path / "o"
    s = summary(cli("synth", "residual", path, "--out", out, "--json", "--no-progress"))
    assert s["points"][0]["rare_task"] == "task03"  # lowest pi_k Tr(C_k) outside F, not the rarest (task04)
    res = _rows(out / "results.parquet")
    for r in res:  # every task at every width sits at its utility-order loss
        assert abs(r["normalised_loss"] - r["theory_normalised_loss"]) < 0.05, r
    for seed in cfg.sweep.seeds:
        captured = {r["task"]: r["signal"] * mix.traces[int(r["task"][-2:])] for r in res
                    if r["seed"] == seed and r["width"] == 7}  # s_k Tr(C_k): variance the encoder holds
        lam3 = mix.eigenvalues[3]
        assert captured["task04"] > 2.5  # all three of the rarest task's directions (theory: 3)
        assert captured["task03"] < lam3[0] + 0.5 * lam3[1]  # but not the more frequent task 3's second (theory: 1)
    assert (out / "phase_diagram.png").is_file()


def test_long_horizon_tasks_beyond_capacity_stay_at_the_baseline(cli, tmp_path):
    """The CPU long-horizon preset, shortened: a task none of whose directions the width holds keeps normalised
    loss within 0.03 of 1 at every evaluation after the first 1000 steps (theory: exactly 1), while held tasks reach
    their theory loss."""
    out = tmp_path / "o"
    preset = PRESETS / "long_horizon_cpu.toml"
    overrides = ["sweep.widths=[2,4]", "sweep.seeds=[0,1]", "train.steps=4000"]
    assert cli("synth", "residual", preset, *overrides, "--out", out, "--no-progress").exit_code == 0
    mix = load_config(ResidualConfig, preset, overrides).mixture.build()
    curves = _rows(out / "curves.parquet")
    beyond = 0
    for n in (2, 4):
        kept = theory.features_kept(mix.frequencies, mix.eigenvalues, n)
        for k, name in enumerate(mix.names):
            rows = [r for r in curves if r["width"] == n and r["task"] == name and r["step"] >= 1000]
            assert len(rows) == 2 * 7
            if kept[k] == 0:
                beyond += 1
                assert all(abs(r["normalised_loss"] - 1) < 0.03 for r in rows), (n, name)
            else:
                held = mix.theory_losses([n])[k, 0] / mix.traces[k]
                assert all(abs(r["normalised_loss"] - held) < 0.05 for r in rows if r["step"] == 4000), (n, name)
    assert beyond == 4 + 3


@pytest.mark.parametrize("overrides, message", [
    (["residual.rare=nope"], "residual.rare: no task named 'nope'"),
    (["residual.rare=task00"], "residual.rare: task 'task00' is in the frequent set F"),
    (["eval.frequent_mass=1.0"], "residual.rare: task 'task05' is in the frequent set F"),
    (["model.encoder=stiefel"], "model.encoder: 'stiefel' is not one of free, orthonormal"),
    (["mixture.tasks_from.decay=1.0", "mixture.tasks_from.energy90=[3,30]"],
     "mixture.tasks_from.energy90: [3, 30] must satisfy 1 <= lo <= hi <= 4"),
    (["mixture.tasks_from.decay=1.0", "mixture.tasks_from.energy90=[3,2]"], "mixture.tasks_from.energy90: [3, 2]"),
    (["mixture.tasks_from.energy90=[1,3]"], "mixture.tasks_from.decay: set either decay or energy90, not both"),
    (["residual.colour=red"], "residual.colour: unknown key"),
    (["residual.rare=task05", "sweep.grid={ 'residual.rare' = ['task04', 'task05'] }"],
     "sweep.residual.rare: the analysis options cannot be swept"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, overrides, message):
    out = tmp_path / "out"
    r = cli("synth", "residual", PRESETS / "residual.toml", *overrides, "--out", out, "--no-progress")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not out.exists()
