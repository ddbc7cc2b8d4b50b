"""`raretask advise SWEEP_DIR` on a small fabricated LM sweep directory (the files raretask.lm.sweep writes:
meta.json of kind lm.sweep, config.toml, results.parquet, each cell's meta.json with natural_occurrences, and the
corpus manifest the config names), `--budget`, bad input, and the synthetic `--scaling-law` view against a trained
sweep."""

from __future__ import annotations

import math

import pytest

from raretask import runs
from raretask.synthetic.train import SynthConfig, run
from tests.unit.lm.test_advise_sweep import A, GAMMA, SIZES, TOKENS, results_table

from .conftest import summary

NATURAL, CORPUS_TOKENS = 40, 4_000_000  # instances of the task already in the corpus, its training tokens


def write_sweep(root, sizes=SIZES, noise=0.02):
    """A finished sweep directory of `results_table` (three seeds, ten frequencies per size)."""
    out = root / "sweep"
    res = results_table(sizes, noise=noise)
    runs.write_table(out / "results.parquet", res)
    runs.write_json(root / "corpus" / "manifest.json", {"files": {"train": {"tokens": CORPUS_TOKENS}}})
    runs.write_text(out / "config.toml", f'[data]\nmanifest = "{root / "corpus"}"\n\n[model]\narch = "olmo_0724"\n')
    runs.write_json(out / "meta.json", {"kind": "lm.sweep", "status": "finished", "sizes": list(sizes),
                                        "cells": sorted(set(res["cell"]))})
    for cell in set(res["cell"]):
        runs.write_json(out / "cells" / cell / "meta.json", {"kind": "lm.train", "status": "finished",
                        "natural_occurrences": {"comparison": {"train": NATURAL - 10, "test": 10, "pairs": 99}}})
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("advise"))


def ask(cli, *args) -> dict:
    return summary(cli("advise", *args, "--json"))


def test_three_questions_and_their_json(cli, sweep):
    a = ask(cli, sweep, "--task", "comparison")
    assert list(a) == ["task", "question", "answer", "interval", "extrapolated", "evidence"]
    assert a["question"] == "exponent" and abs(a["answer"] - GAMMA) < 0.1
    assert a["interval"][0] < GAMMA < a["interval"][1] and a["extrapolated"] is False
    assert [h["size"] for h in a["evidence"]["leave_one_out"]] == list(SIZES)
    f = ask(cli, sweep, "--task", "comparison", "--size", "s3")
    assert f["question"] == "frequency" and f["answer"] == pytest.approx(A * SIZES["s3"] ** -GAMMA, rel=0.15)
    natural = NATURAL / CORPUS_TOKENS
    assert f["evidence"]["natural_rate"] == pytest.approx(natural)
    assert f["evidence"]["upsample"] == pytest.approx(f["answer"] / natural)
    n = ask(cli, sweep, "--task", "comparison", "--frequency", "1e-5", "--target-acc", "0.7")
    assert n["question"] == "size" and n["extrapolated"] is True and "extrapolates" in n["evidence"]["warning"]
    assert n["evidence"]["target_accuracy"] == 0.7 and isinstance(n["answer"], int)
    # at 0.7 every threshold moves down by e^-1 (accuracy slope 0.1 per e-fold): N(f) moves up by e^(1/gamma)
    assert n["answer"] == pytest.approx((A * math.exp(-1) / 1e-5) ** (1 / GAMMA), rel=0.5)


def test_text_answer_and_budget(cli, sweep):
    r = cli("advise", sweep, "--task", "comparison", "--size", "1e8", "--budget", "--device", "a100", "--mfu", "0.5")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "held out (fit on the other sizes): s1 predicted" in out and "warning: N = 1e+08 is outside" in out
    assert "upsample x" in out and "budget: C = 6 N D = 6 x 100,000,000 (non-embedding" in out
    b = ask(cli, sweep, "--task", "comparison", "--size", "s2", "--budget")["evidence"]["budget"]
    assert (b["device"], b["mfu"], b["tokens"]) == ("h100", 0.4, TOKENS)
    assert b["hours"] == pytest.approx(6 * 3 * SIZES["s2"] * TOKENS / (989.5e12 * 0.4) / 3600)


