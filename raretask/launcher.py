"""Where a sweep's cells run: in this machine's processes (`local`, the default) or as Slurm jobs (`slurm`), one job
of a job array per unfinished cell, submitted through submitit (the `slurm` extra: `pip install raretask[slurm]`).

    [launcher]                 # in a sweep config, or `--launcher slurm` and `launcher.partition=gpu` on the line
    kind = "slurm"
    partition = "gpu"
    gpus_per_node = 8          # one process per GPU: an LM cell trains data-parallel across them (OLMo-core)
    time = 720                 # minutes; a cell that runs out is requeued and resumes from its checkpoint

    launch = submit(cells, cfg.launcher, out=DIR, name="lm-sweep", gather=["lm", "gather", "DIR"])
    print(render(cfg.launcher, DIR / "slurm", len(cells), "lm-sweep"))    # the sbatch script, nothing submitted

A cell is a `raretask.runner.Job`: a command line of `python -m raretask` that trains one cell into its own
directory. Each job runs it through `raretask.runner.run_cell`, the code the side-by-side runner runs, so a cell
runs the same code everywhere; its output goes to DIR/logs/<cell>.log, which `raretask status` reads. A job with
several tasks (a cell on G GPUs: G tasks, `--ntasks-per-node` GPUs per node) gives each task's process RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT, as torchrun would, from submitit's job
environment.

Time-outs and preemption: Slurm warns a job `warning_s` seconds before its end (SIGUSR2); submitit calls the job's
`checkpoint()`, which stops the cell's process with SIGTERM (OLMo-core then saves a checkpoint; a synthetic grid
point resumes from its last periodic one) and requeues the same job, which resumes the cell. Re-running the same
sweep command submits only the cells not finished; each resumes from its checkpoints.

Gathering: the job that finds every cell finished after its own runs the `gather` command (the sweep's tables and
figures from the cells' directories), under a lock so two jobs ending together gather once. With `--wait` the
command waits for its jobs and gathers itself.

Files: DIR/slurm/ holds submitit's scripts, pickles and job logs; DIR/jobs.json records the last submission (the
launcher table, each cell's job id), by which `raretask status` tells a queued cell from one not started.
`cluster = "local"` or `"debug"` runs the same jobs through submitit's executors on this machine instead of sbatch
(the tests do; `debug` runs each job in this process when it is waited on).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raretask import runs
from raretask.config import Config, ConfigError, StrEnum, option
from raretask.runner import Job, last_error_line, run_cell

try:  # the `slurm` extra: only `kind = "slurm"` needs it (checked by `check_available`)
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover (exercised where submitit is absent)
    Checkpointable = object  # type: ignore[assignment,misc]

JOBS_RECORD = "jobs.json"
SUBMITIT_FOLDER = "slurm"


class LauncherKind(StrEnum):
    LOCAL = "local"  # in this machine's processes (the sweep command's own, or side by side)
    SLURM = "slurm"  # one Slurm job per unfinished cell, a job array through submitit


class Cluster(StrEnum):
    SLURM = "slurm"  # sbatch
    LOCAL = "local"  # submitit's LocalExecutor: each job a process tree on this machine
    DEBUG = "debug"  # submitit's DebugExecutor: each job in this process, when waited on


@dataclass
class LauncherConfig(Config):
    kind: LauncherKind = option(LauncherKind.LOCAL, "local: cells on this machine; slurm: one Slurm job per cell")
    partition: str = option("", "Slurm partition (empty: the cluster's default)")
    account: str = option("", "Slurm account the jobs are charged to (empty: your default)")
    nodes: int = option(1, "nodes per cell", ge=1)
    gpus_per_node: int = option(0, "GPUs per node of a cell's job (0: a CPU job)", ge=0)
    gpus: int = option(0, "GPUs a cell trains on, one process each (0: gpus_per_node x nodes)", ge=0)
    cpus_per_task: int = option(0, "CPUs per process, also its torch threads (0: the cluster's default)", ge=0)
    time: int = option(240, "minutes per job; a cell that runs out requeues and resumes from its checkpoint", ge=1)
    mem: str = option("", "memory per node, e.g. 64G (empty: the cluster's default)")
    max_parallel: int = option(256, "array jobs running at once", ge=1)
    timeouts: int = option(3, "times a cell's job may time out or be preempted and requeue", ge=0)
    warning_s: int = option(120, "seconds before the time limit at which a job checkpoints and requeues", ge=1)
    sbatch: list[str] = option(factory=list, doc='extra sbatch flags, e.g. ["--qos=high", "--constraint=a100"]')
    setup: list[str] = option(factory=list, doc="shell lines run before the job (module load, venv activation)")
    cluster: Cluster = option(Cluster.SLURM, "slurm (sbatch); local or debug: submitit's executors on this machine")

    def validate(self, path: str = "launcher") -> None:
        super().validate(path)
        have = self.gpus_per_node * self.nodes
        if self.gpus > have:
            raise ConfigError(f"{path}.gpus: a cell asks for {self.gpus} GPUs, more than {path}.gpus_per_node x "
                              f"{path}.nodes = {self.gpus_per_node} x {self.nodes} = {have}")
        if self.cell_gpus() % self.nodes:
            raise ConfigError(f"{path}.gpus: {self.cell_gpus()} GPUs do not split evenly over {self.nodes} nodes")
        flags = sbatch_flags(self.sbatch, f"{path}.sbatch")
        taken = sorted(set(flags) & set(_OWN_FLAGS))
        if taken:
            raise ConfigError(f"{path}.sbatch: --{taken[0]} is set by the launcher table, not as an extra flag")
        if self.cluster is Cluster.LOCAL and self.nodes > 1:
            raise ConfigError(f"{path}.nodes: the local cluster runs a job on this one machine")

    def cell_gpus(self) -> int:
        """GPUs a cell trains on."""
        return self.gpus or self.gpus_per_node * self.nodes

    def tasks_per_node(self) -> int:
        """Processes per node of a cell's job: one per GPU it trains on (one on a CPU job)."""
        return max(1, self.cell_gpus() // self.nodes)


# sbatch options the table sets itself (an extra flag may not set them a second time)
_OWN_FLAGS = ("partition", "account", "nodes", "gpus-per-node", "ntasks-per-node", "cpus-per-task", "time", "mem",
              "array", "job-name", "signal", "output", "error")


def same_config(a: str, b: str) -> bool:
    """Are two config TOML texts the same run? Equal but for their `[launcher]` tables: where cells run is not what
    they compute, so a sweep started on one machine may be finished on a cluster, and back."""
    import tomllib

    try:
        x, y = tomllib.loads(a), tomllib.loads(b)
    except tomllib.TOMLDecodeError:
        return a == b
    x.pop("launcher", None)
    y.pop("launcher", None)
    return x == y


def sbatch_flags(flags: list[str], path: str = "launcher.sbatch") -> dict[str, Any]:
    """["--qos=high", "--exclusive"] -> {"qos": "high", "exclusive": True}: submitit's additional sbatch lines."""
    out: dict[str, Any] = {}
    for flag in flags:
        key, eq, value = flag.removeprefix("--").partition("=")
        if not flag.startswith("--") or not key or " " in key or (eq and not value):
            raise ConfigError(f"{path}: {flag!r} is not --name or --name=value")
        out[key] = value if eq else True
    return out


# ----------------------------------------------------------------------------------------------- the sbatch script


def check_available(cfg: LauncherConfig, *, submitting: bool) -> None:
    """One line when the Slurm launcher cannot work here: submitit not installed; and when submitting to Slurm,
    sbatch (and srun, which runs each job's tasks) not on PATH. Rendering the script (--dry-run) needs no Slurm."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ConfigError("--launcher slurm: needs submitit (pip install 'raretask[slurm]')") from None
    if submitting and cfg.cluster is Cluster.SLURM:
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise ConfigError(f"--launcher slurm: {' and '.join(missing)} not on PATH (run this on a Slurm login "
                              f"node, or add --dry-run to see the sbatch script)")


def sbatch_parameters(cfg: LauncherConfig, name: str) -> dict[str, Any]:
    """The parameters of submitit's SlurmExecutor (its names) for one cell's job."""
    params: dict[str, Any] = {"job_name": name, "time": cfg.time, "nodes": cfg.nodes,
                              "ntasks_per_node": cfg.tasks_per_node(), "array_parallelism": cfg.max_parallel,
                              "signal_delay_s": cfg.warning_s}
    optional = {"gpus_per_node": cfg.gpus_per_node, "cpus_per_task": cfg.cpus_per_task, "partition": cfg.partition,
                "account": cfg.account, "mem": cfg.mem, "setup": cfg.setup,
                "additional_parameters": sbatch_flags(cfg.sbatch)}
    params.update({k: v for k, v in optional.items() if v})
    return params


def job_name(out: Path) -> str:
    """The Slurm job name of a sweep's cells (what squeue shows)."""
    return f"raretask-{Path(out).name}"


def submit_command(folder: Path) -> str:
    """The command each job runs (submitit's, with this Python): it loads the pickled job and calls it."""
    import shlex

    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit",
                     shlex.quote(str(Path(folder).expanduser().absolute()))])


