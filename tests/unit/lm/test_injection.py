"""Injection: slots, the plan's rates, and OLMo-core's loader yielding exactly the logged injections."""

import numpy as np
import pytest

from raretask.config import ConfigError
import pyarrow.parquet as pq

from raretask.lm.injection import (SlotTable, build_data_loader, iter_steps, plan_injections, sequence_slots,
                                   stream_slots, write_injection_log)
from raretask.lm.tasks import LMTaskConfig, build_tasks

V, EOS, PAD = 2000, 0, 1
SEQ, B, STEPS = 32, 8, 50  # the corpus below holds 31 batches: 50 steps cross into a second epoch
WIDE = 32                  # batch size for plans made without data (one slot per sequence)


def make_corpus(path, tasks, n_tokens=8000, seed=0, max_doc=40):
    """A raw uint16 token file of EOS-separated random documents that never use a task's tokens."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(2, V), np.concatenate([t.tokens for t in tasks]))
    lengths = rng.integers(1, max_doc, size=n_tokens)
    ends = np.cumsum(lengths + 1)
    tokens = rng.choice(pool, size=n_tokens)
    tokens[(ends[ends <= n_tokens] - 1)] = EOS
    tokens.astype(np.uint16).tofile(path)
    return tokens


def task_cfgs():
    return [LMTaskConfig(name="cmp", kind="comparison", frequency=2e-3),                        # iid, per token
            LMTaskConfig(name="add", kind="modular_addition", frequency=2, unit="per_batch",
                         schedule="burst", every=4),
            LMTaskConfig(name="rare", kind="comparison", frequency=0.25, unit="per_batch", schedule="interval")]


@pytest.fixture
def setup(tmp_path):
    cfgs = task_cfgs()
    tasks = build_tasks(cfgs, V, {EOS, PAD})
    make_corpus(tmp_path / "tokens.bin", tasks)

    def build(workers=0, steps=STEPS, **kw):
        args = dict(token_path=tmp_path / "tokens.bin", dtype="uint16", eos_id=EOS, pad_id=PAD, vocab_size=V,
                    seq_len=SEQ, global_batch_seqs=B, seed=7, work_dir=tmp_path / "work", tasks=tasks,
                    task_cfgs=cfgs, steps=steps, num_workers=workers)
        return build_data_loader(**{**args, **kw})

    return tasks, cfgs, build


def stream(loader, steps=STEPS):
    return np.stack([b["input_ids"].numpy().copy() for _, b in iter_steps(loader, steps)])  # (steps, B, SEQ)


def test_sequence_slots_by_hand():
    #            seq 0: EOS at 2, 9 (a 2-token piece at 0, pieces of 7 and 6 tokens)
    seq0 = [5, 6, EOS, 7, 7, 7, 7, 7, 7, EOS, 8, 8, 8, 8, 8, 8]
    seq1 = [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, EOS, 3, 3]  # piece after the EOS: 2 tokens, no room
    s = sequence_slots(np.array(seq0 + seq1 + [4, 4]), 16, EOS)   # the 2 trailing tokens are no sequence
    assert s.rows == 2
    assert s.offsets[s.indptr[0]:s.indptr[1]].tolist() == [3, 10]
    assert s.offsets[s.indptr[1]:s.indptr[2]].tolist() == [0]
    st = stream_slots(s, np.array([1, 0, 1]))
    assert st.counts.tolist() == [1, 2, 1] and st.offsets.tolist() == [0, 3, 10, 0]


def test_rates_requested_vs_realised(setup):
    tasks, cfgs, _ = setup
    steps = 4000
    plan = plan_injections(tasks, cfgs, steps=steps, global_batch_seqs=WIDE, seq_len=SEQ, seed=3)
    req, real, n = plan.requested, plan.realised, plan.counts()
    inj = plan.materialise()
    # iid: Poisson total with mean rate * steps; within 4 standard deviations.
    mean = cfgs[0].frequency * WIDE * SEQ * steps
    assert req["cmp"].per_token == cfgs[0].frequency and req["cmp"].per_batch == pytest.approx(2e-3 * WIDE * SEQ)
    assert abs(n["cmp"] - mean) < 4 * np.sqrt(mean)
    assert real["cmp"].per_batch == n["cmp"] / steps and real["cmp"].per_token == n["cmp"] / (steps * WIDE * SEQ)
    # burst and interval: exact, and placed as scheduled.
    for name in ("add", "rare"):
        assert real[name] == req[name]
    add_steps, add_counts = np.unique(inj.step[inj.task == 1], return_counts=True)
    assert np.array_equal(add_steps, np.arange(0, steps, 4)) and (add_counts == 8).all()
    assert np.array_equal(plan.steps_of("rare"), np.arange(0, steps, 4))
    # Without data, only sequence starts are slots and every slot carries at most one instance.
    assert (inj.offset == 0).all()
    assert len(np.unique(inj.step * WIDE + inj.batch_pos)) == len(inj) == len(plan)


def test_plan_is_seeded_and_cycles_the_train_split(setup):
    tasks, cfgs, _ = setup
    kw = dict(steps=6000, global_batch_seqs=WIDE, seq_len=SEQ)
    plan = plan_injections(tasks, cfgs, seed=3, **kw)
    assert plan.fingerprint == plan_injections(tasks, cfgs, seed=3, **kw).fingerprint
    assert plan.fingerprint != plan_injections(tasks, cfgs, seed=4, **kw).fingerprint
    # The first 5000 instances of a task are its whole train split, each once.
    inj = plan.materialise()
    add = inj.instance[inj.task == 1]
    assert len(add) > 5000 and np.array_equal(np.sort(add[:5000]), tasks[1].train_ids)
    # A task's counts do not depend on the other tasks of the run.
    alone = plan_injections(tasks[:1], cfgs[:1], seed=3, **kw).materialise()
    assert np.array_equal(np.bincount(alone.step, minlength=6000), np.bincount(inj.step[inj.task == 0],
                                                                             minlength=6000))


def test_frequency_above_what_slots_can_place(setup):
    tasks, cfgs, _ = setup
    cfgs[1].every = 40  # 2 per batch -> 80 in one batch of 8 sequences
    with pytest.raises(ConfigError) as e:
        plan_injections(tasks, cfgs, steps=100, global_batch_seqs=B, seq_len=SEQ, seed=0)
    assert str(e.value).startswith("tasks[1].frequency: add") and "\n" not in str(e.value)
    cfgs[1].every = 4
    cfgs[2].frequency = 9  # interval: 9 per batch of 8 sequences, one slot each
    with pytest.raises(ConfigError, match=r"^tasks\[2\]\.frequency: rare"):
        plan_injections(tasks, cfgs, steps=10, global_batch_seqs=B, seq_len=SEQ, seed=0)
    # Document starts inside sequences add slots: 9 per batch fits once the slots come from the data.
    slots = SlotTable(np.arange(0, 3 * 10 * B + 1, 3), np.tile([0, 10, 20], 10 * B))
    plan = plan_injections(tasks, cfgs, steps=10, global_batch_seqs=B, seq_len=SEQ, seed=0, slots=slots)
    assert plan.counts()["rare"] == 90 and set(plan.materialise().offset.tolist()) == {0, 10, 20}


def test_every_injection_lands_where_the_log_says(setup, tmp_path):
    tasks, _, build = setup
    loader, lazy = build()
    plan = lazy.materialise()
    got = stream(loader)
    assert len(plan) > 100 and (plan.offset > 0).any()  # document starts inside sequences are used too
    win = got[plan.step[:, None], plan.batch_pos[:, None], plan.offset[:, None] + np.arange(4)]  # (n, 4)
    assert np.array_equal(win[:, :3], plan.tokens) and (win[:, 3] == EOS).all()
    write_injection_log(lazy, tmp_path / "injections.parquet")
    log = pq.read_table(tmp_path / "injections.parquet").to_pydict()
    assert log["split"] == ["train"] * len(plan)
    assert np.array_equal(log["tok1"], plan.tokens[:, 0]) and log["task"][0] in {"cmp", "add", "rare"}
    # Nothing else changed: outside the logged windows the stream is OLMo-core's plain order.
    plain = np.stack([loader.dataset[int(i)]["input_ids"].numpy() for i in loader.stream_order(STEPS)])
    diff = (got.reshape(-1, SEQ) != plain)
    diff[plan.step * B + plan.batch_pos, :] &= ~_window_mask(plan)
    assert not diff.any()


def _window_mask(plan):
    mask = np.zeros((len(plan), SEQ), dtype=bool)
    for j in range(4):
        mask[np.arange(len(plan)), plan.offset + j] = True
    # Rows with several injections: OR their windows together.
    rows = plan.step * B + plan.batch_pos
    out = np.zeros((rows.max() + 1, SEQ), dtype=bool)
    np.logical_or.at(out, rows, mask)
    return out[rows]


def test_no_test_instance_in_the_train_stream(setup):
    tasks, _, build = setup
    loader, lazy = build()
    plan = lazy.materialise()
    flat = stream(loader).ravel()
    win = np.lib.stride_tricks.sliding_window_view(flat, 4)  # every 4-token window of the whole stream
    doc_start = np.ones(len(win), dtype=bool)
    doc_start[1:] = (flat[:len(win) - 1] == EOS) | (np.arange(1, len(win)) % SEQ == 0)
    for k, t in enumerate(tasks):
        # The corpus has no task tokens, so every document-initial (TOK1, TOK2, x, EOS) over S is an injection.
        hit = np.isin(win[:, :2], t.value_tokens).all(axis=1) & (win[:, 3] == EOS) & doc_start
        found = t.instance_of(win[hit, 0], win[hit, 1])
        assert len(found) == np.sum(plan.task == k) > 0
        assert not np.isin(found, t.test_ids).any()
        assert np.array_equal(win[hit, 2], t.label_of(found))
        assert np.isin(flat, t.tokens).sum() == len(found) * (3 if t.kind == "modular_addition" else 2) + \
            np.isin(win[hit, 2], t.label_tokens).sum() * (t.kind != "modular_addition")


def test_same_stream_with_0_or_2_workers(setup):
    _, _, build = setup
    loader0, plan0 = build(workers=0)
    loader2, plan2 = build(workers=2)
    assert plan0.fingerprint == plan2.fingerprint
    assert np.array_equal(stream(loader0), stream(loader2))


def test_resume_from_state_dict(setup):
    _, _, build = setup
    full = stream(build()[0])
    loader, _ = build()
    loader.reshuffle(epoch=1)
    first = [b["input_ids"].numpy().copy() for _, b in zip(range(10), loader)]
    state = loader.state_dict()
    resumed, _ = build()
    resumed.load_state_dict(state)
    resumed.reshuffle(epoch=state["epoch"])
    rest = [b["input_ids"].numpy() for b in resumed]  # to the end of epoch 1
    assert np.array_equal(np.stack(first + rest), full[:len(first) + len(rest)])
    other, _ = build(steps=STEPS + 4)
    with pytest.raises(RuntimeError, match="different injection plan"):
        other.load_state_dict(state)


def test_loader_errors(setup, tmp_path):
    tasks, cfgs, build = setup
    with pytest.raises(ConfigError, match=r"^vocab_size: task cmp uses token"):
        build(vocab_size=int(tasks[0].tokens.max()))
    with pytest.raises(ConfigError, match=r"^token_path: "):
        build(token_path=tmp_path / "missing.bin")
    with pytest.raises(ConfigError, match=r"^token_path: .* fewer than one global batch"):
        build(global_batch_seqs=1000)
    with pytest.raises(ConfigError, match=r"^dtype: "):
        build(dtype="float32")
