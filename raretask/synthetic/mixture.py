"""A mixture of K linear-regression tasks (paper Sec. 3, App. B.1): its config, the built mixture, and its data stream.

Task k: frequency pi_k, covariance C_k = B_k Lambda_k B_k^T (B_k: d x r_k orthonormal), teacher
y_k = Lambda_k^{1/2} B_k^T x (+ label noise sigma), x ~ N(0, I_d). Placement of the B_k:
  orthogonal  task k owns its own block of coordinates (the paper's App. B.1 layout), blocks in task order;
  random      B_k spans a random r_k-dim subspace (seeded); subspaces of different tasks may overlap.
A task may instead give its covariance as a .npy file (d x d, symmetric PSD).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raretask import theory
from raretask.config import Config, ConfigError, StrEnum, option
from raretask.grouped import grouped_matmul


class Placement(StrEnum):
    ORTHOGONAL = "orthogonal"
    RANDOM = "random"


@dataclass
class TaskConfig(Config):
    name: str = option(doc="task name (unique)")
    frequency: float | None = option(None, "pi_k; leave out when mixture.zipf is set")
    rank: int | None = option(None, "number of directions r_k (with decay/scale)")
    decay: float = option(1.0, "spectrum lambda_j = scale * j^-decay, j = 1..rank")
    scale: float = option(1.0, "spectrum scale")
    eigenvalues: list[float] | None = option(None, "explicit spectrum instead of rank/decay/scale")
    covariance: str | None = option(None, "path of a d x d .npy covariance instead of a spectrum")

    def resolve_paths(self, base: Path) -> None:
        if self.covariance is not None and not Path(self.covariance).is_absolute():
            self.covariance = str((base / self.covariance).resolve())


@dataclass
class TasksFromConfig(Config):
    count: int = option(doc="number of generated tasks K")
    rank: int = option(doc="rank of every task")
    decay: float = option(1.0, "spectrum decay of every task")
    scale: float = option(1.0, "spectrum scale of every task")
    prefix: str = option("task", "tasks are named <prefix>00, <prefix>01, ...")
    energy90: list[int] | None = option(None, "[lo, hi]: decays spread so 90% of the energy takes lo directions "
                                              "(first task) .. hi (last); instead of decay")

    def decays(self, p: str = "mixture.tasks_from") -> list[float]:
        """Each generated task's decay alpha_k. With energy90 = [lo, hi] (App. D's complexity sweep): alpha_k spread
        uniformly from alpha(lo) for task 0 (the most frequent under zipf: the fastest decay, the simplest task) to
        alpha(hi) for the last, alpha(c) = theory.decay_for_energy_count(c, rank, 0.9), so task 0's top lo directions
        hold 90% of its energy and the last task's top hi. [5, 5] gives every task alpha = 2.03 at rank 32."""
        if self.energy90 is None or self.count < 1 or self.rank < 1:
            return [self.decay] * max(self.count, 0)  # a bad count or rank is reported by the mixture's own checks
        if len(self.energy90) != 2:
            raise ConfigError(f"{p}.energy90: expected [lo, hi], got {self.energy90}")
        if self.decay != 1.0:
            raise ConfigError(f"{p}.decay: set either decay or energy90, not both")
        lo, hi = self.energy90
        top = theory.max_energy_count(self.rank, 0.9)
        if not 1 <= lo <= hi <= top:
            raise ConfigError(f"{p}.energy90: [{lo}, {hi}] must satisfy 1 <= lo <= hi <= {top} (the most directions "
                              f"a decaying spectrum of rank {self.rank} can need for 90% of its energy)")
        return theory.complexity_decays(lo, hi, self.count, self.rank, 0.9).tolist()


