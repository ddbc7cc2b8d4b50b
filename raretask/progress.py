"""Progress bars for long work: one rich bar style for every lab, on stderr so `--json` stdout stays clean.

    with progress_bar() as bar:               # or `progress_bar(enabled=False)`: a no-op context yielding None
        task = bar.add_task("train", total=steps)
        bar.advance(task)

Callers that take an optional bar check `if bar is not None` before using it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


def progress_bar(unit: str | None = "steps", *, eta: bool = True, enabled: bool = True) -> Any:
    """A rich Progress (description, bar, done/total [unit], elapsed, ETA), or `nothing()` when not enabled."""
    if not enabled:
        return nothing()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(unit)] if unit else []
    columns += [TimeElapsedColumn()]
    columns += [TextColumn("ETA"), TimeRemainingColumn()] if eta else []
    return Progress(*columns, console=Console(stderr=True), transient=False)


@contextmanager
def nothing() -> Iterator[None]:
    """The stand-in for a disabled bar: a context that yields None."""
    yield None


