"""Wall time of an LM CPU sweep with its cells side by side (one process per free core) against one cell at a time
in one process, in the same run.

    python benchmarks/side_by_side.py [--steps 500] [--work runs/bench/side_by_side] [--out PATH]

The sweep: configs/lm/demo.toml's cells on the embedded corpus, `--steps` each, evaluated once at the end. Three
cases, each from an empty directory (nothing read back):
  - one at a time, as configured: `raretask lm sweep` without --workers, the preset's one torch thread per cell;
    one core works. Target: side by side >= 1.6x faster on 2 cores.
  - one at a time, threads = the free cores: one cell at a time but every core in its matmuls (not a target; it
    says how much of the gain intra-op threads alone would give);
  - side by side: `--workers auto`, the free cores as processes, one thread each (a process start-up each).
Prepares the corpus once under --work.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from raretask.config import load_config
from raretask.devices import free_cores, torch_threads
from raretask.lm.corpus import CorpusConfig, prepare
from raretask.lm.sweep import LMSweepConfig, run_sweep

from record import ROOT, Run, add_out_argument

TARGET = 1.6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=500, help="training steps of each cell")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "side_by_side")
    add_out_argument(ap)
    args = ap.parse_args()
    run = Run("side_by_side", args, torch.device("cpu"))
    corpus = args.work / "corpus"
    prepare(load_config(CorpusConfig, ROOT / "configs" / "lm" / "corpus" / "embedded.toml"), corpus, progress=False)
    cfg = load_config(LMSweepConfig, ROOT / "configs" / "lm" / "demo.toml",
                      [f"data.manifest={corpus.resolve()}", f"train.steps={args.steps}",
                       f"train.checkpoint_every={args.steps}", f"eval.every={args.steps}"])
    cores = free_cores()
    cases = (("one at a time", 1, cfg.train.threads or 1), ("one at a time, all cores", 1, cores),
             ("side by side", cores, 1))
    seconds = {}
    for label, workers, threads in cases:
        out = args.work / label.replace(" ", "_").replace(",", "")
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        with torch_threads(threads):
            run_sweep(replace(cfg, train=replace(cfg.train, threads=threads)), out, progress=False, workers=workers)
        seconds[label] = time.perf_counter() - start
        print(f"{label:26s} {workers} process(es) x {threads} thread(s): {seconds[label]:7.1f} s")
    ratio = seconds["one at a time"] / seconds["side by side"]
    ratio_threads = seconds["one at a time, all cores"] / seconds["side by side"]
    print(f"ratio                      {ratio:7.2f}x   (target >= {TARGET}x on 2 cores; {cores} free at the start)")
    print(f"against all-core threads   {ratio_threads:7.2f}x   (not a target)")
    run.figures("sweep", cells=len(cfg.sweep.sizes) * len(cfg.sweep.frequencies), steps=args.steps, free_cores=cores,
                one_at_a_time_s=seconds["one at a time"],
                one_at_a_time_all_cores_s=seconds["one at a time, all cores"],
                side_by_side_s=seconds["side by side"], ratio=ratio, ratio_against_all_core_threads=ratio_threads)
    run.target("side by side / one at a time (as configured), wall", ratio, TARGET, ">=", "x")
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
