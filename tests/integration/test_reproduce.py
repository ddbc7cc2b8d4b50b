"""`raretask reproduce`: every experiment of a scale side by side, then one report; resumes; bad input is one line,
exit 2, nothing written. The scale is shrunk here (a scale is data: a list of presets and overrides)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raretask.cli import reproduce as rep
from raretask.cli.reproduce import Experiment

from .conftest import summary
from .lm.test_lm_sweep import corpus  # noqa: F401 (a fixture: a tiny prepared corpus)

ROOT = Path(__file__).resolve().parents[2]

TINY = [
    Experiment("synthetic", ("synth", "run"), "synthetic/default.toml",
               ("sweep.seeds=[0]", "sweep.widths=[1,2,4]", "train.steps=200", "eval.every=100")),
    Experiment("toy", ("synth", "toy"), "synthetic/toy.toml",
               ("forget.steps=100", "competition.steps=100", "forget.gap=20", "seeds=[0,1]")),
    Experiment("lm/sweep", ("lm", "sweep"), "lm/demo.toml",
               ('sweep.sizes=["cpu-30k"]', "sweep.frequencies=[1e-2]", 'sweep.tasks=["comparison"]',
                "data.seq_len=32", "train.steps=4", "eval.every=2", "train.checkpoint_every=4",
                "eval.train_instances=16", "eval.test_instances=16", "eval.heldout_tokens=256", "eval.reference=false",
                "tasks[0].value_band=[0,1]"),  # the tiny corpus' 300-token BPE has no rarest tenth of 102 tokens
               part="lm"),
    Experiment("lm/features/cpu-30k", ("lm", "analyze"), "", ("das=none", "presence_instances=200"), part="lm",
               source="lm/sweep/cells/cpu-30k_f0.01_comparison_s0"),
]


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(rep.SCALES, "cpu", TINY)


def test_reproduce_runs_every_experiment_then_one_report_and_resumes(cli, tiny, corpus, tmp_path):  # noqa: F811
    out = tmp_path / "r"
    args = ["reproduce", "--scale", "cpu", "--out", out, "--corpus", corpus, "--json", "--no-progress"]
    s = summary(cli(*args))
    assert {n: e["status"] for n, e in s["experiments"].items()} == {
        "synthetic": "finished", "toy": "finished", "lm/sweep": "finished", "lm/features/cpu-30k": "finished"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "reproduce" and meta["scale"] == "cpu" and meta["status"] == "finished"
    assert meta["workers"] * meta["threads"] <= max(meta["free_cores"], 1)
    for name in ("synthetic", "toy", "lm/sweep", "lm/features/cpu-30k"):
        assert json.loads((out / name / "meta.json").read_text())["status"] == "finished"
        assert (out / "logs").is_dir()
    page = (out / "report.html").read_text()
    assert "Reproduce, scale cpu" in page and "synthetic/phase_diagram.png" in page and "toy/fig11.png" in page
    assert "lm/sweep/fig6a_task_loss.png" in page and "lm/features/cpu-30k/" in page
    # the same command again: everything is read back
    again = summary(cli(*args))
    assert {e["status"] for e in again["experiments"].values()} == {"done before"}
    # what was read back keeps the wall time of the run that made it, in the summary and in meta.json
    walls = {n: e["wall_s"] for n, e in s["experiments"].items()}
    assert {n: e["wall_s"] for n, e in again["experiments"].items()} == walls and all(walls.values())
    assert {n: e["wall_s"] for n, e in json.loads((out / "meta.json").read_text())["experiments"].items()} == walls
    # benchmarks/reproduce_record.py keeps what the run measured in a JSON file
    record = tmp_path / "record.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce_record.py"), str(out), "--out",
                           str(record)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    fig = json.loads(record.read_text())["figures"]
    assert fig["run"]["scale"] == "cpu" and fig["run"]["experiments"]["lm/sweep"]["status"] == "done before"
    assert [c["cell"] for c in fig["cells lm/sweep"]["cells"]] == ["cpu-30k_f0.01_comparison_s0"]
    presence = fig["fig7a lm/features/cpu-30k"]["cells"][0]
    assert presence["steps"] == [4] and presence["das_iia"] is None  # das=none
    verdicts = {v["claim"]: v["verdict"] for v in fig["scorecard"]["verdicts"]}
    assert verdicts["S6"] == "reproduced" and verdicts["L4"] == "not run"
    # a folder that is no finished reproduce run: exit 2
    assert subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce_record.py"), str(tmp_path),
                           "--out", str(tmp_path / "none.json")], capture_output=True, timeout=300).returncode == 2


def test_a_finished_sweep_of_another_config_is_not_read_back(cli, tiny, corpus, tmp_path, monkeypatch):  # noqa: F811
    """A preset that changed since DIR was made (another grid, more steps): its finished sweep is reported as failed
    with one line, not silently read back as this scale's."""
    out = tmp_path / "r"
    args = ["reproduce", "--scale", "cpu", "--only", "lm", "--out", out, "--corpus", corpus, "--json",
            "--no-progress"]
    sweep = [e for e in TINY if e.name == "lm/sweep"]
    monkeypatch.setitem(rep.SCALES, "cpu", sweep)
    assert summary(cli(*args))["experiments"]["lm/sweep"]["status"] == "finished"
    changed = [Experiment(e.name, e.command, e.preset, (*e.overrides, "train.steps=6"), part="lm") for e in sweep]
    monkeypatch.setitem(rep.SCALES, "cpu", changed)
    entry = summary(cli(*args))["experiments"]["lm/sweep"]
    assert entry["status"] == "failed" and "holds a finished sweep of another config" in entry["error"]
    assert json.loads((out / "lm" / "sweep" / "meta.json").read_text())["status"] == "finished"  # left as it was
    monkeypatch.setitem(rep.SCALES, "cpu", sweep)  # the preset as it was: read back again
    assert summary(cli(*args))["experiments"]["lm/sweep"]["status"] == "done before"


@pytest.mark.parametrize("args, message", [
    (["--scale", "huge"], "error: --scale: 'huge' is not one of cpu, gpu, paper"),
    (["--only", "half"], "error: --only: 'half' is not one of synthetic, lm"),
    (["--corpus", "{tmp}/nowhere"], "error: --corpus {tmp}/nowhere: no manifest.json"),
    (["--out", "{tmp}/other"], "error: --out {tmp}/other: holds a 'synthetic' run, not a reproduce run"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tiny, tmp_path, args, message):
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"kind": "synthetic"}))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "r")]
    r = cli("reproduce", *args, *out, "--no-progress")
    assert r.exit_code == 2
    assert r.stderr.startswith(message.replace("{tmp}", str(tmp_path))) and r.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists() and sorted(p.name for p in other.iterdir()) == ["meta.json"]
