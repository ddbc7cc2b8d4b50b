"""An LM sweep directory belongs to one corpus: a corpus prepared again at the same `data.manifest` path is refused
(one line naming data.manifest, exit 2), not silently mixed with the cells trained on the old one."""

import json

import pytest
from click.testing import CliRunner

from raretask import runs
from raretask.cli import main
from raretask.config import ConfigError
from raretask.lm import sweep as sweep_mod
from raretask.lm.corpus import CorpusConfig, SourceConfig, prepare
from raretask.lm.sweep import run_sweep
from tests.unit.lm.test_sweep import fake_train, sweep_cfg

GRID = 'sizes = ["cpu-30k", "cpu-150k"]\nfrequencies = [1e-3]\ntasks = ["cmp"]\n'


def prepare_corpus(tmp_path, seed, overwrite=False):
    """A tiny BPE corpus at tmp_path/corpus (the path BASE names); `seed` draws another held-out split."""
    texts = tmp_path / "texts"
    texts.mkdir(exist_ok=True)
    for i in range(6):
        (texts / f"{i}.txt").write_text(f"document {i} says the market rose and fell, then rose again.")
    cfg = CorpusConfig(sources=[SourceConfig(kind="text", path=str(texts))], bpe_vocab_size=300,
                       heldout_fraction=0.34, seed=seed)
    cfg.validate()
    return prepare(cfg, tmp_path / "corpus", progress=False, overwrite=overwrite)


@pytest.fixture
def calls(monkeypatch):
    """Training calls of the fake trainer; no OLMo, no corpus scan."""
    made: list[str] = []
    monkeypatch.setattr(sweep_mod, "train", fake_train(made))
    monkeypatch.setattr(sweep_mod, "preflight", lambda cfg, cells, **kw: None)
    monkeypatch.setattr(runs, "git_commit", lambda: "test")
    return made


@pytest.fixture
def cli():
    return lambda *args: CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def cell_stamps(out):
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/meta.json")}


def test_a_corpus_prepared_again_at_the_same_path_is_refused(tmp_path, calls):
    first = prepare_corpus(tmp_path, seed=0)
    cfg, out = sweep_cfg(tmp_path, GRID), tmp_path / "sweep"
    run_sweep(cfg, out, progress=False)
    assert len(calls) == 2
    recorded = json.loads((out / "corpus.json").read_text())
    assert recorded["train_sha256"] == first.data["files"]["train"]["sha256"]
    run_sweep(cfg, out, progress=False)  # the same corpus: read back
    assert len(calls) == 2

    second = prepare_corpus(tmp_path, seed=1, overwrite=True)  # same path, other held-out split
    assert second.data["files"] != first.data["files"]
    stamps = cell_stamps(out)
    with pytest.raises(ConfigError) as e:
        run_sweep(cfg, out, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"data.manifest: {tmp_path / 'corpus'} is not the corpus the cells in --out") and \
        "(train, heldout sha256 differ;" in msg and "\n" not in msg
    assert len(calls) == 2 and cell_stamps(out) == stamps  # nothing read back as if it were this corpus's

    # an unfinished cell would have resumed its checkpoint on the new corpus: refused the same way
    meta_path = out / "cells" / "cpu-30k_f0.001_cmp_s0" / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "status": "running"}))
    with pytest.raises(ConfigError, match="^data.manifest: "):
        run_sweep(cfg, out, progress=False)
    assert len(calls) == 2

    run_sweep(cfg, out, progress=False, overwrite=True)  # starting afresh trains every cell on the new corpus
    assert len(calls) == 4
    assert json.loads((out / "corpus.json").read_text())["train_sha256"] == second.data["files"]["train"]["sha256"]


def test_a_finished_sweep_is_read_back_without_its_corpus(tmp_path, calls):
    prepare_corpus(tmp_path, seed=0)
    cfg, out = sweep_cfg(tmp_path, GRID), tmp_path / "sweep"
    first = run_sweep(cfg, out, progress=False)
    (tmp_path / "corpus").rename(tmp_path / "moved")  # nothing to compare against: the record stands
    assert run_sweep(cfg, out, progress=False).summary() == first.summary() and len(calls) == 2
    assert (out / "corpus.json").is_file()


def test_the_cli_refuses_a_different_corpus_with_exit_2(tmp_path, calls, cli):
    prepare_corpus(tmp_path, seed=0)
    cfg_path = tmp_path / "sweep.toml"
    sweep_cfg(tmp_path, GRID)  # writes sweep.toml
    out = tmp_path / "sweep"
    assert cli("lm", "sweep", cfg_path, "--out", out, "--no-progress").exit_code == 0
    prepare_corpus(tmp_path, seed=1, overwrite=True)
    r = cli("lm", "sweep", cfg_path, "--out", out, "--no-progress")
    assert r.exit_code == 2 and r.stderr.startswith("error: data.manifest: ") and r.stderr.count("\n") == 1, \
        r.stderr
