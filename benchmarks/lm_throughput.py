"""Training-step throughput of the LM lab's OLMo-core model against the same-shape Hugging Face OLMo model.

    python benchmarks/lm_throughput.py [--preset cpu-600k] [--batch 16] [--seq 256] [--repeats 10] [--threads 1]
                                       [--profile 25] [--out PATH]

Both models are the paper's OLMo-7B-0724 architecture at one shape (non-parametric LayerNorm, SwiGLU, RoPE theta
10^4, clip_qkv 8, untied embeddings): raretask's `LMModelConfig(preset).build(V)` and transformers'
`OlmoForCausalLM`, which gets a copy of the OLMo-core weights. Before timing, the script checks that both are in
training mode and compute the same loss on the batch's first two sequences (|difference| < 1e-4): same function,
same tokens, same targets; fp32, one process, same threads.

One step is what OLMo-core's `TransformerTrainModule` does for a single micro-batch (raretask.lm.train's step):

    forward + loss   OLMo-core: model(ids, labels, loss_reduction="sum", loss_div_factor=N, return_logits=False),
                     no z-loss; transformers: model(ids, labels=ids, num_items_in_batch=N) (it shifts the labels
                     itself, use_cache off), i.e. the same mean cross-entropy over the same N = B (T - 1) targets
    backward
    optimiser        clip the global gradient norm to 1.0, AdamW (betas 0.9, 0.95, eps 1e-5, weight decay 0.1),
                     zero the gradients

Timing: each round runs one step of each model, their order alternating between rounds, and times the three phases
separately, in wall-clock and process CPU time. Each phase's best of `--repeats` rounds is kept; a step is the sum of
its phases' bests; tokens/s is B T over that. Prints both models' phases and the ratio raretask / transformers
(target >= 1.0) in wall-clock and in CPU time. `--profile K` also prints the K most expensive operators of one step
of each (torch.profiler, grouped by input shapes).

Threads: one by default (`--threads 0`: torch's default). On this shared 2-core machine (load average 8-12) two
OpenMP threads spend most of a step waiting at barriers for a descheduled partner: a step took ~1.9x as long as
with one thread, and two identical OLMo-core models timed against each other (an A/A run, best of 10) differed by
13%, so a 2-thread ratio says more about the scheduler than about the code. With one thread the CPU time is the
step's own work, unaffected by waiting: the A/A run agreed to 2%.

`transformers` is not a dependency of raretask; install it only for this benchmark: `pip install transformers`.
Without it the script times OLMo-core alone, writes that, and exits 2 with a one-line message.
With a CUDA device it also times the 1B preset (bf16 autocast, context 4096) and prints its MFU
(6 N tokens/s over the device's dense bf16 peak).

Writes every printed figure, the targets and the machine to benchmarks/results/lm_throughput.json
(lm_throughput_cuda.json when CUDA is available; see benchmarks/record.py) and exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import torch

from raretask.lm.models import PRESETS, LMModelConfig

from record import Run, add_out_argument  # benchmarks/record.py: a script's own directory is on sys.path

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per device
PHASES = ("forward", "backward", "optimiser")


def olmo_core_model(preset: str, vocab: int, device: str) -> torch.nn.Module:
    return LMModelConfig(preset=preset).build(vocab, init_device=device)


def hf_model(preset: str, vocab: int, device: str, weights_from: torch.nn.Module) -> torch.nn.Module:
    """transformers' OlmoForCausalLM at the preset's shape, holding `weights_from`'s (OLMo-core) weights."""
    from transformers import OlmoConfig, OlmoForCausalLM

    s = PRESETS[preset]
    cfg = OlmoConfig(vocab_size=vocab, hidden_size=s.d_model, intermediate_size=s.mlp_hidden // 2,
                     num_hidden_layers=s.n_layers, num_attention_heads=s.n_heads, num_key_value_heads=s.n_heads,
                     clip_qkv=8.0, tie_word_embeddings=False, rope_theta=10_000.0, attention_bias=False,
                     max_position_embeddings=4096, pad_token_id=1, eos_token_id=0, bos_token_id=None,
                     use_cache=False)  # training: no KV cache
    cfg._attn_implementation = "sdpa"
    model = OlmoForCausalLM(cfg).to(device)
    names = {"embeddings.weight": "model.embed_tokens.weight", "lm_head.w_out.weight": "lm_head.weight"}
    for i in range(s.n_layers):
        for ours, theirs in (("attention.w_q", "self_attn.q_proj"), ("attention.w_k", "self_attn.k_proj"),
                             ("attention.w_v", "self_attn.v_proj"), ("attention.w_out", "self_attn.o_proj"),
                             ("feed_forward.w1", "mlp.gate_proj"), ("feed_forward.w3", "mlp.up_proj"),
                             ("feed_forward.w2", "mlp.down_proj")):
            names[f"blocks.{i}.{ours}.weight"] = f"model.layers.{i}.{theirs}.weight"
    ours = dict(weights_from.named_parameters())
    assert set(ours) == set(names), f"unmapped OLMo-core parameters: {set(ours) ^ set(names)}"
    model.load_state_dict({names[k]: v.detach().clone() for k, v in ours.items()}, strict=True)
    return model


