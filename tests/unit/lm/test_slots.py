"""Injection slots: the chunked scan, the on-disk cache (reused, invalidated when the corpus changes, memory-mapped,
sent to workers as a path) and the per-step lookup."""

import errno
import os
import pickle
import tempfile

import numpy as np
import pytest

from raretask.lm import slots as slots_module
from raretask.lm.slots import SlotTable, StepSlots, cached_sequence_slots, sequence_slots, stream_slots
from tests.unit.lm.test_injection import EOS, SEQ


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def same(a: SlotTable, b: SlotTable) -> bool:
    return np.array_equal(a.indptr, b.indptr) and np.array_equal(np.asarray(a.offsets, np.int64), b.offsets)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus" / "train.npy"
    path.parent.mkdir()
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 500, size=4000).astype(np.uint16)
    tokens[rng.random(4000) < 0.15] = EOS  # documents of ~6 tokens: several slots per sequence of 32
    tokens.tofile(path)
    return path, tokens


def test_the_scan_in_chunks_equals_the_scan_in_one_piece(corpus):
    _, tokens = corpus
    whole = sequence_slots(tokens, SEQ, EOS, chunk_tokens=len(tokens))
    assert same(sequence_slots(tokens, SEQ, EOS, chunk_tokens=3 * SEQ), whole)  # chunks of 3 sequences
    assert whole.rows == len(tokens) // SEQ and (whole.counts > 1).any()  # document starts inside sequences


def test_the_cache_is_reused_and_rebuilt_when_the_corpus_changes(corpus, tmp_path, monkeypatch):
    path, tokens = corpus
    dirs = [tmp_path / "cache"]
    first = cached_sequence_slots(path, "uint16", SEQ, EOS, dirs)
    assert same(first, sequence_slots(tokens, SEQ, EOS))
    assert first.offsets.dtype == np.uint16 and not first.indptr.flags.owndata  # memory-mapped from disk
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.path.name]  # no temporary left behind
    assert first.path.stat().st_mode & 0o055 == 0o055 & ~current_umask()  # readable by others, as a mkdir

    def no_scan(*args, **kwargs):
        raise AssertionError("the corpus was scanned again")

    monkeypatch.setattr(slots_module, "scan_slots", no_scan)
    assert same(cached_sequence_slots(path, "uint16", SEQ, EOS, dirs), first)  # read back, not rescanned
    # Another sequence length is another cache.
    with pytest.raises(AssertionError, match="scanned again"):
        cached_sequence_slots(path, "uint16", 2 * SEQ, EOS, dirs)

    # The corpus rewritten in place (same size, new tokens, new modification time): a new cache, a new scan.
    changed = tokens.copy()
    changed[changed == EOS] = 7
    changed.tofile(path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10 ** 9))
    with pytest.raises(AssertionError, match="scanned again"):
        cached_sequence_slots(path, "uint16", SEQ, EOS, dirs)
    monkeypatch.undo()
    again = cached_sequence_slots(path, "uint16", SEQ, EOS, dirs)
    assert again.path != first.path and same(again, sequence_slots(changed, SEQ, EOS))
    assert (again.counts == 1).all()  # no EOS left: only the sequence starts


def test_a_read_only_corpus_directory_caches_in_the_next_one(corpus, tmp_path, monkeypatch):
    path, tokens = corpus
    mkdtemp = tempfile.mkdtemp

    def read_only(prefix, dir):  # what a read-only directory says (chmod cannot show it to root)
        if dir == path.parent / "cache":
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return mkdtemp(prefix=prefix, dir=dir)

    monkeypatch.setattr(slots_module.tempfile, "mkdtemp", read_only)
    table = cached_sequence_slots(path, "uint16", SEQ, EOS, [path.parent / "cache", tmp_path / "work"])
    assert table.path.parent == tmp_path / "work" and same(table, sequence_slots(tokens, SEQ, EOS))
    with pytest.raises(RuntimeError, match="no slot cache"):
        cached_sequence_slots(path, "uint16", SEQ, EOS, [tmp_path / "elsewhere"], write=False)


def test_a_worker_gets_the_cache_as_a_path(corpus, tmp_path):
    path, _ = corpus
    table = cached_sequence_slots(path, "uint16", SEQ, EOS, [tmp_path / "cache"])
    data = pickle.dumps(table)
    assert len(data) < 1000 < table.indptr.nbytes  # the path, not the arrays
    assert same(pickle.loads(data), table)


def test_step_slots_look_up_the_stream(corpus):
    _, tokens = corpus
    table, B = sequence_slots(tokens, SEQ, EOS), 4
    per_epoch = table.rows // B

    def order(epoch):
        return np.random.default_rng([5, epoch]).permutation(table.rows)

    steps = 3 * per_epoch + 2  # into a fourth epoch
    stream = np.concatenate([order(e)[:per_epoch * B] for e in range(1, 5)])[:steps * B]
    source, whole = StepSlots(table, order, per_epoch, B), stream_slots(table, stream)
    assert np.array_equal(source.capacity(steps, chunk_steps=5), whole.counts.reshape(steps, B).sum(axis=1))
    for s in (0, per_epoch - 1, per_epoch, steps - 1):
        assert same(source.step(s), whole.take(np.arange(s * B, (s + 1) * B)))
    picked = np.array([1, per_epoch, 2 * per_epoch + 3, steps - 1])  # steps of four epochs at once
    assert np.array_equal(source.batches(picked), stream.reshape(steps, B)[picked])
