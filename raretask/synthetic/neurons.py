"""Beyond the paper: neurons with a nonlinearity. Which tasks get neurons, and are rare tasks lost by design?

    cfg = load_config(NeuronsConfig, "configs/synthetic/neurons.toml")
    result = run_neurons(cfg, Path("runs/neurons"))   # width sweep, ablation, "solutions exist"; resumable

The task family: multitask sparse parity (`raretask.synthetic.parity`).

The model: one hidden layer of N neurons h = sigma(W x + b) (sigma = relu or gelu), per-task readouts
f_k = a_k . h + c_k, trained online (a fresh batch every step, each example's task drawn from pi) on the logistic
loss l = log(1 + exp(-y f)) (cross-entropy on +-1 labels; chance level log 2, reached by f = 0). Accuracy: sign
agreement (f = 0 counts one half). Every (seed, width) cell of a sweep lives in one set of tensors, the cells'
neurons stacked along rows (no padding needed): W (S, sum N, n), b (S, sum N), A (S, K, sum N), c (S, K, C); one
bmm computes every cell's hidden layer and a one-hot (rows, C) matmul sums each cell's readout. Cells share no
parameters, the loss is a sum of cell losses and SGD / Adam are element-wise, and clipping is per cell, so a cell
trains as it would alone. Each seed has its own generators (initialisation per (seed, width), data per seed).

Measurements, on a fixed evaluation set (`eval.samples` examples per task, drawn from `eval.seed`):
  sweep      per cell and task: loss, accuracy, learned (accuracy >= eval.learned), every eval.every steps.
  ablation   Delta_ik = l_k(neuron i zeroed) - l_k: zeroing h_i removes a_ki h_i from f_k, so all neurons of all
             cells are ablated at once from one forward pass. Neuron i is allocated to task k if
             Delta_ik > max(alloc.fraction * (log 2 - l_k), alloc.floor): it undoes at least that fraction of what
             task k has learned over chance, and at least `floor` nats (tasks at chance get no neurons from noise).
             A neuron may serve several tasks.
  solutions  at width N0 (`solutions.width`; 0: the widest swept width at which the target task is not learned),
             arm "reweighted": train on a reweighted mixture (reversed or uniform frequencies) for steps_reweighted,
             then on the natural mixture for steps_natural; arm "natural": the same initialisation on the natural
             mixture throughout. Both arms train in one batched program. The target task learned after reweighting
             shows a width-N0 solution that expresses it exists; its accuracy after the natural phase shows whether
             training keeps it.

Writes DIR/{results,curves,allocation,solutions}.parquet, DIR/summary.json and DIR/{accuracy_vs_width,allocation,
solutions}.png. Parts: the sweep (results.parquet, written last, marks it finished) and the solutions experiment
(solutions.parquet); a finished part is read back, an unfinished one resumes from DIR/<part>_checkpoint.pt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raretask import runs
from raretask.config import Config, ConfigError, StrEnum, option
from raretask.devices import choose_threads, resolve_device, torch_threads
from raretask.progress import progress_bar
from raretask.synthetic.model import init_seed
from raretask.synthetic.parity import ParityConfig, ParityStream, ParityTasks, check_frequencies, parity
from raretask.synthetic.train import OptimizerKind, Schedule, TrainConfig, lr_factor, make_optimizer

CHANCE = math.log(2.0)  # logistic loss of f = 0


class Activation(StrEnum):
    RELU = "relu"
    GELU = "gelu"


class Reweight(StrEnum):
    REVERSED = "reversed"  # pi reversed: the rarest task becomes the most frequent
    UNIFORM = "uniform"


@dataclass
class EvalConfig(Config):
    every: int = option(500, "steps between evaluations", ge=1)
    samples: int = option(2048, "fixed evaluation examples per task", ge=1)
    seed: int = option(12345, "draws the evaluation set (the same for every cell)")
    learned: float = option(0.9, "a task counts as learned at accuracy >= this")


@dataclass
class AllocConfig(Config):
    fraction: float = option(0.1, "allocated if Delta_ik > fraction * (log 2 - l_k) ...", gt=0)
    floor: float = option(0.02, "... and Delta_ik > floor (nats)", ge=0)


@dataclass
class SolutionsConfig(Config):
    enabled: bool = option(True, "run the solutions-exist experiment")
    width: int = option(0, "N0 (0: the widest swept width where the target task is not learned)", ge=0)
    task: int = option(-1, "target task index, 0-based (-1: the rarest)")
    reweight: Reweight = option(Reweight.REVERSED, "reweighted mixture: reversed or uniform frequencies")
    frequencies: list[float] | None = option(None, "explicit reweighted frequencies instead")
    steps_reweighted: int = option(4000, "steps on the reweighted mixture", ge=1)
    steps_natural: int = option(6000, "then steps on the natural mixture", ge=1)


@dataclass
class SweepConfig(Config):
    widths: list[int] = option(factory=lambda: [2, 4, 6, 8, 12, 16], doc="numbers of neurons N", ge=1)
    seeds: list[int] = option(factory=lambda: [0, 1, 2], doc="seeds (initialisation and data of each cell)", ge=0)


def _default_train() -> TrainConfig:
    return TrainConfig(steps=6000, batch_size=256, optimizer=OptimizerKind.SGD, lr=0.5, momentum=0.9,
                       weight_decay=1e-3, schedule=Schedule.CONSTANT, warmup=0, clip=0.0, checkpoint_every=1000)


@dataclass
class NeuronsConfig(Config):
    tasks: ParityConfig = option(factory=ParityConfig, doc="the sparse-parity task family")
    activation: Activation = option(Activation.RELU, "hidden nonlinearity sigma")
    train: TrainConfig = option(factory=_default_train, doc="optimisation (train.steps: the width sweep)")
    eval: EvalConfig = option(factory=EvalConfig, doc="metrics")
    alloc: AllocConfig = option(factory=AllocConfig, doc="neuron allocation threshold")
    solutions: SolutionsConfig = option(factory=SolutionsConfig, doc="the solutions-exist experiment")
    sweep: SweepConfig = option(factory=SweepConfig, doc="cells to train")

    def validate(self, path: str = "") -> None:
        super().validate(path)
        e, s, w = self.eval, self.solutions, self.sweep
        if not 0.5 < e.learned <= 1:
            raise ConfigError(f"eval.learned: must be in (0.5, 1], got {e.learned}")
        for name, values in [("sweep.widths", w.widths), ("sweep.seeds", w.seeds)]:
            if not values:
                raise ConfigError(f"{name}: empty")
            if len(set(values)) != len(values):
                raise ConfigError(f"{name}: values repeat")
        if not -1 <= s.task < self.tasks.count:
            raise ConfigError(f"solutions.task: {s.task} is not a task index (K = {self.tasks.count})")
        if s.frequencies is not None:
            check_frequencies(s.frequencies, self.tasks.count, "solutions.frequencies")

    def target(self, tasks: ParityTasks) -> int:
        """Index of the solutions experiment's target task (-1: the rarest, the last of the lowest frequency)."""
        if self.solutions.task >= 0:
            return self.solutions.task
        return int(np.flatnonzero(tasks.frequencies == tasks.frequencies.min())[-1])

    def reweighted(self, tasks: ParityTasks) -> np.ndarray:
        s = self.solutions
        if s.frequencies is not None:
            return np.asarray(s.frequencies, dtype=np.float64) / sum(s.frequencies)
        if s.reweight is Reweight.UNIFORM:
            return np.full(len(tasks.names), 1.0 / len(tasks.names))
        return tasks.frequencies[::-1].copy()


