"""App. C.4's toys: Example 7's update rule, drift and update-and-forget decay; Fig. 11's 1-vs-2-neuron outcome."""

import math

import numpy as np
import pytest

from raretask.config import ConfigError, load_config
from raretask.synthetic.toys import (FREQUENT, RARE, NeuronToy, ToyConfig, competition_tables, decay_table,
                                     run_toy, trace_tables)


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
    cfg = config("forget.lrs=[0.001, 0.005, 0.01]", "forget.gap=300", "forget.theta0=0.2")
    d = decay_table(cfg)
    for lr in cfg.forget.lrs:
        last = max(i for i, a in enumerate(d["lr"]) if a == lr)
        assert d["g"][last] == 300
        assert abs(d["ratio"][last] / (1 - 2 * lr) ** 300 - 1) < 0.05, lr  # small eta: within 5%
        assert d["ratio"][last] < 0.6  # and theta did shrink
    # the exponential form is the small-eta limit: it drifts away as eta G * eta grows
    big = config("forget.lrs=[0.1]", "forget.gap=100")
    d = decay_table(big)
    assert abs(d["ratio"][-1] / math.exp(-2 * 0.1 * 100) - 1) > 0.5


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
    assert sorted(p.name for p in (tmp_path / "a").glob("*.png")) == ["fig11.png", "forget.png"]
    (tmp_path / "a" / "fig11.png").unlink()  # nothing is redrawn for a finished run
    again = run_toy(cfg, tmp_path / "a", progress=False)
    assert again.tables == first.tables and not (tmp_path / "a" / "fig11.png").exists()


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
