"""Where a sweep stands, read from its run directory alone (`raretask status DIR`): each cell finished, running,
queued, failed (with its last error line) or not started, its steps done of its total, and an ETA.

    st = read(Path("runs/lm-demo"))          # RunStatus: dir, kind, cells, counts, eta_s; st.to_json()
    rows = cells(Path("runs/lm-demo"))       # the list[CellStatus] alone

Nothing here writes or starts anything, and nothing asks the operating system about processes: a state is what the
files say. Supported directories (by meta.json `kind`):

  lm.sweep    one row per cell of its config (raretask.lm.sweep.expand_cells; the slugs in meta.json if the config
              no longer loads). finished: cells/<slug>/meta.json says so. failed: not finished and the last line of
              logs/<slug>.log (written when cells train side by side) is an error (`error: ...`, `interrupted: ...`,
              or a Python exception line such as `RuntimeError: ...`). running: its meta.json says "running", or its
              log exists. not started: none of these. Steps: the last `step` of metrics.parquet or the latest
              complete checkpoint, whichever is later; the total is the cell's train.steps.
  synthetic   one row per grid point of its config (raretask.synthetic.train.expand_grid), named by its directory
              groups/<slug>. finished: results.parquet there; failed: not finished and logs/<slug>.log (written when
              a Slurm job trains the point) ends in an error; running: checkpoint.pt there (steps: the checkpoint's,
              so the point is at least that far), or its log exists; not started: none of these (a point trains a
              while before its first checkpoint, so the point being trained may read "not started" until then).
  queued      (both sweeps) a cell "not started" that the last Slurm submission (DIR/jobs.json, raretask.launcher)
              sent as a job: waiting for the cluster.
  reproduce   one row per experiment of its meta.json (and lm/corpus when present). finished: the sub-run's
              meta.json says so; failed: the experiment's status recorded in DIR/meta.json is "failed", or its
              logs/<name>.log ends in an error; not started (with the reason) when recorded "skipped"; running: the
              sub-run's meta.json says "running" or its log exists. A sub-run that is itself a sweep gives its
              summed steps, totals and ETA.
  lm.train    the run itself as one row (as an LM sweep cell); any other kind: one row, finished or running.

A killed process leaves "running" behind (its meta.json is never finished and its log ends without an error line):
such a cell reads "running" until it is resumed.

ETA (seconds, None when unknown). Seconds per step of a cell are measured where the files allow:
  - a finished LM cell: meta.json wall_time_s / (steps - resumed_from) (the last session's time and steps);
  - a running LM cell: (mtime of its latest metrics.parquet or checkpoint - mtime of its meta.json, which the
    current session wrote at its start) / (steps done - the step it resumed from, i.e. the latest checkpoint older
    than that meta.json, else 0);
  - a finished synthetic grid point: 1 / steps_per_s in meta.json (written when the sweep finishes);
  - a running synthetic grid point: the `elapsed` seconds its checkpoint records / its step.
A running cell's ETA is its own seconds per step (if measured) x its remaining steps; a not-started cell's is the
mean seconds per step of the measured cells of the same LM model size (any measured cell when none of that size, or
for synthetic sweeps) x its total steps; finished cells 0, failed cells None (they need a re-run). The run's ETA is
the sum over running and not-started cells divided by the number of cells running now (at least 1: cells side by
side share the wall clock); None if any of those cells' ETA is unknown, 0 when none remains.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raretask.config import ConfigError

STATES = ("finished", "running", "queued", "failed", "not started")
_LOG_TAIL = 64 * 1024  # bytes of a log read from its end
_ERROR_LINE = re.compile(r"(error|interrupted):|[A-Za-z_][\w.]*(Error|Exception|Interrupt)(:|$)")


@dataclass
class CellStatus:
    name: str
    state: str  # one of STATES
    steps_done: int | None = None
    steps_total: int | None = None
    error: str | None = None
    eta_s: float | None = None
    seconds_per_step: float | None = field(default=None, repr=False)  # measured, when the files allow
    family: str | None = field(default=None, repr=False)  # cells of one family share a speed (LM: model size)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "steps": self.steps_done, "total": self.steps_total,
                "error": self.error, "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}


@dataclass
class RunStatus:
    dir: Path
    kind: str
    cells: list[CellStatus]
    eta_s: float | None = None

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(c.state == s for c in self.cells) for s in STATES}

    def to_json(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "kind": self.kind, "cells": [c.to_json() for c in self.cells],
                "counts": self.counts, "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}


def cells(run_dir: Path) -> list[CellStatus]:
    """The rows of `run_dir` (see the module docstring); ConfigError when it is no run directory."""
    return read(run_dir).cells


def read(run_dir: Path) -> RunStatus:
    """Status of every cell of the run in `run_dir`, with ETAs; ConfigError (one line) when it is no run."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ConfigError(f"{d}: no such directory")
    if not (d / "meta.json").is_file():
        raise ConfigError(f"{d}: not a raretask run directory (no meta.json)")
    meta = _meta(d)
    if not meta:
        raise ConfigError(f"{d}/meta.json: not a JSON object")
    kind = str(meta.get("kind", "synthetic"))  # the oldest synthetic runs wrote no kind
    if kind == "lm.sweep":
        rows = _lm_sweep(d, meta)
    elif kind == "synthetic":
        rows = _synthetic(d, meta)
    elif kind == "reproduce":
        rows = _reproduce(d, meta)
    elif kind == "lm.train":
        rows = [_lm_cell(d, d.name, _toml_steps(d / "config.toml"), None)]
    else:
        rows = [CellStatus(d.name, "finished" if meta.get("status") == "finished" else "running")]
    if kind in ("lm.sweep", "synthetic"):
        from raretask.launcher import read_jobs

        submitted = read_jobs(d)
        for row in rows:
            if row.state == "not started" and row.name in submitted:
                row.state = "queued"
    return RunStatus(d, kind, rows, _estimate(rows))


