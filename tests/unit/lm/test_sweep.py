"""LM sweeps without training: grid expansion, one-line config errors, finished cells skipped, combined tables, and
every figure from a synthetic metrics table."""

import json
import math

import numpy as np
import pytest

from raretask import runs
from raretask.config import ConfigError, load_config
from raretask.report import lm_figures as figures
from raretask.lm import sweep as sweep_mod
from raretask.lm.sweep import LMSweepConfig, expand_cells, run_sweep
from raretask.lm.train import LMResult, read_result

BASE = """
[data]
manifest = "corpus"
seq_len = 32
[model]
n_layers = 1
[[tasks]]
name = "cmp"
kind = "comparison"
seed = 3
[[tasks]]
name = "add"
kind = "modular_addition"
unit = "per_batch"
[train]
steps = 6
global_batch_seqs = 8
warmup = 2
[eval]
every = 3
"""


def sweep_cfg(tmp_path, grid: str, *overrides: str) -> LMSweepConfig:
    path = tmp_path / "sweep.toml"
    path.write_text(BASE + "[sweep]\n" + grid)
    return load_config(LMSweepConfig, path, list(overrides))


def test_grid_expands_to_the_product_with_one_config_per_cell(tmp_path):
    cfg = sweep_cfg(tmp_path, 'sizes = ["cpu-30k", "cpu-150k", "cpu-600k"]\nfrequencies = [1e-3, 2.4e-5]\n'
                              'seeds = [0, 7]\n')
    cells = expand_cells(cfg)
    assert len(cells) == 3 * 2 * 2 * 2  # sizes x tasks (one run each) x frequencies x seeds
    assert len({c.slug for c in cells}) == len(cells)
    c = next(c for c in cells if c.size == "cpu-150k" and c.tasks == ("cmp",) and c.frequency == 2.4e-5
             and c.seed == 7)
    assert c.slug == "cpu-150k_f2.4e-05_cmp_s7"
    assert (c.config.model.preset, c.config.model.n_layers, c.config.seed, c.config.model.init_seed) == \
        ("cpu-150k", 1, 7, 7)
    (task,) = c.config.tasks
    assert (task.name, task.kind, task.frequency, task.seed, str(task.schedule)) == \
        ("cmp", "comparison", 2.4e-5, 3, "iid")  # the [[tasks]] entry's own settings are kept
    add = next(c for c in cells if c.tasks == ("add",))
    assert (add.unit, str(add.config.tasks[0].unit)) == ("per_batch", "per_batch")
    assert cfg.base().tasks[0].frequency == 1e-3  # left out in [[tasks]]: the grid's first value


def test_tasks_together_gaps_and_task_kinds(tmp_path):
    together = expand_cells(sweep_cfg(tmp_path, 'sizes = ["cpu-30k"]\nfrequencies = [1.0]\ntasks_together = true\n'
                                                'gaps = [1, 10, 100]\n', "tasks[0].unit=per_batch"))
    assert len(together) == 3
    g = next(c for c in together if c.gap == 10)
    assert g.tasks == ("cmp", "add") and g.slug == "cpu-30k_f1_cmp+add_g10_s0"
    assert [(str(t.schedule), t.every, t.frequency) for t in g.config.tasks] == [("burst", 10, 1.0)] * 2
    kinds = expand_cells(sweep_cfg(tmp_path, 'sizes = ["cpu-30k"]\nfrequencies = [1e-3]\n'
                                             'tasks = ["modular_addition", "cmp"]\n'))
    assert [c.tasks for c in kinds] == [("modular_addition",), ("cmp",)]
    assert kinds[0].config.tasks[0].kind == "modular_addition"


def test_recipe_micro_batch_keeps_the_presets_tokens_per_micro_batch(tmp_path):
    cfg = sweep_cfg(tmp_path, 'sizes = ["20M", "1B"]\nfrequencies = [2.4e-5]\nmicro_batch = "preset"\n',
                    "data.seq_len=1024", "train.global_batch_seqs=1024")
    micro = {c.size: c.config.train.micro_batch_seqs for c in expand_cells(cfg)}
    assert micro == {"20M": 64, "1B": 8}  # recipe 16 and 2 sequences at context 4096 -> 4x at 1024
    assert sweep_mod._recipe_micro_batch("1B", 4096, 1024, world=8) == 2
    assert sweep_mod._recipe_micro_batch("4M", 512, 16, world=1) == 16  # capped by the rank's batch