# ------------------------------------------------------------------------------------------------------ the model


class NeuronSweep(nn.Module):
    """Every (stream, width) cell: cell c of stream s owns rows [starts[c], starts[c] + N_c) of W, b and A.

    A stream is a seed of the sweep (or an arm x seed of the solutions experiment); its cells start from the
    initialisation of (seed, width) alone, like nn.Linear's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), c = 0."""

    def __init__(self, inputs: int, num_tasks: int, widths: list[int], seeds: list[int], activation: Activation):
        super().__init__()
        self.widths, self.seeds, self.activation = list(widths), list(seeds), activation
        S, K, C, rows = len(seeds), num_tasks, len(widths), sum(widths)
        self.starts = [sum(widths[:c]) for c in range(C)]
        W, b, A = torch.zeros(S, rows, inputs), torch.zeros(S, rows), torch.zeros(S, K, rows)
        for s, seed in enumerate(seeds):
            for c, n in enumerate(widths):
                g, o = torch.Generator().manual_seed(init_seed(seed, n)), self.starts[c]
                W[s, o:o + n] = (torch.rand(n, inputs, generator=g) * 2 - 1) / math.sqrt(inputs)
                b[s, o:o + n] = (torch.rand(n, generator=g) * 2 - 1) / math.sqrt(inputs)
                A[s, :, o:o + n] = (torch.rand(K, n, generator=g) * 2 - 1) / math.sqrt(n)
        self.W, self.b, self.A = nn.Parameter(W), nn.Parameter(b), nn.Parameter(A)
        self.c = nn.Parameter(torch.zeros(S, K, C))
        cell_of_row = torch.repeat_interleave(torch.arange(C), torch.tensor(widths))
        self.register_buffer("cell_of_row", cell_of_row, persistent=False)
        self.register_buffer("row_cell", F.one_hot(cell_of_row, C).float(), persistent=False)  # (rows, C)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """x (S, B, n) -> h (S, B, rows)."""
        z = torch.baddbmm(self.b[:, None, :], x, self.W.transpose(1, 2))
        return F.relu(z) if self.activation is Activation.RELU else F.gelu(z)

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """x (S, B, n), task ids (S, B) -> f_task(x) of every cell (S, B, C)."""
        s = torch.arange(x.shape[0], device=x.device)[:, None]
        return (self.hidden(x) * self.A[s, task]) @ self.row_cell + self.c[s, task]

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> None:
        """torch.nn.utils.clip_grad_norm_ for each cell separately."""
        row_sq = self.W.grad.square().sum(-1) + self.b.grad.square() + self.A.grad.square().sum(1)  # (S, rows)
        norms = (row_sq @ self.row_cell + self.c.grad.square().sum(1)).sqrt()  # (S, C)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        per_row = coef @ self.row_cell.T  # (S, rows)
        self.W.grad.mul_(per_row[..., None])
        self.b.grad.mul_(per_row)
        self.A.grad.mul_(per_row[:, None])
        self.c.grad.mul_(coef[:, None])


