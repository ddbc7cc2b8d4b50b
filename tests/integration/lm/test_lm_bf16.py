"""bf16 mixed precision (every paper preset's) on the CPU: OLMo-core autocasts the forward of training and evaluation
to bf16 on the run's device, the run learns, and its numbers stay close to the fp32 run's without equalling them."""

import math

import pytest
import torch

from raretask.config import load_config
from raretask.lm.train import LMConfig, train

from .test_lm_train import HEADER, corpus  # noqa: F401 (corpus: a fixture, 150 BBC News documents, 512-token BPE)

CONFIG = HEADER + """steps = 40
global_batch_seqs = 8
lr = 2e-2
warmup = 5
checkpoint_every = 40
device = "cpu"
[eval]
every = 10
train_instances = 100
test_instances = 100
heldout_tokens = 2048
reference = false
[[tasks]]
name = "cmp"
kind = "comparison"
frequency = 0.01
schedule = "interval"
"""

# bf16 keeps 8 significand bits: each rounding is within 2^-9 ~ 0.2% relative. On this model the two runs' losses
# differ by ~0.1% at most (measured); 2% allows for the trajectories drifting apart over 40 steps and is still
# ten times smaller than what the run learns (both losses fall by ~20%), so a run that does not learn fails.
RTOL = 0.02


@pytest.fixture(scope="module")
def both(corpus, tmp_path_factory):  # noqa: F811
    """The same run in fp32 and in bf16, with the autocast contexts each made that turn autocast on:
    {precision: (metrics, casts)} (OLMo-core's RoPE also makes one that turns it off, for its cache)."""
    root = tmp_path_factory.mktemp("bf16")
    path = root / "tiny.toml"
    path.write_text(CONFIG.format(manifest=corpus))
    out = {}
    for precision in ("fp32", "bf16"):
        casts: list[tuple[str, torch.dtype]] = []

        class Recording(torch.autocast):  # what OLMo-core's train module enters around each forward
            def __init__(self, device_type, dtype=None, enabled=True, *args, **kw):
                if enabled:
                    casts.append((device_type, dtype))
                super().__init__(device_type, dtype, enabled, *args, **kw)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch, "autocast", Recording)
            cfg = load_config(LMConfig, path, [f"train.precision={precision}"])
            result = train(cfg, root / precision, progress=False)
        out[precision] = (result.metrics, set(casts))
    return out


def test_bf16_autocasts_on_the_cpu_and_fp32_does_not(both):
    assert both["bf16"][1] == {("cpu", torch.bfloat16)}
    assert both["fp32"][1] == set()


@pytest.mark.parametrize("column", ["test_loss", "heldout_loss"])  # train_loss is None at step 0 (nothing seen)
def test_bf16_run_learns_close_to_fp32_but_not_equal(both, column):
    bf16, fp32 = both["bf16"][0][column], both["fp32"][0][column]
    assert both["bf16"][0]["step"] == both["fp32"][0]["step"] == [0, 10, 20, 30, 40]
    assert all(math.isfinite(v) for v in bf16)
    assert bf16[-1] < 0.9 * bf16[0], bf16  # it learns
    # step 0 is the same initial model in both: only the forward's precision can tell the numbers apart
    assert bf16[0] != fp32[0]
    assert all(a != b for a, b in zip(bf16, fp32))
    assert bf16 == pytest.approx(fp32, rel=RTOL)
