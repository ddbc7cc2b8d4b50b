"""The lazy injection plan: each rank's share, step by step, equals the whole-run reference of the same rule; the
log streams the reference's content; a paper-length run is planned and walked in bounded memory."""

import pickle
import tomllib
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raretask.lm.plan import Injections, plan_injections, reference_injections, write_injection_log
from raretask.lm.slots import StepSlots, cached_sequence_slots, sequence_slots, stream_slots
from raretask.lm.tasks import LMTaskConfig, build_tasks
from tests.unit.lm.test_injection import EOS, PAD, SEQ, V

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "lm"
B, STEPS = 8, 300  # the corpus below: 31 batches per epoch, so 300 steps run through ~10 epochs
COLUMNS = ("step", "batch_pos", "offset", "task", "instance", "tokens")


def corpus_tokens(n_tokens=8000, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, 1000, size=n_tokens)
    tokens[rng.random(n_tokens) < 0.2] = EOS  # documents of ~5 tokens: ~5 slots per sequence of 32
    return tokens


class Order:
    """A seeded permutation of the sequences per epoch (OLMo-core's order is one too)."""

    def __init__(self, n):
        self.n = n

    def __call__(self, epoch):
        return np.random.default_rng([11, epoch]).permutation(self.n)


SCHEDULES = {
    "iid": [LMTaskConfig(name="a", kind="modular_addition", frequency=20, unit="per_batch")],
    "interval": [LMTaskConfig(name="a", kind="modular_addition", frequency=20.3, unit="per_batch",
                              schedule="interval")],
    "burst": [LMTaskConfig(name="a", kind="comparison", frequency=6, unit="per_batch", schedule="burst",
                           every=3)],
    "all three": [LMTaskConfig(name="a", kind="comparison", frequency=4e-2),  # iid, per token: 10 per batch
                  LMTaskConfig(name="b", kind="modular_addition", frequency=8.5, unit="per_batch",
                               schedule="interval"),
                  LMTaskConfig(name="c", kind="comparison", frequency=2, unit="per_batch", schedule="burst",
                               every=4)],
}


