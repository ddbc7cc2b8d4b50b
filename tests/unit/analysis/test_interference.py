"""Per-task encoder gradients in one pass equal K separate backward passes; their factored Gram statistics equal
those of the materialised gradients; the tap leaves training unchanged."""

import contextlib
import numpy as np
import pytest
import torch

from raretask.analysis import interference
from raretask.analysis.interference import (GradientTap, Targets, batch_stats, exact_task_gradients,
                                            gradient_stats, hidden_gradients,
                                            interference_metrics, per_task_gradients, per_task_stats, plan_split)
from raretask.synthetic.interference import InterferenceConfig
from raretask.synthetic.mixture import TaskStream
from raretask.synthetic.model import CellStudent, SweepStudent
from raretask.synthetic.train import SweepTrainer

TOML = """
[mixture]
dim = 10
zipf = 1.0
noise = 0.1
[[mixture.tasks]]
name = "a"
rank = 3
[[mixture.tasks]]
name = "b"
rank = 1
scale = 2.0
[[mixture.tasks]]
name = "c"
eigenvalues = [1.0, 0.5]
[[mixture.tasks]]
name = "d"
rank = 2
[train]
steps = 6
batch_size = 24
lr = 0.05
warmup = 2
device = "cpu"
[eval]
every = 3
[sweep]
widths = [1, 3, 6]
seeds = [0, 5]
"""


@pytest.fixture
def cfg(config_from):
    return config_from(InterferenceConfig, TOML)


def reference_loop(student, x, y, offsets, counts):
    """K backward passes: task k's share of the batch loss, differentiated alone."""
    pred = student(x, offsets)
    task_of_row = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device) % counts.shape[-1],
                                          counts.flatten())
    out = []
    for k in range(counts.shape[-1]):
        mask = (task_of_row == k).to(pred.dtype)
        if isinstance(student, CellStudent):
            loss = ((pred - y).square().sum(-1) * mask).sum() / x.shape[0]
        else:
            loss = ((pred - y[:, None]).square().sum(-1) * mask[:, None]).sum() / x.shape[1]
        (g,) = torch.autograd.grad(loss, student.encoder, retain_graph=True)
        out.append(g)
    return torch.stack(out, -3)  # (S, K, rows, d) or (K, N, d)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("path", ["gather", "block_diagonal", "per_cell"])
def test_sweep_per_task_gradients_equal_a_backward_per_task(cfg, dtype, tol, path, monkeypatch):
    monkeypatch.setattr(interference, "GATHER_ELEMENTS", float("inf") if path == "gather" else 0.0)
    monkeypatch.setattr(interference, "BLOCK_DIAGONAL_FLOPS", float("inf") if path == "block_diagonal" else 0.0)
    c = cfg()
    mix = c.mixture.build()
    student = SweepStudent(mix.dim, mix.ranks, c.sweep.widths, c.sweep.seeds, dtype=dtype)
    batch = TaskStream(mix, c.sweep.seeds, torch.device("cpu"), dtype).sample(40)
    g = per_task_gradients(student, batch.x, batch.y, batch.offsets)
    S, K, rows, d = len(c.sweep.seeds), mix.num_tasks, student.encoder.shape[1], mix.dim
    assert g.shape == (S, K, rows, d) and student.encoder.grad is None
    ref = reference_loop(student, batch.x, batch.y, batch.offsets, batch.counts)
    scale = ref.abs().max()
    assert scale > 0.1
    assert (g - ref).abs().max() <= tol * scale  # stated: 1e-10 (float64), 1e-5 (float32) of the largest entry
    for o, n in zip(student.starts, student.widths):  # a cell's own block is (S, K, N_c, d)
        assert g[:, :, o:o + n].shape == (S, K, n, d)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("gather", [True, False])
