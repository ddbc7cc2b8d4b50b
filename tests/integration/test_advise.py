"""`raretask advise` against training: the predicted smallest width of every task, and the predicted smallest
frequency at a fixed width (applied by reweighting the mixture), on three small orthogonal mixtures.

"Learned" (a task's first feature): the top-direction signal f_k = s_k Tr(C_k) / lambda_k1 > 0.5, with s_k the
results.parquet `signal` column (Tr(P_W C_k) / Tr(C_k), P_W from the trained encoder's SVD). f_k is the variance of
task k inside the encoder's span in units of its top direction's variance lambda_k1: 0 when the optimum keeps none of
its features, >= 1 when it keeps the first. Measured (2000 steps, batch 256, lr 0.01, seed 0): every task's smallest
learned width equals the prediction exactly, f_k in {0.00, >= 0.98} at every width; at 0.8x / 0.9x the predicted
frequency f_k <= 0.006, at 1.1x / 1.2x f_k >= 0.98.
"""

from __future__ import annotations

import pytest

from raretask import advise
from raretask.synthetic.train import SynthConfig, run

from .conftest import summary

# (name, frequency, spectrum). Sorted utilities are >= 33% apart, so every width has one clear optimum.
MIXTURES = {
    # utilities: freq#1 .8 > freq#2 .4 > rare#1 .3 > freq#3 .2 > rare#2 .12
    "two": [("freq", 0.8, [1.0, 0.5, 0.25]), ("rare", 0.2, [1.5, 0.6])],
    # a#1 .6 > b#1 .36 > c#1 .25 > a#2 .18 > b#2 .12
    "three": [("a", 0.6, [1.0, 0.3]), ("b", 0.3, [1.2, 0.4]), ("c", 0.1, [2.5])],
    # t0#1 .5 > t2#1 .3 > t1#1 .2 > t0#2 .15 > t3#1 .1 > t2#2 .075
    "four": [("t0", 0.5, [1.0, 0.3]), ("t1", 0.25, [0.8]), ("t2", 0.15, [2.0, 0.5]), ("t3", 0.1, [1.0])],
}
# the frequency question: (task, width) where the config's frequency is too low for that width
FREQUENCY = {"two": ("rare", 2), "three": ("c", 2), "four": ("t3", 3)}
DIM, WIDTHS, STEPS = 8, [1, 2, 3, 4, 5, 6], 2000


def config(tasks, widths, frequencies=None) -> SynthConfig:
    return SynthConfig.from_dict({
        "mixture": {"dim": DIM, "placement": "orthogonal", "tasks": [
            {"name": n, "frequency": float(f if frequencies is None else frequencies[i]), "eigenvalues": lam}
            for i, (n, f, lam) in enumerate(tasks)]},
        "train": {"steps": STEPS, "batch_size": 256, "lr": 0.01, "warmup": 100, "device": "cpu", "threads": 1},
        "eval": {"every": STEPS}, "sweep": {"widths": widths, "seeds": [0]}})


def write_toml(path, tasks):
    lines = [f"[mixture]\ndim = {DIM}\nplacement = \"orthogonal\"\n", f"[sweep]\nwidths = {WIDTHS}\n"]
    for n, f, lam in tasks:
        lines.append(f"[[mixture.tasks]]\nname = \"{n}\"\nfrequency = {f}\neigenvalues = {lam}\n")
    path.write_text("\n".join(lines))
    return path


def top_signal(results, mixture, task: str) -> dict[int, float]:
    """width -> f_k = s_k Tr(C_k) / lambda_k1 (seed 0)."""
    k = mixture.names.index(task)
    return {w: s * float(mixture.traces[k] / mixture.eigenvalues[k][0])
            for w, t, s in zip(results["width"], results["task"], results["signal"]) if t == task}


def ask(cli, path, *args) -> dict:
    return summary(cli("advise", path, *args, "--json"))


