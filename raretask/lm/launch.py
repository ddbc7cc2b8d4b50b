"""The LM sweep on a Slurm cluster: each cell of the grid is one job (raretask.launcher).

    launch = launch_sweep(cfg, Path("runs/fig5"))    # cfg.launcher.kind = "slurm"; the last job gathers the tables
    raretask lm train DIR/cells/<cell>.toml --out DIR/cells/<cell>     # what each job runs (on every GPU's rank)
    raretask lm gather DIR                            # results.parquet, curves.parquet and figures of DIR

Before submitting, the checks and the sweep directory of `run_sweep` (raretask.lm.sweep.start_sweep), except the
device and memory of this machine: the cells train on the cluster's, which each cell's own training checks.
"""

from __future__ import annotations

from pathlib import Path

from raretask.config import ConfigError, load_config
from raretask.launcher import Launch, check_available, job_name, submit
from raretask.lm.sweep import Cell, LMSweepConfig, LMSweepResult, cell_jobs, expand_cells, is_finished, run_sweep, \
    start_sweep
from raretask.runner import Job


def pending_cells(cfg: LMSweepConfig, out: Path) -> list[Cell]:
    """The cells of `cfg` not finished in `out` (reads only)."""
    return [c for c in expand_cells(cfg) if not is_finished(Path(out) / "cells" / c.slug, c.config)]


def launch_sweep(cfg: LMSweepConfig, out: Path, *, overwrite: bool = False, wait: bool = False) -> Launch:
    """Submit every unfinished cell as one Slurm job, after the checks and the directory of `run_sweep`. The job
    that ends the sweep gathers its tables; `wait`: none does, the caller gathers."""
    check_available(cfg.launcher, submitting=True)  # before anything is written
    out = Path(out)
    cells, done, _ = start_sweep(cfg, out, overwrite=overwrite, here=False)
    jobs = cell_jobs([c for c in cells if c.slug not in done], out)
    every = tuple(Job(c.slug, [], out / "cells" / c.slug) for c in cells)
    gather_job = None if wait else Job("gather", ["lm", "gather", str(out), "--no-progress"], out)
    return submit(jobs, cfg.launcher, out=out, name=job_name(out), gather=gather_job, every=every)


def gather(out: Path, *, progress: bool = False) -> LMSweepResult:
    """The sweep's tables from its finished cells (every cell read back, nothing trained): `raretask lm gather`."""
    out = Path(out)
    if not (out / "config.toml").is_file():
        raise ConfigError(f"{out}: no sweep here (no config.toml)")
    cfg = load_config(LMSweepConfig, out / "config.toml")
    left = pending_cells(cfg, out)
    if left:
        raise ConfigError(f"{out}: {len(left)} of {len(expand_cells(cfg))} cells are not finished (first "
                          f"{left[0].slug}; `raretask status {out}`)")
    return run_sweep(cfg, out, progress=progress)
