"""The report of the LM lab's run directories, drawn from their tables alone:

  lm.sweep    the grid, the final numbers of every cell, and Fig. 5, 6a, 6b, 22, 23 where the grid has their axes
  lm.train    one run: final per-task numbers, requested vs realised injection rates, curves over training
  lm.corpus   a prepared corpus: its manifest
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from raretask.config import ConfigError
from raretask.report import advise, claims, lm_features, lm_interference
from raretask.report.html import Section, finished
from raretask.report.lm_figures import FIGURES, run_curves, sweep_figures


def _kind(run_dir: Path) -> str:
    return json.loads((Path(run_dir) / "meta.json").read_text()).get("kind")


def figures(run_dir: Path) -> list[Path]:
    """The figures of an LM run directory, drawn from its tables alone (a corpus has none)."""
    from raretask.lm.sweep import read_sweep
    from raretask.lm.train import read_result

    run_dir, kind = Path(run_dir), _kind(run_dir)
    if kind == "lm.sweep":
        finished(run_dir, "results.parquet")
        sweep = read_sweep(run_dir)
        return sweep_figures(sweep.results, sweep.curves, run_dir) + _nested_figures(run_dir)
    if kind == "lm.train":
        fig = run_curves(read_result(run_dir).metrics, run_dir / "curves.png")
        return ([] if fig is None else [fig]) + _nested_figures(run_dir)
    return []


def _nested_figures(run_dir: Path) -> list[Path]:
    """The figures of the analyses inside the run (features/, interference/, retention/)."""
    return lm_features.nested_figures(run_dir) + lm_interference.nested_figures(run_dir)


def _nested_sections(run_dir: Path) -> list[Section]:
    return lm_features.nested_sections(run_dir) + lm_interference.nested_sections(run_dir)


def sections(run_dir: Path) -> list[Section]:
    """The sections of an LM run directory, chosen by its meta.json kind."""
    run_dir = Path(run_dir)
    kind = _kind(run_dir)
    if kind == "lm.sweep":
        return sweep_sections(run_dir) + _nested_sections(run_dir)
    if kind == "lm.train":
        return train_sections(run_dir) + _nested_sections(run_dir)
    if kind == "lm.corpus":
        return corpus_sections(run_dir)
    raise ConfigError(f"{run_dir}: unknown LM run kind {kind!r}")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.{digits}f}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


# ---------------------------------------------------------------------------------------------------------- sweep


FIGURE_TEXT = {
    "fig5_heatmaps.png": (
        "Fig. 5: larger models learn rarer tasks",
        "Final task loss on the injected (train) instances and accuracy on never-injected test instances, argmax "
        "over the task's label set (chance: 1/2 for comparison, 1/100 for modular addition), by frequency (rows, "
        "most frequent at top) and model size (columns, smallest left); mean over seeds. In the paper only the "
        "larger models reach low loss and high accuracy at the lower frequencies."),
    "fig6a_task_loss.png": (
        "Fig. 6a: learning in the order of frequency",
        "Task train loss over training, one line per injection frequency; dashed: the model's loss on the "
        "corpus' own reference tasks (R_cmp: 'it has increased from {x} to' -> a larger number; R_add: "
        "'{x} + {y} =' -> the sum), when the corpus tokenizer can express them."),
    "fig6b_matched_frequency.png": (
        "Fig. 6b: matched frequency, different gaps",
        "N instances every N batches: the same long-run frequency with the instances bunched at larger gaps. "
        "In the paper larger gaps N give a higher task eval loss: what is learned from a burst decays before the "
        "next one (rare-task retention, Sec. 3.2)."),
    "fig22_task_vs_lm_loss.png": (
        "Fig. 22: task loss vs language-modelling loss",
        "Task eval loss against the held-out LM loss over training, one line per size. Where the lines coincide, "
        "size only buys sample efficiency; where larger models reach a lower task loss at the same LM loss (rarer "
        "tasks in the paper), they learn it differently."),
    "fig23_compute.png": (
        "Fig. 23: task loss vs compute",
        "Task eval loss against training compute C = 6 N D (N all parameters, D training tokens), one line per "
        "size; dashed: the compute-optimal frontier, the lowest loss any size reaches at that compute."),
}

SKIPPED = {
    "fig5_heatmaps.png": "Fig. 5 (needs two sizes or two frequencies)",
    "fig6a_task_loss.png": "Fig. 6a (needs a task at its own schedule)",
    "fig6b_matched_frequency.png": "Fig. 6b (needs two burst gaps N > 0 in sweep.gaps)",
    "fig22_task_vs_lm_loss.png": "Fig. 22 (needs the held-out loss, eval.heldout_tokens > 0)",
    "fig23_compute.png": "Fig. 23 (needs two sizes)",
    advise.FIGURE: (f"the threshold frequency f*(N) (needs two sizes whose test accuracy crosses "
                    f"{claims.THRESHOLD_ACCURACY:g} inside the frequency grid)"),
}


def sweep_sections(run_dir: Path) -> list[Section]:
    from raretask.lm.sweep import read_sweep

    sweep = read_sweep(run_dir)
    cfg, res = sweep.config, sweep.results
    drawn = {name: run_dir / name for name in FIGURES if (run_dir / name).is_file()}
    s = cfg.sweep
    tokens_per_step = cfg.train.global_batch_seqs * cfg.data.seq_len
    units = sorted({c.unit for c in sweep.cells})
    text = (f"{len(sweep.cells)} training runs: sizes {', '.join(s.sizes)} x frequencies "
            f"{', '.join(f'{f:g}' for f in s.frequencies)} ({', '.join(u.replace('_', ' ') for u in units)}) x "
            f"tasks {', '.join(sorted({'+'.join(c.tasks) for c in sweep.cells}))}"
            + (f" x gaps {', '.join(map(str, s.gaps))}" if s.gaps != [0] else "")
            + f" x seeds {', '.join(map(str, s.seeds))}. Each run: {cfg.train.steps:,} steps of "
            f"{cfg.train.global_batch_seqs} x {cfg.data.seq_len} = {tokens_per_step:,} tokens, corpus "
            f"{cfg.data.manifest}. Final numbers at the last evaluation; test accuracy over the task's label set "
            f"(acc vocab: over the whole vocabulary).")
    skipped = [SKIPPED[name] for name in FIGURES if name not in drawn]
    if skipped:
        text += " Not drawn, the grid lacks their axis: " + "; ".join(skipped) + "."
    head = ["cell", "size", "params", "task", "frequency", "gap", "seed", "train loss", "test loss", "test acc",
            "acc vocab", "held-out loss"]
    n = len(res.get("cell", []))
    table = [head] + [[res["cell"][i], res["size"][i], _fmt(res["params"][i]), res["task"][i] or "-",
                       f'{res["grid_frequency"][i]:g}', str(res["gap"][i]), str(res["seed"][i]),
                       _fmt(res["train_loss"][i]), _fmt(res["test_loss"][i]), _fmt(res["test_acc_labels"][i]),
                       _fmt(res["test_acc_vocab"][i]), _fmt(res["heldout_loss"][i])] for i in range(n)]
    sections = [Section("LM sweep: tasks injected at controlled frequencies (paper Sec. 4)", text, table=table)]
    sentences = figure_sentences(res, sweep.curves)
    for name, (title, caption) in FIGURE_TEXT.items():
        if name in drawn:
            sections.append(Section(title, caption, figures=[drawn[name]],
                                    captions={name: sentences[name]} if name in sentences else {}))
    return sections + advise.threshold_sections(res, run_dir)


def _unit(table: dict[str, list], rows: list[int]) -> str:
    units = {table["unit"][i] for i in rows} if "unit" in table else set()
    return "per batch" if units == {"per_batch"} else "per token"


def _change(what: str, a: float, small: str, b: float, large: str) -> str:
    """'what rises from a (small) to b (large)', in words that match the two-decimal numbers."""
    a2, b2 = round(a, 2), round(b, 2)
    if a2 == b2:
        return f"{what} is {a:.2f} at both {small} and {large}"
    return f"{what} {'rises' if b2 > a2 else 'falls'} from {a:.2f} ({small}) to {b:.2f} ({large})"


def figure_sentences(results: dict[str, list], curves: dict[str, list]) -> dict[str, str]:
    """One sentence per sweep figure (file name -> sentence), means over seeds as plotted: final values from
    results.parquet (each cell's last evaluation, the end points of the curves Fig. 6a, 6b and 23 draw), Fig. 22's
    comparison at equal held-out loss from curves.parquet."""
    out: dict[str, list[str]] = {}
    rows = claims.lm_rows(results)
    unit = _unit(results, rows)
    sizes = claims.sizes_by_params(results, rows)
    acc = claims.means(results, ("task", "grid_frequency", "size"), "test_acc_labels", rows)
    train = claims.means(results, ("task", "size", "grid_frequency"), "train_loss", rows)
    for task in dict.fromkeys(results["task"][i] for i in rows):
        task_rows = [i for i in rows if results["task"][i] == task]
        freqs = sorted({results["grid_frequency"][i] for i in task_rows}, reverse=True)
        small, large = sizes[0], sizes[-1]
        for f in sorted({freqs[0], freqs[-1]}) if len(sizes) > 1 else []:  # the rarest, then the most frequent
            a, b = acc.get((task, f, small), math.nan), acc.get((task, f, large), math.nan)
            out.setdefault("fig5_heatmaps.png", []).append(
                f"{task} at {f:g} {unit}: " + _change("test accuracy", a, small, b, large))
        if len(freqs) > 1:
            parts = [f"{s} " + " → ".join(_fmt(train.get((task, s, f), math.nan)) for f in freqs) for s in sizes]
            out.setdefault("fig6a_task_loss.png", []).append(
                f"{task}, final train loss from {freqs[0]:g} down to {freqs[-1]:g} {unit}: " + ", ".join(parts))
        e = claims.equal_lm_loss(curves, task)
        if e is not None:
            out.setdefault("fig22_task_vs_lm_loss.png", []).append(
                f"{task} at {e['frequency']:g} {unit}, at held-out loss {e['level']:.3g} (the lowest both reach): "
                f"task loss {e['small_loss']:.3g} ({e['small']}) and {e['large_loss']:.3g} ({e['large']})")
    gap_rows = [i for i in claims.lm_rows(results, gap=None) if results["gap"][i] > 0]
    gaps = sorted({results["gap"][i] for i in gap_rows})
    if len(gaps) > 1:
        loss = claims.means(results, ("task", "grid_frequency", "size", "gap"), "test_loss", gap_rows)
        for task, f, size in dict.fromkeys(k[:3] for k in loss):
            if size == claims.sizes_by_params(results, gap_rows)[-1]:
                out.setdefault("fig6b_matched_frequency.png", []).append(
                    f"{task} at {f:g} {_unit(results, gap_rows)}, {size}: final test loss at N = "
                    + ", ".join(f"{g}: {_fmt(loss.get((task, f, size, g), math.nan))}" for g in gaps))
    final = claims.means(results, ("task", "grid_frequency", "size"), "test_loss", rows)
    compute = claims.means(results, ("task", "grid_frequency", "size"), "compute", rows)
    for task in dict.fromkeys(results["task"][i] for i in rows):
        f = min(results["grid_frequency"][i] for i in rows if results["task"][i] == task)
        if len(sizes) > 1:
            out.setdefault("fig23_compute.png", []).append(
                f"{task} at {f:g} {unit}: final test loss " + ", ".join(
                    f"{_fmt(final.get((task, f, s), math.nan))} ({s}, C = {compute.get((task, f, s), math.nan):.2g})"
                    for s in sizes))
    return {name: "; ".join(parts) + "." for name, parts in out.items()}


# ---------------------------------------------------------------------------------------------------------- train


def train_sections(run_dir: Path) -> list[Section]:
    from raretask.lm.train import read_result

    result = read_result(run_dir)
    if not result.metrics.get("step"):
        raise ConfigError(f"{run_dir}: no metrics.parquet yet (has the run evaluated once?)")
    s = result.summary()
    meta = result.meta
    status = meta.get("status", "unknown")
    speed = None if s["tokens_per_s"] is None else round(s["tokens_per_s"])
    text = (f"Model {result.config.model.preset} ({result.config.model.arch}), {_fmt(s['params'])} parameters "
            f"({_fmt(s['non_embedding_params'])} non-embedding), vocabulary {_fmt(s['vocab_size'])}; "
            f"{_fmt(s['steps'])} steps, {_fmt(s['tokens'])} tokens, {_fmt(speed)} tokens/s on "
            f"{s['device']}; status {status}. Held-out LM loss {_fmt(s['heldout_loss'])}.")
    head = ["task", "kind", "frequency (per token)", "train loss", "test loss", "test acc (labels)",
            "test acc (vocab)", "reference loss"]
    table = [head] + [[t["name"], t["kind"], _fmt(t["frequency"]), _fmt(t["train_loss"]), _fmt(t["test_loss"]),
                       _fmt(t["test_acc_labels"]), _fmt(t["test_acc_vocab"]), _fmt(t["reference_loss"])]
                      for t in s["tasks"]]
    sections = [Section("LM training run: final numbers", text, table=table if s["tasks"] else None)]
    injections = meta.get("injections") or []
    if injections:
        rows = [["task", "instances", "requested per token", "realised per token", "requested per batch",
                 "realised per batch"]]
        rows += [[r["task"], _fmt(r["instances"]), _fmt(r["requested_per_token"]), _fmt(r["realised_per_token"]),
                  _fmt(r["requested_per_batch"]), _fmt(r["realised_per_batch"])] for r in injections]
        sections.append(Section("Injections", "Every injection is listed in injections.parquet.", table=rows))
    if (run_dir / "curves.png").is_file():
        sections.append(Section("Over training", "Evaluated every eval.every steps.", figures=[run_dir / "curves.png"]))
    return sections


# --------------------------------------------------------------------------------------------------------- corpus


def corpus_sections(run_dir: Path) -> list[Section]:
    from raretask.lm.corpus import Manifest

    m = Manifest.load(run_dir)
    rows = [["field", "value"]] + [[k, _fmt(v)] for k, v in m.summary().items()]
    meta = json.loads((run_dir / "meta.json").read_text())
    timings = meta.get("timings") or {}
    text = "A prepared corpus (raretask lm prepare): token files, tokenizer and manifest." + (
        " Stage times: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in timings.items()) + "." if timings else "")
    return [Section("LM corpus", text, table=rows)]
