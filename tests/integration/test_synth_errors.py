"""Bad input: one line naming the field, exit status 2, nothing written to --out."""

import tomllib

import numpy as np
import pytest

GOOD = """
[mixture]
dim = 8
[[mixture.tasks]]
name = "a"
frequency = 0.7
rank = 2
[[mixture.tasks]]
name = "b"
frequency = 0.3
{b}
[train]
steps = 10
[sweep]
widths = [1, 2]
"""


def write(tmp_path, b="rank = 1", extra=""):
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace("{b}", b) + extra)
    return path


CASES = {
    "frequencies": ("rank = 1", ["mixture.tasks[1].frequency=0.4"], "mixture.tasks: frequencies sum to 1.1"),
    "negative-eigenvalue": ("eigenvalues = [1.0, -0.3]", [], "mixture.tasks[1].eigenvalues[1]"),
    "width": ("rank = 1", ["sweep.widths=[1,64]"], "sweep.widths: width 64"),
    "unknown-key": ("rank = 1", ["train.lrr=0.1"], "train.lrr: unknown key"),
    "unknown-key-in-file": ("rank = 1\ncolour = 'red'", [], "mixture.tasks[1].colour: unknown key"),
    "missing-npy": ("covariance = 'nope.npy'", [], "mixture.tasks[1].covariance: file not found"),
    "asymmetric": ("covariance = 'asym.npy'", [], "mixture.tasks[1].covariance: matrix is not symmetric"),
    "bad-enum": ("rank = 1", ["train.optimizer=lion"], "train.optimizer: 'lion' is not one of"),
    "bad-type": ("rank = 1", ["train.steps=ten"], "train.steps: expected an integer"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, case):
    task_b, overrides, message = CASES[case]
    asym = np.eye(8)
    asym[0, 1] = 0.5
    np.save(tmp_path / "asym.npy", asym)
    out = tmp_path / "out"
    r = cli("synth", "run", write(tmp_path, task_b), *overrides, "--out", out, "--no-progress")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert not out.exists()


def test_theory_rejects_bad_widths(cli, tmp_path):
    r = cli("theory", write(tmp_path), "--widths", "1,99")
    assert r.exit_code == 2 and "--widths: width 99" in r.stderr


def test_missing_config_file(cli, tmp_path):
    r = cli("synth", "run", tmp_path / "none.toml", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "config file not found" in r.stderr
    assert not (tmp_path / "o").exists()


def test_other_config_in_out_dir_is_refused(cli, tmp_path):
    out = tmp_path / "o"
    assert cli("synth", "run", write(tmp_path), "--out", out, "--no-progress").exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    r = cli("synth", "run", write(tmp_path), "train.lr=0.5", "--out", out, "--no-progress")
    assert r.exit_code == 2 and "holds a run of a different config" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == before


def test_dry_run_prints_resolved_config_and_writes_nothing(cli, tmp_path):
    r = cli("synth", "run", write(tmp_path), "train.lr=3e-3", "sweep.widths=[1,2,4]", "--dry-run", "--out",
            tmp_path / "o")
    assert r.exit_code == 0
    resolved = tomllib.loads(r.stdout)
    assert resolved["train"]["lr"] == 0.003 and resolved["sweep"]["widths"] == [1, 2, 4]
    assert resolved["mixture"]["tasks"][1]["name"] == "b"
    assert not (tmp_path / "o").exists()


def test_overwrite_refuses_a_folder_raretask_did_not_make(cli, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    r = cli("synth", "run", write(tmp_path), "--out", out, "--overwrite", "--no-progress")
    assert r.exit_code == 2 and "refusing to delete" in r.stderr
    assert (out / "thesis.tex").read_text() == "years of work"
