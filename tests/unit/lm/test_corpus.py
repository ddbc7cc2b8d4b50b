"""Corpus preparation: token files that round-trip, OLMo-core reads them, manifest checks (sources: test_sources)."""

import gzip
import json

import numpy as np
import pytest

from raretask.config import ConfigError, load_config
from raretask.lm.corpus import CorpusConfig, Manifest, SourceConfig, prepare, token_dtype
from raretask.lm.tokenizers import load_tokenizer

DOCS = ["The first document.\nIt has two lines.", "Second: numbers 12 + 30 = 42.", "Third — with a dash, "
        "quotes \"like this\" and café.", "Fourth one is a little longer than the others, about cats and dogs.",
        "Fifth.", "Sixth and last document of the test corpus."]


def write_texts(d, docs=DOCS):
    d.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(docs):
        (d / f"{i:02d}.txt").write_text(text)
    return d


def corpus(tmp_path, **kw):
    kw.setdefault("sources", [SourceConfig(kind="text", path=str(write_texts(tmp_path / "texts")))])
    kw.setdefault("bpe_vocab_size", 300)
    cfg = CorpusConfig(**kw)
    cfg.validate()
    return cfg


def documents(tokens, eos):
    """Split a token array back into documents at EOS (every document ends with one)."""
    assert len(tokens) == 0 or tokens[-1] == eos
    ends = np.flatnonzero(tokens == eos)
    return [tuple(tokens[a + 1 if i else 0:b].tolist()) for i, (a, b) in enumerate(zip(np.r_[-1, ends], ends))]


def test_token_files_round_trip_in_source_order(tmp_path):
    cfg = corpus(tmp_path, tokenizer="olmo_neox", heldout_fraction=0.0, shuffle=False)
    m = prepare(cfg, tmp_path / "out", progress=False)
    tok = load_tokenizer("olmo_neox")
    expected = np.concatenate([tok.encode(d) + [tok.eos_id] for d in DOCS])  # documents, EOS after each
    assert m.dtype == np.uint16 and np.array_equal(m.read("train"), expected)
    assert (m.train_tokens, m.train_documents, m.heldout_tokens) == (len(expected), len(DOCS), 0)
    assert len(m.read("heldout")) == 0
    assert m.tokenizer().decode(m.read("train")[:len(tok.encode(DOCS[0]))]) == DOCS[0]


def test_heldout_split_and_shuffle_partition_the_documents(tmp_path):
    cfg = corpus(tmp_path, heldout_fraction=0.34, seed=5)
    m = prepare(cfg, tmp_path / "out", progress=False)
    tok = m.tokenizer()
    train, held = documents(m.read("train"), m.eos_id), documents(m.read("heldout"), m.eos_id)
    assert (len(train), len(held)) == (4, 2) == (m.train_documents, m.heldout_documents)  # round(0.34 * 6) = 2
    assert sorted(train + held) == sorted(tuple(tok.encode(d)) for d in DOCS)
    again = prepare(corpus(tmp_path, heldout_fraction=0.34, seed=5), tmp_path / "again", progress=False)
    other = prepare(corpus(tmp_path, heldout_fraction=0.34, seed=6), tmp_path / "other", progress=False)
    assert again.data["files"] == m.data["files"]  # same config, same bytes
    assert other.data["files"] != m.data["files"]


def test_olmo_core_dataset_reads_the_files(tmp_path):
    m = prepare(corpus(tmp_path, heldout_fraction=0.0, shuffle=False), tmp_path / "out", progress=False)
    ds = m.fsl_dataset_config("train", sequence_length=8, work_dir=tmp_path / "work").build()
    ds.prepare()
    tokens = m.read("train")
    assert len(ds) == len(tokens) // 8
    for i in (0, len(ds) - 1):
        assert ds[i]["input_ids"].tolist() == tokens[8 * i:8 * i + 8].tolist()


def test_manifest_records_and_verifies(tmp_path):
    m = prepare(corpus(tmp_path), tmp_path / "out", progress=False)
    data = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert data["tokenizer"]["kind"] == "bpe" and data["tokenizer"]["eos_id"] == 0 and data["dtype"] == "uint16"
    assert data["sources"][0]["documents"] == len(DOCS) and len(data["sources"][0]["sha256"]) == 64
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["kind"] == "lm.corpus"
    m.verify()
    with open(m.train_path, "r+b") as f:  # flip one token
        f.seek(2)
        byte = f.read(1)
        f.seek(2)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ConfigError, match="train.npy: sha256 differs"):
        m.verify()
    m.train_path.write_bytes(m.train_path.read_bytes()[:-2])
    with pytest.raises(ConfigError, match="missing or not"):
        Manifest.load(tmp_path / "out")