@dataclass
class MixtureConfig(Config):
    dim: int = option(64, "input dimension d")
    placement: Placement = option(Placement.ORTHOGONAL, "how task subspaces are placed")
    noise: float = option(0.0, "label-noise standard deviation sigma")
    seed: int = option(0, "seed that draws random subspaces")
    zipf: float | None = option(None, "pi_k proportional to k^-zipf in task order (instead of per-task frequency)")
    tasks: list[TaskConfig] = option(factory=list, doc="the tasks, most frequent first by convention")
    tasks_from: TasksFromConfig | None = option(None, "generate identical-shape tasks instead of listing them")

    def resolve_paths(self, base: Path) -> None:
        for t in self.tasks:
            t.resolve_paths(base)

    def task_list(self) -> list[TaskConfig]:
        if self.tasks_from is None:
            return self.tasks
        g = self.tasks_from
        width = max(2, len(str(g.count - 1)))
        return [TaskConfig(name=f"{g.prefix}{i:0{width}d}", rank=g.rank, decay=decay, scale=g.scale)
                for i, decay in enumerate(g.decays())]

    def validate(self, path: str = "mixture") -> None:
        super().validate(path)
        self.build()  # every remaining rule is checked while building

    def build(self) -> Mixture:
        """The concrete mixture. Raises ConfigError naming the offending field."""
        p = "mixture"
        if self.dim < 1:
            raise ConfigError(f"{p}.dim: must be >= 1, got {self.dim}")
        if self.noise < 0:
            raise ConfigError(f"{p}.noise: must be >= 0, got {self.noise}")
        if self.tasks and self.tasks_from is not None:
            raise ConfigError(f"{p}.tasks_from: give either tasks or tasks_from, not both")
        tasks = self.task_list()
        if not tasks:
            raise ConfigError(f"{p}.tasks: no tasks given")
        if self.tasks_from is not None and self.tasks_from.count < 1:
            raise ConfigError(f"{p}.tasks_from.count: must be >= 1")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"{p}.tasks: task names must be unique")
        freqs = self._frequencies(tasks, p)

        rng = np.random.default_rng(self.seed)
        spectra, bases, offset = [], [], 0
        for i, t in enumerate(tasks):
            tp = f"{p}.tasks_from" if self.tasks_from is not None else f"{p}.tasks[{i}]"
            if t.covariance is not None:
                lam, basis = _load_covariance(t, self.dim, tp)
            else:
                lam = _spectrum(t, tp)
                r = len(lam)
                if self.placement is Placement.ORTHOGONAL:
                    if offset + r > self.dim:
                        raise ConfigError(f"{tp}.rank: orthogonal blocks need total rank <= mixture.dim = "
                                          f"{self.dim}, got {offset + r} by this task")
                    basis = np.eye(self.dim)[:, offset:offset + r]
                    offset += r
                else:
                    if r > self.dim:
                        raise ConfigError(f"{tp}.rank: {r} exceeds mixture.dim = {self.dim}")
                    basis, _ = np.linalg.qr(rng.standard_normal((self.dim, r)))
            spectra.append(lam)
            bases.append(basis)
        return Mixture(names=names, frequencies=freqs, eigenvalues=spectra, bases=bases, dim=self.dim,
                       noise=self.noise)

    def _frequencies(self, tasks: list[TaskConfig], p: str) -> np.ndarray:
        given = [t.frequency is not None for t in tasks]
        if self.zipf is not None:
            if any(given):
                raise ConfigError(f"{p}.zipf: set either zipf or per-task frequencies, not both")
            if self.zipf < 0:
                raise ConfigError(f"{p}.zipf: must be >= 0, got {self.zipf}")
            w = np.arange(1, len(tasks) + 1, dtype=float) ** -self.zipf
            return w / w.sum()
        if not all(given):
            missing = tasks[given.index(False)].name
            raise ConfigError(f"{p}.tasks: task {missing!r} has no frequency (set one per task, or mixture.zipf)")
        freqs = np.array([t.frequency for t in tasks], dtype=float)
        for i, f in enumerate(freqs):
            if not f > 0:
                raise ConfigError(f"{p}.tasks[{i}].frequency: must be > 0, got {f}")
        if abs(freqs.sum() - 1.0) > 1e-6:
            raise ConfigError(f"{p}.tasks: frequencies sum to {freqs.sum():.6g}, not 1")
        return freqs / freqs.sum()


def _spectrum(t: TaskConfig, tp: str) -> np.ndarray:
    if t.eigenvalues is not None:
        if t.rank is not None and t.rank != len(t.eigenvalues):
            raise ConfigError(f"{tp}.rank: {t.rank} disagrees with {len(t.eigenvalues)} eigenvalues")
        lam = np.asarray(t.eigenvalues, dtype=float)
        if lam.size == 0:
            raise ConfigError(f"{tp}.eigenvalues: empty")
        for j, v in enumerate(lam):
            if not v > 0:
                raise ConfigError(f"{tp}.eigenvalues[{j}]: must be > 0, got {v}")
        return np.sort(lam)[::-1].copy()
    if t.rank is None:
        raise ConfigError(f"{tp}: give rank (with decay/scale), eigenvalues, or covariance")
    if t.rank < 1:
        raise ConfigError(f"{tp}.rank: must be >= 1, got {t.rank}")
    if not t.scale > 0:
        raise ConfigError(f"{tp}.scale: must be > 0, got {t.scale}")
    return t.scale * np.arange(1, t.rank + 1, dtype=float) ** -t.decay


