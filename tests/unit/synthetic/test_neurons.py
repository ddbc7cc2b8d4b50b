"""Neurons lab: the parity family, the batched model, the ablation, and exact resume."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raretask.config import ConfigError, load_config
from raretask.synthetic import neurons
from raretask.synthetic.neurons import (Activation, NeuronsConfig, NeuronSweep, ParityConfig, evaluate, eval_set,
                                        train_part)


def small(**over) -> NeuronsConfig:
    items = {"tasks.count": 3, "sweep.widths": [2, 4], "sweep.seeds": [0, 1], "train.steps": 60, "eval.every": 20,
             "eval.samples": 128, "train.checkpoint_every": 25, **over}
    return load_config(NeuronsConfig, None, [f"{k}={v!r}".replace("'", '"') for k, v in items.items()])


def test_core_placement_shares_the_first_bits_and_labels_are_parities():
    tasks = ParityConfig(count=3, bits=[3, 2, 4], shared=1).build()
    assert tasks.subsets == [[0, 1, 2], [0, 3], [0, 4, 5, 6]] and tasks.inputs == 7
    assert np.allclose(tasks.frequencies, np.array([1, 1 / 2, 1 / 3]) / (11 / 6))
    x = torch.randint(0, 2, (50, 7), generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    idx, mask = tasks.index(torch.device("cpu"))
    for k, s in enumerate(tasks.subsets):
        y = neurons.parity(x, torch.full((50,), k), idx, mask)
        assert torch.equal(y, x[:, s].prod(-1))


def test_random_placement_draws_distinct_seeded_subsets():
    a = ParityConfig(count=5, bits=[2], placement="random", inputs=4, seed=3).build()
    b = ParityConfig(count=5, bits=[2], placement="random", inputs=4, seed=3).build()
    assert a.subsets == b.subsets and len({tuple(s) for s in a.subsets}) == 5
    assert all(0 <= j < 4 for s in a.subsets for j in s)


@pytest.mark.parametrize("activation", list(Activation))
def test_ablation_delta_equals_zeroing_the_neuron_by_hand(activation):
    cfg = small()
    tasks = cfg.tasks.build()
    model = NeuronSweep(tasks.inputs, 3, [2, 3, 5], [0, 1], activation)
    with torch.no_grad():  # readout biases away from zero so no task sits exactly at chance
        model.c.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    x, y = eval_set(tasks, cfg.eval, torch.device("cpu"))
    full = evaluate(model, x, y, ablate=True)
    checked = 0
    for s, row, k in [(0, 0, 0), (1, 1, 2), (0, 3, 1), (1, 4, 0), (0, 9, 2), (1, 7, 1)]:
        cell = int(model.cell_of_row[row])
        hand = copy.deepcopy(model)
        with torch.no_grad():  # h_i = sigma(0 x + 0) = 0 for relu and gelu
            hand.W[s, row] = 0
            hand.b[s, row] = 0
        again = evaluate(hand, x, y)
        assert full["delta"][s, row, k] == pytest.approx(again["loss"][s, cell, k] - full["loss"][s, cell, k],
                                                         abs=1e-12)
        # and from the formula, without the model: l_k = mean log(1 + exp(-y f_k)) over the cell's other neurons
        o, n = model.starts[cell], model.widths[cell]
        keep = [r for r in range(o, o + n) if r != row]
        W, b, A, c = (p.detach().double() for p in (model.W, model.b, model.A, model.c))
        act = F.relu if activation is Activation.RELU else F.gelu
        f = act(x[k] @ W[s, keep].T + b[s, keep]) @ A[s, k, keep] + c[s, k, cell]
        assert again["loss"][s, cell, k] == pytest.approx(F.softplus(-y[k] * f).mean().item(), abs=1e-12)
        checked += 1
    assert checked == 6
    assert np.abs(full["delta"]).max() > 1e-3  # the check is not vacuous


def test_forward_matches_a_plain_per_cell_network():
    tasks = ParityConfig(count=3).build()
    model = NeuronSweep(tasks.inputs, 3, [1, 4, 3], [5, 7], Activation.GELU)
    x = torch.randint(0, 2, (2, 16, tasks.inputs), generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    task = torch.randint(0, 3, (2, 16), generator=torch.Generator().manual_seed(1))
    out = model(x, task)  # (S, B, C)
    for s in range(2):
        for c, (o, n) in enumerate(zip(model.starts, model.widths)):
            h = F.gelu(x[s] @ model.W[s, o:o + n].T + model.b[s, o:o + n])
            ref = (h * model.A[s, task[s], o:o + n]).sum(-1) + model.c[s, task[s], c]
            assert torch.allclose(out[s, :, c], ref, atol=1e-6)


def test_per_cell_clipping_matches_torch_on_each_cell():
    tasks = ParityConfig(count=3).build()
    model = NeuronSweep(tasks.inputs, 3, [2, 3], [0], Activation.RELU)
    x = torch.randint(0, 2, (1, 32, tasks.inputs), generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    task = torch.randint(0, 3, (1, 32), generator=torch.Generator().manual_seed(1))
    (model(x, task).square().sum() * 10).backward()
    grads = [p.grad.clone() for p in (model.W, model.b, model.A, model.c)]
    model.clip_grad_norm_(0.5)
    for c, (o, n) in enumerate(zip(model.starts, model.widths)):
        cell = [grads[0][0, o:o + n].clone(), grads[1][0, o:o + n].clone(), grads[2][0, :, o:o + n].clone(),
                grads[3][0, :, c].clone()]
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in cell]
        for p, g in zip(params, cell):
            p.grad = g
        norm = torch.nn.utils.clip_grad_norm_(params, 0.5)
        assert norm > 0.5  # clipping actually acted
        for p, mine in zip(params, [model.W.grad[0, o:o + n], model.b.grad[0, o:o + n], model.A.grad[0, :, o:o + n],
                                    model.c.grad[0, :, c]]):
            assert torch.allclose(p.grad, mine, atol=1e-6)


def test_a_cell_trains_the_same_alone_and_in_a_sweep(tmp_path):
    cfg = small(**{"train.clip": 1.0})
    tasks = cfg.tasks.build()
    probs = lambda S: np.tile(tasks.frequencies, (S, 1))  # noqa: E731
    _, together = train_part(cfg, tasks, [2, 4], [0, 1], [(60, probs(2))], tmp_path / "a.pt")
    _, alone = train_part(cfg, tasks, [4], [1], [(60, probs(1))], tmp_path / "b.pt")
    assert [e["step"] for e in together] == [0, 20, 40, 60]
    for a, b in zip(together, alone):
        assert np.allclose(a["loss"][1, 1], b["loss"][0, 0], atol=1e-5)
    assert not np.allclose(together[0]["loss"][1, 1], together[-1]["loss"][1, 1])  # it trained


def test_resume_from_checkpoint_gives_the_same_numbers(tmp_path, monkeypatch):
    cfg = small()
    tasks = cfg.tasks.build()
    phases = [(30, np.tile(tasks.frequencies[::-1], (2, 1))), (30, np.tile(tasks.frequencies, (2, 1)))]
    _, whole = train_part(cfg, tasks, [2, 4], [0, 1], phases, tmp_path / "whole.pt")

    class Killed(Exception):
        pass

    real, calls = neurons.evaluate, []

    def dies_at_step_40(*a, **k):  # evaluations run at steps 0, 20, 30 (phase end), 40: die there, after step 25's
        calls.append(1)            # checkpoint, so the resumed run must replay steps 26..40
        if len(calls) == 4:
            raise Killed
        return real(*a, **k)

    monkeypatch.setattr(neurons, "evaluate", dies_at_step_40)
    ckpt = tmp_path / "part.pt"
    with pytest.raises(Killed):
        train_part(cfg, tasks, [2, 4], [0, 1], phases, ckpt)
    assert torch.load(ckpt, weights_only=False)["step"] == 25
    monkeypatch.setattr(neurons, "evaluate", real)
    _, resumed = train_part(cfg, tasks, [2, 4], [0, 1], phases, ckpt)
    assert [e["step"] for e in resumed] == [e["step"] for e in whole] == [0, 20, 30, 40, 60]
    assert [e["phase"] for e in whole] == [0, 0, 0, 1, 1]
    for a, b in zip(whole, resumed):
        assert np.array_equal(a["loss"], b["loss"]) and np.array_equal(a["accuracy"], b["accuracy"])


def test_allocation_threshold_is_a_fraction_of_the_gap_with_a_floor():
    cfg = small(**{"alloc.fraction": 0.5, "alloc.floor": 0.05})
    chance = math.log(2)
    loss = np.array([[[0.1, chance]]])  # (S=1, C=1, K=2): task 0 learned, task 1 at chance
    delta = np.array([[[0.25, 0.04], [0.35, 0.06]]])  # (S, rows=2, K)
    thr, allocated = neurons.allocation(delta, loss, np.array([0, 0]), cfg.alloc)
    assert np.allclose(thr[0, :, 0], 0.5 * (chance - 0.1)) and np.allclose(thr[0, :, 1], 0.05)
    assert allocated.tolist() == [[[False, False], [True, True]]]


@pytest.mark.parametrize("override, message", [
    ("tasks.bits=[1]", "tasks.bits[0]: must be >= 2"),
    ("tasks.bits=[2,2]", "tasks.bits: expected 1 or 3 values"),
    ("tasks.inputs=2", "tasks.inputs: the tasks need at least 4 bits"),
    ("tasks.frequencies=[0.5,0.6,0.1]", "tasks.frequencies: frequencies sum to 1.2"),
    ("solutions.frequencies=[0.5,0.5]", "solutions.frequencies: expected 3 values"),
    ("solutions.task=3", "solutions.task: 3 is not a task index"),
    ("sweep.widths=[0,2]", "sweep.widths: must be >= 1"),
    ("eval.learned=0.4", "eval.learned: must be in (0.5, 1]"),
    ("activation=tanh", "activation: 'tanh' is not one of relu, gelu"),
    ("solutions.task=-2", "solutions.task: -2 is not a task index"),
    ("tasks.placement=random tasks.inputs=2", "tasks.inputs: 2 bits hold fewer than 3 distinct 2-bit subsets"),
])
def test_bad_config_names_the_field(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(NeuronsConfig, None, ["tasks.count=3", *override.split()])
    assert message in str(e.value) and "\n" not in str(e.value)
