"""`raretask synth toy` and `raretask synth interference` end to end: tables, figures, report, resume, bad input."""

import pyarrow.parquet as pq
import pytest

from raretask.synthetic.train import SweepTrainer

from .conftest import ROOT, summary

TOY = ROOT / "configs" / "synthetic" / "toy.toml"
SMALL_TOY = ["forget.steps=300", "forget.gap=100", "competition.steps=600", "competition.every=50", "seeds=[0,1,2]"]

MIXTURE = """
[mixture]
dim = 12
zipf = 1.5
[[mixture.tasks]]
name = "common"
rank = 3
[[mixture.tasks]]
name = "mid"
rank = 2
[[mixture.tasks]]
name = "rare"
rank = 1
scale = 2.0
[train]
steps = 80
batch_size = 32
lr = 0.02
warmup = 10
checkpoint_every = 20
device = "cpu"
[eval]
every = 20
[sweep]
widths = [1, 2, 6]
seeds = [0, 1]
"""


@pytest.fixture
def mixture(tmp_path):
    path = tmp_path / "i.toml"
    path.write_text(MIXTURE)
    return path


def test_toy_preset_reproduces_example_7_and_fig_11(cli, tmp_path):
    out = tmp_path / "toy"
    s = summary(cli("synth", "toy", TOY, *SMALL_TOY, "--out", out, "--json", "--no-progress"))
    for entry in s["decay"]:
        if entry["lr"] <= 0.01:
            assert abs(entry["relative_error"]) < 0.05
    by_width = {e["width"]: e for e in s["competition"]}
    assert by_width[1]["rare_alignment_max"] < 0.05 and by_width[2]["rare_alignment_min"] > 0.9
    for name in ["decay", "gaps", "traces", "competition", "neurons"]:
        assert pq.read_table(out / f"{name}.parquet").num_rows > 0
    assert cli("report", out).exit_code == 0
    page = (out / "report.html").read_text()
    assert "Example 7" in page and "fig11.png" in page and "forget.png" in page


def test_interference_run_tables_report_and_exact_resume(cli, tmp_path, mixture, monkeypatch):
    full = summary(cli("synth", "interference", mixture, "--out", tmp_path / "full", "--json", "--no-progress"))
    assert full["rare"] == "rare" and full["frequent_set"] == ["common", "mid"]
    assert [f["width"] for f in full["final"]] == [1, 2, 6]
    table = pq.read_table(tmp_path / "full" / "interference.parquet").to_pydict()
    assert sorted(set(table["step"])) == [0, 20, 40, 60, 80]
    assert all(r == 1.0 for r, st in zip(table["frequent_norm_ratio"], table["step"]) if st == 0)
    cos = pq.read_table(tmp_path / "full" / "cosines.parquet").to_pydict()
    assert len(cos["cosine"]) == 5 * 2 * 3 * 9  # steps x seeds x widths x task pairs
    assert cli("report", tmp_path / "full").exit_code == 0
    assert "Gradient interference" in (tmp_path / "full" / "report.html").read_text()

    # killed after 50 steps (a checkpoint at 40), then the same command: the same numbers
    original, calls = SweepTrainer.step, []

    def dying_step(self, *a, **k):
        calls.append(1)
        if len(calls) == 51:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(SweepTrainer, "step", dying_step)
    r = cli("synth", "interference", mixture, "--out", tmp_path / "killed", "--no-progress")
    assert r.exit_code == 130 and (tmp_path / "killed" / "checkpoint.pt").is_file()
    monkeypatch.setattr(SweepTrainer, "step", original)
    resumed = summary(cli("synth", "interference", mixture, "--out", tmp_path / "killed", "--json", "--no-progress"))
    assert resumed["final"] == full["final"]
    assert pq.read_table(tmp_path / "killed" / "interference.parquet").to_pydict() == table
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()


def test_interference_saves_the_final_encoder_it_measured(cli, tmp_path, mixture):
    """interference.save_encoder writes every cell's final W to DIR/encoder.pt; the rare signal and the residual
    recomputed from it are the last logged ones, and saving changes no table."""
    import torch

    from raretask import theory
    from raretask.config import load_config
    from raretask.synthetic.interference import InterferenceConfig

    assert cli("synth", "interference", mixture, "--out", tmp_path / "off", "--no-progress").exit_code == 0
    assert not (tmp_path / "off" / "encoder.pt").exists()
    on = ["interference.save_encoder=true"]
    assert cli("synth", "interference", mixture, *on, "--out", tmp_path / "on", "--no-progress").exit_code == 0
    table = pq.read_table(tmp_path / "on" / "interference.parquet").to_pydict()
    assert table == pq.read_table(tmp_path / "off" / "interference.parquet").to_pydict()
    saved = torch.load(tmp_path / "on" / "encoder.pt", weights_only=True)
    assert (saved["step"], saved["seeds"], saved["widths"]) == (80, [0, 1], [1, 2, 6])
    mix, F, r = load_config(InterferenceConfig, mixture, on).probe()
    M_F = mix.mixture_covariance(F)
    for s, seed in enumerate(saved["seeds"]):
        for c, width in enumerate(saved["widths"]):
            U = theory.row_space_basis(saved["encoders"][s][c].double().numpy())
            (i,) = [i for i, (st, sd, w) in enumerate(zip(table["step"], table["seed"], table["width"]))
                    if (st, sd, w) == (80, seed, width)]
            assert table["rare_signal"][i] == pytest.approx(theory.signal(mix.covariance(r), U), rel=1e-9)
            assert table["residual"][i] == pytest.approx(theory.residual(M_F, U), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("command, overrides, message", [
    ("toy", ["frequency=1.5"], "error: frequency: must be in (0.5, 1)"),
    ("toy", ["competition.widths=[1,1]"], "error: competition.widths: need distinct widths"),
    ("interference", ["interference.rare=nope"], "error: interference.rare: no task named 'nope'"),
    ("interference", ["sweep.mixture.zipf=[1.0,2.0]"], "error: sweep.mixture.zipf: the interference analysis trains"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, mixture, command, overrides, message):
    config = TOY if command == "toy" else mixture
    out = tmp_path / "out"
    r = cli("synth", command, config, *overrides, "--out", out, "--no-progress")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr
    assert not out.exists()
