"""Memory and time of the injection plan at a fraction of `paper_modular_addition`'s highest-rate cell: the whole-run
plan every rank used to build against the lazy per-step plan.

    python benchmarks/injection_plan.py [--fraction 100] [--world 8] [--work DIR] [--out PATH]

The cell: configs/lm/paper_modular_addition.toml's batch (1024 sequences of 1024 tokens) and 1/--fraction of its
20,000 steps, at the modular-addition grid's highest rate (7.8e-3 per token, paper_sweep_modular_addition.toml:
~8,000 injections per batch, 8 per sequence, so 7 of them at document starts inside sequences). The corpus is
synthetic (documents of 20..100 tokens, ~17 slots per sequence; 16,384 sequences, reused epoch after epoch in a
seeded order per epoch), written under --work.

Whole run (what each rank did before; `reference_injections`, the same rule materialised): scan the token file
(`sequence_slots`), the stream's slot table, every injection as arrays, the log table through Python lists, written
with `pq.write_table`. Lazy: the slot cache (`cached_sequence_slots`; timed when built and when read back), the plan
(`plan_injections`: counts and slot counts per batch), one rank's walk over every step (`share`, what its data
loader computes, rank 0 of --world), and the log streamed a row group at a time (`write_injection_log`, rank 0).
Each side runs in a fresh process, twice: timed (wall and CPU; peak RSS above the process's start), then under
tracemalloc (NumPy and Python peak; Arrow's allocations through a proxy pool). The two logs must hold the same rows.

Targets: the lazy rank's peak (tracemalloc) <= 50 MB and at most a tenth of the whole-run plan's; identical logs.
Timings on the shared 2-core machine drift with its load: the JSON keeps the load average with them.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import time
import tomllib
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from raretask.lm.plan import plan_injections, reference_injections, write_injection_log
from raretask.lm.slots import StepSlots, cached_sequence_slots, sequence_slots, stream_slots
from raretask.lm.tasks import LMTaskConfig, build_tasks

from record import ROOT, Run, add_out_argument

N_SEQ, EOS, VOCAB = 16384, 0, 50304
TARGET_MB = 50


class Order:
    """A seeded permutation of the sequences per epoch, as OLMo-core's loader orders them."""

    def __call__(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([0, epoch]).permutation(N_SEQ)


def cell(fraction: int) -> dict:
    cfg = tomllib.loads((ROOT / "configs" / "lm" / "paper_modular_addition.toml").read_text())
    grid = tomllib.loads((ROOT / "configs" / "lm" / "paper_sweep_modular_addition.toml").read_text())
    return {"steps": cfg["train"]["steps"] // fraction, "B": cfg["train"]["global_batch_seqs"],
            "T": cfg["data"]["seq_len"], "rate": max(grid["sweep"]["frequencies"]), "seed": cfg["seed"]}


def write_corpus(path: Path, T: int) -> None:
    if path.is_file():
        return
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, VOCAB, size=N_SEQ * T).astype(np.uint16)
    ends = np.cumsum(rng.integers(20, 100, size=N_SEQ * T // 20))
    tokens[ends[ends < len(tokens)]] = EOS
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens.tofile(path)


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM) to its current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measured(fn) -> dict:
    """fn() timed (wall, CPU, peak RSS above the RSS before it), then again under tracemalloc and an Arrow proxy
    pool (NumPy and Python allocations; Arrow's, which tracemalloc does not see)."""
    resettable, before = reset_peak_rss(), status_kb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    out = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
           "peak_rss_mb": (status_kb("VmHWM") - before) / 1e3 if resettable else None}
    default, pool = pa.default_memory_pool(), pa.proxy_memory_pool(pa.default_memory_pool())
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        fn()
        out["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(default)
    out["arrow_peak_mb"] = pool.max_memory() / 1e6
    return out


def side(variant: str, work: Path, fraction: int, world: int) -> dict:
    """One side, in this (fresh) process: its figures as a dict."""
    c = cell(fraction)
    token_path = work / "corpus" / "train.npy"
    cfgs = [LMTaskConfig(name="modular_addition", kind="modular_addition", frequency=c["rate"],
                         schedule="interval")]
    tasks = build_tasks(cfgs, VOCAB, {EOS})
    kw = dict(steps=c["steps"], global_batch_seqs=c["B"], seq_len=c["T"], seed=c["seed"])
    per_epoch = N_SEQ // c["B"]
    figures: dict = {}
    if variant == "old":
        def whole_run() -> int:
            tokens = np.memmap(token_path, dtype=np.uint16, mode="r")
            epochs = -(-c["steps"] // per_epoch)
            order = np.concatenate([Order()(e)[:per_epoch * c["B"]] for e in range(1, epochs + 1)])
            slots = stream_slots(sequence_slots(tokens, c["T"], EOS), order[:c["steps"] * c["B"]])
            inj = reference_injections(tasks, cfgs, slots=slots, **kw)
            pq.write_table(inj.log_table(), work / "old.parquet")
            figures["injections"] = len(inj)
            figures["held_mb"] = (sum(getattr(inj, a).nbytes for a in ("step", "batch_pos", "offset", "task",
                                                                      "instance", "tokens"))
                                  + slots.indptr.nbytes + slots.offsets.nbytes) / 1e6
            return len(inj)

        figures["whole_run"] = measured(whole_run)
        return figures

    cache = work / "cache"
    for d in cache.glob("slots-*"):  # the first call below builds the cache afresh
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    wall = time.perf_counter()
    table = cached_sequence_slots(token_path, "uint16", c["T"], EOS, [cache])
    figures["cache_build_s"] = time.perf_counter() - wall
    wall = time.perf_counter()
    table = cached_sequence_slots(token_path, "uint16", c["T"], EOS, [cache])
    figures["cache_hit_s"] = time.perf_counter() - wall

    def build():
        return plan_injections(tasks, cfgs, slots=StepSlots(table, Order(), per_epoch, c["B"]), **kw)

    plan = build()
    figures["injections"] = len(plan)
    figures["held_mb"] = sum(a.nbytes for a in (plan.per_step, plan.capacity)) * 2 / 1e6  # + the `before` counts
    figures["pickled_plan_mb"] = len(pickle.dumps(plan)) / 1e6  # what a data-loader worker receives
    figures["plan"] = measured(build)
    figures["rank_walk"] = measured(lambda: sum(len(x) for x in plan.iter_steps(rank=0, world=world)))
    figures["log"] = measured(lambda: write_injection_log(plan, work / "new.parquet"))
    return figures


def same_logs(work: Path) -> bool:
    def plain(path: Path) -> pa.Table:
        t = pq.read_table(path)
        return t.set_column(t.schema.get_field_index("task"), "task", pc.cast(t["task"], pa.string())) \
                .set_column(t.schema.get_field_index("split"), "split", pc.cast(t["split"], pa.string()))

    return plain(work / "old.parquet").equals(plain(work / "new.parquet"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fraction", type=int, default=100, help="run 1/FRACTION of the preset's steps")
    ap.add_argument("--world", type=int, default=8, help="data-parallel ranks of the lazy walk")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "injection_plan")
    ap.add_argument("--side", choices=["old", "new"], help=argparse.SUPPRESS)  # one side, in a child process
    add_out_argument(ap)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(side(args.side, args.work, args.fraction, args.world)))
        return 0

    run = Run("injection_plan", args, torch.device("cpu"))
    c = cell(args.fraction)
    write_corpus(args.work / "corpus" / "train.npy", c["T"])
    print(f"cell: {c['steps']} steps x {c['B']} x {c['T']} tokens at {c['rate']:g} per token (1/{args.fraction} of "
          f"paper_modular_addition), world {args.world}")
    results = {}
    for name in ("old", "new"):
        proc = subprocess.run([sys.executable, __file__, "--side", name, "--work", str(args.work), "--fraction",
                               str(args.fraction), "--world", str(args.world)], capture_output=True, text=True,
                              check=True)
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    old, new = results["old"], results["new"]
    w = old["whole_run"]
    print(f"whole run (every rank):  {old['injections']:,} injections, {w['wall_s']:.2f} s wall, {w['cpu_s']:.2f} s "
          f"CPU, peak {w['tracemalloc_peak_mb']:.0f} MB NumPy + {w['arrow_peak_mb']:.0f} MB Arrow, RSS +"
          f"{w['peak_rss_mb'] or 0:.0f} MB, holds {old['held_mb']:.0f} MB")
    print(f"lazy: slot cache {new['cache_build_s']:.2f} s to build, {new['cache_hit_s'] * 1e3:.1f} ms to read back; "
          f"plan holds {new['held_mb']:.2f} MB, {new['pickled_plan_mb']:.2f} MB pickled for a worker")
    for part in ("plan", "rank_walk", "log"):
        f = new[part]
        print(f"  {part:10s} {f['wall_s']:6.2f} s wall, {f['cpu_s']:6.2f} s CPU, "
              f"peak {f['tracemalloc_peak_mb']:6.1f} MB NumPy + {f['arrow_peak_mb']:6.1f} MB Arrow, RSS +{f['peak_rss_mb'] or 0:.0f} MB")
    rank_peak = max(new["plan"]["tracemalloc_peak_mb"], new["rank_walk"]["tracemalloc_peak_mb"])
    identical = same_logs(args.work)
    print(f"logs identical: {identical}; at full size the whole run holds ~{old['held_mb'] * args.fraction / 1e3:.0f} "
          f"GB per rank, the lazy plan ~{new['held_mb'] * args.fraction:.0f} MB")
    run.figures("cell", **c, fraction=args.fraction, world=args.world, corpus_sequences=N_SEQ)
    run.figures("whole_run", **old)
    run.figures("lazy", **new)
    run.target("lazy rank peak (plan + walk), MB", rank_peak, TARGET_MB, "<=", " MB")
    run.target("lazy rank peak / whole-run peak", rank_peak / w["tracemalloc_peak_mb"], 0.1, "<=", "x")
    run.target("logs identical", float(identical), 1, ">=")
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
