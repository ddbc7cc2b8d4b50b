"""matplotlib, headless, and the one way every figure is written (atomically, so a crash leaves no half PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raretask import runs


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed); imported on first use, so `--help` stays fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, *, dpi: int = 120, tight: bool = True) -> Path:
    """Write `fig` as a PNG at `path` through a temporary file, then close it. `tight=False` for figures whose
    layout is constrained already (bbox_inches="tight" would draw them a second time)."""
    path = Path(path)
    with runs.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)
    return path
