"""`raretask synth retention`: the reduced preset shows the paper's retention effects; bad input; resume."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from .conftest import ROOT, summary

PRESET = ROOT / "configs" / "synthetic" / "retention.toml"
DECAY_TOL = 0.005  # decay per cycle of cells that keep their signal is ~0.001-0.05: ties within this are noise
FREQUENT_TOL = 0.05  # the frequent set's s~_F may move this much across gaps (the rare task borrows capacity)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a busy 2-core machine they stall (10x slower steps).
    Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_reduced_preset_shows_update_and_forget(cli, tmp_path):
    """For every seed: the final share of the rare task's variance the encoder holds, raw s_r, rises with width at
    every G, and s~_r falls with G at every width (strictly); the decay per cycle falls with width, and the frequent
    tasks' s~_F barely moves with G. Widths are compared on raw s_r: s~ of a cell holding nothing of r is -N/(d - N),
    lower the wider it is (at one width s~ and s_r order the gaps alike)."""
    out = tmp_path / "o"
    s = summary(cli("synth", "retention", PRESET, "--out", out, "--json", "--no-progress"))
    assert s["rare"] == "rare" and s["gaps"] == [4, 12, 36] and s["widths"] == [8, 16, 24, 32]
    per = {k: np.array(v, dtype=float) for k, v in s["per_seed"].items()}  # (S, G, W)
    for i, seed in enumerate(s["seeds"]):
        rare, decay, freq = per["final_signal_rare"][i], per["decay_per_cycle"][i], per["final_signal_frequent"][i]
        raw = per["final_signal_rare_raw"][i]
        assert np.all(np.diff(raw, axis=1) > 0), (seed, raw)  # wider holds more of r, at every G
        assert np.all(np.diff(rare, axis=0) < 0), (seed, rare)  # longer gaps lose more, at every width
        assert raw[0, -1] - raw[-1, 0] > 0.5, (seed, raw)
        assert np.all(np.diff(decay, axis=1) <= DECAY_TOL), (seed, decay)
        assert decay[-1, 0] - decay[-1, -1] > 0.3, (seed, decay)  # at the longest gap: forget vs keep
        assert np.all(freq.max(0) - freq.min(0) <= FREQUENT_TOL), (seed, freq)
        assert (rare.max(0) - rare.min(0)).min() > 3 * FREQUENT_TOL  # ... while s~_r moves far more
    np.testing.assert_allclose(s["final_signal_rare"], per["final_signal_rare"].mean(0), atol=1e-12)

    final = pq.read_table(out / "final.parquet").to_pydict()
    chance = np.array(final["width"]) / 256
    np.testing.assert_allclose(final["signal_rare_corrected"],  # an identity: s~ is s rescaled per width
                               (np.array(final["signal_rare"]) - chance) / (1 - chance), atol=1e-12)
    assert set(final["rare_seen"]) == {2580}  # the matched rate: floor(2016 * 128 * 0.01) for every G and seed
    cycles = pq.read_table(out / "cycles.parquet").to_pydict()
    assert {m for g, m in zip(cycles["gap"], cycles["rare_samples"]) if g == 36} == {46, 47}  # carry rule
    cos = pq.read_table(out / "cosines.parquet").column("cosine").to_numpy()
    assert np.all(np.abs(cos) <= 1) and len(cos) > 0
    for name in ("trace.parquet", "retention_traces.png", "retention_final.png", "retention_decay.png",
                 "retention_cosine.png", "groups/gap=36/final.parquet"):
        assert (out / name).is_file(), name
    assert not list(out.glob("groups/*/checkpoint.pt"))
    r = cli("report", out)
    assert r.exit_code == 0, r.stderr
    page = (out / "report.html").read_text()
    assert "Retention: final rare-task signal" in page and "retention_final.png" in page


@pytest.mark.parametrize("overrides, message", [
    (["sweep.gaps=[4,12,144]"], "sweep.gaps: G = 144 gives m = 185 rare samples per injection > "
                                "train.batch_size = 128"),
    (["injection.rate=0"], "injection.rate: rho_r must be in (0, 1), got 0"),
    (["injection.rate=1.5"], "injection.rate: rho_r must be in (0, 1), got 1.5"),
    (["injection.rare=unicorn"], "injection.rare: unknown task 'unicorn'"),
    (["injection.schedule=weekly"], "injection.schedule: 'weekly' is not one of burst, iid, interval"),
    (["sweep.gaps=[0,12]"], "sweep.gaps: G must be >= 1, got 0"),
    (["train.steps=2000"], "train.steps: must be a multiple of every gap in sweep.gaps (lcm 36), got 2000"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, overrides, message):
    out = tmp_path / "out"
    r = cli("synth", "retention", PRESET, *overrides, "--out", out, "--no-progress")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not out.exists()


SMALL = """
[mixture]
dim = 16
[[mixture.tasks]]
name = "a"
frequency = 0.7
rank = 4
decay = 2.0
[[mixture.tasks]]
name = "b"
frequency = 0.3
rank = 2
[train]
steps = 240
batch_size = 32
lr = 0.02
schedule = "constant"
checkpoint_every = 24
device = "cpu"
[injection]
rare = "b"
rate = 0.05
[eval]
between = 1
cycles = 8
grad_batch = 16
[sweep]
gaps = [2, 12]
widths = [2, 5]
seeds = [0, 1]
"""


def _tables(out):
    return {name: pq.read_table(out / f"{name}.parquet") for name in ("trace", "cycles", "cosines", "final")}


def test_killed_run_resumes_to_identical_tables_and_skips_finished_gaps(cli, tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    assert cli("synth", "retention", cfg, "--out", tmp_path / "whole", "--no-progress").exit_code == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "raretask", "synth", "retention", str(cfg), "--out", str(out),
                             "--no-progress"], cwd=ROOT, env=ONE_THREAD, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = out / "groups" / "gap=12" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run never reached a checkpoint of its second gap before the kill"
    done = out / "groups" / "gap=2" / "final.parquet"
    stamp = done.stat().st_mtime_ns
    r = subprocess.run([sys.executable, "-m", "raretask", "synth", "retention", str(cfg), "--out", str(out),
                        "--no-progress"], cwd=ROOT, env=ONE_THREAD, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert done.stat().st_mtime_ns == stamp  # the finished gap was read back, not retrained
    whole, resumed = _tables(tmp_path / "whole"), _tables(out)
    for name in whole:
        assert whole[name].equals(resumed[name]), name
    assert not ckpt.exists()


def test_a_cell_does_not_depend_on_the_other_cells_of_its_sweep(cli, tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    assert cli("synth", "retention", cfg, "--out", tmp_path / "all", "--no-progress").exit_code == 0
    assert cli("synth", "retention", cfg, "sweep.seeds=[1]", "sweep.widths=[5]", "sweep.gaps=[12]", "--out",
               tmp_path / "one", "--no-progress").exit_code == 0
    full, one = (pq.read_table(tmp_path / d / "trace.parquet").to_pandas() for d in ("all", "one"))
    cell = full[(full.seed == 1) & (full.width == 5) & (full.gap == 12)].reset_index(drop=True)
    assert list(cell.step) == list(one.step) and list(cell.rare_seen) == list(one.rare_seen)
    np.testing.assert_allclose(cell.signal_rare, one.signal_rare, atol=1e-4)
