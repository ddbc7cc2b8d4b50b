"""What a benchmark run leaves behind: a JSON file of the machine, the run, every figure it printed and its targets,
and an exit status that says whether the targets were met.

Printed numbers scroll away and say nothing about the machine that made them; the file keeps them with their
context (this shared machine's speed drifts, so a figure without its date, threads and commit is hard to judge),
and the exit status lets a script or CI notice a missed target without reading the output.

    run = Run("synthetic_sweep", args, device)        # args: the parsed command line, with --out (add_out_argument)
    run.figures("a", batched_steps_per_s=692.0, ...)  # raw timings, ratios: whatever the benchmark prints
    run.target("(a) batched/naive", 15.3, 10, ">=", "x")
    return run.finish()                                # writes the file; 0 if all targets are met, 1 if not

Exit status: 0 all targets met, 1 a target missed, 2 the benchmark could not run in full (`Run.abort`, e.g. a
missing optional dependency); the file is written in every case.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OPS = {">=": (lambda v, t: v >= t, "<"), "<=": (lambda v, t: v <= t, ">")}  # op -> (test, what a miss shows)


@dataclass(frozen=True)
class Target:
    """One target: `value op target`, e.g. a speed ratio >= 10. `unit` ("x", "%") says how to read the value."""

    name: str
    value: float
    target: float
    op: str
    unit: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op must be one of {list(OPS)}, not {self.op!r}")

    @property
    def met(self) -> bool:
        return bool(OPS[self.op][0](self.value, self.target))

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "target": self.target, "op": self.op, "met": self.met,
                "unit": self.unit}

    def miss(self) -> str:
        """How it was missed, e.g. `(a) batched/naive 8.3x < 10x`: three significant digits, more where those would
        round a near miss onto the target (`0.9996x < 1x`, not `1x < 1x`)."""
        digits = 3
        while digits < 17 and float(f"{self.value:.{digits}g}") == self.target:
            digits += 1
        return f"{self.name} {self.value:.{digits}g}{self.unit} {OPS[self.op][1]} {self.target:g}{self.unit}"


def add_out_argument(ap: argparse.ArgumentParser) -> None:
    """The one option every benchmark shares: where the JSON goes (tests point it at a temporary directory)."""
    ap.add_argument("--out", type=Path, metavar="PATH",
                    help="JSON file to write (default: benchmarks/results/<name>.json)")


def git_commit() -> dict:
    """The commit the code came from, and whether the working tree had changes (then the commit is not all of it)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, where platform.processor() says only "x86_64" or nothing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """What the timings depend on: the host, its cores and load, torch's threads, the device."""
    info = {"platform": platform.platform(), "processor": cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["cuda_device_name"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    return info


def write_json(path: Path, document: dict) -> None:
    """Write through a temporary file in the same directory and os.replace it into place, so that a reader (or an
    interrupted run) never sees half a file, and an earlier result is only replaced by a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename: give the file open() would
        with os.fdopen(fd, "w") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Run:
    """One benchmark run: collects its figures and targets, then writes them with their context (`finish`)."""

    def __init__(self, benchmark: str, args: argparse.Namespace, device: torch.device):
        self.benchmark, self.args, self.device = benchmark, args, torch.device(device)
        self.started, self.clock = datetime.datetime.now().astimezone(), time.perf_counter()
        self.measured: dict[str, dict] = {}
        self.targets: list[Target] = []
        self.error: str | None = None

    @property
    def path(self) -> Path:
        """--out if given, else benchmarks/results/<benchmark>.json (<benchmark>_cuda.json on a CUDA device)."""
        out = getattr(self.args, "out", None)
        suffix = "" if self.device.type == "cpu" else f"_{self.device.type}"
        return Path(out) if out else RESULTS / f"{self.benchmark}{suffix}.json"

    def figures(self, section: str, **values: object) -> None:
        """Record measured figures (seconds, rates, ratios, shapes) under `section`, e.g. a benchmark's part."""
        self.measured.setdefault(section, {}).update(values)

    def target(self, name: str, value: float, target: float, op: str, unit: str = "") -> Target:
        t = Target(name, float(value), float(target), op, unit)
        self.targets.append(t)
        return t

    def document(self) -> dict:
        return {"benchmark": self.benchmark, "started": self.started.isoformat(timespec="seconds"),
                "wall_s": round(time.perf_counter() - self.clock, 3), "machine": machine(self.device),
                "git": git_commit(), "argv": sys.argv[1:],
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
                "figures": self.measured, "targets": [t.as_dict() for t in self.targets],
                "all_met": self.error is None and all(t.met for t in self.targets), "error": self.error}

    def finish(self) -> int:
        """Write the file, print the verdict as the last line; 0 if every target was met, else 1."""
        write_json(self.path, self.document())
        missed = [t.miss() for t in self.targets if not t.met]
        print(f"results: {self.path}")
        print(f"target missed: {'; '.join(missed)}" if missed else f"targets met: all {len(self.targets)}")
        return 1 if missed else 0

    def abort(self, message: str) -> int:
        """The benchmark could not run in full: write what was measured with the reason, print it on one line, 2."""
        self.error = message
        write_json(self.path, self.document())
        print(f"results (incomplete): {self.path}")
        print(message, file=sys.stderr)
        return 2
