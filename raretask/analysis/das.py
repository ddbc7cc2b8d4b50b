"""Distributed alignment search (DAS, Geiger et al. 2023) with pyvene on the LM lab's models (paper App. B.4: a 1-D
"global token order" subspace at TOK1, interchange-intervention accuracy 96%, trained on 1K counterfactual pairs).

Counterfactual pairs (`counterfactual_pairs`): a base instance (b1, b2) and a source whose probed token differs
(TOK1: s1 != b1; TOK2: s2 != b2). The counterfactual label is the task's label of the base with the probed token
replaced, e.g. for TOK1 the label of (s1, b2). Half the pairs change the label and half keep it where the task
allows (comparison: both kinds exist for most bases), so a model whose intervention does nothing scores 1/2 on
them and a faithful intervention scores 1.

Interchange intervention along a learned direction w (unit norm) at one residual layer and position:
h_base <- h_base + (h_source . w - h_base . w) w, i.e. the base keeps everything but its coordinate along w, which
it takes from the source. pyvene's `LowRankRotatedSpaceIntervention` with `low_rank_dimension = 1` is exactly this
(its rotation is an orthogonal-parametrised (d, 1) matrix). The model is frozen; w is trained with cross-entropy of
the counterfactual label over the task's label tokens at the last position, Adam, `steps` minibatches drawn
(seeded) from the training pairs. Interchange-intervention accuracy (IIA) = argmax over the label tokens of the
intervened model == counterfactual label, on held-out pairs (bases from the task's test split).

pyvene and OLMo-core. pyvene's `IntervenableModel` hooks any module named by a `component` path ending in
".output" (`getattr` down the path, ModuleDict keys included), so OLMo-core's `blocks.<i>` and `embeddings` need no
entry in pyvene's `type_to_module_mapping`. It needs three things an OLMo-core Transformer does not have: a
`.config` (read at construction), a `.device`, and a forward taking `input_ids=` as a keyword. `Intervenable`
wraps the model to provide them; the intervention is built here and handed over (`representation.intervention`),
so pyvene never looks up a dimension table for the unknown model type. Two side effects of pyvene are undone:
its construction sets `requires_grad = False` on every model parameter (restored afterwards), and each of its
forwards removes every forward hook of the model (so nothing else may hook the model meanwhile). Its
rotation is initialised from torch's global generator; that happens inside `torch.random.fork_rng` seeded from
`seed`, so results are reproducible and the caller's global RNG state is untouched.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raretask.analysis.activations import task_prompts


def pyvene() -> Any:
    """The pyvene module; its import prints a notice about an optional backend on stdout, kept out of --json."""
    with contextlib.redirect_stdout(io.StringIO()):
        import pyvene as pv
    return pv


class Intervenable(torch.nn.Module):
    """What pyvene expects of a model, around any module whose forward(input_ids) returns logits (n, T, V)."""

    def __init__(self, model: torch.nn.Module, d_model: int):
        super().__init__()
        self.model = model
        self.config = SimpleNamespace(hidden_size=d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)


# ----------------------------------------------------------------------------------------- counterfactual pairs


@dataclass
class Pairs:
    base: torch.Tensor  # (n, P) input ids
    source: torch.Tensor  # (n, P)
    labels: torch.Tensor  # (n,) counterfactual label, an index into the task's label tokens
    changed: np.ndarray  # (n,) bool: the counterfactual label differs from the base's

    def __len__(self) -> int:
        return len(self.labels)


def counterfactual_pairs(task: Any, n: int, bases: np.ndarray, rng: np.random.Generator, *, position: str = "tok1",
                         prefix: np.ndarray = np.zeros(0)) -> Pairs:
    """`n` pairs with base instances drawn from `bases` (instance ids); see the module docstring."""
    from raretask.lm.tasks import NUM_VALUES

    probed = 0 if position == "tok1" else 1
    labels = np.asarray(task.labels).reshape(NUM_VALUES, NUM_VALUES)  # labels[v1, v2]
    base = rng.choice(np.asarray(bases, dtype=np.int64), size=n)
    bv = np.asarray(task.values)[base]  # (n, 2)
    # label of the base with the probed value replaced by each candidate s: (n, 100)
    cand = labels[:, bv[:, 1]].T if probed == 0 else labels[bv[:, 0], :]
    own = cand[np.arange(n), bv[:, probed]]
    want_change = rng.random(n) < 0.5
    allowed = np.ones((n, NUM_VALUES), dtype=bool)
    allowed[np.arange(n), bv[:, probed]] = False
    same, diff = allowed & (cand == own[:, None]), allowed & (cand != own[:, None])
    pick = np.where(want_change[:, None], diff, same)
    pick = np.where(pick.any(1, keepdims=True), pick, allowed)  # only one kind exists for this base: take any
    weights = pick / pick.sum(1, keepdims=True)
    s = (weights.cumsum(1) > rng.random(n)[:, None]).argmax(1)  # one allowed value per row, uniformly
    other = rng.integers(NUM_VALUES, size=n)  # the source's other token: any value
    src_vals = np.stack([s, other] if probed == 0 else [other, s], axis=1)
    source = src_vals[:, 0] * NUM_VALUES + src_vals[:, 1]
    cf = cand[np.arange(n), s]
    return Pairs(task_prompts(task, base, prefix), task_prompts(task, source, prefix),
                 torch.from_numpy(cf.astype(np.int64)), cf != own)


# ------------------------------------------------------------------------------------------------------- search


@dataclass
class DasFit:
    layer: int
    module: str
    iia: float  # on the held-out pairs
    iia_train: float
    no_intervention: float  # the un-intervened model's accuracy on the held-out counterfactual labels
    loss: float  # final training cross-entropy (mean over the last 10 minibatches)
    direction: np.ndarray  # (d,) unit vector w


def label_logits(logits: Any, label_set: torch.Tensor) -> torch.Tensor:
    """(n, m) logits of the label tokens at the last position."""
    return logits[:, -1, label_set.to(logits.device)].float()


def das_layer(model: torch.nn.Module, module: str, d_model: int, train: Pairs, test: Pairs, label_set: torch.Tensor,
              position: int, *, steps: int = 300, batch: int = 64, lr: float = 1e-2, seed: int = 0,
              layer: int = -1, eval_batch: int = 512) -> DasFit:
    """Train a 1-D interchange intervention at `module`'s output, sequence `position`, on `train`; score on `test`."""
    pv = pyvene()
    grads = [p.requires_grad for p in model.parameters()]
    wrapped = Intervenable(model, d_model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        intervention = pv.LowRankRotatedSpaceIntervention(embed_dim=d_model, low_rank_dimension=1)
    config = pv.IntervenableConfig(representations=[{"component": f"model.{module}.output", "unit": "pos",
                                                     "max_number_of_units": 1, "intervention": intervention}])
    device = wrapped.device
    try:
        iv = pv.IntervenableModel(config, wrapped)
        intervention.to(device)

        def run(idx: np.ndarray | slice, pairs: Pairs) -> torch.Tensor:
            _, out = iv({"input_ids": pairs.base[idx].to(device)}, [{"input_ids": pairs.source[idx].to(device)}],
                        {"sources->base": position})
            return label_logits(out, label_set)

        optimiser = torch.optim.Adam(intervention.parameters(), lr=lr)
        g = np.random.default_rng([seed, 0xDA5])
        losses = []
        for _ in range(steps):
            idx = g.choice(len(train), size=min(batch, len(train)), replace=False)
            loss = F.cross_entropy(run(idx, train), train.labels[idx].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())

        @torch.no_grad()
        def accuracy(pairs: Pairs, intervene: bool) -> float:
            hits = 0
            for i in range(0, len(pairs), eval_batch):
                sl = slice(i, i + eval_batch)
                logits = run(sl, pairs) if intervene else label_logits(wrapped(pairs.base[sl].to(device)), label_set)
                hits += int((logits.argmax(-1).cpu() == pairs.labels[sl]).sum())
            return hits / max(len(pairs), 1)

        direction = intervention.rotate_layer.weight.detach().cpu().double().numpy()[:, 0]
        return DasFit(layer=layer, module=module, iia=accuracy(test, True), iia_train=accuracy(train, True),
                      no_intervention=accuracy(test, False), loss=float(np.mean(losses[-10:])) if losses else
                      float("nan"), direction=direction / np.linalg.norm(direction))
    finally:
        for p, g_ in zip(model.parameters(), grads):
            p.requires_grad_(g_)