def eval_set(tasks: ParityTasks, e: EvalConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation set: x (K, M, n) and labels (K, M)."""
    g = torch.Generator().manual_seed(e.seed)
    x = torch.randint(0, 2, (len(tasks.names), e.samples, tasks.inputs), generator=g).double() * 2 - 1
    idx, mask = tasks.index(torch.device("cpu"))
    y = parity(x, torch.arange(len(tasks.names))[:, None].expand(-1, e.samples), idx, mask)
    return x.to(device), y.to(device)


@torch.no_grad()
def evaluate(model: NeuronSweep, x: torch.Tensor, y: torch.Tensor, ablate: bool = False) -> dict[str, np.ndarray]:
    """Per cell and task (S, C, K): 'loss', 'accuracy'; with ablate, 'delta' (S, rows, K) = l_k(h_i = 0) - l_k.

    In float64, one task at a time (memory S * M * rows)."""
    W, b, A, c = (p.detach().double() for p in (model.W, model.b, model.A, model.c))
    act = F.relu if model.activation is Activation.RELU else F.gelu
    rc, cor = model.row_cell.double(), model.cell_of_row
    S, K, C = A.shape[0], A.shape[1], c.shape[-1]
    loss, acc = (torch.zeros(S, C, K, dtype=torch.float64, device=W.device) for _ in range(2))
    delta = torch.zeros(S, W.shape[1], K, dtype=torch.float64, device=W.device)
    for k in range(K):
        h = act(torch.einsum("mn,srn->smr", x[k], W) + b[:, None, :])  # (S, M, rows)
        contrib = h * A[:, k, None, :]  # a_ki h_i
        f = contrib @ rc + c[:, k, None, :]  # (S, M, C)
        margin = y[k][None, :, None] * f
        loss[..., k] = F.softplus(-margin).mean(1)
        acc[..., k] = ((margin > 0).double() + 0.5 * (margin == 0).double()).mean(1)
        if ablate:  # zeroing neuron i takes a_ki h_i out of its own cell's f_k: every neuron at once
            ablated = y[k][None, :, None] * (f[:, :, cor] - contrib)  # (S, M, rows)
            delta[..., k] = F.softplus(-ablated).mean(1) - loss[:, cor, k]
    out = {"loss": loss.cpu().numpy(), "accuracy": acc.cpu().numpy()}
    if ablate:
        out["delta"] = delta.cpu().numpy()
    return out


def allocation(delta: np.ndarray, loss: np.ndarray, cell_of_row: np.ndarray, a: AllocConfig) -> tuple[np.ndarray,
                                                                                                        np.ndarray]:
    """Thresholds (S, rows, K) max(fraction (log 2 - l_k), floor) of each neuron's cell, and allocated = Delta > it."""
    thr = np.maximum(a.fraction * (CHANCE - loss[:, cell_of_row, :]), a.floor)
    return thr, delta > thr


# ---------------------------------------------------------------------------------------------------- training


def train_part(cfg: NeuronsConfig, tasks: ParityTasks, widths: list[int], seeds: list[int],
               phases: list[tuple[int, np.ndarray]], ckpt: Path, progress: Any = None,
               label: str = "train") -> tuple[NeuronSweep, list[dict[str, Any]]]:
    """Train the cells (streams x widths) through phases of (steps, per-stream frequencies (S, K)).

    Evaluates at step 0, every eval.every steps and at each phase end; checkpoints every train.checkpoint_every
    steps into `ckpt` and resumes from it (same numbers as an uninterrupted run). Returns the model and the list of
    evaluations {'step', 'phase', 'loss', 'accuracy'}."""
    total = sum(n for n, _ in phases)
    t = dataclasses.replace(cfg.train, steps=total)  # the schedule spans the whole part
    device = resolve_device(t.device)
    model = NeuronSweep(tasks.inputs, len(tasks.names), widths, seeds, cfg.activation).to(device)
    stream = ParityStream(tasks, seeds, phases[0][1], device)
    opt = make_optimizer(t, list(model.parameters()))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(t, i))
    xe, ye = eval_set(tasks, cfg.eval, device)
    ends = np.cumsum([n for n, _ in phases])
    step, evals = 0, []
    if ckpt.is_file():
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
        step, evals = ck["step"], ck["evals"]
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        for g, state in zip(stream.generators, ck["generators"]):
            g.set_state(state)
    else:
        evals.append({"step": 0, "phase": 0, **evaluate(model, xe, ye)})
    bar = progress.add_task(label, total=total, completed=step) if progress else None
    # The per-step tensors are tiny: parallel regions cost more than they save (17x slower with 2 threads on a
    # busy 2-core machine), so small sweeps on the CPU run on one intra-op thread.
    small = len(seeds) * t.batch_size * sum(widths) * tasks.inputs < 2**22
    current = 0  # the stream starts with phase 0's frequencies
    with _one_thread(device.type == "cpu" and small):
        while step < total:
            phase = int(np.searchsorted(ends, step, side="right"))
            if phase != current:
                stream.set_frequencies(phases[phase][1])
                current = phase
            x, task, y = stream.sample(t.batch_size)
            losses = F.softplus(-y[..., None] * model(x, task)).mean(1)  # (S, C)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # cells are independent: each gets the gradient of its own loss
            if t.clip > 0:
                model.clip_grad_norm_(t.clip)
            opt.step()
            sched.step()
            step += 1
            if step % cfg.eval.every == 0 or step in ends:
                evals.append({"step": step, "phase": phase, **evaluate(model, xe, ye)})
            if progress:
                progress.update(bar, completed=step)
            if step % t.checkpoint_every == 0 and step < total:
                state = {"step": step, "evals": evals, "model": model.state_dict(), "opt": opt.state_dict(),
                         "sched": sched.state_dict(), "generators": [g.get_state() for g in stream.generators]}
                with runs.atomic_path(ckpt) as tmp:
                    torch.save(state, tmp)
    return model, evals


