"""Training-step throughput of the LM lab's OLMo-core model against the same-shape Hugging Face OLMo model.

    python benchmarks/lm_throughput.py [--preset cpu-600k] [--batch 16] [--seq 256] [--repeats 5]

One step = forward, cross-entropy over every position, backward, AdamW step (fp32 on the CPU). Both models are the
paper's OLMo-7B-0724 architecture at the same shape (non-parametric LayerNorm, SwiGLU, RoPE, clip_qkv 8, untied
embeddings); the script checks their parameter counts are equal before timing. The two are timed in alternation,
best of `--repeats` rounds, so machine drift hits both alike. Prints tokens/s of each and the ratio
(raretask / transformers; target >= 1.0).

`transformers` is not a dependency of raretask; install it only for this benchmark: `pip install transformers`.
With a CUDA device it also times the 1B preset (bf16 autocast, context 4096) and prints its MFU
(6 N tokens/s over the device's dense bf16 peak).
"""

from __future__ import annotations

import argparse
import time

import torch

from raretask.lm.models import PRESETS, LMModelConfig

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per device


def olmo_core_model(preset: str, vocab: int, device: str) -> torch.nn.Module:
    return LMModelConfig(preset=preset).build(vocab, init_device=device)


def hf_model(preset: str, vocab: int, device: str) -> torch.nn.Module:
    from transformers import OlmoConfig, OlmoForCausalLM

    s = PRESETS[preset]
    cfg = OlmoConfig(vocab_size=vocab, hidden_size=s.d_model, intermediate_size=s.mlp_hidden // 2,
                     num_hidden_layers=s.n_layers, num_attention_heads=s.n_heads, num_key_value_heads=s.n_heads,
                     clip_qkv=8.0, tie_word_embeddings=False, rope_theta=10_000.0, attention_bias=False,
                     max_position_embeddings=4096, pad_token_id=1, eos_token_id=0, bos_token_id=None)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)  # HF initialises from the global generator; this script is its only user
    return OlmoForCausalLM(cfg).to(device)


def make_step(model: torch.nn.Module, kind: str, ids: torch.Tensor, autocast: bool) -> callable:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    labels = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)  # next-token targets

    def step() -> None:
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
            if kind == "olmo-core":
                loss = model(ids, labels=labels).loss
            else:
                loss = model(input_ids=ids, labels=ids).loss  # HF shifts internally
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step: callable, device: str, n: int) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def compare(preset: str, batch: int, seq: int, repeats: int, steps: int, device: str, autocast: bool) -> None:
    vocab = PRESETS[preset].vocab_size
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    models = {"olmo-core": olmo_core_model(preset, vocab, device), "transformers": hf_model(preset, vocab, device)}
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    assert counts["olmo-core"] == counts["transformers"], f"shapes differ: {counts}"
    steps_fn = {k: make_step(m, k, ids, autocast) for k, m in models.items()}
    for fn in steps_fn.values():  # warm-up (allocator, kernels)
        fn()
        fn()
    best = {k: float("inf") for k in models}
    for _ in range(repeats):
        for k, fn in steps_fn.items():
            best[k] = min(best[k], timed(fn, device, steps))
    tokens = batch * seq
    tps = {k: tokens / v for k, v in best.items()}
    print(f"{preset}: {counts['olmo-core']:,} params, batch {batch} x {seq} tokens, {device}"
          f"{' bf16' if autocast else ' fp32'}, {torch.get_num_threads()} threads")
    for k in models:
        print(f"  {k:12s} {best[k] * 1e3:8.1f} ms/step  {tps[k]:10.0f} tokens/s")
    print(f"  ratio raretask (olmo-core) / transformers: {tps['olmo-core'] / tps['transformers']:.2f}")
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        flops = 6 * counts["olmo-core"] * tps["olmo-core"]
        if peak:
            print(f"  MFU (olmo-core, 6 N tokens/s over {name} dense bf16 peak): {flops / peak:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu-600k", choices=[p for p in PRESETS if p.startswith("cpu")])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    args = ap.parse_args()
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark compares against transformers: pip install transformers") from None
    compare(args.preset, args.batch, args.seq, args.repeats, args.steps, "cpu", autocast=False)
    if torch.cuda.is_available():
        compare("1B", 4, 4096, 3, 3, "cuda", autocast=True)


if __name__ == "__main__":
    main()
