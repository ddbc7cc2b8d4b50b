"""In-loop evaluation of the LM lab (paper Sec. 4, Fig. 5/6): what the model has memorised and generalised of each
injected task, and how good a language model it is, every `eval.every` steps.

Per task (instances [TOK1, TOK2, LABEL], split 50/50 into train and test ids):
  train_seen        distinct train instances injected in the batches trained on by this step (plan steps < `step`);
  train_loss        memorisation: mean cross-entropy of LABEL after the prompt TOK1 TOK2, over train instances the
                    model has been trained on by this step (the paper's "train loss"); None while train_seen is 0
                    (always at step 0: nothing has been seen);
  train_acc_labels  the same instances, argmax over the task's label set == LABEL (None likewise);
  test_loss         cross-entropy of LABEL on held-out (never injected) test instances;
  test_acc_labels   generalisation: argmax over the task's label set == LABEL, on test instances;
  test_acc_vocab    argmax over the whole vocabulary == LABEL, on test instances (the model must also know the
                    answer is a label at all);
  *_ctx             the same five (train_loss_ctx, train_acc_labels_ctx, test_loss_ctx, test_acc_labels_ctx,
                    test_acc_vocab_ctx) with the prompt in context (below); None with `eval.context = false` or a
                    held-out split shorter than the context.
Per step: heldout_loss (mean next-token loss on a fixed prefix of the corpus' held-out split), lm_loss (mean training
cross-entropy over the steps since the previous evaluation; its running sum is saved in each checkpoint), and the
loss of each reference task (R_cmp, R_add: the corpus' own phrasings of comparison / addition, paper Fig. 6a) as
`ref_<name>_loss`; `reference_loss` repeats the one that matches the row's task kind. Each row also has `step`,
`tokens_seen`, the task's `kind` and its injection `frequency` (instances per token).

Two positions. The columns without suffix score TOK1 TOK2 at position 0 of a sequence (`eval.prompt = "plain"`; or
EOS TOK1 TOK2 there, `"eos"`), where the injection places instances first. Above one instance per sequence most
instances sit right after an EOS inside a packed sequence instead, with other text before them; the `*_ctx` columns
score that context: p tokens of held-out text, then EOS TOK1 TOK2, LABEL predicted at position p + 2, with
p = `eval.context_pos` (default min(T // 2, T - 5) for T = data.seq_len: mid-sequence, and a position an injection
could use). The text is one of up to 100 consecutive p-token windows from the start of the held-out split, a fixed
seeded choice per instance. Which instances are
scored is drawn from `seed` alone: the test subset once; the train instances in a fixed seeded order, of which each
evaluation scores the first `eval.train_instances` already injected (the injection cycles through the train split, so
a run at a low rate sees only part of it; scoring unseen ones would measure generalisation, not memorisation).
`TaskProbe.train_ids(step)` returns them. Evaluation runs under torch.no_grad in eval mode and restores the previous
mode; every data-parallel rank computes the same numbers (FSDP needs all ranks in each forward), rank 0 writes them.

`LMEvalCallback` appends one row per (step, task) to DIR/metrics.parquet, rewritten atomically at each evaluation.
It runs before the checkpointer (higher priority), so a checkpoint at step k always has its step-k row on disk; on
resume it keeps only the rows up to the resumed step, so the table equals an uninterrupted run's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# OLMo-core warns at import that NVIDIA's transformer_engine is not installed; nothing here uses it.
logging.getLogger("olmo_core.nn.attention.te_attn_api").setLevel(logging.ERROR)
from olmo_core.train.callbacks import Callback  # noqa: E402

from raretask import runs
from raretask.config import Config, ConfigError, StrEnum, option
from raretask.lm.injection import INSTANCE_TOKENS

# Columns of metrics.parquet, in order; `ref_<name>_loss` columns follow, one per reference task.
COLUMNS = ["step", "tokens_seen", "task", "kind", "frequency", "train_seen", "train_loss", "train_acc_labels",
           "test_loss", "test_acc_labels", "test_acc_vocab", "train_loss_ctx", "train_acc_labels_ctx", "test_loss_ctx",
           "test_acc_labels_ctx", "test_acc_vocab_ctx", "heldout_loss", "reference_loss", "lm_loss"]
MAX_CONTEXTS = 100  # distinct held-out windows the in-context prompts are drawn from
# The reference task whose loss `reference_loss` repeats, by task kind.
REFERENCE_OF_KIND = {"comparison": "cmp", "modular_addition": "add"}


class PromptKind(StrEnum):
    PLAIN = "plain"
    EOS = "eos"


@dataclass
class EvalConfig(Config):
    every: int = option(100, "steps between evaluations (the last step is always evaluated)", ge=1)
    batch_seqs: int = option(256, "task prompts per evaluation forward pass (full sequences: a training micro-batch)",
                            ge=1)
    train_instances: int = option(1000, "train instances per task scored for memorisation, among those injected by "
                                  "the evaluated step (0 = all of them)", ge=0)
    test_instances: int = option(1000, "test instances per task scored for generalisation (0 = all)", ge=0)
    heldout_tokens: int = option(32768, "tokens of the held-out split scored each time (its fixed prefix; 0 = none)",
                                ge=0)
    heldout_seq_len: int = option(0, "sequence length of the held-out loss (0 = data.seq_len)", ge=0)
    prompt: PromptKind = option(PromptKind.PLAIN, "plain: TOK1 TOK2 at a sequence start; eos: EOS TOK1 TOK2")
    context: bool = option(True, "also score each prompt in context, after held-out text and an EOS (*_ctx columns)")
    context_pos: int = option(0, "position p of that EOS: p held-out tokens before it (0 = min(T // 2, T - 5) for "
                                 "T = data.seq_len)", ge=0)
    reference: bool = option(True, "track the loss of the reference tasks R_cmp / R_add")
    reference_examples: int = option(100, "examples per reference task (a fixed draw)", ge=1)

    def validate(self, path: str = "") -> None:
        super().validate(path)
        p = f"{path}." if path else ""
        if self.heldout_seq_len == 1:
            raise ConfigError(f"{p}heldout_seq_len: must be 0 or >= 2 (one token predicts nothing)")

    def context_position(self, seq_len: int, path: str = "eval") -> int:
        """p of the in-context prompt: EOS at p, TOK1 at p + 1 with room for an instance's 4 tokens in a sequence of
        `seq_len`, as an injection there would have (ConfigError naming `path.context_pos` otherwise)."""
        pos = self.context_pos or min(seq_len // 2, seq_len - INSTANCE_TOKENS - 1)
        if not 1 <= pos <= seq_len - INSTANCE_TOKENS - 1:
            raise ConfigError(f"{path}.context_pos: {pos} leaves no room for EOS and an instance's {INSTANCE_TOKENS} "
                              f"tokens in data.seq_len = {seq_len} (1 .. {seq_len - INSTANCE_TOKENS - 1}; or "
                              f"{path}.context = false)")
        return pos


# ------------------------------------------------------------------------------------------------ what is scored


@dataclass
class TaskProbe:
    """What the evaluations score of one task: a fixed test subset, and at each step the train instances injected
    before it (the first `train_limit` of them in a fixed seeded order, so the scored set only changes as new
    instances are seen)."""

    name: str
    kind: str
    frequency: float
    instances: np.ndarray  # (N, 3) TOK1 TOK2 LABEL of every instance of the task
    train_order: np.ndarray  # (n_train,) the train split's ids, in the seeded order scored
    first_step: np.ndarray  # (n_train,) plan step of each one's first injection (plan.steps: never)
    train_limit: int  # at most this many train instances scored (0 = every seen one)
    test_ids: np.ndarray  # (n_test,) the fixed test subset, sorted
    label_set: torch.Tensor  # (m,) the task's label tokens
    prefix: np.ndarray  # tokens before TOK1 TOK2: none (prompt "plain") or EOS ("eos")
    contexts: np.ndarray | None = None  # (c, p + 1) held-out windows + EOS, for the in-context prompts (None: off)
    context_of: np.ndarray | None = None  # (N,) the window of each instance

    def seen(self, step: int) -> int:
        """Distinct train instances injected before evaluation step `step` (plan steps 0 .. step - 1)."""
        return int(np.sum(self.first_step < step))

    def train_ids(self, step: int) -> np.ndarray:
        """The train instances scored at evaluation step `step`, sorted (empty at step 0)."""
        seen = self.train_order[self.first_step < step]
        return np.sort(seen[:self.train_limit] if self.train_limit else seen)

    def prompts(self, ids: np.ndarray, context: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompts (n, P), labels (n,)) of instance ids: the prefix (or, in context, the instance's held-out window
        and EOS), TOK1, TOK2; and LABEL."""
        rows = self.instances[ids]
        if context:
            head = self.contexts[self.context_of[ids]]
        else:
            head = np.broadcast_to(self.prefix, (len(rows), len(self.prefix)))
        p = np.concatenate([head, rows[:, :2]], axis=1)
        return torch.from_numpy(np.ascontiguousarray(p, dtype=np.int64)), torch.from_numpy(rows[:, 2].copy())


