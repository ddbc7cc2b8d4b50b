"""Residual analysis: Theorem 4 on random subspaces, its batched hook, the thresholds of Cor. 5 / Prop. 6, the rare
task choice, ResidualConfig, and App. D's complexity spectra (energy90)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raretask import theory
from raretask.config import ConfigError, load_config
from raretask.synthetic.dynamics import (PointTheory, ResidualConfig, Theorem4, bound_ratio, learning_order, pick_rare,
                                        rise_level)
from raretask.synthetic.mixture import MixtureConfig, TaskConfig, TasksFromConfig
from raretask.synthetic.model import SweepStudent
from raretask.synthetic.train import SynthConfig

ROOT = Path(__file__).resolve().parents[3]


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_psd_blocks(rng, d: int, K: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """K random PSD matrices of random rank on random (overlapping) subspaces, and random frequencies."""
    pis = rng.dirichlet(np.ones(K))
    Cs = []
    for _ in range(K):
        r = int(rng.integers(1, max(2, d // 2)))
        B, _ = np.linalg.qr(rng.standard_normal((d, r)))
        Cs.append((B * rng.uniform(0.01, 3.0, r)) @ B.T)
    return pis, Cs


# ------------------------------------------------------------------------------------------------------ Theorem 4


@pytest.mark.parametrize("d", [5, 16, 48])
def test_theorem4_bound_holds_on_random_subspaces(d):
    rng = np.random.default_rng(d)
    worst = 0.0
    for trial in range(20):
        pis, Cs = _random_psd_blocks(rng, d, K=int(rng.integers(1, 5)))
        M_F = theory.mixture_covariance(pis, np.stack(Cs))
        for N in sorted({1, d // 3 + 1, d - 1}):
            U, _ = np.linalg.qr(rng.standard_normal((d, N)))
            norm = np.linalg.norm(theory.riemannian_gradient(M_F, U))
            bound = theory.gradient_bound(M_F, U)
            assert norm <= bound * (1 + 1e-12) + 1e-15, (d, N, trial)
            worst = max(worst, norm / bound)
    assert worst > 0.3  # the bound is not vacuous: random subspaces come within a small factor of it


def test_theorem4_ratio_is_cos_theta_for_one_direction():
    """Rank-1 M_F = lambda b b^T and a unit u at angle theta: ||G|| = 2 lambda cos sin, bound = 2 lambda sin."""
    d, lam = 7, 2.5
    b, e = np.eye(d)[0], np.eye(d)[3]
    for theta in (0.1, 0.7, 1.3):
        u = (np.cos(theta) * b + np.sin(theta) * e)[:, None]
        ratio = np.linalg.norm(theory.riemannian_gradient(lam * np.outer(b, b), u)) / theory.gradient_bound(
            lam * np.outer(b, b), u)
        assert ratio == pytest.approx(np.cos(theta), rel=1e-12)


def test_batched_hook_matches_numpy_theory_on_unconstrained_encoders():
    """The train_group hook on a SweepStudent whose encoders are arbitrary (not orthonormal) matrices reproduces
    ||G_F(U)||_F and the bound computed cell by cell with U = row_space_basis(W)."""
    cfg = MixtureConfig(dim=12, placement="random", seed=3, tasks=[
        TaskConfig(name="a", frequency=0.5, rank=3, decay=0.5), TaskConfig(name="b", frequency=0.3, rank=2),
        TaskConfig(name="c", frequency=0.2, rank=4, decay=2.0)])
    mixture = cfg.build()
    F = mixture.frequent_set(0.8)
    student = SweepStudent(12, mixture.ranks, [1, 3, 5], [0, 1], dtype=torch.float64)
    with torch.no_grad():
        student.encoder.copy_(torch.randn(student.encoder.shape, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64) * 3)
    out = Theorem4(mixture, F, torch.device("cpu"))(0, student)
    M_F = mixture.mixture_covariance(F)
    for s in range(2):
        for c in range(3):
            U = theory.row_space_basis(student.cell(s, c)[0].numpy())
            assert out["grad_norm_F"][s, c] == pytest.approx(np.linalg.norm(theory.riemannian_gradient(M_F, U)),
                                                             rel=1e-9)
            assert out["grad_bound_F"][s, c] == pytest.approx(theory.gradient_bound(M_F, U), rel=1e-9)
    assert np.all(bound_ratio(out["grad_norm_F"], out["grad_bound_F"]) <= 1 + 1e-12)


def test_bound_ratio_handles_a_fully_captured_frequent_set():
    assert bound_ratio(np.array([0.0, 0.5, 1e-3]), np.array([0.0, 1.0, 0.0])).tolist() == [0.0, 0.5, np.inf]


# --------------------------------------------------------------------------------- thresholds and the rare task


def _zipf_config(**kw) -> SynthConfig:
    raw = {"mixture": {"dim": 64, "zipf": 1.5, "tasks_from": {"count": 6, "rank": 4, "decay": 2.0}}, **kw}
    return SynthConfig.from_dict(raw)


def test_threshold_is_where_the_optimum_takes_the_rare_direction():
    """At the width-N optimum (Theorem 3) the rare task's top direction is held only once delta_F <=
    delta*_F(N_r^crit - 1), and that holds with equality at the first such width, N*_r(1)."""
    th = PointTheory.of(_zipf_config(), "rarest")
    mix, widths = th.mixture, list(range(1, 25))
    optimum = th.optimum_residual(widths)
    n_rare = mix.staircase(1)[th.rare]
    assert th.threshold < th.threshold_upper == pytest.approx(th.threshold + th.mu_F[th.critical_width - 1])
    for n, delta in zip(widths, optimum):
        if theory.features_kept(mix.frequencies, mix.eigenvalues, n)[th.rare] > 0:
            assert delta <= th.threshold_upper + 1e-12, n
    assert optimum[int(n_rare) - 1] == pytest.approx(th.threshold_upper)
    assert th.mu_F[th.critical_width - 1] <= th.rare_utility < th.mu_F[th.critical_width - 2]  # Prop. 6


def test_residual_preset_widths_and_the_threshold_band():
    """What configs/synthetic/residual.toml's header promises, from the closed form alone: widths clearly on either
    side of the threshold, and the band N = 7..11 where the optimum's delta_F sits on threshold_upper or threshold."""
    cfg = load_config(ResidualConfig, ROOT / "configs" / "synthetic" / "residual.toml")
    th = PointTheory.of(cfg.synth(), cfg.residual.rare)
    mix = th.mixture
    assert (th.critical_width, round(th.threshold, 3), round(th.threshold_upper, 3)) == (7, 0.078, 0.112)
    assert mix.eigenvalues[th.rare][0] / mix.traces[th.rare] == pytest.approx(0.70, abs=0.005)
    band = {7: "above", 8: "upper", 9: "upper", 10: "threshold", 11: "between"}
    for n, delta in zip(cfg.sweep.widths, th.optimum_residual(cfg.sweep.widths)):
        held = theory.features_kept(mix.frequencies, mix.eigenvalues, n)[th.rare] > 0
        assert held == (n >= 9), n
        side = band.get(n, "far above" if n < 7 else "far below")
        assert {"far above": delta > 2 * th.threshold, "above": delta > th.threshold_upper * 1.4,
                "upper": delta == pytest.approx(th.threshold_upper), "threshold": delta == pytest.approx(th.threshold),
                "between": 0.5 * th.threshold < delta < th.threshold,
                "far below": delta < 0.5 * th.threshold}[side], (n, side, delta)
    u = sorted((float(x.utility) for x in theory.utilities(mix.frequencies, mix.eigenvalues)), reverse=True)
    assert [round(v, 4) for v in u[6:10]] == [0.0489, 0.0483, 0.0372, 0.0342]  # the near-ties the header names


