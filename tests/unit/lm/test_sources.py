"""Document sources: the cleaning rules, reading text / JSONL / Dolma token files, names re-exported by corpus."""

import json

import numpy as np
import pytest

from raretask.config import ConfigError
from raretask.lm import corpus, sources
from raretask.lm.sources import SourceConfig, clean_text, documents, sha256_files
from raretask.lm.tokenizers import load_tokenizer


@pytest.mark.parametrize("raw, clean", [
    ("profits of Â£600m", "profits of £600m"),  # UTF-8 read as Latin-1
    ("a cafÃ© and itâ€™s", "a café and it’s"),  # ... and as cp1252
    ('The Senate voted on DeVos"?highly contentious', "The Senate voted on DeVos' highly contentious"),
    ('a worse choice,"?Sen. Warren', 'a worse choice," Sen. Warren'),
    ('could determine "?at least temporarily "?the fate', "could determine — at least temporarily — the fate"),
    ('threat this morning."? Northeast', 'threat this morning." Northeast'),
    ('Bill O"Reilly didn"t', "Bill O'Reilly didn't"),
    ("Sinn F\ufffdin and garda\ufffd", "Sinn Fin and garda"),
    ("a\u00a0 b\u200b\tc\x07d", "a b cd"),
    ("  one\n\n\n\n two  \r\n", "one\n\ntwo"),
    ('São Paulo — "quoted" 10°C, naïve Ã alone', 'São Paulo — "quoted" 10°C, naïve Ã alone'),  # clean text kept
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_text_sources_split_by_file_or_blank_line_and_clean_optionally(tmp_path):
    (tmp_path / "a.txt").write_text("one  doc\n\n\n\ntwo")
    (tmp_path / "b.txt").write_text("caf\u00c3\u00a9")
    by_file = SourceConfig(kind="text", path=str(tmp_path))
    assert list(documents(by_file, None, "s")) == ["one doc\n\ntwo", "café"]
    by_block = SourceConfig(kind="text", path=str(tmp_path / "a.txt"), split="blank_line", clean=False)
    assert list(documents(by_block, None, "s")) == ["one  doc", "", "two"]  # empty blocks: dropped by prepare


def test_jsonl_errors_name_the_source_file_and_line(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "ok"}) + "\n\n{broken\n")
    src = SourceConfig(kind="jsonl", path=str(tmp_path / "d.jsonl"))
    got = documents(src, None, "sources[2]")
    assert next(got) == "ok"
    with pytest.raises(ConfigError, match=r"^sources\[2\].path: d.jsonl line 3 is not valid JSON$"):
        next(got)


def test_dolma_npy_documents_are_slices_between_eos_and_need_a_tokenizer(tmp_path):
    tok = load_tokenizer("olmo_neox")
    np.array([5, 6, tok.eos_id, tok.eos_id, 7], dtype=np.uint32).tofile(tmp_path / "p.npy")
    src = SourceConfig(kind="dolma_npy", path=str(tmp_path / "p.npy"), dtype="uint32")
    assert [d.tolist() for d in documents(src, tok, "s")] == [[5, 6], [], [7]]  # last one without its EOS
    with pytest.raises(ConfigError, match=r"^s.kind: dolma_npy token files need the tokenizer"):
        list(documents(src, None, "s"))


def test_checksum_follows_file_content(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("x")
    before = sha256_files([f])
    f.write_text("y")
    assert sha256_files([f]) != before and len(before) == 64


def test_corpus_re_exports_the_source_names():
    for name in ("SourceConfig", "SourceKind", "EmbeddedSet", "DocSplit", "clean_text"):
        assert getattr(corpus, name) is getattr(sources, name)
