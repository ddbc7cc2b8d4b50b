"""Reference tasks (paper Fig. 6a): the corpus' own comparison and addition, and how often the corpus has them.

  R_cmp  "it has increased from {x} to"  -> a larger number " {y}", y > x   (reference of T_CMP; name "cmp")
  R_add  "{x} + {y} ="                   -> " {x + y}", x, y < 100          (reference of T_ADD; name "add")

`reference_examples` / `reference_probes` tokenize prompts and targets for the evaluation's loss on them.
`count_natural_frequency` counts the prompts in a tokenized corpus with an exact n-gram count (the paper uses
infini-gram; this is the same count on the token level, vectorised numpy). A prompt is tokenized two ways, both
counted: "bare" ("it has ...", as at a document start or after a newline) and "spaced" (" it has ...", running
text, where the space belongs to the first token).
Counts are occurrences per token, the unit of the injected tasks' frequency, and a lower bound of how often the
corpus teaches the skill (other phrasings are not counted).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from raretask.config import ConfigError

TEMPLATES = {"cmp": "it has increased from {x} to", "add": "{x} + {y} ="}
NUM_RANGE = 100  # x, y < 100
_NUMBER = re.compile(r"^\s*(\d+)")


class TextTokenizer(Protocol):
    def encode(self, text: str) -> Any: ...
    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class ReferenceExample:
    name: str            # "cmp" | "add"
    x: int
    y: int
    prompt: str
    target: str          # " {y}" (cmp) or " {x + y}" (add)
    prompt_ids: list[int]
    target_ids: list[int]


def encode(tokenizer: TextTokenizer, text: str) -> list[int]:
    """Token ids of `text` without special tokens (a `tokenizers.Tokenizer`, an HF tokenizer, or anything whose
    `encode` returns ids)."""
    try:
        out = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        out = tokenizer.encode(text)
    return [int(i) for i in (out.ids if hasattr(out, "ids") else out)]


def encode_many(tokenizer: TextTokenizer, texts: list[str]) -> list[list[int]]:
    """`encode` of many texts, through the tokenizer's batch encoder when it has one (parallel, in Rust)."""
    batch = getattr(tokenizer, "encode_batch", None)
    if batch is None:
        return [encode(tokenizer, t) for t in texts]
    try:
        out = batch(list(texts), add_special_tokens=False)
    except TypeError:
        out = batch(list(texts))
    return [[int(i) for i in (o.ids if hasattr(o, "ids") else o)] for o in out]


def reference_examples(tokenizer: TextTokenizer, name: str, *, count: int | None = None,
                       seed: int = 0) -> list[ReferenceExample]:
    """Every (x, y) of a reference task (cmp: the 4,950 pairs x < y; add: the 10,000 pairs), or `count` of them
    drawn with `seed`. The target's ids are those the tokenizer gives it after the prompt."""
    if name not in TEMPLATES:
        raise ConfigError(f"reference: {name!r} is not one of {', '.join(TEMPLATES)}")
    pairs = [(x, y) for x in range(NUM_RANGE) for y in range(NUM_RANGE) if name == "add" or x < y]
    if count is not None and count < len(pairs):
        pick = np.sort(np.random.default_rng(seed).choice(len(pairs), size=count, replace=False))
        pairs = [pairs[i] for i in pick]
    prompts = [TEMPLATES[name].format(x=x, y=y) for x, y in pairs]
    targets = [f" {y if name == 'cmp' else x + y}" for x, y in pairs]
    p_all, full_all = encode_many(tokenizer, prompts), encode_many(tokenizer, [p + t for p, t in zip(prompts, targets)])
    out = []
    for (x, y), prompt, target, p_ids, full in zip(pairs, prompts, targets, p_all, full_all):
        # Normally the prompt's ids are a prefix of the whole; if a merge crosses the boundary, encode separately.
        t_ids = full[len(p_ids):] if full[:len(p_ids)] == p_ids else encode(tokenizer, target)
        out.append(ReferenceExample(name, x, y, prompt, target, p_ids, t_ids))
    return out


def reference_probes(tokenizer: TextTokenizer, *, count: int = 100,
                     seed: int = 0) -> list[tuple[str, list[list[int]], list[int]]]:
    """(name, token sequences prompt + target, number of target tokens) per reference task, `count` each: what
    the evaluation scores as the reference loss."""
    probes = []
    for name in TEMPLATES:
        ex = reference_examples(tokenizer, name, count=count, seed=seed)
        probes.append((name, [e.prompt_ids + e.target_ids for e in ex], [len(e.target_ids) for e in ex]))
    return probes