def test_rare_task_choices():
    mix = MixtureConfig(dim=32, zipf=1.0, tasks_from=TasksFromConfig(count=5, rank=3, energy90=[1, 3])).build()
    F = mix.frequent_set(0.8)
    assert F == [0, 1, 2]
    assert pick_rare(mix, "rarest", F) == 4
    # the rarest task is the most complex (flat spectrum, Tr = 3): task 3 has the lowest pi_k Tr(C_k) outside F
    assert pick_rare(mix, "lowest_utility", F) == 3
    assert pick_rare(mix, "task04", F) == 4
    with pytest.raises(ConfigError, match=r"residual.rare: no task named 'nope' \(tasks: task00"):
        pick_rare(mix, "nope", F)
    with pytest.raises(ConfigError, match=r"residual.rare: task 'task01' is in the frequent set F = "):
        pick_rare(mix, "task01", F)


def test_residual_config_is_a_sweep_config_plus_its_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[mixture]\ndim = 16\nzipf = 1.0\ntasks_from = { count = 4, rank = 2 }\n'
                    '[sweep]\nwidths = [1, 2]\n"mixture.zipf" = [0.5, 2.0]\n[residual]\nrare = "rarest"\n')
    cfg = load_config(ResidualConfig, path)
    assert cfg.residual.rare == "rarest"
    base = cfg.synth()
    assert type(base) is SynthConfig and base.sweep.grid == {"mixture.zipf": [0.5, 2.0]}
    assert load_config(ResidualConfig, path, ["residual.rare=task03"]).residual.rare == "task03"
    with pytest.raises(ConfigError, match="residual.rare: no task named 'task9'"):
        load_config(ResidualConfig, path, ["residual.rare=task9"])
    with pytest.raises(ConfigError, match="residual.colour: unknown key"):
        load_config(ResidualConfig, path, ["residual.colour=red"])
    # a preset without a [residual] table is valid for `synth run` and `synth residual` alike
    plain = ROOT / "configs" / "synthetic" / "complexity_2_12.toml"
    assert load_config(ResidualConfig, plain).residual.rare == "lowest_utility"
    load_config(SynthConfig, plain)


