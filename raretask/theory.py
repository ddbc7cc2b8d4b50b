"""Closed forms of the linear mixture-of-tasks model (paper Sec. 2, Sec. 3, App. C). Pure numpy functions, float64.

Notation (the paper's):
  K tasks, task k with frequency pi_k and covariance C_k = B_k Lambda_k B_k^T (B_k: d x r_k orthonormal columns,
  lambda_k1 >= lambda_k2 >= ... > 0). Mixture covariance M = sum_k pi_k C_k. A width-N encoder is measured through
  an orthonormal basis U (d x N) of its row space, P_U = U U^T.

  Theorem 3:    L_N(U) = Tr(M) - Tr(U^T M U); the optimum spans the top-N eigenspace of M; per-task loss
                l_k(U) = Tr(C_k) - Tr(U^T C_k U).
  Utilities:    u_kj = pi_k lambda_kj. With mutually orthogonal task subspaces, M's eigenvalues are exactly the
                utilities, so width N keeps the N largest; n_k(N) = how many of task k's are kept, and
                l*_k(N) = sum_{j > n_k(N)} lambda_kj.
  Staircase:    N*_k(m) = min{N : n_k(N) >= m}.
  Theorem 4:    for a frequent set F, M_F = sum_{k in F} pi_k C_k, residual delta_F(U) = Tr((I - P_U) M_F) and
                ||G_F(U)||_F <= 2 sqrt(lambda_1(M_F) delta_F(U)),  G_F(U) = 2 (I - P_U) M_F U.
  Corollary 5:  delta*_F(N) = sum_{i > N} mu^F_i;  N_F(eps) = min{N : delta*_F(N) <= eps}.
  Prop. 6:      a rare rank-1 task pi_r lambda_r invades iff pi_r lambda_r > mu^F_N;
                N_r^crit = min{N : mu^F_N <= pi_r lambda_r}.

Tie rule (documented, deterministic): utilities are ordered by value, high to low; equal values go to the task that
comes first in the mixture's task order, then to the lower index j. With Zipf frequencies the earlier task is the
more frequent one, so ties favour frequent tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ------------------------------------------------------------------------------------------ Sec. 3: linear mixture


def mixture_covariance(frequencies: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """M = sum_k pi_k C_k.  frequencies (K,), covariances (K, d, d) -> (d, d)."""
    return np.einsum("k,kij->ij", np.asarray(frequencies, float), np.asarray(covariances, float))


def top_eigenspace(M: np.ndarray, n: int) -> np.ndarray:
    """Orthonormal basis U (d, n) of the top-n eigenspace of symmetric M (the width-n optimum of Theorem 3)."""
    vals, vecs = np.linalg.eigh(M)  # ascending
    return vecs[:, ::-1][:, :n]


def projector(U: np.ndarray) -> np.ndarray:
    """P_U = U U^T for orthonormal columns U (d, N)."""
    return U @ U.T


def row_space_basis(W: np.ndarray, rtol: float = 1e-7) -> np.ndarray:
    """Orthonormal basis (d, rank) of the row space of an unconstrained encoder W (N, d), via SVD.

    P_W = W^T (W W^T)^-1 W equals V V^T with V the right singular vectors of non-zero singular values."""
    _, s, vt = np.linalg.svd(np.asarray(W, float), full_matrices=False)
    keep = s > rtol * max(s.max(initial=0.0), 1e-300)
    return vt[keep].T


def task_loss(C: np.ndarray, U: np.ndarray) -> float:
    """l_k(U) = Tr(C_k) - Tr(U^T C_k U): task k's loss with optimal decoders on the subspace U (noise excluded)."""
    return float(np.trace(C) - np.trace(U.T @ C @ U))


def mixture_loss(M: np.ndarray, U: np.ndarray) -> float:
    """L_N(U) = Tr(M) - Tr(U^T M U)  (Theorem 3)."""
    return float(np.trace(M) - np.trace(U.T @ M @ U))


