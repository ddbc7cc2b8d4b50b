"""Injection slots: where in the packed token stream a task instance may go (raretask.lm.injection).

The stream is OLMo-core's `NumpyFSLDataset`: the raw token file cut into sequences of T tokens, documents packed and
separated by EOS. Each sequence offers position 0 and every position right after an EOS; a slot is kept when the
piece starting there (up to the next EOS-delimited document or sequence start) has room for the 4 tokens of an
instance (TOK1 TOK2 LABEL EOS), so injections never overlap and never run into the next document. Position 0 counts
as a slot whatever is there: packing cuts documents at sequence boundaries, so it is usually the middle of a
document, whose next 4 tokens the instance replaces (the paper's "first four tokens of a training sequence"), with
nothing before it in the context. A position after an EOS is a real document start, with the sequence's earlier
text before it.

Scale. A paper run reads hundreds of millions of sequences, so the slots of every sequence of a token file
(`SlotTable`, CSR) are found once per (file, T), chunk by chunk in bounded memory (`scan_slots`), and cached on
disk (`cached_sequence_slots`): CACHE/slots-<file>-T<T>-<key>/{indptr,offsets}.npy, read back memory-mapped, CACHE
being the corpus's own cache/ directory, or the user's cache (`user_cache_dir`) when that one is read-only. The key
hashes the file's resolved path, size and modification time (a sha256 of a 400 GB file would cost as much as the
scan), its dtype, T and the EOS id: a file rewritten in place gets a new key and a fresh scan. The directory is
built under a temporary name and renamed into place, so concurrent runs and ranks never read half a cache.

`StepSlots` gives the slots of one global batch (step s: the B sequences `order(epoch)[b*B:(b+1)*B]` of its
epoch) without building the whole stream's table, and the slot count of every batch (`capacity`) chunk by chunk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

INSTANCE_TOKENS = 4  # TOK1 TOK2 LABEL EOS
CACHE_VERSION = 1    # tick when the scan's rule changes: old caches are then ignored


@dataclass
class SlotTable:
    """Injection slots of a list of sequences, CSR: row r has offsets[indptr[r]:indptr[r+1]] (ascending). The arrays
    may be memory maps of a cache (`path`): pickling then sends the path, not the data (data-loader workers)."""

    indptr: np.ndarray   # (rows + 1,) int64
    offsets: np.ndarray  # (n,) integer token offsets inside the sequence (uint16/uint32 in a cache)
    path: Path | None = None

    @classmethod
    def first_positions(cls, rows: int) -> SlotTable:
        """Only position 0 of each sequence (the paper's placement; for planning without the data)."""
        return cls(np.arange(rows + 1, dtype=np.int64), np.zeros(rows, dtype=np.int64))

    @classmethod
    def load(cls, path: str | Path) -> SlotTable:
        """A cached table (`cached_sequence_slots`), memory-mapped."""
        path = Path(path)
        # Plain ndarray views of the maps: indexing a np.memmap costs a Python-level __getitem__ per call.
        return cls(np.asarray(np.load(path / "indptr.npy", mmap_mode="r")),
                   np.asarray(np.load(path / "offsets.npy", mmap_mode="r")), path)

    def __reduce__(self):  # a cache travels as its path
        if self.path is not None:
            return SlotTable.load, (self.path,)
        return SlotTable, (self.indptr, self.offsets)

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def take(self, rows: np.ndarray) -> SlotTable:
        """The table of the sequences `rows` (indices into this one, any order, repeats allowed), in memory."""
        rows = np.asarray(rows, dtype=np.int64)
        start = np.asarray(self.indptr[rows], dtype=np.int64)
        counts = np.asarray(self.indptr[rows + 1], dtype=np.int64) - start
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        within = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1], counts)
        return SlotTable(indptr, np.asarray(self.offsets[np.repeat(start, counts) + within], dtype=np.int64))


