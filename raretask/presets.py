"""The packaged presets (`configs/` of a clone, shipped as `raretask.configs`), so every example runs after a plain
`pip install raretask` too.

    find("configs/synthetic/default.toml")   # the packaged file, whether or not ./configs exists
    find("synthetic/default.toml")           # the same
    names()                                  # every preset, as "synthetic/default.toml", ...
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def root() -> Path:
    """The folder holding the presets (inside the installed package, or configs/ of an editable install)."""
    return Path(str(resources.files("raretask.configs")))


def names() -> list[str]:
    """Every packaged preset, relative to the presets folder."""
    base = root()
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*.toml"))


def find(name: str | Path) -> Path | None:
    """The packaged preset `name` names ("configs/lm/cpu.toml" or "lm/cpu.toml"), or None."""
    parts = Path(name).parts
    rel = Path(*parts[1:]) if parts and parts[0] == "configs" else Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    path = root() / rel
    return path if path.is_file() else None