def signal(C: np.ndarray, U: np.ndarray) -> float:
    """s_k = Tr(P_U C_k) / Tr(C_k): the share of task k's variance inside span(U). N/d at random init, 1 if captured."""
    return float(np.trace(U.T @ C @ U) / np.trace(C))


def corrected_signal(s: np.ndarray | float, width: int, dim: int) -> np.ndarray | float:
    """s~_k = (s_k - N/d) / (1 - N/d): 0 at a random subspace, 1 when captured. NaN when N = d (undefined)."""
    chance = width / dim
    if chance >= 1.0:
        return np.full_like(np.asarray(s, float), np.nan) if np.ndim(s) else float("nan")
    return (np.asarray(s, float) - chance) / (1.0 - chance) if np.ndim(s) else (s - chance) / (1.0 - chance)


def residual(M_F: np.ndarray, U: np.ndarray) -> float:
    """delta_F(U) = Tr((I - P_U) M_F)."""
    return float(np.trace(M_F) - np.trace(U.T @ M_F @ U))


def riemannian_gradient(C: np.ndarray, U: np.ndarray) -> np.ndarray:
    """G(U) = 2 (I - P_U) C U  (d, N): the part of the loss gradient that rotates span(U)."""
    CU = C @ U
    return 2.0 * (CU - U @ (U.T @ CU))


def gradient_bound(M_F: np.ndarray, U: np.ndarray) -> float:
    """Theorem 4's bound on ||G_F(U)||_F: 2 sqrt(lambda_1(M_F) delta_F(U))."""
    return float(2.0 * np.sqrt(max(np.linalg.eigvalsh(M_F)[-1], 0.0) * max(residual(M_F, U), 0.0)))


# -------------------------------------------------------------------------------- utilities and the width staircase


@dataclass(frozen=True)
class Utility:
    """One feature: direction `index` (1-based) of task `task` (0-based position), with u = pi_k lambda_kj."""

    task: int
    index: int
    utility: float


def utilities(frequencies: np.ndarray, eigenvalues: list[np.ndarray]) -> list[Utility]:
    """All u_kj = pi_k lambda_kj, sorted high -> low with the module's tie rule (earlier task, then lower j)."""
    items = [
        Utility(k, j + 1, float(p * lam))
        for k, (p, lams) in enumerate(zip(frequencies, eigenvalues))
        for j, lam in enumerate(np.asarray(lams, float))
    ]
    return sorted(items, key=lambda u: (-u.utility, u.task, u.index))


def features_kept(frequencies: np.ndarray, eigenvalues: list[np.ndarray], width: int) -> np.ndarray:
    """n_k(N): how many of each task's features the width-N optimum keeps (orthogonal task subspaces). (K,) int."""
    kept = np.zeros(len(eigenvalues), dtype=int)
    for u in utilities(frequencies, eigenvalues)[:width]:
        kept[u.task] += 1
    return kept


def orthogonal_task_losses(frequencies: np.ndarray, eigenvalues: list[np.ndarray], widths: list[int]) -> np.ndarray:
    """l*_k(N) = sum_{j > n_k(N)} lambda_kj for every task and width (orthogonal subspaces). (K, len(widths))."""
    order = utilities(frequencies, eigenvalues)
    out = np.zeros((len(eigenvalues), len(widths)))
    for w, n in enumerate(widths):
        kept = np.zeros(len(eigenvalues), dtype=int)
        for u in order[:n]:
            kept[u.task] += 1
        for k, lams in enumerate(eigenvalues):
            out[k, w] = float(np.sum(np.asarray(lams, float)[kept[k]:]))
    return out


