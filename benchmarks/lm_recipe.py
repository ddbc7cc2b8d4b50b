"""What the CPU LM preset learns: configs/lm/cpu.toml (cpu-150k, both built-in tasks injected, 600 steps) trained on
the embedded news corpus, its final per-task numbers written to benchmarks/results/lm_recipe.json.

    python benchmarks/lm_recipe.py [--work runs/bench/lm_recipe] [--preset cpu-150k] [--steps 600]

Target, fixed before the run: comparison reaches >= 0.6 test accuracy over its label set (chance 0.5). Modular
addition is recorded, not targeted: at this size and rate the preset does not learn it. About 5 minutes on one core.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from raretask.config import load_config
from raretask.lm.corpus import CorpusConfig, prepare
from raretask.lm.train import LMConfig, train

from record import ROOT, Run, add_out_argument

TARGET_ACCURACY = 0.6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "lm_recipe", help="corpus and run go here")
    ap.add_argument("--preset", default=None, help="model.preset override (default: the config's)")
    ap.add_argument("--steps", type=int, default=None, help="train.steps override (default: the config's)")
    add_out_argument(ap)
    args = ap.parse_args()
    run = Run("lm_recipe", args, torch.device("cpu"))
    corpus = args.work / "corpus"
    manifest = prepare(load_config(CorpusConfig, ROOT / "configs" / "lm" / "corpus" / "embedded.toml"), corpus,
                       progress=False)
    overrides = [f"data.manifest={corpus.resolve()}"] + ([f"model.preset={args.preset}"] if args.preset else []) + \
        ([f"train.steps={args.steps}"] if args.steps else [])
    cfg = load_config(LMConfig, ROOT / "configs" / "lm" / "cpu.toml", overrides)
    s = train(cfg, args.work / "run", progress=False, overwrite=True).summary()
    run.figures("corpus", train_tokens=manifest.train_tokens, vocab_size=manifest.vocab_size)
    run.figures("run", preset=cfg.model.preset, steps=s["steps"], tokens=s["tokens"], wall_time_s=s["wall_time_s"],
                tokens_per_s=s["tokens_per_s"], heldout_loss=s["heldout_loss"], params=s["params"])
    for t in s["tasks"]:
        run.figures(t["name"], **{k: t[k] for k in ("frequency", "train_loss", "test_loss", "test_acc_labels",
                                                    "test_acc_vocab")})
        print(f"{t['name']:18s} train loss {t['train_loss']:.3f}  test loss {t['test_loss']:.3f}  "
              f"test acc {t['test_acc_labels']:.3f} (labels)")
    comparison = next(t for t in s["tasks"] if t["kind"] == "comparison")
    run.target("comparison test accuracy (labels)", comparison["test_acc_labels"], TARGET_ACCURACY, ">=")
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
