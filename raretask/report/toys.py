"""The report of a `raretask synth toy` run (raretask.synthetic.toys): Example 7's update-and-forget (forget.png)
and Fig. 11's gated competition (fig11.png), drawn from the run's tables alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raretask.report import claims
from raretask.report.html import Section
from raretask.report.plotting import pyplot, save_figure
from raretask.synthetic.toys import column, read_toy


def figures(run_dir: Path) -> list[Path]:
    """forget.png (Example 7: deterministic decay, gaps of the seeded traces, traces vs mean field) and fig11.png
    (rare and frequent alignment over steps, one panel per width)."""
    result = read_toy(run_dir)
    plt, cfg, out, t = pyplot(), result.config, Path(result.out), result.tables
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(cfg.forget.lrs)))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    d, gp, tr, theta0 = t["decay"], t["gaps"], t["traces"], cfg.forget.theta0
    for color, lr in zip(colors, cfg.forget.lrs):
        g = column(d, "g", lr=lr)
        axes[0].plot(g, column(d, "ratio", lr=lr), color=color, lw=2.5, alpha=0.6, label=f"eta={lr:g}")
        axes[0].plot(g, (1 - 2 * lr) ** g, color="k", lw=0.8, ls="--")
        axes[0].plot(g, np.exp(-2 * lr * g), color="k", lw=0.8, ls=":")
        small = column(gp, "theta_start", lr=lr) <= theta0
        G = column(gp, "gap", lr=lr)[small]
        axes[1].scatter(G, column(gp, "ratio", lr=lr)[small], color=color, s=8, alpha=0.6, label=f"eta={lr:g}")
        axes[1].plot(np.sort(G), (1 - 2 * lr) ** np.sort(G), color="k", lw=0.8, ls="--")
        log_theta = np.mean([np.log(column(tr, "theta", lr=lr, seed=seed)) for seed in cfg.seeds], 0)
        steps = column(tr, "step", lr=lr, seed=cfg.seeds[0])
        axes[2].plot(steps, np.exp(log_theta), color=color, lw=2, alpha=0.7, label=f"eta={lr:g}")
        axes[2].plot(steps, column(tr, "mean_field", lr=lr, seed=cfg.seeds[0]), color="k", lw=0.8, ls="--")
    axes[0].set(yscale="log", xlabel="common steps g after the rare update", ylabel="theta_g / theta_0",
                title=f"Example 7: theta_0 = {theta0:g} (-- (1-2 eta)^g, : e^(-2 eta g))")
    axes[1].set(yscale="log", xlabel="gap G (common steps before the next rare one)",
                ylabel="theta at gap end / after rare update",
                title=f"seeded traces, gaps from theta <= {theta0:g} (-- (1-2 eta)^G)")
    axes[2].set(yscale="log", xlabel="step", ylabel="theta (geometric mean over seeds)",
                title=f"online SGD, p = {cfg.frequency:g} (-- mean field)")
    for ax in axes:
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths = [save_figure(fig, out / "forget.png")]

    c, widths = t["competition"], cfg.competition.widths
    fig, axes = plt.subplots(1, len(widths), figsize=(4.6 * len(widths), 3.6), sharey=True, squeeze=False)
    for ax, width in zip(axes[0], widths):
        rare, freq = ([column(c, key, width=width, seed=seed) for seed in cfg.seeds]
                      for key in ["rare_alignment", "frequent_alignment"])
        steps = column(c, "step", width=width, seed=cfg.seeds[0])
        for row in rare:
            ax.plot(steps, row, color="tab:red", lw=0.7, alpha=0.35)
        ax.plot(steps, np.mean(rare, 0), color="tab:red", lw=2.2, label=f"rare (q = {1 - cfg.frequency:.2g})")
        ax.plot(steps, np.mean(freq, 0), color="tab:blue", lw=2, ls="--", label=f"frequent (p = {cfg.frequency:g})")
        ax.set(xlabel="step", title=f"N = {width} neuron{'s' if width > 1 else ''}", ylim=(-0.03, 1.03))
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("task alignment 1 - l_k (thin: seeds)")
    fig.suptitle(f"Fig. 11: softmax-gated competition (beta = {cfg.competition.sharpness:g}, "
                 f"eta = {cfg.competition.lr:g}, d = {cfg.dim})", fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "fig11.png"))
    return paths


def sections(run_dir: Path) -> list[Section]:
    """The report of a finished toy run: Example 7's checks and Fig. 11."""
    result = read_toy(run_dir)
    run_dir, cfg, s = Path(run_dir), result.config, result.summary()
    decay = [["eta", "G", "theta_G/theta_0", "(1-2 eta)^G", "e^(-2 eta G)", "rel. error", "gaps", "max |rel. error|"]]
    for a, b in zip(s["decay"], s["gaps"]):
        med = "-" if b["max_relative_error"] is None else f"{b['max_relative_error']:.2%}"
        decay.append([f"{a['lr']:g}", str(a["gap"]), f"{a['ratio']:.4g}", f"{a['linear']:.4g}",
                      f"{a['exponential']:.4g}", f"{a['relative_error']:+.2%}", str(b["count"]), med])
    comp = [["N", "rare alignment (mean)", "min", "max", "frequent alignment", "seeds specialised"]]
    comp += [[str(e["width"]), f"{e['rare_alignment']:.3f}", f"{e['rare_alignment_min']:.3f}",
              f"{e['rare_alignment_max']:.3f}", f"{e['frequent_alignment']:.3f}", f"{e['specialised']:.0%}"]
             for e in s["competition"]]
    return [
        Section("Example 7: update-and-forget (App. C.4)",
                f"One unit neuron u = cos(theta) a + sin(theta) b, frequent task a with p = {cfg.frequency:g}, rare "
                f"task b with q = {1 - cfg.frequency:.2g}, online SGD. From theta_0 = {cfg.forget.theta0:g}, "
                f"G = {cfg.forget.gap} common steps shrink theta by (1 - 2 eta)^G (left; the table's first columns). "
                f"On seeded traces every gap between rare updates that starts at theta <= {cfg.forget.theta0:g} "
                f"does the same (middle; the largest relative error per eta), and the angle follows the mean-field "
                f"drift E[d theta] = eta (q - p) sin 2 theta (right).",
                figures=[run_dir / "forget.png"], table=decay,
                captions={"forget.png": forget_sentence(result.tables["decay"], cfg.forget.gap)}),
        Section("Fig. 11: competition over neurons",
                f"Neurons gated by a softmax over their alignments with each task (sharpness "
                f"{cfg.competition.sharpness:g}), seeds {cfg.seeds}. The paper's picture: one neuron goes to the "
                f"frequent task and the rare alignment decays to 0; with two, one neuron specialises to each task and "
                f"the rare alignment stays near 1. Measured at step {s['competition'][0]['step']}: "
                + "; ".join(f"N = {e['width']}: rare alignment {e['rare_alignment']:.3f} (mean over seeds)"
                            for e in s["competition"]) + ".",
                figures=[run_dir / "fig11.png"], table=comp,
                captions={"fig11.png": competition_sentence(result.tables["competition"])}),
    ]


def forget_sentence(decay: dict[str, list], gap: int) -> str:
    """Example 7 in words, from the decay table forget.png draws (scorecard claim S6's measurement)."""
    errs = claims.decay_errors(decay)
    lr = max(errs, key=errs.get)
    return (f"After G = {gap} common steps, theta_G / theta_0 is (1 - 2 eta)^G to within {errs[lr]:.2%} for every "
            f"eta (worst at eta = {lr:g}); e^(-2 eta G) is the small-eta limit.")


def competition_sentence(comp: dict[str, list]) -> str:
    """Fig. 11 in words: the rare task's final alignment per width, mean over seeds, from the competition table."""
    last = max(comp["step"])
    rare = claims.means(comp, ("width",), "rare_alignment", [i for i, s in enumerate(comp["step"]) if s == last])
    return (f"At step {last} the rare task's alignment (mean over seeds) is "
            + ", ".join(f"{v:.3f} with {w} neuron{'s' if w > 1 else ''}" for (w,), v in sorted(rare.items())) + ".")
