"""`raretask lm train` end to end on a tiny corpus: metrics, learning, exact resume after SIGKILL, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from raretask.lm.evaluate import COLUMNS

from ..conftest import ROOT, summary
from .conftest import tiny_news_corpus

HEADER = """
seed = 3
[data]
manifest = "{manifest}"
seq_len = 64
[model]
preset = "cpu-30k"
[train]
"""  # the tiny run's opening, shared with the bf16 test
CONFIG = HEADER + """steps = 80
global_batch_seqs = 8
lr = 2e-2
warmup = 5
checkpoint_every = 20
[eval]
every = 10
train_instances = 200
test_instances = 200
heldout_tokens = 4096
reference_examples = 20
[[tasks]]
name = "cmp-frequent"
kind = "comparison"
frequency = 0.01
schedule = "interval"
[[tasks]]
name = "add-rare"
kind = "modular_addition"
frequency = 2e-4
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tiny_news_corpus(tmp_path_factory.mktemp("corpus") / "news")


@pytest.fixture(scope="module")
def config(corpus, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(CONFIG.format(manifest=corpus))
    return path


@pytest.fixture(scope="module")
def whole(config, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run (in-process, through the CLI), shared by the tests below."""
    from click.testing import CliRunner

    from raretask.cli import main

    out = tmp_path_factory.mktemp("runs") / "whole"
    r = CliRunner().invoke(main, ["lm", "train", str(config), "--out", str(out), "--json", "--no-progress"],
                           catch_exceptions=False)
    return out, summary(r)


def test_run_writes_every_metric_and_learns_the_frequent_task(whole):
    out, s = whole
    m = pq.read_table(out / "metrics.parquet").to_pydict()
    assert set(COLUMNS) | {"ref_cmp_loss", "ref_add_loss"} <= set(m)
    assert sorted(set(m["step"])) == list(range(0, 81, 10))
    assert m["tokens_seen"][-1] == 80 * 8 * 64 == s["tokens"]
    for col in ("test_loss", "test_acc_labels", "test_acc_vocab", "heldout_loss", "reference_loss",
                "test_loss_ctx", "test_acc_labels_ctx", "test_acc_vocab_ctx"):
        assert all(v is not None and v == v for v in m[col]), col  # present and not NaN at every step
    for col in ("train_loss", "train_acc_labels", "train_loss_ctx", "train_acc_labels_ctx"):
        # scored once an instance has been trained on, None before
        assert all((v is None) == (n == 0) and (v is None or v == v) for v, n in zip(m[col], m["train_seen"])), col
    assert m["lm_loss"][0] is None and all(v > 0 for v in m["lm_loss"][2:])

    def curve(task: str, col: str) -> list[float]:
        return [v for t, v in zip(m["task"], m[col]) if t == task]

    assert curve("cmp-frequent", "train_seen")[:3] == [0, 52, 103]  # 5.12 per step (interval), no repeat yet
    cmp = curve("cmp-frequent", "train_loss")
    # 5 instances per batch: the label pair is learned within 80 steps. At step 0 nothing is seen (None); the
    # untrained model's loss on the task's prompts is its test loss there.
    assert cmp[0] is None and cmp[-1] < 0.6 * curve("cmp-frequent", "test_loss")[0], cmp
    assert curve("cmp-frequent", "test_acc_vocab")[-1] > curve("cmp-frequent", "test_acc_vocab")[0]
    held = curve("cmp-frequent", "heldout_loss")
    assert held[-1] < held[0]
    # the summary is the last evaluation
    last = {t["name"]: t for t in s["tasks"]}
    assert last["cmp-frequent"]["train_loss"] == cmp[-1] and last["add-rare"]["frequency"] == 2e-4
    assert s["params"] > 0 and s["tokens_per_s"] > 0 and s["heldout_loss"] == held[-1]

    inj = pq.read_table(out / "injections.parquet").to_pydict()
    per_task = {t: inj["task"].count(t) for t in set(inj["task"])}
    assert per_task["cmp-frequent"] == round(0.01 * 8 * 64 * 80)  # interval schedule: exactly rate x steps
    assert set(inj["split"]) == {"train"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["kind"] == "lm.train"
    assert (out / "checkpoints" / "step80" / "model_and_optim").is_dir()


def test_train_loss_scores_only_instances_injected_before_the_step(whole, tmp_path):
    """Every train instance an evaluation scores was injected (injections.parquet) in a batch before that step;
    train_seen counts them all; the final train loss recomputed from the last checkpoint on those instances."""
    from raretask.config import load_config
    from raretask.lm.evaluate import build_evalset, split_scores
    from raretask.lm.train import LMConfig, load_trained_model, prepare

    out, _ = whole
    cfg = load_config(LMConfig, out / "config.toml")
    p = prepare(cfg, tmp_path)  # the run's tasks and plan, rebuilt from its config
    probes = {pr.name: pr for pr in build_evalset(p.tasks, [1.0] * len(p.tasks), cfg.eval, plan=p.plan, heldout=None,
                                                   seq_len=cfg.data.seq_len, eos_id=0, seed=cfg.seed).probes}
    log = pq.read_table(out / "injections.parquet").to_pydict()
    m = pq.read_table(out / "metrics.parquet").to_pydict()
    for step, task, seen in zip(m["step"], m["task"], m["train_seen"]):
        injected = {i for s, t, i in zip(log["step"], log["task"], log["instance"]) if t == task and s < step}
        ids = probes[task].train_ids(step)
        assert set(ids.tolist()) <= injected and seen == len(injected), (step, task)
        assert len(ids) == min(cfg.eval.train_instances, len(injected))
    assert max(m["train_seen"]) > cfg.eval.train_instances  # the subset is a real subset at the end
    model = load_trained_model(out)
    probe, last = probes["cmp-frequent"], max(m["step"])
    got = split_scores(lambda ids, **kw: model(ids, **kw), *probe.prompts(probe.train_ids(last)), probe.label_set,
                       256, model.embeddings.weight.device)
    want = [v for s, t, v in zip(m["step"], m["task"], m["train_loss"]) if s == last and t == "cmp-frequent"][0]
    assert got["loss"] == pytest.approx(want, rel=1e-5)


def test_the_last_checkpoint_is_the_trained_model(whole, corpus):
    from raretask.lm.corpus import Manifest
    from raretask.lm.evaluate import heldout_loss, heldout_windows
    from raretask.lm.train import checkpoints, load_trained_model

    out, s = whole
    assert [step for step, _ in checkpoints(out)] == [60, 80]  # keep_checkpoints = 2 (the default)
    model = load_trained_model(out)
    windows = heldout_windows(Manifest.load(corpus).read("heldout"), 4096, 64)
    loss = heldout_loss(lambda ids, **kw: model(ids, **kw), windows, 256, model.embeddings.weight.device)
    assert loss == pytest.approx(s["heldout_loss"], rel=1e-6)  # the final evaluation, recomputed from disk


def test_finished_run_is_read_back_not_retrained(whole, config, cli):
    out, s = whole
    before = (out / "metrics.parquet").stat().st_mtime_ns
    again = summary(cli("lm", "train", config, "--out", out, "--json", "--no-progress"))
    assert again == s and (out / "metrics.parquet").stat().st_mtime_ns == before
    text = cli("lm", "train", config, "--out", out, "--no-progress").stdout
    assert f"held-out loss {s['heldout_loss']:.3f}" in text and "cmp-frequent" in text


def test_resume_after_sigkill_reproduces_the_metrics_exactly(whole, config, tmp_path, cli):
    out = tmp_path / "killed"
    # The reference ran in this process: the child uses as many threads (a float sum splits by thread count).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "raretask.lm.train", str(config), "--out", str(out),
                             "--no-progress"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = out / "checkpoints" / "step40" / ".metadata.json"  # written last: the checkpoint is complete
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (ckpt.exists() and _evaluated(out, 50)):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # after the step-50 evaluation, most likely before the step-60 checkpoint
    proc.wait()
    assert ckpt.exists(), proc.stderr.read().decode()[-2000:]
    assert json.loads((out / "meta.json").read_text())["status"] == "running"
    assert _evaluated(out, 50) and not _evaluated(out, 80)  # rows past the checkpoint the resume must redo

    s = summary(cli("lm", "train", config, "--out", out, "--resume", "--json", "--no-progress"))
    ref = pq.read_table(whole[0] / "metrics.parquet")
    got = pq.read_table(out / "metrics.parquet")
    assert got.equals(ref), (got.to_pandas(), ref.to_pandas())
    assert pq.read_table(out / "injections.parquet").equals(pq.read_table(whole[0] / "injections.parquet"))
    assert s["tasks"] == whole[1]["tasks"] and s["heldout_loss"] == whole[1]["heldout_loss"]
    assert json.loads((out / "meta.json").read_text())["resumed_from"] in (40, 60)


def _evaluated(out: Path, step: int) -> bool:
    try:
        return step in pq.read_table(out / "metrics.parquet").column("step").to_pylist()
    except (FileNotFoundError, OSError):
        return False


@pytest.mark.parametrize("override, field", [
    ("data.manifest=/nonexistent/corpus", "data.manifest"),
    ("model.vocab_size=300", "model.vocab_size"),
    ("model.preset=4B", "model.preset"),
    ("tasks[0].frequency=0.1", "tasks[0].frequency"),
    ("eval.context_pos=60", "eval.context_pos"),  # EOS at 60 leaves no room for an instance in 64 tokens
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(config, tmp_path, cli, override, field, monkeypatch):
    from raretask.lm import models

    monkeypatch.setattr(models, "available_memory", lambda device: 24 * 2**30)  # 4B does not fit 24 GiB anywhere
    out = tmp_path / "never"
    r = cli("lm", "train", config, override, "--out", out, "--no-progress")
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith(f"error: {field}:") and "\n" not in err, err
    assert not out.exists()


def test_more_processes_than_gpus_is_one_line(config, tmp_path, cli, monkeypatch):
    import torch

    from raretask.lm import train

    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(torch.cuda.device_count() + 1))
    monkeypatch.setenv("WORLD_SIZE", str(torch.cuda.device_count() + 1))
    monkeypatch.setattr(train, "resolve_device", lambda name: torch.device("cuda"))  # as on a GPU node
    r = cli("lm", "train", config, "--out", tmp_path / "never", "--no-progress")
    assert r.exit_code == 2 and r.stderr.strip().startswith("error: train.device: "), r.stderr
    assert "processes per node on cuda" in r.stderr and not (tmp_path / "never").exists()


def test_training_leaves_the_process_as_it_was(whole, config, tmp_path, cli):
    import multiprocessing as mp

    import torch

    before = torch.get_default_device(), torch.get_num_threads(), mp.get_start_method(True)
    summary(cli("lm", "train", config, "train.steps=2", "eval.every=2", "--out", tmp_path / "r", "--json",
                "--no-progress"))
    assert (torch.get_default_device(), torch.get_num_threads(), mp.get_start_method(True)) == before


def test_resume_without_a_run_is_one_line_and_writes_nothing(config, tmp_path, cli):
    out = tmp_path / "nothing"
    r = cli("lm", "train", config, "--out", out, "--resume", "--no-progress")
    assert r.exit_code == 2 and r.stderr.strip() == f"error: --resume: no run in {out} to resume"
    assert not out.exists()


@pytest.mark.slow  # two fresh processes importing torch and OLMo-core: ~15 CPU-seconds
def test_two_processes_train_data_parallel_with_fsdp_like_one(config, tmp_path, cli):
    """`torchrun --nproc-per-node 2` on CPU (gloo): the same code path as GPUs, FSDP-sharded, same numbers."""
    short = ["train.steps=10", "eval.every=5", "eval.reference=false", "train.device=cpu"]
    single = tmp_path / "single"
    summary(cli("lm", "train", config, *short, "--out", single, "--json", "--no-progress"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "raretask.lm.train", str(config), *short, "--out", str(tmp_path / "fsdp"),
                        "--json", "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])  # rank 0 prints the summary; nothing else is on stdout
    assert s["world_size"] == 2 and s["steps"] == 10
    a = pq.read_table(single / "metrics.parquet").to_pydict()
    b = pq.read_table(tmp_path / "fsdp" / "metrics.parquet").to_pydict()
    assert a["step"] == b["step"] == [0, 0, 5, 5, 10, 10]
    for col in ("train_loss", "test_loss", "heldout_loss", "lm_loss", "test_acc_labels"):
        for x, y in zip(a[col], b[col]):
            assert (x is None and y is None) or abs(x - y) < 1e-4, (col, a[col], b[col])