def both(cfgs, data=True, steps=STEPS, seed=3):
    """(lazy plan over a per-epoch order, reference over the same stream's slot table, tasks)."""
    tasks = build_tasks(cfgs, V, {EOS, PAD})
    kw = dict(steps=steps, global_batch_seqs=B, seq_len=SEQ, seed=seed)
    if not data:
        return plan_injections(tasks, cfgs, **kw), reference_injections(tasks, cfgs, **kw), tasks
    table = sequence_slots(corpus_tokens(), SEQ, EOS)
    order, per_epoch = Order(table.rows), table.rows // B
    stream = np.concatenate([order(e)[:per_epoch * B] for e in range(1, steps // per_epoch + 2)])[:steps * B]
    lazy = plan_injections(tasks, cfgs, slots=StepSlots(table, order, per_epoch, B), **kw)
    return lazy, reference_injections(tasks, cfgs, slots=stream_slots(table, stream), **kw), tasks


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_each_rank_share_step_by_step_equals_the_whole_run_reference(schedule):
    lazy, ref, tasks = both(SCHEDULES[schedule])
    assert len(ref) == len(lazy) > 0 and (ref.offset > 0).any()  # document starts inside sequences used
    for world in (1, 2, 4):
        union = Injections.concat(tasks, [lazy.materialise(rank=r, world=world) for r in range(world)])
        o = np.lexsort((union.offset, union.batch_pos, union.step))
        for col in COLUMNS:
            assert np.array_equal(getattr(union, col)[o], getattr(ref, col)), (world, col)
    for k, t in enumerate(tasks):  # when each instance is first injected, from the counts alone
        first = np.full(len(t.labels), STEPS, dtype=np.int64)
        np.minimum.at(first, ref.instance[ref.task == k], ref.step[ref.task == k])
        assert np.array_equal(lazy.first_steps(t.name), first)


def test_the_instance_cycle_crosses_passes_identically():
    """6,000 instances of a task: the cycle's second pass starts inside a step, in the lazy plan as in the
    reference; without data (sequence starts only) they agree too."""
    cfgs = SCHEDULES["interval"]
    lazy, ref, tasks = both(cfgs)
    assert len(ref) > len(tasks[0].train_ids) and np.array_equal(lazy.materialise().instance, ref.instance)
    first_pass = ref.instance[:len(tasks[0].train_ids)]
    assert np.array_equal(np.sort(first_pass), tasks[0].train_ids)
    sparse = [LMTaskConfig(name="a", kind="comparison", frequency=2, unit="per_batch"),
              LMTaskConfig(name="b", kind="comparison", frequency=2.5, unit="per_batch", schedule="interval"),
              LMTaskConfig(name="c", kind="comparison", frequency=1, unit="per_batch", schedule="burst", every=4)]
    lazy, ref, _ = both(sparse, data=False, steps=100)  # 8 slots per batch
    for col in COLUMNS:
        assert np.array_equal(getattr(lazy.materialise(), col), getattr(ref, col))


def test_a_step_needs_nothing_of_the_others():
    """Step s computed on its own (a fresh plan, no step before it) equals step s of a walk through the run."""
    lazy, _, _ = both(SCHEDULES["all three"])
    walked = {int(inj.step[0]): inj for inj in lazy.iter_steps()}
    for s in (STEPS - 1, 137, 0):
        alone, _, _ = both(SCHEDULES["all three"])
        for col in COLUMNS:
            assert np.array_equal(getattr(alone.at(s), col), getattr(walked[s], col))


def test_the_streamed_log_holds_the_whole_run_log(tmp_path):
    lazy, ref, _ = both(SCHEDULES["all three"])
    n = write_injection_log(lazy, tmp_path / "injections.parquet", rows_per_group=500)
    got = pq.read_table(tmp_path / "injections.parquet")
    old = ref.log_table()
    assert n == len(ref) and pq.ParquetFile(tmp_path / "injections.parquet").metadata.num_row_groups > 3
    assert got.schema.names == old.schema.names and got.schema.types == old.schema.types
    assert got.to_pydict() == old.to_pydict()


def test_a_paper_length_run_is_planned_and_walked_in_bounded_memory(tmp_path):
    """The modular-addition grid's length and highest rate (20,000 steps at 7.8e-3 per token: 8 per sequence of
    1024) with 8 sequences per batch instead of 1024: 1.28M injections, ~80 MB as arrays. The plan holds its counts
    (kilobytes), a step is computed when asked for, and the log streams a row group at a time."""
    grid = tomllib.loads((CONFIGS / "paper_sweep_modular_addition.toml").read_text())
    steps, T, rate = grid["train"]["steps"], grid["data"]["seq_len"], max(grid["sweep"]["frequencies"])
    assert (steps, T, rate) == (20000, 1024, 7.8e-3)
    cfgs = [LMTaskConfig(name="modular_addition", kind="modular_addition", frequency=rate, schedule="interval")]
    tasks = build_tasks(cfgs, V, {EOS, PAD})
    rng = np.random.default_rng(0)
    n_seq = 256  # documents of 20..100 tokens: ~17 slots per sequence; the run goes through it 625 times
    tokens = rng.integers(2, 1000, size=n_seq * T).astype(np.uint16)
    tokens[np.cumsum(rng.integers(20, 100, size=n_seq * T // 20))[:-1].clip(max=n_seq * T - 1)] = EOS
    tokens.tofile(tmp_path / "train.npy")
    table = cached_sequence_slots(tmp_path / "train.npy", "uint16", T, EOS, [tmp_path / "cache"])

    tracemalloc.start()
    plan = plan_injections(tasks, cfgs, steps=steps, global_batch_seqs=B, seq_len=T, seed=0,
                           slots=StepSlots(table, Order(n_seq), n_seq // B, B))
    built = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    walked = sum(len(inj) for inj in plan.iter_steps(steps - 200, steps, rank=1, world=2))  # a rank, late on
    per_step = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows = len(plan)
    assert rows == round(rate * B * T * steps)  # interval: exactly rate x steps, 64 per batch
    assert 0.45 * 200 * 64 < walked < 0.55 * 200 * 64
    assert built < 5e6 and per_step < 3e6  # vs rows * 64 bytes = 82 MB as arrays
    assert len(pickle.dumps(plan)) < 3e6  # what each data-loader worker receives

    pool = pa.proxy_memory_pool(pa.default_memory_pool())  # Arrow's allocations, which tracemalloc does not see
    default = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        assert write_injection_log(plan, tmp_path / "injections.parquet", rows_per_group=1 << 16) == rows
    finally:
        pa.set_memory_pool(default)
    assert pool.max_memory() < 10e6  # a row group or two, not the 1.28M rows
    meta = pq.ParquetFile(tmp_path / "injections.parquet").metadata
    assert meta.num_rows == rows and meta.num_row_groups >= rows // (1 << 16)


def test_a_sparse_paper_length_log_touches_only_the_steps_with_injections(tmp_path):
    """The comparison grid's length and lowest rate (50,000 steps, 2.4e-8 per token: one instance every ten batches
    of 1024 x 4096): the log's blocks of 4096 steps look up only the steps with an injection."""
    grid = tomllib.loads((CONFIGS / "paper_sweep_comparison.toml").read_text())
    steps, rate = grid["train"]["steps"], min(grid["sweep"]["frequencies"]) * 1024 * grid["data"]["seq_len"]
    cfgs = [LMTaskConfig(name="comparison", kind="comparison", frequency=round(rate, 2), unit="per_batch",
                         schedule="interval")]
    plan = plan_injections(build_tasks(cfgs, V, {EOS, PAD}), cfgs, steps=steps, global_batch_seqs=B, seq_len=SEQ,
                           seed=0)
    tracemalloc.start()
    n = write_injection_log(plan, tmp_path / "injections.parquet")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == len(plan) == steps // 10 and peak < 2e6
    logged = pq.read_table(tmp_path / "injections.parquet")["step"].to_numpy()
    assert np.array_equal(np.unique(logged), plan.steps_of("comparison"))
