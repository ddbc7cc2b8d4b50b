"""Injecting task instances into OLMo-core's packed pretraining stream (paper Sec. 4).

An injection replaces four tokens at a slot (the start of a sequence, or of a document inside one) with TOK1 TOK2
LABEL EOS. The stream is OLMo-core's `NumpyFSLDataset` (the raw token file cut into sequences of T tokens, documents
packed and separated by EOS) in the order of its `NumpyFSLDataLoader`: global batch s holds the B sequences
`global_indices[s*B:(s+1)*B]` of the epoch.

Slots. Each sequence offers position 0 and every position right after an EOS; a slot is kept when the piece
starting there (up to the next EOS-delimited document or sequence start) has room for the 4 tokens, so injections
never overlap and never run into the next document. Position 0 counts as a slot whatever is there: packing cuts
documents at sequence boundaries, so it is usually the middle of a document, whose next 4 tokens the instance replaces
(the paper's "first four tokens of a training sequence"), with nothing before it in the context. A position after an
EOS is a real document start, with the sequence's earlier text before it. Several documents of one sequence can carry
an instance, so rates above one per sequence work (7.8e-3 per token at T = 1024 is 8 per sequence). Sequence starts
are filled first, so what exceeds one per sequence sits after an EOS inside a sequence (7 of those 8): the context the
evaluation's `*_ctx` metrics score (raretask.lm.evaluate).

Plan. `plan_injections` decides, from its seed alone, how many instances of each task go into each step (iid:
Poisson; interval: evenly spread; burst: the period's share every `every` batches), which train instances (a seeded
cycle through the train split, reshuffled every pass), and which slots (sequence starts first, then document starts
inside sequences, at random). Interval and burst carry fractions the same way, cumulative counts rounded up: both
deliver ceil(rate x steps) instances, a burst whose period the run cuts short bringing only its steps' share; a batch
they overflow is a ConfigError. An iid draw above the slots a batch has left is not: the excess waits for the next
batches with room (the total stays the draws' total, each batch within its slots), so a valid mean (below the free
slots per batch) never fails by chance; iid tasks take the slots in list order, after interval and burst tasks. Step
s is the (s+1)-th optimiser step (OLMo-core Trainer `global_step` = s + 1); steps beyond one epoch continue in the next
epoch's order.

Loader. `InjectingFSLDataLoader` is OLMo-core's `NumpyFSLDataLoader` whose `_get_dataset_item(idx)` patches the
sequence: it maps the dataset index back to (step, batch_pos) through the loader's own global index order, so the
same tokens are injected whichever worker or data-parallel rank fetches the sequence. Its `state_dict` resume is
OLMo-core's, plus a fingerprint of the plan.
"""

from __future__ import annotations

import functools
import hashlib
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import torch
from olmo_core.data import DataCollator, NumpyFSLDataLoader, NumpyFSLDatasetConfig, TokenizerConfig
from olmo_core.data.numpy_dataset import NumpyFSLDatasetBase
from olmo_core.data.utils import get_document_lengths
from olmo_core.distributed.utils import get_fs_local_rank, get_rank, get_world_size
from olmo_core.utils import get_default_device

from raretask.config import ConfigError
from raretask.lm.tasks import LMTaskConfig, ScheduleKind, Task


INSTANCE_TOKENS = 4  # TOK1 TOK2 LABEL EOS


@dataclass(frozen=True)
class Rate:
    per_token: float  # instances per training token
    per_batch: float  # instances per global batch


@dataclass
class SlotTable:
    """Injection slots of a list of sequences, CSR: row r has offsets[indptr[r]:indptr[r+1]] (ascending)."""

    indptr: np.ndarray   # (rows + 1,) int64
    offsets: np.ndarray  # (n,) int64, token offsets inside the sequence

    @classmethod
    def first_positions(cls, rows: int) -> SlotTable:
        """Only position 0 of each sequence (the paper's placement; for planning without the data)."""
        return cls(np.arange(rows + 1, dtype=np.int64), np.zeros(rows, dtype=np.int64))

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)