@contextlib.contextmanager
def _one_thread(on: bool) -> Iterator[None]:
    before = torch.get_num_threads()
    if on:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rows(values: dict[str, np.ndarray], tasks: ParityTasks, widths: list[int], seeds: list[int],
          **extra: Any) -> dict[str, list]:
    """(S, C, K) arrays -> columns, one row per (stream, width, task); extra: constants or (S,) per-stream lists."""
    S, C, K = values["loss"].shape
    cols: dict[str, list] = {k: [] for k in [*extra, "seed", "width", "task", "frequency", "bits", *values]}
    for s in range(S):
        for c in range(C):
            for k in range(K):
                for name, v in extra.items():
                    cols[name].append(v[s] if isinstance(v, list) else v)
                cols["seed"].append(seeds[s])
                cols["width"].append(widths[c])
                cols["task"].append(tasks.names[k])
                cols["frequency"].append(float(tasks.frequencies[k]))
                cols["bits"].append(tasks.sizes[k])
                for name, v in values.items():
                    cols[name].append(v[s, c, k].item())
    return cols


def run_sweep(cfg: NeuronsConfig, tasks: ParityTasks, out: Path, progress: Any) -> None:
    """The width sweep on the natural mixture, then the ablation of every neuron; writes its three tables."""
    w, seeds = cfg.sweep.widths, cfg.sweep.seeds
    probs = np.tile(tasks.frequencies, (len(seeds), 1))
    model, evals = train_part(cfg, tasks, w, seeds, [(cfg.train.steps, probs)], out / "sweep_checkpoint.pt",
                              progress, "sweep")
    xe, ye = eval_set(tasks, cfg.eval, resolve_device(cfg.train.device))
    final = evaluate(model, xe, ye, ablate=True)
    cor = model.cell_of_row.cpu().numpy()
    thr, allocated = allocation(final["delta"], final["loss"], cor, cfg.alloc)
    neurons = np.einsum("sik,ic->sck", allocated.astype(float), np.eye(len(w))[cor])  # (S, C, K) per cell
    S, R, K = final["delta"].shape
    s_i, r_i, k_i = (a.ravel() for a in np.meshgrid(np.arange(S), np.arange(R), np.arange(K), indexing="ij"))
    pos = np.concatenate([np.arange(n) for n in w])  # neuron index within its cell
    alloc = {"seed": np.asarray(seeds)[s_i], "width": np.asarray(w)[cor[r_i]], "neuron": pos[r_i],
             "task": [tasks.names[k] for k in k_i], "delta": final["delta"].ravel(), "threshold": thr.ravel(),
             "allocated": allocated.ravel()}
    curves = runs.concat_columns([_rows({"loss": e["loss"], "accuracy": e["accuracy"]}, tasks, w, seeds,
                                        step=e["step"]) for e in evals])
    results = _rows({"loss": final["loss"], "accuracy": final["accuracy"], "neurons": neurons}, tasks, w, seeds)
    results["learned"] = [a >= cfg.eval.learned for a in results["accuracy"]]
    runs.write_table(out / "curves.parquet", curves)
    runs.write_table(out / "allocation.parquet", alloc)
    with runs.atomic_path(out / "model.pt") as tmp:
        torch.save({"state": model.state_dict(), "widths": w, "seeds": seeds}, tmp)
    runs.write_table(out / "results.parquet", results)  # written last: marks the sweep finished
    (out / "sweep_checkpoint.pt").unlink(missing_ok=True)


