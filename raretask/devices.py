"""Where a run computes: the one reading of a `train.device` setting, for every lab."""

from __future__ import annotations

from typing import Any

from raretask.config import ConfigError


def resolve_device(name: Any, field: str = "train.device") -> Any:
    """"auto" (CUDA when present, else the CPU), "cpu", "cuda" or "cuda:N" as a torch.device. Asking for CUDA on a
    machine without it is a user mistake: a one-line ConfigError naming `field`, before anything is written."""
    import torch

    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{field}: cuda requested but no CUDA device is available")
    return torch.device(name)