@pytest.mark.parametrize("name", list(MIXTURES))
def test_predicted_width_and_frequency_hold_in_training(name, cli, tmp_path):
    tasks = MIXTURES[name]
    path = write_toml(tmp_path / f"{name}.toml", tasks)
    cfg = config(tasks, WIDTHS)
    mixture = cfg.mixture.build()
    # (a) smallest width: predicted (the command) vs the smallest trained width with f_k > 0.5
    trained = run(cfg, tmp_path / "widths", progress=False).results
    for task, _, _ in tasks:
        predicted = ask(cli, path, "--task", task)["answer"]
        f = top_signal(trained, mixture, task)
        learned = [w for w in WIDTHS if f[w] > 0.5]
        assert learned, f"{name}/{task}: never learned in the sweep {f}"
        assert abs(min(learned) - predicted) <= 1, f"{name}/{task}: predicted {predicted}, trained {f}"
    # (b) smallest frequency at a fixed width, applied by reweighting as the command does
    task, width = FREQUENCY[name]
    k = mixture.names.index(task)
    a = ask(cli, path, "--task", task, "--width", width)
    assert a["evidence"]["upsample"] > 1.0  # the config's frequency is too low at this width
    for mult, learned in [(1.2, True), (0.8, False)]:
        freqs = advise.reweighted(mixture.frequencies, k, mult * a["answer"])
        res = run(config(tasks, [width], freqs), tmp_path / f"x{mult}", progress=False).results
        f = top_signal(res, mixture, task)[width]
        assert (f > 0.5) is learned, f"{name}/{task} at {mult} x pi* = {mult * a['answer']:.4g}: f = {f:.3f}"


def test_advise_json_schema_and_text(cli, tmp_path):
    path = write_toml(tmp_path / "two.toml", MIXTURES["two"])
    a = ask(cli, path, "--task", "rare")
    assert list(a) == ["task", "question", "answer", "interval", "extrapolated", "evidence"]
    assert (a["task"], a["question"], a["answer"], a["interval"], a["extrapolated"]) == ("rare", "width", 3, None,
                                                                                       False)
    f = ask(cli, path, "--task", "rare", "--width", "2")
    # rare#1 (1.5 pi) ties freq#2 (0.5 (1 - pi) / 0.8) at pi = 0.25; the tie goes to freq (earlier task)
    assert f["question"] == "frequency" and f["answer"] == pytest.approx(0.25, rel=1e-12)
    assert f["evidence"]["competitor"] == {"task": "freq", "index": 2, "utility": 0.4,
                                           "utility_at_answer": pytest.approx(0.375)}
    assert f["evidence"]["upsample"] == pytest.approx(1.25) and f["evidence"]["config_frequency"] == 0.2
    assert f["evidence"]["attained"] is False
    # freq keeps 0.75 / 1.75 = 0.43 of its loss after one feature, 0.25 / 1.75 = 0.14 after two (freq#2 is 2nd)
    assert ask(cli, path, "--task", "freq", "--target-loss", "0.2")["answer"] == 2
    assert ask(cli, path, "--task", "rare", "--features", "2")["answer"] == 5  # rare#2 .12 is last
    # overrides apply: at pi = (0.5, 0.5) the order is rare#1 .75, freq#1 .5, rare#2 .3, ...
    assert ask(cli, path, "mixture.tasks[0].frequency=0.5", "mixture.tasks[1].frequency=0.5", "--task", "rare",
               "--features", "2")["answer"] == 3
    text = cli("advise", path, "--task", "rare", "--width", "2")
    assert text.exit_code == 0 and "upsample x1.25" in text.stdout and "freq#2" in text.stdout


@pytest.mark.parametrize("args,field", [
    (["--task", "nope"], "--task"), (["--task", "rare", "--width", "0"], "--width"),
    (["--task", "rare", "--width", "9"], "--width"), (["--task", "rare", "--target-loss", "1"], "--target-loss"),
    (["--task", "rare", "--features", "3"], "--features"), (["--task", "rare", "mixture.placement=random"],
                                                             "mixture.placement")])
def test_advise_bad_input_is_one_line(cli, tmp_path, args, field):
    path = write_toml(tmp_path / "two.toml", MIXTURES["two"])
    r = cli("advise", path, *args)
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: {field}:"), r.stderr
