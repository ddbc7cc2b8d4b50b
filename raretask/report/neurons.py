"""Figures and the report section of a `raretask synth neurons` run (raretask.synthetic.neurons)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from raretask.config import load_config
from raretask.report.html import Section, finished
from raretask.report.plotting import pyplot, save_figure
from raretask.synthetic.neurons import NeuronsConfig, NeuronsResult
from raretask.synthetic.parity import Placement


def figures(run_dir: Path) -> list[Path]:
    """accuracy_vs_width.png, allocation.png (neurons per task heat map and one cell's Delta), solutions.png."""
    import pandas as pd

    finished(run_dir, "summary.json")
    result = NeuronsResult.load(run_dir)
    plt, cfg, out = pyplot(), result.config, Path(result.out)
    tasks, widths, res = cfg.tasks.build(), cfg.sweep.widths, pd.DataFrame(result.tables["results"])
    labels = [f"{n} (pi={f:.3g}, k={k})" for n, f, k in zip(tasks.names, tasks.frequencies, tasks.sizes)]
    grid = {key: res.pivot_table(index="task", columns="width", values=key).loc[tasks.names, widths].to_numpy()
            for key in ("accuracy", "neurons")}  # (K, W), means over seeds
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for k, label in enumerate(labels):
        ax.plot(widths, grid["accuracy"][k], "o-", label=label)
    ax.axhline(cfg.eval.learned, color="grey", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(n) for n in widths])
    ax.set(xlabel="neurons N", ylabel="final accuracy (mean over seeds)", ylim=(0.4, 1.02))
    ax.legend(fontsize=7)
    paths = [save_figure(fig, out / "accuracy_vs_width.png")]

    al, seed = pd.DataFrame(result.tables["allocation"]), cfg.sweep.seeds[0]
    n_show = result.solutions_width if result.solutions_width in widths else widths[len(widths) // 2]
    delta = al[(al.seed == seed) & (al.width == n_show)].pivot(index="neuron", columns="task", values="delta")
    neurons = grid["neurons"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
    im = a1.imshow(neurons, aspect="auto", cmap="viridis")
    for (k, j), v in np.ndenumerate(neurons):
        a1.text(j, k, f"{v:.1f}", ha="center", va="center", fontsize=7, color="w" if v < neurons.max() / 2 else "k")
    fig.colorbar(im, ax=a1, label="neurons allocated (mean over seeds)")
    a1.set_xticks(range(len(widths)), [str(n) for n in widths])
    a1.set_yticks(range(len(labels)), labels, fontsize=7)
    a1.set_xlabel("neurons N")
    im = a2.imshow(delta[tasks.names].to_numpy().T, aspect="auto", cmap="magma")
    fig.colorbar(im, ax=a2, label="Delta_ik (nats)")
    a2.set_yticks(range(len(labels)), tasks.names, fontsize=7)
    a2.set(xlabel="neuron i", title=f"ablation, N = {n_show}, seed {seed}")
    paths.append(save_figure(fig, out / "allocation.png"))

    if "solutions" in result.tables:
        target = tasks.names[cfg.target(tasks)]
        trace = pd.DataFrame(result.tables["solutions"]).groupby(["arm", "task", "step"]).accuracy.mean()
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for arm, ls in [("reweighted", "-"), ("natural", "--")]:
            for k, name in enumerate(tasks.names):
                ys = trace.loc[arm, name]
                ax.plot(ys.index, ys.to_numpy(), ls=ls, color=f"C{k}", lw=2.4 if name == target else 0.9,
                        label=f"{name}{' (target)' if name == target else ''}" if arm == "reweighted" else None)
        ax.axvline(cfg.solutions.steps_reweighted, color="k", lw=1, ls=":")
        ax.set(xlabel="step", ylabel="accuracy (mean over seeds)", ylim=(0.4, 1.02))
        ax.set_title(f"N = {result.solutions_width}: reweighted then natural (solid), natural only (dashed)",
                     fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        paths.append(save_figure(fig, out / "solutions.png"))
    return paths


def sections(run_dir: Path) -> list[Section]:
    """Report sections of a finished `synth neurons` run directory."""
    run_dir = Path(run_dir)
    finished(run_dir, "summary.json")
    cfg = load_config(NeuronsConfig, run_dir / "config.toml")
    summ = json.loads((run_dir / "summary.json").read_text())
    names, widths = [t["name"] for t in summ["tasks"]], cfg.sweep.widths
    head = ["task", "pi", "k", "subset"] + [f"N={n}" for n in widths]

    def grid(key: str, fmt: str) -> list[list[str]]:
        return [head] + [[t["name"], f"{t['frequency']:.3g}", str(t["bits"]), str(t["subset"])] +
                         [format(pw[key][t["name"]], fmt) for pw in summ["per_width"]] for t in summ["tasks"]]

    family = (f"{len(names)} sparse parities on {cfg.tasks.build().inputs} bits ({cfg.tasks.placement} placement"
              f"{f', {cfg.tasks.shared} shared bit(s)' if cfg.tasks.placement is Placement.CORE else ''}), "
              f"{cfg.activation} neurons, logistic loss, {cfg.train.steps} steps of {cfg.train.batch_size}.")
    captions = neuron_sentences(summ)
    sections = [
        Section("Neurons: accuracy vs width",
                f"{family} Final accuracy on the fixed evaluation set, mean over seeds {cfg.sweep.seeds}.",
                figures=[run_dir / "accuracy_vs_width.png"], table=grid("accuracy", ".3f"), captions=captions),
        Section("Neurons: allocation by ablation",
                f"Delta_ik = loss of task k with neuron i zeroed minus its loss; neuron i is allocated to task k if "
                f"Delta_ik > max({cfg.alloc.fraction:g} (log 2 - l_k), {cfg.alloc.floor:g} nats). Neurons per task, "
                "mean over seeds (a neuron may serve several tasks).",
                figures=[run_dir / "allocation.png"], table=grid("neurons", ".2f"), captions=captions),
    ]
    sol = summ["solutions"]
    if "skipped" in sol:
        sections.append(Section("Neurons: solutions exist", f"Not run: {sol['skipped']}."))
        return sections
    rows = [["arm", "when", "mean"] + [f"seed {s}" for s in cfg.sweep.seeds]]
    for arm, when, key in [("reweighted", "end of reweighted phase", "after_reweighting"),
                           ("reweighted", "end of natural phase", "after_natural"),
                           ("natural", "same step as the switch", "natural_only_at_switch"),
                           ("natural", "end", "natural_only")]:
        rows.append([arm, when, f"{sol[key]['mean']:.3f}"] + [f"{v:.3f}" for v in sol[key]["per_seed"]])
    sections.append(Section(
        "Neurons: solutions exist",
        f"Width N = {sol['width']}, target task {sol['task']}. Arm 'reweighted': {sol['steps'][0]} steps on the "
        f"reweighted mixture pi' = {[round(p, 3) for p in sol['reweighted_frequencies']]}, then {sol['steps'][1]} "
        f"on the natural one; arm 'natural': the same initialisation on the natural mixture throughout. Target-task "
        "accuracy:", figures=[run_dir / "solutions.png"], table=rows, captions=captions))
    return sections


LEARNED = 0.9
"""A parity counts as learned in the accuracy sentence at this final accuracy (mean over seeds; chance 0.5)."""


def neuron_sentences(summ: dict) -> dict[str, str]:
    """One sentence per figure from summary.json: where each task is learned, the widest width's allocation, and
    the solutions-exist arms."""
    tasks, per_width = summ["tasks"], summ["per_width"]
    order = sorted(tasks, key=lambda t: -t["frequency"])  # most frequent first
    first = {t["name"]: next((pw["width"] for pw in per_width if pw["accuracy"][t["name"]] >= LEARNED), None)
             for t in tasks}
    learned = ", ".join(f"{t['name']} (pi {t['frequency']:.3g}) at N = {first[t['name']]}" for t in order
                        if first[t["name"]] is not None)
    never = [t["name"] for t in order if first[t["name"]] is None]
    acc = f"Accuracy >= {LEARNED:g} first at: {learned or 'no task'}"
    acc += f"; not reached by {', '.join(never)} up to N = {per_width[-1]['width']}." if never else "."
    wide = per_width[-1]
    out = {"accuracy_vs_width.png": acc,
           "allocation.png": f"At N = {wide['width']}, neurons allocated per task (mean over seeds): "
                             + ", ".join(f"{t['name']} {wide['neurons'][t['name']]:.1f}" for t in order) + "."}
    sol = summ.get("solutions", {})
    if "skipped" not in sol and "after_reweighting" in sol:
        out["solutions.png"] = (f"Task {sol['task']} at N = {sol['width']}: accuracy "
                                f"{sol['after_reweighting']['mean']:.3f} after the reweighted phase and "
                                f"{sol['after_natural']['mean']:.3f} at the end, against "
                                f"{sol['natural_only']['mean']:.3f} on the natural mixture alone.")
    return out
