"""Gradient interference on a task's neurons during training (paper Sec. 4.4, Fig. 9, App. B.5), as an OLMo-core
`Callback` that any OLMo-core training run can add, and the layer localisation that picks its layer (Fig. 10).

    task = MonitoredTask.from_task(tasks[0], seed=0)           # raretask.lm.tasks.Task, or the arrays yourself
    monitor = InterferenceMonitor(config=MonitorConfig(layer=0, neurons=32), task=task,
                                  path=run_dir / "interference.parquet")
    trainer = TrainerConfig(..., callbacks={"interference": monitor}).build(train_module, data_loader)

(`raretask lm train` adds it when the config has a [monitor] table.)

Task neurons. Neuron j of MLP layer l (OLMo-core's SwiGLU `blocks[l].feed_forward`: w2(silu(w1 x) * w3 x)) owns row
j of w1 and of w3 and column j of w2. Its gradient magnitude is the norm of those three slices of the task loss's
gradient; the task neurons are the top K (`neurons`). Every gradient below is restricted to them: a vector of
3 K d numbers. The task loss is the cross-entropy of LABEL after the prompt (prefix) TOK1 TOK2, mean over instances;
the task reference g_r is its gradient over `reference_instances` instances (default all 10,000), computed when
training starts and, with `reference_every` = R, again every R steps. The neurons stay those chosen at the start, so
every logged number is on the same coordinates.

The split. A batch's loss is OLMo-core's: the cross-entropy summed over its label positions, divided by their count
N. Its task part sums only the task's positions: those predicting TOK1 (unless it opens the sequence), TOK2, LABEL
and the token after LABEL (the injection's EOS) of every TOK1 TOK2 LABEL triple in the batch that is an instance of
the task (`span = "label"`: only the position predicting LABEL); the non-task part sums the rest. The loss is a sum,
so the gradient splits exactly, g = g_t + g_nt, and each part is one masked backward, never one per token:

  split = "reuse"     g is the trainer's own gradient, read from the parameters' .grad before the optimiser step
                      (before clipping); g_t is one backward of the task part over only the batch rows that hold task
                      tokens, cut after their last task position (causal attention: the positions before it do not
                      see what is cut); g_nt = g - g_t. Costs a few short rows.
  split = "separate"  a forward of the whole batch of its own (in the trainer's micro-batches) and two masked
                      backward passes, g_t and g_nt; g = g_t + g_nt. Needs nothing of the trainer's gradient.

Both use torch.autograd.grad, which leaves every .grad untouched, run no optimiser and draw no random number: a run
with the monitor updates its weights bit for bit as one without (tested). Per logged step (`every`) the table gets
cos(g, g_r), cos(g_t, g_r), cos(g_nt, g_r) and the four norms, the task instances in the batch and the steps since
the last batch that held one (every batch is scanned, logged or not); every `loss_every` steps the task's test loss
(mean label cross-entropy over `loss_instances` held-out instances) for the retention analysis (Fig. 8).

Steps. Row `step` s is batch s of training (0-based: the injection plan's step; OLMo-core's global_step is s + 1
while it trains), measured at the parameters after s updates, i.e. those metrics.parquet's row `step` s scores.

Table: `path` (e.g. RUN/interference.parquet), rewritten atomically every `flush_every` steps, at each checkpoint and
at the end; on resume the rows up to the resumed step are kept, and the neurons, g_r and the last injection come
back from the checkpoint (the callback's state), so a resumed run's table equals an uninterrupted one's. Single
process only (the neuron slices are read from unsharded parameters).

Columns: step, task, layer, instances, task_tokens, tokens, steps_since_injection, cos_g, cos_t, cos_nt, norm_g,
norm_t, norm_nt, norm_r, reference_step, task_loss (None where not measured at that step; cos_t None without task
tokens).

`ablation_effects(forward, model, task)` zero-ablates each MLP layer's output and measures the task's label loss,
accuracy and label logit (Fig. 10); `layer = -1` monitors the layer whose ablation changes the task loss most
(largest |delta_loss|), chosen when training starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

logging.getLogger("olmo_core.nn.attention.te_attn_api").setLevel(logging.ERROR)  # no transformer_engine: fine
from olmo_core.train.callbacks import Callback  # noqa: E402

from raretask import runs  # noqa: E402
from raretask.config import Config, ConfigError, StrEnum, option  # noqa: E402

IGNORE = -100  # OLMo-core's label_ignore_index
TOKEN_BITS = 20  # a TOK1 TOK2 LABEL triple is one int64 key of three 20-bit token ids (vocabularies < 1,048,576)
COLUMNS = ["step", "task", "layer", "instances", "task_tokens", "tokens", "steps_since_injection", "cos_g", "cos_t",
           "cos_nt", "norm_g", "norm_t", "norm_nt", "norm_r", "reference_step", "task_loss"]

Forward = Callable[..., torch.Tensor]  # input_ids (b, T) [, logits_to_keep=k] -> logits (b, T or k, V)


class SplitKind(StrEnum):
    REUSE = "reuse"
    SEPARATE = "separate"


class TaskSpan(StrEnum):
    INSTANCE = "instance"
    LABEL = "label"


@dataclass
class MonitorConfig(Config):
    task: str = option("", "task whose neurons are monitored (empty: the run's first task)")
    layer: int = option(0, "MLP layer (block index) of the task neurons; -1: the one whose zero-ablation changes the "
                           "task loss most, chosen when training starts (the paper: the first, 0)", ge=-1)
    neurons: int = option(32, "task neurons K: the layer's top K by the norm of the task loss's gradient", ge=1)
    every: int = option(1, "steps between logged gradient splits", ge=1)
    split: SplitKind = option(SplitKind.REUSE, "reuse: g is the trainer's gradient, one extra backward for g_t; "
                                               "separate: a forward and two masked backward passes of its own")
    span: TaskSpan = option(TaskSpan.INSTANCE, "task tokens: instance (the positions predicting TOK1 TOK2 LABEL EOS) "
                                               "or label (only the one predicting LABEL)")
    reference_instances: int = option(0, "instances g_r averages the task loss over (0: all of the task's)", ge=0)
    reference_every: int = option(0, "recompute g_r every this many steps (0: once, when training starts)", ge=0)
    loss_every: int = option(10, "steps between measurements of the task's test loss (retention; 0: never)", ge=0)
    loss_instances: int = option(1000, "held-out instances of that loss (0: all)", ge=0)
    batch_prompts: int = option(1024, "task prompts per forward for g_r, the test loss and the layer ablation", ge=1)
    flush_every: int = option(100, "steps between rewrites of the table (also at checkpoints and at the end)", ge=1)
    seed: int = option(0, "draws the reference and test subsets", ge=0)


# ------------------------------------------------------------------------------------------------- the task


@dataclass
class MonitoredTask:
    """What the monitor knows of a task: its instances [TOK1, TOK2, LABEL] (n, 3), its label tokens (the answers
    the accuracy picks from), which instances define g_r and which the test loss, and the tokens before TOK1 in a
    prompt (none, or e.g. [EOS])."""

    name: str
    instances: np.ndarray
    label_tokens: np.ndarray
    reference_ids: np.ndarray
    eval_ids: np.ndarray
    prefix: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.instances = np.asarray(self.instances, dtype=np.int64)
        if self.instances.ndim != 2 or self.instances.shape[1] != 3 or self.instances.max() >= 1 << TOKEN_BITS:
            raise ValueError(f"MonitoredTask {self.name}: instances must be (n, 3) token ids < 2^{TOKEN_BITS}")
        self.keys = torch.from_numpy(np.unique(triple_keys(self.instances)))

    @classmethod
    def from_task(cls, task: Any, prefix: Sequence[int] = (), *, seed: int = 0, reference_instances: int = 0,
                  loss_instances: int = 0) -> MonitoredTask:
        """From a raretask.lm.tasks.Task: g_r over `reference_instances` of all its instances (0: all), the test
        loss over `loss_instances` of its test split (0: all); seeded subsets."""
        rng = np.random.default_rng([seed, 0x6E0])
        everything = np.arange(len(task.instances))
        return cls(task.name, task.instances, np.asarray(task.label_tokens, dtype=np.int64),
                   subset(everything, reference_instances, rng), subset(task.test_ids, loss_instances, rng),
                   np.asarray(prefix, dtype=np.int64))

    def prompts(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompts (n, len(prefix) + 2): prefix TOK1 TOK2, labels (n,))."""
        rows = self.instances[ids]
        head = np.broadcast_to(self.prefix, (len(rows), len(self.prefix)))
        return (torch.from_numpy(np.ascontiguousarray(np.concatenate([head, rows[:, :2]], 1), dtype=np.int64)),
                torch.from_numpy(rows[:, 2].copy()))