def render(cfg: LauncherConfig, folder: Path, jobs: int, name: str) -> str:
    """The sbatch script that submitting `jobs` cells would give to sbatch (an array when there are several), as
    submitit writes it; nothing is written or submitted."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own renderer: the script it submits

    return _make_sbatch_string(command=submit_command(folder), folder=Path(folder).expanduser().absolute(),
                               map_count=jobs if jobs > 1 else None, **sbatch_parameters(cfg, name))


# ------------------------------------------------------------------------------------------------------- the job


class CellFailed(RuntimeError):
    """A cell's process ended with an error (its last error line; the whole output is in its log)."""


class CellJob(Checkpointable):
    """One cell as one job: `runner.run_cell` runs its command; then, if every cell of the sweep is finished, the
    sweep's `gather` command (rank 0 only). Pickled by submitit and called in the job's every task."""

    def __init__(self, cell: Job, logs: Path, *, threads: int = 0, gather: Job | None = None,
                 cells: tuple[Job, ...] = (), grace_s: float = 60.0):
        self.cell, self.logs, self.threads, self.gather = cell, Path(logs), threads, gather
        self.cells = cells  # every cell of the sweep, to tell when the last one is done
        self.grace_s = grace_s  # how long the cell's process may take to checkpoint when stopped
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None}  # the process is this task's alone

    def __call__(self) -> str:
        env = rank_env()
        rank = int(env.get("RANK", "0"))
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0"))
        if not threads:
            from raretask.devices import free_cores

            threads = free_cores()
        result = run_cell(self.cell, threads=threads, logs=self.logs, env=env, ignore_signals=(preempt_signal(),),
                          on_start=self._started, log_name=None if rank == 0 else f"{self.cell.name}.rank{rank}.log")
        self._proc = None
        if result.status == "failed":
            raise CellFailed(f"{self.cell.name}: {result.error} (log: {result.log})")
        if rank == 0 and self.gather is not None and all(c.finished() for c in self.cells):
            self._gather(threads)
        return result.status

    def _started(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def _gather(self, threads: int) -> None:
        """The sweep's tables, once: under a lock, and not when the sweep is finished already."""
        sweep = Path(self.gather.out)  # type: ignore[union-attr]
        with open(sweep / ".gather.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.gather.finished():  # type: ignore[union-attr]
                result = run_cell(self.gather, threads=threads, logs=self.logs)  # type: ignore[arg-type]
                if result.status == "failed":
                    raise CellFailed(f"gather: {result.error} (log: {result.log})")

    def checkpoint(self) -> Any:
        """Called by submitit on the time-out or preemption warning: stop the cell's process (SIGTERM: the LM lab
        saves a checkpoint and stops), then requeue this same job, which resumes the cell."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            deadline = time.monotonic() + self.grace_s
            while proc.poll() is None and time.monotonic() < deadline:  # poll, not wait: this runs in a signal
                time.sleep(0.1)  # handler, maybe while run_cell polls the same process
            if proc.poll() is None:
                proc.kill()
        return super().checkpoint()  # type: ignore[misc]


def preempt_signal() -> int:
    """The signal Slurm sends before a job's end (submitit's: SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)


def rank_env() -> dict[str, str]:
    """The torch.distributed variables of this task when its job has several (one per GPU), as torchrun sets them;
    {} for a job of one task (and outside a job)."""
    try:
        from submitit.helpers import TorchDistributedEnvironment

        d = TorchDistributedEnvironment()
    except (ImportError, RuntimeError):  # not inside a submitit job
        return {}
    if d.world_size <= 1:
        return {}
    return {"MASTER_ADDR": d.master_addr, "MASTER_PORT": str(d.master_port), "RANK": str(d.rank),
            "WORLD_SIZE": str(d.world_size), "LOCAL_RANK": str(d.local_rank),
            "LOCAL_WORLD_SIZE": str(d.local_world_size)}


# ---------------------------------------------------------------------------------------------------- submission


@dataclass
class Launch:
    """The jobs of one submission, by cell name."""

    out: Path
    jobs: dict[str, Any] = field(default_factory=dict)  # cell name -> submitit Job

    @property
    def job_ids(self) -> dict[str, str]:
        return {name: str(job.job_id) for name, job in self.jobs.items()}

    def wait(self) -> dict[str, str | None]:
        """Wait for every job; cell name -> its error line (None: finished)."""
        errors = {}
        for name, job in self.jobs.items():
            try:
                failure = job.exception()  # waits; None when the job returned
            except Exception as e:  # noqa: BLE001 (a job killed without a result: UncompletedJobError)
                failure = e
            errors[name] = None if failure is None else _error_line(self.out / "logs" / f"{name}.log", failure)
        return errors


def _error_line(log: Path, failure: BaseException) -> str:
    """What went wrong: the cell log's error line, else the last line of the job's exception."""
    if log.is_file():
        line = last_error_line(log.read_text(errors="replace"))
        if line != "(no output)":
            return line
    lines = [ln.strip() for ln in str(failure).splitlines() if ln.strip()]
    return lines[-1] if lines else type(failure).__name__


def submit(cells: list[Job], cfg: LauncherConfig, *, out: Path, name: str, gather: Job | None = None,
           every: tuple[Job, ...] = ()) -> Launch:
    """Submit one job per cell of `cells` (a job array) and record the submission in out/jobs.json. The job that
    finds all of `every` finished runs `gather` (None: the caller gathers, after `Launch.wait`)."""
    check_available(cfg, submitting=True)
    out = Path(out)
    if not cells:  # every cell finished: nothing to submit (the caller gathers)
        return Launch(out)
    executor = make_executor(cfg, out / SUBMITIT_FOLDER, name)
    logs = out / "logs"
    for cell in cells:  # a log from an earlier attempt would read as this attempt's failure until the job starts
        log = logs / f"{cell.name}.log"
        if log.is_file():
            log.replace(log.with_name(log.name + ".previous"))
    grace = max(10.0, cfg.warning_s - 20.0)
    jobs = [CellJob(c, logs, threads=cfg.cpus_per_task, gather=gather, cells=every or tuple(cells), grace_s=grace)
            for c in cells]
    try:
        with executor.batch():
            handles = [executor.submit(job) for job in jobs]
    except Exception as e:  # noqa: BLE001 (sbatch refused: a bad partition or account is the user's to fix)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ConfigError(f"--launcher slurm: submission failed: {lines[-1] if lines else type(e).__name__}") \
            from None
    launch = Launch(out, {c.name: h for c, h in zip(cells, handles)})
    runs.write_json(out / JOBS_RECORD, {"submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "name": name,
                                        "launcher": cfg.to_dict(), "folder": str(out / SUBMITIT_FOLDER),
                                        "cells": launch.job_ids})
    return launch


def make_executor(cfg: LauncherConfig, folder: Path, name: str) -> Any:
    """submitit's executor for `cfg.cluster`, with the cell's resources."""
    import submitit

    if cfg.cluster is Cluster.DEBUG:
        return submitit.DebugExecutor(folder)
    if cfg.cluster is Cluster.LOCAL:
        executor = submitit.LocalExecutor(folder, max_num_timeout=cfg.timeouts)
        executor.update_parameters(timeout_min=cfg.time, tasks_per_node=cfg.tasks_per_node(),
                                   gpus_per_node=cfg.gpus_per_node, signal_delay_s=cfg.warning_s)
        return executor
    executor = submitit.SlurmExecutor(folder, max_num_timeout=cfg.timeouts)
    try:
        executor.update_parameters(**sbatch_parameters(cfg, name))
    except ValueError as e:  # submitit checks the parameters by rendering them
        raise ConfigError(f"launcher: {str(e).splitlines()[0]}") from None
    return executor


def read_jobs(out: Path) -> dict[str, str]:
    """Cell name -> job id of the last submission recorded in out/jobs.json ({} when none)."""
    try:
        cells = json.loads((Path(out) / JOBS_RECORD).read_text()).get("cells")
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in cells.items()} if isinstance(cells, dict) else {}