def test_cell_per_task_gradients_equal_a_backward_per_task(cfg, dtype, tol, gather, monkeypatch):
    monkeypatch.setattr(interference, "GATHER_ELEMENTS", float("inf") if gather else 0.0)
    mix = cfg().mixture.build()
    student = CellStudent(mix.dim, mix.ranks, 4, seed=3, dtype=dtype)
    batch = TaskStream(mix, [3], torch.device("cpu"), dtype).sample(50)
    g = per_task_gradients(student, batch.x[0], batch.y, batch.offsets)
    ref = reference_loop(student, batch.x[0], batch.y, batch.offsets, batch.counts)
    assert g.shape == (mix.num_tasks, 4, mix.dim)
    assert (g - ref).abs().max() <= tol * ref.abs().max()


def test_a_task_absent_from_the_batch_has_zero_gradient_and_nan_cosines(cfg):
    mix = cfg().mixture.build()
    student = CellStudent(mix.dim, mix.ranks, 3, seed=0, dtype=torch.float64)
    counts = [10, 6, 0, 4]  # task c has no example in this batch
    x = torch.randn(20, mix.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A = torch.as_tensor(mix.teachers())  # (K, r_max, d)
    task = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    y = torch.einsum("brd,bd->br", A[task], x)
    offsets = torch.cumsum(torch.tensor(counts), 0).to(torch.int32)
    g = per_task_gradients(student, x, y, offsets)
    assert torch.all(g[2] == 0) and torch.all(g[[0, 1, 3]].abs().amax((1, 2)) > 0)
    targets = Targets([0, 1], 3, torch.as_tensor(mix.bases[3]), [0, 1, 2, 3])
    m = interference_metrics(gradient_stats(student, g, targets), targets)
    assert np.isnan(m["cosine"][0, 0, 2]).all() and np.isfinite(m["cosine"][0, 0, 0, 1])
    assert np.isfinite(m["mean_cosine"]).all()  # the mean runs over the pairs that exist
    factored = interference_metrics(per_task_stats(student, x, y, offsets, targets), targets)
    np.testing.assert_allclose(factored["cosine"], m["cosine"], rtol=1e-9, atol=1e-12)  # NaN where m has NaN


def test_exact_gradients_are_the_gradient_of_the_closed_form_loss(cfg):
    c = cfg()
    mix = c.mixture.build()
    A = torch.as_tensor(mix.teachers())
    pi = torch.as_tensor(mix.frequencies)
    sweep = SweepStudent(mix.dim, mix.ranks, c.sweep.widths, c.sweep.seeds, dtype=torch.float64)
    g = exact_task_gradients(sweep, mix)
    for s in range(len(c.sweep.seeds)):
        for cell, n in enumerate(c.sweep.widths):
            W, D = sweep.cell(s, cell)
            W = W.clone().requires_grad_(True)
            for k in range(mix.num_tasks):  # pi_k l_k = pi_k ||D_k^T W - A_k||_F^2
                loss = pi[k] * (torch.einsum("nr,nd->rd", D[k], W) - A[k]).square().sum()
                (ref,) = torch.autograd.grad(loss, W)
                o = sweep.starts[cell]
                torch.testing.assert_close(g[s, k, o:o + n], ref, rtol=1e-10, atol=1e-12)
    cell = CellStudent(mix.dim, mix.ranks, 3, seed=5, dtype=torch.float64)
    torch.testing.assert_close(exact_task_gradients(cell, mix), exact_task_gradients(
        SweepStudent(mix.dim, mix.ranks, [3], [5], dtype=torch.float64), mix)[0, :, :3])


def test_batch_gradients_average_to_the_exact_ones(cfg):
    mix = cfg("mixture.noise=0.0").mixture.build()
    student = CellStudent(mix.dim, mix.ranks, 3, seed=1, dtype=torch.float64)
    batch = TaskStream(mix, [1], torch.device("cpu"), torch.float64).sample(200_000)
    g = per_task_gradients(student, batch.x[0], batch.y, batch.offsets)
    exact = exact_task_gradients(student, mix)
    err = (g - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)
    assert err.max() < 0.05, err  # Monte-Carlo error ~ 1/sqrt(pi_k B)


def test_metrics_match_their_definitions(cfg):
    c = cfg()
    mix = c.mixture.build()
    sweep = SweepStudent(mix.dim, mix.ranks, c.sweep.widths, c.sweep.seeds, dtype=torch.float64)
    batch = TaskStream(mix, c.sweep.seeds, torch.device("cpu"), torch.float64).sample(64)
    g = per_task_gradients(sweep, batch.x, batch.y, batch.offsets)
    F, r = [0, 1], 3
    Br = torch.as_tensor(mix.bases[r])
    every, some = Targets(F, r, Br, [0, 1, 2, 3]), Targets(F, r, Br, [0, 1, 3])
    m = interference_metrics(gradient_stats(sweep, g, every), every)
    sub = interference_metrics(gradient_stats(sweep, g, some), some)
    for s in range(2):
        for cell, (o, n) in enumerate(zip(sweep.starts, sweep.widths)):
            flat = g[s, :, o:o + n].flatten(1)  # (K, N d)
            cos = torch.nn.functional.cosine_similarity(flat[:, None], flat[None], dim=-1).numpy()
            close(m["cosine"][s, cell], cos)
            G_F = g[s, F, o:o + n].sum(0)  # (N, d)
            close(m["frequent_norm"][s, cell], G_F.norm())
            close(m["rare_projection"][s, cell], (G_F @ Br).norm() / G_F.norm())
            close(m["cos_rare_frequent"][s, cell], torch.nn.functional.cosine_similarity(flat[r], G_F.flatten(), dim=0))
            close(m["mean_cosine"][s, cell], cos[~np.eye(4, dtype=bool)].mean())
            close(sub["cosine"][s, cell], cos[[0, 1, 3]][:, [0, 1, 3]])
    for key in ["frequent_norm", "rare_projection", "cos_rare_frequent"]:
        close(sub[key], m[key])


def close(a, b):
    np.testing.assert_allclose(a, np.asarray(b, dtype=float), rtol=1e-9, atol=1e-12)


SPLITS = [(0, []), (1, [True]), (1, [False]), (2, [True, False]), (4, [False, True, True, False])]


@pytest.mark.parametrize("tasks, split", [(t, s) for t in ([0, 1, 2, 3], [0, 1, 3]) for s in SPLITS + [None]
                                          if s is None or s[0] <= len(t)])
def test_factored_statistics_equal_those_of_materialised_gradients(cfg, split, tasks):
    """Every way of splitting tasks into materialised and factored gives the materialised Gram, projection and
    weight gradient to 1e-10 (float64), with seeds that differ in their task counts."""
    c = cfg()
    mix = c.mixture.build()
    sweep = SweepStudent(mix.dim, mix.ranks, c.sweep.widths, c.sweep.seeds, dtype=torch.float64)
    batch = TaskStream(mix, c.sweep.seeds, torch.device("cpu"), torch.float64).sample(40)
    assert not torch.equal(batch.counts[0], batch.counts[1])
    targets = Targets([0, 1], 3, torch.as_tensor(mix.bases[3]), tasks)
    g = per_task_gradients(sweep, batch.x, batch.y, batch.offsets)
    ref = gradient_stats(sweep, g, targets)
    pred = sweep(batch.x, batch.offsets)
    (grad_pred,) = torch.autograd.grad(interference.batch_loss(sweep, pred, batch.y), pred)
    delta = hidden_gradients(sweep, grad_pred.detach(), batch.offsets)
    stats, total = batch_stats(sweep, batch.x, delta, batch.offsets, targets, total=True, split=split)
    torch.testing.assert_close(stats.gram, ref.gram, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stats.projection, ref.projection, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(total, g.sum(1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("split", SPLITS)
def test_factored_statistics_of_a_single_cell(cfg, split):
    mix = cfg().mixture.build()
    cell = CellStudent(mix.dim, mix.ranks, 4, seed=3, dtype=torch.float64)
    batch = TaskStream(mix, [3], torch.device("cpu"), torch.float64).sample(50)
    targets = Targets([0], 3, torch.as_tensor(mix.bases[3]), [0, 1, 2, 3])
    g = per_task_gradients(cell, batch.x[0], batch.y, batch.offsets)
    ref = gradient_stats(cell, g, targets)
    pred = cell(batch.x[0], batch.offsets)
    (grad_pred,) = torch.autograd.grad(interference.batch_loss(cell, pred, batch.y), pred)
    delta = hidden_gradients(cell, grad_pred.detach(), batch.offsets)
    stats, total = batch_stats(cell, batch.x[0], delta, batch.offsets, targets, total=True, split=split)
    torch.testing.assert_close(stats.gram, ref.gram, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stats.projection, ref.projection, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(total, g.sum(0), rtol=1e-10, atol=1e-12)


def test_the_split_materialises_frequent_tasks_only_where_that_is_cheaper():
    """At the paper's shape (Zipf 2 counts of a 1024 batch) a few frequent tasks are materialised, the most
    frequent meets the rare ones through g_a X^T; in a tiny problem nothing is materialised."""
    counts = sorted((1024 * np.arange(1, 33, dtype=float) ** -2 / (np.arange(1, 33, dtype=float) ** -2).sum()),
                    reverse=True)
    m, z = plan_split(counts, 512, 1024)
    assert 2 <= m <= 8 and z[0]
    assert plan_split([26.0, 13, 9, 7, 5, 4], 31, 32)[0] == 0  # the CPU preset: d 32, K 6, batch 64


def test_tapped_step_trains_like_a_plain_step_and_reports_that_batch(cfg):
    c = cfg("train.steps=3")
    plain, tapped = SweepTrainer(c), SweepTrainer(c)
    mix = tapped.mixture
    targets = Targets([0, 1], 3, torch.as_tensor(mix.bases[3]), list(range(mix.num_tasks)))
    tap = GradientTap(tapped.student, targets)
    for _ in range(3):
        before = {k: v.clone() for k, v in tapped.student.state_dict().items()}
        stream = tapped.stream.state()
        plain.step()
        with tap:
            tapped.step()
        assert tapped.student.encoder.requires_grad
        # the tap's gradients are those of the step's batch at the parameters before the step
        probe = SweepStudent(c.mixture.dim, tapped.student.ranks, c.sweep.widths, c.sweep.seeds)
        probe.load_state_dict(before)
        replay = TaskStream(tapped.mixture, c.sweep.seeds, torch.device("cpu"))
        replay.load_state(stream)
        batch = replay.sample(c.train.batch_size)
        ref = gradient_stats(probe, per_task_gradients(probe, batch.x, batch.y, batch.offsets), targets)
        torch.testing.assert_close(tap.stats.gram, ref.gram, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(tap.stats.projection, ref.projection, rtol=1e-4, atol=1e-6)
    for name, p in plain.student.named_parameters():
        torch.testing.assert_close(dict(tapped.student.named_parameters())[name], p, rtol=1e-5, atol=1e-6)


def test_tap_works_on_a_single_cell_trained_by_hand(cfg):
    mix = cfg().mixture.build()
    plain, tapped = (CellStudent(mix.dim, mix.ranks, 3, seed=2) for _ in range(2))
    opts = [torch.optim.AdamW(m.parameters(), lr=0.05) for m in (plain, tapped)]
    stream = TaskStream(mix, [2], torch.device("cpu"))
    tap = GradientTap(tapped, Targets([0], 3, torch.as_tensor(mix.bases[3]), [0, 1, 2, 3]))
    for _ in range(3):
        batch = stream.sample(32)
        for model, opt, use_tap in [(plain, opts[0], False), (tapped, opts[1], True)]:
            opt.zero_grad()
            with tap if use_tap else contextlib.nullcontext():
                (model(batch.x[0], batch.offsets) - batch.y).square().sum(-1).mean().backward()
            opt.step()
        assert tap.stats.gram.shape == (1, 1, mix.num_tasks, mix.num_tasks)
    torch.testing.assert_close(tapped.encoder, plain.encoder, rtol=1e-5, atol=1e-6)


def test_tap_refuses_a_step_that_never_reached_the_predictions(cfg):
    trainer = SweepTrainer(cfg())
    with pytest.raises(RuntimeError, match="no backward"):
        with GradientTap(trainer.student, Targets([0], 3, torch.zeros(10, 2), [0, 3])):
            pass
    assert trainer.student.encoder.requires_grad
