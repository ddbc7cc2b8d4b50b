"""`raretask lm sweep --launcher slurm` on the tiny corpus: a cell trained as a job (submitit's local executor: the
job's processes on this machine, as sbatch would run them) gives the tables of the in-process sweep; the sbatch
script of a multi-GPU cell asks for what the [launcher] table says, one process per GPU; bad input is one line."""

import json

import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import summary
from tests.integration.lm.test_lm_sweep import CONFIG, corpus  # noqa: F401 (the tiny corpus fixture)

ONE_CELL = 'sweep.sizes=["cpu-30k"]'
CELL = "cpu-30k_f0.01_cmp_s0"


@pytest.fixture
def config(tmp_path, corpus):  # noqa: F811
    path = tmp_path / "sweep.toml"
    path.write_text(CONFIG.format(manifest=corpus))
    return path


def test_a_cell_trained_as_a_job_gives_the_tables_of_one_process(cli, config, tmp_path):
    from raretask.config import load_config
    from raretask.lm.sweep import LMSweepConfig, run_sweep

    here = run_sweep(load_config(LMSweepConfig, config, [ONE_CELL]), tmp_path / "here", progress=False).summary()
    out = tmp_path / "jobs"
    jobs = summary(cli("lm", "sweep", config, ONE_CELL, "--out", out, "--launcher", "slurm", "launcher.cluster=local",
                       "launcher.cpus_per_task=1", "--wait", "--json", "--no-progress"))
    assert [r["cell"] for r in jobs["results"]] == [r["cell"] for r in here["results"]] == [CELL]
    for name in ("results.parquet", "curves.parquet"):
        a, b = pq.read_table(tmp_path / "here" / name), pq.read_table(out / name)
        assert a.column_names == b.column_names and a.num_rows == b.num_rows
        for col in a.column_names:
            x, y = a.column(col).to_pylist(), b.column(col).to_pylist()
            if all(isinstance(v, float) for v in x):
                assert y == pytest.approx(x, rel=1e-6, abs=1e-9), (name, col)
            else:
                assert x == y, (name, col)
    assert json.loads((out / "jobs.json").read_text())["cells"].keys() == {CELL}
    assert "held-out loss" in (out / "logs" / f"{CELL}.log").read_text()  # the cell's own `lm train` output
    assert json.loads((out / "meta.json").read_text())["status"] == "finished" and list(out.glob("fig*.png"))
    again = cli("lm", "sweep", config, ONE_CELL, "--out", out, "--launcher", "slurm", "launcher.cluster=local",
                "--dry-run")
    assert again.exit_code == 0 and again.stdout.startswith("# every cell")  # resubmitting: nothing left to run


def test_dry_run_asks_for_one_process_per_gpu_over_the_nodes(cli, config, tmp_path):
    out = tmp_path / "never"
    r = cli("lm", "sweep", config, "--out", out, "--launcher", "slurm", "--dry-run", "launcher.gpus_per_node=4",
            "launcher.nodes=2", "launcher.time=720", "launcher.partition=gpu", "launcher.account=lab",
            'sweep.micro_batch="preset"')
    assert r.exit_code == 0, r.stderr
    lines = set(r.stdout.splitlines())
    assert {"#SBATCH --gpus-per-node=4", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --time=720",
            "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --array=0-1%2"} <= lines
    assert not out.exists()


def test_more_gpus_per_cell_than_its_nodes_have_is_one_line(cli, config, tmp_path):
    out = tmp_path / "never"
    r = cli("lm", "sweep", config, "--out", out, "--launcher", "slurm", "launcher.gpus_per_node=8",
            "launcher.nodes=2", "launcher.gpus=32", "--dry-run")
    assert r.exit_code == 2 and not out.exists()
    assert r.stderr.splitlines() == ["error: launcher.gpus: a cell asks for 32 GPUs, more than launcher.gpus_per_node "
                                     "x launcher.nodes = 8 x 2 = 16"]