def test_manifest_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no manifest.json"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{\"format\": 1}")
    with pytest.raises(ConfigError, match="corrupt manifest"):
        Manifest.load(tmp_path)


def test_rerun_is_a_no_op_and_a_different_config_is_refused(tmp_path):
    out = tmp_path / "out"
    m = prepare(corpus(tmp_path), out, progress=False)
    stamp = m.train_path.stat().st_mtime_ns
    assert prepare(corpus(tmp_path), out, progress=False).data == m.data
    assert m.train_path.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="holds a corpus of a different config"):
        prepare(corpus(tmp_path, seed=1), out, progress=False)
    assert m.train_path.stat().st_mtime_ns == stamp
    assert prepare(corpus(tmp_path, seed=1), out, progress=False, overwrite=True).seed == 1


def test_blank_line_split_jsonl_and_gzip_sources(tmp_path):
    (tmp_path / "many.txt").write_text("\n\n".join(DOCS[:3]) + "\n  \n" + DOCS[3])
    with gzip.open(tmp_path / "docs.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps({"id": i, "text": d}) for i, d in enumerate(DOCS[4:])) + "\n\n")
    cfg = corpus(tmp_path, heldout_fraction=0.0, shuffle=False, sources=[
        SourceConfig(kind="text", path=str(tmp_path / "many.txt"), split="blank_line"),
        SourceConfig(kind="jsonl", path=str(tmp_path))])
    m = prepare(cfg, tmp_path / "out", progress=False)
    tok = m.tokenizer()
    assert documents(m.read("train"), m.eos_id) == [tuple(tok.encode(d)) for d in DOCS]
    assert [s["documents"] for s in m.data["sources"]] == [4, 2]


def test_dolma_npy_tokens_are_copied_unchanged(tmp_path):
    eos = 50279
    raw = np.array([5, 6, 7, eos, 8, eos, eos, 9, 10, eos], dtype=np.uint16)  # an empty document is dropped
    raw.tofile(tmp_path / "part-0.npy")
    cfg = corpus(tmp_path, tokenizer="olmo_neox", heldout_fraction=0.0, shuffle=False,
                 sources=[SourceConfig(kind="dolma_npy", path=str(tmp_path / "part-0.npy"))])
    m = prepare(cfg, tmp_path / "out", progress=False)
    assert m.read("train").tolist() == [5, 6, 7, eos, 8, eos, 9, 10, eos]
    assert m.data["documents_dropped_empty"] == 1


def test_dolma_npy_with_ids_beyond_the_vocabulary_is_refused_before_writing(tmp_path):
    np.array([5, 50300, 50279], dtype=np.uint16).tofile(tmp_path / "part-0.npy")
    cfg = corpus(tmp_path, tokenizer="olmo_neox", sources=[SourceConfig(kind="dolma_npy", path=str(tmp_path))])
    with pytest.raises(ConfigError, match=r"sources\[0\].path: part-0.npy holds token id 50300 >= 50280"):
        prepare(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("toml, message", [
    ('[[sources]]\nkind = "text"\npath = "nope"', "sources[0].path: file or directory not found"),
    ('[[sources]]\nkind = "text"\npath = "."\npattern = "*.md"', "sources[0].path: no files match '*.md'"),
    ('[[sources]]\nkind = "embedded"\npath = "x"', "sources[0].path: embedded sources take no path"),
    ('tokenizer = "gpt2"', "tokenizer: 'gpt2' is not one of olmo_neox, dolma2, bpe"),
    ("heldout_fraction = 1.0", "heldout_fraction: must be in [0, 1)"),
    ("bpe_vocab_size = 100", "bpe_vocab_size: must be in 259.."),
    ('[[sources]]\nkind = "dolma_npy"\npath = "."', "sources[0].kind: dolma_npy token files need the tokenizer"),
    ("sources = []", "sources: no sources given"),
])
def test_config_errors_name_the_field(tmp_path, toml, message):
    np.zeros(3, np.uint16).tofile(tmp_path / "x.npy")
    (tmp_path / "c.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(CorpusConfig, tmp_path / "c.toml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_jsonl_without_text_and_empty_corpora_fail_before_writing(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n')
    cfg = corpus(tmp_path, sources=[SourceConfig(kind="jsonl", path=str(tmp_path / "a.jsonl"))])
    with pytest.raises(ConfigError, match=r"sources\[0\].path: a.jsonl line 2 has no string 'text' field"):
        prepare(cfg, tmp_path / "out", progress=False)
    cfg = corpus(tmp_path, sources=[SourceConfig(kind="text", path=str(write_texts(tmp_path / "e", [" ", "\n"])))])
    with pytest.raises(ConfigError, match="sources: the corpus has no documents"):
        prepare(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_token_dtype():
    assert token_dtype(50304) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(100352) == np.uint32
