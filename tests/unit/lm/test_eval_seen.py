"""Memorisation is scored on the train instances the model has been trained on: at each evaluation step, those the
injection plan put into the batches before it (a fixed-seed subset of them), and the row says how many were seen."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raretask.lm.evaluate import EvalConfig, build_evalset, evaluate, metric_rows
from raretask.lm.injection import plan_injections
from raretask.lm.tasks import LMTaskConfig, build_tasks

V, STEPS, B, SEQ = 400, 400, 8, 16


@pytest.fixture(scope="module")
def run():
    """Two tasks: one instance every other step (interval) and an iid one at 0.1 per step, 400 steps."""
    cfgs = [LMTaskConfig(name="cmp", kind="comparison", frequency=0.5, unit="per_batch", schedule="interval", seed=1),
            LMTaskConfig(name="add", kind="modular_addition", frequency=0.1, unit="per_batch", seed=2)]
    tasks = build_tasks(cfgs, V, {0, 1})
    plan = plan_injections(tasks, cfgs, steps=STEPS, global_batch_seqs=B, seq_len=SEQ, seed=3)
    return tasks, plan


def evalset(run, train_instances=50, seed=3):
    tasks, plan = run
    return build_evalset(tasks, [1e-3, 1e-3], EvalConfig(train_instances=train_instances, test_instances=20),
                         plan=plan, heldout=None, seq_len=SEQ, eos_id=0, seed=seed)


@pytest.mark.parametrize("step", [0, 1, 2, 3, 37, 150, 399, 400])
def test_scored_train_instances_were_injected_before_the_step(run, step):
    tasks, plan = run
    inj = plan.materialise()
    for k, probe in enumerate(evalset(run).probes):
        injected = np.unique(inj.instance[(inj.task == k) & (inj.step < step)])  # in batches 0 .. step - 1
        ids = probe.train_ids(step)
        assert np.isin(ids, injected).all() and probe.seen(step) == len(injected)
        assert len(ids) == min(50, len(injected)) and len(np.unique(ids)) == len(ids)
        every = build_evalset(tasks, [1e-3] * 2, EvalConfig(train_instances=0), plan=plan, heldout=None,
                              seq_len=SEQ, eos_id=0, seed=3).probes[k]
        assert np.array_equal(every.train_ids(step), injected)  # 0 = all of the seen ones


def test_nothing_is_seen_at_step_0_and_the_subset_is_seeded(run):
    a, b, other = evalset(run).probes[0], evalset(run).probes[0], evalset(run, seed=4).probes[0]
    assert a.seen(0) == 0 and len(a.train_ids(0)) == 0
    assert a.seen(1) == 1 and a.seen(STEPS) == 200  # one instance every other step: 200 distinct of 5000
    for step in (50, 200, STEPS):
        assert np.array_equal(a.train_ids(step), b.train_ids(step))
    assert not np.array_equal(a.train_ids(STEPS), other.train_ids(STEPS))  # 50 of 200: another draw
    # A fixed order: an instance scored at step k stays scored unless one earlier in the order is newly seen.
    early, late = set(a.train_ids(150).tolist()), set(a.train_ids(STEPS).tolist())
    rank = {int(i): r for r, i in enumerate(a.train_order)}
    dropped = early - late
    assert all(rank[d] > max(rank[i] for i in late - early) for d in dropped)


def stub(V):
    """A forward whose next-token logits depend on the prompt's last two tokens; it records what it is asked."""
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))
    calls = []

    def forward(ids, logits_to_keep=None, **kw):
        assert logits_to_keep == 1  # only the prediction after TOK2 is scored
        calls.append(ids.clone())
        return (table[ids[:, -1]] + table[ids[:, -2]].roll(1, dims=-1))[:, None]  # (b, 1, V)

    return forward, table, calls


def test_train_metrics_score_the_seen_instances_and_are_none_before_any(run):
    es = evalset(run)
    forward, table, calls = stub(V)
    model = torch.nn.Linear(1, 1)
    per_task, _ = evaluate(model, forward, es, batch=16, device=torch.device("cpu"), step=0)
    for name in ("cmp", "add"):
        m = per_task[name]
        assert m["train_seen"] == 0 and m["train_loss"] is None and m["train_acc_labels"] is None
        assert np.isfinite(m["test_loss"])  # the test instances are scored from step 0
    step = 37
    calls.clear()
    per_task, _ = evaluate(model, forward, es, batch=16, device=torch.device("cpu"), step=step)
    for probe in es.probes:
        prompts, labels = probe.prompts(probe.train_ids(step))
        logits = table[prompts[:, -1]] + table[prompts[:, -2]].roll(1, dims=-1)
        m = per_task[probe.name]
        assert m["train_seen"] == probe.seen(step) > 0
        assert m["train_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    asked = {tuple(r) for c in calls for r in c.tolist()}
    for probe in es.probes:  # exactly the seen train instances and the test subset were put to the model
        want = {tuple(r) for r in probe.instances[np.concatenate([probe.train_ids(step), probe.test_ids]), :2]}
        assert want <= asked
    assert len(asked) == sum(len(p.train_ids(step)) + len(p.test_ids) for p in es.probes)
    row = metric_rows(step, 0, es, per_task, {"heldout_loss": 1.0}, None)[0]
    assert row["train_seen"] == es.probes[0].seen(step) and list(row)[:7] == [
        "step", "tokens_seen", "task", "kind", "frequency", "train_seen", "train_loss"]
