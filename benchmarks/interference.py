"""Cost of logging per-task gradient interference, against a plain training step timed in the same process.

A logged step is what `raretask synth interference` does at an evaluation point in batch mode: the training step
with a `GradientTap` (the Gram matrix of the per-task encoder gradients of the step's own batch and ||G_F B_r||, from
the factors delta_i, x_i, which also give the encoder's weight gradient) plus `interference_metrics` (K x K cosines,
||G_F||, projection on the rare subspace). The reference for "one pass" is the naive way: K extra backward passes,
one per task's share of the loss.

(a) configs/synthetic/interference.toml (CPU-sized: d 32, K 6, 5 widths, 2 seeds, batch 64).
(b) configs/synthetic/paper_fig2.toml at beta = 2: d 1024, K 32, widths 2..256 (`--paper-seeds`, `--paper-batch`).

Steps are timed in alternation (plain, logged, ...), best of `--rounds`, because this shared machine's speed drifts
from minute to minute. Target: logged / plain <= 1.5.

    python benchmarks/interference.py [--device cpu|cuda] [--rounds 5] [--only a|b] [--paper-seeds 1]
                                      [--paper-batch 1024] [--paper-naive] [--out PATH]

Writes every printed figure, the targets and the machine to benchmarks/results/interference.json
(interference_cuda.json on CUDA; see benchmarks/record.py) and exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from raretask.analysis.interference import GradientTap, Targets, gradient_stats, interference_metrics
from raretask.config import load_config
from raretask.synthetic.interference import InterferenceConfig
from raretask.synthetic.train import SweepTrainer, SynthConfig, expand_grid

from record import Run, add_out_argument  # benchmarks/record.py: a script's own directory is on sys.path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "configs" / "synthetic"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: list, n: int, device: torch.device, rounds: int) -> list[float]:
    """Best seconds per call of each fn over `rounds` rounds of n calls, the fns taking turns."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            sync(device)
            start = time.perf_counter()
            for _ in range(n):
                fn()
            sync(device)
            best[i] = min(best[i], (time.perf_counter() - start) / n)
    return best


def steps(cfg: InterferenceConfig, device: torch.device, cosines: str) -> dict:
    """The plain step, the logged step and the naive per-task reference, on one trainer."""
    trainer = SweepTrainer(cfg, device)
    mix, F, r = cfg.probe()
    tasks = list(range(mix.num_tasks)) if cosines == "all" else sorted({*F, r})
    student, B = trainer.student, cfg.train.batch_size
    targets = Targets(F, r, torch.as_tensor(mix.bases[r], device=device), tasks)
    tap = GradientTap(student, targets, [p * B for p in mix.frequencies])

    def logged() -> None:
        with tap:
            trainer.step()
        interference_metrics(tap.stats, targets)

    def naive() -> None:  # the same numbers by K backward passes (before a plain step)
        batch = trainer.stream.sample(B)
        pred = student(batch.x, batch.offsets)
        S, K = len(student.seeds), mix.num_tasks
        task = torch.repeat_interleave(torch.arange(S * K, device=device) % K, batch.counts.flatten())
        sq = (pred - batch.y[:, None]).square().sum(-1)  # (S*B, C)
        g = torch.stack([torch.autograd.grad((sq * (task == k)[:, None]).sum() / B, student.encoder,
                                             retain_graph=k < K - 1)[0] for k in range(K)], 1)
        interference_metrics(gradient_stats(student, g, targets), targets)
        trainer.step()

    return {"plain": trainer.step, "logged": logged, "naive": naive}


def report(run: Run, part: str, name: str, cfg: InterferenceConfig, device: torch.device, rounds: int, n: int,
           naive: bool) -> None:
    """Time and print one config's steps, both ways of choosing the cosines; record them under `part` in `run`."""
    mix = cfg.mixture.build()
    run.figures(part, d=mix.dim, tasks=mix.num_tasks, widths=list(cfg.sweep.widths), seeds=len(cfg.sweep.seeds),
                batch=cfg.train.batch_size, steps_per_round=n, rounds=rounds)
    print(f"{name}: d={mix.dim}, K={mix.num_tasks}, widths {cfg.sweep.widths}, {len(cfg.sweep.seeds)} seed(s), "
          f"batch {cfg.train.batch_size}, {device}, {torch.get_num_threads()} thread(s)")
    for cosines in ["all", "frequent_rare"]:
        fns = steps(cfg, device, cosines)
        names = ["plain", "logged"] + (["naive"] if naive else [])
        t = dict(zip(names, interleaved([fns[k] for k in names], n, device, rounds)))
        label = "K x K cosines" if cosines == "all" else "cosines among F and r"
        line = (f"    {label:22s} plain {t['plain'] * 1e3:8.2f} ms   logged {t['logged'] * 1e3:8.2f} ms   "
                f"ratio {t['logged'] / t['plain']:5.2f}x (target <= 1.5x)")
        if naive:
            line += f"   K backward passes {t['naive'] * 1e3:8.2f} ms ({t['naive'] / t['plain']:.2f}x)"
        print(line)
        run.figures(part, **{cosines: {**{f"{k}_s": v for k, v in t.items()},
                                       **{f"{k}/plain": v / t["plain"] for k, v in t.items() if k != "plain"}}})
        run.target(f"({part}) {label} logged/plain", t["logged"] / t["plain"], 1.5, "<=", "x")


def main() -> int:
    """Run the parts, write the results file; the exit status: 0 all targets met, 1 one missed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--small-steps", type=int, default=50, help="steps per timing round, CPU-sized config")
    ap.add_argument("--paper-steps", type=int, default=2, help="steps per timing round, paper shape")
    ap.add_argument("--paper-seeds", type=int, default=1)
    ap.add_argument("--paper-batch", type=int, default=1024)
    ap.add_argument("--paper-naive", action="store_true", help="also time the K backward passes at paper shape")
    ap.add_argument("--only", choices=["a", "b"], help="run only part (a) or (b)")
    add_out_argument(ap)
    args = ap.parse_args()
    device = torch.device(args.device)
    run = Run("interference", args, device)
    print(f"torch {torch.__version__}")
    if args.only != "b":
        small = load_config(InterferenceConfig, PRESETS / "interference.toml", [f"train.device={device.type}"])
        report(run, "a", "(a) interference.toml", small, device, args.rounds, args.small_steps, naive=True)
    if args.only == "a":
        return run.finish()
    base = load_config(SynthConfig, PRESETS / "paper_fig2.toml", [
        "sweep.mixture.zipf=[2.0]", f"sweep.seeds={list(range(args.paper_seeds))}",
        f"train.batch_size={args.paper_batch}", f"train.device={device.type}"])
    [(_, point)] = expand_grid(base)  # the preset's beta = 2 grid point
    paper = InterferenceConfig.from_dict(point.to_dict())
    paper.validate()
    report(run, "b", "(b) paper_fig2 shape, beta = 2", paper, device, args.rounds, args.paper_steps,
           naive=args.paper_naive)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
