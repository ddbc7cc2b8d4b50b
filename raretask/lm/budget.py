"""What a planned LM run costs: compute C = 6 N D and device-hours at a device's peak bf16 FLOP/s times an MFU.

    plan(params=1.2e6, total_params=None, tokens=7.7e5, frequency=3e-3, unit="per_token", tokens_per_batch=512,
         device="h100", mfu=0.4)

The rule for D: the tokens each run of the sweep trained on. A threshold f*(N) was measured after that many tokens,
so a prediction drawn from it holds for a run of that length, which then sees f * D task instances (f per token; per
batch: f per batch times D / tokens per batch). A longer run sees more instances and may learn at a lower frequency;
the sweep did not measure that. N: all parameters where known (a size of the sweep, a preset), else the
non-embedding count the power law speaks of, which leaves out the LM head's 2 V d FLOPs per token (an
underestimate for small models, where the vocabulary matrices dominate).
"""

from __future__ import annotations

import math
from typing import Any

from raretask.config import ConfigError

PEAK_FLOPS: dict[str, tuple[float, str]] = {  # device -> (dense bf16 peak FLOP/s, what the hours count)
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 Tensor Core 1,979 TFLOPS with 2:4 sparsity; half dense.
    "h100": (989.5e12, "GPU-hours"),
    # NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 Tensor Core 1,979 TFLOPS with sparsity, as the H100 SXM.
    "h200": (989.5e12, "GPU-hours"),
    # NVIDIA A100 Tensor Core GPU datasheet: BF16 Tensor Core 312 TFLOPS dense (624 with sparsity).
    "a100": (312e12, "GPU-hours"),
    # One nominal x86 core: 2 AVX2 FMA units x 8 fp32 lanes x 2 FLOP x 3.0 GHz = 96 GFLOP/s (most CPUs run bf16
    # matrix products no faster than fp32).
    "cpu": (96e9, "core-hours"),
}


def check(device: str, mfu: float) -> None:
    if device not in PEAK_FLOPS:
        raise ConfigError(f"--device: {device!r} is not one of {', '.join(PEAK_FLOPS)}")
    if not (math.isfinite(mfu) and 0.0 < mfu <= 1.0):
        raise ConfigError(f"--mfu: must be in (0, 1], got {mfu}")


def plan(params: float, total_params: float | None, tokens: float, frequency: float, unit: str,
         tokens_per_batch: float, device: str = "h100", mfu: float = 0.4) -> dict[str, Any]:
    """The compute and device-hours of one run of `tokens` tokens at N parameters (module docstring), and the task
    instances it sees at `frequency` (in `unit`)."""
    check(device, mfu)
    n = total_params if total_params is not None else params
    flops = 6.0 * n * tokens
    peak, what = PEAK_FLOPS[device]
    batches = tokens / tokens_per_batch if tokens_per_batch and math.isfinite(tokens_per_batch) else math.nan
    instances = frequency * (batches if unit == "per_batch" else tokens)
    return {"params": n, "params_counted": "all parameters" if total_params is not None else
            "non-embedding parameters (the LM head's FLOPs not included)",
            "tokens": tokens, "tokens_rule": "the tokens each sweep run trained on (f* was measured there)",
            "instances": instances if math.isfinite(instances) else None, "flops": flops, "device": device,
            "peak_flops": peak, "mfu": mfu, "hours": flops / (peak * mfu) / 3600.0, "hours_unit": what}