def staircase(frequencies: np.ndarray, eigenvalues: list[np.ndarray], m: int) -> np.ndarray:
    """N*_k(m) = min{N : n_k(N) >= m}: the width at which task k gets its m-th feature. (K,) float, inf if rank < m.

    n_k(N) grows by one exactly when the N-th sorted utility belongs to task k, so N*_k(m) is the 1-based position
    of task k's m-th feature in the sorted utility list."""
    out = np.full(len(eigenvalues), np.inf)
    seen = np.zeros(len(eigenvalues), dtype=int)
    for pos, u in enumerate(utilities(frequencies, eigenvalues), start=1):
        seen[u.task] += 1
        if seen[u.task] == m:
            out[u.task] = pos
    return out


# ------------------------------------------------------------------------ frequent set, residual threshold, Prop. 6


def frequent_set(frequencies: np.ndarray, mass: float = 0.8) -> list[int]:
    """F: the smallest set of most frequent tasks whose frequencies sum to >= mass (ties: earlier task first)."""
    order = sorted(range(len(frequencies)), key=lambda k: (-frequencies[k], k))
    total, chosen = 0.0, []
    for k in order:
        chosen.append(k)
        total += float(frequencies[k])
        if total >= mass - 1e-12:
            break
    return sorted(chosen)


def spectrum(M: np.ndarray) -> np.ndarray:
    """Eigenvalues mu_1 >= mu_2 >= ... of a symmetric PSD matrix (tiny negative round-off clipped to 0)."""
    return np.clip(np.linalg.eigvalsh(M)[::-1], 0.0, None)


def residual_threshold(mu_F: np.ndarray, width: int) -> float:
    """delta*_F(N) = sum_{i > N} mu^F_i: the smallest frequent-set residual a width-N model can reach (Cor. 5)."""
    return float(np.sum(np.asarray(mu_F, float)[width:]))


def width_for_residual(mu_F: np.ndarray, eps: float) -> int:
    """N_F(eps) = min{N : sum_{i > N} mu^F_i <= eps} (Corollary 5)."""
    tails = np.concatenate([np.cumsum(np.asarray(mu_F, float)[::-1])[::-1], [0.0]])  # tails[N] = sum_{i>N}
    return int(np.argmax(tails <= eps))


def critical_width(mu_F: np.ndarray, rare_utility: float) -> int:
    """N_r^crit = min{N : mu^F_N <= pi_r lambda_r} (Proposition 6); mu^F_N = 0 beyond the rank of M_F."""
    mu = np.asarray(mu_F, float)
    for n in range(1, len(mu) + 1):
        if mu[n - 1] <= rare_utility:
            return n
    return len(mu) + 1


# ------------------------------------------------------------------------------ Sec. 2: the power-law argument


@dataclass(frozen=True)
class ScalingLaw:
    """L(N, D) = L0 + A / N^alpha + B / D^beta, the parametric form Sec. 2 starts from (N parameters, D tokens).

    L_inf(N) = L0 + A / N^alpha is the infinite-data loss. `compute_optimal_loss` evaluates L at the token count
    D*(N) that minimises L at fixed compute 6 N D. Def. 2 of the paper compares L_inf of a small model with the
    compute-optimal loss of a large one: `model_scaling_threshold`."""

    L0: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        return self.L0 + self.A / np.asarray(N, float) ** self.alpha + self.B / np.asarray(D, float) ** self.beta

    def infinite_data_loss(self, N: np.ndarray) -> np.ndarray:
        return self.L0 + self.A / np.asarray(N, float) ** self.alpha

    def optimal_tokens(self, N: np.ndarray) -> np.ndarray:
        """D*(N): along 6ND = const, dL = 0 gives alpha A N^-alpha = beta B D^-beta."""
        N = np.asarray(N, float)
        return (self.beta * self.B / (self.alpha * self.A) * N**self.alpha) ** (1.0 / self.beta)

    def compute_optimal_loss(self, N: np.ndarray) -> np.ndarray:
        """L_C(N) = L(N, D*(N))."""
        return self.loss(N, self.optimal_tokens(N))

    def model_scaling_threshold(self, N_large: float, eps: float, grid: np.ndarray) -> float:
        """Def. 2: the largest N_s on `grid` with L_inf(N_s) - L_C(N_large) > eps (nan if none): models this small
        cannot reach the large model's compute-optimal loss with any amount of data."""
        gap = self.infinite_data_loss(grid) - self.compute_optimal_loss(np.asarray([N_large], float))[0]
        ok = np.asarray(grid, float)[gap > eps]
        return float(ok.max()) if ok.size else float("nan")


