"""Keep what a finished `raretask reproduce` run measured, so that the README's numbers about it can be traced to a
committed file: the run's wall time and experiments (from DIR/meta.json); every LM cell's final test accuracy and
losses; Fig. 7a's presence over training, its Spearman correlation with test accuracy, and DAS; Fig. 9's cosines at
the injections; and the scorecard's verdicts with their numbers, judged now by `raretask.report.scorecard`.

    python benchmarks/reproduce_record.py runs/reproduce-cpu [--out benchmarks/results/reproduce_cpu.json]

It trains nothing and has no target: exit 0 once the file is written, 2 when DIR is not a finished reproduce run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch

from raretask.analysis.after_injection import COSINES, interference_summary, read_analysis
from raretask.report import lm_features, scorecard

from record import Run, add_out_argument


def cells(sweep: Path) -> list[dict]:
    """Each cell of an LM sweep at its last evaluation, per task: the sweep's own results table."""
    r = pq.read_table(sweep / "results.parquet").to_pandas()
    keep = ["test_acc_labels", "test_loss", "train_loss", "heldout_loss"]
    return [{"cell": row.cell, "task": row.task, "step": int(row.step),
             **{k: round(float(getattr(row, k)), 6) for k in keep if getattr(row, k) == getattr(row, k)}}
            for row in r.sort_values(["cell", "task"]).itertuples()]


def at_injection(analysis: Path) -> list[dict]:
    """Fig. 9's numbers of an interference analysis: per run, the cosines with g_r at the injection steps, mean and
    standard deviation over the injections (the paper's "0.08 +- 0.02 at 1B"), as `raretask lm analyze --json`
    gives them."""
    result = read_analysis(analysis)
    lined = result.tables["after_injection"]
    injections = {c: n for c, k, n in zip(lined["cell"], lined["k"], lined["count"]) if k == 0}
    return [{"cell": r["cell"], "size": r["size"], "injections": injections.get(r["cell"]),
             **{f"{c}_{stat}": round(float(r[f"{c}_at_injection"][i]), 4) for c in COSINES
                for i, stat in enumerate(("mean", "std")) if f"{c}_at_injection" in r}}
            for r in interference_summary(result)["results"]]


def presence(analysis: Path) -> list[dict]:
    """Fig. 7a's numbers of a features analysis: per cell, the best layer's R² of the value order and the test
    accuracy at each checkpoint, their Spearman correlation over training (as on the report page), and DAS's best
    layer at the last one."""
    p = lm_features.presence(pq.read_table(analysis / "features.parquet").to_pandas())
    das = pq.read_table(analysis / "das.parquet").to_pandas()
    rows = []
    for cell, g in p[p.metric == "order_r2"].groupby("cell"):
        g = g.sort_values("step")
        d = das[das.cell == cell].sort_values("iia")
        rows.append({"cell": cell, "steps": g.step.tolist(), "r2": [round(float(v), 4) for v in g.presence],
                     "test_acc": [round(float(v), 4) for v in g.test_acc],
                     "spearman": round(lm_features.spearman(g.presence, g.test_acc), 4),
                     "das_best_layer": int(d.layer.iloc[-1]) if len(d) else None,
                     "das_iia": round(float(d.iia.iloc[-1]), 4) if len(d) else None})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a finished `raretask reproduce` directory")
    add_out_argument(ap)
    args = ap.parse_args()
    meta_path = args.run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    run = Run(f"reproduce_{meta.get('scale', 'unknown')}", args, torch.device("cpu"))
    if meta.get("kind") != "reproduce" or meta.get("status") != "finished":
        return run.abort(f"{args.run_dir}: not a finished `raretask reproduce` run")
    run.figures("run", scale=meta["scale"], git_commit=meta.get("git_commit"), created=meta.get("created"),
                wall_time_s=round(meta["wall_time_s"], 1), free_cores=meta.get("free_cores"),
                workers=meta.get("workers"), threads=meta.get("threads"), experiments=meta.get("experiments"))
    for sweep in sorted(p.parent for p in args.run_dir.glob("lm/*/meta.json")
                        if json.loads(p.read_text()).get("kind") == "lm.sweep"):
        run.figures(f"cells {sweep.relative_to(args.run_dir)}", cells=cells(sweep))
    for analysis in sorted(p.parent for p in args.run_dir.glob("lm/**/interference.parquet")
                           if (p.parent / "after_injection.parquet").is_file()):
        run.figures(f"fig9 {analysis.relative_to(args.run_dir)}", at_injection=at_injection(analysis))
    for analysis in sorted(p.parent for p in args.run_dir.glob("lm/**/features.parquet")):
        run.figures(f"fig7a {analysis.relative_to(args.run_dir)}", cells=presence(analysis))
    run.figures("scorecard", verdicts=[{"claim": v.claim.id, "text": v.claim.text, "verdict": v.verdict,
                                        "numbers": v.numbers, "criterion": v.claim.criterion}
                                       for v in scorecard.judge(args.run_dir)])
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