def _load_covariance(t: TaskConfig, dim: int, tp: str) -> tuple[np.ndarray, np.ndarray]:
    field = f"{tp}.covariance"
    if t.rank is not None or t.eigenvalues is not None:
        raise ConfigError(f"{field}: give a covariance or a spectrum, not both")
    path = Path(t.covariance)
    if not path.is_file():
        raise ConfigError(f"{field}: file not found: {path}")
    try:
        C = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input error
        raise ConfigError(f"{field}: cannot read {path} as .npy ({type(e).__name__})") from None
    if C.shape != (dim, dim):
        raise ConfigError(f"{field}: shape {C.shape} is not mixture.dim x mixture.dim = ({dim}, {dim})")
    C = C.astype(float)
    if not np.all(np.isfinite(C)):
        raise ConfigError(f"{field}: contains NaN or inf")
    scale = max(np.abs(C).max(), 1e-300)
    if np.abs(C - C.T).max() > 1e-8 * scale:
        raise ConfigError(f"{field}: matrix is not symmetric")
    vals, vecs = np.linalg.eigh((C + C.T) / 2)
    if vals.min() < -1e-8 * scale:
        raise ConfigError(f"{field}: not positive semi-definite (eigenvalue {vals.min():.3g})")
    keep = vals > 1e-10 * scale
    if not keep.any():
        raise ConfigError(f"{field}: matrix is zero")
    order = np.argsort(vals[keep])[::-1]
    return vals[keep][order], vecs[:, keep][:, order]


