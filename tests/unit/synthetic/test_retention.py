"""Matched-frequency injection: schedules, config errors, measurements and the decay fit (fast, exact)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raretask.config import ConfigError
from raretask.synthetic.mixture import TaskStream
from raretask.synthetic.model import SweepStudent
from raretask.synthetic.retention import (InjectionSchedule, RareSchedule, RetentionConfig, RetentionProbe,
                                          eval_plan, fit_decay, frequent_tasks, gap_tables, matched_frequencies,
                                          measured_cycles, rare_task)
from raretask.synthetic.train import Evaluator, EvalConfig, SweepTrainer

CPU = torch.device("cpu")
TOML = """
[mixture]
dim = 24
[[mixture.tasks]]
name = "common"
frequency = 0.6
rank = 4
decay = 2.0
[[mixture.tasks]]
name = "mid"
frequency = 0.3
rank = 3
[[mixture.tasks]]
name = "rare"
frequency = 0.1
rank = 2
scale = 0.5
[train]
steps = 48
batch_size = 32
lr = 0.02
device = "cpu"
[injection]
rare = "rarest"
rate = 0.0625
[eval]
between = 1
cycles = 0
grad_batch = 16
[sweep]
gaps = [2, 8]
widths = [2, 5]
seeds = [0, 3]
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cfg(config_from):
    return config_from(RetentionConfig, TOML)


def _schedule(kind, gap=8, B=32, rate=0.0625, seeds=(0,), pi=(0.6, 0.3, 0.1), rare=2):
    return InjectionSchedule(np.array(pi), rare, rate, RareSchedule(kind), gap, B, list(seeds))


# ------------------------------------------------------------------------------------------------------ schedules


def test_burst_realises_the_rate_exactly_and_only_at_cycle_starts():
    sch = _schedule("burst", gap=8, B=32, rate=0.0625)  # mu = G B rho_r = 16, an integer
    steps, rare = 8 * 50, []
    for t in range(steps):
        c = sch.counts(t)
        assert c.sum().item() == 32 and c.min().item() >= 0
        rare.append(c[0, 2].item())
    assert sum(rare) == 0.0625 * 32 * steps  # exactly rho_r B steps
    assert all(m == 16 for m in rare[::8]) and not any(rare[t] for t in range(steps) if t % 8)