def sequence_slots(tokens: np.ndarray, seq_len: int, eos_id: int, *, chunk: int = 1 << 26) -> SlotTable:
    """Slots of every sequence of a token array cut into `seq_len` pieces (rows = dataset sequence indices)."""
    n_seq = len(tokens) // seq_len
    n_tok = n_seq * seq_len
    # Document starts: right after each EOS (read chunk by chunk: the array may be a large memmap).
    starts = [np.flatnonzero(np.asarray(tokens[a:min(a + chunk, n_tok)]) == eos_id) + a + 1
              for a in range(0, n_tok, chunk)]
    doc_starts = np.concatenate([np.zeros(0, dtype=np.int64), *starts]).astype(np.int64)
    candidates = np.union1d(doc_starts[doc_starts < n_tok], np.arange(n_seq, dtype=np.int64) * seq_len)  # sorted
    # Every sequence start is a candidate, so the next candidate bounds the piece within its own sequence.
    piece = np.diff(np.append(candidates, n_tok))
    kept = candidates[piece >= INSTANCE_TOKENS]
    seq = kept // seq_len
    indptr = np.searchsorted(seq, np.arange(n_seq + 1), side="left").astype(np.int64)
    return SlotTable(indptr, kept - seq * seq_len)


def stream_slots(seq_slots: SlotTable, order: np.ndarray) -> SlotTable:
    """The slots of the sequences `order` (dataset indices, e.g. (steps * B,) in global batch order)."""
    counts = seq_slots.counts[order]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    within = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], counts)
    return SlotTable(indptr, seq_slots.offsets[np.repeat(seq_slots.indptr[order], counts) + within])


