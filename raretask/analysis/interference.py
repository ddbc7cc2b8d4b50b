"""Gradient interference between tasks on the shared encoder (paper Sec. 3.2, Thm 4, Fig. 4), measured per cell.

Per-task gradients in one pass. The batch loss is a sum over examples, L = (1/B) sum_i ||y_i - y^_i||^2, and the
encoder enters only through the hidden states h_i = W x_i, so task k's share of the encoder gradient is

    g_k = dL_k/dW = sum_{i in task k} delta_i x_i^T,      delta_i = dL/dh_i  (N,),  x_i (d,)

One backward to the predictions, the decoders applied transposed to reach the hidden states
(delta_i = D_{k(i)} dL/dy^_i, grouped matmuls), then one matmul per (seed, task) group over that group's rows gives
every g_k of every cell at once (rows of a sweep's encoder are its cells): together the arithmetic of one encoder
weight gradient, not K backward passes. sum_k g_k is the encoder gradient itself, so during training
(`GradientTap`) the per-task gradients stand in for the model's own weight gradient and logging costs little more
than the metrics on top of a plain step (benchmarks/interference.py). `exact_task_gradients` gives their expectation over
x ~ N(0, I) in closed form, E[g_k] = pi_k grad l_k = 2 pi_k D_k (D_k^T W - A_k) (D_k stored (N, r)).

Metrics per cell, from g (K, N, d) (F = the frequent set, r = the rare task, B_r its input directions (d, r_r)):
  cosine(k, l)         <g_k, g_l> / (||g_k|| ||g_l||)  (NaN when a task has no example in the batch)
  frequent_norm        ||G_F||, G_F = sum_{k in F} g_k: the common-task update that Thm 4 bounds by
                       2 sqrt(lambda_1(M_F) delta_F); `frequent_norm_ratio` divides by its value at step 0
  rare_projection      ||G_F B_r||_F / ||G_F||_F: the share of the common update that moves the encoder along the
                       rare task's input directions (sqrt(r_r / d) for an isotropic gradient)
  cos_rare_frequent    cos(g_r, G_F), the paper's Fig. 4 interference cosine

    cfg = load_config(InterferenceConfig, "configs/synthetic/interference.toml")
    result = run_interference(cfg, Path("runs/interference"))
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from raretask import runs
from raretask.config import Config, ConfigError, StrEnum, option
from raretask.synthetic.mixture import Mixture, grouped_matmul
from raretask.synthetic.model import CellStudent, SweepStudent
from raretask.synthetic.train import Evaluator, SweepTrainer, SynthConfig, resolve_device

Student = SweepStudent | CellStudent
BLOCK_DIAGONAL_FLOPS = 2e7  # below this, hidden_gradients uses one block-diagonal product (~1 ms on a CPU)


# -------------------------------------------------------------------------------------- per-task gradients


def segment_outer(delta: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """sum_{i in group g} delta_i^T x_i for consecutive row groups ending at `offsets` (G,): delta (M, n), x (M, d)
    -> (G, n, d), written into `out` if given; an empty group gives zeros.

    One matmul per group. (grouped_mm's contraction-grouped form does the same in one kernel but ran 2.5x slower on
    this CPU at the paper's shape; reusing `out` matters more: a fresh K x N x d tensor costs more in page faults
    than the products themselves.)"""
    ends = offsets.tolist()
    if out is None:
        out = delta.new_empty(len(ends), delta.shape[1], x.shape[1])
    for g, (s, e) in enumerate(zip([0] + ends[:-1], ends)):
        if e > s:
            torch.matmul(delta[s:e].T, x[s:e], out=out[g])
        else:
            out[g].zero_()
    return out


def hidden_gradients(student: Student, grad_pred: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """delta_i = dL/dh_i from dL/dy^_i: the decoders applied transposed, group by group (linear in grad_pred).

    SweepStudent: grad_pred (S*B, C, r_max) -> (S*B, rows) (padding rows zero); CellStudent: (B, r_max) -> (B, N).
    A sweep takes one grouped matmul per cell, or, when that product is small, one for all cells against
    block-diagonal decoders (C times the arithmetic, but one kernel: 2.4x faster at the CPU preset's size, 3x
    slower at the paper's)."""
    D = student.decoder.detach()
    if isinstance(student, CellStudent):
        return grouped_matmul(grad_pred, D.transpose(1, 2), offsets)  # D: (K, N, r) -> (K, r, N)
    S, K, rows, r = D.shape
    C = len(student.widths)
    if 2 * grad_pred.shape[0] * C * r * rows < BLOCK_DIAGONAL_FLOPS:
        real = student.real_rows  # block (cell c, output j) x (row of c): D[., row, j]
        cols = (student.cell_of_row[:, None] * r + torch.arange(r, device=D.device)).reshape(-1)
        blocks = D.new_zeros(S * K, C * r, rows)
        blocks[:, cols, real[:, None].expand(-1, r).reshape(-1)] = D.reshape(S * K, rows, r)[:, real].flatten(1)
        return grouped_matmul(grad_pred.reshape(-1, C * r), blocks, offsets)
    delta = grad_pred.new_zeros(grad_pred.shape[0], rows)
    for c, (o, n) in enumerate(zip(student.starts, student.widths)):  # one small grouped matmul per cell
        Dc = D[:, :, o:o + n].reshape(S * K, n, r).transpose(1, 2)  # (S*K, r, N_c)
        delta[:, o:o + n] = grouped_matmul(grad_pred[:, c].contiguous(), Dc, offsets)
    return delta


def task_gradients(student: Student, x: torch.Tensor, grad_pred: torch.Tensor, offsets: torch.Tensor,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-task encoder gradients from the gradient w.r.t. the predictions, in one pass (into `out` if given).

    SweepStudent: x (S, B, d), grad_pred (S*B, C, r_max) -> (S, K, rows, d); cell c owns rows
    [starts[c], starts[c] + widths[c]), i.e. (S, K, N_c, d) per cell. CellStudent: x (B, d) -> (K, N, d)."""
    delta = hidden_gradients(student, grad_pred, offsets)
    flat = None if out is None else out.view(-1, *out.shape[-2:])
    g = segment_outer(delta, x.reshape(-1, x.shape[-1]), offsets, flat)  # (S*K, rows, d): group (s, k), seed s rows
    if isinstance(student, CellStudent):
        return g
    return g.view(len(student.seeds), len(student.ranks), *g.shape[1:])


def batch_loss(student: Student, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training objective of one batch: the sum of the cells' mean squared errors (summed over outputs)."""
    if isinstance(student, CellStudent):
        return (pred - y).square().sum(-1).mean()
    return student.cell_losses(pred, y, pred.shape[0] // len(student.seeds)).sum()


def per_task_gradients(student: Student, x: torch.Tensor, y: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Task k's share of the batch-loss gradient of the encoder, for every task (and cell): one forward, one
    backward to the predictions, then `task_gradients`. Shapes as there; rows of x and y grouped as the stream's
    (by seed, then task, group ends `offsets`). Leaves the parameters' .grad untouched."""
    with torch.enable_grad():
        pred = student(x, offsets)
        (grad_pred,) = torch.autograd.grad(batch_loss(student, pred, y), pred)
    with torch.no_grad():
        return task_gradients(student, x, grad_pred, offsets)


def exact_task_gradients(student: Student, mixture: Mixture) -> torch.Tensor:
    """E_x of `per_task_gradients` for x ~ N(0, I): pi_k grad_W l_k = 2 pi_k D_k (D_k^T W - A_k), label noise
    adding nothing. Shapes as `task_gradients`; computed in the encoder's dtype."""
    W, D = student.encoder.detach(), student.decoder.detach()
    A = torch.as_tensor(mixture.teachers(), dtype=W.dtype, device=W.device)  # (K, r, d)
    pi = torch.as_tensor(mixture.frequencies, dtype=W.dtype, device=W.device)
    if isinstance(student, CellStudent):
        E = torch.einsum("knr,nd->krd", D, W) - A  # (K, r, d): student map minus teacher
        return 2 * pi[:, None, None] * torch.einsum("knr,krd->knd", D, E)
    S, K, rows, _ = D.shape
    g = W.new_zeros(S, K, rows, W.shape[-1])
    for o, n in zip(student.starts, student.widths):  # evaluation only (not per training step)
        E = torch.einsum("sknr,snd->skrd", D[:, :, o:o + n], W[:, o:o + n]) - A
        g[:, :, o:o + n] = 2 * pi[:, None, None] * torch.einsum("sknr,skrd->sknd", D[:, :, o:o + n], E)
    return g


class GradientTap:
    """Per-task encoder gradients of the very batch an optimiser step trains on, captured while the step runs.

        tap = GradientTap(trainer.student)
        with tap:
            trainer.step()
        g = tap.gradients           # (S, K, rows, d), at the parameters before the step

    A forward hook on the student keeps the batch's x and offsets and hooks the predictions; when the backward
    reaches them, the hook computes the per-task gradients (the parameters are still those of the forward). The
    encoder's own weight gradient is then their sum, so the student's encoder is frozen for the step and its .grad
    set from the per-task gradients: logging costs the metrics, not a second weight gradient. The update equals an
    untapped step's up to float rounding (tested)."""

    def __init__(self, student: Student):
        self.student = student
        self.gradients: torch.Tensor | None = None  # valid until the next tapped step (its buffer is reused)
        self._buffer: torch.Tensor | None = None

    def __enter__(self) -> GradientTap:
        self.gradients = None
        self._handle = self.student.register_forward_hook(self._on_forward)
        self._requires_grad = self.student.encoder.requires_grad
        self.student.encoder.requires_grad_(False)  # the model's backward skips the encoder's weight gradient
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._handle.remove()
        self.student.encoder.requires_grad_(self._requires_grad)
        if exc_type is None and self.gradients is None:  # else the step would have left the encoder untrained
            raise RuntimeError("GradientTap: no backward reached the student's predictions during the tapped step")

    def _on_forward(self, module: torch.nn.Module, inputs: tuple, pred: torch.Tensor) -> None:
        x, offsets = inputs[0].detach(), inputs[1]
        if pred.requires_grad:
            pred.register_hook(lambda grad: self._on_backward(x, grad, offsets))

    def _shape(self, x: torch.Tensor) -> tuple[int, ...]:
        st, d = self.student, x.shape[-1]
        if isinstance(st, CellStudent):
            return (len(st.ranks), st.encoder.shape[0], d)
        return (len(st.seeds), len(st.ranks), st.encoder.shape[1], d)

    @torch.no_grad()
    def _on_backward(self, x: torch.Tensor, grad_pred: torch.Tensor, offsets: torch.Tensor) -> None:
        if self.gradients is not None:
            raise RuntimeError("GradientTap: the student ran more than one backward in a tapped step")
        shape = self._shape(x)
        if self._buffer is None or self._buffer.shape != shape or self._buffer.dtype != grad_pred.dtype:
            self._buffer = grad_pred.new_empty(shape)
        g = self.gradients = task_gradients(self.student, x, grad_pred, offsets, out=self._buffer)
        enc = self.student.encoder
        total = g.sum(-3)  # sum over tasks: the encoder gradient itself
        enc.grad = total if enc.grad is None else enc.grad + total


# ------------------------------------------------------------------------------------------------------ metrics


@torch.no_grad()
def interference_metrics(student: Student, g: torch.Tensor, frequent: list[int], rare: int,
                         rare_basis: torch.Tensor, tasks: list[int] | None = None) -> dict[str, np.ndarray]:
    """The module docstring's metrics from per-task gradients g (`task_gradients`' shapes), as float64 arrays.

    rare_basis: B_r (d, r_r), orthonormal columns; `tasks`: those whose pairwise cosines are wanted (default all;
    F and r must be among them). Returns 'cosine' (S, C, T, T) and 'frequent_norm', 'rare_norm', 'rare_projection',
    'cos_rare_frequent', 'mean_cosine' (mean over distinct pairs) (S, C); a CellStudent's come with S = C = 1.
    The heavy part (inner products over rows x d) runs in torch on g's device; the rest on (S, C, T, T) in numpy."""
    if g.dim() == 3:  # one cell: (K, N, d) as one seed of one cell
        g, row_cell = g[None], g.new_ones(g.shape[1], 1)
    else:
        row_cell = student.row_cell.to(g.dtype)  # (rows, C) one-hot: which cell owns each row (padding: none)
    tasks = list(range(g.shape[1])) if tasks is None else list(tasks)
    S, T = g.shape[0], len(tasks)
    G_F = g[:, frequent].sum(1)  # (S, rows, d): the frequent set's gradient
    proj = (G_F @ rare_basis.to(g.dtype)).square().sum(-1) @ row_cell  # (S, C): ||G_F B_r||^2 per cell
    sub = g if tasks == list(range(g.shape[1])) else g[:, tasks]  # (S, T, rows, d)
    # <g_k, g_l> row by row (one bmm per seed over the encoder rows, no copy), then summed over each cell's rows:
    # 2x faster on this CPU than one (T, N d) x (N d, T) product per cell, whose inner dimension is huge.
    per_row = torch.stack([torch.bmm(sub[s].transpose(0, 1), sub[s].permute(1, 2, 0)) for s in range(S)])
    gram = (per_row.flatten(2).transpose(1, 2) @ row_cell).double().cpu().numpy()  # (S, T T, C)
    gram = gram.transpose(0, 2, 1).reshape(S, -1, T, T)  # (S, C, T, T)
    proj = proj.double().cpu().numpy()
    F, r = [tasks.index(k) for k in frequent], tasks.index(rare)
    norms = np.sqrt(np.maximum(np.diagonal(gram, axis1=-2, axis2=-1), 0))  # (S, C, T)
    frequent_norm = np.sqrt(np.maximum(gram[..., F, :][..., F].sum((-1, -2)), 0))
    with np.errstate(divide="ignore", invalid="ignore"):  # a task without examples: NaN, not a number
        outer = norms[..., :, None] * norms[..., None, :]
        cosine = np.where(outer > 0, gram / outer, np.nan)
        denom = norms[..., r] * frequent_norm
        off = cosine[..., np.arange(T)[:, None] != np.arange(T)]  # (S, C, T (T - 1)): distinct pairs
        pairs = np.isfinite(off).sum(-1)
        return {"cosine": cosine, "frequent_norm": frequent_norm, "rare_norm": norms[..., r],
                "rare_projection": np.where(frequent_norm > 0, np.sqrt(proj) / frequent_norm, np.nan),
                "cos_rare_frequent": np.where(denom > 0, gram[..., r, F].sum(-1) / denom, np.nan),
                "mean_cosine": np.where(pairs > 0, np.nansum(off, -1) / np.maximum(pairs, 1), np.nan)}


# ------------------------------------------------------------------------------------------------------- config


class ProbeMode(StrEnum):
    BATCH = "batch"  # the per-task gradients of the training step's own batch: what SGD applies
    EXACT = "exact"  # their expectation over x ~ N(0, I), in closed form


class CosineSet(StrEnum):
    ALL = "all"
    FREQUENT_RARE = "frequent_rare"


@dataclass
class ProbeConfig(Config):
    mode: ProbeMode = option(ProbeMode.BATCH, "batch: gradients of the step's own batch; exact: their expectation")
    rare: str | None = option(None, "the rare task r whose input subspace is probed (default: the least frequent)")
    cosines: CosineSet = option(CosineSet.ALL, "all: K x K cosines; frequent_rare: among F and r only (cheaper)")


@dataclass
class InterferenceConfig(SynthConfig):
    """A synthetic sweep (one grid point) plus what to measure at every eval.every steps."""

    interference: ProbeConfig = option(factory=ProbeConfig, doc="what to measure")

    def validate(self, path: str = "") -> None:
        if self.sweep.grid:  # before SynthConfig's checks, which expand the grid into plain SynthConfigs
            raise ConfigError(f"sweep.{next(iter(self.sweep.grid))}: the interference analysis trains one grid "
                              f"point; sweep only widths and seeds")
        super().validate(path)
        self.probe()

    def probe(self) -> tuple[Mixture, list[int], int]:
        """(mixture, frequent set F, rare task index r); r is checked to lie outside F."""
        mix = self.mixture.build()
        F = mix.frequent_set(self.eval.frequent_mass)
        name = self.interference.rare
        if name is None:
            r = max(range(mix.num_tasks), key=lambda k: (-mix.frequencies[k], k))  # least frequent, the last on ties
        elif name in mix.names:
            r = mix.names.index(name)
        else:
            raise ConfigError(f"interference.rare: no task named {name!r} (tasks: {', '.join(mix.names)})")
        if r in F:
            raise ConfigError(f"interference.rare: task {mix.names[r]!r} is in the frequent set F (eval.frequent_mass "
                              f"= {self.eval.frequent_mass}); choose a task outside it")
        return mix, F, r


# ------------------------------------------------------------------------------------------------------ the run


@dataclass
class InterferenceResult:
    out: Path
    config: InterferenceConfig
    table: dict[str, list]  # one row per (step, seed, width)
    cosines: dict[str, list]  # one row per (step, seed, width, task pair)

    def summary(self) -> dict[str, Any]:
        """The `--json` object: final-step metrics per width, mean over seeds."""
        mix, F, r = self.config.probe()
        last = max(self.table["step"])
        final = []
        for n in self.config.sweep.widths:
            rows = [i for i, (s, w) in enumerate(zip(self.table["step"], self.table["width"])) if s == last and w == n]
            final.append({"width": n, **{k: _nanmean([self.table[k][i] for i in rows]) for k in FINAL_KEYS}})
        return {"out": str(self.out), "mode": str(self.config.interference.mode), "rare": mix.names[r],
                "frequent_set": [mix.names[k] for k in F], "step": last,
                "projection_baseline": projection_baseline(mix, r), "final": final}


FINAL_KEYS = ["frequent_norm", "frequent_norm_ratio", "rare_projection", "cos_rare_frequent", "mean_cosine",
              "rare_signal", "residual"]


def projection_baseline(mix: Mixture, r: int) -> float:
    """rare_projection of an isotropic gradient: sqrt(r_r / d)."""
    return float(np.sqrt(mix.ranks[r] / mix.dim))


def run_interference(cfg: InterferenceConfig, out: Path, *, progress: bool = True,
                     overwrite: bool = False) -> InterferenceResult:
    """Train cfg's sweep (SweepTrainer: the same updates as `synth run`) and measure per-task gradient interference
    at step 0, every eval.every steps and at the end; tables, figures. Resumes from its checkpoint; a finished run
    is read back."""
    out = Path(out)
    runs.prepare_run_dir(out, cfg.to_toml(), overwrite=overwrite)
    if (out / "interference.parquet").is_file():  # written last: the run is finished
        return InterferenceResult(out, cfg, runs.read_table(out / "interference.parquet"),
                                  runs.read_table(out / "cosines.parquet"))
    device = resolve_device(cfg.train.device)
    meta = runs.RunMeta(out, kind="synth.interference", seeds=cfg.sweep.seeds, widths=cfg.sweep.widths,
                        device=str(device), torch_threads=torch.get_num_threads())
    table, cosines = _train_and_measure(cfg, out, progress)
    result = InterferenceResult(out, cfg, table, cosines)
    runs.write_table(out / "cosines.parquet", cosines)
    draw_figures(result)
    runs.write_table(out / "interference.parquet", table)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    meta.finish(summary=result.summary())
    return result


def _train_and_measure(cfg: InterferenceConfig, out: Path, progress: bool) -> tuple[dict[str, list], dict[str, list]]:
    trainer = SweepTrainer(cfg)
    mix, F, r = cfg.probe()
    student, device, T, every = trainer.student, trainer.device, cfg.train.steps, cfg.eval.every
    evaluator = Evaluator(mix, cfg.eval, cfg.sweep.seeds, device)
    tap = GradientTap(student)
    tracked = list(range(mix.num_tasks)) if cfg.interference.cosines is CosineSet.ALL else sorted({*F, r})
    basis = torch.as_tensor(mix.bases[r], device=device)
    ckpt = out / "checkpoint.pt"
    step, table, cosines = 0, {}, {}
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        step, table, cosines = state["step"], state["table"], state["cosines"]
        trainer.load_state_dict(state["trainer"])
        for gen, s in zip(evaluator.generators, state["eval_generators"]):
            gen.set_state(s)
    bar = _progress() if progress else None
    with bar or _null():
        task = bar.add_task("interference", total=T, completed=step) if bar else None
        while True:
            stepped = False
            if step % every == 0 or step == T:  # measure at the parameters after `step` updates
                ev = evaluator(student)
                if cfg.interference.mode is ProbeMode.EXACT:
                    g = exact_task_gradients(student, mix)
                elif step < T:  # the next training step's own batch, captured while it trains
                    with tap:
                        trainer.step()
                    g, stepped = tap.gradients, True
                else:  # after the last step: a further batch of the training stream, without an update
                    batch = trainer.stream.sample(cfg.train.batch_size)
                    g = per_task_gradients(student, batch.x, batch.y, batch.offsets)
                m = interference_metrics(student, g, F, r, basis, tracked)
                _append(table, cosines, step, m, ev, r, cfg, [mix.names[k] for k in tracked])
            if step == T:
                break
            if not stepped:
                trainer.step()
            step += 1
            if bar:
                bar.update(task, completed=step)
            if step % cfg.train.checkpoint_every == 0 and step < T:
                state = {"step": step, "table": table, "cosines": cosines, "trainer": trainer.state_dict(),
                         "eval_generators": [gen.get_state() for gen in evaluator.generators]}
                with runs.atomic_path(ckpt) as tmp:
                    torch.save(state, tmp)
    first = {(s, w): v for st, s, w, v in zip(table["step"], table["seed"], table["width"], table["frequent_norm"])
             if st == 0}
    table["frequent_norm_ratio"] = [v / first[(s, w)] if first[(s, w)] > 0 else float("nan")
                                    for s, w, v in zip(table["seed"], table["width"], table["frequent_norm"])]
    return table, cosines


def _append(table: dict[str, list], cosines: dict[str, list], step: int, m: dict[str, np.ndarray],
            ev: dict[str, np.ndarray], r: int, cfg: InterferenceConfig, names: list[str]) -> None:
    for s, seed in enumerate(cfg.sweep.seeds):
        for c, width in enumerate(cfg.sweep.widths):
            row = {"step": step, "seed": seed, "width": width,
                   **{k: float(m[k][s, c]) for k in ["frequent_norm", "rare_norm", "rare_projection",
                                                     "cos_rare_frequent", "mean_cosine"]},
                   "rare_signal": float(ev["signal"][s, c, r]), "residual": float(ev["residual"][s, c])}
            for k, v in row.items():
                table.setdefault(k, []).append(v)
    S, C, T = m["cosine"].shape[:3]
    s, c, a, b = np.indices((S, C, T, T)).reshape(4, -1)  # every (seed, width, task pair)
    for k, v in [("step", [step] * len(s)), ("seed", np.asarray(cfg.sweep.seeds)[s].tolist()),
                 ("width", np.asarray(cfg.sweep.widths)[c].tolist()), ("task", [names[i] for i in a]),
                 ("other", [names[i] for i in b]), ("cosine", m["cosine"].reshape(-1).tolist())]:
        cosines.setdefault(k, []).extend(v)


def _nanmean(values: list[float]) -> float | None:
    v = np.asarray(values, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else None


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                    TimeElapsedColumn(), console=Console(stderr=True))


@contextmanager
def _null() -> Iterator[None]:
    yield None


# ---------------------------------------------------------------------------------------------- figures, report


def _by_width(table: dict[str, list], key: str, widths: list[int]) -> tuple[list[int], np.ndarray]:
    """(steps, (widths, steps) mean over seeds of table[key], NaN-aware)."""
    steps = sorted(set(table["step"]))
    acc = {(w, s): [] for w in widths for s in steps}
    for w, s, v in zip(table["width"], table["step"], table[key]):
        acc[(w, s)].append(v)
    return steps, np.array([[_nanmean(acc[(w, s)]) or np.nan for s in steps] for w in widths], float)


def draw_figures(result: InterferenceResult) -> list[Path]:
    """interference.png (the metrics over training, one line per width) and cosines.png (final K x K cosines of the
    narrowest and widest cells, mean over seeds)."""
    from raretask.report.figures import _plt, _save

    plt, cfg, out, table = _plt(), result.config, Path(result.out), result.table
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
    paths = [_save(fig, out / "interference.png")]

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
    paths.append(_save(fig, out / "cosines.png"))
    return paths


def interference_sections(run_dir: Path) -> list[Any]:
    """The report of a finished interference run: the final metrics per width, the two figures."""
    from raretask.config import load_config
    from raretask.report.html import Section

    run_dir = Path(run_dir)
    if not (run_dir / "interference.parquet").is_file():
        raise ConfigError(f"{run_dir}: no interference.parquet (is the run finished?)")
    cfg = load_config(InterferenceConfig, run_dir / "config.toml")
    result = InterferenceResult(run_dir, cfg, runs.read_table(run_dir / "interference.parquet"),
                                runs.read_table(run_dir / "cosines.parquet"))
    s = result.summary()
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    rows = [["width N", "||G_F||/||G_F||_0", "||G_F B_r||/||G_F||", "cos(g_r, G_F)", "mean cos", "s_r", "delta_F"]]
    rows += [[str(f["width"])] + [fmt(f[k]) for k in ["frequent_norm_ratio", "rare_projection", "cos_rare_frequent",
                                                        "mean_cosine", "rare_signal", "residual"]] for f in s["final"]]
    text = (f"Per-task gradients of the shared encoder ({s['mode']} probe: "
            f"{'the training step’s own batch' if s['mode'] == 'batch' else 'their expectation over x'}), "
            f"step {s['step']}, mean over seeds {cfg.sweep.seeds}. F = {{{', '.join(s['frequent_set'])}}}, rare task "
            f"r = {s['rare']}. A width that has captured its frequent tasks receives a small common-task gradient "
            f"G_F (Thm 4: ||G_F|| <= 2 sqrt(lambda_1(M_F) delta_F)), so little of it moves the encoder along the rare "
            f"task's directions B_r. An isotropic gradient would put sqrt(r_r/d) = {s['projection_baseline']:.3g} of "
            f"its norm there.")
    return [Section("Gradient interference on the shared encoder", text, figures=[run_dir / "interference.png",
                                                                                   run_dir / "cosines.png"],
                    table=rows)]