@dataclass
class ReferenceProbe:
    """A reference task: token sequences whose last `targets[i]` tokens are scored (the answer after the prompt)."""

    name: str
    sequences: list[list[int]]
    targets: list[int]


@dataclass
class EvalSet:
    probes: list[TaskProbe]
    heldout: torch.Tensor | None  # (n, L) held-out token windows
    references: list[ReferenceProbe] = field(default_factory=list)


def _subset(ids: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed random subset of `n` ids (all of them when n is 0 or larger than the set), in sorted order."""
    ids = np.asarray(ids)
    if n == 0 or n >= len(ids):
        return np.sort(ids)
    return np.sort(rng.choice(ids, size=n, replace=False))


def task_probe(task: Any, kind: str, frequency: float, cfg: EvalConfig, eos_id: int, seed: int,
               first_steps: np.ndarray, contexts: np.ndarray | None = None) -> TaskProbe:
    """The probe of `task` (raretask.lm.tasks.Task); `first_steps` (N,) is the step of each instance's first
    injection (InjectionPlan.first_steps; >= the run's steps when never injected); `contexts` (c, p) the held-out
    windows of the in-context prompts (None: no *_ctx metrics)."""
    rng = np.random.default_rng([seed, 7919])  # its own stream: the subsets never depend on anything else
    order = rng.permutation(np.asarray(task.train_ids, dtype=np.int64))
    test = _subset(task.test_ids, cfg.test_instances, rng)
    prefix = np.array([eos_id] if cfg.prompt is PromptKind.EOS else [], dtype=np.int64)
    instances = np.asarray(task.instances, dtype=np.int64)
    windows = context_of = None
    if contexts is not None and len(contexts):
        windows = np.concatenate([np.asarray(contexts, dtype=np.int64), np.full((len(contexts), 1), eos_id)], axis=1)
        context_of = rng.integers(len(contexts), size=len(instances))
    return TaskProbe(task.name, kind, frequency, instances, order, np.asarray(first_steps, dtype=np.int64)[order],
                     cfg.train_instances, test, torch.as_tensor(np.asarray(task.label_tokens, dtype=np.int64)),
                     prefix, windows, context_of)


def context_windows(tokens: np.ndarray, length: int) -> np.ndarray | None:
    """Up to MAX_CONTEXTS consecutive `length`-token windows from the start of the held-out split, (c, length)
    (None when it is shorter than one window)."""
    n = min(len(tokens) // length, MAX_CONTEXTS)
    return np.asarray(tokens[:n * length], dtype=np.int64).reshape(n, length) if n else None


def heldout_windows(tokens: np.ndarray, n_tokens: int, seq_len: int) -> torch.Tensor | None:
    """The first n_tokens of the held-out split as (n, seq_len) windows (None if there is nothing to score)."""
    n = min(n_tokens, len(tokens)) // seq_len
    if n == 0:
        return None
    return torch.from_numpy(np.asarray(tokens[:n * seq_len], dtype=np.int64).reshape(n, seq_len))


# ---------------------------------------------------------------------------------------------------- metrics


Forward = Callable[..., Any]  # the train module's model_forward: (input_ids, **kw) -> logits or LMOutputWithLoss


def _scores(logits: torch.Tensor, labels: torch.Tensor, label_set: torch.Tensor) -> torch.Tensor:
    """Summed over a batch of next-token logits (b, V): [cross-entropy of the label, hits of the argmax over the
    label set, hits of the argmax over the vocabulary], float64."""
    labels, label_set = labels.to(logits.device), label_set.to(logits.device)
    loss = F.cross_entropy(logits, labels, reduction="sum")
    hits_labels = (label_set[logits[:, label_set].argmax(-1)] == labels).sum()
    hits_vocab = (logits.argmax(-1) == labels).sum()
    return torch.stack([loss.double(), hits_labels.double(), hits_vocab.double()])


def split_scores(forward: Forward, prompts: torch.Tensor, labels: torch.Tensor, label_set: torch.Tensor,
                 batch: int, device: torch.device) -> dict[str, float | None]:
    """Mean label loss and the two accuracies over prompts (n, P), `batch` at a time (only the last position's
    logits are computed: (b, 1, V)); None each when there is no prompt."""
    if len(prompts) == 0:
        return {"loss": None, "acc_labels": None, "acc_vocab": None}
    total = torch.zeros(3, dtype=torch.float64, device=device)
    for i in range(0, len(prompts), batch):
        logits = forward(prompts[i:i + batch].to(device), logits_to_keep=1)[:, -1].float()  # (b, V)
        total += _scores(logits, labels[i:i + batch], label_set)
    loss, acc_labels, acc_vocab = (total / len(prompts)).tolist()
    return {"loss": loss, "acc_labels": acc_labels, "acc_vocab": acc_vocab}


def task_metrics(forward: Forward, probe: TaskProbe, step: int, batch: int, device: torch.device,
                 context_batch: int | None = None) -> dict[str, Any]:
    """The task's columns at evaluation step `step` (see the module docstring); in-context prompts go
    `context_batch` at a time (default `batch`)."""
    out: dict[str, Any] = {"train_seen": probe.seen(step)}
    train = probe.train_ids(step)
    for suffix, context, b in (("", False, batch), ("_ctx", True, context_batch or batch)):
        if context and probe.contexts is None:  # off, or no held-out text
            tr = te = {"loss": None, "acc_labels": None, "acc_vocab": None}
        else:
            tr = split_scores(forward, *probe.prompts(train, context), probe.label_set, b, device)
            te = split_scores(forward, *probe.prompts(probe.test_ids, context), probe.label_set, b, device)
        out.update({f"train_loss{suffix}": tr["loss"], f"train_acc_labels{suffix}": tr["acc_labels"],
                    f"test_loss{suffix}": te["loss"], f"test_acc_labels{suffix}": te["acc_labels"],
                    f"test_acc_vocab{suffix}": te["acc_vocab"]})
    return out


def heldout_loss(forward: Forward, windows: torch.Tensor, batch: int, device: torch.device) -> float:
    """Mean next-token cross-entropy over every predicted position of the windows (the model's own loss code)."""
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        ids = windows[i:i + batch].to(device)  # (b, L)
        labels = F.pad(ids[:, 1:], (0, 1), value=-100)  # next token; the last position predicts nothing
        out = forward(ids, labels=labels, loss_reduction="sum", return_logits=False)
        total += out.ce_loss.float().item()
        count += ids.shape[0] * (ids.shape[1] - 1)
    return total / count


def reference_loss(forward: Forward, ref: ReferenceProbe, batch: int, device: torch.device) -> float:
    """Mean cross-entropy of each reference sequence's answer tokens (its last `targets[i]` tokens). Sequences are
    right-padded to a common length: causal attention keeps the padding out of every scored position."""
    total, count = 0.0, 0
    for i in range(0, len(ref.sequences), batch):
        seqs, ks = ref.sequences[i:i + batch], ref.targets[i:i + batch]
        L = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), L, dtype=torch.long)  # (b, L); padding id 0 is never scored
        labels = torch.full((len(seqs), L), -100, dtype=torch.long)
        for j, (s, k) in enumerate(zip(seqs, ks)):
            ids[j, :len(s)] = torch.tensor(s)
            labels[j, len(s) - k - 1:len(s) - 1] = ids[j, len(s) - k:len(s)]  # position t predicts token t + 1
        out = forward(ids.to(device), labels=labels.to(device), loss_reduction="sum", return_logits=False)
        total += out.ce_loss.float().item()
        count += sum(ks)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, forward: Forward, evalset: EvalSet, batch: int, device: torch.device,
             max_tokens: int | None = None, *, step: int) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """(per-task metrics by task name, per-step metrics) of the model after `step` optimiser steps (which train
    instances count as seen); leaves the model in its previous mode.

    `batch` prompts go through one forward; longer sequences (held-out windows, reference examples, in-context
    prompts) at most `max_tokens` tokens at a time (the training micro-batch, which fits memory)."""
    def rows(length: int) -> int:
        return batch if max_tokens is None else max(1, min(batch, max_tokens // length))

    was_training = model.training
    model.eval()
    try:
        tasks = {p.name: task_metrics(forward, p, step, batch, device,
                                      None if p.contexts is None else rows(p.contexts.shape[1] + 2))
                 for p in evalset.probes}
        held = evalset.heldout
        per_step: dict[str, float] = {"heldout_loss": float("nan") if held is None
                                      else heldout_loss(forward, held, rows(held.shape[1]), device)}
        for ref in evalset.references:
            longest = max(len(s) for s in ref.sequences)
            per_step[f"ref_{ref.name}_loss"] = reference_loss(forward, ref, rows(longest), device)
    finally:
        model.train(was_training)
    return tasks, per_step


def metric_rows(step: int, tokens_seen: int, evalset: EvalSet, tasks: dict[str, dict[str, Any]],
                per_step: dict[str, float], lm_loss: float | None) -> list[dict[str, Any]]:
    """One metrics.parquet row per task (a single row with task = None when no task is injected)."""
    base = {"step": step, "tokens_seen": tokens_seen, "heldout_loss": per_step.get("heldout_loss")}
    refs = {k: v for k, v in per_step.items() if k.startswith("ref_")}
    rows = []
    for p in evalset.probes or [None]:
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(base, lm_loss=lm_loss)
        if p is not None:
            row.update(task=p.name, kind=p.kind, frequency=p.frequency, **tasks[p.name])
            row["reference_loss"] = refs.get(f"ref_{REFERENCE_OF_KIND.get(p.kind, '')}_loss")
        row.update(refs)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------- callback


@dataclass
class LMEvalCallback(Callback):
    """Evaluates every `every` steps and at the last step; rank 0 keeps DIR/metrics.parquet up to date."""

    priority: ClassVar[int] = 2  # above the checkpointer's 1: a step's row is on disk before its checkpoint

    evalset: EvalSet = None  # type: ignore[assignment]
    every: int = 100
    batch_seqs: int = 256
    max_tokens: int | None = None  # tokens per full-sequence forward (the training micro-batch)
    path: Path = Path("metrics.parquet")
    write: bool = True  # rank 0 only
    on_eval: Callable[[list[dict[str, Any]]], None] | None = None  # e.g. the progress bar
    rows: list[dict[str, Any]] = field(default_factory=list)
    start_step: int = 0  # the step this process started (or resumed) at
    _loss_sum: torch.Tensor | None = None  # training CE summed since the last evaluation (stays on the device)
    _loss_n: int = 0

    # -- trainer hooks

    def pre_train(self) -> None:
        step = self.start_step = self.trainer.global_step
        if step > 0 and self.path.is_file():  # resumed: keep exactly the rows an uninterrupted run had by now
            self.rows = [r for r in _read_rows(self.path) if r["step"] <= step]
        if step == 0:
            self.rows = []
            self._evaluate()
        elif self.write:
            self._flush()

    def post_train_batch(self) -> None:
        ce = self.trainer.get_metric("train/CE loss")
        if ce is not None:
            self._loss_sum = ce.detach().clone() if self._loss_sum is None else self._loss_sum + ce.detach()
            self._loss_n += 1
        max_steps = self.trainer.max_steps
        if self.step % self.every == 0 or (max_steps is not None and self.step >= max_steps):
            self._evaluate()

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": None if self._loss_sum is None else self._loss_sum.item(), "loss_n": self._loss_n}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        s = state_dict.get("loss_sum")
        self._loss_sum = None if s is None else torch.tensor(s, dtype=torch.float32, device=self.trainer.device)
        self._loss_n = state_dict.get("loss_n", 0)

    # -- work

    def _lm_loss(self) -> float | None:
        if self._loss_sum is None or self._loss_n == 0:
            return None
        total = self._loss_sum.clone()
        import torch.distributed as dist

        group = self.trainer.dp_process_group
        if dist.is_available() and dist.is_initialized():  # each rank saw its own shard of the batch
            dist.all_reduce(total, group=group)
            total /= dist.get_world_size(group)
        value = total.item() / self._loss_n
        self._loss_sum, self._loss_n = None, 0
        return value

    def _evaluate(self) -> None:
        tm = self.trainer.train_module
        tasks, per_step = evaluate(tm.model, tm.model_forward, self.evalset, self.batch_seqs, self.trainer.device,
                                   self.max_tokens, step=self.step)
        new = metric_rows(self.step, self.trainer.global_train_tokens_seen, self.evalset, tasks, per_step,
                          self._lm_loss())
        self.rows.extend(new)
        if self.write:
            self._flush()
        if self.on_eval is not None:
            self.on_eval(new)

    def _flush(self) -> None:
        if self.rows:
            keys = list(dict.fromkeys(k for r in self.rows for k in r))
            runs.write_table(self.path, {k: [r.get(k) for r in self.rows] for k in keys})


def _read_rows(path: Path) -> list[dict[str, Any]]:
    cols = runs.read_table(path)
    n = len(next(iter(cols.values()), []))
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def build_evalset(tasks: Sequence[Any], frequencies: Sequence[float], cfg: EvalConfig, *, plan: Any,
                  heldout: np.ndarray | None, seq_len: int, eos_id: int, seed: int,
                  references: Sequence[ReferenceProbe] = ()) -> EvalSet:
    """The EvalSet of a run: one probe per task (raretask.lm.tasks.Task, with its injection rate per token; `plan`,
    the run's raretask.lm.plan.InjectionPlan, says when each instance is first injected), the held-out windows,
    the reference probes. The in-context prompts' windows come from `heldout` too (ConfigError naming
    eval.context_pos when it does not fit `seq_len`)."""
    contexts = None
    if cfg.context and heldout is not None:
        contexts = context_windows(heldout, cfg.context_position(seq_len))
    probes = [task_probe(t, str(t.kind), float(f), cfg, eos_id, seed + 1000 * i, plan.first_steps(t.name), contexts)
              for i, (t, f) in enumerate(zip(tasks, frequencies))]
    windows = None
    if heldout is not None and cfg.heldout_tokens > 0:
        windows = heldout_windows(heldout, cfg.heldout_tokens, cfg.heldout_seq_len or seq_len)
    return EvalSet(probes=probes, heldout=windows, references=list(references))
