"""The paper's competition toys (App. C.4): Example 7's one-neuron update-and-forget and Fig. 11's softmax-gated
competition of one vs two neurons for a frequent and a rare task.

The model. Two rank-1 tasks on orthonormal directions of R^d: the frequent task along a = e_1 (probability p), the
rare one along b = e_2 (q = 1 - p). N unit neurons u_i; with its optimal decoder a neuron leaves task k the loss
1 - m_ki^2, m_ki = u_i . c_k. The N neurons serve task k through a softmax gate on their alignments,

    l_k(U) = 1 - sum_i g_ki m_ki^2,      g_k = softmax_i(beta m_ki^2)     (beta = competition.sharpness)

a soft maximum over neurons of the captured fraction of the task. For N = 1 the gate is 1 and u = cos(theta) a +
sin(theta) b gives the paper's Eq. 23, l_a = sin^2 theta, l_b = cos^2 theta. (The paper does not spell out its gate;
this one makes the neurons compete: dl_k/dm_ki = -2 g_ki m_ki (1 + beta (m_ki^2 - sum_j g_kj m_kj^2)), so the
neuron best aligned with a task is pulled harder and a worse-aligned one is pushed away.)

Training: online SGD, one task drawn per step, a Riemannian gradient step on the sphere retracted by normalisation,
u_i <- normalise(u_i - eta (I - u_i u_i^T) dl_k/du_i). For N = 1 that is theta+ = theta -+ arctan(eta sin 2 theta)
(task a / b), the paper's theta -+ eta sin 2 theta + O(eta^3); in expectation E[d theta] = eta (q - p) sin 2 theta.

Example 7 (`forget`): after a rare update near theta = 0, G common steps shrink theta by (1 - 2 eta)^G ~ e^{-2 eta G}.
Checked (i) from theta_0 with G common steps in a row, for every eta, and (ii) on seeded online-SGD traces (tasks
drawn with p, q), gap by gap: theta at the end of each run of common steps over theta right after the rare update.
Fig. 11 (`competition`): N = 1 loses the rare task (its alignment -> 0); with N = 2 one neuron specialises to each
task and the rare alignment stays near 1.

    cfg = load_config(ToyConfig, "configs/synthetic/toy.toml")
    result = run_toy(cfg, Path("runs/toy"))
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raretask import runs
from raretask.config import Config, ConfigError, option

FREQUENT, RARE = 0, 1
LINEAR_REGIME = 0.01  # warn when Example 7's (1 - 2 eta)^G law is expected to miss theta_G / theta_0 by more
TABLES = ["decay", "gaps", "traces", "competition", "neurons"]


@dataclass
class ForgetConfig(Config):
    lrs: list[float] = option(factory=lambda: [0.002, 0.005, 0.01, 0.02, 0.05], doc="SGD step sizes eta")
    gap: int = option(200, "G: common-task steps after the rare update (deterministic check)")
    theta0: float = option(0.1, "theta right after the rare update (radians; the (1 - 2 eta)^G law is off by "
                                "~theta0^2/3: warns where that passes 1%, theta0 > ~0.16-0.17)")
    steps: int = option(1500, "length of each seeded online-SGD trace")
    start: float = option(math.pi / 4, "theta at the start of the traces (pi/4: no preference)")


@dataclass
class CompetitionConfig(Config):
    widths: list[int] = option(factory=lambda: [1, 2], doc="numbers of neurons N")
    lr: float = option(0.05, "SGD step size eta")
    sharpness: float = option(10.0, "beta of the softmax gate over the neurons' alignments")
    steps: int = option(1500, "online SGD steps")
    every: int = option(5, "steps between logged points")


@dataclass
class ToyConfig(Config):
    frequency: float = option(0.9, "p: probability of the frequent task (the rare task has q = 1 - p)")
    dim: int = option(8, "ambient dimension d (a = e_1, b = e_2; random neurons start anywhere in R^d)")
    seeds: list[int] = option(factory=lambda: [0, 1, 2, 3, 4], doc="seeds: task sequence and initial neurons")
    forget: ForgetConfig = option(factory=ForgetConfig, doc="Example 7: update-and-forget")
    competition: CompetitionConfig = option(factory=CompetitionConfig, doc="Fig. 11: 1 vs 2 neurons")

    def validate(self, path: str = "") -> None:
        super().validate(path)
        f, c = self.forget, self.competition
        if not 0.5 < self.frequency < 1:
            raise ConfigError(f"frequency: must be in (0.5, 1) (p > q = 1 - p > 0), got {self.frequency}")
        if self.dim < 2:
            raise ConfigError(f"dim: must be >= 2 (two task directions), got {self.dim}")
        if not self.seeds or min(self.seeds) < 0 or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: need distinct non-negative seeds, got {self.seeds}")
        if not f.lrs:
            raise ConfigError("forget.lrs: empty")
        for i, lr in enumerate(f.lrs):
            if not 0 < lr < 0.5:
                raise ConfigError(f"forget.lrs[{i}]: must be in (0, 0.5) so that 1 - 2 eta > 0, got {lr}")
        if not 0 < f.theta0 < math.pi / 2 or not 0 < f.start < math.pi / 2:
            bad = "forget.theta0" if not 0 < f.theta0 < math.pi / 2 else "forget.start"
            raise ConfigError(f"{bad}: must be an angle in (0, pi/2)")
        for name, value in [("forget.gap", f.gap), ("forget.steps", f.steps), ("competition.steps", c.steps),
                            ("competition.every", c.every)]:
            if value < 1:
                raise ConfigError(f"{name}: must be >= 1, got {value}")
        if not c.widths or min(c.widths) < 1 or len(set(c.widths)) != len(c.widths):
            raise ConfigError(f"competition.widths: need distinct widths >= 1, got {c.widths}")
        if not 0 < c.lr < 0.5:
            raise ConfigError(f"competition.lr: must be in (0, 0.5), got {c.lr}")
        if c.sharpness < 0:
            raise ConfigError(f"competition.sharpness: must be >= 0, got {c.sharpness}")
        err, lr = max((decay_law_error(f.theta0, lr, f.gap), lr) for lr in f.lrs)
        if err > LINEAR_REGIME:
            warnings.warn(f"forget.theta0 = {f.theta0:g} leaves Example 7's linear regime: theta_G / theta_0 is "
                          f"expected {err:.1%} off (1 - 2 eta)^G at eta = {lr:g} (~theta0^2/3: 1% at theta0 ~ 0.17)",
                          stacklevel=2)


# -------------------------------------------------------------------------------------------------- the model


class NeuronToy:
    """R independent copies of the toy (vectorised): unit neurons U (R, N, d), task directions C (2, d) = (a, b),
    step sizes lr (R,), gate sharpness beta. float64 throughout."""

    def __init__(self, U: np.ndarray, lr: np.ndarray | float, sharpness: float = 0.0):
        self.U = U / np.linalg.norm(U, axis=-1, keepdims=True)
        self.C = np.eye(U.shape[-1])[:2]
        self.lr = np.broadcast_to(np.asarray(lr, float), U.shape[:1])[:, None, None]
        self.beta = sharpness

    @classmethod
    def at_angle(cls, theta: np.ndarray, dim: int, lr: np.ndarray | float) -> NeuronToy:
        """One neuron per copy, u = cos(theta) a + sin(theta) b (Example 7's parametrisation)."""
        U = np.zeros((len(theta), 1, dim))
        U[:, 0, 0], U[:, 0, 1] = np.cos(theta), np.sin(theta)
        return cls(U, lr)

    @classmethod
    def random(cls, seeds: list[int], width: int, dim: int, lr: float, sharpness: float) -> NeuronToy:
        """Neurons drawn uniformly on the sphere, from a generator of (seed, width) alone."""
        U = np.stack([np.random.default_rng([seed, 1, width]).standard_normal((width, dim)) for seed in seeds])
        return cls(U, lr, sharpness)

    def gates(self, m: np.ndarray) -> np.ndarray:
        """softmax over neurons of beta m^2; m (..., N)."""
        z = self.beta * m**2
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def step(self, task: np.ndarray) -> None:
        """One SGD step of every copy on its task (R,) (0 = frequent, 1 = rare)."""
        c = self.C[task]  # (R, d)
        m = np.einsum("rnd,rd->rn", self.U, c)  # (R, N) alignments
        g = self.gates(m)
        captured = (g * m**2).sum(-1, keepdims=True)
        pull = g * m * (1 + self.beta * (m**2 - captured))  # -dl/dm_i / 2
        # Riemannian gradient: -dl/du_i projected on the tangent space of the sphere at u_i
        self.U = self.U + 2 * self.lr * pull[..., None] * (c[:, None, :] - m[..., None] * self.U)
        self.U /= np.linalg.norm(self.U, axis=-1, keepdims=True)

    def alignments(self) -> tuple[np.ndarray, np.ndarray]:
        """(captured fraction sum_i g_ki m_ki^2 = 1 - l_k (R, 2), per-neuron cosines m (R, 2, N))."""
        m = np.einsum("rnd,kd->rkn", self.U, self.C)
        return (self.gates(m) * m**2).sum(-1), m

    def angle(self) -> np.ndarray:
        """theta of the first neuron in the (a, b) plane: atan2(u . b, u . a), (R,)."""
        return np.arctan2(self.U[:, 0, 1], self.U[:, 0, 0])


def task_sequence(p: float, steps: int, seed: int) -> np.ndarray:
    """(steps,) tasks drawn i.i.d.: 0 (frequent) with probability p, else 1 (rare); the same for every width."""
    return (np.random.default_rng([seed, 0]).random(steps) >= p).astype(np.int64)


# ------------------------------------------------------------------------------------------------ experiments


def decay_law_error(theta0: float, lr: float, gap: int) -> float:
    """Expected relative error of theta_G / theta_0 against (1 - 2 eta)^G: the update's cubic term.

    theta+ = theta - arctan(eta sin 2 theta) = (1 - 2 eta) theta + (4/3) eta theta^3 + O(eta theta^5, eta^3 theta^3):
    the linear factor is exact and each step keeps a fraction 1 + (4/3) eta theta_g^2 / (1 - 2 eta) more. With
    theta_g ~ theta_0 rho^g, rho = 1 - 2 eta, the log error sums to
    theta_0^2 (1 - rho^(2G)) / (3 (1 - 2 eta)(1 - eta)) -> theta_0^2 / 3 (small eta, eta G >> 1). It passes
    LINEAR_REGIME = 1% at theta_0 = sqrt(0.03) ~ 0.17 (0.16 at eta = 0.05). Matches decay_table to ~theta_0^2
    relative (0.7% at theta_0 = 0.1, 2.5% at 0.3)."""
    rho = 1 - 2 * lr
    return math.expm1(theta0**2 * (1 - rho ** (2 * gap)) / (3 * (1 - 2 * lr) * (1 - lr)))


def decay_table(cfg: ToyConfig) -> dict[str, list]:
    """Example 7, deterministic: G common steps from theta_0, every eta at once; theta_g / theta_0 against
    (1 - 2 eta)^g and e^{-2 eta g}."""
    f = cfg.forget
    lrs = np.asarray(f.lrs)
    toy = NeuronToy.at_angle(np.full(len(lrs), f.theta0), cfg.dim, lrs)
    thetas = [toy.angle()]
    for _ in range(f.gap):
        toy.step(np.full(len(lrs), FREQUENT))
        thetas.append(toy.angle())
    theta = np.stack(thetas, 1)  # (eta, G + 1)
    g = np.arange(f.gap + 1)
    cols: dict[str, list] = {k: [] for k in ["lr", "g", "theta", "ratio", "linear", "exponential"]}
    for i, lr in enumerate(lrs):
        cols["lr"] += [float(lr)] * len(g)
        cols["g"] += g.tolist()
        cols["theta"] += theta[i].tolist()
        cols["ratio"] += (theta[i] / f.theta0).tolist()
        cols["linear"] += ((1 - 2 * lr) ** g).tolist()
        cols["exponential"] += np.exp(-2 * lr * g).tolist()
    return cols


def trace_tables(cfg: ToyConfig) -> tuple[dict[str, list], dict[str, list]]:
    """Example 7, seeded online SGD from theta = forget.start for every (eta, seed): the traces (with the
    mean-field solution tan theta_t = tan theta_0 e^{2 eta (q - p) t} of E[d theta] = eta (q - p) sin 2 theta) and
    one row per gap: a rare update followed by G >= 1 common steps (the last run may end with the trace)."""
    f, p = cfg.forget, cfg.frequency
    runs_ = [(lr, seed) for lr in f.lrs for seed in cfg.seeds]
    tasks = np.stack([task_sequence(p, f.steps, seed) for _, seed in runs_])  # (R, T)
    lrs = np.array([lr for lr, _ in runs_])
    toy = NeuronToy.at_angle(np.full(len(runs_), f.start), cfg.dim, lrs)
    theta = [toy.angle()]
    for t in range(f.steps):
        toy.step(tasks[:, t])
        theta.append(toy.angle())
    theta = np.stack(theta, 1)  # (R, T + 1): theta[:, t] after t steps
    steps = np.arange(f.steps + 1)
    traces: dict[str, list] = {k: [] for k in ["lr", "seed", "step", "theta", "task", "mean_field"]}
    gaps: dict[str, list] = {k: [] for k in ["lr", "seed", "step", "gap", "theta_start", "theta_end", "ratio",
                                             "linear"]}
    for i, (lr, seed) in enumerate(runs_):
        mean_field = np.arctan(math.tan(f.start) * np.exp(2 * lr * (1 - 2 * p) * steps))
        for k, v in [("lr", [lr] * len(steps)), ("seed", [seed] * len(steps)), ("step", steps.tolist()),
                     ("theta", theta[i].tolist()), ("task", tasks[i].tolist() + [-1]),  # -1: no step after the end
                     ("mean_field", mean_field.tolist())]:
            traces[k] += v
        rare = np.flatnonzero(tasks[i] == RARE).tolist()
        for t, nxt in zip(rare, rare[1:] + [f.steps]):
            G = nxt - t - 1  # common steps t+1 .. nxt-1 follow the rare update at step t
            if G < 1:
                continue
            start, end = theta[i, t + 1], theta[i, nxt]
            for k, v in [("lr", lr), ("seed", seed), ("step", t), ("gap", G), ("theta_start", float(start)),
                         ("theta_end", float(end)), ("ratio", float(end / start)), ("linear", (1 - 2 * lr) ** G)]:
                gaps[k].append(v)
    return traces, gaps


def competition_tables(cfg: ToyConfig) -> tuple[dict[str, list], dict[str, list]]:
    """Fig. 11: every width with random neurons, all seeds at once, the same task sequence per seed for every
    width; alignments (and each neuron's cosines and gates) every competition.every steps."""
    c = cfg.competition
    tasks = np.stack([task_sequence(cfg.frequency, c.steps, seed) for seed in cfg.seeds])  # (S, T)
    comp: dict[str, list] = {k: [] for k in ["seed", "width", "step", "frequent_alignment", "rare_alignment"]}
    neurons: dict[str, list] = {k: [] for k in ["seed", "width", "step", "neuron", "cos_frequent", "cos_rare",
                                                "gate_frequent", "gate_rare"]}
    for width in c.widths:
        toy = NeuronToy.random(cfg.seeds, width, cfg.dim, c.lr, c.sharpness)
        for t in range(c.steps + 1):
            if t % c.every == 0 or t == c.steps:
                captured, m = toy.alignments()
                gates = toy.gates(m)  # (S, 2, N)
                for s, seed in enumerate(cfg.seeds):
                    for k, v in [("seed", seed), ("width", width), ("step", t),
                                 ("frequent_alignment", float(captured[s, FREQUENT])),
                                 ("rare_alignment", float(captured[s, RARE]))]:
                        comp[k].append(v)
                    for n in range(width):
                        for k, v in [("seed", seed), ("width", width), ("step", t), ("neuron", n),
                                     ("cos_frequent", float(m[s, FREQUENT, n])), ("cos_rare", float(m[s, RARE, n])),
                                     ("gate_frequent", float(gates[s, FREQUENT, n])),
                                     ("gate_rare", float(gates[s, RARE, n]))]:
                            neurons[k].append(v)
            if t < c.steps:
                toy.step(tasks[:, t])
    return comp, neurons


# ---------------------------------------------------------------------------------------------------- the run


@dataclass
class ToyResult:
    out: Path
    config: ToyConfig
    tables: dict[str, dict[str, list]] = field(default_factory=dict)  # TABLES -> columns

    def summary(self) -> dict[str, Any]:
        """The `--json` object: Example 7's decay and gap checks per eta, Fig. 11's final alignments per width."""
        cfg, t = self.config, self.tables
        decay, gaps, comp = t["decay"], t["gaps"], t["competition"]
        out: dict[str, Any] = {"out": str(self.out), "frequency": cfg.frequency, "decay": [], "gaps": [],
                               "competition": []}
        for lr in cfg.forget.lrs:
            ratio, linear = _column(decay, "ratio", lr=lr)[-1], _column(decay, "linear", lr=lr)[-1]
            out["decay"].append({"lr": lr, "gap": cfg.forget.gap, "ratio": float(ratio), "linear": float(linear),
                                 "exponential": float(_column(decay, "exponential", lr=lr)[-1]),
                                 "relative_error": float(ratio / linear - 1)})
            small = _column(gaps, "theta_start", lr=lr) <= cfg.forget.theta0  # the linear regime of Eq. 25
            err = np.abs(_column(gaps, "ratio", lr=lr) / _column(gaps, "linear", lr=lr) - 1)[small]
            out["gaps"].append({"lr": lr, "count": int(small.sum()), "theta_start_max": cfg.forget.theta0,
                                "max_relative_error": float(err.max()) if err.size else None})
        last = max(comp["step"])
        for width in cfg.competition.widths:
            rare = _column(comp, "rare_alignment", width=width, step=last)
            freq = _column(comp, "frequent_alignment", width=width, step=last)
            out["competition"].append({"width": width, "step": last, "rare_alignment": float(rare.mean()),
                                       "rare_alignment_min": float(rare.min()),
                                       "rare_alignment_max": float(rare.max()),
                                       "frequent_alignment": float(freq.mean()),
                                       "specialised": float((rare > 0.5).mean())})
        return out


def run_toy(cfg: ToyConfig, out: Path, *, progress: bool = True, overwrite: bool = False) -> ToyResult:
    """Both toys (seconds on a CPU): Parquet tables, figures. A finished run in `out` is read back."""
    out = Path(out)
    runs.prepare_run_dir(out, cfg.to_toml(), overwrite=overwrite)
    paths = {name: out / f"{name}.parquet" for name in TABLES}
    if all(p.is_file() for p in paths.values()):
        return ToyResult(out, cfg, {name: runs.read_table(p) for name, p in paths.items()})
    meta = runs.RunMeta(out, kind="synth.toy", seeds=cfg.seeds)
    phases = [("Example 7: decay", lambda: {"decay": decay_table(cfg)}),
              ("Example 7: traces", lambda: dict(zip(["traces", "gaps"], trace_tables(cfg)))),
              ("Fig. 11: competition", lambda: dict(zip(["competition", "neurons"], competition_tables(cfg))))]
    tables: dict[str, dict[str, list]] = {}
    bar = _progress() if progress else None
    if bar:
        bar.start()
        task = bar.add_task("toys", total=len(phases))
    try:
        for label, phase in phases:
            if bar:
                bar.update(task, description=label)
            tables.update(phase())
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    result = ToyResult(out, cfg, tables)
    draw_figures(result)
    for name in TABLES:  # the tables last: together they mark the run finished
        runs.write_table(paths[name], tables[name])
    meta.finish(summary=result.summary())
    return result


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True))


