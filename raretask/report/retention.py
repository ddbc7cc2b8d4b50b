"""Figures (Fig. 4 / 20) and the report section of a `raretask synth retention` run (raretask.synthetic.retention),
drawn from the run directory alone."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from raretask.report import claims
from raretask.report.html import Section
from raretask.report.plotting import pyplot, save_figure
from raretask.synthetic.retention import RareSchedule, RetentionResult, frequent_tasks, quiet, rare_task, read_retention


def _rows_by(table: dict[str, list], keys: tuple[str, ...]) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    for i in range(len(table[keys[0]])):
        out.setdefault(tuple(table[k][i] for k in keys), []).append(i)
    return out


def figures(run_dir: Path) -> list[Path]:
    """Fig. 4 / 20: s~_r and raw s_r traces with injection ticks and per-cycle gain / decay for every (G, N); the
    final raw s_r and s~_r heat maps over G x N; decay per cycle vs width; cos(G_r, G_F) over training."""
    result = read_retention(run_dir)
    plt, out, cfg = pyplot(), result.out, result.config
    gaps, widths, seeds = cfg.sweep.gaps, cfg.sweep.widths, cfg.sweep.seeds
    tr, cy = result.tables["trace"], result.tables["cycles"]
    trace_rows, cycle_rows = _rows_by(tr, ("gap", "width", "seed")), _rows_by(cy, ("gap", "width", "step"))
    fig, axes = plt.subplots(len(gaps), len(widths), figsize=(3.0 * len(widths), 2.0 * len(gaps)), squeeze=False,
                             sharex=True, layout="constrained")  # constrained: twin axes' labels do not collide
    for (i, G), (j, n) in itertools.product(enumerate(gaps), enumerate(widths)):
        ax, first = axes[i, j], True
        for seed in seeds:
            rows = trace_rows.get((G, n, seed), [])
            steps = [tr["step"][k] for k in rows]
            ax.plot(steps, [tr["signal_rare_corrected"][k] for k in rows], lw=0.7, color="C0",
                    label="s~_r" if first else None)
            ax.plot(steps, [tr["signal_rare"][k] for k in rows], lw=0.5, color="C1", alpha=0.8,
                    label="s_r (raw)" if first else None)
            ax.plot(steps, [tr["signal_frequent_corrected"][k] for k in rows], lw=0.6, color="0.6", ls="--",
                    label="s~_F (frequent)" if first else None)
            first = False
        if cfg.injection.schedule is RareSchedule.BURST:  # injection ticks along the bottom edge
            ax.vlines(range(0, cfg.train.steps, G), 0, 0.05, transform=ax.get_xaxis_transform(), color="C2", lw=0.5)
        per_cycle = sorted((t, np.mean([cy["gain"][k] for k in ks]), np.mean([cy["decay"][k] for k in ks]))
                           for (g, w, t), ks in cycle_rows.items() if g == G and w == n)
        twin = ax.twinx()  # right axis: mean over seeds of what each cycle gained and lost
        twin.plot([c[0] for c in per_cycle], [c[1] for c in per_cycle], ":", color="C2", lw=0.8, label="gain")
        twin.plot([c[0] for c in per_cycle], [c[2] for c in per_cycle], ":", color="0.3", lw=0.8, label="decay")
        twin.tick_params(labelsize=6, colors="0.4")
        ax.set_title(f"G={G}, N={n}", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == j == 0:
            ax.legend(fontsize=6, loc="upper left")
            twin.legend(fontsize=6, loc="center left")
    fig.supxlabel("step")
    fig.supylabel("signal (left); change of s~_r per cycle (right)")
    paths = [save_figure(fig, out / "retention_traces.png")]

    # raw s_r (compare widths on it) beside s~_r, whose zero-holding value -N/(d - N) falls with N
    fins = [(result.grid("signal_rare").mean(0), "final s_r, raw"), (result.grid("signal_rare_corrected").mean(0),
                                                                     "final s~_r")]  # (G, W) each
    low = min(0.0, *(float(np.nanmin(f)) for f, _ in fins))
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.6 * len(widths), 1.2 + 0.5 * len(gaps)), squeeze=False,
                             layout="constrained")
    for ax, (fin, label) in zip(axes[0], fins):
        im = ax.imshow(fin, cmap="viridis", vmin=low, vmax=1, aspect="auto")
        for (i, j), v in np.ndenumerate(fin):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set_title(f"{label} (mean over seeds)", fontsize=8)
        ax.set_xticks(range(len(widths)), [str(n) for n in widths])
        ax.set_yticks(range(len(gaps)), [str(G) for G in gaps])
        ax.set_xlabel("width N")
    axes[0, 0].set_ylabel("gap G")
    fig.colorbar(im, ax=axes[0].tolist())
    paths.append(save_figure(fig, out / "retention_final.png"))

    dec = result.grid("decay_per_cycle")  # (S, G, W)
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for i, G in enumerate(gaps):
        mean, lo, hi = (quiet(fn, dec[:, i]) for fn in (np.nanmean, np.nanmin, np.nanmax))
        ax.errorbar(widths, mean, yerr=[mean - lo, hi - mean], marker="o", capsize=2, label=f"G={G}")
    ax.set_xlabel("width N")
    ax.set_ylabel("decay per cycle  1 - a")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "retention_decay.png"))

    cos = result.tables["cosines"]
    fig, axes = plt.subplots(1, len(gaps), figsize=(3.0 * len(gaps), 2.6), squeeze=False, sharey=True)
    for (i, G), (j, n) in itertools.product(enumerate(gaps), enumerate(widths)):
        pts = sorted((t, np.mean([cos["cosine"][k] for k in ks])) for (g, w, t), ks in
                     _rows_by(cos, ("gap", "width", "step")).items() if g == G and w == n)
        axes[0, i].plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, label=f"N={n}",
                        color=plt.cm.viridis(j / max(len(widths) - 1, 1)))
        axes[0, i].set_title(f"G={G}", fontsize=8)
        axes[0, i].set_xlabel("step")
        axes[0, i].axhline(0, color="k", lw=0.4)
    axes[0, 0].set_ylabel("cos(G_r, G_F), mean over seeds")
    axes[0, -1].legend(fontsize=6)
    paths.append(save_figure(fig, out / "retention_cosine.png"))
    return paths


def _grid_table(result: RetentionResult, key: str) -> list[list[str]]:
    g, s = result.grid(key), result.config.sweep
    mean, lo, hi = (quiet(fn, g) for fn in (np.nanmean, np.nanmin, np.nanmax))
    return [["gap G"] + [f"N={n}" for n in s.widths]] + [
        [str(G)] + [f"{mean[i, j]:.3f} [{lo[i, j]:.3f}, {hi[i, j]:.3f}]" for j in range(len(s.widths))]
        for i, G in enumerate(s.gaps)]


def sections(run_dir: Path) -> list[Section]:
    """Report sections of a finished `synth retention` run directory."""
    result = read_retention(run_dir)
    run_dir, cfg = Path(run_dir), result.config
    mixture = cfg.mixture.build()
    r = rare_task(mixture, cfg.injection.rare)
    F = frequent_tasks(mixture, r, cfg.injection.rate, cfg.eval.frequent_mass)
    inj, B = cfg.injection, cfg.train.batch_size
    how = {RareSchedule.BURST: f"withheld for G steps, then m = G B rho_r = G x {B * inj.rate:.4g} of its samples "
                               f"in one batch of B = {B}",
           RareSchedule.INTERVAL: "spread evenly over the stream (one sample every 1/rho_r)",
           RareSchedule.IID: "drawn with probability rho_r for every sample"}[inj.schedule]
    cells = "Cells: mean over seeds [min, max]."
    d = mixture.dim
    captions = retention_captions(result)
    return [
        Section("Retention: final rare-task signal (gap G x width N)",
                f"Rare task {result.rare!r} at the matched rate rho_r = {inj.rate:.3g}, {how}; {cfg.train.steps} "
                f"steps. Table: the final raw signal s_r = Tr(P_W C_r) / Tr(C_r), the share of the rare task's "
                f"variance the encoder holds: \"a width holds more of the rare task\" is read on it. Figure: s_r and "
                f"the corrected s~_r = (s_r - N/d) / (1 - N/d) side by side (table below). s~_r is not comparable "
                f"across widths near 0: an encoder holding nothing of the rare task has s_r = 0 but s~_r = "
                f"-N/(d - N) ({', '.join(f'{-n / (d - n):.3f}' for n in cfg.sweep.widths)} at N = "
                f"{', '.join(str(n) for n in cfg.sweep.widths)}, d = {d}), so it can reverse a width ordering; at "
                f"one width both order the gaps alike. {cells}",
                figures=[run_dir / "retention_final.png"], table=_grid_table(result, "signal_rare"),
                captions=captions),
        Section("Retention: final corrected signal s~_r",
                f"s~_r of the same cells (compare it across gaps, not widths). {cells}",
                table=_grid_table(result, "signal_rare_corrected")),
        Section("Retention: s~_r over training",
                "Left axis: s~_r per seed (blue), raw s_r (orange) and the frequent set's s~_F (grey, dashed); green "
                "ticks: injections. Right axis (dotted, mean over seeds): each measured cycle's gain (peak minus "
                "start) and decay (peak minus the next start) of s~_r (cycles.parquet also has them on raw s_r).",
                figures=[run_dir / "retention_traces.png"], captions=captions),
        Section("Retention: decay per cycle",
                "1 - a, with a the least-squares slope through the origin of s_r at the next cycle's start on s_r at "
                f"the cycle's peak, over the cycles after {cfg.eval.fit_from:g} of training: the fraction of what "
                f"an injection left that is gone by the next one (1: update-and-forget, 0: kept). {cells}",
                figures=[run_dir / "retention_decay.png"], captions=captions,
                table=_grid_table(result, "decay_per_cycle")),
        Section("Retention: frequent tasks and gradient interference",
                f"Table: final s~_F of the frequent set F = {', '.join(mixture.names[k] for k in F)}. Figure: cosine "
                "between the encoder gradients of a fresh rare-task batch and a fresh frequent-set batch over "
                f"training. {cells}",
                figures=[run_dir / "retention_cosine.png"], captions=captions,
                table=_grid_table(result, "signal_frequent_corrected")),
    ]


def retention_captions(result: RetentionResult) -> dict[str, str]:
    """One sentence per figure, read from the tables it draws (final, cycles, cosines): the final s_r pattern
    (scorecard claim S5's numbers), what an injection adds and loses, the decay per cycle, the gradient cosine."""
    t = result.tables
    gaps, widths = result.config.sweep.gaps, result.config.sweep.widths
    pattern = claims.check_retention({"final": t["final"]})
    final = claims.means(t["final"], ("gap", "width"), "signal_rare")
    lo, hi = min(final, key=final.get), max(final, key=final.get)
    out = {"retention_final.png": "Final raw s_r (mean over seeds) " + (
        pattern.numbers.removeprefix("s_r ") if pattern.verdict != claims.NOT_RUN else
        f"from {final[lo]:.3f} (G = {lo[0]}, N = {lo[1]}) to {final[hi]:.3f} (G = {hi[0]}, N = {hi[1]})") + "."}
    cyc = t["cycles"]
    gain = claims.means(cyc, ("gap", "width"), "gain")
    loss = claims.means(cyc, ("gap", "width"), "decay")
    G = max(gaps)
    if (G, widths[0]) in gain and (G, widths[-1]) in gain:
        out["retention_traces.png"] = (
            f"At the largest gap G = {G}, a measured cycle's injection raises s~_r by {gain[G, widths[0]]:.3g} "
            f"(N = {widths[0]}) and {gain[G, widths[-1]]:.3g} (N = {widths[-1]}) on average, and the next cycle "
            f"starts {loss[G, widths[0]]:.3g} and {loss[G, widths[-1]]:.3g} below the peak.")
    dec = claims.means(t["final"], ("gap", "width"), "decay_per_cycle")
    if dec:
        lo, hi = min(dec, key=dec.get), max(dec, key=dec.get)
        more = sum(1 for n in widths if (G, n) in dec and (min(gaps), n) in dec and dec[G, n] > dec[min(gaps), n])
        out["retention_decay.png"] = (
            f"Decay per cycle from {dec[lo]:.3g} (G = {lo[0]}, N = {lo[1]}) to {dec[hi]:.3g} (G = {hi[0]}, N = "
            f"{hi[1]}); larger at G = {G} than at G = {min(gaps)} at {more} of {len(widths)} widths.")
    cos = claims.means(t["cosines"], ("gap", "width"), "cosine")
    if cos:
        lo, hi = min(cos, key=cos.get), max(cos, key=cos.get)
        out["retention_cosine.png"] = (
            f"cos(G_r, G_F) averaged over training and seeds ranges from {cos[lo]:.3f} (G = {lo[0]}, N = {lo[1]}) "
            f"to {cos[hi]:.3f} (G = {hi[0]}, N = {hi[1]}).")
    return out
