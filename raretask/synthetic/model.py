"""The student of Sec. 3: a shared width-N linear encoder and per-task linear decoders, y^_k = D_k (W x).

`SweepStudent` holds every (seed, width) cell of a sweep in one set of tensors so a training step is a handful of
kernels whatever the number of cells:

  encoder  W    (S, rows, d)          the cells' encoders stacked along rows: cell c owns rows [o_c, o_c + N_c)
  decoder  D    (S, K, rows, r_max)   compact: D[s, k, rows of c] is cell c's decoder for task k, transposed
  (rows = sum_N rounded up to a multiple of 4)

Forward: h = x W^T for all cells at once (one bmm), then every (seed, task) group of rows meets a block-diagonal
decoder (one grouped_mm), giving each cell's prediction. Cells share no parameters and the loss is a sum of cell
losses, so each cell's gradient is its own; Adam is element-wise and gradient clipping is done per cell, so the
batched sweep trains every cell exactly as if it were alone (tests compare against `CellStudent`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from raretask.config import StrEnum
from raretask.synthetic.mixture import grouped_matmul


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
        ctx.n_real = rows.shape[0]
        buffer[:, rows, cols] = D[:, : ctx.n_real]
        ctx.mark_dirty(buffer)
        return buffer

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        rows, cols = ctx.saved_tensors
        g = grad.new_zeros(grad.shape[0], grad.shape[1], cols.shape[1])
        g[:, : ctx.n_real] = grad[:, rows, cols]
        return g, None, None, None


class SweepStudent(nn.Module):
    """All cells (seeds x widths) of a sweep. See the module docstring for the layout.

    Rows are padded to a multiple of 4 (padding rows belong to no cell, start at zero and get zero gradient)."""

    def __init__(self, dim: int, ranks: list[int], widths: list[int], seeds: list[int],
                 encoder: EncoderKind = EncoderKind.FREE, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dim, self.ranks, self.widths, self.seeds, self.kind = dim, list(ranks), list(widths), list(seeds), encoder
        S, K, C, total, r_max = len(seeds), len(ranks), len(widths), sum(widths), max(ranks)
        W = torch.zeros(S, _round4(total), dim, dtype=torch.float64)
        D = torch.zeros(S, K, _round4(total), r_max, dtype=torch.float64)
        for s, seed in enumerate(seeds):  # initialisation only: each cell from its own generator
            for c, n in enumerate(widths):
                o = sum(widths[:c])
                W[s, o:o + n], D[s, :, o:o + n] = init_cell(dim, n, ranks, seed)
        self.encoder = nn.Parameter(W.to(dtype))
        self.decoder = nn.Parameter(D.to(dtype))
        cell_of_row = torch.repeat_interleave(torch.arange(C), torch.tensor(widths))  # (sum_N,) real rows only
        row_cell = torch.zeros(_round4(total), C, dtype=dtype)  # (rows, C) one-hot; padding rows all zero
        row_cell[torch.arange(total), cell_of_row] = 1
        self.register_buffer("cell_of_row", cell_of_row, persistent=False)
        self.register_buffer("row_cell", row_cell, persistent=False)
        starts = torch.tensor([sum(widths[:c]) for c in range(C)])
        self.register_buffer("pos_in_cell", torch.arange(total) - starts[cell_of_row], persistent=False)
        # block-diagonal decoder layout: row n, output j -> column c(n) * r_max + j
        self.register_buffer("block_rows", torch.arange(total)[:, None].expand(total, r_max), persistent=False)
        self.register_buffer("block_cols", cell_of_row[:, None] * r_max + torch.arange(r_max), persistent=False)
        self.register_buffer("blocks", torch.zeros(S * K, _round4(total), _round4(C * r_max), dtype=dtype),
                             persistent=False)

    @property
    def num_cells(self) -> tuple[int, int]:
        return len(self.seeds), len(self.widths)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """x (S, B, d), offsets (S*K,) group ends of rows sorted by (seed, task) -> predictions (S*B, C, r_max)."""
        S, B, _ = x.shape
        K, C, r_max = len(self.ranks), len(self.widths), max(self.ranks)
        h = torch.bmm(x, self.encoder.transpose(1, 2))  # (S, B, rows): every cell's features at once
        # Block-diagonal decoders: row n of the stacked features only feeds its own cell's outputs.
        blocks = _BlockDiagonal.apply(self.decoder.reshape(S * K, -1, r_max), self.blocks.detach(), self.block_rows,
                                      self.block_cols)  # (S*K, rows, cols)
        out = grouped_matmul(h.reshape(S * B, -1), blocks, offsets)  # (S*B, cols)
        return out[:, : C * r_max].view(S * B, C, r_max)

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
        padded[:, self.cell_of_row, self.pos_in_cell] = self.encoder[:, : len(self.cell_of_row)]
        q, r = torch.linalg.qr(padded.transpose(-1, -2))  # q (S, C, d, n_max)
        sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        q = q * torch.where(sign == 0, torch.ones_like(sign), sign)[..., None, :]  # Q R with diag(R) > 0
        self.encoder[:, : len(self.cell_of_row)] = q.transpose(-1, -2)[:, self.cell_of_row, self.pos_in_cell]

    def cell(self, s: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell (seed index s, width index c): W (N, d) and decoders D (K, N, r_max) (views, detached)."""
        o, n = sum(self.widths[:c]), self.widths[c]
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
