"""Online training of a sweep of students on a task mixture (paper App. B.1), and the paper's metrics.

    cfg = load_config(SynthConfig, "configs/synthetic/default.toml")
    result = run(cfg, Path("runs/default"))           # every cell of cfg.sweep, batched; resumable

Within one grid point every (seed, width) cell trains in the same tensors (see model.py). Non-width/seed sweep keys
(e.g. `mixture.zipf = [0.5, 1, 1.5, 2]` under [sweep]) expand into grid points trained one after another, each in
DIR/groups/<name>/; a finished grid point is skipped by reading its results, an unfinished one resumes from its
last checkpoint. A grid point is the sweep's cell: on a Slurm cluster (`launcher.kind = "slurm"`) each unfinished
one is one job (raretask.synthetic.launch).

Metrics (every `eval.every` steps, cells x tasks): loss l_k = E||y_k - y^_k||^2 (summed over outputs, label noise
excluded), normalised loss l_k / Tr(C_k) (= per-output MSE over the mean predictor's Tr(C_k)/r_k), signal
s_k = Tr(P_W C_k)/Tr(C_k) with P_W from the SVD of W, corrected s~_k, and the frequent-set residual delta_F.
`eval.mode = "exact"` computes l_k as the expectation over fresh x ~ N(0, I) in closed form, ||A_k - D_k W||_F^2;
`"samples"` averages over `eval.samples` fresh draws per task instead.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from raretask import runs
from raretask.config import Config, ConfigError, StrEnum, get_path, option, set_raw
from raretask.devices import choose_threads, resolve_device, torch_threads
from raretask.launcher import LauncherConfig, LauncherKind, same_config
from raretask.progress import progress_bar
from raretask.synthetic.mixture import Mixture, MixtureConfig, TaskStream
from raretask.synthetic.model import CellStudent, EncoderKind, SweepStudent


class OptimizerKind(StrEnum):
    ADAMW = "adamw"
    ADAM = "adam"
    SGD = "sgd"


class Schedule(StrEnum):
    INVERSE_SQRT = "inverse_sqrt"
    CONSTANT = "constant"
    COSINE = "cosine"


class EvalMode(StrEnum):
    EXACT = "exact"
    SAMPLES = "samples"


@dataclass
class ModelConfig(Config):
    encoder: EncoderKind = option(EncoderKind.FREE, "free: unconstrained W (the paper's); orthonormal: Stiefel")


@dataclass
class TrainConfig(Config):
    steps: int = option(20000, "optimizer steps, one fresh batch each", ge=1)
    batch_size: int = option(64, "examples per step (tasks drawn from pi)", ge=1)
    optimizer: OptimizerKind = option(OptimizerKind.ADAMW, "adamw (the paper's), adam or sgd")
    lr: float = option(1e-3, "peak learning rate", gt=0)
    weight_decay: float | None = option(None, "weight decay (default: 0.01 for adamw, 0 otherwise)", ge=0)
    momentum: float = option(0.0, "SGD momentum", ge=0)
    schedule: Schedule = option(Schedule.INVERSE_SQRT, "learning-rate schedule after warm-up")
    warmup: int = option(100, "linear warm-up steps", ge=0)
    clip: float = option(1.0, "per-cell gradient-norm clip (0 = off)", ge=0)
    device: str = option("auto", "auto (CUDA when present), cpu or cuda")
    checkpoint_every: int = option(2000, "steps between checkpoints (resume point after a kill)", ge=1)
    threads: int = option(0, "torch threads on a CPU (0 = the cores idle at the start, at most torch's default; "
                             "results are bit-identical at a fixed count)", ge=0)

    def validate(self, path: str = "train") -> None:
        super().validate(path)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"{path}.device: {self.device!r} is not auto, cpu or cuda")


@dataclass
class EvalConfig(Config):
    every: int = option(1000, "steps between metric evaluations", ge=1)
    mode: EvalMode = option(EvalMode.EXACT, "exact: closed-form expectation; samples: Monte-Carlo")
    samples: int = option(4096, "fresh samples per task in samples mode", ge=1)
    frequent_mass: float = option(0.8, "F = smallest top-frequency task set with at least this mass", gt=0,
                                  le=1)


@dataclass
class SweepConfig(Config):
    _extra_field = "grid"
    widths: list[int] = option(factory=lambda: [1, 2, 4, 8, 16], doc="encoder widths N")
    seeds: list[int] = option(factory=lambda: [0], doc="seeds (init and data stream of each cell)", ge=0)
    grid: dict[str, Any] = option(factory=dict, doc="other keys to sweep, e.g. mixture.zipf = [0.5, 1]")


@dataclass
class SynthConfig(Config):
    mixture: MixtureConfig = option(factory=MixtureConfig, doc="the task mixture")
    model: ModelConfig = option(factory=ModelConfig, doc="the student")
    train: TrainConfig = option(factory=TrainConfig, doc="optimisation")
    eval: EvalConfig = option(factory=EvalConfig, doc="metrics")
    sweep: SweepConfig = option(factory=SweepConfig, doc="cells to train")
    launcher: LauncherConfig = option(factory=LauncherConfig, doc="where the grid points train (raretask.launcher)")

    def resolve_paths(self, base: Path) -> None:
        self.mixture.resolve_paths(base)

    def validate(self, path: str = "") -> None:
        super().validate(path)
        s = self.sweep
        if not s.widths:
            raise ConfigError("sweep.widths: empty")
        if not s.seeds:
            raise ConfigError("sweep.seeds: empty")
        for name, values in [("sweep.widths", s.widths), ("sweep.seeds", s.seeds)]:
            if len(set(values)) != len(values):
                raise ConfigError(f"{name}: values repeat")
        ranks = self.launcher.tasks_per_node() * self.launcher.nodes
        if self.launcher.kind is LauncherKind.SLURM and ranks > 1:
            raise ConfigError(f"launcher: a synthetic grid point trains in one process on one device, but launcher."
                              f"gpus and launcher.nodes ask for {ranks} processes")
        for key, values in s.grid.items():
            if key.split(".")[0] in ("sweep", "launcher"):
                raise ConfigError(f"sweep.{key}: the sweep cannot range over {key.split('.')[0]} keys")
            get_path(self, key)  # unknown keys are errors here, with the key named
            if not isinstance(values, list) or not values:
                raise ConfigError(f"sweep.{key}: expected a non-empty list of values")
        for n in s.widths:
            if not 1 <= n <= self.mixture.dim:
                raise ConfigError(f"sweep.widths: width {n} is outside 1..mixture.dim = {self.mixture.dim}")
        for _, point in expand_grid(self):  # every grid point must be a valid config on its own
            if point is not self:
                point.validate()


def expand_grid(cfg: SynthConfig) -> list[tuple[dict[str, Any], SynthConfig]]:
    """The grid points of cfg.sweep.grid (product over keys, in config order) as (assignment, config) pairs."""
    grid = cfg.sweep.grid
    if not grid:
        return [({}, cfg)]
    points = []
    for combo in itertools.product(*grid.values()):
        assign = dict(zip(grid, combo))
        raw = cfg.to_dict()
        raw["sweep"].pop("grid", None)
        for key, value in assign.items():
            set_raw(raw, key, value)
        points.append((assign, SynthConfig.from_dict(raw)))
    return points


def group_name(assign: dict[str, Any]) -> str:
    """Readable name of a grid point, e.g. 'mixture.zipf=0.5'."""
    return ",".join(f"{k}={v}" for k, v in assign.items()) or "all"


def group_slug(assign: dict[str, Any]) -> str:
    """File-system-safe form of group_name (directory and figure names)."""
    return re.sub(r"[^A-Za-z0-9._=,-]+", "_", group_name(assign)).strip("_")


# -------------------------------------------------------------------------------------------- optimiser & schedule


def make_optimizer(t: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """torch's optimisers with their default hyper-parameters; Adam(W) fused (one kernel per step: 10x faster on
    CPU than the per-tensor loop at paper scale) on the devices that have the fused kernel."""
    fused = params[0].device.type in ("cpu", "cuda")
    if t.optimizer is OptimizerKind.ADAMW:
        wd = 0.01 if t.weight_decay is None else t.weight_decay  # torch's default, i.e. "default settings"
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=wd, fused=fused)
    if t.optimizer is OptimizerKind.ADAM:
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay or 0.0, fused=fused)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay or 0.0)


def lr_factor(t: TrainConfig, step: int) -> float:
    """Multiplier of train.lr at `step` (0-based): linear warm-up, then inverse-sqrt / constant / cosine."""
    if t.warmup and step < t.warmup:
        return (step + 1) / t.warmup
    if t.schedule is Schedule.INVERSE_SQRT:
        return math.sqrt(max(t.warmup, 1) / (step + 1))
    if t.schedule is Schedule.COSINE:
        progress = (step - t.warmup) / max(t.steps - t.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return 1.0


# ------------------------------------------------------------------------------------------------------ metrics


class Evaluator:
    """The paper's metrics for every cell of a SweepStudent, in float64."""

    def __init__(self, mixture: Mixture, e: EvalConfig, seeds: list[int], device: torch.device):
        self.mixture, self.e = mixture, e
        self.A = torch.as_tensor(mixture.teachers(), dtype=torch.float64, device=device)  # (K, r_max, d)
        self.traces = torch.as_tensor(mixture.traces, dtype=torch.float64, device=device)
        self.F = mixture.frequent_set(e.frequent_mass)
        self.pi_F = torch.zeros(mixture.num_tasks, dtype=torch.float64, device=device)
        self.pi_F[self.F] = torch.as_tensor(mixture.frequencies[self.F], dtype=torch.float64, device=device)
        # samples mode: one stream per seed, advanced once per evaluation (its state is what a checkpoint saves);
        # each evaluation draws from it a key from which every width gets its own generator (cell_generator)
        self.generators = [torch.Generator(device=device).manual_seed(s * 31 + 12345) for s in seeds]

    def cell_generator(self, key: int, width: int) -> torch.Generator:
        """The samples-mode generator of one (seed, width) cell for one evaluation, from that seed's key for it.

        Seeded from (key, width) alone, so a cell's Monte-Carlo loss is the same whichever other widths the sweep
        has and in whatever order they are evaluated."""
        seed = int(np.random.SeedSequence([key, width]).generate_state(1, dtype=np.uint64)[0])
        return torch.Generator(device=self.A.device).manual_seed(seed)

    def draw_keys(self) -> list[int]:
        """One key per seed for this evaluation; advances each seed's stream by exactly one draw."""
        return [int(torch.randint(2**62, (1,), generator=g, device=g.device)) for g in self.generators]

    @torch.no_grad()
    def __call__(self, student: SweepStudent) -> dict[str, np.ndarray]:
        """{'loss', 'signal'}: (S, C, K); {'residual'}: (S, C)."""
        S, C = student.num_cells
        K, d = self.mixture.num_tasks, self.mixture.dim
        loss = torch.zeros(S, C, K, dtype=torch.float64, device=self.A.device)
        sig = torch.zeros_like(loss)
        keys = self.draw_keys() if self.e.mode is EvalMode.SAMPLES else []  # exact mode draws nothing
        for c, n in enumerate(student.widths):  # evaluation only (not per training step)
            o = student.starts[c]
            W = student.encoder.detach()[:, o:o + n].double()  # (S, N, d)
            D = student.decoder.detach()[:, :, o:o + n].double()  # (S, K, N, r)
            E = torch.einsum("sknr,snd->skrd", D, W) - self.A  # (S, K, r, d): student map minus teacher
            if self.e.mode is EvalMode.EXACT:
                loss[:, c] = E.square().sum((-1, -2))  # E_x ||E x||^2 = ||E||_F^2 for x ~ N(0, I)
            else:
                gens = [self.cell_generator(key, n) for key in keys]  # this width's own draws, one per seed
                for k in range(K):  # one task at a time keeps memory at S * n * d
                    x = torch.stack([torch.randn(self.e.samples, d, generator=g, dtype=torch.float64,
                                                 device=self.A.device) for g in gens])  # (S, n, d)
                    loss[:, c, k] = torch.einsum("srd,snd->snr", E[:, k], x).square().sum(-1).mean(-1)
            _, sv, vh = torch.linalg.svd(W, full_matrices=False)  # P_W = V V^T over non-zero singular values
            keep = sv > 1e-7 * sv.amax(-1, keepdim=True).clamp_min(1e-300)
            vh = vh * keep[..., None]
            sig[:, c] = torch.einsum("snd,krd->sknr", vh, self.A).square().sum((-1, -2)) / self.traces
        residual = ((1 - sig) * self.pi_F * self.traces).sum(-1)  # delta_F = sum_{k in F} pi_k (1 - s_k) Tr(C_k)
        return {"loss": loss.cpu().numpy(), "signal": sig.cpu().numpy(), "residual": residual.cpu().numpy()}


