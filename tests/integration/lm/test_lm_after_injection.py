"""`raretask lm analyze --what interference|retention` end to end on a tiny burst-schedule run trained with the
interference monitor: the monitor's table, the analyses' tables, figures and report sections; bad input is one
line, exit 2, nothing written."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raretask.report import pages, scorecard

from ..conftest import summary
from .conftest import trained_run

CONFIG = """
seed = 1
[data]
manifest = "{manifest}"
seq_len = 32
[model]
preset = "cpu-30k"
n_layers = 2
[train]
steps = 24
global_batch_seqs = 8
lr = 2e-2
warmup = 4
checkpoint_every = 12
keep_checkpoints = 0
[eval]
every = 4
train_instances = 100
test_instances = 100
heldout_tokens = 1024
reference = false
context = false
[[tasks]]
name = "cmp"
kind = "comparison"
unit = "per_batch"
frequency = 1.0
schedule = "burst"
every = 8
[monitor]
neurons = 4
reference_instances = 400
loss_every = 1
loss_instances = 200
flush_every = 5
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread) -> Path:
    return trained_run(tmp_path_factory.mktemp("after_injection"), CONFIG)


def test_training_with_a_monitor_table_logs_every_step(run):
    t = pq.read_table(run / "interference.parquet").to_pandas()
    assert list(t["step"]) == list(range(24)) and t["task_loss"].notna().all()
    injected = sorted(set(pq.read_table(run / "injections.parquet").column("step").to_pylist()))
    assert injected == [0, 8, 16]
    assert list(t.loc[t["instances"] > 0, "step"]) == injected  # the batch scan finds exactly the injections
    assert list(t["steps_since_injection"]) == [s % 8 for s in range(24)]
    assert t.loc[t["instances"] > 0, "cos_t"].notna().all() and t["cos_nt"].between(-1, 1).all()
    # metrics.parquet's test loss at step s and the monitor's at s score the same parameters (other instances)
    m = pq.read_table(run / "metrics.parquet").to_pandas().set_index("step")["test_loss"]
    assert abs(t.set_index("step")["task_loss"][8] - m[8]) < 0.5


def test_interference_analysis(cli, run):
    s = summary(cli("lm", "analyze", run, "--what", "interference", "ablation_instances=200", "--json"))
    out = run / "interference"
    assert s["out"] == str(out) and s["runs"] == 1 and s["without_monitor"] == []
    assert json.loads((out / "meta.json").read_text())["kind"] == "lm.interference"
    lined = pq.read_table(out / "after_injection.parquet").to_pandas()
    at0 = lined[(lined["k"] == 0) & (lined["metric"] == "cos_g")]
    assert int(at0["count"].iloc[0]) == 3 and lined["k"].max() == 23  # windows run to the end of training
    r = s["results"][0]
    assert r["cos_g_at_injection"][0] == pytest.approx(float(at0["mean"].iloc[0]))
    abl = pq.read_table(out / "ablation.parquet").to_pandas()
    assert list(abl["layer"].fillna(-1)) == [-1, 0, 1] and set(abl["step"]) == {24}
    assert r["ablation_layer"] in (0, 1) and r["monitored_layer"] == 0
    for name in ("fig9_interference.png", "fig10_layer_ablation.png"):
        assert (out / name).stat().st_size > 0
    (section,) = pages.sections(out)
    assert "Fig. 9" in section.title and "0.08 ± 0.02" in section.text
    assert "at the injection" in section.captions["fig9_interference.png"]
    assert any("Fig. 9" in sec.title for sec in pages.sections(run))  # the run's own page carries it


def test_retention_analysis(cli, run):
    s = summary(cli("lm", "analyze", run, "--what", "retention", "--json"))
    out = run / "retention"
    decay = pq.read_table(out / "decay.parquet").to_pandas()
    assert list(decay["source"]) == ["monitor"] and list(decay["until"]) == [8]
    curve = pq.read_table(out / "curve.parquet").to_pandas()
    assert curve["k"].iloc[0] == 0 and curve["mean"].iloc[0] == 0 and curve["k"].max() == 23
    tau = s["results"][0]["tau"]
    assert tau is None or tau > 0
    assert (out / "fig8_retention.png").stat().st_size > 0
    assert "decay constant" in pages.sections(out)[0].captions["fig8_retention.png"]
    # from metrics.parquet instead (every 4 steps)
    summary(cli("lm", "analyze", run, "--what", "retention", "source=metrics", "--out", run.parent / "r2", "--json"))
    rows = pq.read_table(run.parent / "r2" / "retention.parquet").to_pandas()
    assert set(rows["k"]) <= {0, 4, 8, 12, 16, 20, 24} and set(rows["source"]) == {"metrics"}
    # the scorecard reads both analyses inside the run; one size cannot test the size claims
    verdicts = {v.claim.id: v for v in scorecard.judge(run.parent)}
    assert verdicts["L8"].verdict == "not run" and "two monitored sizes" in verdicts["L8"].numbers
    assert verdicts["L9"].verdict == "not run"


@pytest.mark.parametrize("what, args, message", [
    ("interference", ["task=nope"], "task: 'nope' was not injected"),
    ("retention", ["task=nope"], "task: 'nope' was not injected"),
    ("interference", ["layers=[2]"], "layers: run has MLP layers 0..1, not 2"),
    ("interference", ["window=0"], "window: must be >= 1"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, run, tmp_path, what, args, message):
    r = cli("lm", "analyze", run, "--what", what, *args, "--out", tmp_path / "out")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_without_checkpoints_is_refused(cli, run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("checkpoints", "interference", "retention"))
    r = cli("lm", "analyze", bare, "--what", "interference")
    assert r.exit_code == 2 and "no checkpoints" in r.stderr and r.stderr.count("\n") == 1
    assert not (bare / "interference").exists()
    r = cli("lm", "analyze", run, "--what", "retention", "--steps", "last", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--steps: only for --what features" in r.stderr and not (tmp_path / "o").exists()


def test_a_monitor_layer_the_model_lacks_is_refused_before_training(cli, run, tmp_path):
    r = cli("lm", "train", run.parent / "tiny.toml", "monitor.layer=2", "--out", tmp_path / "t")
    assert r.exit_code == 2 and "monitor.layer: the model has MLP layers 0..1, not 2" in r.stderr
    assert not (tmp_path / "t").exists()