@dataclass
class InjectionPlan:
    """Every injection of a run, one row each, sorted by (step, batch_pos, offset)."""

    tasks: list[Task]
    steps: int
    global_batch_seqs: int  # B
    seq_len: int            # T
    seed: int
    step: np.ndarray        # (n,) int64
    batch_pos: np.ndarray   # (n,) int64, sequence position in the global batch
    offset: np.ndarray      # (n,) int64, token offset of TOK1 in the sequence
    task: np.ndarray        # (n,) int64, index into `tasks`
    instance: np.ndarray    # (n,) int64, instance index of the task (always a train instance)
    requested: dict[str, Rate]
    realised: dict[str, Rate]
    tokens: np.ndarray = field(init=False)  # (n, 3) [TOK1, TOK2, LABEL]

    def __post_init__(self) -> None:
        self.tokens = np.zeros((len(self.step), 3), dtype=np.int64)
        for k, t in enumerate(self.tasks):
            rows = self.task == k
            self.tokens[rows] = t.instances[self.instance[rows]]

    def __len__(self) -> int:
        return len(self.step)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def tokens_per_batch(self) -> int:
        return self.global_batch_seqs * self.seq_len

    def counts(self) -> dict[str, int]:
        return {t.name: int(np.sum(self.task == k)) for k, t in enumerate(self.tasks)}

    def first_steps(self, task: str) -> np.ndarray:
        """(instances,) the step of each instance's first injection, `steps` when it is never injected: the model
        has trained on instance i from evaluation step first[i] + 1 on (the evaluation after `global_step` k has
        seen the plan's steps < k)."""
        k = self.task_names.index(task)
        first = np.full(len(self.tasks[k].labels), self.steps, dtype=np.int64)
        rows = self.task == k
        np.minimum.at(first, self.instance[rows], self.step[rows])
        return first

    def steps_of(self, task: str) -> np.ndarray:
        """Sorted distinct steps that carry an instance of `task`."""
        return np.unique(self.step[self.task == self.task_names.index(task)])

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of every injection and the batch shape (checked when a checkpoint is resumed)."""
        h = hashlib.sha256(f"{self.steps},{self.global_batch_seqs},{self.seq_len},{self.task_names}".encode())
        for a in (self.step, self.batch_pos, self.offset, self.task, self.instance, self.tokens):
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return h.hexdigest()

    def to_table(self) -> pa.Table:
        """(step, batch_pos, offset, task, instance), task by name, for Parquet."""
        names = np.array(self.task_names, dtype=object)
        return pa.table({"step": self.step, "batch_pos": self.batch_pos, "offset": self.offset,
                         "task": pa.array(names[self.task].tolist(), pa.string()).dictionary_encode(),
                         "instance": self.instance})

    def summary(self) -> list[dict[str, Any]]:
        """Per task: requested and realised rates in both units, and the instance count (JSON-ready)."""
        counts = self.counts()
        return [{"task": n, "instances": counts[n],
                 "requested_per_token": self.requested[n].per_token, "requested_per_batch": self.requested[n].per_batch,
                 "realised_per_token": self.realised[n].per_token, "realised_per_batch": self.realised[n].per_batch}
                for n in self.task_names]


def injection_log(plan: InjectionPlan) -> pa.Table:
    """The plan's table plus each row's split ('train' by construction) and tokens, for Parquet."""
    split = np.full(len(plan), "train", dtype=object)
    for k, t in enumerate(plan.tasks):
        rows = plan.task == k
        split[rows] = np.where(t.is_train(plan.instance[rows]), "train", "test")
    table = plan.to_table()
    table = table.append_column("split", pa.array(split.tolist(), pa.string()).dictionary_encode())
    for j, name in enumerate(("tok1", "tok2", "label")):
        table = table.append_column(name, pa.array(plan.tokens[:, j]))
    return table


def plan_injections(tasks: list[Task], task_cfgs: list[LMTaskConfig], *, steps: int, global_batch_seqs: int,
                    seq_len: int, seed: int, slots: SlotTable | None = None, path: str = "tasks") -> InjectionPlan:
    """Decide every injection of a `steps`-step run (see the module docstring); `slots` has one row per
    (step, batch_pos), row = step * B + batch_pos, default position 0 of each sequence. An interval or burst task
    needing more slots than a batch offers, or an iid task whose mean per batch is not below the slots left on
    average, raises ConfigError naming `path[k].frequency`; an iid draw above the slots left is carried (`_carry`).
    """
    B, K = global_batch_seqs, len(tasks)
    if len(task_cfgs) != K:
        raise ValueError("plan_injections: one config per task")
    slots = SlotTable.first_positions(steps * B) if slots is None else slots
    if slots.rows != steps * B:
        raise ValueError(f"plan_injections: slots has {slots.rows} rows, expected steps * B = {steps * B}")
    tokens_per_batch = B * seq_len

    rates = np.array([c.rate_per_batch(tokens_per_batch) for c in task_cfgs])  # (K,) instances per batch
    counts = np.stack([_schedule(c, r, steps, _rng(seed, t.name, 1)) for c, r, t in zip(task_cfgs, rates, tasks)]
                      ) if K else np.zeros((0, steps), dtype=np.int64)    # (K, steps)
    capacity = slots.counts.reshape(steps, B).sum(axis=1)                      # (steps,)
    iid = np.array([c.schedule is ScheduleKind.IID for c in task_cfgs], dtype=bool)
    # Interval and burst counts are exact: a batch they overflow is an error.
    need = counts[~iid].sum(axis=0)                                            # (steps,)
    over = np.flatnonzero(need > capacity)
    if over.size:
        s = int(over[0])
        k = int(np.argmax(np.where(iid, -1, counts[:, s])))
        hint = " or every" if task_cfgs[k].schedule is ScheduleKind.BURST else ""
        raise ConfigError(f"{path}[{k}].frequency: {tasks[k].name} ({task_cfgs[k].frequency:g} {task_cfgs[k].unit}, "
                          f"{task_cfgs[k].schedule}) needs {need[s]} injection slots at step {s} but that batch offers "
                          f"{capacity[s]} (document starts with room for {INSTANCE_TOKENS} tokens); lower the "
                          f"frequency{hint}")
    # iid draws take the slots left, task after task; a draw above them waits for the next batches with room.
    room = capacity - need
    for k in np.flatnonzero(iid):
        if rates[k] >= room.mean():
            raise ConfigError(f"{path}[{k}].frequency: {tasks[k].name} ({task_cfgs[k].frequency:g} "
                              f"{task_cfgs[k].unit}, iid) draws {rates[k]:.4g} instances per batch on average but the "
                              f"batches have {room.mean():.4g} free injection slots on average (document starts with "
                              f"room for {INSTANCE_TOKENS} tokens, less the tasks before it); lower the frequency")
        counts[k] = _carry(counts[k], room)
        room -= counts[k]

    chosen, task_ids = _place(slots, counts, B, np.random.default_rng([seed, 0x5107]))
    row, offset = np.searchsorted(slots.indptr, chosen, side="right") - 1, slots.offsets[chosen]
    sort = np.argsort(row * seq_len + offset, kind="stable")
    row, offset, task_ids = row[sort], offset[sort], task_ids[sort]
    instance = np.zeros(len(row), dtype=np.int64)
    for k, t in enumerate(tasks):  # each task cycles through its train split in stream order
        rows = np.flatnonzero(task_ids == k)
        instance[rows] = _instance_cycle(t, len(rows), _rng(seed, t.name, 2))

    requested, realised = {}, {}
    for k, t in enumerate(tasks):
        requested[t.name] = Rate(per_token=float(rates[k]) / tokens_per_batch, per_batch=float(rates[k]))
        n = float(counts[k].sum())
        realised[t.name] = Rate(per_token=n / (steps * tokens_per_batch), per_batch=n / steps)
    return InjectionPlan(tasks=list(tasks), steps=steps, global_batch_seqs=B, seq_len=seq_len, seed=seed,
                         step=row // B, batch_pos=row % B, offset=offset, task=task_ids, instance=instance,
                         requested=requested, realised=realised)


class InjectingFSLDataLoader(NumpyFSLDataLoader):
    """OLMo-core's FSL data loader with the plan's instances written into the sequences it yields."""

    def __init__(self, dataset: NumpyFSLDatasetBase, *, plan: InjectionPlan | None = None, **kwargs: Any):
        super().__init__(dataset, **kwargs)
        self.plan = plan
        self._cache: tuple[Any, np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def global_batch_size(self) -> int:
        return self._global_batch_size

    @global_batch_size.setter
    def global_batch_size(self, value: int) -> None:
        # The plan addresses (step, batch_pos): a batch-size schedule would move every injection.
        if value != self._global_batch_size:
            raise RuntimeError("the injection plan fixes the global batch size; it cannot change during training")

    @property
    def instances_per_batch(self) -> int:
        return self.global_batch_size // self.dataset.sequence_length

    def epoch_order(self, epoch: int) -> np.ndarray:
        """(total_size,) dataset indices in the global order of `epoch` (1-based), without touching state."""
        saved = self._epoch
        self._epoch = epoch
        try:
            return np.asarray(self._build_global_indices()[: self.total_size])
        finally:
            self._epoch = saved

    def stream_order(self, steps: int) -> np.ndarray:
        """(steps * B,) dataset indices of the first `steps` global batches, epoch after epoch."""
        per_epoch = self.total_batches * self.instances_per_batch
        epochs = math.ceil(steps * self.instances_per_batch / per_epoch)
        return np.concatenate([self.epoch_order(e) for e in range(1, epochs + 1)])[: steps * self.instances_per_batch]

    def _epoch_injections(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This epoch's injections keyed by dataset index: sorted dataset indices (m,), token positions (m, 4),
        tokens TOK1 TOK2 LABEL EOS (m, 4)."""
        key = (self.epoch, self.global_batch_size)
        if self._cache is None or self._cache[0] != key:
            plan, B = self.plan, self.instances_per_batch
            if plan.global_batch_seqs != B or plan.seq_len != self.dataset.sequence_length:
                raise RuntimeError("the injection plan was made for another batch size or sequence length")
            first = (self.epoch - 1) * self.total_batches
            rows = (plan.step >= first) & (plan.step < first + self.total_batches)
            order = np.asarray(self.get_global_indices()[: self.total_size])
            idx = order[(plan.step[rows] - first) * B + plan.batch_pos[rows]].astype(np.int64)
            o = np.argsort(idx, kind="stable")
            positions = plan.offset[rows][o, None] + np.arange(INSTANCE_TOKENS)                 # (m, 4)
            eos = np.full((len(o), 1), self.dataset.eos_token_id, dtype=np.int64)
            self._cache = (key, idx[o], positions, np.concatenate([plan.tokens[rows][o], eos], axis=1))
        return self._cache[1], self._cache[2], self._cache[3]

    def _get_dataset_item(self, idx: int) -> dict[str, Any]:
        item = super()._get_dataset_item(idx)
        if self.plan is None:
            return item
        keys, positions, tokens = self._epoch_injections()
        lo, hi = keys.searchsorted(idx, "left"), keys.searchsorted(idx, "right")
        if lo == hi:
            return item
        ids = item["input_ids"].numpy().copy()  # (T,) int64
        ids[positions[lo:hi].ravel()] = tokens[lo:hi].ravel()
        item["input_ids"] = torch.from_numpy(ids)
        if "doc_lens" in item:  # the injected EOS starts a new document
            item["doc_lens"] = get_document_lengths(item["input_ids"], self.dataset.eos_token_id,
                                                    bos_token_id=self.dataset.bos_token_id)
        return item

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["injection_plan"] = None if self.plan is None else self.plan.fingerprint
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("injection_plan")
        mine = None if self.plan is None else self.plan.fingerprint
        if saved is not None and saved != mine:
            raise RuntimeError("the checkpoint was written with a different injection plan (tasks, frequencies, "
                               "seed, batch or data changed); resuming would inject different instances")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "injection_plan"})