def solutions_width(cfg: NeuronsConfig, results: dict[str, list], target: str) -> int | None:
    """N0: solutions.width, or the widest swept width whose mean target accuracy is below eval.learned."""
    if cfg.solutions.width:
        return cfg.solutions.width
    res = {n: [] for n in cfg.sweep.widths}
    for a, t, n in zip(results["accuracy"], results["task"], results["width"]):
        if t == target:
            res[n].append(a)
    below = [n for n, accs in res.items() if np.mean(accs) < cfg.eval.learned]
    return max(below) if below else None


def run_solutions(cfg: NeuronsConfig, tasks: ParityTasks, n0: int, out: Path, progress: Any) -> None:
    """Arm 'reweighted' (reweighted, then natural) and arm 'natural' (natural throughout), same initialisation."""
    seeds, s = cfg.sweep.seeds, cfg.solutions
    natural, rew = tasks.frequencies, cfg.reweighted(tasks)
    first = np.stack([rew] * len(seeds) + [natural] * len(seeds))
    then = np.tile(natural, (2 * len(seeds), 1))
    _, evals = train_part(cfg, tasks, [n0], seeds + seeds, [(s.steps_reweighted, first), (s.steps_natural, then)],
                          out / "solutions_checkpoint.pt", progress, "solutions")
    arms = ["reweighted"] * len(seeds) + ["natural"] * len(seeds)
    table = runs.concat_columns([_rows({"loss": e["loss"], "accuracy": e["accuracy"]}, tasks, [n0], seeds + seeds,
                                       arm=arms, step=e["step"],
                                       phase="reweighted" if e["phase"] == 0 else "natural") for e in evals])
    runs.write_table(out / "solutions.parquet", table)
    (out / "solutions_checkpoint.pt").unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------ results