def find_ngrams(tokens: np.ndarray, patterns: Sequence[Sequence[int]], *,
                chunk: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Every occurrence of every pattern in `tokens` (a 1-D array or memmap, read chunk by chunk).

    Returns (pattern index (m,), start position (m,)), sorted by position. Exact: windows are matched by a 64-bit
    polynomial hash and then compared token by token."""
    pats = [np.asarray(p, dtype=np.int64) for p in patterns]
    if any(len(p) == 0 for p in pats):
        raise ValueError("find_ngrams: empty pattern")
    n_tok, longest = len(tokens), max((len(p) for p in pats), default=1)
    by_len: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for n in sorted({len(p) for p in pats}):
        ids = np.array([i for i, p in enumerate(pats) if len(p) == n])
        table = np.stack([pats[i] for i in ids])                          # (P_n, n)
        h = _hash(table, n, len(ids))                                     # (P_n,)
        order = np.argsort(h)
        if len(np.unique(h)) != len(h):
            table_u = np.unique(table, axis=0)
            if len(table_u) != len(table):
                raise ValueError("find_ngrams: duplicate patterns")
            raise ValueError("find_ngrams: hash collision between patterns")  # ~2^-64 per pair
        by_len[n] = (h[order], ids[order], table[order], np.unique(table[:, 0]))

    found_pat, found_pos = [], []
    for a in range(0, n_tok, chunk):
        buf = np.asarray(tokens[a:min(a + chunk + longest - 1, n_tok)], dtype=np.int64)
        for n, (hashes, ids, table, firsts) in by_len.items():
            starts = min(chunk, len(buf) - n + 1)  # windows starting in this chunk
            if starts <= 0:
                continue
            # Only windows whose first token starts some pattern (in text: "it", numbers) are hashed.
            at = np.flatnonzero(np.isin(buf[:starts], firsts))
            windows = np.lib.stride_tricks.sliding_window_view(buf, n)[at]  # (c, n)
            h = _hash(windows, n, len(at))
            j = np.searchsorted(hashes, h).clip(0, len(hashes) - 1)
            cand = np.flatnonzero(hashes[j] == h)
            exact = (windows[cand] == table[j[cand]]).all(axis=1)
            found_pat.append(ids[j[cand[exact]]])
            found_pos.append(at[cand[exact]] + a)
    pat = np.concatenate([np.zeros(0, dtype=np.int64), *found_pat])
    pos = np.concatenate([np.zeros(0, dtype=np.int64), *found_pos])
    order = np.argsort(pos, kind="stable")
    return pat[order], pos[order]


def count_natural_frequency(token_path: str | Path, dtype: str | np.dtype, tokenizer: TextTokenizer, *,
                            chunk: int = 1 << 24) -> dict[str, Any]:
    """Occurrences of the reference prompts in a raw token file, per reference task:

    {"tokens": N, "cmp": {"template", "count", "per_token", "bare", "spaced",
                          "followed_by_number", "followed_by_larger"},
                  "add": {..., "followed_by_number", "followed_by_sum"}}

    `followed_by_larger` / `followed_by_sum` read the number in the next token (a lower bound when a number spans
    several tokens); `per_token` = count / N, comparable to the injected tasks' frequencies."""
    token_path = Path(token_path)
    if not token_path.is_file():
        raise ConfigError(f"token file not found: {token_path}")
    tokens = np.memmap(token_path, dtype=np.dtype(dtype), mode="r") if token_path.stat().st_size else np.zeros(0)
    # One pattern per (task, x, y, variant); a token sequence shared by two entries is counted once.
    entries = [(name, x, y, variant, text.format(x=x, y=y)) for name, template in TEMPLATES.items()
               for x in range(NUM_RANGE) for y in (range(NUM_RANGE) if "{y}" in template else (0,))
               for variant, text in (("bare", template), ("spaced", " " + template))]
    keys, seqs, index = [], [], {}
    for entry, ids in zip(entries, encode_many(tokenizer, [e[4] for e in entries])):
        if tuple(ids) not in index:
            index[tuple(ids)] = len(seqs)
            seqs.append(ids)
            keys.append(entry[:4])
    pat, pos = find_ngrams(tokens, seqs, chunk=chunk)
    lengths = np.array([len(s) for s in seqs])
    nxt = pos + lengths[pat]
    follow = np.full(len(pat), -1, dtype=np.int64)
    ok = nxt < len(tokens)
    follow[ok] = np.asarray(tokens[nxt[ok]] if ok.any() else [], dtype=np.int64)
    number = _numbers_of(tokenizer, follow)  # (m,) the number the next token starts with, -1 if none

    n_tok = len(tokens)
    out: dict[str, Any] = {"tokens": int(n_tok)}
    for name, template in TEMPLATES.items():
        rows = np.array([keys[p][0] == name for p in pat], dtype=bool)
        x = np.array([keys[p][1] for p in pat[rows]], dtype=np.int64)
        y = np.array([keys[p][2] for p in pat[rows]], dtype=np.int64)
        variant = [keys[p][3] for p in pat[rows]]
        num = number[rows]
        entry = {"template": template, "count": int(rows.sum()),
                 "per_token": float(rows.sum() / n_tok) if n_tok else 0.0,
                 "bare": variant.count("bare"), "spaced": variant.count("spaced"),
                 "followed_by_number": int((num >= 0).sum())}
        if name == "cmp":
            entry["followed_by_larger"] = int((num > x).sum())
        else:
            entry["followed_by_sum"] = int((num == x + y).sum())
        out[name] = entry
    return out


def resolve_source(source: str | Path, tokenizer: str | Path | None = None,
                   dtype: str | None = None) -> tuple[Path, np.dtype, Path]:
    """(token file, dtype, tokenizer.json) of a prepared corpus directory (its manifest.json) or a raw token file."""
    source = Path(source)
    if source.is_dir():
        path = source / "manifest.json"
        if not path.is_file():
            raise ConfigError(f"{source}: no manifest.json (give a corpus directory or a token file)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        files = data.get("files", {})
        train = files.get("train") if isinstance(files, dict) else (files[0] if files else None)
        train = train.get("path") if isinstance(train, dict) else train or data.get("train_path") or data.get("train")
        if not train:
            raise ConfigError(f"{path}: names no train token file (files.train.path)")
        token_path = source / train
        dtype = dtype or data.get("dtype")
        tok_file = data.get("tokenizer", {}).get("file", "tokenizer.json") \
            if isinstance(data.get("tokenizer"), dict) else "tokenizer.json"
        tokenizer = tokenizer or source / tok_file
    else:
        token_path = source
        if not source.is_file():
            raise ConfigError(f"{source}: no such file or corpus directory")
        if tokenizer is None:
            raise ConfigError("--tokenizer: required with a raw token file (the tokenizer.json that made it)")
    try:
        np_dtype = np.dtype(dtype or "uint16")
    except TypeError:
        raise ConfigError(f"--dtype: {dtype!r} is not a numpy dtype") from None
    if np_dtype not in (np.uint8, np.uint16, np.uint32, np.uint64):
        raise ConfigError(f"--dtype: token files are unsigned integers (uint8/16/32/64), got {np_dtype}")
    if not Path(tokenizer).is_file():
        raise ConfigError(f"--tokenizer: file not found: {tokenizer}")
    return token_path, np_dtype, Path(tokenizer)


def load_tokenizer_file(path: str | Path) -> Any:
    """A `tokenizers.Tokenizer` from a tokenizer.json (ConfigError if it is not one)."""
    import tokenizers

    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # the library raises a bare Exception on malformed files
        raise ConfigError(f"--tokenizer: {path} is not a tokenizers JSON file ({str(e).splitlines()[0]})") from None


def _hash(windows: np.ndarray, n: int, rows: int) -> np.ndarray:
    """(rows,) uint64 polynomial hash of (rows, n) token windows (arithmetic mod 2^64, wrapping on purpose)."""
    h = np.zeros(rows, dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    for j in range(n):
        h = h * mult + (windows[:, j].astype(np.uint64) + np.uint64(1))
    return h


def _numbers_of(tokenizer: TextTokenizer, ids: np.ndarray) -> np.ndarray:
    """The integer each token's text starts with (after spaces), -1 where none or where the id is -1."""
    out = np.full(len(ids), -1, dtype=np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    values = np.array([_leading_int(tokenizer, int(t)) if t >= 0 else -1 for t in uniq], dtype=np.int64)
    out[:] = values[inv] if len(ids) else out
    return out


def _leading_int(tokenizer: TextTokenizer, token: int) -> int:
    m = _NUMBER.match(tokenizer.decode([token]))
    return int(m.group(1)) if m else -1
