"""Is a task's feature present in a representation? The two measures of the paper's Fig. 7 (App. B.4), on arrays.

Comparison: a global value order (Fig. 7a). `order_r2(reps, values)` is the R² of a linear regression of the value
order (val of the token, 0..99: its rank in the task's order) on the top principal components of the representation:

  1. one point per value: the mean representation of the instances whose probed token has that value (at TOK1 of a
     plain prompt every instance of a value has the same vector; at TOK2 the mean averages out TOK1);
  2. PCA of those 100 points (unsupervised, all of them); the top k components are the regressors;
  3. held out: the values are split at random (seeded) into two halves; least squares with an intercept on the first
     half, R² = 1 - SS_res / SS_tot on the second (its own mean), so a feature must order values it was not fitted
     on -- a planted order scores near 1, a shuffled one near 0 or below.

  k = min(pcs, rank, n_fit // 2): the paper's 50 where the data allow it, and never more than half the fitted points
  (50 values -> 25), so the fit stays over-determined; with 50 regressors on 50 points any labels fit exactly.

Modular addition: Fourier modes (Fig. 7b). For a layer, V (P, d) holds the mean residual vector of each class
c = (a + b) mod P, row-centred (the mean over classes removed). With the orthonormal Fourier basis of R^P
(cos(2 pi k c / P), sin(2 pi k c / P) for k = 1..P/2; only the cosine at k = P/2 for even P), the variance fraction
of frequency k is

    P_k = ||F_k^T V||_F^2 / ||V||_F^2,        sum_k P_k = 1 (V is orthogonal to the constant),

and a mode is present when P_k > 2 P_null, P_null = 2 / (P - 1): the share a 2-dim frequency gets when V's variance
is spread evenly over the P - 1 centred directions. Presence = the number of present (layer, k) over all layers.
`mode_pca(V)` gives the class means' coordinates on their top principal components (a circle per strong mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# ---------------------------------------------------------------------------------------- comparison: R² of order


@dataclass
class OrderFit:
    r2: float  # held-out R² (the presence)
    r2_fit: float  # R² on the fitted half (for reference)
    pcs: int  # principal components used
    fit_values: np.ndarray  # values of the fitted half
    score_values: np.ndarray  # values of the scored half


def class_means(reps: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, d): the mean row of `reps` (n, d) per class index in `classes` (n,); NaN rows for empty classes."""
    reps, classes = np.asarray(reps, dtype=np.float64), np.asarray(classes, dtype=np.int64)
    sums = np.zeros((n_classes, reps.shape[1]))
    np.add.at(sums, classes, reps)
    counts = np.bincount(classes, minlength=n_classes)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def principal_components(points: np.ndarray, k: int) -> np.ndarray:
    """Coordinates (n, k') of the centred `points` (n, d) on their top k' = min(k, rank) principal directions."""
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    rank = int(np.sum(s > s[0] * 1e-9)) if len(s) and s[0] > 0 else 0
    k = min(k, rank)
    return u[:, :k] * s[:k]


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


def order_r2(reps: np.ndarray, values: np.ndarray, *, pcs: int = 50, seed: int = 0,
             n_values: int | None = None) -> OrderFit:
    """Held-out R² of the value order on the top-`pcs` principal components of `reps` (n, d), `values` (n,) the
    value (0..n_values-1) of the probed token of each row; see the module docstring."""
    values = np.asarray(values, dtype=np.int64)
    n_values = n_values or int(values.max()) + 1
    means = class_means(reps, values, n_values)
    present = np.flatnonzero(np.isfinite(means).all(1))  # values with at least one instance
    if len(present) < 4:
        raise ValueError(f"order_r2: needs instances of at least 4 values, got {len(present)}")
    order = np.random.default_rng([seed, 0x0D3]).permutation(present)
    fit, score = np.sort(order[:len(order) // 2]), np.sort(order[len(order) // 2:])
    k = min(pcs, len(fit) // 2)
    coords = principal_components(means[present], k)
    index = {v: i for i, v in enumerate(present.tolist())}
    x_fit = np.c_[np.ones(len(fit)), coords[[index[v] for v in fit]]]
    x_score = np.c_[np.ones(len(score)), coords[[index[v] for v in score]]]
    beta, *_ = np.linalg.lstsq(x_fit, fit.astype(np.float64), rcond=None)
    return OrderFit(r2=r2_score(score.astype(np.float64), x_score @ beta),
                    r2_fit=r2_score(fit.astype(np.float64), x_fit @ beta), pcs=coords.shape[1],
                    fit_values=fit, score_values=score)


# -------------------------------------------------------------------------------- modular addition: Fourier modes


def fourier_basis(p: int) -> list[np.ndarray]:
    """Orthonormal bases F_k (p, 2) for k = 1..p//2 (p, 1 for k = p/2 with p even): cos and sin of 2 pi k c / p."""
    c = np.arange(p)
    out = []
    for k in range(1, p // 2 + 1):
        cols = [np.cos(2 * np.pi * k * c / p)] + ([np.sin(2 * np.pi * k * c / p)] if 2 * k != p else [])
        out.append(np.stack([col / np.linalg.norm(col) for col in cols], axis=1))
    return out


def null_share(p: int) -> float:
    """P_null = 2 / (p - 1): a 2-dim frequency's share of an evenly spread centred variance."""
    return 2.0 / (p - 1)


def fourier_power(means: np.ndarray) -> np.ndarray:
    """P_k for k = 1..p//2 of class means `means` (p, d), row-centred here; sums to 1 (zeros if V is constant)."""
    v = np.asarray(means, dtype=np.float64)
    v = v - v.mean(0)
    total = float(np.sum(v ** 2))
    if total == 0:
        return np.zeros(len(v) // 2)
    return np.array([float(np.sum((f.T @ v) ** 2)) / total for f in fourier_basis(len(v))])


def present_modes(power: np.ndarray, p: int, factor: float = 2.0) -> np.ndarray:
    """(p//2,) bool: P_k > factor * P_null (the paper: factor 2)."""
    return np.asarray(power) > factor * null_share(p)


def mode_pca(means: np.ndarray, n: int = 2) -> np.ndarray:
    """(p, n) coordinates of the row-centred class means on their top n principal directions (zeros past the
    rank)."""
    coords = principal_components(means, n)
    return np.pad(coords, ((0, 0), (0, n - coords.shape[1])))
