"""The interference analysis' settings: bad ones name their field, the rare task defaults to the least frequent;
its measured ||G_F|| depends on the encoder's scale, which Theorem 4's bound does not."""

import numpy as np
import pytest
import torch

from raretask.analysis.interference import (Targets, exact_task_gradients, gradient_stats, interference_metrics,
                                            per_task_stats)
from raretask.config import ConfigError
from raretask.synthetic.dynamics import Theorem4
from raretask.synthetic.interference import InterferenceConfig
from raretask.synthetic.mixture import TaskStream
from raretask.synthetic.model import SweepStudent

from ..analysis.test_interference import TOML


@pytest.fixture
def cfg(config_from):
    return config_from(InterferenceConfig, TOML)


@pytest.mark.parametrize("override, message", [
    ("interference.rare=zzz", "interference.rare: no task named 'zzz'"),
    ("interference.rare=a", "interference.rare: task 'a' is in the frequent set F"),
    ("interference.mode=noisy", "interference.mode: 'noisy' is not one of"),
    ("interference.save_encoder=1.5", "interference.save_encoder: expected true or false"),
])
def test_bad_probe_settings_name_the_field(cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        cfg(override)


def test_default_rare_task_is_the_least_frequent(cfg):
    mix, F, r = cfg().probe()
    assert mix.names[r] == "d" and r not in F


def test_measured_frequent_norm_depends_on_the_encoders_scale(cfg):
    """W -> cW, D -> D/c leaves every prediction unchanged but divides the measured ||G_F|| (the raw encoder gradient
    of the frequent tasks with the current decoders) by c, so Theorem 4's bound 2 sqrt(lambda_1(M_F) delta_F), which
    depends on span(W) only, cannot bound it: c = 0.1 puts every cell past the bound, c = 10 below it. The shares
    the analysis reports besides (projection on B_r, cosines) do not move."""
    c_ = cfg()
    mix, F, r = c_.probe()
    student = SweepStudent(mix.dim, mix.ranks, c_.sweep.widths, c_.sweep.seeds, dtype=torch.float64)
    with torch.no_grad():  # decoders away from their init, so every task has a gradient
        student.decoder.add_(torch.randn(student.decoder.shape, generator=torch.Generator().manual_seed(0),
                                         dtype=torch.float64) * 0.3)
        for k, rank in enumerate(mix.ranks):
            student.decoder[:, k, :, rank:] = 0
    targets = Targets(F, r, torch.as_tensor(mix.bases[r]), list(range(mix.num_tasks)))
    batch = TaskStream(mix, c_.sweep.seeds, torch.device("cpu")).sample(24)
    x, y = batch.x.double(), batch.y.double()
    W, D = student.encoder.detach().clone(), student.decoder.detach().clone()
    hook = Theorem4(mix, F, torch.device("cpu"))

    def at_scale(c: float) -> tuple[torch.Tensor, np.ndarray, list[dict]]:
        """(predictions, Theorem 4's bound, [exact, batch] metrics) of the student with W -> cW, D -> D/c."""
        with torch.no_grad():
            student.encoder.copy_(c * W)
            student.decoder.copy_(D / c)
        exact = interference_metrics(gradient_stats(student, exact_task_gradients(student, mix), targets), targets)
        batch_probe = interference_metrics(per_task_stats(student, x, y, batch.offsets, targets), targets)
        return student(x, batch.offsets).detach(), hook(0, student)["grad_bound_F"], [exact, batch_probe]

    pred, bound, base = at_scale(1.0)
    for c in (0.1, 10.0):
        pred_c, bound_c, scaled = at_scale(c)
        torch.testing.assert_close(pred_c, pred, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bound_c, bound, rtol=1e-8)
        for b, a in zip(base, scaled):  # exact and batch probes alike
            np.testing.assert_allclose(a["frequent_norm"], b["frequent_norm"] / c, rtol=1e-8)
            for key in ("rare_projection", "cos_rare_frequent", "mean_cosine"):
                np.testing.assert_allclose(a[key], b[key], rtol=1e-8)
        ratio = scaled[0]["frequent_norm"] / bound  # same predictions, same bound: past it or well below
        assert np.all(ratio > 1) if c < 1 else np.all(ratio < 1), (c, ratio)
