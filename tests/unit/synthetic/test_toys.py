"""App. C.4's toys: Example 7's update rule, drift and update-and-forget decay; Fig. 11's 1-vs-2-neuron outcome."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from raretask.config import ConfigError, load_config
from raretask.synthetic.toys import (FREQUENT, LINEAR_REGIME, RARE, NeuronToy, ToyConfig, competition_tables,
                                     decay_law_error, decay_table, run_toy, trace_tables)

TOY = Path(__file__).resolve().parents[3] / "configs" / "synthetic" / "toy.toml"


def config(*overrides):
    return load_config(ToyConfig, None, list(overrides))


def one_step(theta, task, lr, dim=4):
    toy = NeuronToy.at_angle(np.asarray(theta, float), dim, lr)
    toy.step(np.full(len(theta), task))
    return toy.angle()


def test_one_neuron_step_is_the_papers_update():
    """theta+ = theta -+ arctan(eta sin 2 theta) exactly, i.e. theta -+ eta sin 2 theta + O(eta^3)."""
    theta, lr = np.linspace(0.05, 1.5, 30), 0.03
    np.testing.assert_allclose(one_step(theta, FREQUENT, lr), theta - np.arctan(lr * np.sin(2 * theta)), atol=1e-13)
    np.testing.assert_allclose(one_step(theta, RARE, lr), theta + np.arctan(lr * np.sin(2 * theta)), atol=1e-13)
    assert np.abs(one_step(theta, FREQUENT, lr) - (theta - lr * np.sin(2 * theta))).max() < lr**3


@pytest.mark.parametrize("p", [0.6, 0.9])
def test_expected_drift_is_eta_q_minus_p_sin_2theta(p):
    theta, lr = np.linspace(0.05, 1.5, 30), 0.02
    drift = p * one_step(theta, FREQUENT, lr) + (1 - p) * one_step(theta, RARE, lr) - theta
    np.testing.assert_allclose(drift, lr * (1 - 2 * p) * np.sin(2 * theta), atol=lr**3)
    assert np.all(drift < 0)  # towards the common task


def test_loss_identities_of_example_7():
    """Alignment 1 - l_k: l_a = sin^2 theta, l_b = cos^2 theta for u = cos theta a + sin theta b."""
    theta = np.linspace(0, 1.5, 7)
    captured, m = NeuronToy.at_angle(theta, 5, 0.1).alignments()
    np.testing.assert_allclose(1 - captured[:, FREQUENT], np.sin(theta) ** 2, atol=1e-14)
    np.testing.assert_allclose(1 - captured[:, RARE], np.cos(theta) ** 2, atol=1e-14)


def test_g_common_steps_shrink_theta_by_1_minus_2eta_to_the_g():
    """README: toy.toml's G = 200 common steps from theta0 = 0.1 shrink theta by (1 - 2 eta)^G within 0.4%, for
    eta = 0.002..0.05. The linear factor is exact; the update's cubic term keeps theta_G / theta_0 above the law by
    decay_law_error ~ theta0^2/3 (1 - (1-2 eta)^(2G)) / ((1 - 2 eta)(1 - eta)), at most 0.39% here (eta = 0.05):
    the 0.4% holds because theta0 = 0.1 is in the linear regime. The measured error is that cubic term to within
    the next order, ~theta0^2 = 1% of it: the formula the theta0 warning uses is checked, not just the bound."""
    cfg = load_config(ToyConfig, TOY)
    f = cfg.forget
    assert (f.lrs, f.gap, f.theta0) == ([0.002, 0.005, 0.01, 0.02, 0.05], 200, 0.1)  # the README's run
    d = decay_table(cfg)
    for lr in f.lrs:
        rows = [i for i, a in enumerate(d["lr"]) if a == lr]
        assert [d["g"][i] for i in rows] == list(range(201))
        err = np.array([d["ratio"][i] / d["linear"][i] - 1 for i in rows])
        assert np.abs(err).max() < 0.004, (lr, err.max())
        assert err[-1] > 0 and err[-1] == pytest.approx(decay_law_error(0.1, lr, 200), rel=f.theta0**2), lr
    # the exponential form is the small-eta limit: it drifts away as eta G * eta grows
    big = config("forget.lrs=[0.1]", "forget.gap=100")
    d = decay_table(big)
    assert abs(d["ratio"][-1] / math.exp(-2 * 0.1 * 100) - 1) > 0.5


def test_theta0_outside_the_linear_regime_warns_naming_the_field():
    """Above theta0 ~ 0.17 the (1 - 2 eta)^G law is expected > 1% off (decay_law_error ~ theta0^2/3): one warning
    naming forget.theta0 and the expected error, which decay_table then shows. None at toy.toml's 0.1 (0.39%) or
    at 0.15 (0.88% at eta = 0.05, G = 200; the limit is 0.16 there, 0.17 for small eta)."""
    with pytest.warns(UserWarning, match=r"forget\.theta0 = 0\.2 .* expected 1\.6% off .* eta = 0\.05") as caught:
        cfg = config("forget.theta0=0.2")
    assert len(caught) == 1
    d = decay_table(cfg)
    assert d["ratio"][-1] / d["linear"][-1] - 1 > LINEAR_REGIME  # eta = 0.05, the row the warning quotes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config("forget.theta0=0.15")
        load_config(ToyConfig, TOY)


def test_seeded_traces_forget_gap_by_gap_and_follow_the_drift():
    cfg = config("forget.lrs=[0.005, 0.02]", "forget.steps=600", "seeds=[0, 1, 2]")
    traces, gaps = trace_tables(cfg)
    for lr in cfg.forget.lrs:
        sel = [i for i, a in enumerate(gaps["lr"]) if a == lr and gaps["theta_start"][i] <= 0.1]
        assert len(sel) > 20
        err = np.array([gaps["ratio"][i] / gaps["linear"][i] - 1 for i in sel])
        assert np.abs(err).max() < 0.05
        # every gap is a rare update followed by common steps only: theta shrinks over it
        assert all(gaps["ratio"][i] < 1 for i in sel)
    end = [i for i, s in enumerate(traces["step"]) if s == 600]
    theta, mean_field = np.array(traces["theta"])[end], np.array(traces["mean_field"])[end]
    assert np.all(np.abs(np.log(theta / mean_field)) < 1.5)  # within the random walk's spread of log theta
    assert np.all(theta < math.pi / 4)


def test_one_neuron_loses_the_rare_task_two_neurons_keep_it():
    cfg = config("seeds=[0, 1, 2, 3, 4, 5]", "competition.steps=1000", "competition.every=100")
    comp, neurons = competition_tables(cfg)
    last = [i for i, s in enumerate(comp["step"]) if s == 1000]
    for width in (1, 2):
        rows = [i for i in last if comp["width"][i] == width]
        assert len(rows) == 6
        rare = np.array([comp["rare_alignment"][i] for i in rows])
        freq = np.array([comp["frequent_alignment"][i] for i in rows])
        assert np.all(freq > 0.95)
        if width == 1:
            assert np.all(rare < 0.05)  # the frequent task wins the only neuron
        else:
            assert np.all(rare > 0.9)  # one neuron per task
    # with two neurons, each task's gate sits on a different neuron, which is aligned with it
    fin = [i for i, (s, w) in enumerate(zip(neurons["step"], neurons["width"])) if s == 1000 and w == 2]
    for seed in cfg.seeds:
        mine = [i for i in fin if neurons["seed"][i] == seed]
        to_freq = max(mine, key=lambda i: neurons["gate_frequent"][i])
        to_rare = max(mine, key=lambda i: neurons["gate_rare"][i])
        assert to_freq != to_rare
        assert abs(neurons["cos_frequent"][to_freq]) > 0.95 and abs(neurons["cos_rare"][to_rare]) > 0.95


def test_same_config_same_numbers_and_a_width_does_not_depend_on_the_others():
    cfg = config("forget.steps=200", "competition.steps=100", "competition.widths=[1, 3]")
    assert trace_tables(cfg) == trace_tables(cfg) and competition_tables(cfg) == competition_tables(cfg)
    assert trace_tables(config("forget.steps=200", "seeds=[7]")) != trace_tables(config("forget.steps=200",
                                                                                         "seeds=[8]"))
    # a width's task sequence depends on the seed only: the one neuron of width 1 trains on the same draws
    wide = competition_tables(config("competition.steps=100", "competition.widths=[1, 2]"))[0]
    alone = competition_tables(config("competition.steps=100", "competition.widths=[1]"))[0]
    n = len(alone["step"])
    assert {k: v[:n] for k, v in wide.items()} == alone


def test_a_finished_run_is_read_back(tmp_path):
    cfg = config("forget.steps=100", "competition.steps=100", "forget.gap=20", "seeds=[0, 1]")
    first = run_toy(cfg, tmp_path / "a", progress=False)
    assert not list((tmp_path / "a").glob("*.png"))  # the lab writes tables; raretask.report draws
    (tmp_path / "a" / "meta.json").write_text("{}")  # a read-back run starts nothing: meta.json is not rewritten
    again = run_toy(cfg, tmp_path / "a", progress=False)
    assert again.tables == first.tables and (tmp_path / "a" / "meta.json").read_text() == "{}"


@pytest.mark.parametrize("override, message", [
    ("frequency=0.4", "frequency: must be in (0.5, 1)"),
    ("forget.lrs=[0.01, 0.6]", "forget.lrs[1]: must be in (0, 0.5)"),
    ("competition.widths=[0, 2]", "competition.widths: need distinct widths >= 1"),
    ("forget.theta0=2.0", "forget.theta0: must be an angle in (0, pi/2)"),
    ("dim=1", "dim: must be >= 2"),
])
def test_bad_settings_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        config(override)