@pytest.mark.parametrize("args,field", [
    (["--task", "nope"], "--task"), (["--task", "comparison", "--target-acc", "1.5"], "--target-acc"),
    (["--task", "comparison", "--target-acc", "0"], "--target-acc"),
    (["--task", "comparison", "--frequency", "0"], "--frequency"),
    (["--task", "comparison", "--frequency", "-1e-3"], "--frequency"),
    (["--task", "comparison", "--width", "3"], "--width"), (["--task", "comparison", "--scaling-law"], "--scaling-law"),
    (["model.arch=olmo2", "--task", "comparison"], "overrides"), (["--task", "comparison", "--size", "big"], "--size"),
    (["--task", "comparison", "--size", "s1", "--budget", "--device", "tpu"], "--device"),
    (["--task", "comparison", "--budget"], "--budget"), (["--task", "comparison", "--mfu", "0.5"], "--mfu"),
    (["--frequency", "1e-3"], "--task")])
def test_bad_input_is_one_line(cli, sweep, args, field):
    r = cli("advise", sweep, *args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: {field}:"), r.stderr


def test_a_sweep_of_one_size_and_a_folder_that_is_no_sweep(cli, tmp_path):
    one = write_sweep(tmp_path, {"s1": 1e4})
    r = cli("advise", one, "--task", "comparison")
    assert r.exit_code == 2 and r.stderr.startswith("error: --task:") and "needs >= 2" in r.stderr
    r = cli("advise", tmp_path / "corpus", "--task", "comparison")
    assert r.exit_code == 2 and "not an LM sweep directory" in r.stderr and r.stderr.count("\n") == 1


def test_lm_flags_on_a_synthetic_config_are_refused(cli, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[mixture]\ndim = 4\nplacement = "orthogonal"\nzipf = 2.0\ntasks_from = { count = 3, rank = 1 }\n'
                    '[sweep]\nwidths = [1, 2, 3]\n')
    for flag_args, field in [(["--frequency", "1e-3"], "--frequency"), (["--budget"], "--budget"),
                             (["--target-acc", "0.8"], "--target-acc"), ([], "--task")]:
        r = cli("advise", path, *flag_args)
        assert r.exit_code == 2 and r.stderr.startswith(f"error: {field}:"), r.stderr


# ------------------------------------------------------------------------------------------ synthetic scaling law

# Eight rank-1 tasks, pi_k ~ k^-2 (Sec. 2: L*(N) ~ N^-(beta - 1) as K grows), dim 8, widths 1..6. Measured: the
# trained mixture loss is within 2.5% of the optimum's at every width, its exponent 1.431 against 1.441 (3 s).
SCALING = {"mixture": {"dim": 8, "placement": "orthogonal", "zipf": 2.0, "tasks_from": {"count": 8, "rank": 1}},
           "train": {"steps": 1000, "batch_size": 256, "lr": 0.01, "warmup": 100, "device": "cpu", "threads": 1},
           "eval": {"every": 1000}, "sweep": {"widths": [1, 2, 3, 4, 5, 6], "seeds": [0]}}


def test_scaling_law_predicted_and_fitted_on_a_trained_sweep(cli, tmp_path):
    cfg = SynthConfig.from_dict(SCALING)
    path = tmp_path / "scaling.toml"
    path.write_text(cfg.to_toml())
    alone = ask(cli, path, "--scaling-law")
    assert (alone["task"], alone["question"], alone["answer"]) == (None, "scaling_law", 1.0)
    e = alone["evidence"]
    assert e["zipf"] == 2.0 and e["widths"] == [1, 2, 3, 4, 5, 6] and e["trained_exponent"] is None
    # the finite mixture's optimum falls faster than the K -> infinity law: its tail runs out at N = 8
    assert e["closed_form_exponent"] > 1.0 and len(e["scaling_law_loss"]) == 6
    run(cfg, tmp_path / "run", progress=False)
    trained = ask(cli, path, "--scaling-law", tmp_path / "run")["evidence"]
    assert trained["trained_exponent"] == pytest.approx(e["closed_form_exponent"], rel=0.05)
    assert trained["trained_loss"] == pytest.approx(e["closed_form_loss"], rel=0.1)
    text = cli("advise", path, "--scaling-law", tmp_path / "run").stdout
    assert "predicted loss exponent beta - 1 = 1" in text and "trained mixture loss" in text
    other = tmp_path / "other.toml"
    other.write_text(SynthConfig.from_dict({**SCALING, "mixture": {**SCALING["mixture"], "zipf": 1.5}}).to_toml())
    r = cli("advise", other, "--scaling-law", tmp_path / "run")
    assert r.exit_code == 2 and "trained on another mixture" in r.stderr
    r = cli("advise", path, "--scaling-law", "mixture.zipf=1.5")  # an override after the flag is taken as RUN_DIR
    assert r.exit_code == 2 and r.stderr.startswith("error: --scaling-law:") and "overrides go before" in r.stderr