# ----------------------------------------------------------------------------------------------------- files


def _meta(d: Path) -> dict[str, Any]:
    """meta.json as a dict ({} when missing or unreadable: a run being created)."""
    try:
        data = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _about(path: Path, err: ConfigError) -> str:
    """A config error naming the file once (load_config names it for bad TOML, not for a bad field)."""
    return str(err) if str(err).startswith(str(path)) else f"{path}: {err}"


def _toml_steps(path: Path) -> int | None:
    """train.steps of a config.toml, read raw (no validation), None when absent."""
    try:
        steps = tomllib.loads(path.read_text()).get("train", {}).get("steps")
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        return None
    return steps if isinstance(steps, int) else None


def log_error(log: Path | None) -> str | None:
    """The error line of a job log whose last non-empty line is an error (`error: ...`, `interrupted: ...`, an
    exception line); None when the log is missing or ends otherwise (still running, or finished cleanly)."""
    if log is None or not log.is_file():
        return None
    from raretask.runner import last_error_line

    try:
        with open(log, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _LOG_TAIL))
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or not _ERROR_LINE.match(lines[-1]):
        return None
    return last_error_line(text)


# ------------------------------------------------------------------------------------------------------ LM


def _lm_sweep(d: Path, meta: dict[str, Any]) -> list[CellStatus]:
    try:
        from raretask.config import load_config
        from raretask.lm.sweep import LMSweepConfig, expand_cells

        cfg = load_config(LMSweepConfig, d / "config.toml")
        entries = [(c.slug, c.config.train.steps, c.size) for c in expand_cells(cfg)]
    except ConfigError as e:
        slugs = meta.get("cells") if isinstance(meta.get("cells"), list) else []
        if not slugs:
            raise ConfigError(_about(d / "config.toml", e)) from None
        entries = [(s, _toml_steps(d / "cells" / s / "config.toml"), None) for s in slugs]
    rows = []
    for slug, total, size in entries:
        row = _lm_cell(d / "cells" / slug, slug, total, d / "logs" / f"{slug}.log")
        row.family = size
        rows.append(row)
    return rows


