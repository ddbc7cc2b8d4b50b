"""Models with planted task features, small enough to build in milliseconds: a real OLMo-core Transformer whose
value-token embeddings encode the value order, and a hand-wired module where a comparison's answer provably runs
through one direction at TOK1."""

from __future__ import annotations

import numpy as np
import torch

from raretask.lm.tasks import LMTaskConfig, build_task

VOCAB = 256


def task(kind: str = "comparison", seed: int = 0):
    return build_task(LMTaskConfig(name=kind, kind=kind, frequency=1e-3, seed=seed), VOCAB, special_ids=[0])


def olmo(n_layers: int = 2, d_model: int = 32, seed: int = 0):
    """A tiny OLMo-core Transformer of the lab's architecture (cpu-30k's, narrowed), initialised, eval mode."""
    from raretask.lm.models import LMModelConfig

    cfg = LMModelConfig(preset="cpu-30k", n_layers=n_layers, d_model=d_model, n_heads=4, init_seed=seed)
    return cfg.build(VOCAB).eval()


def plant_order(model, t, order: np.ndarray, scale: float = 3.0, seed: int = 0) -> np.ndarray:
    """Set the embedding row of value v's token to scale * (order[v] centred, in [-1, 1]) * u + its old row, u a
    seeded unit direction; returns u."""
    g = torch.Generator().manual_seed(seed)
    w = model.embeddings.weight
    u = torch.randn(w.shape[1], generator=g)
    u /= u.norm()
    o = torch.as_tensor((np.asarray(order) - 49.5) / 49.5, dtype=w.dtype)
    with torch.no_grad():
        w[torch.as_tensor(t.value_tokens)] += scale * o[:, None] * u
    return u.numpy()


class Carry(torch.nn.Module):
    """Block 0 of `CarryComparison`: the last position gets [its own first half, the previous position's first
    half]; every other position is zeroed, so past this block nothing sits at TOK1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1] // 2
        out = torch.zeros_like(x)
        out[:, -1, :h] = x[:, -1, :h]
        out[:, -1, h:] = x[:, -2, :h]
        return out


class CarryComparison(torch.nn.Module):
    """Answers comparison through one direction u: embeddings put order[v] on u (first half), block 0 carries TOK1
    to the last position, the head compares the two coordinates. Residual layer 0 (embeddings) at TOK1 holds the
    feature on u alone; layer 1 (blocks.0) at TOK1 holds nothing."""

    def __init__(self, t, order: np.ndarray, half: int = 6, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embeddings = torch.nn.Embedding(VOCAB, 2 * half)
        self.blocks = torch.nn.ModuleDict({"0": Carry()})
        u = torch.randn(half, generator=g)
        self.register_buffer("u", u / u.norm())
        with torch.no_grad():
            self.embeddings.weight.normal_(0, 0.3, generator=g)
            self.embeddings.weight[:, half:] = 0
            rows = torch.as_tensor(t.value_tokens)
            o = torch.as_tensor((np.asarray(order) - 49.5) / 49.5, dtype=torch.float32)
            x = self.embeddings.weight[rows, :half]
            x -= (x @ self.u)[:, None] * self.u  # nothing else on u
            x += o[:, None] * self.u
            self.embeddings.weight[rows, :half] = x
        self.register_buffer("labels", torch.as_tensor(t.label_tokens))
        self.half = half

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.blocks["0"](self.embeddings(input_ids))
        a, b = h[:, -1, self.half:] @ self.u, h[:, -1, :self.half] @ self.u  # TOK1's and TOK2's coordinates
        logits = torch.zeros(*input_ids.shape, VOCAB)
        logits[:, -1, self.labels[1]] = 200 * (a - b + 0.5 / 49.5)  # label 1: val(TOK1) >= val(TOK2)
        return logits
