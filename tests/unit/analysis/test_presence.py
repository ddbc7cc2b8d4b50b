"""Presence measures on planted features: the value order planted in the embeddings of an OLMo-core model gives
R² near 1 at layer 0 and not when the rows are shuffled; planted Fourier modes are found exactly, with the paper's
threshold, and none in noise."""

import numpy as np
import pytest

from raretask.analysis.activations import capture, task_prompts
from raretask.analysis.presence import (class_means, fourier_basis, fourier_power, mode_pca, null_share, order_r2,
                                        present_modes)

from .planted import olmo, plant_order, task

P = 100


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_planted_value_order_is_present_at_layer_0_and_absent_when_shuffled(one_thread, shuffled):
    t = task()
    model = olmo(n_layers=1)
    order = np.random.default_rng(1).permutation(P) if shuffled else np.arange(P)
    plant_order(model, t, order)
    ids = np.arange(0, 10000, 7)  # every TOK1 value, several times
    reps = capture(model, task_prompts(t, ids), ["embeddings"], 0)["embeddings"].numpy()
    fit = order_r2(reps, t.values[ids, 0], pcs=50)
    assert fit.pcs == min(25, model.d_model)  # at most half the 50 fitted values
    assert set(fit.fit_values).isdisjoint(fit.score_values) and len(fit.score_values) == 50
    if shuffled:
        assert fit.r2 < 0.3
    else:
        assert fit.r2 > 0.95


def test_order_r2_is_held_out():
    # 100 random points: every fit with 25 regressors on 50 points explains much in-sample, nothing held out
    reps = np.random.default_rng(0).normal(size=(100, 64))
    fit = order_r2(reps, np.arange(100))
    assert fit.r2_fit > 0.3 and fit.r2 < 0.2


def planted_means(shares: dict[int, float], d: int = 128, seed: int = 0) -> np.ndarray:
    """Class means V (P, d) with P_k = shares[k] exactly: frequency k's basis columns on its own output axes."""
    rng = np.random.default_rng(seed)
    axes = np.linalg.qr(rng.normal(size=(d, d)))[0]
    basis = fourier_basis(P)
    v, col = np.zeros((P, d)), 0
    for k, s in shares.items():
        f = basis[k - 1]
        phase = rng.normal(size=f.shape[1])
        phase /= np.linalg.norm(phase)
        v += np.sqrt(s) * np.outer(f @ phase, axes[:, col])
        col += 1
    return v * 3.0 + 7.0  # scale and offset: P_k is a fraction of the centred variance


def test_planted_modes_are_found_exactly_at_the_papers_threshold():
    threshold = 2 * null_share(P)
    assert threshold == pytest.approx(4 / 99)
    shares = {3: threshold * 1.02, 4: threshold * 0.98, 17: 0.3}
    rest = [k for k in range(1, P // 2 + 1) if k not in shares]
    shares.update({k: (1 - sum(shares.values())) / len(rest) for k in rest})
    power = fourier_power(planted_means(shares))
    assert power.sum() == pytest.approx(1)
    assert power == pytest.approx([shares[k] for k in range(1, P // 2 + 1)])
    assert np.flatnonzero(present_modes(power, P)).tolist() == [2, 16]  # k = 3 and 17; k = 4 sits just below


def test_modes_from_instances_with_noise_and_none_in_noise_alone():
    t = task("modular_addition")
    c = t.labels  # (a + b) mod 100 of all 10000 instances
    rng = np.random.default_rng(0)
    d = 48
    signal = np.zeros((P, d))
    for j, k in enumerate((1, 7, 31)):  # the planted frequencies
        signal[:, 2 * j] = np.cos(2 * np.pi * k * np.arange(P) / P)
        signal[:, 2 * j + 1] = np.sin(2 * np.pi * k * np.arange(P) / P)
    noise = rng.normal(size=(len(c), d))
    present = present_modes(fourier_power(class_means(signal[c] + noise, c, P)), P)
    assert (np.flatnonzero(present) + 1).tolist() == [1, 7, 31]
    assert not present_modes(fourier_power(class_means(noise, c, P)), P).any()


def test_the_pca_picture_of_one_mode_is_a_circle():
    c = np.arange(P)
    v = np.zeros((P, 6))
    v[:, 2], v[:, 4] = np.cos(2 * np.pi * 5 * c / P), np.sin(2 * np.pi * 5 * c / P)
    xy = mode_pca(v + 1.5)
    radius = np.hypot(xy[:, 0], xy[:, 1])
    assert radius.std() < 1e-9 * radius.mean()
    assert mode_pca(np.ones((P, 3)), 2).shape == (P, 2)  # a constant V: zeros, not an error
