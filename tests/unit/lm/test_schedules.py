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


def burst(rate, every):
    return LMTaskConfig(name="b", frequency=rate, unit="per_batch", schedule="burst", every=every)


@pytest.mark.parametrize("rate, every, steps", [(1, 100, 101), (1, 100, 150), (0.3, 7, 50), (2.5, 4, 9)])
def test_burst_delivers_the_matched_rate_when_the_period_is_cut_short(rate, every, steps):
    p = plan([burst(rate, every)], steps, batch=128)
    assert len(p) == math.ceil(round(rate * steps, 9))  # 101 steps at 1 per batch: 101 instances, not 200
    counts = np.bincount(p.step, minlength=steps)
    assert set(np.flatnonzero(counts)) <= set(range(0, steps, every))  # still one batch per period
    full = (steps // every) * every
    assert counts[:full].sum() == math.ceil(round(rate * full, 9))  # the full periods are untouched
    assert p.realised["b"].per_batch == pytest.approx(rate, abs=1 / steps)


@pytest.mark.parametrize("rate, every, steps", [(1, 100, 200), (0.3, 7, 49), (2.5, 4, 8)])
def test_burst_counts_unchanged_when_the_period_divides_the_run(rate, every, steps):
    counts = np.bincount(plan([burst(rate, every)], steps, batch=128).step, minlength=steps)
    periods = np.arange(steps // every + 1) * every
    expected = np.zeros(steps, dtype=np.int64)
    expected[::every] = np.diff(np.ceil(np.round(periods * rate, 9)))  # each period's share, the carry rule
    assert np.array_equal(counts, expected)
