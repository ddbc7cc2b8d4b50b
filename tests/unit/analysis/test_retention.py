"""Retention after injections: the windows after each injection and the decay fit recovering a planted constant."""

import math

import numpy as np
import pytest

from raretask.analysis.retention import after_injections, fit_decay, mean_curve


def planted_run(tau: float, gap: int = 50, bursts: int = 6, noise: float = 0.0, seed: int = 0):
    """A task loss falling by A at every injection (every `gap` steps) and relaxing back with time constant tau."""
    rng = np.random.default_rng(seed)
    steps = np.arange(gap * bursts + 1)
    k = steps % gap
    loss = 3.0 - 0.4 * np.exp(-k / tau) * (k > 0) + noise * rng.standard_normal(len(steps))
    return steps, loss, list(range(0, gap * bursts, gap))


@pytest.mark.parametrize("tau", [5.0, 20.0, 80.0])
def test_the_fit_recovers_a_planted_decay_constant(tau):
    steps, loss, inj = planted_run(tau)
    rows = after_injections(steps, loss, inj, window=120)
    curve = mean_curve(rows)
    fit = fit_decay(curve["k"], curve["mean"], until=49)
    assert fit.tau == pytest.approx(tau, rel=1e-6) and fit.amplitude == pytest.approx(0.4, rel=1e-6)
    assert fit.points == 49 and fit.r2 == pytest.approx(1.0)


def test_noise_leaves_the_constant_within_a_few_percent():
    steps, loss, inj = planted_run(15.0, bursts=40, noise=0.005, seed=1)
    curve = mean_curve(after_injections(steps, loss, inj, window=49))
    fit = fit_decay(curve["k"], curve["mean"], until=30)  # where the drop stands above the noise
    assert fit.tau == pytest.approx(15.0, rel=0.1)


def test_windows_span_later_injections_and_start_at_zero():
    steps, loss, inj = planted_run(10.0, gap=20, bursts=5)
    rows = after_injections(steps, loss, inj, window=50)
    first = [d for s0, k, d in zip(rows["injection"], rows["k"], rows["delta"]) if s0 == 0]
    assert len(first) == 51 and first[0] == 0 and first[20] == pytest.approx(loss[20] - loss[0])
    curve = mean_curve(rows)
    assert curve["count"][0] == 5 and curve["count"][-1] == 3  # the last two injections' windows end with the run
    assert after_injections([10, 20], [1.0, 2.0], [15])["k"] == []  # no loss at the injection step: skipped


def test_no_forgetting_is_an_infinite_constant_and_too_few_points_nan():
    k = np.arange(0, 11)
    assert fit_decay(k, -0.1 - 0.01 * k).tau == math.inf  # the drop deepens until the next injection
    assert math.isnan(fit_decay(k, 0.2 + 0 * k).tau)  # the loss rose: nothing to fit
    assert fit_decay(k, 0.2 + 0 * k).points == 0
