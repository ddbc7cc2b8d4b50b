"""The process an LM run trains in: OLMo-core's training environment (a process group under torchrun, the default
device, logging kept off stdout), rank-0 helpers, and putting back what training changes for the whole process."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Any

from raretask.config import ConfigError


@contextlib.contextmanager
def process_state() -> Any:
    """Put back what OLMo-core's training environment and Trainer change for the whole process (default device,
    thread count, multiprocessing start method, CUDA sync debug mode), so that code run after training in the same
    process (a sweep's next cell, the demo's next part, a notebook) sees the process as it was."""
    import multiprocessing as mp

    import torch

    device, threads, start = torch.get_default_device(), torch.get_num_threads(), mp.get_start_method(True)
    sync = torch.cuda.get_sync_debug_mode() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_default_device(None if device.type == "cpu" else device)
        torch.set_num_threads(threads)
        if mp.get_start_method(True) != start:
            mp.set_start_method(start, force=True)
        if sync is not None:
            torch.cuda.set_sync_debug_mode(sync)


def init_environment(seed: int, device: Any, threads: int, verbose: bool) -> tuple[int, int]:
    """OLMo-core's training environment: a process group when launched by torchrun, else none; the default device;
    `threads` torch threads (0: torch's choice); quiet logging. Returns (world size, rank)."""
    import torch
    import torch.distributed as dist
    from olmo_core.train import prepare_training_environment

    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type == "cuda" and per_node > torch.cuda.device_count():
        raise ConfigError(f"train.device: {per_node} processes per node on cuda, but this node has "
                          f"{torch.cuda.device_count()} GPU(s): launch at most that many, or set train.device=cpu")
    # Its start-up chatter (logged before quiet_logging, or printed) stays off stdout, which is --json's.
    logging.disable(logging.INFO if verbose else logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if world == 1:
                prepare_training_environment(seed=seed, backend=None)
            elif not dist.is_initialized():
                backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
                prepare_training_environment(seed=seed, backend=backend)
    finally:
        logging.disable(logging.NOTSET)
    # CPU is torch's default anyway; a default-device mode would wrap every torch call (~25% slower small steps)
    torch.set_default_device(None if device.type == "cpu" else device)
    if threads:
        torch.set_num_threads(threads)
    quiet_logging(verbose)
    return world, (dist.get_rank() if dist.is_initialized() else 0)


_NOISE = ("No checkpoint found in save folder", "torch.distributed is disabled", "DTensor random operators",
          "Will skip setting env var")


def quiet_logging(verbose: bool) -> None:
    """OLMo-core logs INFO to stdout; keep stdout for results: warnings and errors only (INFO with verbose), on
    stderr, without the warnings that are expected here (no checkpoint yet, single process)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    level = logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)  # also for loggers with a level of their own (torch's checkpoint DEBUG log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(lambda r: verbose or not any(s in r.getMessage() for s in _NOISE))
    root.addHandler(handler)
    root.setLevel(level)
    if not verbose:
        for s in _NOISE:  # an identical filter is replaced, not added twice, when train() runs again
            warnings.filterwarnings("ignore", message=f".*{s}")


def on_rank0(fn: Any, rank: int) -> Any:
    """Run fn on rank 0 only and give every rank its result; a ConfigError there is raised on every rank."""
    import torch.distributed as dist

    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except ConfigError as e:
            error = str(e)
    if dist.is_initialized():
        box = [(result, error)]
        dist.broadcast_object_list(box, src=0)
        result, error = box[0]
    if error is not None:
        raise ConfigError(error)
    return result


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