def metric_rows(m: dict[str, np.ndarray], mixture: Mixture, widths: list[int], seeds: list[int],
                **extra: Any) -> dict[str, list]:
    """Flatten evaluator output into columns: one row per (seed, width, task)."""
    from raretask.theory import corrected_signal

    S, C, K = m["loss"].shape
    cols: dict[str, list] = {k: [] for k in ["seed", "width", "task", "frequency", "loss", "normalised_loss",
                                             "signal", "signal_corrected", "residual"]}
    for name, value in extra.items():
        cols[name] = []
    for s, c, k in itertools.product(range(S), range(C), range(K)):
        cols["seed"].append(seeds[s])
        cols["width"].append(widths[c])
        cols["task"].append(mixture.names[k])
        cols["frequency"].append(float(mixture.frequencies[k]))
        cols["loss"].append(float(m["loss"][s, c, k]))
        cols["normalised_loss"].append(float(m["loss"][s, c, k] / mixture.traces[k]))
        cols["signal"].append(float(m["signal"][s, c, k]))
        cols["signal_corrected"].append(float(corrected_signal(m["signal"][s, c, k], widths[c], mixture.dim)))
        cols["residual"].append(float(m["residual"][s, c]))
        for name, value in extra.items():
            # a Python scalar: the column's type is then the same whether the table is built here or read back
            # from a grid point's file (float32 values became float32 columns, read back as float64)
            cols[name].append(value[s, c].item() if isinstance(value, np.ndarray) else value)
    return cols


