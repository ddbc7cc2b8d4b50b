"""The report of a `raretask synth run` directory (paper Fig. 2): phase diagrams, observed vs predicted normalised
loss, and the theory table; drawn from the run's config.toml and results.parquet alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raretask import runs
from raretask.config import load_config
from raretask.report import claims, scorecard
from raretask.report.html import Section, finished
from raretask.report.plotting import pyplot, save_figure


def _mean_table(results: dict[str, list], rows: list[int], key: str, tasks: list[str], widths: list[int]) -> np.ndarray:
    """(tasks, widths) mean over seeds of results[key] restricted to `rows`."""
    acc = np.zeros((len(tasks), len(widths)))
    cnt = np.zeros_like(acc)
    t_of, w_of = {t: i for i, t in enumerate(tasks)}, {w: j for j, w in enumerate(widths)}
    for i in rows:
        a, b = t_of[results["task"][i]], w_of[results["width"][i]]
        acc[a, b] += results[key][i]
        cnt[a, b] += 1
    return acc / np.maximum(cnt, 1)


def phase_diagram(results: dict[str, list], rows: list[int], mixture: Any, widths: list[int], title: str,
                  path: Path) -> Path:
    """Fig. 2a: width x task normalised loss (tasks sorted by frequency), with the theory staircases m = 1, 2, 3."""
    plt = pyplot()
    order = sorted(range(mixture.num_tasks), key=lambda k: (-mixture.frequencies[k], k))
    tasks = [mixture.names[k] for k in order]
    table = _mean_table(results, rows, "normalised_loss", tasks, widths)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(widths), 1.2 + 0.32 * len(tasks)))
    im = ax.imshow(table, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="upper")
    fig.colorbar(im, ax=ax, label="normalised loss  l_k / Tr(C_k)")
    ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set_yticks(range(len(tasks)), [f"{t} (pi={mixture.frequencies[k]:.3g})" for t, k in zip(tasks, order)],
                  fontsize=7 if len(tasks) > 16 else 9)
    ax.set_xlabel("width N")
    ax.set_ylabel("task (most frequent at top)")
    styles = {1: ("white", "-"), 2: ("orange", "--"), 3: ("red", ":")}
    for m, (color, ls) in styles.items():
        stairs = mixture.staircase(m)[order]
        # boundary at the left edge of the first trained width >= N*_k(m); tasks without an m-th feature skip it
        xs = [np.searchsorted(widths, n) - 0.5 if np.isfinite(n) else np.nan for n in stairs]
        px, py = [], []
        for row, x in enumerate(xs):  # a vertical edge per task row, joined row to row (NaN breaks the line)
            px += [x, x]
            py += [row - 0.5, row + 0.5]
        ax.plot(px, py, color=color, ls=ls, lw=1.8, label=f"N*_k({m})")
    ax.set_xlim(-0.5, len(widths) - 0.5)
    ax.legend(loc="lower left", fontsize=7, framealpha=0.6)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def observed_vs_predicted(points: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> Path:
    """Fig. 2b: observed vs predicted normalised loss, one colour per grid point (e.g. per zipf exponent)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for label, predicted, observed in points:
        ax.scatter(predicted, observed, s=14, alpha=0.75, label=label)
    ax.plot([0, 1], [0, 1], color="k", lw=1, ls="--", label="y = x")
    ax.set_xlabel("predicted normalised loss (theory)")
    ax.set_ylabel("observed normalised loss (mean over seeds)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def sweep_figures(results: dict[str, list], cfg: Any, out: Path) -> list[Path]:
    """Fig. 2a for every grid point and Fig. 2b across them, from a sweep's results table, into `out`."""
    from raretask.synthetic.train import expand_grid, group_name, group_slug

    widths = cfg.sweep.widths
    paths, points = [], []
    points_grid = expand_grid(cfg)
    for assign, gcfg in points_grid:
        mixture = gcfg.mixture.build()
        rows = [i for i in range(len(results["task"])) if all(results[k][i] == v for k, v in assign.items())]
        name = group_name(assign)
        suffix = "" if len(points_grid) == 1 else "_" + group_slug(assign)
        title = f"phase diagram ({name})" if assign else "phase diagram"
        paths.append(phase_diagram(results, rows, mixture, widths, title, out / f"phase_diagram{suffix}.png"))
        tasks = mixture.names
        obs = _mean_table(results, rows, "normalised_loss", tasks, widths)
        pred = _mean_table(results, rows, "theory_normalised_loss", tasks, widths)
        points.append((name if assign else "all cells", pred.ravel(), obs.ravel()))
    paths.append(observed_vs_predicted(points, out / "observed_vs_predicted.png"))
    return paths


def figures(run_dir: Path) -> list[Path]:
    """Every figure of a finished `synth run` directory, from its config.toml and results.parquet alone."""
    from raretask.synthetic.train import SynthConfig

    run_dir = Path(run_dir)
    cfg = load_config(SynthConfig, run_dir / "config.toml")
    return sweep_figures(runs.read_table(finished(run_dir, "results.parquet")), cfg, run_dir)


def sweep_captions(tables: dict[str, Any]) -> dict[str, str]:
    """One sentence per figure of sweep_figures (file name -> sentence), read from the same results table and
    mixtures (scorecard.synthetic_tables): where each task is first held against the staircase, and how far the
    trained losses sit from theory."""
    from raretask.synthetic.train import group_slug

    res, widths, out, worst = tables["results"], tables["widths"], {}, None
    step = {w: i for i, w in enumerate(sorted(widths))}
    for point in tables["points"]:
        suffix = "" if len(tables["points"]) == 1 else "_" + group_slug(point["grid"])
        if point["orthogonal"]:  # the staircase N*_k(m) is defined for orthogonal task subspaces only
            out[f"phase_diagram{suffix}.png"] = _staircase_sentence(tables, point, step)
        rows = [i for i in range(len(res["task"])) if all(res[k][i] == v for k, v in point["grid"].items())]
        obs = claims.means(res, ("task", "width"), "normalised_loss", rows)
        pred = claims.means(res, ("task", "width"), "theory_normalised_loss", rows)
        for key in obs.keys() & pred.keys():
            err = abs(obs[key] - pred[key])
            if worst is None or err > worst[0]:
                worst = (err, key, point)
    if worst is not None:
        err, (task, width), point = worst
        name = ", ".join(f"{k} = {v}" for k, v in point["grid"].items())
        out["observed_vs_predicted.png"] = (
            f"Trained and theory normalised losses (means over seeds) differ by at most {err:.4f}, at task {task}, "
            f"N = {width}{' (' + name + ')' if name else ''}; points on the diagonal are cells where the run meets "
            "Theorem 3.")
    return out


def _staircase_sentence(tables: dict[str, Any], point: dict[str, Any], step: dict[int, int]) -> str:
    """Where each task of one grid point is first held, against the staircase N*_k(1)."""
    widths = tables["widths"]
    held, stairs = claims.held_widths(tables, point), claims.staircase_widths(point, widths)
    tasks = point["tasks"]
    on = sum(held[t["name"]] == stairs[t["name"]] for t in tasks)
    near = sum(abs(step.get(held[t["name"]], len(widths)) - step.get(stairs[t["name"]], len(widths))) <= 1
               for t in tasks)
    rarest = min(tasks, key=lambda t: t["frequency"])["name"]

    def where(n: int | None) -> str:
        return "beyond the sweep" if n is None else f"N = {n}"

    return (f"The first width at which a task holds its top direction (mean normalised loss <= 1 - "
            f"{claims.HELD_SHARE:g} λ_k1 / Tr C_k) is the staircase's N*_k(1) for {on} of {len(tasks)} tasks "
            f"(within one width step: {near}); the rarest, {rarest}, from {where(held[rarest])} (theory "
            f"{where(stairs[rarest])}).")


def sections(run_dir: Path) -> list[Section]:
    """The theory table and the trained-vs-theory figures of a finished `synth run` directory."""
    from raretask.synthetic.train import SynthConfig

    run_dir = Path(run_dir)
    cfg = load_config(SynthConfig, run_dir / "config.toml")
    summary = cfg.mixture.build().summary(cfg.sweep.widths, cfg.eval.frequent_mass)
    head = ["task", "pi", "rank"] + [f"N={n}" for n in cfg.sweep.widths]
    rows = [head] + [[t["name"], f"{t['frequency']:.3g}", str(t["rank"])] + [f"{v:.3f}" for v in
                                                                             t["normalised_loss"]]
                     for t in summary["tasks"]]
    res = runs.read_table(finished(run_dir, "results.parquet"))
    err = max(abs(a - b) for a, b in zip(res["normalised_loss"], res["theory_normalised_loss"]))
    grid = f" Shown for the base config; the sweep also ranges over {', '.join(cfg.sweep.grid)}." \
        if cfg.sweep.grid else ""
    figs = sorted(run_dir.glob("phase_diagram*.png")) + [run_dir / "observed_vs_predicted.png"]
    return [
        Section("Theory: normalised loss of the width-N optimum",
                "Closed form (Theorem 3): width N keeps the N highest-utility features u = pi_k lambda_kj." + grid,
                table=rows),
        Section("Synthetic sweep: trained vs theory",
                f"Every cell trained online; largest |observed - predicted| normalised loss over cells and seeds: "
                f"{err:.3f}.",
                figures=figs, captions=sweep_captions(scorecard.synthetic_tables(cfg, res))),
    ]
