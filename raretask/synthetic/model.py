"""The student of Sec. 3: a shared width-N linear encoder and per-task linear decoders, y^_k = D_k (W x).

`SweepStudent` holds every (seed, width) cell of a sweep in one set of tensors so a training step is a handful of
kernels whatever the number of cells:

  encoder  W    (S, rows, d)          the cells' encoders stacked along rows: cell c owns rows [o_c, o_c + N_c)
  decoder  D    (S, K, rows, r_max)   compact: D[s, k, rows of c] is cell c's decoder for task k, transposed
  (rows = sum_N, each band of cells padded to a multiple of 4 rows)

Forward: h = x W^T for all cells at once (one bmm), then every (seed, task) group of rows meets a block-diagonal
decoder (one grouped_mm per band of cells, see plan_bands), giving each cell's prediction. Cells share no
parameters and the loss is a sum of cell losses, so each cell's gradient is its own; Adam is element-wise and
gradient clipping is done per cell, so the batched sweep trains every cell exactly as if it were alone (tests
compare against `CellStudent`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from raretask.config import StrEnum
from raretask.grouped import grouped_matmul


class EncoderKind(StrEnum):
    FREE = "free"  # the paper's: unconstrained W, measured through its projector
    ORTHONORMAL = "orthonormal"  # rows kept orthonormal (on the Stiefel manifold) by a QR retraction


def init_seed(seed: int, width: int) -> int:
    """Seed of one cell's initialisation: depends on (seed, width) only, never on the other cells of a sweep."""
    return (seed * 1_000_003 + width * 7919 + 13) % 2**63