def fit_power_law(x: np.ndarray, y: np.ndarray, offset: float = 0.0) -> tuple[float, float]:
    """Least-squares fit of y - offset = a x^-b in log-log space; returns (a, b). x, y > 0."""
    x, y = np.asarray(x, float), np.asarray(y, float) - offset
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("power-law fit needs x > 0 and y > offset")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(intercept)), float(-slope)


# ------------------------------------------------------------------------- App. D: complexity as spectral decay


def energy_count(eigenvalues: np.ndarray, fraction: float = 0.9) -> int:
    """How many leading directions hold more than `fraction` of a spectrum's energy (App. D's complexity):
    min{r : sum_{j <= r} lambda_j > fraction * sum_j lambda_j}, eigenvalues sorted high to low."""
    lam = np.asarray(eigenvalues, float)
    share = np.cumsum(lam) / lam.sum()  # increasing; a share within 1e-12 of the level does not exceed it
    return min(int(np.count_nonzero(share <= fraction + 1e-12)) + 1, len(lam))


def max_energy_count(rank: int, fraction: float = 0.9) -> int:
    """The largest energy_count a decaying power law lambda_j = j^-alpha (alpha >= 0) of this rank can have: the flat
    spectrum's (alpha = 0)."""
    return energy_count(np.ones(rank), fraction)


def decay_for_energy_count(count: int, rank: int, fraction: float = 0.9) -> float:
    """A decay exponent alpha >= 0 whose spectrum lambda_j = j^-alpha (j = 1..rank) has energy_count == `count`.

    Every alpha in an interval gives that count; this one puts the `fraction` level in the geometric middle of the
    tail energies on either side, sqrt(T_{count-1}(alpha) T_count(alpha)) = 1 - fraction with
    T_r = sum_{j > r} lambda_j / sum_j lambda_j (T_r falls with alpha, strictly, so the root is unique and
    T_count < 1 - fraction < T_{count-1}, i.e. the count is exactly `count`). Where even the flat spectrum
    sits below that level, alpha = 0. E.g. rank 32: count 5 -> alpha = 2.03 (the paper's alpha = 2 also has 5)."""
    top = max_energy_count(rank, fraction)
    if not 1 <= count <= top:
        raise ValueError(f"count {count} is outside 1..{top}, the range of j^-alpha spectra of rank {rank}")
    j = np.arange(1, rank + 1, dtype=float)
    target = (1.0 - fraction) ** 2

    def excess(alpha: float) -> float:  # T_{c-1} T_c - (1 - q)^2, strictly decreasing in alpha
        lam = j**-alpha
        tails = 1.0 - np.concatenate([[0.0], np.cumsum(lam)]) / lam.sum()  # tails[r] = T_r
        return float(max(tails[count - 1], 0.0) * max(tails[count], 0.0) - target)

    if excess(0.0) <= 0.0:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0.0:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):  # bisection to float resolution
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if excess(mid) > 0.0 else (lo, mid)
    return hi


def complexity_decays(lo: int, hi: int, count: int, rank: int, fraction: float = 0.9) -> np.ndarray:
    """App. D's complexity sweep: K = `count` decay exponents spread uniformly over [alpha(hi), alpha(lo)], task 0
    (the most frequent) getting alpha(lo), the fastest decay (`lo` directions hold `fraction` of its energy) and the
    last task alpha(hi). alpha(c) = decay_for_energy_count(c, rank, fraction). (count,), high to low."""
    a_max, a_min = decay_for_energy_count(lo, rank, fraction), decay_for_energy_count(hi, rank, fraction)
    return np.linspace(a_max, a_min, count) if count > 1 else np.array([a_max])
