"""Value/label tokens drawn from a corpus-frequency band, and the natural occurrences of a task's triples."""

import numpy as np
import pytest

from raretask.config import ConfigError
from raretask.lm.tasks import (NUM_INSTANCES, LMTaskConfig, band_tokens, build_task, build_tasks,
                               natural_occurrences, token_counts)

V, SPECIAL = 1000, frozenset({0, 1})


def cfg(name="t", kind="comparison", **kw) -> LMTaskConfig:
    return LMTaskConfig(name=name, kind=kind, frequency=1e-4, **kw)


def zipf_counts() -> np.ndarray:
    """Token id k occurs ~ 1e6 / k times: id 2 is the most frequent, id 999 the rarest (ids 0, 1 special)."""
    c = np.zeros(V, dtype=np.int64)
    c[2:] = (1e6 / np.arange(2, V)).astype(np.int64)
    return c


def test_band_is_quantiles_of_corpus_frequency():
    c = zipf_counts()
    rare = band_tokens(c, V, SPECIAL, [0.0, 0.25])      # the rarest quarter of the 998 ordinary ids
    assert len(rare) == 250 and rare.min() == V - 250 and rare.max() == V - 1
    common = band_tokens(c, V, SPECIAL, [0.9, 1.0])
    assert set(common.tolist()) == set(range(2, 2 + len(common))) and 0 not in common and 1 not in common
    assert len(band_tokens(c, V, SPECIAL, [0.0, 1.0])) == V - 2


def test_task_tokens_come_from_the_band():
    c = zipf_counts()
    t = build_task(cfg(value_band=[0.0, 0.2]), V, SPECIAL, counts=c)
    band = set(band_tokens(c, V, SPECIAL, [0.0, 0.2]).tolist())
    assert set(t.value_tokens.tolist()) <= band and set(t.label_tokens.tolist()) <= band
    assert len(set(t.tokens.tolist())) == 102
    # two tasks share one band without sharing tokens; the same seed gives the same tokens
    a, b = build_tasks([cfg("a", value_band=[0.0, 0.3]), cfg("b", "modular_addition", value_band=[0.0, 0.3])],
                       V, SPECIAL, counts=c)
    assert not set(a.tokens.tolist()) & set(b.tokens.tolist())
    again = build_task(cfg(value_band=[0.0, 0.2]), V, SPECIAL, counts=c)
    assert np.array_equal(again.instances, t.instances)


@pytest.mark.parametrize("band, field", [([0.5, 0.2], "value_band"), ([0.1], "value_band"),
                                          ([-0.1, 0.5], "value_band"), ([0.0, 1.5], "value_band")])
def test_bad_band_is_one_config_error(band, field):
    with pytest.raises(ConfigError, match=rf"^tasks\[0\]\.{field}: expected \[lo, hi\]"):
        build_tasks([cfg(value_band=band)], V, SPECIAL, counts=zipf_counts())


def test_band_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"^task\.value_band: cannot be combined"):
        build_task(cfg(value_band=[0, 0.5], dedicated_tokens=True), V, SPECIAL, counts=zipf_counts())
    with pytest.raises(ConfigError, match=r"^task\.value_band: needs the corpus token counts"):
        build_task(cfg(value_band=[0, 0.5]), V, SPECIAL)
    with pytest.raises(ConfigError, match=r"^task\.value_band: the band holds 50 tokens"):
        build_task(cfg(value_band=[0, 0.05]), V, SPECIAL, counts=zipf_counts())


def test_natural_occurrences_counts_train_and_test_triples():
    t = build_task(cfg(), V, SPECIAL)
    tr, te = int(t.train_ids[3]), int(t.test_ids[7])
    other = np.setdiff1d(np.arange(2, V), t.tokens)[:5]
    wrong = t.label_tokens[1 - t.labels[tr]]
    stream = np.concatenate([
        other, t.instances[tr], other, t.instances[tr], t.instances[te],     # 2 train, 1 test triples
        t.instances[tr, :2], [wrong], other,                                  # a pair with the wrong label
        [t.value_tokens[5]], other[:1], [t.label_tokens[0]],                  # no pair
    ]).astype(np.uint16)
    n = natural_occurrences(t, stream)
    assert n["train"] == 2 and n["test"] == 1
    # pairs: the three triples and the wrong-label pair (a LABEL between triples breaks any other pair)
    assert n["pairs"] == 4
    assert n["value_tokens"] == 9 and n["label_tokens"] == 5
    assert natural_occurrences(t, np.zeros(0, dtype=np.uint16))["train"] == 0


def test_token_counts():
    assert token_counts(np.array([3, 3, 5, 0], dtype=np.uint16), 6).tolist() == [1, 0, 0, 2, 0, 1]
    assert NUM_INSTANCES == 10000