@dataclass
class NeuronsResult:
    out: Path
    config: NeuronsConfig
    tables: dict[str, dict[str, list]]
    solutions_width: int | None
    wall_time_s: float = 0.0

    @staticmethod
    def read_tables(out: Path) -> dict[str, dict[str, list]]:
        """results, curves, allocation and (once run) solutions of a run directory."""
        names = ("results", "curves", "allocation") + (("solutions",) if (out / "solutions.parquet").is_file() else ())
        return {name: runs.read_table(out / f"{name}.parquet") for name in names}

    @classmethod
    def load(cls, out: Path) -> NeuronsResult:
        """A finished run, read back from its directory alone."""
        from raretask.config import load_config

        out = Path(out)
        meta = json.loads((out / "meta.json").read_text())
        return cls(out, load_config(NeuronsConfig, out / "config.toml"), cls.read_tables(out),
                   meta.get("solutions_width"), meta.get("wall_time_s", 0.0))

    def summary(self) -> dict[str, Any]:
        """The `--json` object (also DIR/summary.json): per width the per-task accuracy, loss and neurons (means
        over seeds); the solutions-exist numbers of the target task (mean and per seed)."""
        import pandas as pd

        cfg, tasks = self.config, self.config.tasks.build()
        res = pd.DataFrame(self.tables["results"])
        by = res.groupby(["width", "task"])[["accuracy", "loss", "neurons"]].mean()
        per_width = [{"width": n, **{key: by.loc[n, key].reindex(tasks.names).to_dict()
                                     for key in ("accuracy", "loss", "neurons")},
                      "learned_tasks": float(res[res.width == n].groupby("seed").learned.sum().mean())}
                     for n in cfg.sweep.widths]
        out = {"out": str(self.out), "activation": str(cfg.activation), "wall_time_s": self.wall_time_s,
               "tasks": [{"name": nm, "frequency": float(f), "bits": len(s), "subset": s}
                         for nm, f, s in zip(tasks.names, tasks.frequencies, tasks.subsets)],
               "per_width": per_width}
        target = tasks.names[cfg.target(tasks)]
        if "solutions" not in self.tables:
            out["solutions"] = {"skipped": "disabled" if not cfg.solutions.enabled else
                                f"{target} is learned at every swept width (set solutions.width)"}
            return out
        sol = pd.DataFrame(self.tables["solutions"])
        acc = sol[sol.task == target].set_index(["arm", "step", "seed"]).accuracy
        end1 = cfg.solutions.steps_reweighted
        end2 = end1 + cfg.solutions.steps_natural

        def at(arm: str, step: int) -> dict[str, Any]:
            per_seed = [float(acc[arm, step, s]) for s in cfg.sweep.seeds]
            return {"mean": float(np.mean(per_seed)), "per_seed": per_seed}

        out["solutions"] = {"width": self.solutions_width, "task": target,
                            "reweighted_frequencies": cfg.reweighted(tasks).tolist(),
                            "steps": [end1, end2 - end1], "learned_threshold": cfg.eval.learned,
                            "after_reweighting": at("reweighted", end1), "after_natural": at("reweighted", end2),
                            "natural_only_at_switch": at("natural", end1), "natural_only": at("natural", end2)}
        return out


def run_neurons(cfg: NeuronsConfig, out: Path, *, progress: bool = True, overwrite: bool = False) -> NeuronsResult:
    """The width sweep with its ablation, then the solutions-exist experiment; tables and summary.json
    (the figures are drawn by raretask.report.neurons)."""
    out, tasks = Path(out), cfg.tasks.build()
    device = resolve_device(cfg.train.device)  # a missing CUDA device is an error before anything is written
    runs.prepare_run_dir(out, cfg.to_toml(), overwrite=overwrite)
    threads = choose_threads(cfg.train.threads)
    meta = runs.RunMeta(out, kind="synth.neurons", seeds=cfg.sweep.seeds, widths=cfg.sweep.widths,
                        device=str(device), torch_threads=threads)
    timings: dict[str, float] = {}
    with torch_threads(threads), progress_bar(enabled=progress) as bar:
        if not (out / "results.parquet").is_file():
            start = time.perf_counter()
            run_sweep(cfg, tasks, out, bar)
            timings["sweep_s"] = time.perf_counter() - start
        tables = NeuronsResult.read_tables(out)
        n0 = solutions_width(cfg, tables["results"], tasks.names[cfg.target(tasks)]) \
            if cfg.solutions.enabled else None
        if n0 is not None:
            if not (out / "solutions.parquet").is_file():
                start = time.perf_counter()
                run_solutions(cfg, tasks, n0, out, bar)
                timings["solutions_s"] = time.perf_counter() - start
            tables = NeuronsResult.read_tables(out)
    result = NeuronsResult(out, cfg, tables, n0, wall_time_s=meta.data["wall_time_s"] + time.time() - meta.start)
    runs.write_json(out / "summary.json", result.summary())
    meta.finish(parts=timings, solutions_width=n0)
    return result
