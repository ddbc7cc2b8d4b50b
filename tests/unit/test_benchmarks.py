"""The benchmarks' results files and exit status (benchmarks/record.py), and one short end-to-end benchmark run."""

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.record import Run, Target, write_json

ROOT = Path(__file__).resolve().parents[2]


def make_run(path: Path, name: str = "demo", device: str = "cpu") -> Run:
    return Run(name, argparse.Namespace(out=path, steps=5), device)


def last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_a_missed_target_exits_1_and_is_recorded_as_not_met(tmp_path, capsys):
    run = make_run(tmp_path / "r.json")
    run.figures("a", batched=83.0, naive=10.0, ratio=8.3)
    run.target("(a) batched/naive", 8.3, 10, ">=", "x")
    run.target("(b) logged/plain", 1.2, 1.5, "<=", "x")
    assert run.finish() == 1
    assert last_line(capsys) == "target missed: (a) batched/naive 8.3x < 10x"
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [t["met"] for t in doc["targets"]] == [False, True]
    assert doc["targets"][0] == {"name": "(a) batched/naive", "value": 8.3, "target": 10.0, "op": ">=", "met": False,
                                 "unit": "x"}
    assert doc["all_met"] is False
    assert doc["figures"] == {"a": {"batched": 83.0, "naive": 10.0, "ratio": 8.3}}


def test_all_targets_met_exits_0(tmp_path, capsys):
    run = make_run(tmp_path / "r.json")
    run.target("(a) batched/naive", 15.3, 10, ">=", "x")
    run.target("(b) logged/plain", 1.5, 1.5, "<=", "x")  # on the boundary: met
    assert run.finish() == 0
    assert last_line(capsys) == "targets met: all 2"
    assert json.loads((tmp_path / "r.json").read_text())["all_met"] is True


def test_every_missed_target_is_on_the_last_line(tmp_path, capsys):
    run = make_run(tmp_path / "r.json")
    run.target("ratio", 0.95, 1.0, ">=", "x")
    run.target("fraction", 45.0, 50, ">=", "%")
    run.target("overhead", 1.62, 1.5, "<=", "x")
    assert run.finish() == 1
    assert last_line(capsys) == "target missed: ratio 0.95x < 1x; fraction 45% < 50%; overhead 1.62x > 1.5x"


def test_a_near_miss_is_not_rounded_onto_its_target():
    assert Target("ratio", 0.99962, 1.0, ">=", "x").miss() == "ratio 0.9996x < 1x"
    assert Target("overhead", 1.50004, 1.5, "<=", "x").miss() == "overhead 1.50004x > 1.5x"


def test_the_file_holds_machine_run_and_commit(tmp_path):
    run = make_run(tmp_path / "r.json")
    run.finish()
    doc = json.loads((tmp_path / "r.json").read_text())
    assert {"benchmark", "started", "wall_s", "machine", "git", "argv", "args", "figures", "targets", "all_met",
            "error"} <= set(doc)
    assert {"platform", "processor", "cpu_count", "torch_threads", "torch", "device"} <= set(doc["machine"])
    assert doc["machine"]["cpu_count"] == os.cpu_count() and doc["machine"]["device"] == "cpu"
    assert datetime.datetime.fromisoformat(doc["started"]).tzinfo is not None
    assert len(doc["git"]["commit"]) == 40  # this checkout is a git repository
    assert doc["args"] == {"out": str(tmp_path / "r.json"), "steps": 5}


def test_abort_writes_what_was_measured_and_exits_2(tmp_path, capsys):
    run = make_run(tmp_path / "r.json")
    run.figures("a", step_s=0.02)
    assert run.abort("transformers is not installed") == 2
    assert capsys.readouterr().err.strip() == "transformers is not installed"
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["error"] == "transformers is not installed" and doc["all_met"] is False
    assert doc["figures"] == {"a": {"step_s": 0.02}}


def test_default_path_names_the_device():
    assert make_run(None, "synthetic_sweep").path == ROOT / "benchmarks" / "results" / "synthetic_sweep.json"
    assert make_run(None, "synthetic_sweep", "cuda").path.name == "synthetic_sweep_cuda.json"


def test_the_write_is_atomic(tmp_path):
    """A whole file or the previous one, and no temporary file left, whether the write succeeds or fails."""
    path = tmp_path / "sub" / "r.json"
    write_json(path, {"run": 1})
    write_json(path, {"run": 2})
    assert json.loads(path.read_text()) == {"run": 2}
    with pytest.raises(TypeError):
        write_json(path, {"run": object()})  # not JSON: fails half-way through
    assert json.loads(path.read_text()) == {"run": 2}
    assert os.listdir(path.parent) == ["r.json"]


def test_an_unknown_op_is_refused():
    with pytest.raises(ValueError):
        Target("ratio", 1.0, 1.0, ">")


def test_synthetic_sweep_writes_its_results_and_exits_by_them(tmp_path):
    """Part (a) only, 5 steps (a few seconds): the figures and the targets of both cases are recorded, and the exit
    status agrees with them (0 or 1, whichever this machine's speed gives)."""
    out = tmp_path / "synthetic_sweep.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "synthetic_sweep.py"), "--device", "cpu",
                           "--only", "a", "--default-steps", "5", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(out.read_text())
    assert [t["name"] for t in doc["targets"]] == ["(a) batched/naive sweep-steps/s, idle",
                                                   "(a) batched/naive sweep-steps/s, one core busy"]
    for section in ("a", "a_busy"):  # idle, then with the core-spinning process the benchmark started itself
        assert {"batched_sweep_steps_per_s", "naive_sweep_steps_per_s", "ratio", "threads"} <= \
            set(doc["figures"][section])
    assert proc.returncode == (0 if all(t["met"] for t in doc["targets"]) else 1)
    assert doc["args"]["default_steps"] == 5 and doc["argv"][-1] == str(out)
    assert "(a) default preset" in proc.stdout