# ---------------------------------------------------------------------------------------------- figures, report


def _column(table: dict[str, list], key: str, **where: Any) -> np.ndarray:
    """table[key] on the rows where every column named in `where` has the given value, in row order."""
    keep = np.ones(len(table[key]), bool)
    for name, value in where.items():
        keep &= np.asarray(table[name]) == value
    return np.asarray(table[key])[keep]


def draw_figures(result: ToyResult) -> list[Path]:
    """forget.png (Example 7: deterministic decay, gaps of the seeded traces, traces vs mean field) and fig11.png
    (rare and frequent alignment over steps, one panel per width)."""
    from raretask.report.plotting import pyplot as _plt, save_figure as _save

    plt, cfg, out, t = _plt(), result.config, Path(result.out), result.tables
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(cfg.forget.lrs)))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    d, gp, tr, theta0 = t["decay"], t["gaps"], t["traces"], cfg.forget.theta0
    for color, lr in zip(colors, cfg.forget.lrs):
        g = _column(d, "g", lr=lr)
        axes[0].plot(g, _column(d, "ratio", lr=lr), color=color, lw=2.5, alpha=0.6, label=f"eta={lr:g}")
        axes[0].plot(g, (1 - 2 * lr) ** g, color="k", lw=0.8, ls="--")
        axes[0].plot(g, np.exp(-2 * lr * g), color="k", lw=0.8, ls=":")
        small = _column(gp, "theta_start", lr=lr) <= theta0
        G = _column(gp, "gap", lr=lr)[small]
        axes[1].scatter(G, _column(gp, "ratio", lr=lr)[small], color=color, s=8, alpha=0.6, label=f"eta={lr:g}")
        axes[1].plot(np.sort(G), (1 - 2 * lr) ** np.sort(G), color="k", lw=0.8, ls="--")
        log_theta = np.mean([np.log(_column(tr, "theta", lr=lr, seed=seed)) for seed in cfg.seeds], 0)
        steps = _column(tr, "step", lr=lr, seed=cfg.seeds[0])
        axes[2].plot(steps, np.exp(log_theta), color=color, lw=2, alpha=0.7, label=f"eta={lr:g}")
        axes[2].plot(steps, _column(tr, "mean_field", lr=lr, seed=cfg.seeds[0]), color="k", lw=0.8, ls="--")
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
    paths = [_save(fig, out / "forget.png")]

    c, widths = t["competition"], cfg.competition.widths
    fig, axes = plt.subplots(1, len(widths), figsize=(4.6 * len(widths), 3.6), sharey=True, squeeze=False)
    for ax, width in zip(axes[0], widths):
        rare, freq = ([_column(c, key, width=width, seed=seed) for seed in cfg.seeds]
                      for key in ["rare_alignment", "frequent_alignment"])
        steps = _column(c, "step", width=width, seed=cfg.seeds[0])
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
    paths.append(_save(fig, out / "fig11.png"))
    return paths


