"""Speed of the batched synthetic sweep, against baselines measured in the same process.

(a) configs/synthetic/default.toml: steps/s of the batched sweep (all cells advance one step) and of the naive way,
    a plain module per cell trained separately for the same number of steps; their ratio (target >= 10x), on an
    idle machine and (CPU) again while a process the benchmark starts keeps one core busy, with the threads the
    product picks from the idle cores (target >= 10x in both).
(b) configs/synthetic/paper_fig2.toml at one beta: model GFLOP/s of a training step against torch.matmul's
    GFLOP/s for the encoder's product at the same size (S*B x d x sum_N), measured here (target >= 50%), and the
    projected wall time of the full 100K steps (evaluations included).

    python benchmarks/synthetic_sweep.py [--device cpu|cuda] [--default-steps 300] [--paper-steps 5] [--only a|b]
                                         [--out PATH]

Writes every printed figure, the targets and the machine to benchmarks/results/synthetic_sweep.json
(synthetic_sweep_cuda.json on CUDA; see benchmarks/record.py) and exits 1 if a target is missed.

Model FLOPs per step count the arithmetic the model needs, not what the implementation spends on padding:
encoder forward and weight gradient 4 B d sum_N per seed, decoders 6 B sum_N E[r_k] per seed (forward, input and
weight gradients), where E[r_k] = sum_k pi_k r_k. Executed FLOPs add row padding and the zero blocks of each
band's block-diagonal decoder (see raretask/synthetic/model.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from raretask.config import load_config
from raretask.devices import choose_threads, torch_threads
from raretask.synthetic.train import Evaluator, SweepTrainer, SynthConfig, train_cell

from record import Run, add_out_argument  # benchmarks/record.py: a script's own directory is on sys.path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "configs" / "synthetic"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, n: int, device: torch.device, warmup: int = 2, repeats: int = 3) -> float:
    """Seconds per call of fn: the best of `repeats` runs of n calls, after warm-up. Best-of damps this shared
    machine's noise for the step and the matmul reference alike."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - start) / n)
    return best


