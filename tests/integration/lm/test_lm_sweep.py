"""`raretask lm sweep` end to end on a tiny corpus: two cells trained with OLMo-core, read back on a second run,
tables, figures and `raretask report`; bad grids are one line, exit 2, nothing written."""

import json

import numpy as np
import pytest

from raretask.lm.corpus import CorpusConfig, SourceConfig, prepare
from raretask.runs import read_table
from tests.integration.conftest import summary

WORDS = ("the a market price rose fell from to by in of and company shares said year report bank growth new "
         "city council vote plan team game won lost season player coach minister government").split()

CONFIG = """
[data]
manifest = "{manifest}"
seq_len = 32
[model]
n_layers = 1
[[tasks]]
name = "cmp"
kind = "comparison"
schedule = "interval"
[train]
steps = 4
global_batch_seqs = 8
warmup = 1
checkpoint_every = 4
device = "cpu"
[eval]
every = 2
batch_seqs = 64
train_instances = 40
test_instances = 40
heldout_tokens = 256
reference = false
[sweep]
sizes = ["cpu-30k", "cpu-150k"]
frequencies = [0.01]
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 300-token-vocabulary BPE corpus of random-word documents (a second or two to prepare)."""
    root = tmp_path_factory.mktemp("lm_sweep")
    texts = root / "texts"
    texts.mkdir()
    rng = np.random.default_rng(0)
    for i in range(120):
        (texts / f"{i:03d}.txt").write_text(" ".join(rng.choice(WORDS, size=int(rng.integers(20, 80)))) + ".")
    cfg = CorpusConfig(sources=[SourceConfig(kind="text", path=str(texts))], bpe_vocab_size=300)
    cfg.validate()
    prepare(cfg, root / "corpus", progress=False)
    return root / "corpus"


@pytest.fixture
def config(tmp_path, corpus):
    path = tmp_path / "sweep.toml"
    path.write_text(CONFIG.format(manifest=corpus))
    return path


def test_sweep_trains_each_cell_once_and_reports(cli, config, tmp_path):
    out = tmp_path / "sweep"
    args = ["lm", "sweep", config, "--out", out, "--json", "--no-progress"]
    s = summary(cli(*args))
    assert s["cells"] == 2 and [r["cell"] for r in s["results"]] == ["cpu-30k_f0.01_cmp_s0", "cpu-150k_f0.01_cmp_s0"]
    small, large = s["results"]
    assert small["params"] < large["params"] and small["step"] == large["step"] == 4
    for r in s["results"]:
        assert (r["task"], r["grid_frequency"], r["frequency"], r["gap"], r["tokens_seen"]) == \
            ("cmp", 0.01, 0.01, 0, 4 * 8 * 32)
        assert 0 < r["train_loss"] < 20 and 0 <= r["test_acc_labels"] <= 1 and r["heldout_loss"] > 0

    res, cur = read_table(out / "results.parquet"), read_table(out / "curves.parquet")
    assert len(res["cell"]) == 2 and sorted(set(cur["step"])) == [0, 2, 4] and len(cur["cell"]) == 6
    cell_meta = {c: (out / "cells" / c / "meta.json").stat().st_mtime_ns for c in res["cell"]}
    assert json.loads((out / "meta.json").read_text())["kind"] == "lm.sweep"
    assert {"fig5_heatmaps.png", "fig6a_task_loss.png", "fig23_compute.png"} <= {p.name for p in out.glob("*.png")}

    again = summary(cli(*args))  # the same command: every cell read back, nothing trained
    assert again == s
    assert {c: (out / "cells" / c / "meta.json").stat().st_mtime_ns for c in res["cell"]} == cell_meta

    drawn = {f.name: f.read_bytes() for f in out.glob("*.png")}
    for name in drawn:  # the report redraws every figure from the sweep directory alone, byte for byte
        (out / name).unlink()
    report = cli("report", out)
    assert report.exit_code == 0, report.stderr
    assert {f.name: f.read_bytes() for f in out.glob("*.png")} == drawn
    page = (out / "report.html").read_text()
    assert "Fig. 5" in page and "fig5_heatmaps.png" in page and "cpu-150k_f0.01_cmp_s0" in page
    assert "Fig. 6b (needs two burst gaps" in page  # said, not drawn
    one = cli("report", out / "cells" / "cpu-30k_f0.01_cmp_s0")  # a cell is an lm.train run of its own
    assert one.exit_code == 0, one.stderr
    assert "curves.png" in (out / "cells" / "cpu-30k_f0.01_cmp_s0" / "report.html").read_text()


def test_cells_side_by_side_give_the_tables_of_one_process(cli, config, tmp_path, monkeypatch):
    """--workers 2: each cell trains in its own `raretask lm train` process; the sweep reads them back and its
    tables equal those of the cells trained one after another in this process (to 1e-6), and meta.json says how
    each cell was trained."""
    from raretask import runner

    monkeypatch.setattr(runner, "free_cores", lambda: 2)  # the split does not depend on this machine's load
    one = summary(cli("lm", "sweep", config, "--out", tmp_path / "one", "--json", "--no-progress"))
    two = summary(cli("lm", "sweep", config, "--out", tmp_path / "two", "--json", "--no-progress", "--workers", "2"))
    assert [r["cell"] for r in one["results"]] == [r["cell"] for r in two["results"]]
    for a, b in zip(one["results"], two["results"]):
        for key in ("train_loss", "test_loss", "test_acc_labels", "heldout_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
    timings = json.loads((tmp_path / "two" / "meta.json").read_text())["timings"]
    assert {t["status"] for t in timings.values()} == {"trained side by side"}
    assert all(t["workers"] == 2 and t["threads"] == 1 for t in timings.values())
    assert all((tmp_path / "two" / "logs" / f"{c}.log").is_file() for c in timings)


@pytest.mark.parametrize("override, message", [
    ("sweep.sizes=[]", "error: sweep.sizes: empty"),
    ('sweep.sizes=["cpu-30k","13B"]', "error: sweep.sizes: unknown preset '13B'"),
    ("sweep.frequencies=[0.01,0]", "error: sweep.frequencies: must be > 0, got 0.0"),
    ("sweep.frequencies=[-1e-3]", "error: sweep.frequencies: must be > 0, got -0.001"),
    ("data.manifest=no/such/corpus", "error: data.manifest: "),
    ("sweep.frequencies=[0.2]", "error: sweep cell cpu-30k_f0.2_cmp_s0: tasks[0].frequency: cmp (0.2 per_token"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, config, tmp_path, override, message):
    out = tmp_path / "never"
    r = cli("lm", "sweep", config, override, "--out", out, "--no-progress")
    assert r.exit_code == 2 and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()


def test_dry_run_lists_the_cells(cli, config):
    r = cli("lm", "sweep", config, "sweep.seeds=[0,1]", "sweep.tasks_together=true", "--dry-run")
    assert r.exit_code == 0 and "# 4 cells:" in r.stdout and "#   cpu-150k_f0.01_cmp_s1" in r.stdout