def transformers_installed() -> bool:
    """Whether the reference can be built: an import, not a lookup, so that a broken install counts as missing."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def losses(kind: str, model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The training loss of `ids` as each library's training loop computes it (mean over B (T - 1) targets)."""
    labels = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)  # next-token targets
    n = int((labels != -100).sum())
    if kind == "olmo-core":  # TransformerTrainModule.train_batch's call, one micro-batch
        return lambda: model(ids, labels=labels, ignore_index=-100, loss_reduction="sum", z_loss_multiplier=None,
                             loss_div_factor=n, return_logits=False).loss
    return lambda: model(input_ids=ids, labels=ids, num_items_in_batch=n).loss  # shifts internally


class Step:
    """One training step of one model, its phases timed (wall and process CPU seconds, best so far)."""

    def __init__(self, kind: str, model: torch.nn.Module, ids: torch.Tensor, autocast: bool):
        self.model, self.loss, self.device, self.autocast = model, losses(kind, model, ids), ids.device, autocast
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
        self.best = {p: [float("inf"), float("inf")] for p in PHASES}
        self.best_step = float("inf")

    def __call__(self, record: bool = True) -> None:
        marks = [(time.perf_counter(), time.process_time())]

        def mark() -> None:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), time.process_time()))

        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.loss()
        mark()
        loss.backward()
        mark()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        mark()
        if record:
            for p, (a, b) in zip(PHASES, zip(marks, marks[1:])):
                self.best[p] = [min(self.best[p][0], b[0] - a[0]), min(self.best[p][1], b[1] - a[1])]
            self.best_step = min(self.best_step, marks[-1][0] - marks[0][0])

    def seconds(self, cpu: bool = False) -> float:
        return sum(v[int(cpu)] for v in self.best.values())


