"""`raretask status DIR [--json]`: a real tiny synthetic sweep (finished; then one grid point's results removed and a
checkpoint in its place: running), the table and JSON of a hand-built LM sweep, and bad input (one line, exit 2)."""

from __future__ import annotations

import pytest
import torch

from tests.integration.conftest import summary
from tests.unit.report.test_status import FAILED, FINISHED, NOT_STARTED, RUNNING, write_sweep

TINY = """
[mixture]
dim = 8
zipf = 1.0
noise = 0.05
tasks_from = { count = 2, rank = 2, decay = 1.0 }
[train]
steps = 40
batch_size = 16
lr = 0.01
checkpoint_every = 20
device = "cpu"
threads = 1
[eval]
every = 20
[sweep]
widths = [1, 2]
seeds = [0]
"mixture.zipf" = [0.5, 1.5]
"""


def test_synthetic_sweep_finished_then_one_point_running(cli, tmp_path):
    cfg, out = tmp_path / "tiny.toml", tmp_path / "synth"
    cfg.write_text(TINY)
    assert cli("synth", "run", cfg, "--out", out, "--no-progress").exit_code == 0
    s = summary(cli("status", out, "--json"))
    assert s["kind"] == "synthetic" and s["dir"] == str(out)
    assert [(c["name"], c["state"], c["steps"], c["total"]) for c in s["cells"]] == [
        ("mixture.zipf=0.5", "finished", 40, 40), ("mixture.zipf=1.5", "finished", 40, 40)]
    assert s["counts"] == {"finished": 2, "running": 0, "queued": 0, "failed": 0, "not started": 0} and s["eta_s"] == 0

    group = out / "groups" / "mixture.zipf=1.5"
    (group / "results.parquet").unlink()
    torch.save({"step": 20, "elapsed": 3.0, "curves": []}, group / "checkpoint.pt")
    s = summary(cli("status", out, "--json"))
    assert s["cells"][1] == {"name": "mixture.zipf=1.5", "state": "running", "steps": 20, "total": 40,
                             "error": None, "eta_s": 3.0}  # 3 s for 20 steps, 20 to go
    assert s["counts"]["running"] == 1 and s["eta_s"] == 3.0
    table = cli("status", out)
    assert table.exit_code == 0 and "mixture.zipf=1.5" in table.stdout and "20/40" in table.stdout
    assert "1 finished, 1 running; ETA 3s" in table.stdout


def test_lm_sweep_table_and_json(cli, tmp_path):
    out = write_sweep(tmp_path)
    s = summary(cli("status", out, "--json"))
    assert [(c["name"], c["state"]) for c in s["cells"]] == [(FINISHED, "finished"), (RUNNING, "running"),
                                                             (FAILED, "failed"), (NOT_STARTED, "not started")]
    assert s["cells"][2]["error"].startswith("RuntimeError: CUDA out of memory")
    table = cli("status", out)
    assert table.exit_code == 0
    for text in (FINISHED, RUNNING, NOT_STARTED, "40/100", f"\n{FAILED}: RuntimeError: CUDA out of memory.",
                 "1 finished, 1 running, 1 failed, 1 not started; ETA 1m20s"):
        assert text in table.stdout, text


@pytest.mark.parametrize("make, message", [
    (lambda d: d.mkdir(), "error: {d}: not a raretask run directory (no meta.json)\n"),
    (lambda d: None, "error: {d}: no such directory\n"),
])
def test_no_run_is_one_line_exit_2(cli, tmp_path, make, message):
    d = tmp_path / "d"
    make(d)
    r = cli("status", d)
    assert r.exit_code == 2 and r.stderr == message.format(d=d) and r.stdout == ""
    assert cli("status", d, "--json").exit_code == 2