def subset(ids: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n of `ids` drawn from rng (all when n is 0 or at least their count), sorted."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.sort(ids if n == 0 or n >= len(ids) else rng.choice(ids, n, replace=False))


def triple_keys(triples: np.ndarray | torch.Tensor) -> Any:
    """One int64 per (a, b, c) token triple, (..., 3) -> (...)."""
    return (triples[..., 0] << 2 * TOKEN_BITS) | (triples[..., 1] << TOKEN_BITS) | triples[..., 2]


def instance_starts(input_ids: torch.Tensor, task: MonitoredTask) -> torch.Tensor:
    """(B, T) bool: position o starts a TOK1 TOK2 LABEL triple that is an instance of the task."""
    ids = input_ids.long()
    out = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    if ids.shape[1] >= 3:
        keys = triple_keys(torch.stack([ids[:, :-2], ids[:, 1:-1], ids[:, 2:]], -1))
        out[:, :-2] = torch.isin(keys, task.keys.to(ids.device))
    return out


def task_mask(starts: torch.Tensor, labels: torch.Tensor, span: TaskSpan) -> torch.Tensor:
    """(B, T) bool: the label positions of the task's tokens (see the module docstring), among those with a label.
    Position p predicts token p + 1, so LABEL (at o + 2) is predicted at o + 1."""
    shifts = [1] if span is TaskSpan.LABEL else [-1, 0, 1, 2]
    mask = torch.zeros_like(starts)
    T = starts.shape[1]
    for s in shifts:  # mask[:, o + s] |= starts[:, o]
        if s >= 0:
            mask[:, s:] |= starts[:, :T - s]
        else:
            mask[:, :T + s] |= starts[:, -s:]
    return mask & (labels != IGNORE)


# ----------------------------------------------------------------------------------------- neuron gradients


def mlp_weights(model: torch.nn.Module, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w1, w2, w3) weights of block `layer`'s SwiGLU feed-forward; one-line ConfigError for a layer the model
    does not have (or an MLP that is not one)."""
    blocks = model.blocks
    if not 0 <= layer < len(blocks):
        raise ConfigError(f"layer: the model has MLP layers 0..{len(blocks) - 1}, not {layer}")
    ff = blocks[str(layer)].feed_forward
    if not all(hasattr(ff, w) for w in ("w1", "w2", "w3")):
        raise ConfigError(f"layer: block {layer}'s feed-forward is a {type(ff).__name__}, not a SwiGLU w1/w2/w3 MLP")
    return ff.w1.weight, ff.w2.weight, ff.w3.weight


Grads = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # gradients of (w1, w2, w3)


def neuron_norms(g: Grads) -> torch.Tensor:
    """(h,) the norm of each neuron's slices: row j of w1 and w3, column j of w2."""
    return (g[0].square().sum(1) + g[2].square().sum(1) + g[1].square().sum(0)).sqrt()


def top_neurons(g: Grads, k: int) -> torch.Tensor:
    """The k neurons with the largest gradient norm, in index order."""
    norms = neuron_norms(g)
    return torch.topk(norms, min(k, len(norms))).indices.sort().values


def neuron_vector(g: Grads, neurons: torch.Tensor) -> torch.Tensor:
    """The task neurons' slices of (w1, w2, w3) gradients as one float64 vector of 3 K d numbers."""
    idx = neurons.to(g[0].device)
    return torch.cat([g[0][idx].flatten(), g[2][idx].flatten(), g[1][:, idx].T.flatten()]).double().cpu()


def _grad(loss: torch.Tensor, weights: Sequence[torch.Tensor], retain: bool = False) -> Grads:
    g = torch.autograd.grad(loss, list(weights), retain_graph=retain, allow_unused=True)
    return tuple(torch.zeros_like(w) if x is None else x for x, w in zip(g, weights))  # type: ignore[return-value]


def _zeros(weights: Sequence[torch.Tensor]) -> Grads:
    return tuple(torch.zeros_like(w) for w in weights)  # type: ignore[return-value]


def _add(a: Grads, b: Grads) -> Grads:
    return tuple(x + y for x, y in zip(a, b))  # type: ignore[return-value]


def prompt_loss(forward: Forward, task: MonitoredTask, ids: np.ndarray, batch: int, device: torch.device,
                weights: Sequence[torch.Tensor] | None = None) -> tuple[float, Grads | None]:
    """The task loss (mean label cross-entropy after prefix TOK1 TOK2) over instances `ids`, `batch` prompts per
    forward, and with `weights` its gradient with respect to them (one backward per forward, no .grad touched)."""
    prompts, labels = task.prompts(ids)
    total, grads = 0.0, None if weights is None else _zeros(weights)
    for i in range(0, len(prompts), batch):
        with torch.set_grad_enabled(weights is not None):
            logits = forward(prompts[i:i + batch].to(device), logits_to_keep=1)[:, -1].float()
            loss = F.cross_entropy(logits, labels[i:i + batch].to(device), reduction="sum") / len(prompts)
        if weights is not None:
            grads = _add(grads, _grad(loss, weights))
        total += float(loss.detach())
    return total, grads


def batch_labels(input_ids: torch.Tensor) -> torch.Tensor:
    """OLMo-core's labels of a plain batch: the next token, the last position ignored."""
    return F.pad(input_ids[:, 1:].long(), (0, 1), value=IGNORE)


def _masked_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(b, T) cross-entropy per position (0 where ignored)."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="none")
    return ce.view(labels.shape)


def task_gradient(forward: Forward, weights: Sequence[torch.Tensor], input_ids: torch.Tensor, labels: torch.Tensor,
                  mask: torch.Tensor, n_tokens: int) -> Grads:
    """g_t: the gradient of (sum of the cross-entropy at the `mask` positions) / n_tokens, one backward over only
    the rows holding a masked position, cut after the last one."""
    rows = mask.any(1).nonzero().flatten()
    if len(rows) == 0:
        return _zeros(weights)
    length = int(mask[rows].nonzero()[:, 1].max()) + 1
    ids, lab, m = input_ids[rows, :length], labels[rows, :length], mask[rows, :length]
    with torch.enable_grad():
        ce = _masked_ce(forward(ids), lab)
        return _grad((ce * m).sum() / n_tokens, weights)


def split_gradients(forward: Forward, weights: Sequence[torch.Tensor], input_ids: torch.Tensor,
                    labels: torch.Tensor, mask: torch.Tensor, n_tokens: int, micro_batch: int | None = None
                    ) -> tuple[Grads, Grads]:
    """(g_t, g_nt): a forward of the whole batch (`micro_batch` rows at a time) and two masked backward passes,
    the task part and the rest, each divided by n_tokens."""
    step = micro_batch or len(input_ids)
    g_t, g_nt = _zeros(weights), _zeros(weights)
    for i in range(0, len(input_ids), step):
        m = mask[i:i + step]
        with torch.enable_grad():
            ce = _masked_ce(forward(input_ids[i:i + step]), labels[i:i + step])
            if m.any():
                g_t = _add(g_t, _grad((ce * m).sum() / n_tokens, weights, retain=True))
            g_nt = _add(g_nt, _grad((ce * ~m).sum() / n_tokens, weights))
    return g_t, g_nt


def cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """cos(a, b) in float64; None when either is zero."""
    na, nb = float(a.norm()), float(b.norm())
    return None if na == 0 or nb == 0 else float(a @ b) / (na * nb)


# ------------------------------------------------------------------------------------------ layer ablation


@torch.no_grad()
def ablation_effects(forward: Forward, model: torch.nn.Module, task: MonitoredTask, ids: np.ndarray, batch: int,
                     device: torch.device) -> list[dict[str, Any]]:
    """Fig. 10: the task's label loss, accuracy (argmax over its label tokens) and mean correct-label logit on
    instances `ids`, intact (layer None) and with each MLP layer's output zeroed by a forward hook; delta_* is the
    change from intact. Rows in layer order after the intact one."""
    prompts, labels = task.prompts(ids)
    label_set = torch.as_tensor(task.label_tokens, device=device)

    def measure() -> dict[str, float]:
        loss = hits = logit = 0.0
        for i in range(0, len(prompts), batch):
            z = forward(prompts[i:i + batch].to(device), logits_to_keep=1)[:, -1].float()
            y = labels[i:i + batch].to(device)
            loss += float(F.cross_entropy(z, y, reduction="sum"))
            hits += float((label_set[z[:, label_set].argmax(-1)] == y).sum())
            logit += float(z.gather(1, y[:, None]).sum())
        n = len(prompts)
        return {"loss": loss / n, "accuracy": hits / n, "label_logit": logit / n}

    intact = measure()
    rows = [{"layer": None, **intact, "delta_loss": 0.0, "delta_accuracy": 0.0, "delta_label_logit": 0.0}]
    for layer in range(len(model.blocks)):
        hook = model.blocks[str(layer)].feed_forward.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out))
        try:
            m = measure()
        finally:
            hook.remove()
        rows.append({"layer": layer, **m, **{f"delta_{k}": m[k] - intact[k] for k in intact}})
    return rows


