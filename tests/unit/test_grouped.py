"""Grouped matrix products (raretask.grouped) against a per-group loop, for every way they can run."""

from __future__ import annotations

import pytest
import torch

from raretask import grouped as m
from raretask.grouped import grouped_matmul


@pytest.mark.parametrize("way", ["kernel", "padded", "loop"])
@pytest.mark.parametrize("k,n,ends", [(8, 4, [3, 3, 10, 16]), (8, 3, [0, 5, 16, 16]), (5, 7, [16, 16, 16, 16])])
def test_grouped_matmul_matches_loop(monkeypatch, way, k, n, ends):
    """Forward and gradients equal a per-group loop, for torch's kernel (unaligned sizes padded) and both fallbacks
    (padded bmm, as on CUDA; loop); empty groups included."""
    monkeypatch.setattr(m, "grouped_mm_works", lambda device, dtype: way == "kernel")
    monkeypatch.setattr(m, "PADDED_ON_CPU", way == "padded")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, k, generator=g, requires_grad=True)  # float32: the kernel has no float64
    b = torch.randn(len(ends), k, n, generator=g, requires_grad=True)
    w = torch.randn(16, n, generator=g)
    out = grouped_matmul(a, b, torch.tensor(ends, dtype=torch.int32))
    (out * w).sum().backward()
    starts = [0] + ends[:-1]
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    expected = torch.cat([a2[s:e] @ b2[i] for i, (s, e) in enumerate(zip(starts, ends))])
    (expected * w).sum().backward()
    assert out.shape == (16, n)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)  # zero for empty groups