def scan_slots(tokens: np.ndarray, seq_len: int, eos_id: int, *, chunk_tokens: int = 1 << 22,
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The slots of the sequences of a token array (a memmap is read a chunk at a time), as consecutive pieces:
    (slots per sequence (m,), their offsets) for m whole sequences at a time."""
    n_seq = len(tokens) // seq_len
    per_chunk = max(1, chunk_tokens // seq_len)
    for a in range(0, n_seq, per_chunk):
        m = min(per_chunk, n_seq - a)
        n_tok = m * seq_len
        piece_tokens = np.asarray(tokens[a * seq_len:a * seq_len + n_tok])
        doc_starts = np.flatnonzero(piece_tokens == eos_id) + 1  # right after each EOS
        # Every sequence start is a candidate, so the next candidate bounds the piece within its own sequence (and a
        # chunk of whole sequences is scanned on its own).
        candidates = np.union1d(doc_starts[doc_starts < n_tok], np.arange(m, dtype=np.int64) * seq_len)  # sorted
        piece = np.diff(np.append(candidates, n_tok))
        kept = candidates[piece >= INSTANCE_TOKENS]
        seq = kept // seq_len
        yield np.bincount(seq, minlength=m).astype(np.int64), kept - seq * seq_len


def sequence_slots(tokens: np.ndarray, seq_len: int, eos_id: int, *, chunk_tokens: int = 1 << 22) -> SlotTable:
    """Slots of every sequence of a token array cut into `seq_len` pieces (rows = dataset sequence indices), in
    memory (small corpora; `cached_sequence_slots` for token files)."""
    parts = list(scan_slots(tokens, seq_len, eos_id, chunk_tokens=chunk_tokens))
    counts = np.concatenate([np.zeros(0, dtype=np.int64), *(c for c, _ in parts)])
    offsets = np.concatenate([np.zeros(0, dtype=np.int64), *(o for _, o in parts)])
    return SlotTable(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), offsets)


def stream_slots(seq_slots: SlotTable, order: np.ndarray) -> SlotTable:
    """The slots of the sequences `order` (dataset indices, e.g. (steps * B,) in global batch order)."""
    return seq_slots.take(order)


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/raretask (default ~/.cache/raretask): where caches go when the corpus directory is read-only."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raretask"


def slot_cache_name(token_path: str | Path, dtype: str | np.dtype, seq_len: int, eos_id: int) -> str:
    """The cache directory's name for this file as it is now (see the module docstring)."""
    token_path = Path(token_path).resolve()
    st = token_path.stat()
    key = f"{token_path}|{st.st_size}|{st.st_mtime_ns}|{np.dtype(dtype).name}|{seq_len}|{eos_id}|v{CACHE_VERSION}"
    return f"slots-{token_path.stem}-T{seq_len}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def cached_sequence_slots(token_path: str | Path, dtype: str | np.dtype, seq_len: int, eos_id: int,
                          cache_dirs: Sequence[str | Path], *, write: bool = True) -> SlotTable:
    """`sequence_slots` of a raw token file, memory-mapped from the first of `cache_dirs` that holds them; else
    (`write`) scanned once into the first one that can be written. Without `write` a missing cache is an error
    (the ranks that wait for the one that scans)."""
    name = slot_cache_name(token_path, dtype, seq_len, eos_id)
    for d in cache_dirs:
        if (Path(d) / name / "indptr.npy").is_file():
            return SlotTable.load(Path(d) / name)
    if not write:
        raise RuntimeError(f"no slot cache {name} in {', '.join(map(str, cache_dirs))}")
    error: OSError | None = None
    for d in cache_dirs:
        try:
            return SlotTable.load(_write_cache(token_path, dtype, seq_len, eos_id, Path(d), name))
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            error = e  # a read-only corpus directory: the next one (the run's own)
    raise error if error is not None else RuntimeError("cached_sequence_slots: no cache directory given")


def _write_cache(token_path: str | Path, dtype: str | np.dtype, seq_len: int, eos_id: int, cache_dir: Path,
                 name: str, chunk: int = 1 << 22) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache_dir))
    try:
        tokens = np.memmap(token_path, dtype=np.dtype(dtype), mode="r")
        off_dtype = np.uint16 if seq_len <= 1 << 16 else np.uint32  # offsets < T: a quarter of int64's bytes
        n_seq, total = 0, 0
        with open(tmp / "counts.raw", "wb") as fc, open(tmp / "offsets.raw", "wb") as fo:
            for counts, offsets in scan_slots(tokens, seq_len, eos_id):
                counts.tofile(fc)
                offsets.astype(off_dtype).tofile(fo)
                n_seq, total = n_seq + len(counts), total + len(offsets)
        # .npy files need their shape up front: copy the raw pieces over, a chunk at a time.
        counts = np.memmap(tmp / "counts.raw", dtype=np.int64, mode="r", shape=(n_seq,)) if n_seq else np.zeros(0)
        indptr = np.lib.format.open_memmap(tmp / "indptr.npy", mode="w+", dtype=np.int64, shape=(n_seq + 1,))
        indptr[0], running = 0, 0
        for a in range(0, n_seq, chunk):
            c = np.cumsum(counts[a:a + chunk], dtype=np.int64) + running
            indptr[a + 1:a + 1 + len(c)] = c
            running = int(c[-1])
        indptr.flush()
        raw = np.memmap(tmp / "offsets.raw", dtype=off_dtype, mode="r", shape=(total,)) if total else None
        offsets = np.lib.format.open_memmap(tmp / "offsets.npy", mode="w+", dtype=off_dtype, shape=(total,))
        for a in range(0, total, chunk):
            offsets[a:a + chunk] = raw[a:a + chunk]
        offsets.flush()
        del counts, indptr, raw, offsets
        (tmp / "counts.raw").unlink()
        (tmp / "offsets.raw").unlink()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would keep other users from a shared corpus's cache
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "indptr.npy").is_file():  # not a concurrent writer that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


