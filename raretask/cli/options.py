"""What every `raretask` command shares: one-line errors with exit status 2, and the run commands' common flags."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

from raretask.config import ConfigError


def handles_errors(fn: Callable) -> Callable:
    """A `ConfigError` (a user mistake) becomes `error: <field>: <what>` on stderr and exit status 2; Ctrl-C says
    how to resume."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: run the same command again to resume from the last checkpoint", err=True)
            sys.exit(130)

    return wrapper


def run_options(out_help: str = "run directory (default: runs/<config name>)", *, what: str = "run",
                dry_run_help: str = "print the resolved config and exit", progress_help: str = "no progress bar",
                json_help: str = "print a JSON summary on stdout") -> Callable:
    """The arguments and flags every run command shares: CONFIG, dotted overrides, --out, --json, --dry-run,
    --overwrite, --no-progress (then `handles_errors`), so each command states only what is its own."""

    def decorate(fn: Callable) -> Callable:
        for option in reversed([
            click.argument("config", type=click.Path(dir_okay=False)),
            click.argument("overrides", nargs=-1),
            click.option("--out", type=click.Path(file_okay=False), help=out_help),
            click.option("--json", "as_json", is_flag=True, help=json_help),
            click.option("--dry-run", is_flag=True, help=dry_run_help),
            click.option("--overwrite", is_flag=True, help=f"delete an existing {what} in --out first"),
            click.option("--no-progress", is_flag=True, help=progress_help),
        ]):
            fn = option(fn)
        return fn

    return decorate


def gather_options(progress_help: str = "no progress bar") -> Callable:
    """The arguments and flags of a `gather` command (RUN_DIR, --json, --no-progress, then `handles_errors`): a
    sweep's tables from its finished cells, the same for the synthetic and the LM lab."""

    def decorate(fn: Callable) -> Callable:
        for option in reversed([
            click.argument("run_dir", type=click.Path(file_okay=False, exists=True)),
            click.option("--json", "as_json", is_flag=True, help="print a JSON summary on stdout"),
            click.option("--no-progress", is_flag=True, help=progress_help),
        ]):
            fn = option(fn)
        return handles_errors(fn)

    return decorate


def parse_workers(text: str) -> int:
    """--workers: a positive count, or "auto" for the cores idle now (raretask.devices.free_cores)."""
    if text == "auto":
        from raretask.devices import free_cores

        return free_cores()
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--workers: expected a positive number or auto, got {text!r}")
    return n


def launcher_options(fn: Callable) -> Callable:
    """--launcher and --wait of the sweep commands (raretask.launcher); `with_launcher` applies --launcher."""
    fn = click.option("--wait", is_flag=True,
                      help="with --launcher slurm: wait for the jobs, then gather the tables here")(fn)
    return click.option("--launcher", "launcher", default=None, metavar="local|slurm",
                        help="where the cells run: local (this machine) or slurm (one job per unfinished cell, "
                             "via submitit); default: the config's launcher.kind, local")(fn)


def with_launcher(overrides: tuple[str, ...] | list[str], launcher: str | None) -> list[str]:
    """The config overrides with --launcher's kind last (so the flag wins over a `launcher.kind=` override)."""
    if launcher is None:
        return list(overrides)
    from raretask.launcher import LauncherKind

    kinds = [k.value for k in LauncherKind]
    if launcher.lower() not in kinds:
        raise ConfigError(f"--launcher: {launcher!r} is not one of {', '.join(kinds)}")
    return [*overrides, f"launcher.kind={launcher.lower()}"]