def toy_sections(run_dir: Path) -> list[Any]:
    """The report of a finished toy run: Example 7's checks and Fig. 11."""
    from raretask.config import load_config
    from raretask.report.html import Section

    run_dir = Path(run_dir)
    if not all((run_dir / f"{name}.parquet").is_file() for name in TABLES):
        raise ConfigError(f"{run_dir}: missing toy tables (is the run finished?)")
    cfg = load_config(ToyConfig, run_dir / "config.toml")
    s = ToyResult(run_dir, cfg, {name: runs.read_table(run_dir / f"{name}.parquet") for name in TABLES}).summary()
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
                figures=[run_dir / "forget.png"], table=decay),
        Section("Fig. 11: competition over neurons",
                f"Neurons gated by a softmax over their alignments with each task (sharpness "
                f"{cfg.competition.sharpness:g}), seeds {cfg.seeds}. The paper's picture: one neuron goes to the "
                f"frequent task and the rare alignment decays to 0; with two, one neuron specialises to each task and "
                f"the rare alignment stays near 1. Measured at step {s['competition'][0]['step']}: "
                + "; ".join(f"N = {e['width']}: rare alignment {e['rare_alignment']:.3f} (mean over seeds)"
                            for e in s["competition"]) + ".",
                figures=[run_dir / "fig11.png"], table=comp),
    ]