def profile(steps: dict[str, Step], rows: int) -> None:
    """The most expensive operators of one step of each model, by input shapes (forward and backward)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for k, step in steps.items():
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step(record=False)
        print(f"--- {k}: one step, operators by self CPU time")
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows,
                                                                 max_name_column_width=50,
                                                                 max_shapes_column_width=60))


def same_function(models: dict[str, torch.nn.Module], ids: torch.Tensor) -> None:
    """Both models have the same parameter count, are in training mode and give the same loss on `ids`."""
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    assert counts["olmo-core"] == counts["transformers"], f"shapes differ: {counts}"
    assert all(m.training for m in models.values())
    with torch.no_grad():  # same function: the two losses of the first sequences agree
        check = {k: float(losses(k, m, ids[:2])()) for k, m in models.items()}
    assert abs(check["olmo-core"] - check["transformers"]) < 1e-4, f"the models compute different losses: {check}"


def compare(run: Run, preset: str, batch: int, seq: int, repeats: int, device: str, autocast: bool, rows: int = 0,
            reference: bool = True) -> None:
    """Time both models (see the module docstring), or OLMo-core alone without `reference`; prints the table and
    records its figures, and the tokens/s ratio as a target, in `run`."""
    vocab = PRESETS[preset].vocab_size
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    ours = olmo_core_model(preset, vocab, device)
    models = {"olmo-core": ours}
    if reference:
        models["transformers"] = hf_model(preset, vocab, device, weights_from=ours)
        same_function(models, ids)
    params = sum(p.numel() for p in ours.parameters())

    steps = {k: Step(k, m, ids, autocast) for k, m in models.items()}
    for step in steps.values():  # warm-up (allocator, caches)
        step(record=False)
        step(record=False)
    order = list(steps)
    for r in range(repeats):
        for k in order if r % 2 == 0 else order[::-1]:
            steps[k]()
    if rows:
        profile(steps, rows)

    tokens, load = batch * seq, os.getloadavg()[0]
    print(f"{preset}: {params:,} params, batch {batch} x {seq} tokens, {device}"
          f"{' bf16' if autocast else ' fp32'}, {torch.get_num_threads()} threads, best of {repeats} "
          f"(load average {load:.1f} on {os.cpu_count()} cores)")
    print(f"  {'ms':14s} {'forward':>9s} {'backward':>9s} {'optimiser':>9s} {'step':>9s} {'cpu-step':>9s}"
          f" {'tokens/s':>9s}")
    for k, s in steps.items():
        print(f"  {k:14s} " + " ".join(f"{s.best[p][0] * 1e3:9.1f}" for p in PHASES)
              + f" {s.seconds() * 1e3:9.1f} {s.seconds(cpu=True) * 1e3:9.1f} {tokens / s.seconds():9.0f}")
    section = f"{preset} {device}"
    run.figures(section, params=params, batch=batch, seq=seq, device=device, autocast_bf16=autocast,
                threads=torch.get_num_threads(), repeats=repeats, load_average=load,
                **{k: timings(s, tokens) for k, s in steps.items()})
    a = steps["olmo-core"]
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        if peak:
            flops = 6 * params * tokens / a.seconds()
            print(f"  MFU (olmo-core, 6 N tokens/s over {name} dense bf16 peak): {flops / peak:.1%}")
            run.figures(section, mfu=flops / peak, peak_bf16_flops=peak)
    if reference:
        ratios(run, section, a, steps["transformers"])


def timings(step: Step, tokens: int) -> dict:
    """One model's row of the table: best phases (wall and CPU seconds), step, CPU step, tokens/s, whole step."""
    return {"phases_s": {p: step.best[p][0] for p in PHASES}, "phases_cpu_s": {p: step.best[p][1] for p in PHASES},
            "step_s": step.seconds(), "cpu_step_s": step.seconds(cpu=True), "tokens_per_s": tokens / step.seconds(),
            "whole_step_s": step.best_step}


def ratios(run: Run, section: str, a: Step, b: Step) -> None:
    """Print and record raretask (a) over transformers (b) in tokens/s; the wall-clock one is the target."""
    phase = "  ".join(f"{p} {b.best[p][0] / a.best[p][0]:.2f}" for p in PHASES)
    ratio, cpu_ratio = b.seconds() / a.seconds(), b.seconds(cpu=True) / a.seconds(cpu=True)
    print(f"  ratio raretask (olmo-core) / transformers, tokens/s: {ratio:.2f} wall clock, "
          f"{cpu_ratio:.2f} CPU time  (wall: {phase}; whole steps {b.best_step / a.best_step:.2f})")
    run.figures(section, ratio_wall=ratio, ratio_cpu=cpu_ratio, ratio_whole_steps=b.best_step / a.best_step,
                ratio_phases={p: b.best[p][0] / a.best[p][0] for p in PHASES})
    run.target(f"{section} olmo-core/transformers tokens/s", ratio, 1.0, ">=", "x")


def main() -> int:
    """Time the models, write the results file; the exit status: 0 target met, 1 missed, 2 no transformers."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu-600k", choices=[p for p in PRESETS if p.startswith("cpu")])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds (one step of each model per round)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--profile", type=int, default=0, metavar="K", help="print the K most expensive operators")
    add_out_argument(ap)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run("lm_throughput", args, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    reference = transformers_installed()
    if not reference:
        print("transformers is not installed: timing OLMo-core alone")
    compare(run, args.preset, args.batch, args.seq, args.repeats, "cpu", autocast=False, rows=args.profile,
            reference=reference)
    if torch.cuda.is_available():
        compare(run, "1B", 4, 4096, 3, "cuda", autocast=True, reference=reference)
    if not reference:
        return run.abort("transformers is not installed: OLMo-core timed alone, no ratio (pip install transformers)")
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