def interleaved(fns: list, ns: list[int], device: torch.device, rounds: int = 5) -> list[float]:
    """Best seconds per call of each fn, timing them in alternation so that both see the same machine state
    (this shared machine's speed drifts by tens of percent between minutes)."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()
    for _ in range(rounds):
        for i, (fn, n) in enumerate(zip(fns, ns)):
            best[i] = min(best[i], timed(fn, n, device, warmup=0, repeats=1))
    return best


def part_a(run: Run, device: torch.device, steps: int) -> None:
    """(a) on an idle machine and, on a CPU, again while a process this benchmark starts keeps one core busy: each
    time with the threads the product picks (raretask.devices.choose_threads: the idle cores)."""
    cases = [("idle", False)] + ([("one core busy", True)] if device.type == "cpu" else [])
    for label, busy in cases:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            if spinner is not None:
                time.sleep(1.0)  # let the spinner take its core before the idle cores are counted
            with torch_threads(choose_threads(0)) as threads:
                part_a_case(run, device, steps, label, threads)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()


def part_a_case(run: Run, device: torch.device, steps: int, label: str, threads: int) -> None:
    cfg = load_config(SynthConfig, PRESETS / "default.toml", [f"train.device={device.type}"])
    trainer = SweepTrainer(cfg, device)
    batched = 1.0 / timed(trainer.step, steps, device, warmup=10, repeats=1)
    start = time.perf_counter()
    for seed in cfg.sweep.seeds:  # the naive way: every cell its own module and loop, same steps
        for width in cfg.sweep.widths:
            train_cell(cfg, seed, width, steps=steps)
    sync(device)
    naive = steps / (time.perf_counter() - start)
    cells = len(cfg.sweep.seeds) * len(cfg.sweep.widths)
    print(f"(a) default preset, {cells} cells ({len(cfg.sweep.seeds)} seeds x {len(cfg.sweep.widths)} widths), "
          f"{steps} steps, {device}, {label}: {threads} thread(s)")
    print(f"    batched sweep   {batched:9.1f} sweep-steps/s")
    print(f"    naive per-cell  {naive:9.1f} sweep-steps/s")
    print(f"    ratio           {batched / naive:9.1f}x   (target >= 10x)")
    section = "a" if label == "idle" else "a_busy"
    run.figures(section, case=label, threads=threads, cells=cells, steps=steps, batched_sweep_steps_per_s=batched,
                naive_sweep_steps_per_s=naive, ratio=batched / naive)
    run.target(f"(a) batched/naive sweep-steps/s, {label}", batched / naive, 10, ">=", "x")


def part_b(run: Run, device: torch.device, steps: int) -> None:
    cfg = load_config(SynthConfig, PRESETS / "paper_fig2.toml",
                      [f"train.device={device.type}", "sweep.mixture.zipf=[2.0]"])
    full_steps, evals = cfg.train.steps, cfg.train.steps // cfg.eval.every
    trainer = SweepTrainer(cfg, device)
    mix, S, B = trainer.mixture, len(cfg.sweep.seeds), cfg.train.batch_size
    d, sum_n = mix.dim, sum(cfg.sweep.widths)
    mean_rank = float(sum(p * r for p, r in zip(mix.frequencies, mix.ranks)))
    model_flops = S * B * sum_n * (4 * d + 6 * mean_rank)
    st = trainer.student  # executed: padded rows, and each band's block-diagonal decoder with its zero blocks
    rows = [last - first for first, last in st.band_rows]
    executed_flops = S * B * (4 * d * sum(rows) + 6 * max(mix.ranks) * sum(r * len(b) for r, b in zip(rows, st.bands)))
    a, b = torch.randn(S * B, d, device=device), torch.randn(d, sum_n, device=device)
    per_step, per_matmul = interleaved([trainer.step, lambda: torch.matmul(a, b)], [steps, 20], device)
    ref = 2 * S * B * d * sum_n / per_matmul / 1e9
    evaluator = Evaluator(mix, cfg.eval, cfg.sweep.seeds, device)
    per_eval = timed(lambda: evaluator(trainer.student), 1, device, warmup=1, repeats=1)
    achieved = model_flops / per_step / 1e9
    projected = full_steps * per_step + evals * per_eval
    print(f"(b) paper_fig2 shape at one beta: d={d}, K={mix.num_tasks}, widths {cfg.sweep.widths}, "
          f"{S} seeds, batch {B}, {device}; decoder bands {[[cfg.sweep.widths[c] for c in b] for b in st.bands]}")
    print(f"    step            {per_step * 1e3:9.1f} ms   (best of 5 x {steps} steps, alternating with the matmul)")
    print(f"    model FLOPs     {model_flops / 1e9:9.2f} GFLOP/step -> {achieved:7.1f} GFLOP/s")
    print(f"    executed FLOPs  {executed_flops / 1e9:9.2f} GFLOP/step -> {executed_flops / per_step / 1e9:7.1f} "
          f"GFLOP/s (with padding and the decoders' zero blocks)")
    print(f"    torch.matmul    {ref:9.1f} GFLOP/s at ({S * B} x {d}) @ ({d} x {sum_n})")
    print(f"    fraction        {achieved / ref:9.1%}   (model GFLOP/s over torch.matmul's; target >= 50%)")
    print(f"    one evaluation  {per_eval:9.2f} s")
    print(f"    projected       {projected / 3600:9.2f} h for {full_steps} steps + {evals} evaluations "
          f"(x{len([0.5, 1.0, 1.5, 2.0])} for the preset's beta sweep)")
    run.figures("b", steps=steps, step_s=per_step, model_gflop_per_step=model_flops / 1e9, model_gflop_per_s=achieved,
                executed_gflop_per_step=executed_flops / 1e9, executed_gflop_per_s=executed_flops / per_step / 1e9,
                matmul_s=per_matmul, matmul_gflop_per_s=ref, fraction=achieved / ref, evaluation_s=per_eval,
                projected_h=projected / 3600, full_steps=full_steps, evaluations=evals)
    run.target("(b) model/matmul GFLOP/s", 100 * achieved / ref, 50, ">=", "%")


def main() -> int:
    """Run the parts, write the results file; the exit status: 0 all targets met, 1 one missed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--default-steps", type=int, default=300)
    ap.add_argument("--paper-steps", type=int, default=5)
    ap.add_argument("--only", choices=["a", "b"], help="run only part (a) or (b)")
    add_out_argument(ap)
    args = ap.parse_args()
    device = torch.device(args.device)
    run = Run("synthetic_sweep", args, device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    if args.only != "b":
        part_a(run, device, args.default_steps)
    if args.only != "a":
        part_b(run, device, args.paper_steps)
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