def test_a_slurm_cell_on_g_gpus_is_sized_for_g_ranks_and_its_config_has_no_launcher(tmp_path):
    """Each of a Slurm cell's processes (one per GPU) trains its share of the batch: the recipe micro-batch is sized
    for that many ranks, as under torchrun; the launcher table stays with the sweep, out of the cells' configs."""
    grid = 'sizes = ["cpu-30k"]\nfrequencies = [1e-3]\ntasks = ["cmp"]\nmicro_batch = "preset"\n'
    local = sweep_cfg(tmp_path, grid, "train.global_batch_seqs=64")
    slurm = sweep_cfg(tmp_path, grid, "train.global_batch_seqs=64", "launcher.kind=slurm",
                      "launcher.gpus_per_node=4", "launcher.nodes=2", "launcher.partition=gpu")
    assert (local.ranks(), slurm.ranks()) == (1, 8)
    (a,), (b,) = expand_cells(local), expand_cells(slurm)
    assert (a.config.train.micro_batch_seqs, b.config.train.micro_batch_seqs) == (64, 8)  # capped by the rank's batch
    assert "launcher" not in b.config.to_toml() and "partition" not in b.config.to_toml()


@pytest.mark.parametrize("grid, message", [
    ('sizes = []\nfrequencies = [1e-3]\n', "sweep.sizes: empty"),
    ('sizes = ["cpu-30k"]\nfrequencies = []\n', "sweep.frequencies: empty"),
    ('sizes = ["cpu-30k", "7B"]\nfrequencies = [1e-3]\n', "sweep.sizes: unknown preset '7B'"),
    ('sizes = ["cpu-30k"]\nfrequencies = [1e-3, 0.0]\n', "sweep.frequencies: must be > 0, got 0.0"),
    ('sizes = ["cpu-30k"]\nfrequencies = [-1e-3]\n', "sweep.frequencies: must be > 0"),
    ('sizes = ["cpu-30k"]\nfrequencies = [0.5]\ntasks = ["cmp"]\n', "sweep.frequencies: 0.5 per token"),
    ('sizes = ["cpu-30k", "cpu-30k"]\nfrequencies = [1e-3]\n', "sweep.sizes: values repeat"),
    ('sizes = ["cpu-30k"]\nfrequencies = [1e-3]\ntasks = ["parity"]\n', "sweep.tasks[0]: 'parity' is neither"),
    ('sizes = ["cpu-30k"]\nfrequencies = [1e-3]\ngaps = [-1]\n', "sweep.gaps: must be >= 0"),
    ('sizes = ["cpu-30k"]\nfrequencies = [1e-3]\nseeds = []\n', "sweep.seeds: empty"),
    ('sizes = ["cpu-30k"]\nfrequencies = [1e-3, 0.0010000001]\n', "sweep: two cells have the same name"),
])
def test_bad_grids_are_one_line_errors(tmp_path, grid, message):
    with pytest.raises(ConfigError) as e:
        sweep_cfg(tmp_path, grid)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_cell_that_is_not_a_valid_run_names_the_cell(tmp_path):
    with pytest.raises(ConfigError, match=r"^sweep cell cpu-30k_f0.001_cmp_s0: model.n_heads"):
        sweep_cfg(tmp_path, 'sizes = ["cpu-30k"]\nfrequencies = [1e-3]\ntasks = ["cmp"]\n', "model.preset=cpu-600k",
                  "model.n_heads=16")  # fine for the base (d 96), not for cpu-30k (d 24)


# ------------------------------------------------------------------------------------------ running, without OLMo