class StepSlots:
    """The slots of each global batch of a run. Step s is batch s % per_epoch of epoch s // per_epoch + 1, its B
    sequences `order(epoch)[b*B:(b+1)*B]` (dataset indices, rows of `table`); `identity` names the table and the
    order for the plan's fingerprint (default: a hash of the arrays, for small in-memory sources)."""

    def __init__(self, table: SlotTable, order: Callable[[int], np.ndarray], per_epoch: int, batch: int,
                 identity: str | None = None):
        self.table, self.order, self.per_epoch, self.batch = table, order, per_epoch, batch
        self._identity = identity
        self._epoch: tuple[int, np.ndarray] | None = None  # the last epoch's order, looked up again and again

    @classmethod
    def of_stream(cls, table: SlotTable, batch: int) -> StepSlots:
        """A table whose rows are the stream itself, row = step * B + batch_pos."""
        return cls(table, _Range(table.rows), table.rows // batch, batch)

    @classmethod
    def first_positions(cls, batch: int) -> StepSlots:
        """Position 0 of every sequence (planning without the data): each batch looks alike."""
        return cls(SlotTable.first_positions(batch), _Range(batch), 1, batch,
                   identity=f"first positions of {batch}")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_epoch": None}

    @property
    def identity(self) -> str:
        if self._identity is None:
            h = hashlib.sha256(f"{self.per_epoch},{self.batch}".encode())
            for a in (self.table.indptr, self.table.offsets, self.order(1)):
                h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
            self._identity = h.hexdigest()
        return self._identity

    def _order(self, epoch: int) -> np.ndarray:
        cached = self._epoch
        if cached is None or cached[0] != epoch:
            cached = self._epoch = (epoch, np.asarray(self.order(epoch)))
        return cached[1]

    def sequences(self, start: int, stop: int) -> np.ndarray:
        """((stop - start) * B,) dataset indices of steps start .. stop - 1, in stream order."""
        parts, s, B = [np.zeros(0, dtype=np.int64)], start, self.batch
        while s < stop:
            epoch, b = divmod(s, self.per_epoch)
            n = min(stop - s, self.per_epoch - b)
            parts.append(np.asarray(self._order(epoch + 1)[b * B:(b + n) * B], dtype=np.int64))
            s += n
        return np.concatenate(parts)

    def batches(self, steps: np.ndarray) -> np.ndarray:
        """(len(steps), B) dataset indices of the given steps' batches (ascending steps)."""
        steps = np.asarray(steps, dtype=np.int64)
        epoch, b = np.divmod(steps, self.per_epoch)
        out = np.zeros((len(steps), self.batch), dtype=np.int64)
        for e in np.unique(epoch):
            at = epoch == e
            out[at] = self._order(int(e) + 1)[b[at, None] * self.batch + np.arange(self.batch)]
        return out

    def step(self, s: int) -> SlotTable:
        """The slots of step s's B sequences (row = batch position)."""
        return self.table.take(self.sequences(s, s + 1))

    def capacity(self, steps: int, chunk_steps: int = 0) -> np.ndarray:
        """(steps,) slots of each batch, `chunk_steps` at a time (default: ~1M sequences)."""
        chunk_steps = chunk_steps or max(1, (1 << 20) // self.batch)
        out = np.zeros(steps, dtype=np.int64)
        indptr = self.table.indptr
        for a in range(0, steps, chunk_steps):
            seqs = self.sequences(a, min(a + chunk_steps, steps))
            counts = np.asarray(indptr[seqs + 1], dtype=np.int64) - np.asarray(indptr[seqs], dtype=np.int64)
            out[a:a + len(seqs) // self.batch] = counts.reshape(-1, self.batch).sum(axis=1)
        self.forget()
        return out

    def forget(self) -> None:
        """Drop the epoch order kept for the next lookups (built in memory, it is 4 bytes per sequence)."""
        self._epoch = None


@dataclass(frozen=True)
class _Range:
    """The order 0 .. n - 1 in every epoch (a picklable `order`)."""

    n: int

    def __call__(self, epoch: int) -> np.ndarray:
        return np.arange(self.n, dtype=np.int64)