@pytest.mark.parametrize("gap", [3, 7, 20])
def test_burst_carry_rule_gives_floor_n_mu_and_the_same_total_for_every_gap(gap):
    rate, B, steps = 0.013, 40, 420  # mu = G * 0.52: never an integer here
    sch = _schedule("burst", gap=gap, B=B, rate=rate)
    mu = gap * B * rate
    rare = [sch.counts(t)[0, 2].item() for t in range(steps)]
    injections = rare[::gap]
    assert set(injections) <= {math.floor(mu), math.ceil(mu)}
    for n in range(1, steps // gap + 1):
        assert sum(rare[:n * gap]) == math.floor(n * gap * B * 0.013 + 1e-9)
    assert sum(rare) == math.floor(steps * B * rate) == sch.cumulative(steps)  # 218 for every gap


def test_interval_spreads_one_sample_every_one_over_rho():
    sch = _schedule("interval", B=10, rate=0.03)  # 0.3 rare samples per batch
    rare = [sch.counts(t)[0, 2].item() for t in range(1000)]
    assert set(rare) == {0, 1}
    assert sum(rare) == 300
    where = [t for t, m in enumerate(rare) if m]  # the i-th lands in the batch of sample number ceil(i / rho)
    assert where == [(math.ceil(i / 0.03 - 1e-9) - 1) // 10 for i in range(1, 301)]


def test_iid_rate_is_binomial_and_others_renormalised():
    sch = _schedule("iid", B=64, rate=0.05, seeds=(0, 1))
    total = sum(sch.counts(t).double() for t in range(600))  # (S, K)
    n = 600 * 64
    for s in range(2):
        assert abs(total[s, 2].item() - 0.05 * n) < 5 * math.sqrt(n * 0.05 * 0.95)
        others = total[s, :2].numpy() / total[s, :2].sum().item()
        np.testing.assert_allclose(others, [0.6 / 0.9, 0.3 / 0.9], atol=5 * math.sqrt(0.25 / n))


@pytest.mark.parametrize("kind", ["burst", "iid", "interval"])
def test_schedule_is_seeded_and_independent_of_other_seeds(kind):
    alone, together = _schedule(kind, seeds=(3,)), _schedule(kind, seeds=(0, 3, 5))
    again = _schedule(kind, seeds=(3,))
    for t in range(40):
        a = alone.counts(t)
        assert torch.equal(a[0], together.counts(t)[1]) and torch.equal(a, again.counts(t))
    state = alone.state()
    first = [alone.counts(t) for t in range(5)]
    alone.load_state(state)
    assert all(torch.equal(f, alone.counts(t)) for t, f in enumerate(first))


def test_stream_takes_given_counts(cfg):
    mix = cfg().mixture.build()
    stream = TaskStream(mix, [0, 1], CPU)
    counts = torch.tensor([[6, 0, 2], [0, 8, 0]])
    batch = stream.sample(8, counts)
    assert torch.equal(batch.counts, counts) and batch.offsets.tolist() == [6, 6, 8, 8, 16, 16]
    x = batch.x.reshape(16, 24)
    teacher = torch.as_tensor(mix.teacher(2).T, dtype=torch.float32)
    torch.testing.assert_close(batch.y[6:8, :2], x[6:8] @ teacher)
    with pytest.raises(ValueError):
        stream.sample(8, torch.tensor([[6, 1, 0], [0, 8, 0]]))


# ------------------------------------------------------------------------------------------------- config errors


def test_rare_task_choices(cfg):
    mix = cfg().mixture.build()
    assert rare_task(mix, "rarest") == 2 and rare_task(mix, "mid") == 1
    # total utilities pi_k Tr(C_k): common 0.6 * 1.25 = 0.75, mid 0.3 * 1.83 = 0.55, rare 0.1 * 0.75 = 0.075
    assert rare_task(mix, "lowest_utility") == 2
    assert rare_task(cfg("mixture.tasks[2].scale=10.0").mixture.build(), "lowest_utility") == 1
    pi = matched_frequencies(mix, 2, 0.0625)
    assert pi[2] == 0.0625 and abs(pi.sum() - 1) < 1e-12 and abs(pi[0] / pi[1] - 2) < 1e-12
    assert frequent_tasks(mix, 2, 0.0625, 0.8) == [0, 1]


@pytest.mark.parametrize("overrides, field", [
    (["sweep.gaps=[2,48]"], "sweep.gaps: G = 48 gives m = 96 rare samples per injection > train.batch_size = 32"),
    (["injection.rate=0.001"], "sweep.gaps: G = 2 gives G B rho_r = 0.064 < 1"),
    (["injection.rate=0"], "injection.rate: rho_r must be in (0, 1), got 0.0"),
    (["injection.rate=1.0"], "injection.rate: rho_r must be in (0, 1)"),
    (["injection.rare=nope"], "injection.rare: unknown task 'nope'"),
    (["injection.schedule=poisson"], "injection.schedule: 'poisson' is not one of burst, iid, interval"),
    (["sweep.gaps=[0,8]"], "sweep.gaps: G must be >= 1, got 0"),
    (["sweep.gaps=[8,8]"], "sweep.gaps: values repeat"),
    (["train.steps=50"], "train.steps: must be a multiple of every gap in sweep.gaps (lcm 8), got 50"),
    (["injection.rounding=exact", "injection.rate=0.07"], "injection.rounding: G B rho_r = 4.48 for G = 2"),
    (["sweep.widths=[2,24]"], "sweep.widths: width 24 must be < mixture.dim = 24"),
    (["eval.fit_from=1.0"], "eval.fit_from: must be in [0, 1)"),
    (["injection.rate=0.9", "eval.frequent_mass=0.5"], "eval.frequent_mass: the frequent set is empty"),
    (["eval.save_encoders=maybe"], "eval.save_encoders: expected true or false"),
])
def test_bad_config_is_one_line_naming_the_field(cfg, overrides, field):
    with pytest.raises(ConfigError) as e:
        cfg(*overrides)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(field.split(":")[0] + ":") and field in msg, msg


def test_iid_and_interval_need_no_integer_injection(cfg):
    for kind in ("iid", "interval"):
        c = cfg(f"injection.schedule={kind}", "injection.rate=0.001", "sweep.gaps=[2,48]")
        assert c.injection.schedule is RareSchedule(kind)


# --------------------------------------------------------------------------------------------------- measurement


def test_eval_plan_and_measured_cycles():
    plan = eval_plan(8, 48, 1, 0)
    assert plan[0] == "pre" and plan[1] == "post" and plan[4] == "mid" and plan[48] == "end"
    assert [t for t, p in plan.items() if p == "pre"] == [0, 8, 16, 24, 32, 40]
    assert list(measured_cycles(8, 48, 0)) == list(range(6)) and list(measured_cycles(4, 400, 10)) == list(
        range(0, 100, 10))
    sparse = eval_plan(4, 400, 0, 10)
    assert {0, 1, 4, 40, 41, 44, 400} <= set(sparse) and 8 not in sparse


def test_fit_decay_recovers_a_known_retention():
    peak = np.array([0.2, 0.5, 0.4, 0.3])
    a, delta, rate = fit_decay(peak, 0.7 * peak, 10)
    assert a == pytest.approx(0.7) and delta == pytest.approx(0.3) and rate == pytest.approx(-math.log(0.7) / 10)
    assert all(math.isnan(v) for v in fit_decay(np.zeros(3), np.zeros(3), 4))
    assert math.isnan(fit_decay(peak, -peak, 4)[2])  # no exponential rate for a sign flip


def test_gap_tables_from_synthetic_records():
    """Two cells, gap 4, steps 8: gains, decays and the fit follow the documented definitions."""
    seen = np.array([0])
    r = {t: (np.array([[v, 2 * v]]), np.full((1, 2), 0.5), seen + t, np.zeros((1, 2)) if t % 4 == 0 else None)
         for t, v in {0: 0.1, 1: 0.3, 2: 0.4, 4: 0.2, 5: 0.5, 6: 0.45, 8: 0.25}.items()}
    plan = {0: "pre", 1: "post", 2: "mid", 4: "pre", 5: "post", 6: "mid", 8: "end"}
    tb = gap_tables(r, plan, [0, 1], 4, 8, [1, 2], [7], 10, 0.0)
    cyc = tb["cycles"]
    assert cyc["signal_peak"][:2] == [0.4, 0.8] and cyc["signal_next"][:2] == [0.2, 0.4]
    assert cyc["gain"][0] == pytest.approx((0.4 - 0.1) / 0.9) and cyc["decay"][0] == pytest.approx(0.2 / 0.9)
    a = (0.4 * 0.2 + 0.5 * 0.25) / (0.4 ** 2 + 0.5 ** 2)
    assert tb["final"]["retention_per_cycle"] == pytest.approx([a, a])
    assert tb["final"]["signal_rare_corrected"] == pytest.approx([(0.25 - 0.1) / 0.9, (0.5 - 0.2) / 0.8])
    assert len(tb["trace"]["step"]) == 14 and len(tb["cosines"]["step"]) == 6


def test_probe_signals_match_the_evaluator_and_cosines_are_per_cell(cfg):
    c = cfg()
    trainer = SweepTrainer(c.synth_config())
    for t in range(10):
        trainer.step()
    mix, student = trainer.mixture, trainer.student
    pi = matched_frequencies(mix, 2, c.injection.rate)
    F = frequent_tasks(mix, 2, c.injection.rate, 0.8)
    probe = RetentionProbe(mix, 2, F, pi, c.sweep.seeds, CPU, 16)
    s_r, s_F = probe.signals(student)
    sig = Evaluator(mix, EvalConfig(), c.sweep.seeds, CPU)(student)["signal"]  # (S, C, K)
    np.testing.assert_allclose(s_r, sig[:, :, 2], rtol=1e-10)
    w = pi[F] * mix.traces[F]
    np.testing.assert_allclose(s_F, (sig[:, :, F] * w).sum(-1) / w.sum(), rtol=1e-10)
    cos = probe.cosines(student)
    # the same probe batches again, one cell's loss at a time
    again = RetentionProbe(mix, 2, F, pi, c.sweep.seeds, CPU, 16)
    K, B = mix.num_tasks, 16
    rare = torch.zeros(2, K, dtype=torch.int64)
    rare[:, 2] = B
    freq = torch.stack([torch.bincount(torch.multinomial(again.p_F, B, replacement=True, generator=g),
                                       minlength=K) for g in again.stream.generators])
    batches = [again.stream.sample(B, counts) for counts in (rare, freq)]
    for s in range(2):
        for k, n in enumerate(student.widths):
            rows = slice(student.starts[k], student.starts[k] + n)
            g = [torch.autograd.grad(student.cell_losses(student(b.x, b.offsets), b.y, B)[s, k],
                                     student.encoder)[0][s, rows].double().flatten() for b in batches]
            assert cos[s, k] == pytest.approx(float(torch.dot(g[0], g[1]) / (g[0].norm() * g[1].norm())), abs=1e-6)
    assert np.all(np.abs(cos) <= 1)


def test_sparse_measurement_keeps_only_the_measured_cycles(cfg, tmp_path):
    """With eval.cycles < the number of cycles, only every k-th cycle is measured and fitted (never a cycle that
    merely has both ends recorded)."""
    from raretask.synthetic.retention import train_gap

    c = cfg("eval.cycles=2", "sweep.gaps=[2]", "sweep.widths=[2]", "sweep.seeds=[0]")
    tb = train_gap(c, 2, tmp_path / "g")
    assert sorted(set(tb["cycles"]["cycle"])) == [0, 12]
    assert tb["final"]["cycles_fitted"] == [1] and tb["final"]["rare_seen"] == [48 * 32 // 16]
    assert set(tb["trace"]["step"]) == {0, 1, 2, 24, 25, 26, 48}


def test_corrected_signal_reverses_widths_that_hold_the_same_of_the_rare_task(cfg):
    """Two widths whose encoders hold the same rare directions have the same raw s_r but different s~_r: holding
    none, s~_r = -N/(d - N) falls as N grows (the 'wider holds less' artifact); holding r's top direction, s~_r is
    lower at the wider one too. The tables carry raw s_r beside s~_r for that reason."""
    c = cfg()
    mix, r = c.mixture.build(), 2
    pi = matched_frequencies(mix, r, c.injection.rate)
    F = frequent_tasks(mix, r, c.injection.rate, 0.8)
    student = SweepStudent(mix.dim, mix.ranks, [3, 6], [0], dtype=torch.float64)
    frequent = np.concatenate([mix.bases[k] for k in F], axis=1).T  # (7, d) orthonormal rows, orthogonal to B_r
    probe = RetentionProbe(mix, r, F, pi, [0], CPU, 4)
    for rare_rows in (0, 1):  # hold none of r, then r's top direction
        rows = [mix.bases[r][:, 0]] * rare_rows
        with torch.no_grad():
            for k, n in enumerate(student.widths):
                W = np.stack(rows + list(frequent[:n - rare_rows]))
                student.encoder[0, student.starts[k]:student.starts[k] + n] = torch.as_tensor(W)
        s_r, s_F = probe.signals(student)
        records = {t: (s_r, s_F, np.zeros(1, dtype=np.int64), None) for t in (0, 1)}
        final = gap_tables(records, {0: "pre", 1: "end"}, [0], 1, 1, [3, 6], [0], mix.dim, 0.0)["final"]
        share = rare_rows * mix.eigenvalues[r][0] / mix.traces[r]
        assert final["signal_rare"] == pytest.approx([share, share], abs=1e-12)  # raw: the same
        expected = [(share - n / mix.dim) / (1 - n / mix.dim) for n in (3, 6)]
        assert final["signal_rare_corrected"] == pytest.approx(expected, abs=1e-12)
        assert final["signal_rare_corrected"][1] < final["signal_rare_corrected"][0]  # s~: the wider holds "less"
        if rare_rows == 0:
            assert final["signal_rare_corrected"] == pytest.approx([-3 / 21, -6 / 18])  # -N/(d - N), d = 24


def test_saved_encoders_are_the_run_s_encoders_at_cycle_starts(cfg, tmp_path):
    """eval.save_encoders writes every cell's W at each measured cycle start and at the end: the same tensor as
    rerunning the training to that step, its rare signal is the logged one, and saving changes no table."""
    from raretask import theory
    from raretask.synthetic.retention import train_gap

    c = cfg("eval.save_encoders=true", "eval.cycles=3", "sweep.gaps=[8]")
    on = train_gap(c, 8, tmp_path / "on")
    off = train_gap(cfg("eval.cycles=3", "sweep.gaps=[8]"), 8, tmp_path / "off")
    assert {k: v for k, v in on.items() if k != "wall_time_s"} == {k: v for k, v in off.items() if k != "wall_time_s"}
    assert not (tmp_path / "off" / "encoders").exists()
    starts = [0, 16, 32, 48]  # 6 cycles, every second measured, and the end
    assert sorted(p.name for p in (tmp_path / "on" / "encoders").iterdir()) == [f"step={t:07d}.pt" for t in starts]

    mix, r = c.mixture.build(), 2
    trainer = SweepTrainer(c.synth_config())
    schedule = InjectionSchedule(mix.frequencies, r, c.injection.rate, c.injection.schedule, 8, 32, c.sweep.seeds)
    trace = on["trace"]
    for step in range(49):
        if step in starts:
            saved = torch.load(tmp_path / "on" / "encoders" / f"step={step:07d}.pt", weights_only=True)
            assert (saved["step"], saved["gap"], saved["seeds"], saved["widths"]) == (step, 8, [0, 3], [2, 5])
            for s, seed in enumerate(c.sweep.seeds):
                for k, n in enumerate(c.sweep.widths):
                    W = saved["encoders"][s][k]
                    assert torch.equal(W, trainer.student.cell(s, k)[0])  # the rerun reaches the same encoder
                    U = theory.row_space_basis(W.double().numpy())
                    logged = [v for t, sd, w, v in zip(trace["step"], trace["seed"], trace["width"],
                                                       trace["signal_rare"]) if (t, sd, w) == (step, seed, n)]
                    assert logged == [pytest.approx(theory.signal(mix.covariance(r), U), rel=1e-9)]
        if step < 48:
            trainer.step(schedule.counts(step))