@dataclass(frozen=True)
class Mixture:
    """A built mixture: names, pi (K,), spectra lambda_k (r_k,) high->low, bases B_k (d, r_k), d, sigma."""

    names: list[str]
    frequencies: np.ndarray
    eigenvalues: list[np.ndarray]
    bases: list[np.ndarray]
    dim: int
    noise: float

    @property
    def num_tasks(self) -> int:
        return len(self.names)

    @property
    def ranks(self) -> list[int]:
        return [len(lam) for lam in self.eigenvalues]

    @functools.cached_property
    def traces(self) -> np.ndarray:
        """Tr(C_k): task k's loss when predicting 0, i.e. the mean predictor's."""
        return np.array([lam.sum() for lam in self.eigenvalues])

    def covariance(self, k: int) -> np.ndarray:
        B, lam = self.bases[k], self.eigenvalues[k]
        return (B * lam) @ B.T

    def teacher(self, k: int) -> np.ndarray:
        """A_k = Lambda_k^{1/2} B_k^T (r_k, d): y_k = A_k x."""
        return np.sqrt(self.eigenvalues[k])[:, None] * self.bases[k].T

    def teachers(self) -> np.ndarray:
        """All A_k, output rows zero-padded to r_max: (K, r_max, d)."""
        out = np.zeros((self.num_tasks, max(self.ranks), self.dim))
        for k in range(self.num_tasks):
            out[k, : self.ranks[k]] = self.teacher(k)
        return out

    def coordinate_columns(self) -> tuple[np.ndarray, np.ndarray] | None:
        """If every B_k's columns are standard basis vectors: (cols (K, r_max) int, scale (K, r_max)) with
        y_k[j] = scale[k, j] * x[cols[k, j]] (padding: col 0, scale 0). Else None."""
        cols = np.zeros((self.num_tasks, max(self.ranks)), dtype=np.int64)
        scale = np.zeros((self.num_tasks, max(self.ranks)))
        for k, B in enumerate(self.bases):
            idx = np.argmax(np.abs(B), axis=0)
            if not np.array_equal(B, np.eye(self.dim)[:, idx]):
                return None
            cols[k, : len(idx)] = idx
            scale[k, : len(idx)] = np.sqrt(self.eigenvalues[k])
        return cols, scale

    @functools.cached_property
    def orthogonal(self) -> bool:
        """Are the task subspaces mutually orthogonal? Then M's eigenvalues are exactly the utilities."""
        B = np.concatenate(self.bases, axis=1)  # (d, R)
        G = B.T @ B
        ends = np.cumsum(self.ranks)
        for k, (a, b) in enumerate(zip(ends - self.ranks, ends)):
            G[a:b, a:b] = 0.0
        return bool(np.abs(G).max(initial=0.0) < 1e-9)

    def mixture_covariance(self, tasks: list[int] | None = None) -> np.ndarray:
        """M = sum_k pi_k C_k (over `tasks`, default all; M_F for the frequent set)."""
        tasks = range(self.num_tasks) if tasks is None else tasks
        M = np.zeros((self.dim, self.dim))
        for k in tasks:
            B = self.bases[k]
            M += (B * (self.frequencies[k] * self.eigenvalues[k])) @ B.T
        return M

    def frequent_set(self, mass: float = 0.8) -> list[int]:
        return theory.frequent_set(self.frequencies, mass)

    def theory_losses(self, widths: list[int]) -> np.ndarray:
        """Per-task loss of the width-N optimum, noise excluded: (K, len(widths)).

        Orthogonal subspaces: exact from the utilities with the documented tie rule. Otherwise from the top-N
        eigenspace of M (unique unless mu_N = mu_{N+1})."""
        if self.orthogonal:
            return theory.orthogonal_task_losses(self.frequencies, self.eigenvalues, widths)
        vals, vecs = np.linalg.eigh(self.mixture_covariance())
        vecs = vecs[:, ::-1]
        out = np.zeros((self.num_tasks, len(widths)))
        for w, n in enumerate(widths):
            U = vecs[:, :n]
            for k in range(self.num_tasks):
                proj = self.teacher(k) @ U  # (r_k, n): Tr(U^T C_k U) = ||A_k U||_F^2
                out[k, w] = self.traces[k] - float(np.sum(proj**2))
        return np.clip(out, 0.0, None)

    def staircase(self, m: int) -> np.ndarray:
        """N*_k(m) (orthogonal mixtures; inf where the task has fewer than m directions)."""
        return theory.staircase(self.frequencies, self.eigenvalues, m)

    def summary(self, widths: list[int], frequent_mass: float) -> dict[str, Any]:
        """The closed-form numbers of this mixture at `widths` (the `raretask theory --json` object): per task its
        loss of the width-N optimum, staircases N*_k(m) for m = 1..3 and, outside the frequent set F, its critical
        width N_r^crit (Prop. 6); the utilities high to low; delta*_F(N)."""
        losses = self.theory_losses(widths)  # (K, W)
        stairs = {m: self.staircase(m) for m in (1, 2, 3)}
        F = self.frequent_set(frequent_mass)
        mu_F = theory.spectrum(self.mixture_covariance(F))
        tasks = [{"name": name, "frequency": float(self.frequencies[k]), "rank": self.ranks[k],
                  "eigenvalues": self.eigenvalues[k].tolist(), "loss": losses[k].tolist(),
                  "normalised_loss": (losses[k] / self.traces[k]).tolist(),
                  "staircase": {str(m): _finite(float(stairs[m][k])) for m in stairs},
                  "critical_width": theory.critical_width(mu_F, float(self.frequencies[k] * self.eigenvalues[k][0]))
                  if k not in F else None}
                 for k, name in enumerate(self.names)]
        utilities = [{"task": self.names[u.task], "index": u.index, "utility": u.utility}
                     for u in theory.utilities(self.frequencies, self.eigenvalues)]
        return {"widths": widths, "tasks": tasks, "mixture_loss": (self.frequencies[:, None] * losses).sum(0).tolist(),
                "utilities": utilities, "orthogonal": self.orthogonal, "frequent_set": [self.names[k] for k in F],
                "residual_threshold": [theory.residual_threshold(mu_F, n) for n in widths]}


@dataclass
class Batch:
    """One step's examples for S independent seeds, grouped by (seed, task) so decoders apply per group.

    x (S, B, d); y (S*B, r_max) with rows in (seed, task) order; counts (S, K); offsets (S*K,) int32 group ends."""

    x: torch.Tensor
    y: torch.Tensor
    counts: torch.Tensor
    offsets: torch.Tensor


