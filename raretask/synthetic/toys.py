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
from raretask.progress import progress_bar

FREQUENT, RARE = 0, 1
LINEAR_REGIME = 0.01  # warn when Example 7's (1 - 2 eta)^G law is expected to miss theta_G / theta_0 by more
TABLES = ["decay", "gaps", "traces", "competition", "neurons"]


@dataclass
class ForgetConfig(Config):
    lrs: list[float] = option(factory=lambda: [0.002, 0.005, 0.01, 0.02, 0.05], doc="SGD step sizes eta")
    gap: int = option(200, "G: common-task steps after the rare update (deterministic check)", ge=1)
    theta0: float = option(0.1, "theta right after the rare update (radians; the (1 - 2 eta)^G law is off by "
                                "~theta0^2/3: warns where that passes 1%, theta0 > ~0.16-0.17)")
    steps: int = option(1500, "length of each seeded online-SGD trace", ge=1)
    start: float = option(math.pi / 4, "theta at the start of the traces (pi/4: no preference)")


@dataclass
class CompetitionConfig(Config):
    widths: list[int] = option(factory=lambda: [1, 2], doc="numbers of neurons N")
    lr: float = option(0.05, "SGD step size eta")
    sharpness: float = option(10.0, "beta of the softmax gate over the neurons' alignments", ge=0)
    steps: int = option(1500, "online SGD steps", ge=1)
    every: int = option(5, "steps between logged points", ge=1)


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
        if not c.widths or min(c.widths) < 1 or len(set(c.widths)) != len(c.widths):
            raise ConfigError(f"competition.widths: need distinct widths >= 1, got {c.widths}")
        if not 0 < c.lr < 0.5:
            raise ConfigError(f"competition.lr: must be in (0, 0.5), got {c.lr}")
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
            ratio, linear = column(decay, "ratio", lr=lr)[-1], column(decay, "linear", lr=lr)[-1]
            out["decay"].append({"lr": lr, "gap": cfg.forget.gap, "ratio": float(ratio), "linear": float(linear),
                                 "exponential": float(column(decay, "exponential", lr=lr)[-1]),
                                 "relative_error": float(ratio / linear - 1)})
            small = column(gaps, "theta_start", lr=lr) <= cfg.forget.theta0  # the linear regime of Eq. 25
            err = np.abs(column(gaps, "ratio", lr=lr) / column(gaps, "linear", lr=lr) - 1)[small]
            out["gaps"].append({"lr": lr, "count": int(small.sum()), "theta_start_max": cfg.forget.theta0,
                                "max_relative_error": float(err.max()) if err.size else None})
        last = max(comp["step"])
        for width in cfg.competition.widths:
            rare = column(comp, "rare_alignment", width=width, step=last)
            freq = column(comp, "frequent_alignment", width=width, step=last)
            out["competition"].append({"width": width, "step": last, "rare_alignment": float(rare.mean()),
                                       "rare_alignment_min": float(rare.min()),
                                       "rare_alignment_max": float(rare.max()),
                                       "frequent_alignment": float(freq.mean()),
                                       "specialised": float((rare > 0.5).mean())})
        return out


def run_toy(cfg: ToyConfig, out: Path, *, progress: bool = True, overwrite: bool = False) -> ToyResult:
    """Both toys (seconds on a CPU): Parquet tables. A finished run in `out` is read back."""
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
    with progress_bar(None, eta=False, enabled=progress) as bar:
        task = bar.add_task("toys", total=len(phases)) if bar is not None else None
        for label, phase in phases:
            if bar is not None:
                bar.update(task, description=label)
            tables.update(phase())
            if bar is not None:
                bar.advance(task)
    result = ToyResult(out, cfg, tables)
    for name in TABLES:  # the tables last: together they mark the run finished
        runs.write_table(paths[name], tables[name])
    meta.finish(summary=result.summary())
    return result


# ----------------------------------------------------------------------------------------------- reading back


def column(table: dict[str, list], key: str, **where: Any) -> np.ndarray:
    """table[key] on the rows where every column named in `where` has the given value, in row order."""
    keep = np.ones(len(table[key]), bool)
    for name, value in where.items():
        keep &= np.asarray(table[name]) == value
    return np.asarray(table[key])[keep]


def read_toy(run_dir: Path) -> ToyResult:
    """A finished toy run, from its directory alone."""
    from raretask.config import load_config

    run_dir = Path(run_dir)
    if not all((run_dir / f"{name}.parquet").is_file() for name in TABLES):
        raise ConfigError(f"{run_dir}: missing toy tables (is the run finished?)")
    cfg = load_config(ToyConfig, run_dir / "config.toml")
    return ToyResult(run_dir, cfg, {name: runs.read_table(run_dir / f"{name}.parquet") for name in TABLES})
