"""`raretask synth interference`: per-task gradient interference on the shared encoder along a synthetic sweep's
training (paper Sec. 3.2, Thm 4, Fig. 4). The arithmetic (per-task gradients in one pass, their Gram statistics, the
metrics) is `raretask.analysis.interference`; this module trains, measures every eval.every steps, writes
DIR/{interference,cosines}.parquet and DIR/{interference,cosines}.png (with `interference.save_encoder`, also
DIR/encoder.pt: every cell's final W, see retention.save_encoders), and adds a report section.

    cfg = load_config(InterferenceConfig, "configs/synthetic/interference.toml")
    result = run_interference(cfg, Path("runs/interference"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raretask import runs
from raretask.analysis.interference import (GradientTap, Targets, exact_task_gradients, gradient_stats,
                                            interference_metrics, per_task_stats)
from raretask.config import Config, ConfigError, StrEnum, option
from raretask.devices import choose_threads, resolve_device, torch_threads
from raretask.progress import progress_bar
from raretask.synthetic.mixture import Mixture
from raretask.synthetic.retention import save_encoders
from raretask.synthetic.train import Evaluator, SweepTrainer, SynthConfig


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
    save_encoder: bool = option(False, "write every cell's final encoder W to DIR/encoder.pt")


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
            final.append({"width": n, **{k: nan_mean([self.table[k][i] for i in rows]) for k in FINAL_KEYS}})
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
    at step 0, every eval.every steps and at the end; its tables. Resumes from its checkpoint; a finished run
    is read back."""
    out = Path(out)
    runs.prepare_run_dir(out, cfg.to_toml(), overwrite=overwrite)
    if (out / "interference.parquet").is_file():  # written last: the run is finished
        return InterferenceResult(out, cfg, runs.read_table(out / "interference.parquet"),
                                  runs.read_table(out / "cosines.parquet"))
    device = resolve_device(cfg.train.device)
    threads = choose_threads(cfg.train.threads)
    meta = runs.RunMeta(out, kind="synth.interference", seeds=cfg.sweep.seeds, widths=cfg.sweep.widths,
                        device=str(device), torch_threads=threads)
    with torch_threads(threads):
        table, cosines = _train_and_measure(cfg, out, progress)
    result = InterferenceResult(out, cfg, table, cosines)
    runs.write_table(out / "cosines.parquet", cosines)
    runs.write_table(out / "interference.parquet", table)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    meta.finish(summary=result.summary())
    return result


def _train_and_measure(cfg: InterferenceConfig, out: Path, progress: bool) -> tuple[dict[str, list], dict[str, list]]:
    trainer = SweepTrainer(cfg)
    mix, F, r = cfg.probe()
    student, device, T, every = trainer.student, trainer.device, cfg.train.steps, cfg.eval.every
    evaluator = Evaluator(mix, cfg.eval, cfg.sweep.seeds, device)
    tracked = list(range(mix.num_tasks)) if cfg.interference.cosines is CosineSet.ALL else sorted({*F, r})
    targets = Targets(F, r, torch.as_tensor(mix.bases[r], device=device), tracked)
    tap = GradientTap(student, targets, [p * cfg.train.batch_size for p in mix.frequencies])
    ckpt = out / "checkpoint.pt"
    step, table, cosines = 0, {}, {}
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        step, table, cosines = state["step"], state["table"], state["cosines"]
        trainer.load_state_dict(state["trainer"])
        for gen, s in zip(evaluator.generators, state["eval_generators"]):
            gen.set_state(s)
    with progress_bar(eta=False, enabled=progress) as bar:
        task = bar.add_task("interference", total=T, completed=step) if bar else None
        while True:
            stepped = False
            if step % every == 0 or step == T:  # measure at the parameters after `step` updates
                ev = evaluator(student)
                if cfg.interference.mode is ProbeMode.EXACT:
                    stats = gradient_stats(student, exact_task_gradients(student, mix), targets)
                elif step < T:  # the next training step's own batch, captured while it trains
                    with tap:
                        trainer.step()
                    stats, stepped = tap.stats, True
                else:  # after the last step: a further batch of the training stream, without an update
                    batch = trainer.stream.sample(cfg.train.batch_size)
                    stats = per_task_stats(student, batch.x, batch.y, batch.offsets, targets)
                m = interference_metrics(stats, targets)
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
    if cfg.interference.save_encoder:  # the encoder the last row was measured on
        save_encoders(student, out / "encoder.pt", step=T)
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


def nan_mean(values: list[float]) -> float | None:
    v = np.asarray(values, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else None


def read_interference(run_dir: Path) -> InterferenceResult:
    """A finished run, from its directory alone."""
    from raretask.config import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "interference.parquet").is_file():
        raise ConfigError(f"{run_dir}: no interference.parquet (is the run finished?)")
    cfg = load_config(InterferenceConfig, run_dir / "config.toml")
    return InterferenceResult(run_dir, cfg, runs.read_table(run_dir / "interference.parquet"),
                              runs.read_table(run_dir / "cosines.parquet"))
