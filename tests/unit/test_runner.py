"""raretask.runner: jobs side by side, a failed job reports its error line and the others finish, prerequisites
wait, finished runs are not started again, and a job name with a slash gets its log in a subfolder."""

from __future__ import annotations

import json

import pytest

from raretask.runner import Job, Plan, last_error_line, run_jobs


def test_jobs_run_report_their_errors_and_skip_what_needs_a_failed_one(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    (done / "meta.json").write_text(json.dumps({"status": "finished"}))
    jobs = [Job("ok", ["--version"], tmp_path / "ok"),
            Job("lm/corpus", ["theory", "nowhere.toml"], tmp_path / "corpus"),  # exits 2 with one line
            Job("after", ["--version"], tmp_path / "after", after=("lm/corpus",)),
            Job("done", ["--version"], done)]
    results = run_jobs(jobs, Plan(workers=2, threads=1, free=2), logs=tmp_path / "logs", progress=False)
    assert {n: r.status for n, r in results.items()} == {"ok": "finished", "lm/corpus": "failed",
                                                        "after": "skipped", "done": "done before"}
    assert results["lm/corpus"].error.startswith("error: config file not found: nowhere.toml")
    assert (tmp_path / "logs" / "lm" / "corpus.log").is_file() and (tmp_path / "logs" / "ok.log").is_file()


def test_a_plan_never_puts_more_threads_than_idle_cores():
    for free in (1, 2, 3, 8):
        for jobs in (1, 2, 5, 20):
            p = Plan.for_machine(jobs, cores=free)
            assert p.workers * p.threads <= free and p.workers <= jobs and p.workers >= 1


def test_unknown_prerequisites_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown prerequisites x"):
        run_jobs([Job("a", ["--version"], tmp_path / "a", after=("x",))], Plan(1, 1, 1), logs=tmp_path, progress=False)


def test_the_error_line_is_the_last_error_not_the_last_line():
    assert last_error_line("warming up\nerror: train.lr: must be > 0, got 0\n\n") == "error: train.lr: must be > 0, got 0"
    assert last_error_line("Traceback\n  File x\nValueError: bad\n") == "ValueError: bad"
    assert last_error_line("") == "(no output)"


def test_one_cell_runs_as_run_jobs_runs_it_and_a_killed_one_says_so(tmp_path):
    """run_cell (what a Slurm job runs): the same command and log; a finished run is not started again; a process
    killed by a signal gets an error line saying so, which is what `raretask status` shows."""
    from raretask.runner import run_cell

    ok = run_cell(Job("ok", ["--version"], tmp_path / "ok"), threads=1, logs=tmp_path / "logs")
    assert ok.status == "finished" and "raretask" in (tmp_path / "logs" / "ok.log").read_text()
    killed = run_cell(Job("killed", ["--version"], tmp_path / "killed"), threads=1, logs=tmp_path / "logs",
                      on_start=lambda proc: proc.kill())
    assert killed.status == "failed" and killed.error == ("error: killed by SIGKILL: run the same command again "
                                                          "to resume from the last checkpoint")
    done = tmp_path / "done"
    done.mkdir()
    (done / "results.parquet").write_text("")
    assert run_cell(Job("done", ["nowhere"], done, marker="results.parquet"), threads=1, logs=tmp_path).status == \
        "done before"
