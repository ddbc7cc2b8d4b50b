"""Gradient interference between tasks on the shared encoder (paper Sec. 3.2, Thm 4, Fig. 4), measured per cell.

Per-task gradients in one pass. The batch loss is a sum over examples, L = (1/B) sum_i ||y_i - y^_i||^2, and the
encoder enters only through the hidden states h_i = W x_i, so task k's share of the encoder gradient is

    g_k = dL_k/dW = sum_{i in task k} delta_i x_i^T,      delta_i = dL/dh_i  (N,),  x_i (d,)

One backward to the predictions, the decoders applied transposed to reach the hidden states
(delta_i = D_{k(i)} dL/dy^_i, grouped matmuls), then one matmul per (seed, task) group gives every g_k of every cell
at once (rows of a sweep's encoder are its cells): the arithmetic of one encoder weight gradient, not K backward
passes (`per_task_gradients`). `exact_task_gradients` gives their expectation over x ~ N(0, I) in closed form,
E[g_k] = pi_k grad l_k = 2 pi_k D_k (D_k^T W - A_k) (D_k stored (N, r)).

The metrics need only the Gram matrix <g_k, g_l> per cell and ||G_F B_r||, and those follow from the factors
(delta_i, x_i) without materialising all K gradients (`batch_stats`: a rare task's gradient is a few outer
products, cheaper kept as such). During training (`GradientTap`) the same factors give the encoder's weight gradient
in place of autograd's, so a logged step costs little more than a plain one (benchmarks/interference.py).

Metrics per cell (F = the frequent set, r = the rare task, B_r its input directions (d, r_r)):
  cosine(k, l)         <g_k, g_l> / (||g_k|| ||g_l||)  (NaN when a task has no example in the batch)
  frequent_norm        ||G_F||, G_F = sum_{k in F} g_k: the raw encoder gradient of the frequent tasks with the
                       current decoders. Thm 4 does NOT bound it: its 2 sqrt(lambda_1(M_F) delta_F) bounds the
                       gradient on the subspace, G_F(U) = 2 (I - P_U) M_F U, at optimal decoders, and depends on
                       span(W) only, while ||G_F|| depends on the parametrisation: W -> cW, D -> D/c leaves every
                       prediction unchanged and divides it by c (raretask.synthetic.dynamics records a scale-free
                       form). `frequent_norm_ratio` divides by its value at step 0, so it mixes learning with any
                       change of the encoder's scale
  rare_projection      ||G_F B_r||_F / ||G_F||_F: the share of the common update that moves the encoder along the
                       rare task's input directions (sqrt(r_r / d) for an isotropic gradient)
  cos_rare_frequent    cos(g_r, G_F), the paper's Fig. 4 interference cosine

`raretask.synthetic.interference` measures them along a synthetic sweep's training (`raretask synth interference`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raretask.grouped import grouped_matmul

# The students are raretask.synthetic.model's SweepStudent (every cell: encoder (S, rows, d)) and CellStudent (one
# seed of one width: encoder (N, d)); this layer reads their tensors and imports nothing of the synthetic lab.
Student = Any
GATHER_ELEMENTS = 1e6  # up to this many gathered decoder entries, hidden_gradients gathers per example
GATHER_ELEMENTS_CUDA = 2.5e8  # on a GPU (1 GB): 3 kernels instead of a grouped matmul per cell
BLOCK_DIAGONAL_FLOPS = 2e7  # below this, hidden_gradients uses one block-diagonal product (~1 ms on a CPU)


# -------------------------------------------------------------------------------------- per-task gradients


def one_cell(student: Student) -> bool:
    """A CellStudent (one seed of one width, encoder (N, d)) rather than a SweepStudent (encoder (S, rows, d))?"""
    return student.encoder.dim() == 2


def segment_outer(delta: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """sum_{i in group g} delta_i^T x_i for consecutive row groups ending at `offsets` (G,): delta (M, n), x (M, d)
    -> (G, n, d); an empty group gives zeros. One matmul per group (grouped_mm's contraction-grouped form does the
    same in one kernel but ran 2.5x slower on this CPU at the paper's shape)."""
    ends = offsets.tolist()
    out = delta.new_empty(len(ends), delta.shape[1], x.shape[1])
    for g, (s, e) in enumerate(zip([0] + ends[:-1], ends)):
        if e > s:
            torch.matmul(delta[s:e].T, x[s:e], out=out[g])
        else:
            out[g].zero_()
    return out


def row_groups(offsets: torch.Tensor, rows: int) -> torch.Tensor:
    """The (seed, task) group of each of the batch's `rows` rows, (rows,), from the group ends `offsets` (S*K,)."""
    return torch.searchsorted(offsets, torch.arange(rows, device=offsets.device, dtype=offsets.dtype), right=True)


def hidden_gradients(student: Student, grad_pred: torch.Tensor, offsets: torch.Tensor,
                     group: torch.Tensor | None = None) -> torch.Tensor:
    """delta_i = dL/dh_i from dL/dy^_i: the decoders applied transposed, group by group (linear in grad_pred).

    SweepStudent: grad_pred (S*B, C, r_max) -> (S*B, rows) (padding rows zero); CellStudent: (B, r_max) -> (B, N).
    Three ways to the same numbers, by size: a small problem, or any that fits a GPU, gathers each example's
    decoder (a few kernels; CPU grouped matmuls cost ~80 us each however small); a sweep of moderate size takes one grouped matmul against
    block-diagonal decoders of all cells (C times the arithmetic, but one kernel: 2.4x faster at the CPU preset's
    size, 3x slower at the paper's); a large one, one grouped matmul per cell. `group`: `row_groups(offsets, rows)`,
    if the caller has it."""
    D = student.decoder.detach()
    if one_cell(student):
        if D.shape[1] * grad_pred.numel() <= GATHER_ELEMENTS:
            group = row_groups(offsets, grad_pred.shape[0]) if group is None else group
            return torch.einsum("bnr,br->bn", D[group], grad_pred)
        return grouped_matmul(grad_pred, D.transpose(1, 2), offsets)  # D: (K, N, r) -> (K, r, N)
    S, K, rows, r = D.shape
    C = len(student.widths)
    gather = GATHER_ELEMENTS_CUDA if D.device.type == "cuda" else GATHER_ELEMENTS
    if rows * grad_pred.shape[0] * r <= gather:  # D of each example's (seed, task), its cell's dL/dy^
        group = row_groups(offsets, grad_pred.shape[0]) if group is None else group
        return torch.linalg.vecdot(D.reshape(S * K, rows, r).index_select(0, group),
                                   grad_pred.index_select(1, student.row_cell_index))
    if 2 * grad_pred.shape[0] * C * r * rows < BLOCK_DIAGONAL_FLOPS:
        real = student.real_rows  # block (cell c, output j) x (row of c): D[., row, j]
        cols = (student.cell_of_row[:, None] * r + torch.arange(r, device=D.device)).reshape(-1)
        blocks = D.new_zeros(S * K, C * r, rows)
        blocks[:, cols, real[:, None].expand(-1, r).reshape(-1)] = D.reshape(S * K, rows, r)[:, real].flatten(1)
        return grouped_matmul(grad_pred.reshape(-1, C * r), blocks, offsets)
    delta = grad_pred.new_zeros(grad_pred.shape[0], rows)
    for c, (o, n) in enumerate(zip(student.starts, student.widths)):  # one small grouped matmul per cell
        Dc = D[:, :, o:o + n].reshape(S * K, n, r).transpose(1, 2)  # (S*K, r, N_c)
        delta[:, o:o + n] = grouped_matmul(grad_pred[:, c].contiguous(), Dc, offsets)
    return delta


def task_gradients(student: Student, x: torch.Tensor, grad_pred: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Per-task encoder gradients from the gradient w.r.t. the predictions, in one pass, materialised.

    SweepStudent: x (S, B, d), grad_pred (S*B, C, r_max) -> (S, K, rows, d); cell c owns rows
    [starts[c], starts[c] + widths[c]), i.e. (S, K, N_c, d) per cell. CellStudent: x (B, d) -> (K, N, d)."""
    delta = hidden_gradients(student, grad_pred, offsets)
    g = segment_outer(delta, x.reshape(-1, x.shape[-1]), offsets)  # (S*K, rows, d): group (s, k), seed s rows
    if one_cell(student):
        return g
    return g.view(len(student.seeds), len(student.ranks), *g.shape[1:])


def batch_loss(student: Student, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training objective of one batch: the sum of the cells' mean squared errors (summed over outputs)."""
    if one_cell(student):
        return (pred - y).square().sum(-1).mean()
    return student.cell_losses(pred, y, pred.shape[0] // len(student.seeds)).sum()


def per_task_gradients(student: Student, x: torch.Tensor, y: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Task k's share of the batch-loss gradient of the encoder, for every task (and cell): one forward, one
    backward to the predictions, then `task_gradients`. Shapes as there; rows of x and y grouped as the stream's
    (by seed, then task, group ends `offsets`). Leaves the parameters' .grad untouched."""
    with torch.enable_grad():
        pred = student(x, offsets)
        (grad_pred,) = torch.autograd.grad(batch_loss(student, pred, y), pred)
    with torch.no_grad():
        return task_gradients(student, x, grad_pred, offsets)


def exact_task_gradients(student: Student, mixture: Any) -> torch.Tensor:  # mixture: a built Mixture
    """E_x of `per_task_gradients` for x ~ N(0, I): pi_k grad_W l_k = 2 pi_k D_k (D_k^T W - A_k), label noise
    adding nothing. Shapes as `task_gradients`; computed in the encoder's dtype."""
    W, D = student.encoder.detach(), student.decoder.detach()
    A = torch.as_tensor(mixture.teachers(), dtype=W.dtype, device=W.device)  # (K, r, d)
    pi = torch.as_tensor(mixture.frequencies, dtype=W.dtype, device=W.device)
    if one_cell(student):
        E = torch.einsum("knr,nd->krd", D, W) - A  # (K, r, d): student map minus teacher
        return 2 * pi[:, None, None] * torch.einsum("knr,krd->knd", D, E)
    S, K, rows, _ = D.shape
    g = W.new_zeros(S, K, rows, W.shape[-1])
    for o, n in zip(student.starts, student.widths):  # evaluation only (not per training step)
        E = torch.einsum("sknr,snd->skrd", D[:, :, o:o + n], W[:, o:o + n]) - A
        g[:, :, o:o + n] = 2 * pi[:, None, None] * torch.einsum("sknr,skrd->sknd", D[:, :, o:o + n], E)
    return g


# ------------------------------------------------------------------------------- Gram statistics, factored


@dataclass
class Targets:
    """What is measured: the frequent set F, the rare task r with its input directions B_r (d, r_r, orthonormal
    columns), and the tasks whose pairwise inner products are wanted (F and r among them, in this order)."""

    frequent: list[int]
    rare: int
    basis: torch.Tensor
    tasks: list[int]


@dataclass
class GradientStats:
    """All the metrics need of per-task encoder gradients, per (seed, cell): gram (S, C, T, T) = <g_k, g_l> over the
    cell's rows for the tracked tasks, and projection (S, C) = ||G_F B_r||_F^2."""

    gram: torch.Tensor
    projection: torch.Tensor


def _layout(student: Student) -> tuple[int, torch.Tensor, list[int], list[int]]:
    """(S, row_cell (rows, C) one-hot, cell starts, cell widths); a CellStudent is one seed of one cell."""
    if one_cell(student):
        N = student.encoder.shape[0]
        return 1, student.encoder.new_ones(N, 1).detach(), [0], [N]
    return len(student.seeds), student.row_cell, list(student.starts), list(student.widths)


def gradient_stats(student: Student, g: torch.Tensor, targets: Targets) -> GradientStats:
    """GradientStats from materialised per-task gradients g (`task_gradients`' shapes), in g's dtype and device."""
    S, row_cell, _, _ = _layout(student)
    g = g.reshape(S, *g.shape[-3:])  # (S, K, rows, d)
    row_cell = row_cell.to(g.dtype)
    sub = g if targets.tasks == list(range(g.shape[1])) else g[:, targets.tasks]  # (S, T, rows, d)
    gram = _row_gram(sub, row_cell)
    G_F = g[:, targets.frequent].sum(1)  # (S, rows, d)
    projection = (G_F @ targets.basis.to(g)).square().sum(-1) @ row_cell  # (S, C)
    return GradientStats(gram, projection)


def _row_gram(g: torch.Tensor, row_cell: torch.Tensor) -> torch.Tensor:
    """<g_k, g_l> per cell for gradients g (S, T, rows, d): row by row (one bmm per seed over the encoder rows, no
    copy), then summed over each cell's rows -> (S, C, T, T): 2x faster on a CPU than one (T, N d) x (N d, T) product
    per cell, whose inner dimension is huge."""
    S, T = g.shape[:2]
    per_row = torch.stack([torch.bmm(g[s].transpose(0, 1), g[s].permute(1, 2, 0)) for s in range(S)])  # (S,rows,T,T)
    return (per_row.flatten(2).transpose(1, 2) @ row_cell).transpose(1, 2).reshape(S, -1, T, T)


def _counts(offsets: torch.Tensor, seeds: int) -> list[list[int]]:
    """Examples per (seed, task) from the group ends `offsets` (S*K,)."""
    return torch.diff(offsets, prepend=offsets.new_zeros(1)).view(seeds, -1).tolist()


WRITE_COST = 20.0  # a materialised (rows, d) gradient costs about this many multiply-adds per entry (memory traffic)
OP_COST = 2e5  # and a kernel launch about this many (a few microseconds on a CPU)
OP_COST_CUDA = 5e8  # on a GPU a launch (~10 us) costs more arithmetic than these problems hold: fewest kernels


def op_cost(device: torch.device) -> float:
    return OP_COST_CUDA if device.type == "cuda" else OP_COST


def plan_split(counts: list[float], rows: int, d: int, kernel: float = OP_COST) -> tuple[int, list[bool]]:
    """How to compute the Gram of per-task gradients of one batch, given the tracked tasks' example counts sorted
    largest first: materialise the first m tasks' gradients g_a = Delta_a^T X_a (rows, d) and keep the rest as
    factors (Delta_k, X_k). Returns (m, for each of the m whether its inner products with the factored tasks use
    Z = g_a X_S^T (rows d n_S multiply-adds) rather than the factors (n_a n_S (rows + d))).

    Materialised pairs cost rows d each; factored pairs n_k n_l (rows + d); a frequent task's g is cheaper
    whole, a rare task's as its few examples. Minimises the modelled multiply-adds over m, a kernel launch counted
    as `kernel` of them."""
    best: tuple[float, int, list[bool]] | None = None
    for m in range(len(counts) + 1):
        n_S = sum(counts[m:])
        z = [bool(rows * d <= n * (rows + d)) for n in counts[:m]]
        cross = sum(min(rows * d, n * (rows + d)) * n_S for n in counts[:m])
        cost = (rows * d * (WRITE_COST * m + m * m) + cross + n_S * n_S * (rows + d)
                + kernel * (2 * m + 3 * any(z) + 8 * (n_S > 0)))
        if best is None or cost < best[0]:
            best = (cost, m, z)
    return best[1], best[2]


def choose_split(counts: list[list[int]], tasks: list[int], rows: int, d: int,
                 kernel: float = OP_COST) -> tuple[int, list[bool]]:
    """`plan_split` for a batch's per-seed task counts (S, K) and the tracked tasks (mean count over seeds)."""
    mean = sorted((sum(c[k] for c in counts) / len(counts) for k in tasks), reverse=True)
    return plan_split(mean, rows, d, kernel)


def batch_stats(student: Student, x: torch.Tensor, delta: torch.Tensor, offsets: torch.Tensor, targets: Targets,
                *, total: bool = False, split: tuple[int, list[bool]] | None = None,
                group: torch.Tensor | None = None) -> tuple[GradientStats, torch.Tensor | None]:
    """GradientStats of one batch's per-task encoder gradients, from delta = dL/dh (`hidden_gradients`) and x,
    without materialising all K gradients; with total=True also the encoder's weight gradient sum_k g_k, shaped
    like the encoder. `split` forces `plan_split`'s answer (tests); `group`: `row_groups(offsets, rows)`, if at hand.

    g_k = Delta_k^T X_k (rows of task k), so for factored tasks k, l and each cell c
        <g_k, g_l>_c = sum_{i in k, j in l} (delta_i . delta_j)_c (x_i . x_j),
    the Gram matrices of the deltas (over the cell's rows) and of the inputs, multiplied elementwise and summed
    per task pair; for a materialised g_a and a factored l, <g_a, g_l>_c = sum_{j in l} (delta_j . g_a x_j)_c.
    At the paper's shape (d 1024, K 32, batch 1024, Zipf 2) this is about a quarter of the multiply-adds of the
    Gram of materialised gradients, and it writes 6 instead of 32 (rows, d) gradients."""
    S, row_cell, starts, widths = _layout(student)
    d, rows = x.shape[-1], delta.shape[-1]
    X = x.reshape(-1, d)  # (S*B, d): rows by (seed, task), like delta (S*B, rows)
    B, K, T = X.shape[0] // S, offsets.numel() // S, targets.tasks
    row_cell = row_cell.to(delta.dtype)
    m, zform = split or choose_split(_counts(offsets, S), T, rows, d, op_cost(delta.device))
    group = row_groups(offsets, delta.shape[0]) if group is None else group
    one_hot = _task_one_hot(S, K, delta.device, delta.dtype).index_select(0, group)  # (S*B, K): task of each row
    # ||G_F B_r||^2 per cell: G_F B_r = Delta_F^T (X_F B_r), on the whole batch with the other rows masked
    in_F = one_hot @ _indicator(K, tuple(targets.frequent), delta.device, delta.dtype)  # (S*B, 1)
    XB = (X @ targets.basis.to(X)).view(S, B, -1)  # (S, B, r_r)
    GFB = torch.bmm((delta * in_F).view(S, B, rows).transpose(1, 2), XB)  # (S, rows, r_r)
    projection = torch.linalg.vecdot(GFB, GFB) @ row_cell
    if m == 0:  # every task factored, on the whole batch (no gathering): small problems
        one = one_hot if T == list(range(K)) else one_hot[:, T]
        D, Xs, one = delta.view(S, B, rows), x.reshape(S, B, d), one.view(S, B, len(T))
        gram = _factored(D, Xs, one, D, Xs, one, starts, widths, row_cell)
        grad = torch.bmm(D.transpose(1, 2), Xs) if total else None
        return GradientStats(gram, projection), None if grad is None else grad.view_as(student.encoder)

    ends = offsets.tolist()
    seg = [[(([0] + ends)[s * K + k], ends[s * K + k]) for k in range(K)] for s in range(S)]  # absolute rows
    order = sorted(T, key=lambda k: -sum(e - b for b, e in (seg_s[k] for seg_s in seg)))
    L, F_ = order[:m], order[m:]  # materialised, factored
    Lz, Lf = [a for a, z in zip(L, zform) if z], [a for a, z in zip(L, zform) if not z]
    C, pos = row_cell.shape[1], {k: i for i, k in enumerate(T)}
    gram = delta.new_zeros(S, C, len(T), len(T))
    g_L = delta.new_empty(S, m, rows, d)  # materialised: g_a for a in L, per seed; their pairs row by row
    for s in range(S):
        for i, a in enumerate(L):
            b, e = seg[s][a]
            torch.matmul(delta[b:e].T, X[b:e], out=g_L[s, i])
    _put(gram, _row_gram(g_L, row_cell), [pos[a] for a in L], [pos[a] for a in L])
    if F_:
        idx_J, one_J = _rows_of(seg, F_, delta.device, delta.dtype)  # (S, n_J), (S, n_J, |F_|)
        D_J, X_J = delta[idx_J], X[idx_J]  # (S, n_J, rows), (S, n_J, d)
        if Lz:  # <g_a, g_l> = sum_{j in l} delta_j . (g_a x_j), cell by cell
            z = g_L[:, [L.index(a) for a in Lz]] if Lf else g_L
            Z = torch.bmm(z.flatten(1, 2), X_J.transpose(1, 2)).view(S, len(Lz), rows, -1)
            per_cell = torch.einsum("sarj,rc->sacj", Z * D_J.transpose(1, 2)[:, None], row_cell)
            block = torch.einsum("sacj,sjl->scal", per_cell, one_J)
            _put(gram, block, [pos[a] for a in Lz], [pos[k] for k in F_], symmetric=True)
        I = Lf + F_  # factored against F_: (delta_i . delta_j)_c (x_i . x_j), summed per task pair
        idx_I, one_I = (idx_J, one_J) if not Lf else _rows_of(seg, I, delta.device, delta.dtype)
        block = _factored(delta[idx_I], X[idx_I], one_I, D_J, X_J, one_J, starts, widths, row_cell)
        _put(gram, block, [pos[k] for k in I], [pos[k] for k in F_], symmetric=True)
    if not total:
        return GradientStats(gram, projection), None
    grad = g_L.sum(1)  # the weight gradient: materialised g_a plus the other rows in one product
    idx_R, one_R = _rows_of(seg, [k for k in range(K) if k not in L], delta.device, delta.dtype)
    grad.baddbmm_((delta[idx_R] * one_R.sum(-1, keepdim=True)).transpose(1, 2), X[idx_R])
    return GradientStats(gram, projection), grad.view_as(student.encoder)


SMALL_FACTORED = 1e6  # up to this many multiply-adds _factored takes a form with a few kernels and no loop over cells


def _factored(D_I: torch.Tensor, X_I: torch.Tensor, one_I: torch.Tensor, D_J: torch.Tensor, X_J: torch.Tensor,
              one_J: torch.Tensor, starts: list[int], widths: list[int], row_cell: torch.Tensor) -> torch.Tensor:
    """sum_{i in k, j in l} (delta_i . delta_j)_c (x_i . x_j) -> (S, C, |I tasks|, |J tasks|) from rows D (S, n, rows),
    X (S, n, d) and one-hot task memberships (S, n, tasks), zero on padding rows."""
    S, n_I, rows = D_I.shape
    n_J, L = D_J.shape[1], one_J.shape[-1]
    Q = torch.bmm(X_I, X_J.transpose(1, 2))  # (S, n_I, n_J): x_i . x_j
    if L * n_I * n_J * rows <= SMALL_FACTORED:  # few kernels: V_il = sum_{j in l} (x_i . x_j) delta_j, per row
        V = torch.bmm(Q, (one_J[:, :, :, None] * D_J[:, :, None]).flatten(2)).view(S, n_I, L, rows)
        V = torch.bmm(one_I.transpose(1, 2), (V * D_I[:, :, None]).flatten(2))  # (S, |I|, L rows)
        return (V.view(S, -1, L, rows) @ row_cell).permute(0, 3, 1, 2)
    P = torch.stack([torch.bmm(D_I[:, :, o:o + n], D_J[:, :, o:o + n].transpose(1, 2))
                     for o, n in zip(starts, widths)], 1)  # (S, C, n_I, n_J): per cell, delta_i . delta_j
    return one_I.transpose(1, 2)[:, None] @ (P * Q[:, None]) @ one_J[:, None]


@functools.lru_cache(maxsize=16)
def _task_one_hot(S: int, K: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(S*K, K): row g is the one-hot of group g's task (g mod K). Cached: a logged step is kernel-bound."""
    return torch.nn.functional.one_hot(torch.arange(S * K, device=device) % K, K).to(dtype)


@functools.lru_cache(maxsize=16)
def _indicator(K: int, tasks: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(K, 1): 1 for `tasks`."""
    out = torch.zeros(K, 1, dtype=dtype, device=device)
    out[list(tasks)] = 1
    return out


def _rows_of(seg: list[list[tuple[int, int]]], tasks: list[int], device: torch.device,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (S, n) of `tasks`' examples in each seed (padded with row 0 where seeds differ in count) and
    their one-hot task membership (S, n, len(tasks)), zero on padding."""
    per_seed = [[(j, b, e) for j, k in enumerate(tasks) for b, e in [seg_s[k]] if e > b] for seg_s in seg]
    n = max([sum(e - b for _, b, e in p) for p in per_seed] + [1])
    idx = np.zeros((len(seg), n), np.int64)
    one = np.zeros((len(seg), n, len(tasks)), np.float64)
    for s, p in enumerate(per_seed):
        at = 0
        for j, b, e in p:
            idx[s, at:at + e - b] = np.arange(b, e)
            one[s, at:at + e - b, j] = 1
            at += e - b
    return torch.as_tensor(idx, device=device), torch.as_tensor(one, dtype=dtype, device=device)


def _put(gram: torch.Tensor, block: torch.Tensor, rows: list[int], cols: list[int], symmetric: bool = False) -> None:
    """gram[..., rows, cols] = block (and its transpose at [cols, rows])."""
    r, c = torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]
    gram[..., r, c] = block
    if symmetric:
        gram[..., c.T, r.T] = block.transpose(-1, -2)


def per_task_stats(student: Student, x: torch.Tensor, y: torch.Tensor, offsets: torch.Tensor,
                   targets: Targets) -> GradientStats:
    """`batch_stats` of a batch, without a training step: one forward, one backward to the predictions."""
    with torch.enable_grad():
        pred = student(x, offsets)
        (grad_pred,) = torch.autograd.grad(batch_loss(student, pred, y), pred)
    with torch.no_grad():
        return batch_stats(student, x, hidden_gradients(student, grad_pred, offsets), offsets, targets)[0]


class GradientTap:
    """Per-task gradient statistics of the very batch an optimiser step trains on, captured while the step runs.

        tap = GradientTap(trainer.student, targets)
        with tap:
            trainer.step()
        tap.stats                    # GradientStats at the parameters before the step

    A forward hook on the student keeps the batch's x and offsets and hooks the predictions; when the backward
    reaches them, `hidden_gradients` gives delta = dL/dh (the parameters are still those of the forward) and
    `batch_stats` the statistics and, from the same factors, the encoder's weight gradient. The student's encoder is
    frozen for the step and its .grad set from that: logging costs the statistics, not a second weight gradient.
    The update equals an untapped step's up to float rounding (tested). `expected`: every task's expected count in
    a seed's batch (pi_k B), for `plan_split`; default: the first batch's counts."""

    def __init__(self, student: Student, targets: Targets, expected: list[float] | None = None):
        self.student, self.targets = student, targets
        self.stats: GradientStats | None = None
        self._split: tuple[int, list[bool]] | None = None  # a cost, not a result
        if expected is not None:
            W = student.encoder
            self._split = plan_split(sorted((expected[k] for k in targets.tasks), reverse=True), W.shape[-2],
                                     W.shape[-1], op_cost(W.device))

    def __enter__(self) -> GradientTap:
        self.stats = None
        self._handle = self.student.register_forward_hook(self._on_forward)
        self._requires_grad = self.student.encoder.requires_grad
        self.student.encoder.requires_grad_(False)  # the model's backward skips the encoder's weight gradient
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._handle.remove()
        self.student.encoder.requires_grad_(self._requires_grad)
        if exc_type is None and self.stats is None:  # else the step would have left the encoder untrained
            raise RuntimeError("GradientTap: no backward reached the student's predictions during the tapped step")

    def _on_forward(self, module: torch.nn.Module, inputs: tuple, pred: torch.Tensor) -> None:
        x, offsets = inputs[0].detach(), inputs[1]
        if pred.requires_grad:
            pred.register_hook(lambda grad: self._on_backward(x, grad, offsets))

    @torch.no_grad()
    def _on_backward(self, x: torch.Tensor, grad_pred: torch.Tensor, offsets: torch.Tensor) -> None:
        if self.stats is not None:
            raise RuntimeError("GradientTap: the student ran more than one backward in a tapped step")
        group = row_groups(offsets, grad_pred.shape[0])
        delta = hidden_gradients(self.student, grad_pred, offsets, group)
        if self._split is None:
            S = 1 if one_cell(self.student) else len(self.student.seeds)
            self._split = choose_split(_counts(offsets, S), self.targets.tasks, delta.shape[-1], x.shape[-1],
                                       op_cost(x.device))
        self.stats, total = batch_stats(self.student, x, delta, offsets, self.targets, total=True, split=self._split,
                                        group=group)
        enc = self.student.encoder
        enc.grad = total if enc.grad is None else enc.grad + total


# ------------------------------------------------------------------------------------------------------ metrics


def interference_metrics(stats: GradientStats, targets: Targets) -> dict[str, np.ndarray]:
    """The module docstring's metrics from GradientStats, as float64 arrays: 'cosine' (S, C, T, T) among
    targets.tasks and 'frequent_norm', 'rare_norm', 'rare_projection', 'cos_rare_frequent', 'mean_cosine' (mean
    over distinct pairs) (S, C); a CellStudent's come with S = C = 1. NaN where a task has no example."""
    gram = stats.gram.cpu().numpy().astype(np.float64)
    proj = stats.projection.cpu().numpy().astype(np.float64)
    T = gram.shape[-1]
    f = np.array([k in targets.frequent for k in targets.tasks], np.float64)  # (T,): the frequent set's indicator
    r = targets.tasks.index(targets.rare)
    norms = np.sqrt(np.maximum(np.einsum("...ii->...i", gram), 0))  # (S, C, T)
    frequent_norm = np.sqrt(np.maximum(gram @ f @ f, 0))  # ||G_F|| = sqrt(f^T Gram f)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = gram / (norms[..., :, None] * norms[..., None, :])
        ratios = np.array([np.sqrt(np.maximum(proj, 0)) / frequent_norm,
                           gram[..., r, :] @ f / (norms[..., r] * frequent_norm)])
        cosine[~np.isfinite(cosine)] = np.nan
        ratios[~np.isfinite(ratios)] = np.nan
        pair = np.isfinite(cosine) & (np.arange(T)[:, None] != np.arange(T))  # distinct pairs that exist
        pairs = pair.sum((-1, -2))
        mean = np.where(pairs > 0, np.where(pair, cosine, 0).sum((-1, -2)) / pairs, np.nan)
    return {"cosine": cosine, "frequent_norm": frequent_norm, "rare_norm": norms[..., r],
            "rare_projection": ratios[0], "cos_rare_frequent": ratios[1], "mean_cosine": mean}
