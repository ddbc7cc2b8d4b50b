"""Where a run computes: the one reading of a `train.device` setting, for every lab."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from raretask.config import ConfigError


def resolve_device(name: Any, field: str = "train.device") -> Any:
    """"auto" (CUDA when present, else the CPU), "cpu", "cuda" or "cuda:N" as a torch.device. Asking for CUDA on a
    machine without it is a user mistake: a one-line ConfigError naming `field`, before anything is written."""
    import torch

    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{field}: cuda requested but no CUDA device is available")
    return torch.device(name)


def free_cores(sample_s: float = 0.25) -> int:
    """How many of this process's cores are free now (at least 1): the idle share of /proc/stat over `sample_s`
    seconds (niced work counted as free unless this process is niced too) times the cores this process may run on;
    the 1-minute load average where /proc/stat is missing.

    A busy core makes OpenMP threads wait on it: on 2 cores with one busy, the 2-thread batched sweep ran 47x
    slower than with 1 thread. So processes x threads must not exceed this number."""
    import os
    import time

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    # Time spent in niced processes counts as free when this process is not niced itself: the scheduler gives a
    # nice-0 thread nearly all of a core that only nice-19 work competes for.
    yielding = os.nice(0) == 0 if hasattr(os, "nice") else False

    def idle_total() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        except (OSError, ValueError):
            return None
        free = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        if yielding:
            free += fields[1]  # niced work yields its core to ours
        return free, sum(fields[:8])  # user..steal (guest time is already counted in user)

    first = idle_total()
    if first is None:
        return max(1, cores - round(os.getloadavg()[0]))
    time.sleep(sample_s)
    second = idle_total()
    total = second[1] - first[1]
    idle = (second[0] - first[0]) / total if total > 0 else 1.0
    machine = os.cpu_count() or cores  # /proc/stat counts every core of the machine
    return max(1, min(cores, round(idle * machine)))


def choose_threads(requested: int = 0) -> int:
    """torch threads for a run: `requested` when set (> 0); else the free cores, at most torch's default."""
    import torch

    return requested if requested > 0 else max(1, min(torch.get_num_threads(), free_cores()))


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run with `n` torch intra-op threads, then restore the process's count (a notebook or a sweep's next run)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
