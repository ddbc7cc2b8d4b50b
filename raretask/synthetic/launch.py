"""The synthetic sweep on a Slurm cluster: each grid point of `sweep.grid` is one cell, trained by one job.

    launch = launch_sweep(cfg, Path("runs/zipf"))    # cfg.launcher.kind = "slurm"; the last job gathers the tables
    raretask synth cell DIR POINT                     # what each job runs: grid point POINT into DIR/groups/POINT
    raretask synth gather DIR                         # results.parquet, curves.parquet and figures of DIR

The cell is the grid point, not one (seed, width): a grid point's seeds and widths train together in one set of
tensors (raretask.synthetic.model), which is what makes the lab fast, and a cell trained alone would add its floats
in another order. A grid point trained by its job is bit-identical to the same point trained by `synth run` in one
process at the same `train.threads`. A sweep without `sweep.grid` is one cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raretask.config import ConfigError, load_config
from raretask.launcher import Launch, check_available, job_name, submit
from raretask.runner import Job
from raretask.synthetic.train import SweepResult, SynthConfig, expand_grid, grid_point, group_slug, run, start

DONE = "results.parquet"  # a grid point's directory gets it last, when the point is finished


def point_jobs(cfg: SynthConfig, out: Path) -> list[Job]:
    """Every grid point as the command that trains it (`raretask synth cell DIR POINT`)."""
    out = Path(out)
    return [Job(slug, ["synth", "cell", str(out), slug, "--no-progress"], out / "groups" / slug, marker=DONE)
            for slug in (group_slug(assign) for assign, _ in expand_grid(cfg))]


def pending_points(cfg: SynthConfig, out: Path) -> list[Job]:
    """The grid points not finished in `out` (reads only)."""
    return [j for j in point_jobs(cfg, out) if not j.finished()]


def launch_sweep(cfg: SynthConfig, out: Path, *, overwrite: bool = False, wait: bool = False) -> Launch:
    """Submit every unfinished grid point as one job (raretask.launcher) after writing the run directory as `run`
    does. The job that ends the sweep gathers its tables; `wait`: none does, the caller gathers."""
    check_available(cfg.launcher, submitting=True)  # before anything is written
    out = Path(out)
    start(cfg, out, overwrite=overwrite, here=False)
    every = point_jobs(cfg, out)
    gather_job = None if wait else Job("gather", ["synth", "gather", str(out), "--no-progress"], out)
    return submit([j for j in every if not j.finished()], cfg.launcher, out=out, name=job_name(out),
                  gather=gather_job, every=tuple(every))


def train_point(out: Path, point: str, *, progress: bool = False) -> None:
    """Train grid point `point` of the sweep in `out` (as `run` trains each of its points) into out/groups/<point>;
    a finished point is left as it is, an unfinished one resumes from its checkpoint."""
    from raretask.devices import choose_threads, torch_threads
    from raretask.progress import progress_bar

    out = Path(out)
    cfg = _config(out)
    points = {group_slug(assign): (assign, gcfg) for assign, gcfg in expand_grid(cfg)}
    if point not in points:
        raise ConfigError(f"{point!r}: no such grid point in {out} (points: {', '.join(points)})")
    assign, gcfg = points[point]
    timings: dict[str, Any] = {}
    with torch_threads(choose_threads(cfg.train.threads)), progress_bar(enabled=progress) as bar:
        grid_point(assign, gcfg, out, bar, timings)


def gather(out: Path, *, progress: bool = False) -> SweepResult:
    """The sweep's tables from its finished grid points (each read back, nothing trained): `raretask synth gather`."""
    out = Path(out)
    cfg = _config(out)
    left = pending_points(cfg, out)
    if left:
        raise ConfigError(f"{out}: {len(left)} of {len(expand_grid(cfg))} grid points are not finished (first "
                          f"{left[0].name}; `raretask status {out}`)")
    return run(cfg, out, progress=progress)


def _config(out: Path) -> SynthConfig:
    if not (out / "config.toml").is_file():
        raise ConfigError(f"{out}: no synthetic sweep here (no config.toml)")
    return load_config(SynthConfig, out / "config.toml")
