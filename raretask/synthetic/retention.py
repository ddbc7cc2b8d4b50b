"""Rare-task retention across gaps: the matched-frequency injection (paper Sec. 3.2, Fig. 4 / Fig. 20, App. E.3).

    cfg = load_config(RetentionConfig, "configs/synthetic/retention.toml")
    result = run_retention(cfg, Path("runs/retention"))      # one batched training group per gap G; resumable

The rare task r (`injection.rare`) leaves the mixture's draw and is fed by a schedule at the long-run rate rho_r
(`injection.rate`, replacing pi_r); every other sample comes from the other tasks at pi_k / (1 - pi_r). The batch
always holds B samples. Steps t = 0, 1, ... (0-based); cycle c is the window of steps [cG, (c+1)G).

  burst     r is withheld except in the first batch of each cycle (step cG), which holds
            m_c = floor((c+1) mu) - floor(c mu) rare samples, mu = G B rho_r. This carry rule gives exactly
            floor(n mu) rare samples after n cycles (the long-run rate is rho_r for every G; m_c is floor(mu) or
            ceil(mu)). `injection.rounding = "exact"` refuses a mu that is not an integer instead. mu < 1 and
            ceil(mu) > B are refused.
  interval  as evenly as the stream allows, whatever G: step t holds floor((t+1) B rho_r) - floor(t B rho_r) rare
            samples: the i-th rare sample falls in the batch of sample number ceil(i / rho_r) (counting from 1).
  iid       every sample is r with probability rho_r independently (a Binomial(B, rho_r) count per step).
Under interval and iid, G only sets the measurement cycles. rho_r is read as the decimal written in the config
(exact rational arithmetic), so float round-off never moves a count. train.steps must be a multiple of every G: each
gap then ends right before an injection, and under burst every G sees the same floor(steps B rho_r) rare samples.

Measurements (exact, from the encoder's projector P_W as in train.Evaluator; s~ = (s - N/d) / (1 - N/d)), on
`eval.cycles` cycles per gap spread evenly over training (every cycle when 0):
  trace    s_r(t), s~_r(t), the frequent set's s_F(t) and s~_F(t) (s_F = Tr(P_W M_F) / Tr(M_F), M_F = sum_{k in F}
           pi_k C_k, F from the frequencies with pi_r replaced) and the rare samples seen so far: at the start of the
           cycle (`pre`, before its first batch), right after that batch (`post`), at `eval.between` evenly spaced
           points inside, and at the end of training.
  cycles   with Adam an injection's update lands over ~1/(1 - beta_1) = 10 steps, so the cycle's peak is the highest
           s_r measured inside it (post or between). gain_c = s~(peak_c) - s~(pre_c), the rise after the injection;
           decay_c = s~(peak_c) - s~(pre_{c+1}), what is lost before the next one; gain_raw, decay_raw: the same on s_r.
  fit      retention per cycle a = least-squares slope through the origin of s_r(pre_{c+1}) on s_r(peak_c) over the
           cycles after `eval.fit_from` of training, on raw s_r, whose fully forgotten state is 0 (the rare
           directions rotated out of span(W)). Decay per cycle delta = 1 - a: the fraction of the signal held after an
           injection that is gone by the next one (~1: update-and-forget; ~0: kept). Rate per step
           kappa = -ln(a) / G: the exponential decay that loses as much over one gap (Example 7: e^{-2 eta G}).
  final    s_r, s~_r, s_F, s~_F and the fit of every cell after train.steps.
  cosines  cos(G_r, G_F) per cell: the encoder gradients of the batch loss on a fresh rare-only batch and on a fresh
           frequent-set batch (`eval.grad_batch` samples each, from their own per-seed generators) at the start of
           every measured cycle and at the end.

Across widths compare raw s_r, the share of r's variance inside span(W): s~ subtracts the chance level N/d of a
random subspace, but a trained encoder is not random, and one that holds nothing of r has s_r = 0, so
s~_r = -N/(d - N), lower the wider it is: s~ can reverse a width ordering among cells that hold little of r. At one
width s~ is an increasing affine function of s_r, so orderings across gaps agree.

Writes DIR/{trace,cycles,cosines,final}.parquet, DIR/retention_{traces,final,decay,cosine}.png and per gap
DIR/groups/gap=<G>/ (its tables; checkpoint.pt while it trains; final.parquet marks it finished; with
`eval.save_encoders`, encoders/step=<t>.pt: every cell's W at each measured cycle start and at the end, see
save_encoders).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raretask import runs, theory
from raretask.config import Config, ConfigError, StrEnum, option
from raretask.devices import choose_threads, resolve_device, torch_threads
from raretask.progress import progress_bar
from raretask.synthetic.mixture import Mixture, MixtureConfig, TaskStream
from raretask.synthetic.model import SweepStudent
from raretask.synthetic.train import EvalConfig, ModelConfig, SweepConfig, SweepTrainer, SynthConfig, TrainConfig


class RareSchedule(StrEnum):
    BURST = "burst"
    IID = "iid"
    INTERVAL = "interval"


class Rounding(StrEnum):
    CARRY = "carry"
    EXACT = "exact"


@dataclass
class InjectionConfig(Config):
    rare: str = option("rarest", "task r: rarest (lowest pi), lowest_utility (lowest pi_k Tr(C_k)) or a task name")
    rate: float = option(6e-4, "rho_r: long-run share of samples from task r (replaces its pi_r)")
    schedule: RareSchedule = option(RareSchedule.BURST, "burst (G B rho_r samples every G steps), interval, iid")
    rounding: Rounding = option(Rounding.CARRY, "burst, G B rho_r not an integer: carry (floor/ceil) or exact (refuse)")


@dataclass
class RetentionEvalConfig(Config):
    between: int = option(2, "evaluations evenly spaced inside each cycle (besides before and after its first step)")
    cycles: int = option(64, "cycles measured per gap, evenly spread over training (0 = every cycle)")
    grad_batch: int = option(512, "samples in each fresh batch whose encoder gradients G_r, G_F are compared")
    frequent_mass: float = option(0.8, "F = smallest top-frequency set with at least this mass (pi_r replaced)")
    fit_from: float = option(0.5, "the decay fit uses the cycles after this fraction of training")
    save_encoders: bool = option(False, "write every cell's encoder W at each measured cycle start (and the end) to "
                                        "DIR/groups/gap=<G>/encoders/step=<t>.pt")


@dataclass
class RetentionSweepConfig(Config):
    gaps: list[int] = option(factory=lambda: [16, 64, 256], doc="injection gaps G in steps (one training group each)")
    widths: list[int] = option(factory=lambda: [2, 4, 8], doc="encoder widths N")
    seeds: list[int] = option(factory=lambda: [0], doc="seeds (init and data stream of each cell)")


@dataclass
class RetentionConfig(Config):
    mixture: MixtureConfig = option(factory=MixtureConfig, doc="the task mixture (pi_r is replaced by the schedule)")
    model: ModelConfig = option(factory=ModelConfig, doc="the student")
    train: TrainConfig = option(factory=TrainConfig, doc="optimisation (every G sees the same)")
    injection: InjectionConfig = option(factory=InjectionConfig, doc="the rare task and its schedule")
    eval: RetentionEvalConfig = option(factory=RetentionEvalConfig, doc="measurements")
    sweep: RetentionSweepConfig = option(factory=RetentionSweepConfig, doc="gaps x widths x seeds")

    def resolve_paths(self, base: Path) -> None:
        self.mixture.resolve_paths(base)

    def synth_config(self) -> SynthConfig:
        """The SweepTrainer's view: same mixture, model and optimisation, this sweep's widths and seeds."""
        return SynthConfig(mixture=self.mixture, model=self.model, train=self.train,
                           eval=EvalConfig(frequent_mass=self.eval.frequent_mass),
                           sweep=SweepConfig(widths=self.sweep.widths, seeds=self.sweep.seeds))

    def validate(self, path: str = "") -> None:
        self.synth_config().validate()  # mixture, train.*, sweep.widths and sweep.seeds, as for `synth run`
        inj, e, s, B = self.injection, self.eval, self.sweep, self.train.batch_size
        mixture = self.mixture.build()
        if mixture.num_tasks < 2:
            raise ConfigError("mixture.tasks: the retention protocol needs a rare task and at least one other")
        if not 0 < inj.rate < 1:
            raise ConfigError(f"injection.rate: rho_r must be in (0, 1), got {inj.rate}")
        r = rare_task(mixture, inj.rare)
        if not frequent_tasks(mixture, r, inj.rate, e.frequent_mass):
            raise ConfigError(f"eval.frequent_mass: the frequent set is empty once {mixture.names[r]!r} is removed")
        for name, value, low in [("eval.between", e.between, 0), ("eval.cycles", e.cycles, 0),
                                 ("eval.grad_batch", e.grad_batch, 1)]:
            if value < low:
                raise ConfigError(f"{name}: must be >= {low}, got {value}")
        if not 0 <= e.fit_from < 1:
            raise ConfigError(f"eval.fit_from: must be in [0, 1), got {e.fit_from}")
        for n in s.widths:
            if n >= mixture.dim:
                raise ConfigError(f"sweep.widths: width {n} must be < mixture.dim = {mixture.dim} (s~ is undefined "
                                  f"at N = d)")
        if not s.gaps:
            raise ConfigError("sweep.gaps: empty")
        if len(set(s.gaps)) != len(s.gaps):
            raise ConfigError("sweep.gaps: values repeat")
        for G in s.gaps:
            if G < 1:
                raise ConfigError(f"sweep.gaps: G must be >= 1, got {G}")
            if self.train.steps % G:
                raise ConfigError(f"train.steps: must be a multiple of every gap in sweep.gaps (lcm "
                                  f"{math.lcm(*s.gaps)}), got {self.train.steps}")
            if inj.schedule is not RareSchedule.BURST:
                continue
            mu = G * B * _exact(inj.rate)
            if mu < 1:
                raise ConfigError(f"sweep.gaps: G = {G} gives G B rho_r = {float(mu):.4g} < 1 rare sample per "
                                  f"injection (raise G or injection.rate)")
            if math.ceil(mu) > B:
                raise ConfigError(f"sweep.gaps: G = {G} gives m = {math.ceil(mu)} rare samples per injection > "
                                  f"train.batch_size = {B} (lower G or injection.rate)")
            if inj.rounding is Rounding.EXACT and mu.denominator != 1:
                raise ConfigError(f"injection.rounding: G B rho_r = {float(mu):.6g} for G = {G} is not an integer "
                                  f"(use carry, or change injection.rate)")


def _exact(rate: float) -> Fraction:
    return Fraction(repr(rate))  # the decimal written in the config, exactly


def rare_task(mixture: Mixture, choice: str) -> int:
    """Index of r: `rarest` = lowest pi_k, `lowest_utility` = lowest pi_k Tr(C_k) (ties: the later task), or a name."""
    K = mixture.num_tasks
    if choice == "rarest":
        return min(range(K), key=lambda k: (mixture.frequencies[k], -k))
    if choice == "lowest_utility":
        return min(range(K), key=lambda k: (mixture.frequencies[k] * mixture.traces[k], -k))
    if choice in mixture.names:
        return mixture.names.index(choice)
    raise ConfigError(f"injection.rare: unknown task {choice!r} (rarest, lowest_utility or one of "
                      f"{', '.join(mixture.names)})")


def matched_frequencies(mixture: Mixture, r: int, rate: float) -> np.ndarray:
    """pi': task r at rate rho_r, every other task at pi_k (1 - rho_r) / (1 - pi_r). (K,)"""
    pi = mixture.frequencies * (1 - rate) / (1 - mixture.frequencies[r])
    pi[r] = rate
    return pi