def _lm_progress(cdir: Path) -> tuple[int | None, float | None]:
    """(steps done, when): the later of the last `step` in metrics.parquet and the latest complete checkpoint."""
    best: tuple[int | None, float | None] = (None, None)
    metrics = cdir / "metrics.parquet"
    if metrics.is_file():
        try:
            import pyarrow.parquet as pq

            steps = pq.read_table(metrics, columns=["step"]).column("step").to_pylist()
            if steps:
                best = (int(max(steps)), _mtime(metrics))
        except Exception:  # noqa: BLE001 (being replaced, or not a table: no progress from it)
            pass
    ckpts = _checkpoints(cdir)
    if ckpts and (best[0] is None or ckpts[-1][0] > best[0]):
        best = ckpts[-1]
    return best


def _checkpoints(cdir: Path) -> list[tuple[int, float | None]]:
    """(step, time it completed) of a run's complete checkpoints, oldest first (as raretask.lm.train.checkpoints,
    without importing the training stack)."""
    out = []
    for ck in (cdir / "checkpoints").glob("step*"):
        done = ck / ".metadata.json"
        if ck.name[4:].isdigit() and done.is_file():
            out.append((int(ck.name[4:]), _mtime(done)))
    return sorted(out, key=lambda x: x[0])


def _lm_cell(cdir: Path, name: str, total: int | None, log: Path | None) -> CellStatus:
    meta = _meta(cdir)
    if total is None:
        total = _toml_steps(cdir / "config.toml")
    if meta.get("status") == "finished":
        steps = meta.get("steps") if isinstance(meta.get("steps"), int) else total
        rate = None
        wall, start = meta.get("wall_time_s"), meta.get("resumed_from") or 0
        if isinstance(wall, (int, float)) and wall > 0 and steps is not None and steps > start:
            rate = wall / (steps - start)
        return CellStatus(name, "finished", steps, total, eta_s=0.0, seconds_per_step=rate)
    done, when = _lm_progress(cdir)
    error = log_error(log)
    if error is not None:
        return CellStatus(name, "failed", done, total, error=error)
    if meta.get("status") == "running" or (log is not None and log.is_file()):
        rate, eta = None, None
        began = _mtime(cdir / "meta.json") if meta else None
        if done is not None and when is not None and began is not None:
            resumed = max((s for s, t in _checkpoints(cdir) if t is not None and t <= began), default=0)
            if done > resumed and when > began:
                rate = (when - began) / (done - resumed)
        if rate is not None and total is not None and done is not None:
            eta = rate * max(total - done, 0)
        return CellStatus(name, "running", done, total, eta_s=eta, seconds_per_step=rate)
    return CellStatus(name, "not started", 0, total)


# ------------------------------------------------------------------------------------------------- synthetic


def _synthetic(d: Path, meta: dict[str, Any]) -> list[CellStatus]:
    from raretask.config import load_config
    from raretask.synthetic.train import SynthConfig, expand_grid, group_name, group_slug

    try:
        cfg = load_config(SynthConfig, d / "config.toml")
    except ConfigError as e:
        raise ConfigError(_about(d / "config.toml", e)) from None
    timings = meta.get("groups") if isinstance(meta.get("groups"), dict) else {}
    rows = []
    for assign, gcfg in expand_grid(cfg):
        slug, total = group_slug(assign), gcfg.train.steps
        gdir = d / "groups" / slug
        ckpt = gdir / "checkpoint.pt"
        log = d / "logs" / f"{slug}.log"
        error = log_error(log)
        if (gdir / "results.parquet").is_file():
            sps = (timings.get(group_name(assign)) or {}).get("steps_per_s")
            rate = 1.0 / sps if isinstance(sps, (int, float)) and sps > 0 else None
            rows.append(CellStatus(slug, "finished", total, total, eta_s=0.0, seconds_per_step=rate))
        elif ckpt.is_file() or log.is_file():
            step, elapsed = _synthetic_checkpoint(ckpt) if ckpt.is_file() else (0, None)
            if error is not None:
                rows.append(CellStatus(slug, "failed", step, total, error=error))
                continue
            rate = elapsed / step if step and elapsed else None
            eta = rate * max(total - step, 0) if rate is not None and step is not None else None
            rows.append(CellStatus(slug, "running", step, total, eta_s=eta, seconds_per_step=rate))
        else:
            rows.append(CellStatus(slug, "not started", 0, total))
    return rows