# ------------------------------------------------------------------------------ App. D: complexity (energy90)


@pytest.mark.parametrize("rank", [1, 4, 10, 32])
def test_decay_for_energy_count_hits_every_count(rank):
    top = theory.max_energy_count(rank)
    for count in range(1, top + 1):
        alpha = theory.decay_for_energy_count(count, rank)
        assert alpha >= 0
        assert theory.energy_count(np.arange(1, rank + 1.0) ** -alpha) == count, (rank, count, alpha)
    with pytest.raises(ValueError):
        theory.decay_for_energy_count(top + 1, rank)
    with pytest.raises(ValueError):
        theory.decay_for_energy_count(0, rank)


def test_energy_count_of_the_papers_spectrum_is_five():
    """App. D: with lambda_j = j^-2 over 32 directions, 5 directions hold 90% of the energy."""
    assert theory.energy_count(np.arange(1, 33.0) ** -2.0) == 5
    assert 1.9 < theory.decay_for_energy_count(5, 32) < 2.2
    assert theory.max_energy_count(32) == 29  # the flat spectrum: 29/32 > 0.9 >= 28/32


def test_energy90_spreads_complexity_from_the_most_frequent_to_the_rarest():
    mix = MixtureConfig(dim=1024, zipf=1.0, tasks_from=TasksFromConfig(count=32, rank=32, energy90=[2, 12])).build()
    counts = [theory.energy_count(lam) for lam in mix.eigenvalues]
    assert counts[0] == 2 and counts[-1] == 12 and counts == sorted(counts)
    decays = -np.log(np.array([lam[1] for lam in mix.eigenvalues])) / np.log(2.0)  # lambda_2 = 2^-alpha
    assert np.allclose(np.diff(decays), decays[1] - decays[0]) and decays[0] > decays[-1]  # uniform, decreasing
    same = MixtureConfig(dim=1024, zipf=1.0, tasks_from=TasksFromConfig(count=32, rank=32, energy90=[5, 5])).build()
    assert {theory.energy_count(lam) for lam in same.eigenvalues} == {5}


@pytest.mark.parametrize("energy90, decay, message", [
    ([7, 4], 1.0, "mixture.tasks_from.energy90: [7, 4] must satisfy 1 <= lo <= hi <= 29"),
    ([0, 4], 1.0, "mixture.tasks_from.energy90: [0, 4] must satisfy"),
    ([3, 30], 1.0, "mixture.tasks_from.energy90: [3, 30] must satisfy"),
    ([3], 1.0, "mixture.tasks_from.energy90: expected [lo, hi]"),
    ([3, 5], 2.0, "mixture.tasks_from.decay: set either decay or energy90, not both"),
])
def test_energy90_errors_name_the_field(energy90, decay, message):
    with pytest.raises(ConfigError) as e:
        MixtureConfig(dim=1024, zipf=1.0, tasks_from=TasksFromConfig(count=32, rank=32, decay=decay,
                                                                     energy90=energy90)).build()
    assert message in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------- the applied (current-decoder) gradient


