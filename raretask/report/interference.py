"""The report of a `raretask synth interference` run (raretask.synthetic.interference): the gradient metrics over
training and the final task-by-task cosines, drawn from the run's tables alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raretask.report.html import Section
from raretask.report.plotting import pyplot, save_figure
from raretask.synthetic.interference import nan_mean, projection_baseline, read_interference


def _by_width(table: dict[str, list], key: str, widths: list[int]) -> tuple[list[int], np.ndarray]:
    """(steps, (widths, steps) mean over seeds of table[key], NaN-aware)."""
    steps = sorted(set(table["step"]))
    acc = {(w, s): [] for w in widths for s in steps}
    for w, s, v in zip(table["width"], table["step"], table[key]):
        acc[(w, s)].append(v)
    return steps, np.array([[nan_mean(acc[(w, s)]) or np.nan for s in steps] for w in widths], float)


def figures(run_dir: Path) -> list[Path]:
    """interference.png (the metrics over training, one line per width) and cosines.png (final K x K cosines of the
    narrowest and widest cells, mean over seeds)."""
    result = read_interference(run_dir)
    plt, cfg, out, table = pyplot(), result.config, Path(result.out), result.table
    mix, F, r = cfg.probe()
    widths = cfg.sweep.widths
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(widths)))
    panels = [("frequent_norm_ratio", "||G_F|| / ||G_F|| at step 0", True),
              ("rare_projection", f"||G_F B_r|| / ||G_F||  (r = {mix.names[r]})", False),
              ("cos_rare_frequent", "cos(g_r, G_F)", False), ("rare_signal", "rare signal s_r", False)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, label, log) in zip(axes, panels):
        steps, values = _by_width(table, key, widths)
        for color, n, v in zip(colors, widths, values):
            ax.plot(steps, v, color=color, lw=1.6, label=f"N={n}")
        if key == "rare_projection":
            ax.axhline(projection_baseline(mix, r), color="k", ls=":", lw=1, label="isotropic sqrt(r_r/d)")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7, handles=axes[1].get_lines()[-1:])
    fig.suptitle(f"per-task encoder gradients ({cfg.interference.mode} probe), mean over seeds; "
                 f"F = {{{', '.join(mix.names[k] for k in F)}}}", fontsize=10)
    fig.tight_layout()
    paths = [save_figure(fig, out / "interference.png")]

    cos, last = result.cosines, max(result.cosines["step"])
    names = list(dict.fromkeys(cos["task"]))
    ends = sorted({widths[0], widths[-1]})
    fig, axes = plt.subplots(1, len(ends), figsize=(1.5 + 0.35 * len(names) * len(ends) + 2, 1.2 + 0.35 * len(names)),
                             squeeze=False)
    for ax, n in zip(axes[0], ends):
        acc = np.zeros((len(names), len(names)))
        cnt = np.zeros_like(acc)
        for st, w, a, b, v in zip(cos["step"], cos["width"], cos["task"], cos["other"], cos["cosine"]):
            if st == last and w == n and v is not None and np.isfinite(v):
                acc[names.index(a), names.index(b)] += v
                cnt[names.index(a), names.index(b)] += 1
        im = ax.imshow(np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names if n == ends[0] else [], fontsize=7)
        ax.set_title(f"N = {n}, step {last}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), label="cos(g_k, g_l)")
    paths.append(save_figure(fig, out / "cosines.png"))
    return paths


def sections(run_dir: Path) -> list[Section]:
    """The report of a finished interference run: the final metrics per width, the two figures."""
    result = read_interference(run_dir)
    run_dir, cfg, s = Path(run_dir), result.config, result.summary()
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    rows = [["width N", "||G_F||/||G_F||_0", "||G_F B_r||/||G_F||", "cos(g_r, G_F)", "mean cos", "s_r", "delta_F"]]
    rows += [[str(f["width"])] + [fmt(f[k]) for k in ["frequent_norm_ratio", "rare_projection", "cos_rare_frequent",
                                                        "mean_cosine", "rare_signal", "residual"]] for f in s["final"]]
    text = (f"Per-task gradients of the shared encoder ({s['mode']} probe: "
            f"{'the training step’s own batch' if s['mode'] == 'batch' else 'their expectation over x'}), "
            f"step {s['step']}, mean over seeds {cfg.sweep.seeds}. F = {{{', '.join(s['frequent_set'])}}}, rare task "
            f"r = {s['rare']}. ||G_F|| is the raw encoder gradient of the frequent tasks with the current "
            f"decoders; Thm 4's 2 sqrt(lambda_1(M_F) delta_F) does not bound it (that bound is for the gradient on "
            f"the subspace at optimal decoders), and it depends on the encoder's scale: W -> cW, D -> D/c leaves "
            f"every prediction unchanged and divides it by c. Its share along the rare task's directions B_r, "
            f"||G_F B_r|| / ||G_F||, and the cosines are scale-free; an isotropic gradient would put sqrt(r_r/d) = "
            f"{s['projection_baseline']:.3g} of its norm there.")
    return [Section("Gradient interference on the shared encoder", text, figures=[run_dir / "interference.png",
                                                                                   run_dir / "cosines.png"],
                    table=rows, captions=interference_sentences(s["final"], s["projection_baseline"], s["step"]))]


def interference_sentences(final: list[dict], baseline: float, step: int) -> dict[str, str]:
    """One sentence per figure from the final per-width metrics (mean over seeds), narrowest against widest."""
    rows = sorted((f for f in final if f.get("rare_projection") is not None), key=lambda f: f["width"])
    if len(rows) < 2:
        return {}
    a, b = rows[0], rows[-1]
    say = lambda key: f"{a[key]:.3g} (N = {a['width']}) to {b[key]:.3g} (N = {b['width']})"  # noqa: E731
    first = (f"At step {step}, the frequent set's gradient share along the rare task's directions goes from "
             f"{say('rare_projection')} (isotropic: {baseline:.3g})")
    if a.get("rare_signal") is not None and b.get("rare_signal") is not None:
        first += f", while the rare task's signal s_r goes from {say('rare_signal')}"
    out = {"interference.png": first + "."}
    if a.get("mean_cosine") is not None and b.get("mean_cosine") is not None:
        out["cosines.png"] = f"The mean task-by-task gradient cosine goes from {say('mean_cosine')}."
    return out
