"""What the sweep commands do with `--launcher slurm` (raretask.launcher): print the sbatch script (--dry-run), or
submit the unfinished cells and, with --wait, wait for them and gather the tables here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from raretask.config import ConfigError
from raretask.launcher import SUBMITIT_FOLDER, Cluster, Launch, LauncherConfig, check_available, job_name, render


def launched(launcher: LauncherConfig, out: Path, *, pending: Callable[[], list[str]],
             submit: Callable[[bool], Launch], gather: Callable[[], Any], dry_run: bool, wait: bool,
             as_json: bool) -> Any:
    """--dry-run: print the sbatch script of the `pending()` cells (their names), write nothing, return None. Else
    `submit(wait)`; without waiting, say what was submitted and return None; with --wait (always on the debug
    cluster, whose jobs run only when waited on), wait, then return `gather()`: the sweep's result. A failed cell
    is one line, exit 2, after the others finished. Nothing left to train: gather now."""
    check_available(launcher, submitting=not dry_run)
    if dry_run:
        cells = pending()
        if not cells:
            click.echo(f"# every cell in {out} is finished: nothing to submit")
            return None
        click.echo(render(launcher, out / SUBMITIT_FOLDER, len(cells), job_name(out)))
        click.echo(f"# {len(cells)} job(s), array index -> cell: " + ", ".join(f"{i}: {c}" for i, c in
                                                                          enumerate(cells)), err=True)
        return None
    wait = wait or launcher.cluster is Cluster.DEBUG
    launch = submit(wait)
    if not launch.jobs:
        return gather()
    if not wait:
        ids = launch.job_ids
        if as_json:
            click.echo(json.dumps({"out": str(out), "submitted": ids}))
        else:
            click.echo(f"submitted {len(ids)} job(s) for the unfinished cells of {out} (job {next(iter(ids.values()))}"
                       f"{' ...' if len(ids) > 1 else ''}); `raretask status {out}` follows them; the last job "
                       f"gathers the tables")
        return None
    failed = {name: error for name, error in launch.wait().items() if error}
    if failed:
        name, error = next(iter(failed.items()))
        raise ConfigError(f"{len(failed)} cell(s) failed, first {name}: {error} (log: {out / 'logs' / name}.log)")
    print(f"{len(launch.jobs)} job(s) finished; gathering {out}", file=sys.stderr)
    return gather()
