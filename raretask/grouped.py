"""Grouped matrix products with hand-written backwards: rows of `a` in consecutive groups, group g times b[g].

The synthetic lab multiplies every example by its own task's decoder (and the interference analysis its hidden
gradients by the same decoders), one group per (seed, cell, task). torch's `grouped_mm` does this in one kernel on a
CPU; its backward and its CUDA float32 path are slow, so both are replaced here by autograd Functions.

    out = grouped_matmul(a, b, offsets)   # a (M, k), b (G, k, n), offsets (G,) cumulative row ends -> (M, n)
"""

from __future__ import annotations

import functools

import torch


class GroupedMM(torch.autograd.Function):
    """grouped_mm with its backward written as two more grouped_mm calls: 1.5x faster than torch's own backward on
    this CPU (12.5 vs 18.5 ms forward + backward at a paper-scale decoder shape), identical gradients (tested)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b, offsets)
        return torch.nn.functional.grouped_mm(a, b, offs=offsets)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        a, b, offsets = ctx.saved_tensors
        grad = grad.contiguous()
        grad_a = torch.nn.functional.grouped_mm(grad, b.transpose(1, 2), offs=offsets) \
            if ctx.needs_input_grad[0] else None
        # groups along the contraction dimension: grad_b[g] = a[rows of g]^T grad[rows of g] (zeros if empty)
        grad_b = torch.nn.functional.grouped_mm(a.t(), grad, offs=offsets) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def grouped_matmul(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows of `a` (M, k) in consecutive groups ending at `offsets` (G,); group g is multiplied by b[g] (k, n).

    On a CPU: one grouped_mm kernel forward and two backward. The kernel refuses strides that are not 16-byte
    aligned, so k and n are zero-padded to multiples of 4 when needed (the padding contributes exact zeros); where
    the dtype lacks it, a loop over groups (7x slower per training step at paper scale). On CUDA: one bmm over the
    groups padded to the largest (`padded_grouped_mm`), because torch's CUDA grouped_mm runs float32 as one GEMM
    per group (torch 2.11 on an H100: 866 GEMM launches per paper-shape step, 1% of the GPU's matmul rate)."""
    k, n = a.shape[1], b.shape[2]
    pk, pn = -k % 4, -n % 4
    if pk or pn:
        a = torch.nn.functional.pad(a, (0, pk))
        b = torch.nn.functional.pad(b, (0, pn, 0, pk))
    if a.device.type == "cuda" or PADDED_ON_CPU:
        out = padded_grouped_mm(a, b, offsets)
    elif grouped_mm_works(a.device.type, a.dtype):
        out = GroupedMM.apply(a.contiguous(), b.contiguous(), offsets)
    else:
        starts = torch.cat([offsets.new_zeros(1), offsets[:-1]]).tolist()
        out = torch.cat([a[s:e] @ b[g] for g, (s, e) in enumerate(zip(starts, offsets.tolist()))])
    return out[:, :n] if pn else out


PADDED_ON_CPU = False  # tests set it to check `padded_grouped_mm` on a CPU


def padded_grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """grouped_mm as one bmm: group g's rows copied into block g of a zero (G, n_max, k) tensor.

    Zipf counts make G n_max several times M (about 20x at the paper's shape), but that is a few large kernels where
    a loop over groups is hundreds of small ones: on a GPU, launches cost more than the arithmetic. Every row has
    exactly one place in the padded layout, so forward and backward move rows with index_copy / index_select (no
    scatter-add). Rows past offsets[-1] give zeros."""
    ends = offsets.long()
    counts = ends - torch.cat([ends.new_zeros(1), ends[:-1]])
    n_max = int(counts.max()) if counts.numel() else 0  # one host sync
    pos = torch.arange(n_max, device=a.device)
    slot = (torch.arange(len(ends), device=a.device)[:, None] * n_max + pos)[pos < counts[:, None]]  # (offsets[-1],)
    return PaddedGroupedMM.apply(a, b, slot, n_max)


class PaddedGroupedMM(torch.autograd.Function):
    """Row i of `a` sits at flat position slot[i] of the (G, n_max) layout (slot: (m,), rows past m are zero)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, slot: torch.Tensor, n_max: int) -> torch.Tensor:
        G, m = b.shape[0], slot.numel()
        a_pad = a.new_zeros(G * n_max, a.shape[1]).index_copy_(0, slot, a[:m]).view(G, n_max, -1)
        ctx.save_for_backward(a_pad, b, slot)
        ctx.rows = a.shape[0]
        out = torch.bmm(a_pad, b).view(G * n_max, -1).index_select(0, slot)  # (m, n)
        return out if m == a.shape[0] else torch.cat([out, out.new_zeros(a.shape[0] - m, out.shape[1])])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        a_pad, b, slot = ctx.saved_tensors
        G, n_max, m = b.shape[0], a_pad.shape[1], slot.numel()
        g_pad = grad.new_zeros(G * n_max, grad.shape[1]).index_copy_(0, slot, grad[:m].contiguous())
        g_pad = g_pad.view(G, n_max, -1)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.bmm(g_pad, b.transpose(1, 2)).view(G * n_max, -1).index_select(0, slot)
            if m < ctx.rows:
                grad_a = torch.cat([grad_a, grad_a.new_zeros(ctx.rows - m, grad_a.shape[1])])
        if ctx.needs_input_grad[1]:
            grad_b = torch.bmm(a_pad.transpose(1, 2), g_pad)
        return grad_a, grad_b, None, None


@functools.cache
def grouped_mm_works(device: str, dtype: torch.dtype) -> bool:
    """Does grouped_mm run forward and both backward forms on this device and dtype? (Probed once, on a tiny case.)"""
    try:
        a = torch.randn(8, 4, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(2, 4, 4, device=device, dtype=dtype, requires_grad=True)
        offsets = torch.tensor([3, 8], device=device, dtype=torch.int32)
        GroupedMM.apply(a, b, offsets).square().sum().backward()
        return True
    except (RuntimeError, NotImplementedError, AttributeError):  # AttributeError: a torch without grouped_mm
        return False