def frequent_tasks(mixture: Mixture, r: int, rate: float, mass: float) -> list[int]:
    return [k for k in theory.frequent_set(matched_frequencies(mixture, r, rate), mass) if k != r]


# ----------------------------------------------------------------------------------------------------- schedule


class InjectionSchedule:
    """Task counts (S, K) of every step of one gap's run: r by the schedule, the other B - m_r from a multinomial
    over the other tasks. Per-seed generators: a seed's counts never depend on the other seeds of the sweep."""

    def __init__(self, frequencies: np.ndarray, rare: int, rate: float, kind: RareSchedule, gap: int,
                 batch_size: int, seeds: list[int]):
        self.rare, self.kind, self.gap, self.B = rare, RareSchedule(kind), gap, batch_size
        others = np.asarray(frequencies, float).copy()
        others[rare] = 0.0
        self.others = torch.as_tensor(others / others.sum())
        self.rate, self.fraction = rate, _exact(rate)
        self.generators = [torch.Generator().manual_seed((s * 6_364_136_223 + 1_442_695) % 2**63) for s in seeds]

    def cumulative(self, steps: int) -> int:
        """Rare samples in steps [0, steps) (burst, interval: the same for every seed)."""
        if self.kind is RareSchedule.BURST:
            return math.floor(-(-steps // self.gap) * self.gap * self.B * self.fraction)  # cycles started so far
        if self.kind is RareSchedule.INTERVAL:
            return math.floor(steps * self.B * self.fraction)
        raise ValueError("iid counts are random: read them from counts()")

    def counts(self, step: int) -> torch.Tensor:
        """(S, K) int64 task counts of batch `step`; each row sums to B."""
        rows = []
        for g in self.generators:
            if self.kind is RareSchedule.IID:
                m = int(torch.binomial(torch.tensor(float(self.B), dtype=torch.float64),
                                       torch.tensor(self.rate, dtype=torch.float64), generator=g))
            else:
                m = self.cumulative(step + 1) - self.cumulative(step)
            row = torch.zeros(len(self.others), dtype=torch.int64)
            if m < self.B:
                row += torch.bincount(torch.multinomial(self.others, self.B - m, replacement=True, generator=g),
                                      minlength=len(self.others))
            row[self.rare] = m
            rows.append(row)
        return torch.stack(rows)

    def state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def load_state(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s)


# --------------------------------------------------------------------------------------------------- measurement


class RetentionProbe:
    """Per cell: the exact raw signals s_r and s_F, and cos(G_r, G_F) on fresh probe batches."""

    def __init__(self, mixture: Mixture, rare: int, frequent: list[int], pi: np.ndarray, seeds: list[int],
                 device: torch.device, grad_batch: int):
        self.mixture, self.rare, self.frequent, self.grad_batch = mixture, rare, frequent, grad_batch
        tasks = [rare] + frequent
        self.A = torch.as_tensor(mixture.teachers()[tasks], dtype=torch.float64, device=device)  # (1+|F|, r, d)
        self.trace_r = float(mixture.traces[rare])
        w = torch.as_tensor(pi[frequent], dtype=torch.float64, device=device)
        self.w_F = w / float((w * torch.as_tensor(mixture.traces[frequent], device=device)).sum())  # 1 / Tr(M_F)
        self.stream = TaskStream(mixture, seeds, device)  # probe batches: own generators, training stream untouched
        for g, s in zip(self.stream.generators, seeds):
            g.manual_seed((s * 40_503 + 2_718_281) % 2**63)
        self.p_F = torch.zeros(mixture.num_tasks, dtype=torch.float64, device=device)
        self.p_F[frequent] = torch.as_tensor(pi[frequent] / pi[frequent].sum(), device=device)

    @torch.no_grad()
    def signals(self, student: SweepStudent) -> tuple[np.ndarray, np.ndarray]:
        """Raw s_r and s_F = Tr(P_W M_F) / Tr(M_F), each (S, C)."""
        S, C = student.num_cells
        s_r, s_F = np.zeros((S, C)), np.zeros((S, C))
        for c, n in enumerate(student.widths):
            o = student.starts[c]
            W = student.encoder.detach()[:, o:o + n].double()  # (S, N, d)
            # P_W = V^T V with V = Lambda^{-1/2} U^T W from the Gram matrix W W^T = U Lambda U^T: the orthonormal
            # rows an SVD gives, 3x cheaper here; eigenvalues under 1e-14 of the largest (the SVD rule, squared)
            # are dropped.
            lam, U = torch.linalg.eigh(W @ W.transpose(1, 2))
            keep = lam > 1e-14 * lam.amax(-1, keepdim=True).clamp_min(1e-300)
            V = (U * (keep / lam.clamp_min(1e-300).sqrt())[:, None, :]).transpose(1, 2) @ W  # (S, N, d)
            cap = torch.einsum("snd,krd->sknr", V, self.A).square().sum((-1, -2))  # (S, 1+|F|): Tr(P_W C_k)
            s_r[:, c] = (cap[:, 0] / self.trace_r).cpu().numpy()
            s_F[:, c] = (cap[:, 1:] @ self.w_F).cpu().numpy()
        return s_r, s_F

    def cosines(self, student: SweepStudent) -> np.ndarray:
        """cos(G_r, G_F) of every cell's encoder gradient (S, C), on a fresh rare batch and a fresh F batch."""
        K, B = self.mixture.num_tasks, self.grad_batch
        rare_counts = torch.zeros(len(self.stream.generators), K, dtype=torch.int64)
        rare_counts[:, self.rare] = B
        freq_counts = torch.stack([torch.bincount(torch.multinomial(self.p_F, B, replacement=True, generator=g),
                                                  minlength=K) for g in self.stream.generators])
        grads = []
        for counts in (rare_counts, freq_counts):
            batch = self.stream.sample(B, counts)
            loss = student.cell_losses(student(batch.x, batch.offsets), batch.y, B).sum()
            grads.append(torch.autograd.grad(loss, student.encoder)[0].double())  # (S, rows, d)
        cell = student.row_cell.double()  # (rows, C) one-hot
        dot = (grads[0] * grads[1]).sum(-1) @ cell
        norms = (grads[0].square().sum(-1) @ cell).sqrt() * (grads[1].square().sum(-1) @ cell).sqrt()
        return (dot / norms.clamp_min(1e-300)).cpu().numpy()


def measured_cycles(gap: int, steps: int, cycles: int) -> range:
    """The cycles measured: every k-th, k = max(1, (steps / G) // cycles) (every cycle when cycles = 0)."""
    n = steps // gap
    return range(0, n, max(1, n // cycles) if cycles else 1)


def eval_plan(gap: int, steps: int, between: int, cycles: int) -> dict[int, str]:
    """{step: phase}: the model states (after `step` steps) that are measured, for the cycles measured."""
    plan: dict[int, str] = {}
    for c in measured_cycles(gap, steps, cycles):
        start = c * gap
        plan.setdefault(start, "pre")
        if gap > 1:
            plan.setdefault(start + 1, "post")
        for j in range(1, between + 1):
            t = start + round(j * gap / (between + 1))
            if start + 1 < t < start + gap:
                plan.setdefault(t, "mid")
        plan.setdefault(start + gap, "pre")
    plan[steps] = "end"
    return dict(sorted(plan.items()))


def fit_decay(peak: np.ndarray, nxt: np.ndarray, gap: int) -> tuple[float, float, float]:
    """(retention a, decay per cycle 1 - a, rate per step -ln(a) / G): a is the least-squares slope through the
    origin of raw s_r(pre_{c+1}) on s_r(peak_c) over the given cycles."""
    den = float(np.sum(peak * peak))
    if len(peak) == 0 or den < 1e-18:
        return math.nan, math.nan, math.nan
    a = float(np.sum(peak * nxt)) / den
    return a, 1 - a, (-math.log(a) / gap if a > 0 else math.nan)


# ------------------------------------------------------------------------------------------------------ training


def train_gap(cfg: RetentionConfig, gap: int, gdir: Path, progress: Any = None) -> dict[str, dict[str, list]]:
    """Train every (seed, width) cell at gap G together, measuring as planned; checkpoints in gdir."""
    trainer = SweepTrainer(cfg.synth_config())
    mixture, student, device = trainer.mixture, trainer.student, trainer.device
    T, widths, seeds, inj = cfg.train.steps, cfg.sweep.widths, cfg.sweep.seeds, cfg.injection
    r = rare_task(mixture, inj.rare)
    pi = matched_frequencies(mixture, r, inj.rate)
    schedule = InjectionSchedule(mixture.frequencies, r, inj.rate, inj.schedule, gap, cfg.train.batch_size, seeds)
    probe = RetentionProbe(mixture, r, frequent_tasks(mixture, r, inj.rate, cfg.eval.frequent_mass), pi, seeds,
                           device, cfg.eval.grad_batch)
    plan = eval_plan(gap, T, cfg.eval.between, cfg.eval.cycles)
    starts = {c * gap for c in measured_cycles(gap, T, cfg.eval.cycles)} | {T}  # where cos(G_r, G_F) is measured
    ckpt = gdir / "checkpoint.pt"
    step, records, seen, elapsed = 0, {}, np.zeros(len(seeds), dtype=np.int64), 0.0
    if ckpt.is_file():
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        step, records, seen, elapsed = ck["step"], ck["records"], ck["seen"], ck["elapsed"]
        trainer.load_state_dict(ck["trainer"])
        schedule.load_state(ck["schedule"])
        probe.stream.load_state(ck["probe"])

    def record(t: int) -> None:
        s_r, s_F = probe.signals(student)
        cos = probe.cosines(student) if t in starts else None
        records[t] = (s_r, s_F, seen.copy(), cos)
        if cfg.eval.save_encoders and t in starts:
            save_encoders(student, gdir / "encoders" / f"step={t:07d}.pt", step=t, gap=gap)

    if step == 0:
        record(0)
    task = progress.add_task(f"gap G={gap}", total=T, completed=step) if progress else None
    start = time.perf_counter()
    while step < T:
        counts = schedule.counts(step)  # (S, K)
        seen += counts[:, r].numpy()
        trainer.step(counts)
        step += 1
        if step in plan:
            record(step)
        if progress:
            progress.update(task, completed=step)
        if step % cfg.train.checkpoint_every == 0 and step < T:
            state = {"step": step, "records": records, "seen": seen, "trainer": trainer.state_dict(),
                     "elapsed": elapsed + time.perf_counter() - start, "schedule": schedule.state(),
                     "probe": probe.stream.state()}
            with runs.atomic_path(ckpt) as tmp:
                torch.save(state, tmp)
    tables = gap_tables(records, plan, list(measured_cycles(gap, T, cfg.eval.cycles)), gap, T, widths, seeds,
                        mixture.dim, cfg.eval.fit_from)
    tables["wall_time_s"] = elapsed + time.perf_counter() - start
    return tables


def save_encoders(student: SweepStudent, path: Path, **meta: Any) -> Path:
    """Write every cell's encoder W (N, d), as trained (its dtype), to `path` atomically (a temporary name, then one
    rename: a killed run never leaves a partial file): {**meta, "seeds", "widths", "encoders": [seed][width] W}, a
    plain structure torch.load(..., weights_only=True) reads, so a run's later steps can be checked from outside."""
    S, C = student.num_cells
    cells = [[student.cell(s, c)[0].cpu().clone() for c in range(C)] for s in range(S)]
    with runs.atomic_path(path) as tmp:
        torch.save({**meta, "seeds": list(student.seeds), "widths": list(student.widths), "encoders": cells}, tmp)
    return path


def gap_tables(records: dict, plan: dict[int, str], measured: list[int], gap: int, steps: int, widths: list[int],
               seeds: list[int], dim: int, fit_from: float) -> dict[str, Any]:
    """Column tables trace / cycles / cosines / final of one gap from the records {step: (s_r, s_F, rare seen,
    cos or None)} (arrays (S, C), rare seen (S,)) of the `measured` cycles."""
    chance = np.array([n / dim for n in widths])[None, :]  # (1, C)

    def corr(x: np.ndarray) -> np.ndarray:
        return (x - chance) / (1 - chance)  # s~ (widths < d: validated)

    S, C = len(seeds), len(widths)
    cells = [(s, c) for s in range(S) for c in range(C)]
    trace: dict[str, list] = {}
    cos: dict[str, list] = {}
    for t, (s_r, s_F, seen, cs) in sorted(records.items()):
        sc, fc = corr(s_r), corr(s_F)
        for s, c in cells:
            _append(trace, gap=gap, seed=seeds[s], width=widths[c], step=t, cycle=t // gap, phase=plan[t],
                    rare_seen=int(seen[s]), signal_rare=float(s_r[s, c]), signal_rare_corrected=float(sc[s, c]),
                    signal_frequent_corrected=float(fc[s, c]), signal_frequent=float(s_F[s, c]))
            if cs is not None:
                _append(cos, gap=gap, seed=seeds[s], width=widths[c], step=t, cosine=float(cs[s, c]))
    cycles: dict[str, list] = {}
    peak_of = {}
    for c in measured:
        inside = [t for t in records if c * gap < t < (c + 1) * gap] or [(c + 1) * gap]  # the peak: highest s_r
        pre, nxt = records[c * gap][0], records[(c + 1) * gap][0]
        peak_of[c] = peak = np.max([records[t][0] for t in inside], axis=0)  # (S, C) raw
        rare = records[(c + 1) * gap][2] - records[c * gap][2]
        gain, decay = corr(peak) - corr(pre), corr(peak) - corr(nxt)
        for s, k in cells:
            _append(cycles, gap=gap, seed=seeds[s], width=widths[k], cycle=c, step=c * gap, rare_samples=int(rare[s]),
                    signal_pre=float(pre[s, k]), signal_peak=float(peak[s, k]), signal_next=float(nxt[s, k]),
                    gain=float(gain[s, k]), decay=float(decay[s, k]), gain_raw=float(peak[s, k] - pre[s, k]),
                    decay_raw=float(peak[s, k] - nxt[s, k]))
    fitted = [c for c in measured if c >= fit_from * (steps // gap)]
    s_r, s_F, seen, _ = records[steps]
    final: dict[str, list] = {}
    for s, c in cells:
        peak = np.array([peak_of[k][s, c] for k in fitted])
        nxt = np.array([records[(k + 1) * gap][0][s, c] for k in fitted])
        gains = [corr(peak_of[k])[s, c] - corr(records[k * gap][0])[s, c] for k in fitted]
        raw_gains = [peak_of[k][s, c] - records[k * gap][0][s, c] for k in fitted]
        a, delta, kappa = fit_decay(peak, nxt, gap)
        _append(final, gap=gap, seed=seeds[s], width=widths[c], step=steps, rare_seen=int(seen[s]),
                signal_rare=float(s_r[s, c]), signal_rare_corrected=float(corr(s_r)[s, c]),
                signal_frequent_corrected=float(corr(s_F)[s, c]), retention_per_cycle=a, decay_per_cycle=delta,
                decay_rate_per_step=kappa, mean_gain=float(np.mean(gains)) if gains else math.nan,
                cycles_fitted=len(fitted), signal_frequent=float(s_F[s, c]),
                mean_gain_raw=float(np.mean(raw_gains)) if raw_gains else math.nan)
    return {"trace": trace, "cycles": cycles, "cosines": cos, "final": final}


def quiet(fn: Any, a: Any, axis: int | None = 0) -> Any:
    """fn(a, axis) with numpy's all-NaN RuntimeWarnings silenced (np.nanmean and friends over cells with no fit)."""
    with warnings.catch_warnings():  # an all-NaN slice (no fitted cycle) is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(np.asarray(a, float), axis)


def _append(table: dict[str, list], **row: Any) -> None:
    for key, value in row.items():
        table.setdefault(key, []).append(value)


# ----------------------------------------------------------------------------------------------------------- run

TABLES = ("trace", "cycles", "cosines", "final")  # final last: it marks a gap finished


@dataclass
class RetentionResult:
    out: Path
    config: RetentionConfig
    tables: dict[str, dict[str, list]]
    rare: str

    def grid(self, key: str) -> np.ndarray:
        """(S, G, W) per-seed values of a final-table column."""
        s = self.config.sweep
        f = self.tables["final"]
        out = np.full((len(s.seeds), len(s.gaps), len(s.widths)), np.nan)
        for i in range(len(f["gap"])):
            out[s.seeds.index(f["seed"][i]), s.gaps.index(f["gap"][i]), s.widths.index(f["width"][i])] = f[key][i]
        return out

    def summary(self) -> dict[str, Any]:
        """The `--json` object: per gap (rows) and width (columns), means over seeds, and per seed. final_signal_rare
        is s~_r, final_signal_rare_raw s_r (the one to compare widths on)."""
        s, inj = self.config.sweep, self.config.injection
        keys = {"final_signal_rare": "signal_rare_corrected", "decay_per_cycle": "decay_per_cycle",
                "final_signal_frequent": "signal_frequent_corrected", "final_signal_rare_raw": "signal_rare"}

        def clean(a: np.ndarray) -> Any:
            return [clean(x) for x in a] if np.ndim(a) else (float(a) if np.isfinite(a) else None)

        grids = {name: self.grid(col) for name, col in keys.items()}
        means = {name: clean(quiet(np.nanmean, g)) for name, g in grids.items()}
        return {"out": str(self.out), "rare": self.rare, "schedule": str(inj.schedule), "rate": inj.rate,
                "gaps": s.gaps, "widths": s.widths, "seeds": s.seeds, **means,
                "per_seed": {name: clean(g) for name, g in grids.items()}}


def run_retention(cfg: RetentionConfig, out: Path, *, progress: bool = True,
                  overwrite: bool = False) -> RetentionResult:
    """Train every gap of cfg.sweep into `out` (finished gaps read back, an unfinished one resumed); write tables."""
    cfg.validate()  # before anything is written
    out = Path(out)
    runs.prepare_run_dir(out, cfg.to_toml(), overwrite=overwrite)
    mixture = cfg.mixture.build()
    rare = mixture.names[rare_task(mixture, cfg.injection.rare)]
    meta_path = out / "meta.json"
    timings = json.loads(meta_path.read_text()).get("groups", {}) if meta_path.is_file() else {}  # resumed run
    threads = choose_threads(cfg.train.threads)
    meta = runs.RunMeta(out, kind="synth.retention", seeds=cfg.sweep.seeds, widths=cfg.sweep.widths,
                        gaps=cfg.sweep.gaps, rare=rare, device=str(resolve_device(cfg.train.device)),
                        torch_threads=threads)
    parts = {name: [] for name in TABLES}
    with torch_threads(threads), progress_bar(enabled=progress) as bar:
        for G in cfg.sweep.gaps:
            gdir = out / "groups" / f"gap={G}"
            if (gdir / "final.parquet").is_file():  # finished gap: skip
                tables = {name: runs.read_table(gdir / f"{name}.parquet") for name in TABLES}
            else:
                tables = train_gap(cfg, G, gdir, bar)
                timings[f"gap={G}"] = {"wall_time_s": tables.pop("wall_time_s")}
                for name in TABLES:
                    runs.write_table(gdir / f"{name}.parquet", tables[name])
                (gdir / "checkpoint.pt").unlink(missing_ok=True)
            for name in TABLES:
                parts[name].append(tables[name])
    result = RetentionResult(out=out, config=cfg, rare=rare,
                             tables={name: runs.concat_columns(parts[name]) for name in TABLES})
    for name in TABLES:
        runs.write_table(out / f"{name}.parquet", result.tables[name])
    meta.finish(groups=timings)
    return result


def read_retention(run_dir: Path) -> RetentionResult:
    """A finished run, from its directory alone."""
    from raretask.config import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "final.parquet").is_file():
        raise ConfigError(f"{run_dir}: no final.parquet (is the run finished?)")
    cfg = load_config(RetentionConfig, run_dir / "config.toml")
    mixture = cfg.mixture.build()
    return RetentionResult(out=run_dir, config=cfg, rare=mixture.names[rare_task(mixture, cfg.injection.rare)],
                           tables={name: runs.read_table(run_dir / f"{name}.parquet") for name in TABLES})
