"""The same code on a CUDA device (skipped without one): the synthetic lab meets theory there, per-task gradients
equal a backward per task, a tapped step trains like a plain one, and an OLMo-core LM run learns in fp32 and bf16.

Every other test runs on CUDA too where its config says `device = "auto"`; these pin the device explicitly."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raretask.analysis.interference import GradientTap, Targets, gradient_stats, per_task_gradients
from raretask.config import load_config
from raretask.synthetic.mixture import TaskStream
from raretask.synthetic.model import SweepStudent
from raretask.synthetic.train import SweepTrainer, SynthConfig

from ..unit.analysis.test_interference import TOML as INTERFERENCE_TOML, reference_loop
from .conftest import ROOT, summary
from .lm.test_lm_train import CONFIG as LM_CONFIG, corpus  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 matmuls in full precision (no TF32), as on the CPU, so the tolerances below mean the same."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_default_preset_meets_theory_on_cuda(cli, tmp_path):
    default = ROOT / "configs" / "synthetic" / "default.toml"
    s = summary(cli("synth", "run", default, "train.device=cuda", "--out", tmp_path / "o", "--json", "--no-progress"))
    traces = load_config(SynthConfig, default).mixture.build().traces
    for k, task in enumerate(s["tasks"]):
        err = np.abs(np.array(task["trained_loss"]) - np.array(task["theory_loss"])) / traces[k]
        assert err.max() < 0.05, (task["name"], err.round(3))
    assert "cuda" in (tmp_path / "o" / "meta.json").read_text()


@pytest.fixture
def interference_cfg(tmp_path):
    from raretask.synthetic.interference import InterferenceConfig

    path = tmp_path / "c.toml"
    path.write_text(INTERFERENCE_TOML.replace('device = "cpu"', 'device = "cuda"'))
    return load_config(InterferenceConfig, path)


def test_per_task_gradients_on_cuda_equal_a_backward_per_task(interference_cfg):
    c = interference_cfg
    mix = c.mixture.build()
    student = SweepStudent(mix.dim, mix.ranks, c.sweep.widths, c.sweep.seeds).to(CUDA)
    batch = TaskStream(mix, c.sweep.seeds, CUDA).sample(40)
    g = per_task_gradients(student, batch.x, batch.y, batch.offsets)
    ref = reference_loop(student, batch.x, batch.y, batch.offsets, batch.counts)
    assert g.device.type == "cuda" and ref.abs().max() > 0.1
    assert (g - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("split", [(0, []), (2, [True, False])])
def test_tapped_step_on_cuda_trains_like_a_plain_step(interference_cfg, split):
    plain, tapped = SweepTrainer(interference_cfg), SweepTrainer(interference_cfg)
    assert tapped.student.encoder.device.type == "cuda"
    mix = tapped.mixture
    targets = Targets([0, 1], 3, torch.as_tensor(mix.bases[3], device=CUDA), [0, 1, 2, 3])
    tap = GradientTap(tapped.student, targets)
    tap._split = split  # both ways of computing the statistics
    for _ in range(3):
        before = {k: v.clone() for k, v in tapped.student.state_dict().items()}
        probe = SweepStudent(mix.dim, mix.ranks, interference_cfg.sweep.widths, interference_cfg.sweep.seeds).to(CUDA)
        probe.load_state_dict(before)
        stream = tapped.stream.state()
        plain.step()
        with tap:
            tapped.step()
        replay = TaskStream(mix, interference_cfg.sweep.seeds, CUDA)
        replay.load_state(stream)
        batch = replay.sample(interference_cfg.train.batch_size)
        ref = gradient_stats(probe, per_task_gradients(probe, batch.x, batch.y, batch.offsets), targets)
        torch.testing.assert_close(tap.stats.gram, ref.gram, rtol=1e-4, atol=1e-6)
    for name, p in plain.student.named_parameters():
        torch.testing.assert_close(dict(tapped.student.named_parameters())[name], p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lm_run_on_cuda_learns_the_frequent_task(cli, corpus, tmp_path, precision):  # noqa: F811
    path = tmp_path / "tiny.toml"
    path.write_text(LM_CONFIG.format(manifest=corpus))
    out = tmp_path / "run"
    s = summary(cli("lm", "train", path, "train.device=cuda", f"train.precision={precision}", "--out", out,
                    "--json", "--no-progress"))
    m = pq.read_table(out / "metrics.parquet").to_pydict()
    # the train loss scores seen instances only (none at step 0): learning is measured against the step-0 test loss
    test = [v for t, v in zip(m["task"], m["test_loss"]) if t == "cmp-frequent"]
    cmp = [v for t, v in zip(m["task"], m["train_loss"]) if t == "cmp-frequent"]
    assert cmp[-1] < 0.6 * test[0], (cmp, test)
    assert s["tokens"] == 80 * 8 * 64 and "cuda" in (out / "meta.json").read_text()
