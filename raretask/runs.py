"""Run directories: resolved config, provenance, atomic writes, Parquet tables.

Layout of every run directory (synthetic sweeps today; the LM lab and reports reuse it):

  DIR/config.toml        the resolved config (re-running with it reproduces the run)
  DIR/meta.json          seeds, versions, git commit, device, wall time, status
  DIR/results.parquet    one row per cell x task (final numbers)
  DIR/curves.parquet     metrics over training steps
  DIR/groups/<name>/     one sub-run per point of a non-width/seed sweep grid, with its own results and checkpoint
  DIR/*.png, report.html figures and the page

Files are written to a temporary name and renamed, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raretask.config import ConfigError


_UMASK = os.umask(0)
os.umask(_UMASK)  # read once (os.umask can only be read by setting it)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would have
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_table(path: Path, columns: dict[str, list | np.ndarray]) -> None:
    """Write a column dict as Parquet (DuckDB, pandas and pyarrow read it)."""
    table = pa.table({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in columns.items()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: Path) -> dict[str, list]:
    return pq.read_table(path).to_pydict()


def concat_columns(parts: list[dict[str, list]]) -> dict[str, list]:
    out: dict[str, list] = {}
    for part in parts:
        for k, v in part.items():
            out.setdefault(k, []).extend(v)
    return out


def git_commit() -> str:
    """The commit of the raretask source tree, '+dirty' if it has uncommitted changes; 'unknown' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import torch

    import raretask

    return {"raretask": raretask.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pyarrow": pa.__version__}


def prepare_run_dir(out: Path, config_toml: str, overwrite: bool = False,
                    same: Callable[[str, str], bool] | None = None) -> bool:
    """Create `out` for a run of `config_toml`. Returns True when resuming an unfinished/finished run of it.

    An existing directory holding a different config is an error (unless overwrite), so runs are never mixed.
    `same(existing, new)` says when two configs are the same run (default: the same text); the file then takes the
    new text (e.g. the launcher table it differs in)."""
    out = Path(out)
    existing = out / "config.toml"
    is_run = existing.is_file() and (out / "meta.json").is_file()
    if out.exists() and overwrite:
        if any(out.iterdir()) and not is_run:  # never delete a folder raretask did not make
            raise ConfigError(f"--out {out}: not a raretask run directory; refusing to delete it for --overwrite")
        shutil.rmtree(out)
    elif existing.is_file():
        text = existing.read_text()
        if not (same or str.__eq__)(text, config_toml):
            raise ConfigError(f"--out {out}: holds a run of a different config (choose another --out, or --overwrite)")
        if text != config_toml:
            write_text(existing, config_toml)
        return True
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not a raretask run directory")
    out.mkdir(parents=True, exist_ok=True)
    write_text(existing, config_toml)
    return False


class RunMeta:
    """meta.json: provenance written at start, updated at the end (status, wall time)."""

    def __init__(self, out: Path, **fields: Any):
        self.path = Path(out) / "meta.json"
        self.start = time.time()
        # what an earlier run into the same directory recorded (a resume reads its own history from it)
        self.previous: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data = {"created": self.previous.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
                     "versions": versions(), "git_commit": git_commit(), "status": "running",
                     "wall_time_s": self.previous.get("wall_time_s", 0.0), **fields}
        write_json(self.path, self.data)

    def finish(self, **fields: Any) -> None:
        self.data.update(fields, status="finished", wall_time_s=self.data["wall_time_s"] + time.time() - self.start)
        write_json(self.path, self.data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
