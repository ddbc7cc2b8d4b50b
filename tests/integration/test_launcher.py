"""`--launcher slurm` on the synthetic lab, on this machine: submitit's local executor runs each grid point as a job
(processes, as sbatch would), the debug executor runs them in this process, and a stand-in `sbatch` takes the real
Slurm submission. Jobs give the tables of one process bit for bit, a cell killed mid-run resumes on resubmission,
a failed cell shows in `raretask status` while the others finish, `--dry-run` prints the script that is then
submitted, and bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from raretask.config import load_config
from raretask.synthetic.train import SynthConfig, run
from tests.integration.conftest import summary

SWEEP = """
[mixture]
dim = 8
zipf = 1.0
noise = 0.05
tasks_from = {{ count = 2, rank = 2, decay = 1.0 }}
[train]
steps = 40
batch_size = 16
lr = 0.01
checkpoint_every = 100
device = "cpu"
threads = 1
[eval]
every = 500
[sweep]
widths = [1, 2]
seeds = [0]
{grid}
"""
GRID = '"mixture.zipf" = [0.5, 1.5]'
A, B = "mixture.zipf=0.5", "mixture.zipf=1.5"
LOCAL = ["--launcher", "slurm", "launcher.cluster=local", "--no-progress"]


def tables(out: Path) -> dict[str, object]:
    return {name: pq.read_table(out / name) for name in ("results.parquet", "curves.parquet")}


def wait_for(what, timeout: float = 600.0):
    """Poll `what()` until it is truthy (its value), failing after `timeout` seconds (generous: on a busy machine
    every job's process waits its turn for a core)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what.__doc__ or what}")


def cell_process(point: str) -> int | None:
    """The pid of the `raretask synth cell DIR POINT` process a job of this test started (a descendant of this
    process: the local executor's controller, its task, then the cell)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    todo, mine = [os.getpid()], []
    while todo:
        kids = children.get(todo.pop(), [])
        mine += kids
        todo += kids
    for pid in mine:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"cell" in argv and point.encode() in argv:
            return pid
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the cell's process in /proc")
def test_jobs_give_the_tables_of_one_process_and_a_killed_cell_resumes_on_resubmission(cli, tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP.format(grid='"train.steps" = [2000, 300]'))  # A is killed mid-run while B finishes
    run(load_config(SynthConfig, cfg), tmp_path / "here", progress=False)  # in one process
    A, B = "train.steps=2000", "train.steps=300"

    out = tmp_path / "jobs"
    r = cli("synth", "run", cfg, "--out", out, *LOCAL)  # two jobs, one per grid point; the command returns
    assert r.exit_code == 0 and "submitted 2 job(s)" in r.stdout, r.stderr
    assert set(json.loads((out / "jobs.json").read_text())["cells"]) == {A, B}
    pid = wait_for(lambda: cell_process(A))
    ckpt = out / "groups" / A / "checkpoint.pt"
    wait_for(ckpt.is_file)
    os.kill(pid, signal.SIGKILL)  # the cell's process dies mid-run (OOM killer, a lost node)
    wait_for((out / "groups" / B / "results.parquet").is_file)  # the other job finishes its cell
    wait_for(lambda: "SIGKILL" in (out / "logs" / f"{A}.log").read_text())  # the job saw its cell die
    s = summary(cli("status", out, "--json"))
    cells = {c["name"]: c for c in s["cells"]}
    assert cells[B]["state"] == "finished" and cells[A]["state"] == "failed" and cells[A]["steps"] >= 100
    assert cells[A]["error"].startswith("error: killed by SIGKILL")
    assert not (out / "results.parquet").exists() and ckpt.is_file()  # no tables until every cell is done

    finished_b = (out / "groups" / B / "results.parquet").stat().st_mtime_ns
    r = cli("synth", "run", cfg, "--out", out, *LOCAL, "--json")  # the same command again: A only, resumed
    assert r.exit_code == 0, r.stderr
    assert list(json.loads(r.stdout)["submitted"]) == [A]
    gathered = out / "logs" / "gather.log"
    wait_for(lambda: gathered.is_file() and "wrote" in gathered.read_text())  # A's job, the last, gathered
    here, jobs = tables(tmp_path / "here"), tables(out)
    assert jobs["results.parquet"].equals(here["results.parquet"])  # bit for bit
    assert jobs["curves.parquet"].equals(here["curves.parquet"])
    assert (out / "groups" / B / "results.parquet").stat().st_mtime_ns == finished_b  # not trained again
    assert not ckpt.exists() and (out / "logs" / f"{A}.log.previous").is_file()
    assert json.loads((out / "meta.json").read_text())["status"] == "finished"
    assert (out / "observed_vs_predicted.png").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a grid point whose device this machine lacks")
def test_a_failed_cell_is_one_line_and_shows_in_status_while_the_others_finish(cli, tmp_path):
    """A grid point asking for a device its node lacks fails in its job; the command (debug executor: the jobs run
    in this process when waited on) ends in one line, exit 2; `raretask status` gives the error line. (That the
    other cells finish meanwhile, the test above shows.)"""
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(SWEEP.format(grid='"train.device" = ["cuda"]'))
    out = tmp_path / "jobs"
    r = cli("synth", "run", cfg, "--out", out, "--launcher", "slurm", "launcher.cluster=debug", "--no-progress")
    assert r.exit_code == 2 and r.stdout == ""
    error = "error: train.device: cuda requested but no CUDA device is available"
    assert r.stderr.splitlines() == [f"error: 1 cell(s) failed, first train.device=cuda: {error} "
                                     f"(log: {out / 'logs' / 'train.device=cuda.log'})"]
    s = summary(cli("status", out, "--json"))
    assert [(c["name"], c["state"], c["error"]) for c in s["cells"]] == [("train.device=cuda", "failed", error)]
    assert not (out / "results.parquet").exists()


def test_dry_run_prints_the_sbatch_script_that_is_then_submitted(cli, tmp_path, monkeypatch):
    """A stand-in sbatch keeps what it is given: the script --dry-run printed (which wrote nothing), an array of the
    two grid points; `raretask status` then shows them queued."""
    bin_dir, given = tmp_path / "bin", tmp_path / "given.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{given}"\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg, out = tmp_path / "sweep.toml", tmp_path / "sweep"
    cfg.write_text(SWEEP.format(grid=GRID))
    args = ["synth", "run", cfg, "--out", out, "--launcher", "slurm", "launcher.partition=cpu", "launcher.time=30",
            "launcher.account=lab", "--no-progress"]
    dry = cli(*args, "--dry-run")
    assert dry.exit_code == 0 and not out.exists()
    assert {"#SBATCH --array=0-1%2", "#SBATCH --partition=cpu", "#SBATCH --time=30", "#SBATCH --account=lab",
            "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"} <= set(dry.stdout.splitlines())
    assert f"0: {A}, 1: {B}" in dry.stderr
    r = cli(*args)
    assert r.exit_code == 0 and "submitted 2 job(s)" in r.stdout, r.stderr
    assert given.read_text().rstrip("\n") == dry.stdout.rstrip("\n")
    assert json.loads((out / "jobs.json").read_text())["cells"] == {A: "4242_0", B: "4242_1"}
    s = summary(cli("status", out, "--json"))
    assert [c["state"] for c in s["cells"]] == ["queued", "queued"]
    recorded = (out / "config.toml").read_text()  # the resolved config records where its cells ran
    assert "[launcher]" in recorded and 'partition = "cpu"' in recorded
    assert cli(*args, "--dry-run").stdout == dry.stdout  # nothing finished yet: the same array again


@pytest.mark.parametrize("args, message", [
    (["--launcher", "cloud"], "error: --launcher: 'cloud' is not one of local, slurm"),
    (["--launcher", "slurm"], "error: --launcher slurm: sbatch and srun not on PATH (run this on a Slurm login node, "
                              "or add --dry-run to see the sbatch script)"),
    (["--launcher", "slurm", "launcher.gpus_per_node=2", "launcher.gpus=4"],
     "error: launcher.gpus: a cell asks for 4 GPUs, more than launcher.gpus_per_node x launcher.nodes = 2 x 1 = 2"),
    (["--launcher", "slurm", "launcher.gpus_per_node=2", "--dry-run"],
     "error: launcher: a synthetic grid point trains in one process on one device, but launcher.gpus and "
     "launcher.nodes ask for 2 processes"),
    (["launcher.kind=slurm", "submitit-missing"], "error: --launcher slurm: needs submitit (pip install "
                                                  "'raretask[slurm]')"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    if "submitit-missing" in args:
        args = [a for a in args if a != "submitit-missing"]
        monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` fails as where it is not installed
    cfg, out = tmp_path / "sweep.toml", tmp_path / "never"
    cfg.write_text(SWEEP.format(grid=GRID))
    r = cli("synth", "run", cfg, "--out", out, *args, "--no-progress")
    assert r.exit_code == 2 and r.stderr.splitlines() == [message] and not out.exists()