def fake_train(calls):
    """Stands in for raretask.lm.train.train: writes a finished run directory with made-up metrics."""

    def train(cfg, out, *, progress=True, overwrite=False):
        calls.append(out.name)
        runs.prepare_run_dir(out, cfg.to_toml())
        n = {"cpu-30k": 30_000, "cpu-150k": 150_000}[cfg.model.preset]
        rows = [(s, t) for s in (0, 3, 6) for t in cfg.tasks]
        runs.write_table(out / "metrics.parquet", {
            "step": [s for s, _ in rows], "tokens_seen": [256 * s for s, _ in rows],
            "task": [t.name for _, t in rows], "kind": [t.kind for _, t in rows],
            "frequency": [t.frequency for _, t in rows],
            "train_loss": [8.0 - s * math.log10(n) / 10 for s, _ in rows],
            "test_acc_labels": [0.5 + s / 100 for s, _ in rows], "test_acc_vocab": [0.0] * len(rows),
            "test_loss": [7.0] * len(rows), "heldout_loss": [6.0 - s / 10 for s, _ in rows],
            "lm_loss": [None] + [6.0] * (len(rows) - 1)})
        meta = runs.RunMeta(out, kind="lm.train")
        meta.finish(params=n, non_embedding_params=n // 10, tokens=6 * 256)
        return read_result(out)

    return train


def test_finished_cells_are_read_back_and_unfinished_ones_trained(tmp_path, monkeypatch):
    calls, checked = [], []
    monkeypatch.setattr(sweep_mod, "train", fake_train(calls))
    monkeypatch.setattr(sweep_mod, "preflight", lambda cfg, cells, **kw: checked.append(len(cells)))  # no corpus here
    monkeypatch.setattr(runs, "git_commit", lambda: "test")  # fast RunMeta
    cfg = sweep_cfg(tmp_path, 'sizes = ["cpu-30k", "cpu-150k"]\nfrequencies = [1e-3, 1e-4]\ntasks = ["cmp"]\n')
    out = tmp_path / "sweep"
    first = run_sweep(cfg, out, progress=False)
    assert sorted(calls) == sorted(c.slug for c in expand_cells(cfg)) and len(calls) == 4
    again = run_sweep(cfg, out, progress=False)
    assert len(calls) == 4 and checked == [4]  # nothing retrained, nothing to check
    assert again.summary() == first.summary()

    meta_path = out / "cells" / "cpu-150k_f0.0001_cmp_s0" / "meta.json"  # as if killed mid-run
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "status": "running"}))
    run_sweep(cfg, out, progress=False)
    assert calls[4:] == ["cpu-150k_f0.0001_cmp_s0"] and checked == [4, 1]

    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "lm.sweep" and meta["status"] == "finished"
    res, cur = runs.read_table(out / "results.parquet"), runs.read_table(out / "curves.parquet")
    assert len(res["cell"]) == 4 and set(res["step"]) == {6} and len(cur["cell"]) == 12
    i = res["cell"].index("cpu-150k_f0.0001_cmp_s0")
    assert (res["size"][i], res["params"][i], res["grid_frequency"][i], res["gap"][i], res["task"][i]) == \
        ("cpu-150k", 150_000, 1e-4, 0, "cmp")
    assert res["compute"][i] == 6 * 150_000 * 6 * 256  # C = 6 N D
    with pytest.raises(ConfigError, match="holds a run of a different config"):
        run_sweep(sweep_cfg(tmp_path, 'sizes = ["cpu-30k"]\nfrequencies = [1e-3]\n'), out, progress=False)


def test_summary_has_one_entry_per_cell_and_task_and_no_nan(tmp_path):
    cfg = sweep_cfg(tmp_path, 'sizes = ["cpu-30k"]\nfrequencies = [1e-3]\ntasks_together = true\n')
    (cell,) = expand_cells(cfg)
    metrics = {"step": [0, 0, 6, 6], "tokens_seen": [0, 0, 60, 60], "task": ["cmp", "add"] * 2,
               "train_loss": [1.0, 2.0, float("nan"), 0.5], "heldout_loss": [5.0, 5.0, 4.0, 4.0]}
    results, curves = sweep_mod.combine([(cell, LMResult(tmp_path, cell.config, metrics, {"params": 10}))])
    s = sweep_mod.LMSweepResult(tmp_path, cfg, results, curves, [cell]).summary()
    assert [(r["task"], r["train_loss"], r["tasks"]) for r in s["results"]] == \
        [("cmp", None, "cmp+add"), ("add", 0.5, "cmp+add")]
    assert curves["compute"] == [0.0, 0.0, 3600.0, 3600.0]
    json.dumps(s, allow_nan=False)


