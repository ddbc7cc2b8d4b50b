"""`raretask synth neurons`: the preset's claims end to end, determinism, resume by parts, bad input."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import ROOT, summary

PRESET = ROOT / "configs" / "synthetic" / "neurons.toml"
# The preset, shortened (fewer seeds and steps) to keep the suite fast; its claims hold with margin at this length.
# train.device=cpu: the thresholds below hold for these seeds' CPU random streams (a CUDA generator draws others)
SHORT = ["train.device=cpu", "sweep.seeds=[0,1]", "train.steps=4000", "solutions.steps_reweighted=2000", "solutions.steps_natural=2000",
         "eval.every=1000", "eval.samples=1024"]
TINY = ["tasks.count=3", "sweep.widths=[2,4]", "sweep.seeds=[0]", "train.steps=200", "eval.every=100",
        "eval.samples=256", "solutions.width=2", "solutions.steps_reweighted=100", "solutions.steps_natural=100"]
TABLES = ["results", "curves", "allocation", "solutions"]
LEARNED = 0.9  # the preset's eval.learned


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    from click.testing import CliRunner

    from raretask.cli import main

    out = tmp_path_factory.mktemp("neurons") / "run"
    r = CliRunner().invoke(main, ["synth", "neurons", str(PRESET), *SHORT, "--out", str(out), "--json",
                                  "--no-progress"], catch_exceptions=False)
    return out, summary(r)


def test_preset_accuracy_grows_with_width(preset_run):
    out, s = preset_run
    names = [t["name"] for t in s["tasks"]]
    freqs = [t["frequency"] for t in s["tasks"]]
    assert freqs == sorted(freqs, reverse=True)  # task order = frequency order
    widths = [pw["width"] for pw in s["per_width"]]
    acc = [[pw["accuracy"][n] for n in names] for pw in s["per_width"]]  # (W, K), mean over seeds
    # the rarest task learned (mean accuracy >= 0.9) moves to rarer tasks as N grows, never back
    rarest = [max([k for k in range(len(names)) if a[k] >= LEARNED], default=-1) for a in acc]
    assert rarest == sorted(rarest) and rarest[0] <= 1 and rarest[-1] == len(names) - 1, rarest
    # every task's accuracy is non-decreasing in N up to 0.05 (seed noise), and the mean grows strictly overall
    for k in range(len(names)):
        for a, b in zip(acc, acc[1:]):
            assert b[k] >= a[k] - 0.05, (names[k], widths, [x[k] for x in acc])
    assert sum(acc[-1]) / len(names) > sum(acc[0]) / len(names) + 0.3
    # the rarest task: at chance at the smallest width, learned at the largest
    assert acc[0][-1] < 0.6 and acc[-1][-1] >= LEARNED
    # learned tasks hold neurons: at the largest width every task has at least one, the narrowest only the top
    top = s["per_width"][-1]["neurons"]
    assert all(top[n] >= 1 for n in names)
    assert s["per_width"][0]["neurons"][names[-1]] == 0


def test_preset_solutions_exist_and_are_lost(preset_run):
    out, s = preset_run
    sol = s["solutions"]
    assert sol["task"] == s["tasks"][-1]["name"]  # the rarest
    assert sol["width"] in [pw["width"] for pw in s["per_width"]]
    # on the natural mixture this width does not learn it (that is how the width was chosen) ...
    assert sol["natural_only"]["mean"] < 0.6
    # ... yet a solution of this width expresses it: learned by every seed on the reweighted mixture ...
    assert min(sol["after_reweighting"]["per_seed"]) >= LEARNED
    # ... and lost again by every seed once training continues on the natural mixture
    assert max(sol["after_natural"]["per_seed"]) < 0.6
    table = pq.read_table(out / "solutions.parquet").to_pydict()
    assert set(table["arm"]) == {"reweighted", "natural"} and set(table["phase"]) == {"reweighted", "natural"}


def test_preset_report_and_files(preset_run, cli):
    out, s = preset_run
    for name in TABLES:
        assert (out / f"{name}.parquet").is_file()
    for fig in ["accuracy_vs_width", "allocation", "solutions"]:
        assert (out / f"{fig}.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["per_width"] == s["per_width"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "synth.neurons" and meta["status"] == "finished"
    alloc = pq.read_table(out / "allocation.parquet").to_pydict()
    assert len(alloc["delta"]) == len(s["tasks"]) * 2 * sum(pw["width"] for pw in s["per_width"])
    r = cli("report", out)
    assert r.exit_code == 0, r.stderr
    page = (out / "report.html").read_text()
    for title in ["accuracy vs width", "allocation by ablation", "solutions exist"]:
        assert title in page


def _tables(out: Path) -> dict:
    return {name: pq.read_table(out / f"{name}.parquet") for name in TABLES}


def test_same_seed_gives_identical_tables_and_finished_parts_are_read_back(cli, tmp_path):
    for name in ["a", "b"]:
        r = cli("synth", "neurons", PRESET, *TINY, "--out", tmp_path / name, "--no-progress")
        assert r.exit_code == 0, r.stderr
    a, b = _tables(tmp_path / "a"), _tables(tmp_path / "b")
    for name in TABLES:
        assert a[name].equals(b[name]), name
    # a finished sweep is read back, not retrained: remove the solutions part only and run again
    (tmp_path / "a" / "solutions.parquet").unlink()
    stamp = (tmp_path / "a" / "results.parquet").stat().st_mtime_ns
    assert cli("synth", "neurons", PRESET, *TINY, "--out", tmp_path / "a", "--no-progress").exit_code == 0
    assert (tmp_path / "a" / "results.parquet").stat().st_mtime_ns == stamp
    assert _tables(tmp_path / "a")["solutions"].equals(b["solutions"])
    # another seed gives other numbers
    r = cli("synth", "neurons", PRESET, *TINY, "sweep.seeds=[1]", "--out", tmp_path / "c", "--no-progress")
    assert r.exit_code == 0 and not _tables(tmp_path / "c")["curves"].equals(b["curves"])


def test_dry_run_prints_the_resolved_config_and_writes_nothing(cli, tmp_path):
    r = cli("synth", "neurons", PRESET, "activation=gelu", "--dry-run", "--out", tmp_path / "x")
    assert r.exit_code == 0 and 'activation = "gelu"' in r.stdout
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("override, message", [
    ("tasks.bits=[1]", "tasks.bits[0]: must be >= 2"),
    ("solutions.frequencies=[0.5,0.5]", "solutions.frequencies: expected 6 values"),
    ("sweep.widths=[0,4]", "sweep.widths: must be >= 1"),
    ("activation=tanh", "activation: 'tanh' is not one of relu, gelu"),
    ("train.lrr=0.1", "train.lrr: unknown key"),
    ("train.device=tpu", "train.device: 'tpu' is not auto, cpu or cuda"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, override, message):
    out = tmp_path / "out"
    r = cli("synth", "neurons", PRESET, override, "--out", out, "--no-progress")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not out.exists()


def test_solutions_can_be_switched_off_and_the_report_says_so(cli, tmp_path):
    out = tmp_path / "off"
    r = cli("synth", "neurons", PRESET, *TINY, "solutions.enabled=false", "--out", out, "--json", "--no-progress")
    assert summary(r)["solutions"] == {"skipped": "disabled"}
    assert not (out / "solutions.parquet").exists() and not (out / "solutions.png").exists()
    assert cli("report", out).exit_code == 0
    assert "Not run: disabled" in (out / "report.html").read_text()
