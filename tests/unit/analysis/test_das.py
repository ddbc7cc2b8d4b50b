"""DAS with pyvene: it recovers a planted 1-D value feature at TOK1 where the answer runs through it, finds nothing
where the information is absent or the values are shuffled, and pyvene's intervention on an OLMo-core model is
exactly h + (h_source . w - h_base . w) w at the named module and position."""

import numpy as np
import pytest
import torch

from raretask.analysis.das import counterfactual_pairs, das_layer, label_logits
from raretask.lm.tasks import NUM_VALUES

from .planted import CarryComparison, olmo, task


@pytest.fixture(scope="module")
def cmp(one_thread):
    t = task()
    rng = np.random.default_rng(0)
    return t, counterfactual_pairs(t, 600, t.train_ids, rng), counterfactual_pairs(t, 400, t.test_ids, rng)


def test_counterfactual_pairs_carry_the_label_of_the_swapped_instance(cmp):
    t, train, _ = cmp
    base = np.array([t.instance_of(a, b) for a, b in train.base.numpy()])
    source = np.array([t.instance_of(a, b) for a, b in train.source.numpy()])
    b, s = t.values[base], t.values[source]
    assert np.all(b[:, 0] != s[:, 0]) and np.isin(base, t.train_ids).all()
    want = t.labels[s[:, 0] * NUM_VALUES + b[:, 1]]  # the label of (source TOK1, base TOK2)
    assert np.array_equal(train.labels.numpy(), want)
    assert np.array_equal(train.changed, want != t.labels[base])
    assert 0.4 < train.changed.mean() < 0.6  # half change the answer, half keep it
    tok2 = counterfactual_pairs(t, 200, t.test_ids, np.random.default_rng(1), position="tok2")
    assert bool((tok2.base[:, 1] != tok2.source[:, 1]).all())  # TOK2 swapped
    assert np.array_equal(tok2.labels.numpy(), t.labels[np.array([t.instance_of(a, b2) for (a, _), (_, b2) in
                                                                  zip(tok2.base.numpy(), tok2.source.numpy())])])


@pytest.mark.parametrize("shuffled", [False, True])
def test_das_recovers_the_planted_direction_only_where_it_carries_the_answer(cmp, shuffled):
    t, train, test = cmp
    order = np.random.default_rng(1).permutation(NUM_VALUES) if shuffled else np.arange(NUM_VALUES)
    model = CarryComparison(t, order)
    labels = torch.as_tensor(t.label_tokens)
    at_embeddings = das_layer(model, "embeddings", 12, train, test, labels, 0, steps=150, layer=0)
    after_block = das_layer(model, "blocks.0", 12, train, test, labels, 0, steps=50, layer=1)
    assert after_block.iia == pytest.approx(after_block.no_intervention, abs=0.02)  # TOK1 is empty past block 0
    assert abs(after_block.iia - 0.5) < 0.1
    if shuffled:  # the model compares shuffled values: no intervention can make it follow the task
        assert abs(at_embeddings.iia - 0.5) < 0.15
    else:
        assert at_embeddings.iia > 0.95 and at_embeddings.iia_train > 0.95
        assert abs(at_embeddings.direction[:6] @ model.u.numpy()) > 0.95  # the planted direction itself
        assert np.linalg.norm(at_embeddings.direction) == pytest.approx(1)
    assert all(p.requires_grad for p in model.parameters())  # pyvene's freezing undone


def test_the_pyvene_intervention_is_the_interchange_formula_on_olmo_core(cmp):
    t, train, test = cmp
    model = olmo(n_layers=2)
    labels = torch.as_tensor(t.label_tokens)
    fit = das_layer(model, "blocks.0", model.d_model, train, test, labels, 0, steps=3, layer=1)
    w = torch.as_tensor(fit.direction, dtype=torch.float32)
    source = {}

    def read(_m, _a, out):
        source["h"] = out[:, 0].clone()

    def write(_m, _a, out):
        out = out.clone()
        h = out[:, 0]
        out[:, 0] = h + ((source["h"] - h) @ w)[:, None] * w
        return out

    block = model.blocks["0"]
    with torch.no_grad():
        handle = block.register_forward_hook(read)
        model(test.source)
        handle.remove()
        handle = block.register_forward_hook(write)
        logits = label_logits(model(test.base), labels)
        handle.remove()
        plain = label_logits(model(test.base), labels)
    assert not torch.allclose(logits, plain)  # the swap along w changes the answer's logits
    assert fit.iia == int((logits.argmax(-1) == test.labels).sum()) / len(test)
    assert fit.no_intervention == int((plain.argmax(-1) == test.labels).sum()) / len(test)