def _three_task_mixture():
    cfg = MixtureConfig(dim=12, placement="random", seed=3, tasks=[
        TaskConfig(name="a", frequency=0.5, rank=3, decay=0.5), TaskConfig(name="b", frequency=0.3, rank=2),
        TaskConfig(name="c", frequency=0.2, rank=4, decay=2.0)])
    mixture = cfg.build()
    return mixture, mixture.frequent_set(0.8)


def _random_student(mixture, widths, seeds, seed=0, scale=3.0):
    student = SweepStudent(mixture.dim, mixture.ranks, widths, seeds, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        student.encoder.copy_(torch.randn(student.encoder.shape, generator=g, dtype=torch.float64) * scale)
        student.decoder.add_(torch.randn(student.decoder.shape, generator=g, dtype=torch.float64))
        for k, r in enumerate(mixture.ranks):  # padding outputs stay zero, as in training
            student.decoder[:, k, :, r:] = 0
    return student


def _frequent_loss_gradient(mixture, F, W, D):
    """dL_F/dW by autograd, L_F(W, D) = sum_{k in F} pi_k ||A_k - D_k^T W||_F^2 (W (N, d), D (K, N, r_max))."""
    W = W.clone().requires_grad_(True)
    loss = sum(mixture.frequencies[k] * (torch.as_tensor(mixture.teacher(k)) - D[k, :, :mixture.ranks[k]].T @ W)
               .square().sum() for k in F)
    return torch.autograd.grad(loss, W)[0]


def test_applied_gradient_matches_autograd_and_its_row_space_complement():
    """grad_applied_F is ||dL_F/dW|| with the student's own decoders (autograd); grad_applied_U_F is the norm of
    (I - P_U) (dL_F/dW)^T W U, the part of that gradient which rotates span(W), in the basis U."""
    mixture, F = _three_task_mixture()
    student = _random_student(mixture, [1, 3, 5], [0, 1])
    out = Theorem4(mixture, F, torch.device("cpu"))(0, student)
    for s in range(2):
        for c in range(3):
            W, D = student.cell(s, c)
            g = _frequent_loss_gradient(mixture, F, W, D)  # (N, d)
            assert out["grad_applied_F"][s, c] == pytest.approx(float(g.norm()), rel=1e-9)
            U = torch.as_tensor(theory.row_space_basis(W.numpy()))  # (d, N)
            complement = g.T @ W @ U - U @ (U.T @ (g.T @ W @ U))
            assert out["grad_applied_U_F"][s, c] == pytest.approx(float(complement.norm()), rel=1e-9)


def _optimal_decoders(mixture, student):
    """Set every cell's decoders to the least-squares optimum for its encoder: D_k^T W = A_k P_W."""
    with torch.no_grad():
        for s in range(len(student.seeds)):
            for c in range(len(student.widths)):
                W, D = student.cell(s, c)
                for k, r in enumerate(mixture.ranks):
                    D[k, :, :r] = (torch.as_tensor(mixture.teacher(k)) @ torch.linalg.pinv(W)).T


def test_applied_gradient_is_theorem4s_at_optimal_decoders_and_scale_free():
    """At optimal decoders the current-decoder gradient in the basis U is G_F(U) (an identity). W -> cW, D -> D/c
    leaves every prediction unchanged: it divides the raw ||dL_F/dW|| by c and leaves the scale-free one as it is."""
    mixture, F = _three_task_mixture()
    student = _random_student(mixture, [1, 3, 5], [0, 1])
    _optimal_decoders(mixture, student)
    hook = Theorem4(mixture, F, torch.device("cpu"))
    before = hook(0, student)
    np.testing.assert_allclose(before["grad_applied_U_F"], before["grad_norm_F"], rtol=1e-8)
    x = torch.randn(2, 7, mixture.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    offsets = torch.tensor([2, 4, 7, 9, 11, 14])  # (seed, task) group ends of the 2 x 7 rows
    pred = student(x, offsets)
    c = 10.0
    with torch.no_grad():
        student.encoder.mul_(c)
        student.decoder.div_(c)
    torch.testing.assert_close(student(x, offsets), pred, rtol=1e-10, atol=1e-12)
    after = hook(0, student)
    np.testing.assert_allclose(after["grad_applied_F"], before["grad_applied_F"] / c, rtol=1e-8)
    for key in ("grad_applied_U_F", "grad_norm_F", "grad_bound_F"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-8)


def test_applied_gradient_can_cross_the_bound():
    """Unlike ||G_F(U)||, the current-decoder gradient is not bounded by Theorem 4: decoders three times the optimal
    ones triple it, and past the bound go the cells whose G_F(U) ratio is above 1/3."""
    mixture, F = _three_task_mixture()
    student = _random_student(mixture, [1, 3, 5], [0, 1, 2, 3])
    _optimal_decoders(mixture, student)
    with torch.no_grad():
        student.decoder.mul_(3.0)
    out = Theorem4(mixture, F, torch.device("cpu"))(0, student)
    np.testing.assert_allclose(out["grad_applied_U_F"], 3 * out["grad_norm_F"], rtol=1e-8)
    ratio = bound_ratio(out["grad_applied_U_F"], out["grad_bound_F"])
    assert np.all(bound_ratio(out["grad_norm_F"], out["grad_bound_F"]) <= 1 + 1e-12)
    assert ratio.max() > 1.0, ratio


def test_lambda1_of_the_hook_is_the_top_eigenvalue_of_M_F():
    mixture, F = _three_task_mixture()
    th = PointTheory.of(SynthConfig.from_dict({"mixture": {
        "dim": 12, "placement": "random", "seed": 3, "tasks": [
            {"name": "a", "frequency": 0.5, "rank": 3, "decay": 0.5}, {"name": "b", "frequency": 0.3, "rank": 2},
            {"name": "c", "frequency": 0.2, "rank": 4, "decay": 2.0}]}}), "c")
    assert th.F == F
    lam = np.linalg.eigvalsh(mixture.mixture_covariance(F))[-1]
    assert Theorem4(mixture, F, torch.device("cpu")).lambda1 == pytest.approx(lam, rel=1e-12)
    assert th.mu_F[0] == pytest.approx(lam, rel=1e-12)


# ------------------------------------------------------------------------------------------- learning order


def test_learning_order_of_the_rare_task_against_the_residual():
    steps = [0, 10, 20, 30, 40]
    falls = [1.0, 0.5, 0.2, 0.1, 0.1]  # delta_F; upper = 0.25: below from step 20
    after = learning_order(steps, falls, [0.1, 0.1, 0.2, 0.5, 0.6], 0.25, 0.3)  # rises (>= 0.4) at 30
    assert after == {"step_residual": 20, "step_rare_rise": 30, "delta_F_at_rise": 0.1, "rare_learned": True,
                     "rare_after_residual": True}
    early = learning_order(steps, falls, [0.1, 0.45, 0.5, 0.5, 0.5], 0.25, 0.3)  # rises at 10, delta_F 0.5
    assert early["rare_after_residual"] is False and early["delta_F_at_rise"] == 0.5
    same = learning_order(steps, falls, [0.1, 0.1, 0.4, 0.5, 0.5], 0.25, 0.3)  # both at step 20
    assert same["rare_after_residual"] is True and same["step_rare_rise"] == same["step_residual"] == 20
    transient = learning_order(steps, [1.0] * 5, [0.1, 0.1, 0.45, 0.2, 0.1], 0.25, 0.3)  # rises, falls back
    assert transient["rare_learned"] is False and transient["rare_after_residual"] is False
    assert transient["step_residual"] is None
    never = learning_order(steps, falls, [0.1, 0.1, 0.2, 0.2, 0.2], 0.25, 0.3)
    assert never["step_rare_rise"] is None and never["rare_after_residual"] is None and not never["rare_learned"]


def test_rise_level_is_half_the_rare_tasks_top_direction_share():
    th = PointTheory.of(_zipf_config(), "rarest")
    lam = th.mixture.eigenvalues[th.rare]
    assert rise_level(th) == pytest.approx(0.5 * lam[0] / lam.sum())
