"""Residual analysis: Theorem 4 on random subspaces, its batched hook, the thresholds of Cor. 5 / Prop. 6, the rare
task choice, ResidualConfig, and App. D's complexity spectra (energy90)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raretask import theory
from raretask.config import ConfigError, load_config
from raretask.synthetic.dynamics import PointTheory, ResidualConfig, Theorem4, bound_ratio, pick_rare
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


def test_residual_preset_widths_sit_clearly_on_either_side_of_the_threshold():
    """What configs/synthetic/residual.toml's header promises, from the closed form alone."""
    cfg = load_config(ResidualConfig, ROOT / "configs" / "synthetic" / "residual.toml")
    th = PointTheory.of(cfg.synth(), cfg.residual.rare)
    assert (th.critical_width, round(th.threshold, 3), round(th.threshold_upper, 3)) == (7, 0.078, 0.112)
    for n, delta in zip(cfg.sweep.widths, th.optimum_residual(cfg.sweep.widths)):
        held = theory.features_kept(th.mixture.frequencies, th.mixture.eigenvalues, n)[th.rare] > 0
        assert (delta > 2 * th.threshold and not held) or (delta < 0.5 * th.threshold and held), n


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
