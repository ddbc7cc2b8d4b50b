"""raretask.launcher: the [launcher] table's checks, the sbatch script against the table, a job's ranks from
submitit's environment, and the checkpoint hook that stops the cell's process and requeues the same job."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import time

import pytest

from raretask.config import ConfigError
from raretask.launcher import Cluster, CellJob, LauncherConfig, rank_env, render, same_config, sbatch_flags
from raretask.runner import Job


def launcher(**kw) -> LauncherConfig:
    cfg = LauncherConfig(kind="slurm", **kw)
    cfg.validate()
    return cfg


def test_a_cell_gets_one_process_per_gpu_split_over_its_nodes():
    assert launcher().tasks_per_node() == 1  # a CPU job: one process
    assert launcher(gpus_per_node=8).tasks_per_node() == 8
    two_nodes = launcher(gpus_per_node=4, nodes=2)
    assert two_nodes.tasks_per_node() == 4 and two_nodes.cell_gpus() == 8
    assert launcher(gpus_per_node=8, gpus=2).tasks_per_node() == 2  # fewer than the node has


@pytest.mark.parametrize("fields, message", [
    ({"gpus_per_node": 4, "nodes": 2, "gpus": 9}, "launcher.gpus: a cell asks for 9 GPUs, more than "
                                                  "launcher.gpus_per_node x launcher.nodes = 4 x 2 = 8"),
    ({"gpus_per_node": 4, "nodes": 2, "gpus": 3}, "launcher.gpus: 3 GPUs do not split evenly over 2 nodes"),
    ({"sbatch": ["--qos high"]}, "launcher.sbatch: '--qos high' is not --name or --name=value"),
    ({"sbatch": ["qos=high"]}, "launcher.sbatch: 'qos=high' is not --name or --name=value"),
    ({"sbatch": ["--time=10"]}, "launcher.sbatch: --time is set by the launcher table, not as an extra flag"),
    ({"nodes": 2, "cluster": "local"}, "launcher.nodes: the local cluster runs a job on this one machine"),
    ({"time": 0}, "launcher.time: must be >= 1, got 0"),
])
def test_bad_tables_are_one_line_naming_the_field(fields, message):
    with pytest.raises(ConfigError) as e:
        launcher(**fields)
    assert str(e.value) == message


def test_the_sbatch_script_asks_for_what_the_table_says(tmp_path):
    cfg = launcher(gpus_per_node=4, nodes=2, time=600, partition="gpu", account="lab", mem="200G", cpus_per_task=6,
                   max_parallel=3, sbatch=["--qos=high", "--exclusive"], setup=["module load cuda/12"])
    text = render(cfg, tmp_path / "slurm", 5, "raretask-x")
    lines = set(text.splitlines())
    assert {"#SBATCH --gpus-per-node=4", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --time=600",
            "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --mem=200G", "#SBATCH --cpus-per-task=6",
            "#SBATCH --array=0-4%3", "#SBATCH --qos=high", "#SBATCH --exclusive", "#SBATCH --job-name=raretask-x",
            "#SBATCH --signal=USR2@120", "module load cuda/12"} <= lines
    assert text.startswith("#!/bin/bash") and f"-m submitit.core._submit {tmp_path / 'slurm'}" in text
    one = render(launcher(), tmp_path / "slurm", 1, "raretask-x")  # one cell: a plain job, no GPUs asked
    assert "--array" not in one and "--gpus-per-node" not in one and "--partition" not in one
    assert not (tmp_path / "slurm").exists()  # rendering writes nothing


def test_extra_flags_parse_to_sbatch_lines():
    assert sbatch_flags(["--qos=high", "--exclusive", "--constraint=a100|h100"]) == \
        {"qos": "high", "exclusive": True, "constraint": "a100|h100"}


def test_configs_differing_only_in_their_launcher_are_the_same_run():
    base = '[train]\nsteps = 4\n[launcher]\nkind = "local"\n'
    assert same_config(base, '[train]\nsteps = 4\n[launcher]\nkind = "slurm"\npartition = "gpu"\n')
    assert same_config(base, "[train]\nsteps = 4\n")  # a directory written before the table existed
    assert not same_config(base, '[train]\nsteps = 5\n[launcher]\nkind = "local"\n')


def test_a_job_of_several_tasks_gives_each_its_rank_as_torchrun_would(monkeypatch):
    """submitit's local job environment of task 2 of 4 (as the LocalExecutor sets it): the cell's process gets
    RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and a MASTER_PORT fixed by the job id."""
    assert rank_env() == {}  # outside a job: one process
    for key, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "4242", "SUBMITIT_LOCAL_NTASKS": "4",
                       "SUBMITIT_LOCAL_GLOBALID": "2", "SUBMITIT_LOCAL_LOCALID": "2", "SUBMITIT_LOCAL_NODEID": "0",
                       "SUBMITIT_LOCAL_JOB_NUM_NODES": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    env = rank_env()
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")} == \
        {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4",
         "MASTER_ADDR": socket.gethostname()}
    assert 20000 <= int(env["MASTER_PORT"]) <= 60000 and rank_env()["MASTER_PORT"] == env["MASTER_PORT"]
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")
    assert rank_env() == {}  # a job of one task: no process group


def test_the_checkpoint_hook_stops_the_cell_and_requeues_the_same_job(tmp_path):
    """On the time-out warning submitit calls checkpoint(): the cell's process is stopped (SIGTERM, so the LM lab
    checkpoints) and the same job is resubmitted; what is pickled for the requeue holds no process."""
    job = CellJob(Job("a", ["--version"], tmp_path / "a"), tmp_path / "logs", grace_s=5)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    job._started(proc)
    clock = time.monotonic()
    again = job.checkpoint()
    assert proc.poll() == -15 and time.monotonic() - clock < 5  # SIGTERM, not the grace period's kill
    assert again.function is job and again.args == () and job._proc is None
    copy = pickle.loads(pickle.dumps(job))
    assert copy.cell == job.cell and copy._proc is None and copy.grace_s == 5


def test_the_debug_and_local_clusters_need_no_slurm(tmp_path, monkeypatch):
    from raretask.launcher import check_available, make_executor

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    for cluster in (Cluster.DEBUG, Cluster.LOCAL):
        cfg = launcher(cluster=cluster)
        check_available(cfg, submitting=True)
        assert make_executor(cfg, tmp_path / cluster.value, "x").folder == (tmp_path / cluster.value).absolute()
    with pytest.raises(ConfigError, match="sbatch and srun not on PATH"):
        check_available(launcher(), submitting=True)
    check_available(launcher(), submitting=False)  # --dry-run renders without Slurm