def _synthetic_checkpoint(path: Path) -> tuple[int | None, float | None]:
    """(step, elapsed seconds) a synthetic checkpoint records; memory-mapped, so its tensors are not read."""
    try:
        import torch

        ck = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        step, elapsed = ck.get("step"), ck.get("elapsed")
    except Exception:  # noqa: BLE001 (being replaced, or an older format: progress unknown)
        return None, None
    return (int(step) if isinstance(step, int) else None,
            float(elapsed) if isinstance(elapsed, (int, float)) else None)


# ------------------------------------------------------------------------------------------------- reproduce


def _reproduce(d: Path, meta: dict[str, Any]) -> list[CellStatus]:
    listed = meta.get("experiments")
    recorded = listed if isinstance(listed, dict) else {}
    names = [str(n) for n in (listed or [])]
    if (d / "lm" / "corpus").is_dir() and "lm/corpus" not in names:
        names.append("lm/corpus")
    rows = []
    for name in names:
        sub, rec = d / name, recorded.get(name) or {}
        submeta = _meta(sub)
        row = CellStatus(name, "not started")
        if submeta.get("kind") in ("lm.sweep", "synthetic"):
            try:
                inner = read(sub)
                known = [c for c in inner.cells if c.steps_done is not None and c.steps_total is not None]
                if len(known) == len(inner.cells):
                    row.steps_done = sum(c.steps_done for c in known)  # type: ignore[misc]
                    row.steps_total = sum(c.steps_total for c in known)  # type: ignore[misc]
                row.eta_s = inner.eta_s
            except ConfigError:
                pass
        log = d / "logs" / f"{name}.log"
        error = log_error(log)
        if submeta.get("status") == "finished":
            row.state, row.eta_s = "finished", 0.0
        elif rec.get("status") == "failed":
            row.state, row.error, row.eta_s = "failed", rec.get("error"), None
        elif rec.get("status") == "skipped":
            row.error = rec.get("error")
        elif error is not None:
            row.state, row.error, row.eta_s = "failed", error, None
        elif submeta.get("status") == "running" or log.is_file():
            row.state = "running"
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------- ETA


def _estimate(rows: list[CellStatus]) -> float | None:
    """Fill in not-started cells' ETAs from the measured speeds; return the run's ETA (module docstring)."""
    measured = [c for c in rows if c.seconds_per_step is not None]
    for c in rows:
        if c.state not in ("not started", "queued") or c.eta_s is not None or c.steps_total is None or not measured:
            continue
        same = [m.seconds_per_step for m in measured if c.family is not None and m.family == c.family]
        speeds = same or [m.seconds_per_step for m in measured]
        c.eta_s = sum(speeds) / len(speeds) * c.steps_total  # type: ignore[arg-type]
    left = [c for c in rows if c.state in ("running", "queued", "not started")]
    if any(c.eta_s is None for c in left):
        return None
    return sum(c.eta_s for c in left) / max(1, sum(c.state == "running" for c in left))  # type: ignore[misc]


def format_duration(seconds: float | None) -> str:
    """'1h05m', '3m20s', '12s'; '-' when unknown."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"