# ---------------------------------------------------------------------------------------------------- figures


def synthetic_tables(sizes=("cpu-30k", "cpu-150k", "cpu-600k"), freqs=(1e-3, 1e-4), gaps=(0,), heldout=True,
                     tasks=("cmp", "add")):
    """Curves where larger models and higher frequencies learn faster, with a reference task."""
    rows = []
    for (k, size), f, gap, seed, task in ((a, b, c, d, e) for a in enumerate(sizes) for b in freqs for c in gaps
                                          for d in (0, 1) for e in tasks):
        n = 30_000 * 5 ** k
        for step in range(0, 1001, 100):
            rate = (k + 1) * f * 1e3 / (1 + gap / 10)
            rows.append({"cell": f"{size}_{f}_{gap}_{seed}", "size": size, "params": n, "grid_frequency": f,
                         "frequency": f, "unit": "per_token", "gap": gap, "seed": seed, "task": task,
                         "step": step, "tokens_seen": 512 * step, "compute": 6.0 * n * 512 * step,
                         "train_loss": 7.0 * math.exp(-rate * step / 500) + 0.1 + 0.01 * seed,
                         "test_loss": 7.0 * math.exp(-rate * step / 800) + 0.2,
                         "test_acc_labels": min(1.0, 0.5 + rate * step / 4000),
                         "heldout_loss": (6.0 - step / 400 / (k + 1)) if heldout else None,
                         "ref_cmp_loss": 5.0 - step / 500})
    curves = {k: [r[k] for r in rows] for k in rows[0]}
    last = [i for i, s in enumerate(curves["step"]) if s == 1000]
    results = {k: [v[i] for i in last] for k, v in curves.items()}
    return results, curves


def is_png(path):
    return path is not None and path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_from_a_synthetic_sweep(tmp_path):
    # three sizes: two of them reach 0.8 test accuracy inside the grid, which the f*(N) figure needs
    results, curves = synthetic_tables(gaps=(0, 1, 10), tasks=("cmp",))
    paths = figures.sweep_figures(results, curves, tmp_path)
    assert [p.name for p in paths] == list(figures.FIGURES) and all(is_png(p) for p in paths)
    one_run = {k: v for k, v in curves.items() if k not in ("cell", "size", "params", "gap", "grid_frequency")}
    assert is_png(figures.run_curves(one_run, tmp_path / "run.png"))


def test_figures_without_their_axis_are_skipped(tmp_path):
    results, curves = synthetic_tables(sizes=("cpu-30k",), freqs=(1e-3,), heldout=False)
    assert figures.fig5_heatmaps(results, tmp_path / "f5.png") is None  # one size, one frequency
    assert figures.fig6b_matched(curves, tmp_path / "f6b.png") is None  # no gaps
    assert figures.fig22_task_vs_lm(curves, tmp_path / "f22.png") is None  # no held-out loss
    assert figures.fig23_compute(curves, tmp_path / "f23.png") is None  # one size
    assert not any(tmp_path.iterdir())
    (tmp_path / "fig23_compute.png").write_bytes(b"old")  # a stale figure of an earlier drawing goes
    assert [p.name for p in figures.sweep_figures(results, curves, tmp_path)] == ["fig6a_task_loss.png"]
    assert not (tmp_path / "fig23_compute.png").exists()


def test_frontier_is_the_best_loss_within_each_compute_budget():
    small = (np.array([1.0, 10.0, 100.0]), np.array([4.0, 2.0, 1.5]))
    large = (np.array([10.0, 100.0, 1000.0]), np.array([3.0, 1.0, 1.2]))
    c, y = figures.lower_envelope([small, large], points=4)  # grid 1, 10, 100, 1000
    np.testing.assert_allclose(c, [1.0, 10.0, 100.0, 1000.0])
    np.testing.assert_allclose(y, [4.0, 2.0, 1.0, 1.0])  # min over sizes, never rising with more budget
    c, y = figures.lower_envelope([(np.array([1.0, 100.0]), np.array([3.0, 1.0]))], points=3)
    np.testing.assert_allclose(y, [3.0, 2.0, 1.0])  # interpolated in log C
