"""raretask.advise: the width and frequency answers on hand-computed mixtures, the tie rule, and the closed-form
frequency against an independent bisection on Theorem 3's predicate."""

from __future__ import annotations

import numpy as np
import pytest

from raretask import advise, theory
from raretask.config import ConfigError
from raretask.synthetic.mixture import MixtureConfig, TaskConfig

# pi = (0.75, 0.25); task a: lambda = (4, 1, 0.5), task b: lambda = (6, 2).
# utilities: a#1 3 > b#1 1.5 > a#2 0.75 > b#2 0.5 > a#3 0.375
PI = np.array([0.75, 0.25])
LAMS = [np.array([4.0, 1.0, 0.5]), np.array([6.0, 2.0])]


def hand_mixture(placement: str = "orthogonal", dim: int = 8):
    return MixtureConfig(dim=dim, placement=placement, tasks=[
        TaskConfig(name="a", frequency=0.75, eigenvalues=[4.0, 1.0, 0.5]),
        TaskConfig(name="b", frequency=0.25, eigenvalues=[6.0, 2.0])]).build()


@pytest.mark.parametrize("task,m,width", [("a", 1, 1), ("b", 1, 2), ("a", 2, 3), ("b", 2, 4), ("a", 3, 5)])
def test_min_width_hand(task, m, width):
    a = advise.advise(hand_mixture(), task, features=m)
    assert (a.question, a.answer, a.interval, a.extrapolated) == ("width", width, None, False)


@pytest.mark.parametrize("target,width", [(0.3, 1), (0.2, 3), (0.05, 5)])
def test_min_width_for_target_loss_hand(target, width):
    # task a, Tr C = 5.5: one feature leaves 1.5/5.5 = 0.27, two leave 0.5/5.5 = 0.09, three leave 0
    a = advise.advise(hand_mixture(), "a", target_loss=target)
    assert a.answer == width
    assert a.evidence["normalised_loss"] <= target


def test_width_tie_rule_goes_to_the_earlier_task():
    mix = MixtureConfig(dim=4, tasks=[TaskConfig(name="first", frequency=0.5, eigenvalues=[1.0]),
                                      TaskConfig(name="second", frequency=0.5, eigenvalues=[1.0])]).build()
    assert advise.advise(mix, "first").answer == 1
    assert advise.advise(mix, "second").answer == 2


@pytest.mark.parametrize("task,width,m,pi,competitor,attained", [
    # b at N = 1 against a#1: pi * 6 = 3 (1 - pi) / 0.75 -> pi = 3 / (6 * 0.75 + 3) = 0.4; the tie goes to a
    ("b", 1, 1, 0.4, ("a", 1), False),
    # a at N = 1 against b#1: pi * 4 = 1.5 (1 - pi) / 0.25 -> pi = 1.5 / (4 * 0.25 + 1.5) = 0.6; the tie goes to a
    ("a", 1, 1, 0.6, ("b", 1), True),
    # b at N = 3: two of a's features may stay ahead; the cut is a#3: 0.375 / (6 * 0.75 + 0.375)
    ("b", 3, 1, 0.375 / 4.875, ("a", 3), False),
    # b's second feature at N = 2: b#1 is ahead of it, so the cut is a#1: 3 / (2 * 0.75 + 3) = 2/3
    ("b", 2, 2, 2 / 3, ("a", 1), False),
])
def test_min_frequency_hand(task, width, m, pi, competitor, attained):
    a = advise.advise(hand_mixture(), task, width=width, features=m)
    e = a.evidence
    assert a.question == "frequency"
    assert a.answer == pytest.approx(pi, rel=1e-12)
    assert (e["competitor"]["task"], e["competitor"]["index"]) == competitor
    assert e["attained"] is attained
    assert e["upsample"] == pytest.approx(pi / e["config_frequency"], rel=1e-12)
    assert e["competitor"]["utility_at_answer"] == pytest.approx(pi * hand_mixture().eigenvalues[
        hand_mixture().names.index(task)][m - 1], rel=1e-12)  # the two utilities tie at the answer


def test_min_frequency_when_the_other_tasks_run_out():
    a = advise.advise(hand_mixture(), "b", width=4)  # a has 3 features: N = 4 keeps b#1 at any pi_b > 0
    assert a.answer == 0.0 and a.evidence["competitor"] is None and "any frequency" in a.evidence["reason"]


@pytest.mark.parametrize("task,width,m", [("b", 1, 1), ("a", 1, 1), ("b", 3, 1), ("b", 2, 2), ("a", 2, 2)])
def test_frequency_answer_is_the_edge_of_theorem_3(task, width, m):
    mix = hand_mixture()
    k = mix.names.index(task)
    a = advise.advise(mix, task, width=width, features=m)
    keeps = lambda pi: advise.keeps_feature(advise.reweighted(mix.frequencies, k, pi), mix.eigenvalues, k, width, m)
    assert keeps(a.answer)
    assert not keeps(a.answer * (1 - 1e-6))
    assert not keeps(float(np.nextafter(a.answer, 0.0)))  # the answer is the edge to the last double