def most_effective_layer(rows: list[dict[str, Any]]) -> int:
    """The layer whose ablation changes the task loss most (largest |delta_loss|)."""
    return max((r for r in rows if r["layer"] is not None), key=lambda r: abs(r["delta_loss"]))["layer"]


# ------------------------------------------------------------------------------------------------ callback


@dataclass
class InterferenceMonitor(Callback):
    """The module docstring's measurements inside an OLMo-core Trainer (hooks: pre_train, pre_step,
    pre_optim_step, post_step, post_checkpoint_saved, post_train)."""

    priority: ClassVar[int] = 3  # before the evaluator (2) and the checkpointer (1): rows on disk before a save

    config: MonitorConfig = field(default_factory=MonitorConfig)
    task: MonitoredTask = None  # type: ignore[assignment]
    path: Path | None = None  # the Parquet table (None: rows kept in memory only)
    write: bool = True
    rows: list[dict[str, Any]] = field(default_factory=list)
    layer: int | None = None  # resolved layer
    neurons: torch.Tensor | None = None
    reference: torch.Tensor | None = None  # g_r on the neurons
    reference_step: int | None = None
    last_injection: int | None = None
    ablation: list[dict[str, Any]] = field(default_factory=list)  # the rows that chose layer = -1
    _pending: dict[str, Any] | None = None

    # -- trainer hooks

    def pre_train(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ConfigError("monitor: the interference monitor runs in single-process training only")
        tm = self.trainer.train_module
        step = self.trainer.global_step
        if self.layer is None:
            self.layer = self.config.layer
            if self.layer < 0:
                self.ablation = ablation_effects(tm.model_forward, tm.model, self.task, self.task.eval_ids,
                                                 self.config.batch_prompts, self.trainer.device)
                self.layer = most_effective_layer(self.ablation)
        self.weights = mlp_weights(tm.model, self.layer)
        if self.neurons is None:  # a fresh start (a resumed run brings them from its checkpoint)
            self._refresh(step, choose=True)
        if self.path is not None and step > 0 and Path(self.path).is_file():
            self.rows = [r for r in _read_rows(Path(self.path)) if r["step"] < step]
        elif step == 0:
            self.rows = []

    def pre_step(self, batch: dict[str, Any]) -> None:
        if "doc_lens" in batch:
            raise ConfigError("monitor: intra-document masking (doc_lens) is not supported by the interference "
                              "monitor")
        c, s = self.config, self.trainer.global_step - 1
        from olmo_core.data.utils import get_labels

        ids = batch["input_ids"].to(self.trainer.device)
        labels = batch["labels"] if "labels" in batch else get_labels(batch, label_ignore_index=IGNORE)
        labels = labels.to(ids.device)
        starts = instance_starts(ids, self.task)
        instances = int(starts.sum())
        if instances:
            self.last_injection = s
        if c.reference_every and s % c.reference_every == 0 and s != self.reference_step:
            self._refresh(s)
        row: dict[str, Any] = {}
        if c.loss_every and s % c.loss_every == 0:
            row["task_loss"], _ = prompt_loss(self._forward, self.task, self.task.eval_ids, c.batch_prompts,
                                              self.trainer.device)
        if s % c.every == 0:
            mask = task_mask(starts, labels, c.span)
            n = max(int((labels != IGNORE).sum()), 1)
            row.update(task_tokens=int(mask.sum()), tokens=n)
            if c.split is SplitKind.SEPARATE:
                micro = self.trainer.train_module.rank_microbatch_size // ids.shape[1]
                g_t, g_nt = split_gradients(self._forward, self.weights, ids, labels, mask, n, micro)
                row.update(self._cosines(neuron_vector(g_t, self.neurons), neuron_vector(g_nt, self.neurons)))
            else:
                self._pending = {"g_t": neuron_vector(task_gradient(self._forward, self.weights, ids, labels, mask,
                                                                    n), self.neurons)}
        if row:
            self.rows.append(self._row(s, instances, row))

    def pre_optim_step(self) -> None:
        if self._pending is None:
            return
        g_t = self._pending.pop("g_t")
        self._pending = None
        grads = [w.grad for w in self.weights]
        if any(g is None for g in grads):
            raise RuntimeError("monitor: split = reuse found no gradient on the task neurons before the optimiser "
                               "step (a train module that clears it early needs split = separate)")
        g = neuron_vector(tuple(g.detach() for g in grads), self.neurons)  # type: ignore[arg-type]
        self.rows[-1].update(self._cosines(g_t, g - g_t))

    def post_step(self) -> None:
        if (self.trainer.global_step - 1) % self.config.flush_every == 0:
            self.flush()

    def post_checkpoint_saved(self, path: Any) -> None:
        self.flush()

    def post_train(self) -> None:
        self.flush()

    def state_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "neurons": None if self.neurons is None else self.neurons.tolist(),
                "reference": None if self.reference is None else self.reference.tolist(),
                "reference_step": self.reference_step, "last_injection": self.last_injection}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.layer = state_dict.get("layer")
        n, r = state_dict.get("neurons"), state_dict.get("reference")
        self.neurons = None if n is None else torch.tensor(n, dtype=torch.long)
        self.reference = None if r is None else torch.tensor(r, dtype=torch.float64)
        self.reference_step = state_dict.get("reference_step")
        self.last_injection = state_dict.get("last_injection")

    # -- work

    def _forward(self, input_ids: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self.trainer.train_module.model_forward(input_ids.to(self.trainer.device), **kw)

    def _refresh(self, step: int, choose: bool = False) -> None:
        """g_r at the current parameters (and, when `choose`, the task neurons from it)."""
        _, g = prompt_loss(self._forward, self.task, self.task.reference_ids, self.config.batch_prompts,
                           self.trainer.device, self.weights)
        if choose:
            self.neurons = top_neurons(g, self.config.neurons)
        self.reference, self.reference_step = neuron_vector(g, self.neurons), step

    def _cosines(self, g_t: torch.Tensor, g_nt: torch.Tensor) -> dict[str, Any]:
        g, r = g_t + g_nt, self.reference
        return {"cos_g": cosine(g, r), "cos_t": cosine(g_t, r), "cos_nt": cosine(g_nt, r), "norm_g": float(g.norm()),
                "norm_t": float(g_t.norm()), "norm_nt": float(g_nt.norm()), "norm_r": float(r.norm())}

    def _row(self, step: int, instances: int, values: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        since = None if self.last_injection is None else step - self.last_injection
        row.update(step=step, task=self.task.name, layer=self.layer, instances=instances,
                   steps_since_injection=since, reference_step=self.reference_step, **values)
        return row

    def flush(self) -> None:
        """Rewrite the table (atomically) with every row so far."""
        if self.write and self.path is not None and self.rows:
            runs.write_table(Path(self.path), {k: [r.get(k) for r in self.rows] for k in COLUMNS})


def _read_rows(path: Path) -> list[dict[str, Any]]:
    cols = runs.read_table(path)
    n = len(next(iter(cols.values()), []))
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]

