"""The in-context metrics (*_ctx): each prompt scored after held-out text and an EOS at position p, as an instance
injected at a document start inside a packed sequence is trained, beside the position-0 metrics."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raretask.config import ConfigError
from raretask.lm.evaluate import MAX_CONTEXTS, EvalConfig, build_evalset, evaluate
from raretask.lm.injection import plan_injections
from raretask.lm.models import LMModelConfig
from raretask.lm.tasks import LMTaskConfig, build_tasks

V, EOS, SEQ, STEPS = 320, 0, 32, 60
P = 16  # the default position: min(SEQ // 2, SEQ - 5)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def run():
    cfgs = [LMTaskConfig(name="cmp", kind="comparison", frequency=1, unit="per_batch", schedule="interval", seed=1),
            LMTaskConfig(name="add", kind="modular_addition", frequency=1, unit="per_batch", schedule="interval",
                         seed=2)]
    tasks = build_tasks(cfgs, V, {EOS, 1})
    plan = plan_injections(tasks, cfgs, steps=STEPS, global_batch_seqs=4, seq_len=SEQ, seed=0)
    heldout = np.random.default_rng(0).integers(2, V, size=40 * P).astype(np.uint16)  # 40 windows of P tokens
    return tasks, plan, heldout


def evalset(run, **kw):
    tasks, plan, heldout = run
    cfg = EvalConfig(train_instances=20, test_instances=15, heldout_tokens=0, **kw)  # no held-out loss here
    return build_evalset(tasks, [1.0, 1.0], cfg, plan=plan, heldout=heldout, seq_len=SEQ, eos_id=EOS, seed=0)


def stub():
    """Next-token logits from the prompt's last two tokens and its first one; records every forward's input."""
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))
    calls = []

    def forward(ids, logits_to_keep=None, **kw):
        assert logits_to_keep == 1  # the prediction at the last position (p + 2 in context) is the one scored
        calls.append(ids.clone())
        return (table[ids[:, -1]] + table[ids[:, -2]].roll(1, dims=-1) + 0.5 * table[ids[:, 0]].roll(2, dims=-1)
                )[:, None]

    return forward, calls, lambda ids: table[ids[:, -1]] + table[ids[:, -2]].roll(1, dims=-1) + \
        0.5 * table[ids[:, 0]].roll(2, dims=-1)


def test_context_prompts_are_heldout_text_then_eos_tok1_tok2(run):
    tasks, _, heldout = run
    es = evalset(run)
    forward, calls, logits_of = stub()
    step = 30
    per_task, _ = evaluate(torch.nn.Linear(1, 1), forward, es, batch=8, device=CPU, step=step)
    ctx = torch.cat([c for c in calls if c.shape[1] == P + 3])  # (n, p + 3)
    assert {c.shape[1] for c in calls} == {2, P + 3}  # position 0 (plain TOK1 TOK2) and in context, nothing else
    windows = heldout[:40 * P].astype(np.int64).reshape(40, P)
    asked = {}
    for row in ctx.numpy():
        assert row[P] == EOS and any(np.array_equal(row[:P], w) for w in windows)
        asked[(int(row[P + 1]), int(row[P + 2]))] = row[:P]
    for task, probe in zip(tasks, es.probes):
        ids = np.concatenate([probe.train_ids(step), probe.test_ids])
        pairs = {(int(a), int(b)) for a, b in task.instances[ids, :2]}
        assert pairs <= set(asked)  # every scored instance, in context
        for i in ids:  # each with its own fixed window
            assert np.array_equal(asked[tuple(task.instances[i, :2].tolist())], windows[probe.context_of[i]])
        for split, sel in (("train", probe.train_ids(step)), ("test", probe.test_ids)):
            prompts, labels = probe.prompts(sel, context=True)
            want = F.cross_entropy(logits_of(prompts), labels).item()
            assert per_task[probe.name][f"{split}_loss_ctx"] == pytest.approx(want, rel=1e-6)
            plain, _ = probe.prompts(sel)
            assert per_task[probe.name][f"{split}_loss"] == pytest.approx(
                F.cross_entropy(logits_of(plain), labels).item(), rel=1e-6)  # position 0: unchanged meaning
    assert len(ctx) == sum(len(p.train_ids(step)) + len(p.test_ids) for p in es.probes)
    assert len({c for c in map(int, es.probes[0].context_of)}) > 10  # the windows vary across instances


def test_context_metrics_of_a_real_model_are_the_label_after_the_prompt(run):
    torch.manual_seed(0)
    model = LMModelConfig(preset="cpu-30k").build(V).eval()
    es = evalset(run)
    per_task, _ = evaluate(model, lambda ids, **kw: model(ids, **kw), es, batch=8, device=CPU, step=STEPS)
    probe = es.probes[1]
    prompts, labels = probe.prompts(probe.test_ids, context=True)
    with torch.no_grad():
        logits = model(prompts)[:, P + 2]  # (n, V): after EOS (at P) TOK1 TOK2
    assert per_task["add"]["test_loss_ctx"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    for k in ("train_loss_ctx", "train_acc_labels_ctx", "test_acc_labels_ctx", "test_acc_vocab_ctx"):
        assert np.isfinite(per_task["add"][k]), k


def test_context_off_or_without_heldout_text_is_none_and_position_is_checked(run):
    tasks, plan, heldout = run
    forward, calls, _ = stub()
    for es in (evalset(run, context=False),
               build_evalset(tasks, [1.0, 1.0], EvalConfig(), plan=plan, heldout=heldout[:P - 1], seq_len=SEQ,
                             eos_id=EOS, seed=0)):
        per_task, _ = evaluate(torch.nn.Linear(1, 1), forward, es, batch=8, device=CPU, step=10)
        assert per_task["cmp"]["test_loss_ctx"] is None and per_task["cmp"]["train_loss_ctx"] is None
        assert np.isfinite(per_task["cmp"]["test_loss"])
    assert {c.shape[1] for c in calls} == {2}
    assert evalset(run, context_pos=3).probes[0].contexts.shape == (MAX_CONTEXTS, 4)  # 3 tokens + EOS
    assert EvalConfig().context_position(4096) == 2048 and EvalConfig().context_position(10) == 5
    assert EvalConfig(context_pos=SEQ - 5).context_position(SEQ) == SEQ - 5
    with pytest.raises(ConfigError) as e:
        EvalConfig(context_pos=SEQ - 4).context_position(SEQ)
    assert str(e.value).startswith("eval.context_pos: 28 ") and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^eval\.context_pos: "):
        EvalConfig().context_position(5)  # no document start with room for an instance after position 0