class TaskStream:
    """Fresh examples every step. Each seed has its own torch.Generator, so a seed's stream is the same whatever
    other seeds train beside it (a cell trained alone reproduces the batched sweep)."""

    def __init__(self, mixture: Mixture, seeds: list[int], device: torch.device, dtype: torch.dtype = torch.float32):
        self.mixture, self.device, self.dtype = mixture, device, dtype
        self.generators = [torch.Generator(device=device).manual_seed(_stream_seed(s)) for s in seeds]
        S = len(seeds)
        self.probs = torch.as_tensor(mixture.frequencies, dtype=torch.float64, device=device)
        self.ranks = torch.as_tensor(mixture.ranks, device=device).repeat(S)  # (S*K,)
        self.r_max = max(mixture.ranks)
        # Coordinate-aligned tasks (orthogonal placement): y_k is a scaled subset of x's coordinates, a gather.
        # Otherwise the teachers, transposed for grouped_mm, one copy per (seed, task) group: (S*K, d, r_max).
        columns = mixture.coordinate_columns()
        self.gather: tuple[torch.Tensor, torch.Tensor] | None = None
        self.teachers_t: torch.Tensor | None = None
        if columns is not None:
            cols, scale = columns
            self.gather = (torch.as_tensor(cols, device=device).repeat(S, 1),
                           torch.as_tensor(scale, dtype=dtype, device=device).repeat(S, 1))  # (S*K, r_max)
        else:
            A = torch.as_tensor(mixture.teachers(), dtype=dtype, device=device).transpose(1, 2)
            self.teachers_t = A.repeat(S, 1, 1).contiguous()

    def sample(self, batch_size: int, counts: torch.Tensor | None = None) -> Batch:
        """A fresh batch per seed. `counts` (S, K), each row summing to batch_size, replaces the multinomial draw
        of the tasks (a schedule then decides how many samples of each task the batch holds)."""
        S, d = len(self.generators), self.mixture.dim
        if counts is None:
            # One RNG call per seed (not per cell): independent, reproducible per-seed streams.
            counts = torch.stack([
                torch.bincount(torch.multinomial(self.probs, batch_size, replacement=True, generator=g),
                               minlength=self.mixture.num_tasks) for g in self.generators])  # (S, K)
        else:
            counts = _checked_counts(counts, S, self.mixture.num_tasks, batch_size, self.device)
        x = torch.stack([torch.randn(batch_size, d, generator=g, device=self.device, dtype=self.dtype)
                         for g in self.generators])  # (S, B, d)
        offsets = torch.cumsum(counts.flatten(), 0).to(torch.int32)  # (S*K,)
        if self.gather is not None:
            group_of_row = torch.repeat_interleave(torch.arange(len(offsets), device=self.device), counts.flatten())
            cols, scale = self.gather[0][group_of_row], self.gather[1][group_of_row]  # (S*B, r_max)
            y = x.reshape(S * batch_size, d).gather(1, cols) * scale
        else:
            y = grouped_matmul(x.reshape(S * batch_size, d), self.teachers_t, offsets)  # (S*B, r_max)
        if self.mixture.noise > 0:
            noise = torch.stack([torch.randn(batch_size, self.r_max, generator=g, device=self.device,
                                             dtype=self.dtype) for g in self.generators])
            rank_of_row = torch.repeat_interleave(self.ranks, counts.flatten())  # (S*B,)
            real = torch.arange(self.r_max, device=self.device)[None, :] < rank_of_row[:, None]
            y = y + self.mixture.noise * noise.reshape(S * batch_size, -1) * real  # no noise on padded outputs
        return Batch(x=x, y=y, counts=counts, offsets=offsets)

    def state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def load_state(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s)


def _checked_counts(counts: torch.Tensor, seeds: int, tasks: int, batch_size: int,
                   device: torch.device) -> torch.Tensor:
    """Given task counts as int64 on the stream's device; a wrong shape or row sum is a programming error."""
    counts = torch.as_tensor(counts).to(device=device, dtype=torch.int64)
    if counts.shape != (seeds, tasks) or bool((counts < 0).any()) or bool((counts.sum(1) != batch_size).any()):
        raise ValueError(f"counts must be ({seeds}, {tasks}) non-negative with rows summing to {batch_size}, "
                         f"got shape {tuple(counts.shape)}")
    return counts


def _stream_seed(seed: int) -> int:
    return (seed * 2_654_435_761 + 97) % 2**63  # distinct from the init seeds below


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