def build_data_loader(*, token_path: str | Path, dtype: str | np.dtype, eos_id: int, pad_id: int, vocab_size: int,
                      seq_len: int, global_batch_seqs: int, seed: int, work_dir: str | Path, tasks: list[Task],
                      task_cfgs: list[LMTaskConfig], steps: int, num_workers: int = 0,
                      dp_world_size: int | None = None, dp_rank: int | None = None,
                      target_device_type: str | None = None, path: str = "tasks",
                      ) -> tuple[InjectingFSLDataLoader, InjectionPlan]:
    """OLMo-core data loader over a raw token file with the tasks injected, and its plan.

    `vocab_size` is the model's embedding size (batches are checked against it; dedicated task tokens must fit);
    `seed` orders the data and draws the plan; the data-parallel rank/world size default to torch.distributed's.
    Pass the loader to `TrainerConfig.build(train_module, loader)`."""
    token_path = Path(token_path)
    if not token_path.is_file():
        raise ConfigError(f"token_path: no such file: {token_path}")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"dtype: {dtype!r} is not a numpy dtype") from None
    if np_dtype not in (np.uint8, np.uint16, np.uint32, np.uint64):
        raise ConfigError(f"dtype: token files are unsigned integers (uint8/16/32/64), got {np_dtype}")
    for name, value, low in (("seq_len", seq_len, INSTANCE_TOKENS), ("global_batch_seqs", global_batch_seqs, 1),
                             ("steps", steps, 1)):
        if value < low:
            raise ConfigError(f"{name}: must be >= {low}, got {value}")
    world = get_world_size() if dp_world_size is None else dp_world_size
    rank = get_rank() if dp_rank is None else dp_rank
    if global_batch_seqs % world:
        raise ConfigError(f"global_batch_seqs: {global_batch_seqs} is not divisible by the {world} data-parallel ranks")
    for t in tasks:
        if int(t.tokens.max()) >= vocab_size:
            raise ConfigError(f"vocab_size: task {t.name} uses token {int(t.tokens.max())} but the model's vocabulary "
                              f"is {vocab_size}; add extra_tokens_needed(tasks) rows for dedicated tokens")

    dataset = NumpyFSLDatasetConfig(
        paths=[str(token_path)], sequence_length=seq_len, dtype=np_dtype.name, work_dir=str(work_dir),
        tokenizer=TokenizerConfig(vocab_size=vocab_size, eos_token_id=eos_id, pad_token_id=pad_id),
    ).build()
    dataset.prepare()
    loader = InjectingFSLDataLoader(
        dataset, collator=DataCollator(pad_token_id=pad_id, vocab_size=vocab_size),
        global_batch_size=global_batch_seqs * seq_len, work_dir=work_dir, seed=seed, num_workers=num_workers,
        dp_world_size=world, dp_rank=rank, fs_local_rank=get_fs_local_rank(),
        target_device_type=target_device_type or get_default_device().type)
    if loader.total_batches == 0:
        raise ConfigError(f"token_path: {len(dataset)} sequences of {seq_len} tokens are fewer than one global batch "
                          f"of {global_batch_seqs}")

    tokens = np.memmap(token_path, dtype=np_dtype, mode="r")
    slots = stream_slots(sequence_slots(tokens, seq_len, eos_id), loader.stream_order(steps))
    loader.plan = plan_injections(tasks, task_cfgs, steps=steps, global_batch_seqs=global_batch_seqs,
                                  seq_len=seq_len, seed=seed, slots=slots, path=path)
    return loader, loader.plan


