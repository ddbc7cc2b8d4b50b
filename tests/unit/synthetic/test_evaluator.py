"""Samples-mode evaluation: a cell's Monte-Carlo loss depends on its own (seed, width) and the evaluation index only."""

import numpy as np
import pytest
import torch

from raretask.synthetic.mixture import MixtureConfig
from raretask.synthetic.model import SweepStudent
from raretask.synthetic.train import EvalConfig, EvalMode, Evaluator

CPU = torch.device("cpu")
SEEDS = [0, 4]
SAMPLES = EvalConfig(mode=EvalMode.SAMPLES, samples=256)


@pytest.fixture(scope="module")
def mixture():
    return MixtureConfig.from_dict({"dim": 12, "zipf": 1.0, "tasks": [{"name": "a", "rank": 3},
                                                                       {"name": "b", "rank": 1}]}).build()


def evaluations(mixture, widths, e=SAMPLES, times=2):
    """`times` successive evaluations of an untrained sweep over `widths` (its cells' init is the cell's own)."""
    student = SweepStudent(mixture.dim, mixture.ranks, widths, SEEDS)
    ev = Evaluator(mixture, e, SEEDS, CPU)
    return student, [ev(student) for _ in range(times)]


def test_samples_loss_of_a_width_does_not_depend_on_the_other_widths(mixture, one_thread):
    alone, ms_alone = evaluations(mixture, [5])
    swept, ms_swept = evaluations(mixture, [1, 2, 5])
    # the same cell weights in both sweeps, so any difference below would come from the Monte-Carlo draws
    for s in range(len(SEEDS)):
        for a, b in zip(alone.cell(s, 0), swept.cell(s, 2)):
            assert torch.equal(a, b)
    for m_alone, m_swept in zip(ms_alone, ms_swept):  # every evaluation, not only the first
        np.testing.assert_array_equal(m_alone["loss"][:, 0], m_swept["loss"][:, 2])
        np.testing.assert_array_equal(m_alone["residual"][:, 0], m_swept["residual"][:, 2])
    # fresh draws per evaluation and per seed (the loss of an untrained cell is not constant across them)
    assert (ms_alone[0]["loss"] != ms_alone[1]["loss"]).all()
    assert (ms_alone[0]["loss"][0] != ms_alone[0]["loss"][1]).all()


def test_samples_mode_really_samples(mixture, one_thread):
    _, (sampled,) = evaluations(mixture, [1, 2, 5], times=1)
    _, (exact,) = evaluations(mixture, [1, 2, 5], EvalConfig(mode=EvalMode.EXACT), times=1)
    assert (sampled["loss"] != exact["loss"]).all()
    np.testing.assert_allclose(sampled["loss"], exact["loss"], rtol=0.5)  # 256 draws: a loose sanity bound


def test_restored_seed_streams_continue_the_evaluation_sequence(mixture, one_thread):
    """What a checkpoint saves (the per-seed streams' states) is all a resumed run needs to draw the same samples."""
    student = SweepStudent(mixture.dim, mixture.ranks, [1, 2, 5], SEEDS)
    first = Evaluator(mixture, SAMPLES, SEEDS, CPU)
    first(student)
    states = [g.get_state() for g in first.generators]
    expected = first(student)
    resumed = Evaluator(mixture, SAMPLES, SEEDS, CPU)
    for g, state in zip(resumed.generators, states):
        g.set_state(state)
    np.testing.assert_array_equal(resumed(student)["loss"], expected["loss"])


def test_exact_mode_leaves_the_seed_streams_untouched(mixture, one_thread):
    ev = Evaluator(mixture, EvalConfig(mode=EvalMode.EXACT), SEEDS, CPU)
    before = [g.get_state() for g in ev.generators]
    ev(SweepStudent(mixture.dim, mixture.ranks, [1, 2], SEEDS))
    assert all(torch.equal(a, g.get_state()) for a, g in zip(before, ev.generators))
