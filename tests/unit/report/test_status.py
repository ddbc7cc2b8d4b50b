"""`raretask.report.status` on run directories built by hand: an LM sweep with a finished, a running, a failed and
a not-started cell (states, steps, the error line, counts, ETAs, JSON), a resumed cell's speed, logs that end
cleanly or in an error, a reproduce directory, and directories that are no run (one-line ConfigError)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from raretask import runs
from raretask.config import ConfigError
from raretask.report import status

SWEEP = """
[data]
manifest = "/nowhere/corpus"
seq_len = 32
[model]
n_layers = 1
[[tasks]]
name = "cmp"
kind = "comparison"
[train]
steps = 100
global_batch_seqs = 8
device = "cpu"
[eval]
every = 20
[sweep]
sizes = ["cpu-30k", "cpu-150k"]
frequencies = [0.01, 0.001]
"""
FINISHED, RUNNING, FAILED, NOT_STARTED = ("cpu-30k_f0.01_cmp_s0", "cpu-30k_f0.001_cmp_s0", "cpu-150k_f0.01_cmp_s0",
                                          "cpu-150k_f0.001_cmp_s0")
TRACEBACK = """starting cell
Traceback (most recent call last):
  File "x.py", line 1, in <module>
RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB
"""


def touch(path: Path, when: float) -> None:
    os.utime(path, (when, when))


def checkpoint(cdir: Path, step: int, when: float) -> None:
    ck = cdir / "checkpoints" / f"step{step}"
    ck.mkdir(parents=True)
    (ck / ".metadata.json").write_text("{}")
    touch(ck / ".metadata.json", when)


def write_sweep(root: Path) -> Path:
    """An LM sweep directory mid-run: one cell finished, one running, one failed (side by side, its log ends in a
    traceback), one not started."""
    out = root / "sweep"
    runs.write_text(out / "config.toml", SWEEP)
    runs.write_json(out / "meta.json", {"kind": "lm.sweep", "status": "running"})
    cells = out / "cells"
    runs.write_json(cells / FINISHED / "meta.json", {"kind": "lm.train", "status": "finished", "steps": 100,
                                                     "wall_time_s": 50.0, "resumed_from": 0})
    t0 = time.time() - 1000
    runs.write_json(cells / RUNNING / "meta.json", {"kind": "lm.train", "status": "running"})
    touch(cells / RUNNING / "meta.json", t0)
    runs.write_table(cells / RUNNING / "metrics.parquet", {"step": [0, 0, 20, 20, 40, 40], "task": ["cmp"] * 6})
    touch(cells / RUNNING / "metrics.parquet", t0 + 20)
    checkpoint(cells / RUNNING, 20, t0 + 10)
    runs.write_json(cells / FAILED / "meta.json", {"kind": "lm.train", "status": "running"})
    checkpoint(cells / FAILED, 10, t0)
    runs.write_text(out / "logs" / f"{FAILED}.log", TRACEBACK)
    return out


def test_lm_sweep_states_steps_error_counts_and_eta(tmp_path):
    st = status.read(write_sweep(tmp_path))
    assert st.kind == "lm.sweep"
    rows = {c.name: c for c in st.cells}
    assert [c.name for c in st.cells] == [FINISHED, RUNNING, FAILED, NOT_STARTED]  # the config's order
    assert {n: c.state for n, c in rows.items()} == {FINISHED: "finished", RUNNING: "running", FAILED: "failed",
                                                     NOT_STARTED: "not started"}
    assert [(c.steps_done, c.steps_total) for c in st.cells] == [(100, 100), (40, 100), (10, 100), (0, 100)]
    assert rows[FAILED].error == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert all(rows[n].error is None for n in (FINISHED, RUNNING, NOT_STARTED))
    assert st.counts == {"finished": 1, "running": 1, "queued": 0, "failed": 1, "not started": 1}
    # speeds: finished 50 s / 100 steps; running (t0+20 - t0) / (40 - 0) -> both 0.5 s/step
    assert rows[FINISHED].eta_s == 0 and rows[FAILED].eta_s is None
    assert rows[RUNNING].eta_s == pytest.approx(0.5 * 60, abs=0.01)
    assert rows[NOT_STARTED].eta_s == pytest.approx(0.5 * 100, abs=0.01)  # no cpu-150k measured: every measured cell
    assert st.eta_s == pytest.approx(30 + 50, abs=0.02)  # one cell running at a time
    j = json.loads(json.dumps(st.to_json()))
    assert set(j) == {"dir", "kind", "cells", "counts", "eta_s"} and j["kind"] == "lm.sweep"
    assert j["cells"][2] == {"name": FAILED, "state": "failed", "steps": 10, "total": 100,
                             "error": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "eta_s": None}
    assert j["counts"] == {"finished": 1, "running": 1, "queued": 0, "failed": 1, "not started": 1}
    assert status.cells(tmp_path / "sweep") == st.cells


def test_a_cell_submitted_to_slurm_and_not_started_is_queued(tmp_path):
    """DIR/jobs.json (raretask.launcher's record of the last submission) names the cells sent as jobs: one that has
    not started yet is queued; one that started (a log, a checkpoint) keeps its own state; one not sent stays."""
    out = write_sweep(tmp_path)
    runs.write_json(out / "jobs.json", {"cells": {NOT_STARTED: "123_1", FAILED: "123_0"}})
    st = status.read(out)
    assert {c.name: c.state for c in st.cells} == {FINISHED: "finished", RUNNING: "running", FAILED: "failed",
                                                   NOT_STARTED: "queued"}
    assert st.counts["queued"] == 1 and st.cells[3].eta_s == pytest.approx(0.5 * 100, abs=0.01)
    runs.write_json(out / "jobs.json", {"cells": {FAILED: "124"}})
    assert status.read(out).cells[3].state == "not started"


def test_same_size_speed_is_preferred_and_unknown_speed_gives_no_eta(tmp_path):
    out = write_sweep(tmp_path)
    big = out / "cells" / FAILED
    runs.write_json(big / "meta.json", {"status": "finished", "steps": 100, "wall_time_s": 200.0})
    rows = {c.name: c for c in status.cells(out)}
    assert rows[NOT_STARTED].eta_s == pytest.approx(2.0 * 100)  # the finished cpu-150k cell's 2 s/step
    for name in (FINISHED, RUNNING, FAILED):  # nothing measured: no ETA
        (out / "cells" / name / "meta.json").unlink()
    (out / "logs" / f"{FAILED}.log").unlink()
    st = status.read(out)
    assert all(c.state == "running" or c.state == "not started" for c in st.cells)
    assert st.eta_s is None


def test_running_cell_speed_counts_only_the_steps_since_it_resumed(tmp_path):
    cdir = write_sweep(tmp_path) / "cells" / RUNNING
    began = (cdir / "meta.json").stat().st_mtime
    checkpoint(cdir, 30, began - 500)  # written by an earlier, killed session: this one resumed from step 30
    row = next(c for c in status.cells(tmp_path / "sweep") if c.name == RUNNING)
    assert row.steps_done == 40 and row.eta_s == pytest.approx(20 / (40 - 30) * 60, abs=0.01)


@pytest.mark.parametrize("log, failed", [
    ("step 3/100\n", None),
    ("Traceback (most recent call last):\n  File ...\n", None),  # still being written
    ("loading\nerror: data.manifest: /x: no manifest.json\n\n", "error: data.manifest: /x: no manifest.json"),
    ("interrupted: run the same command again to resume from the last checkpoint\n",
     "interrupted: run the same command again to resume from the last checkpoint"),
    ("x\ntorch.OutOfMemoryError: CUDA out of memory\n", "torch.OutOfMemoryError: CUDA out of memory"),
    ("KeyboardInterrupt\n", "KeyboardInterrupt"),
])
def test_a_log_fails_a_cell_only_when_it_ends_in_an_error(tmp_path, log, failed):
    out = write_sweep(tmp_path)
    runs.write_text(out / "logs" / f"{NOT_STARTED}.log", log)  # a side-by-side job that has not written meta yet
    row = next(c for c in status.cells(out) if c.name == NOT_STARTED)
    assert (row.state, row.error) == (("failed", failed) if failed else ("running", None))


def test_a_finished_cell_stays_finished_whatever_its_log_says(tmp_path):
    out = write_sweep(tmp_path)
    runs.write_text(out / "logs" / f"{FINISHED}.log", "ValueError: an earlier attempt\n")
    assert status.cells(out)[0].state == "finished"


def test_reproduce_directory_reads_each_experiment(tmp_path):
    out = tmp_path / "r"
    runs.write_json(out / "meta.json", {"kind": "reproduce", "status": "finished", "experiments": {
        "toy": {"status": "finished", "error": None}, "residual": {"status": "failed", "error": "error: boom"},
        "neurons": {"status": "skipped", "error": "needs lm/corpus"}, "lm/sweep": {"status": "done before"}}})
    runs.write_json(out / "toy" / "meta.json", {"kind": "synth.toy", "status": "finished"})
    runs.write_json(out / "residual" / "meta.json", {"kind": "synth.residual", "status": "running"})
    sweep = write_sweep(out / "lm")  # out/lm/sweep, mid-run
    assert sweep == out / "lm" / "sweep"
    st = status.read(out)
    rows = {c.name: c for c in st.cells}
    assert [c.name for c in st.cells] == ["toy", "residual", "neurons", "lm/sweep"]
    assert (rows["toy"].state, rows["residual"].state, rows["residual"].error) == ("finished", "failed", "error: boom")
    assert (rows["neurons"].state, rows["neurons"].error) == ("not started", "needs lm/corpus")
    s = rows["lm/sweep"]
    assert (s.state, s.steps_done, s.steps_total) == ("running", 150, 400) and s.eta_s == pytest.approx(80, abs=0.1)

    runs.write_json(out / "meta.json", {"kind": "reproduce", "status": "running", "experiments": ["toy", "retention"]})
    runs.write_text(out / "logs" / "retention.log", "ValueError: bad preset\n")
    rows = {c.name: c for c in status.cells(out)}
    assert (rows["retention"].state, rows["retention"].error) == ("failed", "ValueError: bad preset")


def test_lm_train_run_is_one_row(tmp_path):
    out = tmp_path / "run"
    runs.write_text(out / "config.toml", "[train]\nsteps = 8\n")
    runs.write_json(out / "meta.json", {"kind": "lm.train", "status": "running"})
    checkpoint(out, 4, time.time())
    (row,) = status.cells(out)
    assert (row.name, row.state, row.steps_done, row.steps_total) == ("run", "running", 4, 8)


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "{d}: no such directory"),
    (lambda d: d.mkdir(), "{d}: not a raretask run directory (no meta.json)"),
    (lambda d: runs.write_text(d / "meta.json", "[1, 2"), "{d}/meta.json: not a JSON object"),
    (lambda d: (runs.write_json(d / "meta.json", {"kind": "lm.sweep"}), runs.write_text(d / "config.toml", "x")),
     "{d}/config.toml: not valid TOML"),
])
def test_no_run_is_a_one_line_config_error(tmp_path, setup, message):
    d = tmp_path / "d"
    setup(d)
    with pytest.raises(ConfigError) as e:
        status.read(d)
    assert str(e.value).startswith(message.format(d=d)) and "\n" not in str(e.value)


def test_format_duration():
    assert [status.format_duration(s) for s in (None, 0, 59.6, 200, 3725)] == ["-", "0s", "1m00s", "3m20s", "1h02m"]
