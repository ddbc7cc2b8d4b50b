"""`raretask lm prepare` and `raretask lm models` end to end; bad input is one line, exit 2, nothing written."""

import numpy as np
import pytest

from raretask.lm.corpus import Manifest
from tests.integration.conftest import ROOT, summary


def test_prepare_embedded_corpus_slice(cli, tmp_path):
    out = tmp_path / "corpus"
    args = ["lm", "prepare", ROOT / "configs/lm/corpus/embedded.toml", "max_documents=40", "bpe_vocab_size=400",
            "--out", out, "--no-progress", "--json"]
    s = summary(cli(*args))
    assert s["train_documents"] + s["heldout_documents"] == 40 and s["heldout_documents"] == 2
    assert (s["tokenizer"], s["padded_vocab_size"], s["eos_id"], s["dtype"]) == ("bpe", 512, 0, "uint16")
    m = Manifest.load(out)
    m.verify()
    train = m.read("train")
    assert len(train) == s["train_tokens"] and int(np.sum(train == m.eos_id)) == s["train_documents"]
    assert train.max() < m.vocab_size
    text = m.tokenizer().decode(train[:400])
    assert "\ufffd" not in text and '"?' not in text and "  " not in text  # cleaned
    assert summary(cli(*args)) == s  # the same config again: nothing to do
    again = cli(*args[:-4], "seed=1", "--out", out, "--no-progress")
    assert again.exit_code == 2 and "holds a corpus of a different config" in again.stderr


def test_prepare_dry_run_prints_the_resolved_config(cli):
    r = cli("lm", "prepare", ROOT / "configs/lm/corpus/tiny.toml", "seed=3", "--dry-run")
    assert r.exit_code == 0 and "seed = 3" in r.stdout and 'kind = "embedded"' in r.stdout


def test_models_lists_the_ladder(cli):
    rows = summary(cli("lm", "models", "--json"))
    by_name = {r["name"]: r for r in rows}
    assert by_name["4M"]["params"] == 6_963_200 and by_name["4B"]["params"] == 4_707_057_664
    assert {"cpu-30k", "cpu-150k", "cpu-600k", "cpu-2m"} <= set(by_name)
    table = cli("lm", "models")
    assert table.exit_code == 0 and "4,707,057,664" in table.stdout and "cpu-2m" in table.stdout


BAD = {
    "missing-path": (['sources=[{kind="text", path="nope/"}]'], "sources[0].path: file or directory not found"),
    "bad-enum": (["tokenizer=gpt2"], "tokenizer: 'gpt2' is not one of"),
    "bad-kind": (['sources=[{kind="csv", path="x"}]'], "sources[0].kind: 'csv' is not one of"),
    "unknown-key": (["heldout=0.1"], "heldout: unknown key"),
    "fraction": (["heldout_fraction=1.5"], "heldout_fraction: must be in [0, 1)"),
    "jsonl-no-text": (['sources=[{kind="jsonl", path="docs.jsonl"}]'], "line 2 has no string 'text' field"),
    "vocab-mismatch": (['sources=[{kind="dolma_npy", path="tokens.npy"}]', "tokenizer=olmo_neox"],
                       "holds token id 60000 >= 50280"),
    "dolma-with-bpe": (['sources=[{kind="dolma_npy", path="tokens.npy"}]'], "need the tokenizer that made them"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, case):
    overrides, message = BAD[case]  # relative paths resolve against the config file's directory
    (tmp_path / "docs.jsonl").write_text('{"text": "a document"}\n{"title": "no text"}\n')
    np.array([1, 2, 60000, 50279], dtype=np.uint16).tofile(tmp_path / "tokens.npy")
    (tmp_path / "c.toml").write_text('max_documents = 5\n[[sources]]\nkind = "embedded"\n')
    out = tmp_path / "out"
    r = cli("lm", "prepare", tmp_path / "c.toml", *overrides, "--out", out, "--no-progress")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not out.exists()