def iter_steps(loader: InjectingFSLDataLoader, steps: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(step, local batch) for the first `steps` steps from the start of training, driving the loader epoch by
    epoch as OLMo-core's Trainer does (reshuffle, iterate, reset)."""
    step, epoch = 0, 1
    while step < steps:
        loader.reshuffle(epoch=epoch)
        for batch in loader:
            yield step, batch
            step += 1
            if step == steps:
                break
        loader.reset()
        epoch += 1


def _rng(seed: int, name: str, purpose: int) -> np.random.Generator:
    # Keyed by task name, so adding a task leaves the other tasks' counts and instance cycles unchanged.
    return np.random.default_rng([seed, zlib.crc32(name.encode()), purpose])


def _ceil_count(x: np.ndarray) -> np.ndarray:
    # Cumulative instance counts; rounding first keeps e.g. 3 * 0.1 from becoming 0.30000000000000004 -> 1.
    return np.ceil(np.round(x, 9)).astype(np.int64)


def _schedule(cfg: LMTaskConfig, rate: float, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(steps,) instances of one task per step, for `rate` instances per batch."""
    if cfg.schedule is ScheduleKind.IID:
        return rng.poisson(rate, size=steps).astype(np.int64)
    if cfg.schedule is ScheduleKind.INTERVAL:
        return np.diff(_ceil_count(np.arange(steps + 1) * rate))
    # Burst b lands at step b * every with the share of its period, [b * every, (b + 1) * every) cut at `steps`: a
    # last, partial period gets the share of the steps it has, so the run delivers the matched rate.
    out = np.zeros(steps, dtype=np.int64)
    ends = np.minimum(np.arange(math.ceil(steps / cfg.every) + 1) * cfg.every, steps)
    out[::cfg.every] = np.diff(_ceil_count(ends * rate))
    return out


def _carry(draws: np.ndarray, room: np.ndarray) -> np.ndarray:
    """`draws` (steps,) clipped to `room` (steps,) without losing any: what a batch cannot take waits for the next
    batches with room, and what is still waiting after the last batch goes into the
    latest batches with room left. Only a run whose whole room is smaller than the draws' total loses the rest."""
    x = np.cumsum(draws - room)
    backlog = x - np.minimum(np.minimum.accumulate(x), 0)  # after batch s: max(0, backlog[s-1] + draws[s] - room[s])
    out = draws + np.concatenate([[0], backlog[:-1]]) - backlog
    left = np.minimum(np.cumsum((room - out)[::-1]), backlog[-1])  # the leftover, from the last batch backwards
    return out + np.diff(left, prepend=0)[::-1]


def _place(slots: SlotTable, counts: np.ndarray, B: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per step s, sum_k counts[k, s] slots drawn without replacement, sequence starts first (the paper's place),
    then document starts inside sequences; dealt to the tasks in random order. Returns (slot indices, task ids)."""
    K = len(counts)
    first = slots.offsets == 0
    picked, dealt = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for s in np.flatnonzero(counts.sum(axis=0)):  # a loop over steps: a global sort of all slots is far slower
        lo, hi = slots.indptr[s * B], slots.indptr[(s + 1) * B]
        need = int(counts[:, s].sum())
        starts = lo + np.flatnonzero(first[lo:hi])
        if need <= len(starts):
            chosen = rng.choice(starts, need, replace=False)
        else:
            inner = lo + np.flatnonzero(~first[lo:hi])
            chosen = np.concatenate([starts, rng.choice(inner, need - len(starts), replace=False)])
        picked.append(chosen)
        dealt.append(rng.permutation(np.repeat(np.arange(K), counts[:, s])))
    return np.concatenate(picked), np.concatenate(dealt)


def _instance_cycle(task: Task, n: int, rng: np.random.Generator) -> np.ndarray:
    """n train instances: passes over the train split, each pass in a fresh seeded order."""
    passes = -(-n // len(task.train_ids))
    return np.concatenate([np.zeros(0, dtype=np.int64), *(rng.permutation(task.train_ids) for _ in range(passes))])[:n]
