"""The batched sweep trains every cell exactly as that cell would train alone."""

import pytest
import torch

from raretask.synthetic.mixture import TaskStream
from raretask.synthetic.model import EncoderKind, SweepStudent
from raretask.synthetic.train import SynthConfig, train_cell, train_group

TOML = """
[mixture]
dim = 12
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
[train]
steps = 40
batch_size = 16
lr = 0.05
clip = 0.5
warmup = 5
device = "cpu"
[eval]
every = 20
[sweep]
widths = [1, 3, 5]
seeds = [0, 4]
"""


@pytest.fixture
def cfg(config_from):
    return config_from(SynthConfig, TOML)


@pytest.mark.parametrize("encoder", ["free", "orthonormal"])
def test_batched_sweep_equals_cells_trained_alone(cfg, tmp_path, encoder):
    c = cfg(f"model.encoder={encoder}")
    # train the sweep, keeping its final model
    train_group(c, tmp_path / "g")
    state = torch.load(tmp_path / "g" / "model.pt", weights_only=False)
    sweep = SweepStudent(12, [3, 1, 2], c.sweep.widths, c.sweep.seeds, EncoderKind(encoder))
    sweep.load_state_dict(state["student"])
    for s, seed in enumerate(c.sweep.seeds):
        for w, width in enumerate(c.sweep.widths):
            alone = train_cell(c, seed, width)
            W, D = sweep.cell(s, w)
            torch.testing.assert_close(W, alone.encoder.detach(), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(D, alone.decoder.detach(), atol=1e-5, rtol=1e-4)


def test_clipping_is_per_cell_like_torch(cfg):
    c = cfg()
    mix = c.mixture.build()
    sweep = SweepStudent(mix.dim, mix.ranks, c.sweep.widths, c.sweep.seeds)
    batch = TaskStream(mix, c.sweep.seeds, torch.device("cpu")).sample(32)
    losses = sweep.cell_losses(sweep(batch.x, batch.offsets), batch.y, 32)
    losses.sum().backward()
    gw, gd = sweep.encoder.grad.clone(), sweep.decoder.grad.clone()
    norms = sweep.clip_grad_norm_(0.01)
    for s in range(2):
        for w, width in enumerate(c.sweep.widths):
            o = sweep.starts[w]
            ref_w, ref_d = gw[s, o:o + width].clone(), gd[s, :, o:o + width].clone()
            total = torch.nn.utils.get_total_norm([ref_w, ref_d])
            torch.testing.assert_close(norms[s, w], total)
            coef = min(1.0, 0.01 / (float(total) + 1e-6))  # torch.nn.utils.clip_grad_norm_'s rule
            ref_w, ref_d = ref_w * coef, ref_d * coef
            torch.testing.assert_close(sweep.encoder.grad[s, o:o + width], ref_w)
            torch.testing.assert_close(sweep.decoder.grad[s, :, o:o + width], ref_d)


def test_retraction_keeps_rows_orthonormal_and_spans(cfg):
    c = cfg()
    mix = c.mixture.build()
    sweep = SweepStudent(mix.dim, mix.ranks, [2, 5, 1], [0], EncoderKind.ORTHONORMAL, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sweep.encoder.add_(0.3 * torch.randn(sweep.encoder.shape, generator=g, dtype=torch.float64))
    before = [sweep.cell(0, w)[0].clone() for w in range(3)]
    sweep.retract_()
    for w, n in enumerate([2, 5, 1]):
        W = sweep.cell(0, w)[0]
        torch.testing.assert_close(W @ W.T, torch.eye(n, dtype=torch.float64))
        # same row space: projecting the old rows onto the new span changes nothing
        torch.testing.assert_close(before[w] @ W.T @ W, before[w])


def test_initial_signal_is_chance_level_on_average(cfg):
    """At a random orthonormal init s_k ~ N/d, so the corrected signal averages ~0 across many seeds."""
    from raretask.synthetic.train import Evaluator

    c = cfg()
    mix = c.mixture.build()
    seeds = list(range(64))
    sweep = SweepStudent(mix.dim, mix.ranks, [4], seeds)
    m = Evaluator(mix, c.eval, seeds, torch.device("cpu"))(sweep)
    mean_signal = m["signal"].mean(axis=0)[0]  # (K,)
    assert abs(float(mean_signal.mean()) - 4 / 12) < 0.05


@pytest.mark.parametrize("bands", [None, [[0], [1, 2]], [[2, 0], [1]], [[1], [2], [0]]])
def test_banded_layout_matches_cells_alone(cfg, bands):
    """Any split of the cells into bands (and any order) gives each cell's own predictions and gradients."""
    from raretask.synthetic.model import CellStudent

    c = cfg()
    mix = c.mixture.build()
    widths, seeds = [5, 1, 3], [0, 4]
    sweep = SweepStudent(mix.dim, mix.ranks, widths, seeds, dtype=torch.float64, bands=bands)
    batch = TaskStream(mix, seeds, torch.device("cpu"), dtype=torch.float64).sample(24)
    pred = sweep(batch.x, batch.offsets)  # (S*B, C, r_max)
    sweep.cell_losses(pred, batch.y, 24).sum().backward()
    K = mix.num_tasks
    for s, seed in enumerate(seeds):
        rows = slice(s * 24, (s + 1) * 24)
        offs = batch.offsets[s * K:(s + 1) * K] - 24 * s
        for w, width in enumerate(widths):
            alone = CellStudent(mix.dim, mix.ranks, width, seed, dtype=torch.float64)
            out = alone(batch.x[s], offs)
            torch.testing.assert_close(pred[rows, w], out)
            (out - batch.y[rows]).square().sum(-1).mean().backward()
            W, D = sweep.encoder.grad, sweep.decoder.grad
            o = sweep.starts[w]
            torch.testing.assert_close(W[s, o:o + width], alone.encoder.grad)
            torch.testing.assert_close(D[s, :, o:o + width], alone.decoder.grad)
    # padding rows (bands are padded to multiples of 4) never receive gradient, so they stay zero
    pad = torch.ones(sweep.encoder.shape[1], dtype=torch.bool)
    pad[sweep.real_rows] = False
    if bands == [[0], [1, 2]]:
        assert pad.sum() == 3  # band [5] padded to 8 rows; band [1, 3] is already 4
    assert torch.all(sweep.encoder.grad[:, pad] == 0)
    assert torch.all(sweep.decoder.grad[:, :, pad] == 0)


def test_sampled_evaluation_matches_exact_expectation(cfg):
    """eval.mode = samples (Monte-Carlo over fresh x) agrees with the closed-form expectation ||A - D W||_F^2."""
    from raretask.synthetic.train import EvalConfig, EvalMode, Evaluator

    c = cfg()
    mix = c.mixture.build()
    sweep = SweepStudent(mix.dim, mix.ranks, [1, 3, 5], [0, 4])
    exact = Evaluator(mix, EvalConfig(mode=EvalMode.EXACT), [0, 4], torch.device("cpu"))(sweep)
    sampled = Evaluator(mix, EvalConfig(mode=EvalMode.SAMPLES, samples=20000), [0, 4], torch.device("cpu"))(sweep)
    rel = abs(sampled["loss"] - exact["loss"]) / exact["loss"]
    assert rel.max() < 0.06  # chi-square-like spread of a 20000-sample mean, far below this
    assert (sampled["loss"] != exact["loss"]).all()  # really sampled
    assert (sampled["signal"] == exact["signal"]).all()  # the signal is a property of W alone


def test_reused_block_buffer_is_guarded(cfg):
    """The block-diagonal decoder buffer is reused across steps; a second forward before backward must raise
    rather than silently give the first graph wrong gradients."""
    c = cfg()
    mix = c.mixture.build()
    sweep = SweepStudent(mix.dim, mix.ranks, [2, 4], [0])
    batch = TaskStream(mix, [0], torch.device("cpu")).sample(8)
    first = sweep.cell_losses(sweep(batch.x, batch.offsets), batch.y, 8).sum()
    sweep(batch.x, batch.offsets)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()