# ------------------------------------------------------------------------------------------------------- training


@dataclass
class GroupResult:
    results: dict[str, list]
    curves: dict[str, list]
    wall_time_s: float
    steps_per_s: float


@dataclass
class SweepResult:
    out: Path
    config: SynthConfig
    results: dict[str, list]
    curves: dict[str, list]
    groups: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The `--json` summary: per (grid point,) task, trained loss (mean over seeds) and theory loss per width."""
        widths = self.config.sweep.widths
        tasks = []
        grid_keys = list(self.config.sweep.grid)
        for assign in self.groups:
            for name in dict.fromkeys(self.results["task"]):
                rows = [i for i, t in enumerate(self.results["task"]) if t == name
                        and all(self.results[k][i] == v for k, v in assign.items())]
                trained, theory_l = [], []
                for n in widths:
                    sel = [i for i in rows if self.results["width"][i] == n]
                    trained.append(float(np.mean([self.results["loss"][i] for i in sel])))
                    theory_l.append(float(self.results["theory_loss"][sel[0]]))
                entry = {"name": name, "widths": widths, "trained_loss": trained, "theory_loss": theory_l}
                if grid_keys:
                    entry["grid"] = assign
                tasks.append(entry)
        return {"out": str(self.out), "tasks": tasks}


class SweepTrainer:
    """One grid point's training state (students, data streams, optimiser, schedule) and its step.

    Shared by `train_group` and the benchmarks, so what is timed is what trains."""

    def __init__(self, cfg: SynthConfig, device: torch.device | None = None):
        self.cfg, self.mixture = cfg, cfg.mixture.build()
        t, widths, seeds = cfg.train, cfg.sweep.widths, cfg.sweep.seeds
        self.device = device or resolve_device(t.device)
        self.student = SweepStudent(self.mixture.dim, self.mixture.ranks, widths, seeds, cfg.model.encoder,
                                    batch_size=t.batch_size)
        self.student.to(self.device)
        self.stream = TaskStream(self.mixture, seeds, self.device)
        self.opt = make_optimizer(t, list(self.student.parameters()))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: lr_factor(t, step))

    def step(self, counts: torch.Tensor | None = None) -> torch.Tensor:
        """One optimiser step of every cell on a fresh batch; returns the cells' batch losses (S, C).

        `counts` (S, K): how many samples of each task the batch holds (a schedule's), instead of drawing from pi."""
        t = self.cfg.train
        batch = self.stream.sample(t.batch_size, counts)
        losses = self.student.cell_losses(self.student(batch.x, batch.offsets), batch.y, t.batch_size)
        self.opt.zero_grad(set_to_none=True)  # fresh gradients: no zero-fill, no accumulate
        losses.sum().backward()  # cells are independent: each gets the gradient of its own loss
        if t.clip > 0:
            self.student.clip_grad_norm_(t.clip)
        self.opt.step()
        self.sched.step()
        if self.student.kind is EncoderKind.ORTHONORMAL:
            self.student.retract_()
        return losses.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"student": self.student.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "stream": self.stream.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["student"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.stream.load_state(state["stream"])


def train_group(cfg: SynthConfig, gdir: Path, progress: Any = None, label: str = "train",
                on_eval: Callable[[int, SweepStudent], dict[str, np.ndarray]] | None = None) -> GroupResult:
    """Train every (seed, width) cell of one grid point together; checkpoints in gdir; returns its tables.

    `on_eval(step, student)`, if given, runs at every evaluation (step 0 included) and returns extra per-cell
    metrics, each an (S, C) array; they become columns of the curves and results rows (one value per cell)."""
    trainer = SweepTrainer(cfg)
    mixture, student, device = trainer.mixture, trainer.student, trainer.device
    t, widths, seeds = cfg.train, cfg.sweep.widths, cfg.sweep.seeds
    evaluator = Evaluator(mixture, cfg.eval, seeds, device)
    S, C = student.num_cells
    ckpt_path = gdir / "checkpoint.pt"
    step, curves, running, n_running, elapsed = 0, [], torch.zeros(S, C, device=device), 0, 0.0
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        step, curves, elapsed, n_running = ck["step"], ck["curves"], ck["elapsed"], ck["n_running"]
        running = ck["running"].to(device)
        trainer.load_state_dict(ck["trainer"])
        for g, state in zip(evaluator.generators, ck["eval_generators"]):
            g.set_state(state)
    else:
        extra = on_eval(0, student) if on_eval else {}
        curves.append(metric_rows(evaluator(student), mixture, widths, seeds, step=0, train_loss=None,  # null
                                  **extra))
    task = progress.add_task(label, total=t.steps, completed=step) if progress else None
    start = time.perf_counter()
    first_step = step
    while step < t.steps:
        losses = trainer.step()
        step += 1
        running += losses
        n_running += 1
        if step % cfg.eval.every == 0 or step == t.steps:
            train_loss = (running / n_running).cpu().numpy()
            extra = on_eval(step, student) if on_eval else {}
            curves.append(metric_rows(evaluator(student), mixture, widths, seeds, step=step, train_loss=train_loss,
                                      **extra))
            running.zero_()
            n_running = 0
        if progress:
            progress.update(task, completed=step)
        if step % t.checkpoint_every == 0 and step < t.steps:
            state = {"step": step, "curves": curves, "running": running.cpu(), "n_running": n_running,
                     "elapsed": elapsed + time.perf_counter() - start, "trainer": trainer.state_dict(),
                     "eval_generators": [g.get_state() for g in evaluator.generators]}
            with runs.atomic_path(ckpt_path) as tmp:
                torch.save(state, tmp)
    wall = elapsed + time.perf_counter() - start
    rate = (step - first_step) / max(time.perf_counter() - start, 1e-9)
    final = curves[-1]
    theory = mixture.theory_losses(widths)  # (K, C)
    k_of = {name: k for k, name in enumerate(mixture.names)}
    c_of = {n: c for c, n in enumerate(widths)}
    results = {k: v for k, v in final.items() if k not in ("step", "train_loss")}
    results["theory_loss"] = [float(theory[k_of[tk], c_of[w]]) for tk, w in zip(final["task"], final["width"])]
    results["theory_normalised_loss"] = [tl / float(mixture.traces[k_of[tk]])
                                         for tl, tk in zip(results["theory_loss"], final["task"])]
    with runs.atomic_path(gdir / "model.pt") as tmp:
        torch.save({"student": student.state_dict(), "widths": widths, "seeds": seeds}, tmp)
    return GroupResult(results=results, curves=runs.concat_columns(curves), wall_time_s=wall, steps_per_s=rate)


def train_cell(cfg: SynthConfig, seed: int, width: int, steps: int | None = None) -> CellStudent:
    """The naive way: one cell alone, as a plain module with torch's own clipping. Same data stream and init as
    the cell (seed, width) of the batched sweep, so the two must agree (tests) and can be timed (benchmarks)."""
    mixture, t = cfg.mixture.build(), cfg.train
    device = resolve_device(t.device)
    student = CellStudent(mixture.dim, mixture.ranks, width, seed, cfg.model.encoder).to(device)
    stream = TaskStream(mixture, [seed], device)
    opt = make_optimizer(t, list(student.parameters()))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(t, step))
    for _ in range(t.steps if steps is None else steps):
        batch = stream.sample(t.batch_size)
        pred = student(batch.x[0], batch.offsets)  # (B, r_max)
        loss = (pred - batch.y).square().sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.clip > 0:
            torch.nn.utils.clip_grad_norm_(student.parameters(), t.clip)
        opt.step()
        sched.step()
        if student.kind is EncoderKind.ORTHONORMAL:
            student.retract_()
    return student


def grid_point(assign: dict[str, Any], cfg: SynthConfig, out: Path, progress: Any, timings: dict[str, dict],
               on_eval: Callable[[int, SweepStudent], dict[str, np.ndarray]] | None = None
               ) -> tuple[dict[str, list], dict[str, list]]:
    """One grid point of a sweep in out/groups/<slug>: its (results, curves) tables, the grid values `assign` as
    leading columns. A finished point is read back; otherwise it is trained (resuming its checkpoint), written, and
    its timing recorded in `timings`."""
    gdir = out / "groups" / group_slug(assign)
    if (gdir / "results.parquet").is_file():  # finished grid point: read back
        return runs.read_table(gdir / "results.parquet"), runs.read_table(gdir / "curves.parquet")
    g = train_group(cfg, gdir, progress, label=group_name(assign), on_eval=on_eval)
    res = {**{k: [v] * len(g.results["task"]) for k, v in assign.items()}, **g.results}
    cur = {**{k: [v] * len(g.curves["task"]) for k, v in assign.items()}, **g.curves}
    runs.write_table(gdir / "curves.parquet", cur)
    runs.write_table(gdir / "results.parquet", res)  # written last: marks the grid point finished
    (gdir / "checkpoint.pt").unlink(missing_ok=True)
    timings[group_name(assign)] = {"wall_time_s": g.wall_time_s, "steps_per_s": g.steps_per_s}
    return res, cur


def start(cfg: SynthConfig, out: Path, *, overwrite: bool = False,
          here: bool = True) -> tuple[runs.RunMeta, int]:
    """The run directory of `cfg` (a different config there refused, its launcher table aside) and its meta.json;
    (meta, torch threads of the grid points trained here). `here` false: the points train elsewhere (Slurm jobs),
    whose device each point's own training checks."""
    device = resolve_device(cfg.train.device) if here else None
    runs.prepare_run_dir(out, cfg.to_toml(), overwrite=overwrite, same=same_config)
    threads = choose_threads(cfg.train.threads) if here else cfg.train.threads
    meta = runs.RunMeta(out, kind="synthetic", seeds=cfg.sweep.seeds, widths=cfg.sweep.widths,
                        device=str(device or cfg.train.device), torch_threads=threads)
    return meta, threads


def run(cfg: SynthConfig, out: Path, *, progress: bool = True, overwrite: bool = False) -> SweepResult:
    """Train every cell of the config's sweep into `out` (resuming what a killed run left); write its tables."""
    out = Path(out)
    meta, threads = start(cfg, out, overwrite=overwrite)
    results, curves, assigns, timings = [], [], [], {}
    with torch_threads(threads), progress_bar(enabled=progress) as bar:
        for assign, gcfg in expand_grid(cfg):
            res, cur = grid_point(assign, gcfg, out, bar, timings)
            results.append(res)
            curves.append(cur)
            assigns.append(assign)
    result = SweepResult(out=out, config=cfg, results=runs.concat_columns(results),
                         curves=runs.concat_columns(curves), groups=assigns)
    runs.write_table(out / "results.parquet", result.results)
    runs.write_table(out / "curves.parquet", result.curves)
    meta.finish(groups=timings)
    return result
