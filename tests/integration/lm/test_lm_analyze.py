"""`raretask lm analyze` end to end on a tiny trained run: the tables, the figures and the report section; bad input
is one line, exit 2, nothing written."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raretask.report import pages

from ..conftest import summary
from .conftest import trained_run

CONFIG = """
seed = 3
[data]
manifest = "{manifest}"
seq_len = 32
[model]
preset = "cpu-30k"
n_layers = 2
[train]
steps = 20
global_batch_seqs = 8
lr = 2e-2
warmup = 5
checkpoint_every = 10
keep_checkpoints = 0
[eval]
every = 10
train_instances = 100
test_instances = 100
heldout_tokens = 1024
reference = false
context = false
[[tasks]]
name = "cmp"
kind = "comparison"
frequency = 0.01
schedule = "interval"
[[tasks]]
name = "add"
kind = "modular_addition"
frequency = 0.01
schedule = "interval"
"""
FAST = ["das_steps=20", "das_pairs=200", "das_eval_pairs=200", "presence_instances=1000"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread) -> Path:
    return trained_run(tmp_path_factory.mktemp("analyze"), CONFIG)


def test_analyze_writes_the_tables_figures_and_report_section(cli, run):
    s = summary(cli("lm", "analyze", run, *FAST, "--json", "--no-progress"))
    out = run / "features"
    assert s["out"] == str(out) and s["runs"] == 1
    assert json.loads((out / "meta.json").read_text())["kind"] == "lm.features"
    f = pq.read_table(out / "features.parquet").to_pandas()
    # every checkpoint along training x every residual layer (embeddings + 2 blocks), per task
    assert sorted(set(f["step"])) == [10, 20] and sorted(set(f["layer"])) == [0, 1, 2]
    assert len(f[f["metric"] == "order_r2"]) == 2 * 3 and len(f[f["metric"] == "fourier_modes"]) == 2 * 3
    assert f["test_acc"].notna().all()  # both checkpoints were evaluated steps
    das = pq.read_table(out / "das.parquet").to_pandas()
    assert set(das["step"]) == {20} and sorted(das["layer"]) == [0, 1, 2]  # DAS: last checkpoint, every layer
    assert all(len(d) == 24 for d in das["direction"]) and das["iia"].between(0, 1).all()
    fourier = pq.read_table(out / "fourier.parquet").to_pandas()
    assert len(fourier) == 2 * 3 * 50
    per_layer = fourier.groupby(["step", "layer"])["present"].sum()
    modes = f[f["metric"] == "fourier_modes"].set_index(["step", "layer"])["value"]
    assert (per_layer.sort_index().to_numpy() == modes.sort_index().to_numpy()).all()
    assert len(pq.read_table(out / "modes.parquet")) == 3 * 100  # last step, every layer, every class
    for name in ("fig7a_order_r2.png", "fig7b_fourier_modes.png", "fig7b_modes_pca.png", "das_iia.png"):
        assert (out / name).stat().st_size > 0
    section = pages.sections(out)[0]
    assert "Fig. 7" in section.title and section.table[1][2] in ("cmp", "add")
    assert "IIA" in section.captions["das_iia.png"]
    # the analysed run's own page carries the analysis too
    assert any("Fig. 7" in s.title for s in pages.sections(run))
    # --steps last: only the last checkpoint, into another directory
    s = summary(cli("lm", "analyze", run, *FAST, "das=none", "--steps", "last", "--out", run.parent / "last",
                    "--json", "--no-progress"))
    assert set(pq.read_table(run.parent / "last" / "features.parquet").column("step").to_pylist()) == {20}
    assert pq.read_table(run.parent / "last" / "das.parquet").num_rows == 0


@pytest.mark.parametrize("args, message", [
    (["layers=[3]"], "layers: run has residual layers 0..2"),
    (["tasks=[\"nope\"]"], "tasks: 'nope' was not injected"),
    (["position=middle"], "position"),
])
def test_bad_analysis_input_is_one_line_and_writes_nothing(cli, run, tmp_path, args, message):
    r = cli("lm", "analyze", run, *args, "--out", tmp_path / "out")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and message in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_no_run_or_has_no_checkpoints_is_refused(cli, run, tmp_path):
    r = cli("lm", "analyze", tmp_path, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "not an LM run or sweep directory" in r.stderr and r.stderr.count("\n") == 1
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("checkpoints", "features"))
    r = cli("lm", "analyze", bare, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "no checkpoints" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (bare / "features").exists()
    r = cli("lm", "analyze", run, "--out", bare)  # an --out holding something else is not overwritten
    assert r.exit_code == 2 and "not a feature analysis directory" in r.stderr