def test_frequency_matches_bisection_on_random_mixtures():
    """Independent check: bisection on the monotone predicate 'width N keeps T's m-th feature' (Theorem 3 via
    theory.features_kept on the reweighted mixture) lands on the closed form to 1e-9 relative."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        K = int(rng.integers(2, 6))
        freqs = rng.dirichlet(np.ones(K))
        lams = [np.sort(rng.uniform(0.1, 3.0, int(rng.integers(1, 5))))[::-1] for _ in range(K)]
        k = int(rng.integers(K))
        m = int(rng.integers(1, len(lams[k]) + 1))
        total = sum(len(x) for x in lams)
        width = int(rng.integers(m, total + 1))
        pi, comp, _ = advise.minimum_frequency(freqs, lams, k, width, m)
        keeps = lambda p: advise.keeps_feature(advise.reweighted(freqs, k, p), lams, k, width, m)
        if comp is None:
            assert keeps(1e-9)
            continue
        lo, hi = 0.0, 1.0 - 1e-15
        assert keeps(hi)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if keeps(mid) else (mid, hi)
        assert hi == pytest.approx(pi, rel=1e-9)
        assert keeps(pi) and not keeps(pi * (1 - 1e-6))


def test_prop6_threshold_is_reported_outside_the_frequent_set():
    # frequent set at mass 0.8: {a (0.75), b} -> b is inside; at mass 0.7 only a: b is outside
    e = advise.advise(hand_mixture(), "b", frequent_mass=0.7).evidence
    mu_F = np.array([3.0, 0.75, 0.375])  # a's utilities
    assert e["frequent_set"] == ["a"]
    assert e["critical_width"] == theory.critical_width(mu_F, 1.5) == 2
    assert e["residual_threshold"] == pytest.approx(0.375)
    assert advise.advise(hand_mixture(), "a", frequent_mass=0.7).evidence["critical_width"] is None


@pytest.mark.parametrize("kwargs,field", [
    ({"name": "nope"}, "--task"), ({"name": "a", "width": 0}, "--width"), ({"name": "a", "width": 9}, "--width"),
    ({"name": "a", "target_loss": 0.0}, "--target-loss"), ({"name": "a", "target_loss": 1.0}, "--target-loss"),
    ({"name": "b", "features": 3}, "--features"), ({"name": "b", "features": 0}, "--features"),
    ({"name": "b", "width": 1, "features": 2}, "--width"),
    ({"name": "a", "features": 1, "target_loss": 0.5}, "--features")])
def test_bad_questions_are_config_errors(kwargs, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        advise.advise(hand_mixture(), **kwargs)


def test_overlapping_subspaces_are_refused():
    with pytest.raises(ConfigError, match="^mixture.placement:"):
        advise.advise(hand_mixture("random"), "a")


# ------------------------------------------------------------------------------------------- scaling-law view


def zipf_mixture(count: int, zipf: float = 2.0):
    return MixtureConfig.from_dict({"dim": count, "placement": "orthogonal", "zipf": zipf,
                                    "tasks_from": {"count": count, "rank": 1}}).build()


def test_scaling_law_predicts_beta_minus_one_and_the_optimum_approaches_it_as_K_grows():
    a = advise.scaling_law(zipf_mixture(8), [1, 2, 3, 4, 8], zipf=2.0)
    assert (a.task, a.question, a.answer, a.interval) == (None, "scaling_law", 1.0, None)
    assert a.evidence["widths"] == [1, 2, 3, 4]  # at N = 8 every task is held: L* = 0, nothing to fit
    assert a.evidence["closed_form_exponent"] > 1.1  # a finite tail runs out faster than N^-1
    many = advise.scaling_law(zipf_mixture(150), [4, 8, 16], zipf=2.0)
    assert many.evidence["closed_form_exponent"] == pytest.approx(1.0, abs=0.1)  # sum_{k > N} k^-2 ~ 1 / N
    # the ScalingLaw (L0 = 0, alpha = beta - 1) anchored on the closed form: exact where the tail is a power law
    assert many.evidence["scaling_law_loss"] == pytest.approx(many.evidence["closed_form_loss"], rel=0.05)


def test_scaling_law_zipf_at_most_one_has_no_exponent_and_frequencies_give_beta():
    flat = advise.scaling_law(zipf_mixture(8, zipf=1.0), [1, 2, 3], zipf=1.0)
    assert flat.answer is None and "diverges" in flat.evidence["reason"]
    fitted = advise.scaling_law(zipf_mixture(8, zipf=1.5), [1, 2, 3], zipf=None)  # beta from the frequencies
    assert fitted.evidence["zipf"] == pytest.approx(1.5, rel=1e-9) and fitted.answer == pytest.approx(0.5)
    assert fitted.evidence["zipf_source"].startswith("fitted")


def test_trained_loss_must_come_from_one_grid_point_of_this_mixture():
    mix = zipf_mixture(3)
    rows = {"width": [1, 1, 1], "task": list(mix.names), "seed": [0, 0, 0], "frequency": list(mix.frequencies),
            "loss": [0.0, 1.0, 1.0]}
    assert advise.trained_mixture_loss(mix, rows) == {1: pytest.approx(mix.frequencies[1] + mix.frequencies[2])}
    with pytest.raises(ConfigError, match="several grid points"):
        advise.trained_mixture_loss(mix, {k: v * 2 for k, v in rows.items()})
    with pytest.raises(ConfigError, match="another mixture"):
        advise.trained_mixture_loss(mix, {**rows, "frequency": [0.5, 0.3, 0.2]})
