"""Wall time of an LM CPU sweep with its cells side by side (one process per idle core) against one cell at a time
in one process, in the same run.

    python benchmarks/side_by_side.py [--steps 150] [--work runs/bench/side_by_side] [--out PATH]

The sweep: configs/lm/demo.toml's 3 sizes x 2 frequencies (6 cells) on the embedded corpus, `--steps` each. One at a
time takes the threads the product picks (the idle cores); side by side, `raretask lm sweep --workers auto`: the idle
cores as processes, one thread each. Both read back nothing: each starts from an empty directory. Target: side by
side >= 1.6x faster on 2 cores. Prepares the corpus once under --work.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

from raretask.config import load_config
from raretask.devices import choose_threads, free_cores, torch_threads
from raretask.lm.corpus import CorpusConfig, prepare
from raretask.lm.sweep import LMSweepConfig, run_sweep

from record import ROOT, Run, add_out_argument

TARGET = 1.6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150, help="training steps of each cell")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "side_by_side")
    add_out_argument(ap)
    args = ap.parse_args()
    run = Run("side_by_side", args, torch.device("cpu"))
    corpus = args.work / "corpus"
    prepare(load_config(CorpusConfig, ROOT / "configs" / "lm" / "corpus" / "embedded.toml"), corpus, progress=False)
    cfg = load_config(LMSweepConfig, ROOT / "configs" / "lm" / "demo.toml",
                      [f"data.manifest={corpus.resolve()}", f"train.steps={args.steps}",
                       f"train.checkpoint_every={args.steps}", f"eval.every={args.steps}", "train.threads=0"])
    cores = free_cores()
    seconds = {}
    for label, workers in (("one at a time", 1), ("side by side", cores)):
        out = args.work / label.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        with torch_threads(choose_threads(0) if workers == 1 else torch.get_num_threads()):
            run_sweep(cfg, out, progress=False, workers=workers)
        seconds[label] = time.perf_counter() - start
        print(f"{label:14s} {workers} process(es): {seconds[label]:7.1f} s")
    ratio = seconds["one at a time"] / seconds["side by side"]
    print(f"ratio          {ratio:7.2f}x   (target >= {TARGET}x on 2 cores; {cores} idle at the start)")
    run.figures("sweep", cells=len(cfg.sweep.sizes) * len(cfg.sweep.frequencies), steps=args.steps, idle_cores=cores,
                one_at_a_time_s=seconds["one at a time"], side_by_side_s=seconds["side by side"], ratio=ratio)
    run.target("side by side / one at a time, wall", ratio, TARGET, ">=", "x")
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
