"""Independent runs side by side on one machine: each job is one `python -m raretask ...` process with its own
thread count, at most `workers` at a time, so processes x threads never exceed the free cores.

    jobs = [Job("synthetic", ["synth", "run", "configs/synthetic/default.toml"], out / "synthetic"), ...]
    results = run_jobs(jobs, Plan.for_machine(len(jobs)), logs=out / "logs")

A job is a command line, not a function: the same cell runs the same code whether this runner starts it, a shell
does, or a cluster job does (raretask.launcher's Slurm jobs call `run_cell`, the one-job form of `run_jobs`). Its
output goes to logs/<name>.log; a failed job reports its last error line and the others still finish; a job killed
by a signal says so in a last `error:` line of its log. Jobs whose `out` already holds a finished run (meta.json
status "finished", or the job's `marker` file) are not started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from raretask.devices import free_cores
from raretask.progress import progress_bar


@dataclass(frozen=True)
class Job:
    name: str
    argv: list[str]  # the arguments of `python -m raretask`
    out: Path  # the run directory the job writes (its --out)
    after: tuple[str, ...] = ()  # names of jobs that must finish first (e.g. the corpus before the LM sweep)
    marker: str | None = None  # a file in `out` written last by a finished job (None: out/meta.json says so)

    def finished(self) -> bool:
        return (Path(self.out) / self.marker).is_file() if self.marker else finished(self.out)


@dataclass(frozen=True)
class Plan:
    """How many jobs run at once and how many torch threads each uses."""

    workers: int
    threads: int
    free: int  # the idle cores measured when the plan was made

    @classmethod
    def for_machine(cls, jobs: int, cores: int | None = None) -> Plan:
        """Fill the free cores with jobs first (small models gain little from a second thread), then give the
        threads left over to the jobs: workers x threads <= free cores."""
        free = free_cores() if cores is None else cores
        workers = max(1, min(free, jobs))
        return cls(workers=workers, threads=max(1, free // workers), free=free)


@dataclass
class JobResult:
    name: str
    status: str  # "finished" (now), "done before" (read back), "failed", "skipped" (a job it needs failed)
    wall_s: float = 0.0
    error: str | None = None
    log: Path | None = None


def finished(out: Path) -> bool:
    """Does `out` hold a finished run? (Its meta.json says so; a killed run says "running".)"""
    try:
        return json.loads((Path(out) / "meta.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def last_error_line(text: str) -> str:
    """The line that says what went wrong: the last `error:` line, else the last non-empty line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln.split(":")[0]]
    return (errors or lines or ["(no output)"])[-1]


def run_jobs(jobs: list[Job], plan: Plan, *, logs: Path, progress: bool = True) -> dict[str, JobResult]:
    """Run every job not finished before, `plan.workers` at a time, each with `plan.threads` threads."""
    names = {j.name for j in jobs}
    unknown = sorted({a for j in jobs for a in j.after} - names)
    if unknown or len(names) != len(jobs):
        raise ValueError(f"jobs: {'unknown prerequisites ' + ', '.join(unknown) if unknown else 'names repeat'}")
    logs.mkdir(parents=True, exist_ok=True)
    results = {j.name: JobResult(j.name, "done before") for j in jobs if j.finished()}
    waiting = [j for j in jobs if j.name not in results]
    running: dict[str, tuple[subprocess.Popen, float, Path, object]] = {}
    env = job_env(plan.threads)
    with progress_bar("runs", eta=False, enabled=progress) as bar, _terminating(running):
        task = bar.add_task("runs", total=len(jobs), completed=len(results)) if bar is not None else None
        while waiting or running:
            for j in list(waiting):  # a job whose prerequisite failed will not run
                if any(results.get(a) is not None and results[a].status in ("failed", "skipped") for a in j.after):
                    results[j.name] = JobResult(j.name, "skipped", error=f"needs {', '.join(j.after)}")
                    waiting.remove(j)
                    if bar is not None:
                        bar.advance(task)
            ready = [j for j in waiting if all(a in results for a in j.after)]
            while ready and len(running) < plan.workers:
                j = ready.pop(0)
                waiting.remove(j)
                log = logs / f"{j.name}.log"
                proc, handle = start_job(j, env, log)
                running[j.name] = (proc, time.perf_counter(), log, handle)
                if bar is not None:
                    bar.update(task, description=f"runs: {', '.join(running)}")
            time.sleep(0.2)
            for name, (proc, start, log, handle) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                results[name] = ended(name, proc, handle, log, time.perf_counter() - start)
                if bar is not None:
                    bar.advance(task)
    return {j.name: results[j.name] for j in jobs}


