"""Injected tasks: labels of every instance, token choice, split, registration and config errors."""

import numpy as np
import pytest

from raretask.config import ConfigError, load_config
from raretask.lm.tasks import (NUM_INSTANCES, LMTaskConfig, ScheduleKind, TaskKind, Unit, build_task, build_tasks,
                               extra_tokens_needed, register_task)

V, SPECIAL = 3000, frozenset({0, 1, 2999})


def cfg(name="t", kind="comparison", **kw) -> LMTaskConfig:
    return LMTaskConfig(name=name, kind=kind, frequency=kw.pop("frequency", 1e-4), **kw)


def test_comparison_labels_every_instance():
    t = build_task(cfg(kind=TaskKind.COMPARISON), V, SPECIAL)
    inst = t.instances
    assert inst.shape == (NUM_INSTANCES, 3) and len(t.label_tokens) == 2
    v1, v2 = t.value_of(inst[:, 0]), t.value_of(inst[:, 1])
    assert np.array_equal(np.stack([v1, v2], 1), t.values)
    assert np.array_equal(inst[:, 2] == t.label_tokens[0], v1 < v2)
    assert np.array_equal(inst[:, 2] == t.label_tokens[1], v1 >= v2)
    assert all(t.label_of(i) == inst[i, 2] for i in (0, 1, 4321, 9999))


def test_modular_addition_labels_every_instance():
    t = build_task(cfg(kind="modular_addition"), V, SPECIAL)
    inst = t.instances
    assert np.array_equal(t.label_tokens, t.value_tokens)
    assert np.array_equal(t.value_of(inst[:, 2]), (t.value_of(inst[:, 0]) + t.value_of(inst[:, 1])) % 100)
    assert np.array_equal(t.instance_of(inst[:, 0], inst[:, 1]), np.arange(NUM_INSTANCES))


def test_registered_tasks_label_every_instance():
    register_task("test_parity", lambda a, b: (a + b) % 2, num_labels=2, replace=True)
    register_task("test_max", np.maximum, replace=True)
    par, mx = build_tasks([cfg("p", "test_parity"), cfg("m", "test_max")], V, SPECIAL)
    v = par.values
    assert np.array_equal(par.instances[:, 2], par.label_tokens[(v[:, 0] + v[:, 1]) % 2])
    inst = mx.instances
    assert np.array_equal(mx.value_of(inst[:, 2]), np.maximum(mx.value_of(inst[:, 0]), mx.value_of(inst[:, 1])))
    with pytest.raises(ValueError, match="already registered"):
        register_task("test_max", np.maximum)
    register_task("test_bad", lambda a, b: a + b, num_labels=2, replace=True)  # indices outside 0..1
    with pytest.raises(ValueError, match="rule must return"):
        build_task(cfg("b", "test_bad"), V, SPECIAL)


def test_tokens_split_and_seed():
    tasks = build_tasks([cfg("a"), cfg("b", "modular_addition"), cfg("c", seed=3)], V, SPECIAL)
    all_tokens = np.concatenate([t.tokens for t in tasks])
    assert len(np.unique(all_tokens)) == len(all_tokens) == 102 + 100 + 102  # distinct across tasks
    assert not set(all_tokens.tolist()) & SPECIAL and all_tokens.max() < V and all_tokens.min() >= 0
    for t in tasks:
        assert len(np.unique(t.value_tokens)) == 100
        assert len(t.train_ids) == len(t.test_ids) == 5000
        assert np.array_equal(np.union1d(t.train_ids, t.test_ids), np.arange(NUM_INSTANCES))
        assert t.is_train(t.train_ids).all() and not t.is_train(t.test_ids).any()
    again = build_task(cfg("a"), V, SPECIAL)
    assert np.array_equal(again.value_tokens, tasks[0].value_tokens)
    assert np.array_equal(again.train_ids, tasks[0].train_ids)
    other = build_task(cfg("a", seed=1), V, SPECIAL)
    assert not np.array_equal(other.value_tokens, again.value_tokens)
    assert not np.array_equal(other.train_ids, again.train_ids)


def test_dedicated_tokens_and_extra_rows():
    tasks = build_tasks([cfg("a", dedicated_tokens=True), cfg("b", "modular_addition", dedicated_tokens=True),
                         cfg("c")], V, SPECIAL)
    a, b, c = tasks
    assert a.tokens.min() == V and a.tokens.max() == V + 101
    assert b.tokens.min() == V + 102 and b.tokens.max() == V + 201
    assert c.tokens.max() < V
    assert extra_tokens_needed(tasks) == 202 and extra_tokens_needed([c]) == 0


def test_explicit_tokens():
    t = build_task(cfg(value_tokens=list(range(10, 110)), label_tokens=[500, 501]), V, SPECIAL)
    assert np.array_equal(t.value_tokens, np.arange(10, 110)) and t.value_of(57) == 47


@pytest.mark.parametrize("kw, field", [
    (dict(frequency=0.0), "tasks[0].frequency"),
    (dict(frequency=-1e-5), "tasks[0].frequency"),
    (dict(frequency=float("nan")), "tasks[0].frequency"),
    (dict(frequency=0.5), "tasks[0].frequency"),                     # above 1/4 per token
    (dict(kind="nope"), "tasks[0].kind"),
    (dict(schedule=ScheduleKind.BURST), "tasks[0].every"),           # burst needs a period
    (dict(every=4), "tasks[0].every"),                               # period without burst
    (dict(value_tokens=[0] + list(range(10, 109))), "tasks[0].value_tokens"),   # EOS is special
    (dict(value_tokens=list(range(2900, 3000))), "tasks[0].value_tokens"),      # 2999 is special
    (dict(value_tokens=list(range(10, 109)) + [3500]), "tasks[0].value_tokens"),  # outside the vocabulary
    (dict(value_tokens=list(range(10, 110)), label_tokens=[20, 501]), "tasks[0].label_tokens"),  # reused
    (dict(kind="modular_addition", label_tokens=[5, 6]), "tasks[0].label_tokens"),
    (dict(dedicated_tokens=True, value_tokens=list(range(10, 110))), "tasks[0].dedicated_tokens"),
])
def test_config_errors_are_one_line_and_name_the_field(kw, field):
    with pytest.raises(ConfigError) as e:
        build_tasks([cfg(**kw)], V, SPECIAL)
    assert str(e.value).startswith(f"{field}:") and "\n" not in str(e.value)


def test_vocabulary_too_small_and_duplicate_names():
    with pytest.raises(ConfigError, match=r"^tasks\[1\]\.kind: the vocabulary .* cannot supply"):
        build_tasks([cfg("a"), cfg("b")], 150, {0, 1})   # 148 usable ids: the first task takes 102
    with pytest.raises(ConfigError, match=r"^tasks\[1\]\.name: .* used twice"):
        build_tasks([cfg("a"), cfg("a")], V, SPECIAL)


def test_config_from_toml(tmp_path):
    (tmp_path / "t.toml").write_text('name = "cmp"\nfrequency = 2.4e-5\nkind = "COMPARISON"\n')
    c = load_config(LMTaskConfig, tmp_path / "t.toml", ["schedule=burst", "every=10", "unit=per_batch"])
    assert (c.kind, c.schedule, c.every, c.unit) == ("comparison", ScheduleKind.BURST, 10, Unit.PER_BATCH)
    assert c.rate_per_batch(4096) == 2.4e-5
    c2 = LMTaskConfig.from_dict(dict(name="x", frequency=1e-3, unit="per_token"))
    assert c2.rate_per_batch(4096) == pytest.approx(4.096)
    assert "every" in c.to_toml()
