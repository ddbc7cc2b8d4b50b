"""Injection schedules deliver their rate: burst when the period does not divide the run, iid when a draw overflows."""

import math

import numpy as np
import pytest

from raretask.config import ConfigError
from raretask.lm.injection import plan_injections
from raretask.lm.tasks import LMTaskConfig, build_tasks

V, SEQ = 2000, 16


def plan(cfgs, steps, batch, seed=0):
    tasks = build_tasks(cfgs, V, {0, 1})
    return plan_injections(tasks, cfgs, steps=steps, global_batch_seqs=batch, seq_len=SEQ, seed=seed)


def steps_of(p):
    """The step of every injection of a plan."""
    return p.materialise().step


def burst(rate, every):
    return LMTaskConfig(name="b", frequency=rate, unit="per_batch", schedule="burst", every=every)


@pytest.mark.parametrize("rate, every, steps", [(1, 100, 101), (1, 100, 150), (0.3, 7, 50), (2.5, 4, 9)])
def test_burst_delivers_the_matched_rate_when_the_period_is_cut_short(rate, every, steps):
    p = plan([burst(rate, every)], steps, batch=128)
    assert len(p) == math.ceil(round(rate * steps, 9))  # 101 steps at 1 per batch: 101 instances, not 200
    counts = np.bincount(steps_of(p), minlength=steps)
    assert set(np.flatnonzero(counts)) <= set(range(0, steps, every))  # still one batch per period
    full = (steps // every) * every
    assert counts[:full].sum() == math.ceil(round(rate * full, 9))  # the full periods are untouched
    assert p.realised["b"].per_batch == pytest.approx(rate, abs=1 / steps)


@pytest.mark.parametrize("rate, every, steps", [(1, 100, 200), (0.3, 7, 49), (2.5, 4, 8)])
def test_burst_counts_unchanged_when_the_period_divides_the_run(rate, every, steps):
    counts = np.bincount(steps_of(plan([burst(rate, every)], steps, batch=128)), minlength=steps)
    periods = np.arange(steps // every + 1) * every
    expected = np.zeros(steps, dtype=np.int64)
    expected[::every] = np.diff(np.ceil(np.round(periods * rate, 9)))  # each period's share, the carry rule
    assert np.array_equal(counts, expected)



def iid(name, rate):
    return LMTaskConfig(name=name, frequency=rate, unit="per_batch")


def test_iid_draw_above_the_slots_carries_over_instead_of_refusing():
    """0.95 per batch, 4 slots, 20,000 steps: some Poisson draw exceeds 4 (P ~ 3e-3 per step); the excess goes to
    the next batches with room, every draw is delivered, no batch exceeds its slots."""
    steps, batch = 20_000, 4
    p = plan([iid("a", 0.95)], steps, batch, seed=3)
    draws = np.bincount(steps_of(plan([iid("a", 0.95)], steps, 64, seed=3)), minlength=steps)  # room for every draw
    assert draws.max() > batch  # the old refusal
    inj = p.materialise()
    counts = np.bincount(inj.step, minlength=steps)
    assert len(p) == draws.sum() and counts.max() <= batch
    # Delayed, never early: by every step at least as many were drawn as delivered.
    assert (np.cumsum(counts) <= np.cumsum(draws)).all() and not np.array_equal(counts, draws)
    assert len(np.unique(inj.step * batch + inj.batch_pos)) == len(p)  # one instance per slot


def test_iid_tasks_share_the_slots_left_by_the_scheduled_ones():
    """A burst of 3 every 2 batches of 4 slots; two iid tasks fill the rest: nothing is lost, no batch overflows."""
    steps, batch = 4000, 4
    cfgs = [burst(1.5, 2), iid("a", 1.0), iid("c", 0.9)]
    p = plan(cfgs, steps, batch, seed=1)
    counts = p.counts()
    inj = p.materialise()
    assert counts["b"] == 1.5 * steps and np.bincount(inj.step, minlength=steps).max() <= batch
    bursts = np.bincount(inj.step[inj.task == 0], minlength=steps)
    assert (bursts[::2] == 3).all() and (bursts[1::2] == 0).all()  # the scheduled task is not moved
    for k, name in ((1, "a"), (2, "c")):
        assert counts[name] == plan([cfgs[k]], steps, 64, seed=1).counts()[name]  # the draws' total


def test_iid_mean_above_the_slots_is_one_line():
    with pytest.raises(ConfigError) as e:
        plan([iid("a", 4.5)], 100, batch=4)
    msg = str(e.value)
    assert msg.startswith("tasks[0].frequency: a") and "4.5" in msg and "\n" not in msg
    # Above the slots the scheduled tasks leave: 2 every batch + 2.5 per batch > 4 slots.
    with pytest.raises(ConfigError, match=r"^tasks\[1\]\.frequency: a "):
        plan([burst(2, 1), iid("a", 2.5)], 100, batch=4)


def test_iid_draws_still_waiting_at_the_end_go_into_the_last_batches_with_room():
    """3.4 per batch, 4 slots, 30 steps: the backlog often outlives the run; it fills the latest batches with room, so
    every draw is delivered (the runs whose whole room is smaller than the draws' total are left out)."""
    steps, batch, backfilled = 30, 4, 0
    for seed in range(20):
        p = plan([iid("a", 3.4)], steps, batch, seed=seed)
        draws = np.bincount(steps_of(plan([iid("a", 3.4)], steps, 64, seed=seed)), minlength=steps)
        counts = np.bincount(steps_of(p), minlength=steps)
        assert counts.max() <= batch and len(p) == min(draws.sum(), steps * batch)
        backfilled += bool((np.cumsum(counts) > np.cumsum(draws)).any())  # some delivered before they were drawn
    assert backfilled >= 3