def run_cell(job: Job, *, threads: int, logs: Path, env: dict[str, str] | None = None,
             ignore_signals: tuple[int, ...] = (), on_start: Callable[[subprocess.Popen], None] | None = None,
             log_name: str | None = None) -> JobResult:
    """Run one job to its end, as `run_jobs` runs each of its jobs: the same command line and environment, its
    output in logs/<name>.log (`log_name` instead: a second rank's log). A job finished before is not started.

    `env` adds to the environment (a data-parallel rank's RANK, WORLD_SIZE, ...); `ignore_signals` are ignored by
    the child (a cluster's early-warning signal is for the job, which stops the child itself); `on_start(proc)` is
    given the child process (so a job can stop it). An exception here (Ctrl-C) stops the child first."""
    if job.finished():
        return JobResult(job.name, "done before")
    log = logs / (log_name or f"{job.name}.log")
    proc, handle = start_job(job, {**job_env(threads), **(env or {})}, log, ignore_signals)
    clock = time.perf_counter()
    running = {job.name: (proc, clock, log, handle)}
    with _terminating(running):
        if on_start is not None:
            on_start(proc)
        while proc.poll() is None:  # not wait(): it would hold the process's lock against a signal handler's poll
            time.sleep(0.2)
        del running[job.name]
    return ended(job.name, proc, handle, log, time.perf_counter() - clock)


def job_env(threads: int) -> dict[str, str]:
    """The environment of a job's process: `threads` torch threads, unbuffered output (its log is live)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def start_job(job: Job, env: dict[str, str], log: Path,
          ignore_signals: tuple[int, ...] = ()) -> tuple[subprocess.Popen, Any]:
    """Start `python -m raretask <job.argv>` with its output in `log`; (process, open log handle)."""
    log.parent.mkdir(parents=True, exist_ok=True)  # a name such as "lm/corpus" nests
    handle = open(log, "w")

    def ignoring() -> None:  # in the child, before exec: an ignored signal stays ignored there
        for sig in ignore_signals:
            signal.signal(sig, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "raretask", *job.argv], stdout=handle, stderr=subprocess.STDOUT,
                            env=env, preexec_fn=ignoring if ignore_signals else None)
    return proc, handle


def ended(name: str, proc: subprocess.Popen, handle: Any, log: Path, wall_s: float) -> JobResult:
    """The result of a job whose process has exited. A process killed by a signal leaves no error line of its
    own: one is added to its log, so the log says why the job ended (`raretask status` reads it)."""
    if proc.returncode is not None and proc.returncode < 0:
        try:
            what = signal.Signals(-proc.returncode).name
        except ValueError:
            what = f"signal {-proc.returncode}"
        handle.write(f"\nerror: killed by {what}: run the same command again to resume from the last checkpoint\n")
    handle.close()
    ok = proc.returncode == 0
    return JobResult(name, "finished" if ok else "failed", wall_s,
                     None if ok else last_error_line(log.read_text(errors="replace")), log)


@contextmanager
def _terminating(running: dict) -> Iterator[None]:
    """On an exception or Ctrl-C, stop the jobs still running (each resumes from its checkpoint next time)."""
    try:
        yield
    finally:
        for proc, _, _, handle in running.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            handle.close()