def init_cell(dim: int, width: int, ranks: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One cell's initial (W (N, d) with orthonormal rows, D (K, N, r_max) Kaiming-uniform like nn.Linear)."""
    g = torch.Generator().manual_seed(init_seed(seed, width))
    q, r = torch.linalg.qr(torch.randn(dim, width, generator=g, dtype=torch.float64))
    W = (q * torch.sign(torch.diagonal(r))).T  # (N, d), rows orthonormal
    bound = 1.0 / math.sqrt(width)  # nn.Linear's kaiming_uniform_(a=sqrt(5)) bound for fan_in = N
    D = torch.zeros(len(ranks), width, max(ranks), dtype=torch.float64)
    for k, rk in enumerate(ranks):
        D[k, :, :rk] = (torch.rand(width, rk, generator=g, dtype=torch.float64) * 2 - 1) * bound
    return W, D


def _round4(n: int) -> int:
    return -(-n // 4) * 4  # grouped_mm wants 16-byte aligned strides: float32 dims in multiples of 4


class _BlockDiagonal(torch.autograd.Function):
    """Compact decoders D (G, R, r) -> block-diagonal (G, R, cols): row n lands in its own cell's r columns.

    The output is `buffer`, written in place: its off-block entries are zero from allocation and never written, so
    a step writes only the blocks instead of a fresh, mostly-zero tensor. Autograd's version counter guards the
    reuse (a second forward before the first backward raises). Backward gathers the same entries."""

    @staticmethod
    def forward(ctx, D: torch.Tensor, buffer: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, cols)
        ctx.n_rows = D.shape[1]
        buffer[:, rows, cols] = D[:, rows[:, 0]]
        ctx.mark_dirty(buffer)
        return buffer

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        rows, cols = ctx.saved_tensors
        g = grad.new_zeros(grad.shape[0], ctx.n_rows, cols.shape[1])
        g[:, rows[:, 0]] = grad[:, rows, cols]
        return g, None, None, None


def plan_bands(widths: list[int], r_max: int, rows_per_step: int, groups: int) -> list[list[int]]:
    """Split the cells (in order) into contiguous bands, each with its own block-diagonal decoder.

    One block-diagonal for all C cells makes every feature row meet every cell's outputs: C times the decoder
    arithmetic and memory. A band of C_b cells costs C_b instead, but each band is one more grouped_mm (a fixed
    per-group overhead). Dynamic programming over a simple time model picks the split: a few bands at paper scale
    (widths 2..256: 3 bands, 3x less decoder time), one band for small sweeps."""
    flop_s, per_group_s, per_band_s = 50e9, 15e-6, 1e-4  # rough CPU constants; only their ratios matter

    def cost(i: int, j: int) -> float:  # cells i..j-1 as one band
        rows, cols = _round4(sum(widths[i:j])), _round4((j - i) * r_max)
        return 6 * rows_per_step * rows * cols / flop_s + 3 * groups * per_group_s + per_band_s

    C = len(widths)
    best, cut = [0.0] + [math.inf] * C, [0] * (C + 1)
    for j in range(1, C + 1):
        for i in range(j):
            if best[i] + cost(i, j) < best[j]:
                best[j], cut[j] = best[i] + cost(i, j), i
    bands, j = [], C
    while j > 0:
        bands.append(list(range(cut[j], j)))
        j = cut[j]
    return bands[::-1]


class SweepStudent(nn.Module):
    """All cells (seeds x widths) of a sweep. See the module docstring for the layout.

    Cells are grouped into bands (see plan_bands); each band's rows are padded to a multiple of 4 (padding rows
    belong to no cell, start at zero and get zero gradient, so they stay zero)."""

    def __init__(self, dim: int, ranks: list[int], widths: list[int], seeds: list[int],
                 encoder: EncoderKind = EncoderKind.FREE, dtype: torch.dtype = torch.float32,
                 batch_size: int = 64, bands: list[list[int]] | None = None):
        super().__init__()
        self.dim, self.ranks, self.widths, self.seeds, self.kind = dim, list(ranks), list(widths), list(seeds), encoder
        S, K, C, r_max = len(seeds), len(ranks), len(widths), max(ranks)
        self.bands = bands or plan_bands(widths, r_max, S * batch_size, S * K)
        if sorted(c for band in self.bands for c in band) != list(range(C)):
            raise ValueError(f"bands {self.bands} do not partition the {C} cells")
        starts, band_rows, row = [0] * C, [], 0  # row layout: band by band, each padded to a multiple of 4
        for band in self.bands:
            first = row
            for c in band:
                starts[c], row = row, row + widths[c]
            row = first + _round4(row - first)
            band_rows.append((first, row))
        self.starts, self.band_rows, total = starts, band_rows, row
        W = torch.zeros(S, total, dim, dtype=torch.float64)
        D = torch.zeros(S, K, total, r_max, dtype=torch.float64)
        for s, seed in enumerate(seeds):  # initialisation only: each cell from its own generator
            for c, n in enumerate(widths):
                o = starts[c]
                W[s, o:o + n], D[s, :, o:o + n] = init_cell(dim, n, ranks, seed)
        self.encoder = nn.Parameter(W.to(dtype))
        self.decoder = nn.Parameter(D.to(dtype))
        cell_of_row = torch.repeat_interleave(torch.arange(C), torch.tensor(widths))  # real rows, in cell order
        pos_in_cell = torch.cat([torch.arange(n) for n in widths])
        real_rows = torch.tensor(starts)[cell_of_row] + pos_in_cell  # where each real row lives
        row_cell = torch.zeros(total, C, dtype=dtype)  # (rows, C) one-hot; padding rows all zero
        row_cell[real_rows, cell_of_row] = 1
        row_cell_index = row_cell.argmax(1)  # (rows,): each row's cell (padding rows: cell 0; their weights are 0)
        for name, value in [("cell_of_row", cell_of_row), ("pos_in_cell", pos_in_cell), ("real_rows", real_rows),
                            ("row_cell", row_cell), ("row_cell_index", row_cell_index)]:
            self.register_buffer(name, value, persistent=False)
        # per band: block-diagonal layout (band row of real row, output j) -> column (cell's place in band)*r_max + j
        for b, (band, (first, last)) in enumerate(zip(self.bands, band_rows)):
            local_rows = torch.cat([torch.arange(starts[c], starts[c] + widths[c]) for c in band]) - first
            local_cell = torch.repeat_interleave(torch.arange(len(band)), torch.tensor([widths[c] for c in band]))
            self.register_buffer(f"band{b}_rows", local_rows[:, None].expand(-1, r_max).contiguous(),
                                 persistent=False)
            self.register_buffer(f"band{b}_cols", local_cell[:, None] * r_max + torch.arange(r_max),
                                 persistent=False)
            self.register_buffer(f"band{b}_blocks", torch.zeros(S * K, last - first, _round4(len(band) * r_max),
                                                                dtype=dtype), persistent=False)
        order = [c for band in self.bands for c in band]
        self.cell_order = None if order == list(range(C)) else [order.index(c) for c in range(C)]

    @property
    def num_cells(self) -> tuple[int, int]:
        return len(self.seeds), len(self.widths)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """x (S, B, d), offsets (S*K,) group ends of rows sorted by (seed, task) -> predictions (S*B, C, r_max)."""
        S, B, _ = x.shape
        K, r_max = len(self.ranks), max(self.ranks)
        h = torch.bmm(x, self.encoder.transpose(1, 2)).reshape(S * B, -1)  # (S*B, rows): all cells at once
        D = self.decoder.reshape(S * K, -1, r_max)
        outs = []
        for b, (band, (first, last)) in enumerate(zip(self.bands, self.band_rows)):  # a few bands, not cells
            # Block-diagonal decoders: a feature row only feeds its own cell's outputs.
            blocks = _BlockDiagonal.apply(D[:, first:last], getattr(self, f"band{b}_blocks").detach(),
                                          getattr(self, f"band{b}_rows"), getattr(self, f"band{b}_cols"))
            out = grouped_matmul(h[:, first:last], blocks, offsets)  # (S*B, band cols)
            outs.append(out[:, : len(band) * r_max].reshape(S * B, len(band), r_max))
        pred = outs[0] if len(outs) == 1 else torch.cat(outs, 1)  # (S*B, C, r_max) in band order
        return pred if self.cell_order is None else pred[:, self.cell_order]

    def cell_losses(self, pred: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Mean squared error summed over outputs, per cell: (S, C). Its sum is the training objective."""
        S = len(self.seeds)
        sq = (pred - y[:, None, :]).square().sum(-1)  # (S*B, C)
        return sq.view(S, batch_size, -1).mean(1)

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Per-cell gradient clipping (torch.nn.utils.clip_grad_norm_ semantics for each cell). Returns norms (S, C)."""
        g_w, g_d = self.encoder.grad, self.decoder.grad
        row_sq = g_w.square().sum(-1) + g_d.square().sum((1, 3))  # (S, sum_N)
        norms = (row_sq @ self.row_cell).sqrt()  # (S, C)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        per_row = coef @ self.row_cell.T  # (S, sum_N)
        g_w.mul_(per_row[:, :, None])
        g_d.mul_(per_row[:, None, :, None])
        return norms

    @torch.no_grad()
    def retract_(self) -> None:
        """Orthonormal encoder: map each cell's W back onto the Stiefel manifold (rows orthonormal) by QR.

        A retraction rather than torch's orthogonal parametrization: padding every cell to the widest one makes the
        retraction one batched QR for the whole sweep, whereas a parametrization needs one module per cell. QR of
        W^T with the padding columns last leaves each cell's first N_c columns of Q spanning exactly its own rows."""
        S, (C, n_max) = len(self.seeds), (len(self.widths), max(self.widths))
        padded = self.encoder.new_zeros(S, C, n_max, self.dim)
        padded[:, self.cell_of_row, self.pos_in_cell] = self.encoder[:, self.real_rows]
        q, r = torch.linalg.qr(padded.transpose(-1, -2))  # q (S, C, d, n_max)
        sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        q = q * torch.where(sign == 0, torch.ones_like(sign), sign)[..., None, :]  # Q R with diag(R) > 0
        self.encoder[:, self.real_rows] = q.transpose(-1, -2)[:, self.cell_of_row, self.pos_in_cell]

    def cell(self, s: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell (seed index s, width index c): W (N, d) and decoders D (K, N, r_max) (views, detached)."""
        o, n = self.starts[c], self.widths[c]
        return self.encoder.detach()[s, o:o + n], self.decoder.detach()[s, :, o:o + n]


class CellStudent(nn.Module):
    """One cell as a plain module (the naive baseline and the reference the batched sweep is tested against)."""

    def __init__(self, dim: int, ranks: list[int], width: int, seed: int,
                 encoder: EncoderKind = EncoderKind.FREE, dtype: torch.dtype = torch.float32):
        super().__init__()
        W, D = init_cell(dim, width, ranks, seed)
        self.kind, self.ranks = encoder, list(ranks)
        self.encoder = nn.Parameter(W.to(dtype))  # (N, d)
        self.decoder = nn.Parameter(D.to(dtype))  # (K, N, r_max)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """x (B, d), rows grouped by task with group ends `offsets` (K,) -> predictions (B, r_max)."""
        return grouped_matmul(x @ self.encoder.T, self.decoder, offsets)

    @torch.no_grad()
    def retract_(self) -> None:
        q, r = torch.linalg.qr(self.encoder.T)
        self.encoder.copy_((q * torch.sign(torch.diagonal(r))).T)
