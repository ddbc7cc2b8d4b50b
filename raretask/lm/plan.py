"""The injection plan (paper Sec. 4): how many instances of each task go into each step, into which slots
(raretask.lm.slots), and which train instances; computed a step at a time, so no rank ever holds a paper-scale plan.

Rule. Counts: per task and step, from its seed alone (iid: Poisson; interval: evenly spread; burst: the period's
share every `every` batches). Interval and burst carry fractions the same way, cumulative counts rounded up: both
deliver ceil(rate x steps) instances, a burst whose period the run cuts short bringing only its steps' share; a batch
they overflow is a ConfigError. An iid draw above the slots a batch has left is not: the excess waits for the next
batches with room (the total stays the draws' total, each batch within its slots), so a valid mean (below the free
slots per batch) never fails by chance; iid tasks take the slots in list order, after interval and burst tasks.
Placement: a step's instances take slots drawn without replacement, sequence starts first (the paper's place), then
document starts inside sequences, dealt to the tasks in random order. Instances: each task cycles through its train
split in stream order, every pass in a fresh seeded order. Step s is the (s+1)-th optimiser step (OLMo-core Trainer
`global_step` = s + 1); steps beyond one epoch continue in the next epoch's order.

Keys. Counts are K x steps numbers (kilobytes for 20K steps), drawn for the whole run as they always were (one
generator per task and purpose, keyed by task name, so adding a task leaves the others unchanged); the iid carry-over
makes a step's count depend on earlier draws anyway. Everything per injection is keyed so that one step needs nothing
of the others: step s draws from `default_rng([seed, 0x5107, s])` one uniform key per slot of its batch (sequence
starts' keys lowered by 1; the smallest keys win, so starts go first) and then the dealing to tasks; pass p of a
task's instance cycle is `default_rng([seed, crc32(name), 2, p])`'s permutation of its train split, and the j-th
injection of a task in stream order gets entry j of the cycle (the counts of earlier steps say where step s starts).
Plans before this keying (PLAN_VERSION 1) drew every step's slots with `choice` from one generator and every pass
from one generator, which no step can replay without the steps before it: counts are unchanged, but which slot and
which instance each injection gets differs, so runs of the existing presets inject the same numbers at the same steps
into other slots, in another order (their metrics move within seed noise; the tests pin no such numbers).

Scale. `plan_injections` returns an `InjectionPlan`: the counts, the batches' slot counts and a `StepSlots` source
(a rank holds kilobytes to megabytes, whatever the run's length). `share(step, rank, world)` computes one step (the
whole global batch: the slot draw is over all of it) and keeps a data-parallel rank's sequences (OLMo-core gives
rank r batch positions r, r + W, ...): what the loader asks for; `block(start, stop)` computes a range of steps
together (vectorised, one generator per step); `write_injection_log` streams DIR/injections.parquet a block of steps
per row group. `reference_injections` is the same rule for the whole run at once, every injection in memory (the
pre-scaling implementation, re-keyed, step by step): the check of the lazy plan on small cases, and what the
benchmark (benchmarks/injection_plan.py) compares against.
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
import pyarrow.parquet as pq

from raretask.config import ConfigError
from raretask.lm.slots import INSTANCE_TOKENS, SlotTable, StepSlots
from raretask.lm.tasks import LMTaskConfig, ScheduleKind, Task

PLAN_VERSION = 2  # in the fingerprint: tick when the rule or its keys change
PLACE_KEY = 0x5107


@dataclass(frozen=True)
class Rate:
    per_token: float  # instances per training token
    per_batch: float  # instances per global batch


@dataclass
class Injections:
    """Injections as arrays, one row each, sorted by (step, batch_pos, offset): a step, a rank's share, or (small
    cases) a whole run."""

    tasks: list[Task]
    step: np.ndarray        # (n,) int64
    batch_pos: np.ndarray   # (n,) int64, sequence position in the global batch
    offset: np.ndarray      # (n,) int64, token offset of TOK1 in the sequence
    task: np.ndarray        # (n,) int64, index into `tasks`
    instance: np.ndarray    # (n,) int64, instance index of the task (always a train instance)
    tokens: np.ndarray | None = None  # (n, 3) [TOK1, TOK2, LABEL], looked up when not given

    def __post_init__(self) -> None:
        if self.tokens is None:
            self.tokens = np.zeros((len(self.step), 3), dtype=np.int64)
            for k, t in enumerate(self.tasks):
                rows = self.task == k
                self.tokens[rows] = t.instances[self.instance[rows]]

    def __len__(self) -> int:
        return len(self.step)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @classmethod
    def concat(cls, tasks: list[Task], parts: list[Injections]) -> Injections:
        cols = [np.concatenate([np.zeros(0, dtype=np.int64), *(getattr(p, c) for p in parts)])
                for c in ("step", "batch_pos", "offset", "task", "instance")]
        return cls(tasks, *cols, np.concatenate([np.zeros((0, 3), dtype=np.int64), *(p.tokens for p in parts)]))

    def log_table(self) -> pa.Table:
        """The injection log of these rows, built whole through Python lists (the pre-scaling `injection_log`;
        `write_injection_log` streams the same content)."""
        names = np.array(self.task_names, dtype=object)
        split = np.full(len(self), "train", dtype=object)
        for k, t in enumerate(self.tasks):
            rows = self.task == k
            split[rows] = np.where(t.is_train(self.instance[rows]), "train", "test")
        table = pa.table({"step": self.step, "batch_pos": self.batch_pos, "offset": self.offset,
                          "task": pa.array(names[self.task].tolist(), pa.string()).dictionary_encode(),
                          "instance": self.instance})
        table = table.append_column("split", pa.array(split.tolist(), pa.string()).dictionary_encode())
        for j, name in enumerate(("tok1", "tok2", "label")):
            table = table.append_column(name, pa.array(self.tokens[:, j]))
        return table


@dataclass
class InjectionPlan:
    """A run's injections, computed step by step from its counts and slot source (see the module docstring)."""

    tasks: list[Task]
    steps: int
    global_batch_seqs: int    # B
    seq_len: int              # T
    seed: int
    per_step: np.ndarray      # (K, steps) int64: instances of each task in each step
    capacity: np.ndarray      # (steps,) int64: slots of each batch
    slots: StepSlots
    requested: dict[str, Rate]
    realised: dict[str, Rate]
    _before: np.ndarray = field(init=False, repr=False)  # (K, steps) instances of each task in the steps before
    _passes: dict = field(init=False, repr=False)        # (task, pass) -> order, the few in use
    _instances: np.ndarray = field(init=False, repr=False)  # every task's instances stacked, task k's from _base[k]
    _base: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._before = np.cumsum(self.per_step, axis=1) - self.per_step
        self._passes = {}
        sizes = [len(t.instances) for t in self.tasks]
        self._instances = np.concatenate([np.zeros((0, 3), dtype=np.int64), *(t.instances for t in self.tasks)])
        self._base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, int)

    def __getstate__(self) -> dict:  # a data-loader worker gets the plan without the cached passes
        return {k: v for k, v in self.__dict__.items() if k not in ("_passes", "fingerprint")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._passes = {}

    def __len__(self) -> int:
        return int(self.per_step.sum())

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def tokens_per_batch(self) -> int:
        return self.global_batch_seqs * self.seq_len

    def counts(self) -> dict[str, int]:
        return {t.name: int(self.per_step[k].sum()) for k, t in enumerate(self.tasks)}

    def steps_of(self, task: str) -> np.ndarray:
        """Sorted distinct steps that carry an instance of `task`."""
        return np.flatnonzero(self.per_step[self.task_names.index(task)])

    def first_steps(self, task: str) -> np.ndarray:
        """(instances,) the step of each instance's first injection, `steps` when it is never injected: the model
        has trained on instance i from evaluation step first[i] + 1 on (the evaluation after `global_step` k has
        seen the plan's steps < k). An instance's first injection is in the cycle's first pass: entry j of it lands
        in the step whose cumulative count first exceeds j."""
        k = self.task_names.index(task)
        t = self.tasks[k]
        first = np.full(len(t.labels), self.steps, dtype=np.int64)
        first0 = self._pass(k, 0)
        first[first0] = np.searchsorted(np.cumsum(self.per_step[k]), np.arange(len(first0)), side="right")
        return first

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of what the injections are a function of: the rule's version, batch shape, seed, counts, slot
        source (the corpus cache and data order) and the tasks' instances (checked when a checkpoint is resumed)."""
        h = hashlib.sha256(f"v{PLAN_VERSION},{self.steps},{self.global_batch_seqs},{self.seq_len},{self.seed},"
                           f"{self.task_names},{self.slots.identity}".encode())
        for a in (self.per_step, self.capacity, *(x for t in self.tasks for x in (t.instances, t.train_ids))):
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return h.hexdigest()

    def summary(self) -> list[dict[str, Any]]:
        """Per task: requested and realised rates in both units, and the instance count (JSON-ready)."""
        counts = self.counts()
        return [{"task": n, "instances": counts[n],
                 "requested_per_token": self.requested[n].per_token, "requested_per_batch": self.requested[n].per_batch,
                 "realised_per_token": self.realised[n].per_token, "realised_per_batch": self.realised[n].per_batch}
                for n in self.task_names]

    def at(self, step: int) -> Injections:
        """The injections of one step (the whole global batch)."""
        return self.share(step)

    def share(self, step: int, rank: int = 0, world: int = 1) -> Injections:
        """The injections of one step in rank `rank`'s sequences (batch positions rank, rank + world, ...)."""
        return self.block(step, step + 1, rank, world)

    def block(self, start: int, stop: int, rank: int = 0, world: int = 1) -> Injections:
        """The injections of steps start .. stop - 1 in rank `rank`'s sequences, sorted. The slot draw is over the
        whole batch, so every rank computes its steps whole and keeps its part; the steps of a block are computed
        together (one generator each), which is what makes walking a whole run cheap."""
        need = self.per_step[:, start:stop]                   # (K, n)
        active = np.flatnonzero(need.sum(axis=0))             # the block's steps with injections
        if not active.size:
            return Injections.concat(self.tasks, [])
        B, need = self.global_batch_seqs, need[:, active]
        table = self.slots.table.take(self.slots.batches(start + active).ravel())
        bounds = np.asarray(table.indptr[::B])                # (steps + 1,) each step's first slot in `table`
        keys, dealt = [], []
        for i, n in enumerate(np.diff(bounds)):  # each step's generator: its slots' keys, then the dealing
            g = _step_rng(self.seed, start + int(active[i]))
            keys.append(g.random(n))
            dealt.append(_deal(g, need[:, i]))
        chosen = _smallest(np.concatenate(keys) - (table.offsets == 0), bounds, need.sum(axis=0))  # stream order
        task = np.concatenate(dealt)
        row = np.searchsorted(table.indptr, chosen, side="right") - 1
        step, batch_pos, offset = start + active[row // B], row % B, table.offsets[chosen]
        instance = np.zeros(len(task), dtype=np.int64)
        for k in np.flatnonzero(need.sum(axis=1)):
            rows = np.flatnonzero(task == k) if len(need) > 1 else slice(None)
            # in stream order, the task's cycle entries before[k, start], before[k, start] + 1, ...
            instance[rows] = self._cycle(k, int(self._before[k, start]), int(need[k].sum()))
        if world > 1:
            mine = batch_pos % world == rank
            step, batch_pos, offset, task, instance = (a[mine] for a in (step, batch_pos, offset, task, instance))
        return Injections(self.tasks, step, batch_pos, offset, task, instance,
                          self._instances[self._base[task] + instance])

    def iter_steps(self, start: int = 0, stop: int | None = None, rank: int = 0, world: int = 1,
                   ) -> Iterator[Injections]:
        """`share` of each step with injections in start .. stop - 1."""
        stop = self.steps if stop is None else stop
        for s in np.flatnonzero(self.per_step[:, start:stop].sum(axis=0)) + start:
            yield self.share(int(s), rank, world)

    def iter_blocks(self, rows: int = 1 << 18, rank: int = 0, world: int = 1) -> Iterator[Injections]:
        """The whole run as blocks of whole steps, about `rows` injections each (on average; at most 4096 steps, so
        that a sparse run's per-step arrays stay small too)."""
        per_block = min(4096, max(1, int(rows * self.steps / max(len(self), 1))))
        for a in range(0, self.steps, per_block):
            yield self.block(a, min(a + per_block, self.steps), rank, world)

    def materialise(self, rank: int = 0, world: int = 1) -> Injections:
        """Every injection of the run (in one rank's sequences) as arrays: for small cases."""
        return self.block(0, self.steps, rank, world)

    def _pass(self, k: int, p: int) -> np.ndarray:
        key = (k, p)
        order = self._passes.get(key)
        if order is None:
            order = _pass_order(self.tasks[k], self.seed, p)
            if len(self._passes) >= 4 * len(self.tasks):  # a step spans at most two passes of a task
                self._passes.clear()
            self._passes[key] = order
        return order

    def _cycle(self, k: int, first: int, count: int) -> np.ndarray:
        """Entries first .. first + count - 1 of task k's instance cycle."""
        n = len(self.tasks[k].train_ids)
        parts, j = [np.zeros(0, dtype=np.int64)], first
        while j < first + count:  # pass by pass
            p, at = divmod(j, n)
            take = min(n - at, first + count - j)
            parts.append(self._pass(k, p)[at:at + take])
            j += take
        return np.concatenate(parts)


def plan_injections(tasks: list[Task], task_cfgs: list[LMTaskConfig], *, steps: int, global_batch_seqs: int,
                    seq_len: int, seed: int, slots: SlotTable | StepSlots | None = None,
                    path: str = "tasks") -> InjectionPlan:
    """The plan of a `steps`-step run (see the module docstring). `slots`: a `StepSlots` source (the corpus in data
    order), or a table with one row per (step, batch_pos), row = step * B + batch_pos, default position 0 of each
    sequence. An interval or burst task needing more slots than a batch offers, or an iid task whose mean per batch
    is not below the slots left on average, raises ConfigError naming `path[k].frequency`."""
    B = global_batch_seqs
    if len(task_cfgs) != len(tasks):
        raise ValueError("plan_injections: one config per task")
    if slots is None:
        slots = StepSlots.first_positions(B)
    elif isinstance(slots, SlotTable):
        _check_rows(slots, steps, B)
        slots = StepSlots.of_stream(slots, B)
    capacity = slots.capacity(steps)
    per_step, rates = _plan_counts(tasks, task_cfgs, steps, B * seq_len, seed, capacity, path)
    requested, realised = _rates(tasks, rates, per_step, steps, B * seq_len)
    return InjectionPlan(tasks=list(tasks), steps=steps, global_batch_seqs=B, seq_len=seq_len, seed=seed,
                         per_step=per_step, capacity=capacity, slots=slots, requested=requested, realised=realised)


def reference_injections(tasks: list[Task], task_cfgs: list[LMTaskConfig], *, steps: int, global_batch_seqs: int,
                         seq_len: int, seed: int, slots: SlotTable | None = None, path: str = "tasks") -> Injections:
    """The same rule as `plan_injections`, the whole run in one go over the stream's slot table (one row per
    (step, batch_pos), default position 0): every slot and injection in memory. For checks on small cases."""
    B = global_batch_seqs
    slots = SlotTable.first_positions(steps * B) if slots is None else slots
    _check_rows(slots, steps, B)
    capacity = slots.counts.reshape(steps, B).sum(axis=1)
    counts, _ = _plan_counts(tasks, task_cfgs, steps, B * seq_len, seed, capacity, path)
    first = slots.offsets == 0
    picked, dealt = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for s in np.flatnonzero(counts.sum(axis=0)):
        lo, hi = slots.indptr[s * B], slots.indptr[(s + 1) * B]
        chosen, tasks_of = _draw(first[lo:hi], counts[:, s], _step_rng(seed, int(s)))
        picked.append(lo + chosen)
        dealt.append(tasks_of)
    chosen, task_ids = np.concatenate(picked), np.concatenate(dealt)
    row, offset = np.searchsorted(slots.indptr, chosen, side="right") - 1, slots.offsets[chosen]
    sort = np.argsort(row * seq_len + offset, kind="stable")
    row, offset, task_ids = row[sort], offset[sort], task_ids[sort]
    instance = np.zeros(len(row), dtype=np.int64)
    for k, t in enumerate(tasks):  # each task cycles through its train split in stream order
        rows = np.flatnonzero(task_ids == k)
        passes = -(-len(rows) // len(t.train_ids))
        instance[rows] = np.concatenate([np.zeros(0, dtype=np.int64),
                                         *(_pass_order(t, seed, p) for p in range(passes))])[:len(rows)]
    return Injections(list(tasks), row // B, row % B, offset, task_ids, instance)


def log_schema(tasks: list[Task]) -> pa.Schema:
    """DIR/injections.parquet: one row per injection, task and split dictionary-encoded."""
    names = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([("step", pa.int64()), ("batch_pos", pa.int64()), ("offset", pa.int64()), ("task", names),
                      ("instance", pa.int64()), ("split", names), ("tok1", pa.int64()), ("tok2", pa.int64()),
                      ("label", pa.int64())])


def write_injection_log(plan: InjectionPlan, path: str | Path, *, rows_per_group: int = 1 << 18) -> int:
    """Write every injection of `plan` to Parquet at `path`, a block of whole steps (about `rows_per_group` rows on
    average) per row group, so memory stays that of one block. Returns the number of rows."""
    names = pa.array(plan.task_names, pa.string())
    splits = pa.array(["train", "test"], pa.string())
    schema, total = log_schema(plan.tasks), 0

    def table(inj: Injections) -> pa.Table:
        is_test = np.zeros(len(inj), dtype=np.int32)
        for k, t in enumerate(plan.tasks):
            rows = inj.task == k
            is_test[rows] = ~t.is_train(inj.instance[rows])
        cols = [pa.array(inj.step), pa.array(inj.batch_pos), pa.array(inj.offset),
                pa.DictionaryArray.from_arrays(pa.array(inj.task.astype(np.int32)), names), pa.array(inj.instance),
                pa.DictionaryArray.from_arrays(pa.array(is_test), splits),
                *(pa.array(inj.tokens[:, j]) for j in range(3))]
        return pa.Table.from_arrays(cols, schema=schema)

    with pq.ParquetWriter(path, schema) as writer:
        for inj in plan.iter_blocks(rows_per_group):
            if len(inj):
                writer.write_table(table(inj))
                total += len(inj)
    plan.slots.forget()
    return total


# ------------------------------------------------------------------------------------------------ the rule


def _check_rows(slots: SlotTable, steps: int, B: int) -> None:
    if slots.rows != steps * B:
        raise ValueError(f"plan_injections: slots has {slots.rows} rows, expected steps * B = {steps * B}")


def _rng(seed: int, name: str, *key: int) -> np.random.Generator:
    # Keyed by task name, so adding a task leaves the other tasks' counts and instance cycles unchanged.
    return np.random.default_rng([seed, zlib.crc32(name.encode()), *key])


def _step_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, PLACE_KEY, step])


def _pass_order(task: Task, seed: int, p: int) -> np.ndarray:
    """Pass p of the task's instance cycle: its train split in a seeded order."""
    return _rng(seed, task.name, 2, p).permutation(task.train_ids)


def _plan_counts(tasks: list[Task], task_cfgs: list[LMTaskConfig], steps: int, tokens_per_batch: int, seed: int,
                 capacity: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(K, steps) instances of each task per step, within each batch's `capacity` slots, and (K,) rates per batch."""
    K = len(tasks)
    rates = np.array([c.rate_per_batch(tokens_per_batch) for c in task_cfgs])  # (K,) instances per batch
    counts = np.stack([_schedule(c, r, steps, _rng(seed, t.name, 1)) for c, r, t in zip(task_cfgs, rates, tasks)]
                      ) if K else np.zeros((0, steps), dtype=np.int64)    # (K, steps)
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
    return counts, rates


def _rates(tasks: list[Task], rates: np.ndarray, counts: np.ndarray, steps: int, tokens_per_batch: int,
           ) -> tuple[dict[str, Rate], dict[str, Rate]]:
    requested, realised = {}, {}
    for k, t in enumerate(tasks):
        requested[t.name] = Rate(per_token=float(rates[k]) / tokens_per_batch, per_batch=float(rates[k]))
        n = float(counts[k].sum())
        realised[t.name] = Rate(per_token=n / (steps * tokens_per_batch), per_batch=n / steps)
    return requested, realised


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


def _draw(first: np.ndarray, need: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One step, as `InjectionPlan.block` draws each of its steps: sum(need) of the step's slots (`first`: (n,) True
    at sequence starts) without replacement, sequence starts first (the paper's place), then document starts inside
    sequences, dealt to the tasks (need[k] to task k) in random order. One uniform key per slot, the starts' lowered
    by 1; the smallest keys win (ties: the earlier slot). Returns (slot indices, ascending, i.e. in stream order;
    task ids)."""
    keys = rng.random(len(first)) - first
    chosen = np.sort(np.argsort(keys, kind="stable")[:int(need.sum())])
    return chosen, _deal(rng, need)


def _smallest(keys: np.ndarray, bounds: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Per segment i (keys[bounds[i]:bounds[i+1]]) the indices of its totals[i] smallest keys (ties: the lower
    index), all of them ascending."""
    seg = np.repeat(np.arange(len(totals)), np.diff(bounds))
    order = np.lexsort((keys, seg))  # by segment, then key; stable
    return np.sort(order[np.arange(len(keys)) - bounds[seg] < totals[seg]])


def _deal(rng: np.random.Generator, need: np.ndarray) -> np.ndarray:
    """need[k] times task k, in random order (a single task needs no draw)."""
    dealt = np.repeat(np.arange(len(need)), need)
    return rng.permutation(dealt) if len(need) > 1 else dealt
