"""Sweeps of the LM lab (paper Sec. 4, Fig. 5, 6, 22, 23): one pretraining run per cell of a grid of model sizes x
task frequencies x tasks x (matched-frequency gaps) x seeds.

    cfg = load_config(LMSweepConfig, "configs/lm/demo.toml", ["data.manifest=/abs/path/to/corpus"])
    result = run_sweep(cfg, Path("runs/lm-demo"))     # resumable; result.summary() is the `--json` object

    torchrun --nproc-per-node 8 -m raretask.lm.sweep configs/lm/paper_sweep_comparison.toml \\
        data.manifest=/data/dolma --out DIR

A sweep config is an LM training config (raretask.lm.train.LMConfig: data, model, tasks, train, eval, seed) plus a
`[sweep]` table; every cell is that base config with

  model.preset        <- one of `sweep.sizes` (the base's d_model/n_layers/... overrides apply to every size)
  tasks               <- one task of `sweep.tasks` (or all of them in one run with `tasks_together = true`), its
                         `frequency` <- one of `sweep.frequencies`, in the task's own `unit` (per_token: the paper's
                         instances per training token; per_batch: per global batch)
  schedule, every     <- burst every N batches for N in `sweep.gaps` (N > 0: the matched-frequency variant of
                         Fig. 6b -- the same long-run frequency, N batches' share in one batch: "N instances every N
                         batches" at 1 per batch); N = 0 keeps the task's own schedule (iid by default)
  seed, model.init_seed <- one of `sweep.seeds` (data order, injection plan, eval subsets and weights)

`sweep.tasks` names `[[tasks]]` entries of the base config (their kind, seed, tokens and unit are kept; their
frequency may be left out) or registered task kinds (a task of that kind named after it, default settings); empty
means every `[[tasks]]` entry. `tasks_together = false` (default, the paper's) trains one run per task, so tasks do
not compete for capacity; `true` injects all of them into each run, each at the cell's frequency (half the runs).

Run directory:

  DIR/config.toml, DIR/meta.json      the sweep config; provenance, kind "lm.sweep", wall time per cell
  DIR/corpus.json                      sha256 of the corpus' token files and tokenizer (from its manifest)
  DIR/cells/<slug>/                    one `raretask.lm.train` run per cell (metrics.parquet, checkpoints, ...)
  DIR/results.parquet                  the last evaluation of every cell, one row per cell x task
  DIR/curves.parquet                   every evaluation of every cell, one row per cell x step x task
  DIR/fig*.png                         Fig. 5, 6a, 6b, 22, 23 where the grid has their axes (drawn by raretask.report)

Both tables carry the cell's grid keys: `cell` (its slug), `size`, `params` and `non_embedding_params` (N, counted
on the built model), `tasks` (the run's tasks joined by "+"), `unit`, `grid_frequency` (the grid value, in `unit`),
`gap`, `seed`, and `compute` C = 6 N D with D = tokens_seen; `frequency` is the injection rate per token whatever
the unit (from metrics.parquet).

Resume: a finished cell (meta.json status "finished" with the same config) is read back, not retrained; an
unfinished one continues from its last checkpoint (`train.checkpoint_every`). Re-running the same command on the
same DIR therefore resumes a killed sweep; a different config there is refused (its `[launcher]` table aside: where
cells run is not what they compute), and so is a different corpus at the same `data.manifest` path (its token files
or tokenizer differ from DIR/corpus.json); `--overwrite` starts afresh.

On a Slurm cluster (`launcher.kind = "slurm"`, raretask.launcher): raretask.lm.launch's `launch_sweep` does the
checks and writes the directory as `run_sweep` does (`start_sweep`), then submits each unfinished cell as one job of an array, each job the cell's
`raretask lm train DIR/cells/<slug>.toml --out DIR/cells/<slug>` (the command `--workers` runs side by side), on
`launcher.gpus` GPUs data-parallel (one process per GPU; `sweep.micro_batch = "preset"` sizes micro-batches for that
many ranks). The tables are then gathered from the cells' directories by `gather` (`raretask lm gather DIR`), which
the last job runs.

Before anything is written: the grid (no empty axis, known presets, frequencies > 0, tasks that exist), every
cell's config, the corpus manifest, the injection plan of the most demanding cell (one scan of the corpus), the task
tokens against the vocabulary, and (single process) the memory each size needs; each failure is a one-line
ConfigError naming the field.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raretask import runs
from raretask.config import Config, ConfigError, StrEnum, load_config, option
from raretask.launcher import LauncherConfig, LauncherKind, same_config
from raretask.lm.models import PRESETS
from raretask.lm.tasks import LMTaskConfig, ScheduleKind, Unit, registered_kinds
from raretask.lm.train import LMConfig, LMResult, cwd_overrides, read_result, run_entry_point, train

KIND = "lm.sweep"
CORPUS_RECORD = "corpus.json"  # the identity of the corpus every cell of the sweep directory was trained on


class MicroBatch(StrEnum):
    CONFIG = "config"  # train.micro_batch_seqs as configured, for every size
    PRESET = "preset"  # each size's recipe micro-batch (paper ladder: what fits an 80 GB GPU)


@dataclass
class LMGridConfig(Config):
    sizes: list[str] = option(factory=lambda: ["cpu-30k", "cpu-150k"], doc="model presets (model.preset per cell)")
    frequencies: list[float] = option(factory=lambda: [1e-3], doc="task frequencies, in each task's unit")
    tasks: list[str] = option(factory=list, doc="[[tasks]] names or task kinds (empty: every [[tasks]] entry)")
    tasks_together: bool = option(False, "false: one run per task (the paper's); true: all tasks in each run")
    gaps: list[int] = option(factory=lambda: [0], doc="burst period N: N batches' share every N batches (0: as set)")
    seeds: list[int] = option(factory=lambda: [0], doc="seed and model.init_seed of each cell")
    micro_batch: MicroBatch = option(MicroBatch.CONFIG, "config: train.micro_batch_seqs; preset: the size's recipe")


@dataclass
class LMSweepConfig(LMConfig):
    sweep: LMGridConfig = option(factory=LMGridConfig, doc="the grid of cells")
    launcher: LauncherConfig = option(factory=LauncherConfig, doc="where the cells train (raretask.launcher)")

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> LMSweepConfig:
        # The grid sets every task's frequency, so a [[tasks]] entry may leave it out: give it the first grid value.
        if isinstance(data, dict) and isinstance(data.get("tasks"), list):
            freqs = (data.get("sweep") or {}).get("frequencies") if isinstance(data.get("sweep"), dict) else None
            first = freqs[0] if isinstance(freqs, list) and freqs and isinstance(freqs[0], (int, float)) else 1.0
            data = {**data, "tasks": [{"frequency": first, **t} if isinstance(t, dict) else t for t in data["tasks"]]}
        return super().from_dict(data, path)  # type: ignore[return-value]

    def base(self) -> LMConfig:
        """The LM training config every cell starts from."""
        raw = self.to_dict()
        raw.pop("sweep", None)
        raw.pop("launcher", None)
        return LMConfig.from_dict(raw)

    def ranks(self) -> int:
        """Processes each cell trains in: the Slurm launcher's (one per GPU), else this process group's."""
        if self.launcher.kind is LauncherKind.SLURM:
            return self.launcher.nodes * self.launcher.tasks_per_node()
        return int(os.environ.get("WORLD_SIZE", "1"))

    def validate(self, path: str = "") -> None:
        s = self.sweep
        for name in ("sizes", "frequencies", "gaps", "seeds"):
            if not getattr(s, name):
                raise ConfigError(f"sweep.{name}: empty")
            values = getattr(s, name)
            if len(set(values)) != len(values):
                raise ConfigError(f"sweep.{name}: values repeat ({values})")
        for size in s.sizes:
            if size not in PRESETS:
                raise ConfigError(f"sweep.sizes: unknown preset {size!r} (known: {', '.join(PRESETS)})")
        for f in s.frequencies:
            if not (math.isfinite(f) and f > 0):
                raise ConfigError(f"sweep.frequencies: must be > 0, got {f}")
        for name in ("gaps", "seeds"):
            bad = [v for v in getattr(s, name) if v < 0]
            if bad:
                raise ConfigError(f"sweep.{name}: must be >= 0, got {bad[0]}")
        templates = task_templates(self)  # ConfigError for unknown names
        for t in templates:
            if t.unit is Unit.PER_TOKEN and max(s.frequencies) > 0.25:
                raise ConfigError(f"sweep.frequencies: {max(s.frequencies)} per token (task {t.name}) is above 1/4 "
                                  f"(an instance takes 4 tokens)")
        super().validate(path)
        cells = expand_cells(self)
        slugs = [c.slug for c in cells]
        if len(set(slugs)) != len(slugs):
            dup = next(x for x in slugs if slugs.count(x) > 1)
            raise ConfigError(f"sweep: two cells have the same name {dup!r} (frequencies too close to tell apart)")
        for c in cells:  # every cell must be a valid training config on its own
            try:
                c.config.validate()
            except ConfigError as e:
                raise ConfigError(f"sweep cell {c.slug}: {e}") from None


# ----------------------------------------------------------------------------------------------------- the grid


@dataclass
class Cell:
    """One training run of the grid."""

    slug: str
    size: str
    frequency: float  # the grid value, in `unit`
    unit: str
    tasks: tuple[str, ...]
    gap: int
    seed: int
    config: LMConfig

    def keys(self) -> dict[str, Any]:
        """The grid columns of this cell's rows in results.parquet / curves.parquet."""
        return {"cell": self.slug, "size": self.size, "tasks": "+".join(self.tasks), "unit": self.unit,
                "grid_frequency": self.frequency, "gap": self.gap, "seed": self.seed}


def task_templates(cfg: LMSweepConfig) -> list[LMTaskConfig]:
    """The tasks the grid ranges over: [[tasks]] entries by name, or fresh tasks of a registered kind."""
    by_name = {t.name: t for t in cfg.tasks}
    names = cfg.sweep.tasks or list(by_name)
    if not names:
        raise ConfigError("sweep.tasks: empty (name task kinds here, e.g. [\"comparison\"], or list [[tasks]])")
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep.tasks: values repeat ({names})")
    out = []
    for i, name in enumerate(names):
        if name in by_name:
            out.append(by_name[name])
        elif name in registered_kinds():
            out.append(LMTaskConfig(name=name, kind=name, frequency=cfg.sweep.frequencies[0]))
        else:
            raise ConfigError(f"sweep.tasks[{i}]: {name!r} is neither a [[tasks]] name nor a task kind "
                              f"(kinds: {', '.join(registered_kinds())})")
    return out


def cell_slug(size: str, frequency: float, tasks: tuple[str, ...], gap: int, seed: int) -> str:
    """Directory name of a cell, e.g. 'cpu-30k_f0.001_comparison_s0' or '20M_f1_comparison_g10_s0'."""
    name = f"{size}_f{frequency:g}_{'+'.join(tasks)}" + (f"_g{gap}" if gap else "") + f"_s{seed}"
    return re.sub(r"[^A-Za-z0-9._+=-]+", "-", name)


def expand_cells(cfg: LMSweepConfig) -> list[Cell]:
    """Every cell: sizes x task groups x frequencies x gaps x seeds, in that (nesting) order."""
    s = cfg.sweep
    templates = task_templates(cfg)
    groups = [templates] if s.tasks_together else [[t] for t in templates]
    base = cfg.base().to_dict()
    world = cfg.ranks()
    cells = []
    for size, group, freq, gap, seed in itertools.product(s.sizes, groups, s.frequencies, s.gaps, s.seeds):
        raw = copy.deepcopy(base)
        raw["model"]["preset"] = size
        raw["model"]["init_seed"] = seed
        raw["seed"] = seed
        tasks = []
        for t in group:
            d = {**t.to_dict(), "frequency": freq}
            if gap:
                d.update(schedule=ScheduleKind.BURST.value, every=gap)
            tasks.append(d)
        raw["tasks"] = tasks
        if s.micro_batch is MicroBatch.PRESET:
            raw["train"]["micro_batch_seqs"] = _recipe_micro_batch(size, cfg.data.seq_len,
                                                                   cfg.train.global_batch_seqs, world)
        names = tuple(t.name for t in group)
        units = {str(t.unit) for t in group}
        cells.append(Cell(slug=cell_slug(size, freq, names, gap, seed), size=size, frequency=freq,
                          unit=units.pop() if len(units) == 1 else "mixed", tasks=names, gap=gap, seed=seed,
                          config=LMConfig.from_dict(raw)))
    return cells


def _recipe_micro_batch(size: str, seq_len: int, global_batch_seqs: int, world: int) -> int:
    """The preset's recipe micro-batch (sequences at its context) at `seq_len`: the same tokens per micro-batch,
    at least one sequence, at most the rank's batch, halved until it divides the rank's batch."""
    shape = PRESETS[size]
    rank_seqs = max(1, global_batch_seqs // world)
    micro = max(1, min(rank_seqs, shape.micro_batch_size * shape.sequence_length // seq_len))
    while rank_seqs % micro:
        micro -= 1
    return micro


# ------------------------------------------------------------------------------------------------ before writing


def preflight(cfg: LMSweepConfig, cells: list[Cell], *, here: bool = True) -> None:
    """Checks that would otherwise fail a cell hours into the sweep: the corpus, the injection plan of the most
    demanding cell (enough slots in every batch), the task tokens against the vocabulary, the device and (single
    process) the memory of each size. Writes nothing outside a scratch directory. `here` false: the cells train on
    other machines (Slurm jobs), whose device and memory each cell's own training checks."""
    from raretask.lm.corpus import Manifest
    from raretask.lm.models import available_memory, memory_estimate
    from raretask.lm.tasks import build_tasks
    from raretask.devices import resolve_device
    from raretask.lm.train import Precision, band_counts, model_vocab_size
    from raretask.lm.train import prepare as train_prepare

    device = resolve_device(cfg.train.device) if here else None
    try:
        manifest = Manifest.load(cfg.data.manifest)
    except ConfigError as e:
        raise ConfigError(f"data.manifest: {e}") from None
    t = cfg.train
    if manifest.train_tokens < cfg.data.seq_len * t.global_batch_seqs:
        raise ConfigError(f"data.manifest: {manifest.train_tokens} training tokens are fewer than one global batch "
                          f"of {t.global_batch_seqs} x {cfg.data.seq_len}")
    # Injection slots depend on the data and the seed, not on the size: build the plan of the most demanding cell
    # (most instances in one batch) once, in a scratch directory.
    tokens_per_batch = t.global_batch_seqs * cfg.data.seq_len
    worst = max(cells, key=lambda c: max(c.gap, 1) * sum(x.rate_per_batch(tokens_per_batch) for x in c.config.tasks))
    world = cfg.ranks()
    with tempfile.TemporaryDirectory(prefix="raretask-preflight-") as scratch:
        try:
            train_prepare(worst.config, Path(scratch), world)
        except ConfigError as e:
            raise ConfigError(f"sweep cell {worst.slug}: {e}") from None
    have = available_memory(device) if world == 1 and here else None
    seen: set[tuple[str, tuple[str, ...], int]] = set()
    for c in cells:
        key = (c.size, c.tasks, c.config.train.micro_batch_seqs)
        if key in seen:
            continue
        seen.add(key)
        try:
            tasks = build_tasks(c.config.tasks, manifest.vocab_size, manifest.special_ids,
                                counts=band_counts(c.config, manifest))
            vocab = model_vocab_size(c.config, manifest, tasks)
        except ConfigError as e:
            raise ConfigError(f"sweep cell {c.slug}: {e}") from None
        if have is None:
            continue  # several ranks: FSDP shards the states; train checks each rank's share
        micro = c.config.train.micro_batch_seqs or t.global_batch_seqs
        bf16 = t.precision is Precision.BF16
        need = memory_estimate(c.config.model, vocab, micro * cfg.data.seq_len, activation_bytes=2 if bf16 else 4)
        if need > have:
            raise ConfigError(f"sweep.sizes: {c.size} needs ~{need / 1e9:.1f} GB to train at {micro} x "
                              f"{cfg.data.seq_len} tokens per micro-batch, but {device} has {have / 1e9:.1f} GB free "
                              f"(drop the size, set train.micro_batch_seqs, or sweep.micro_batch = \"preset\")")


# ------------------------------------------------------------------------------------------------------ the sweep


@dataclass
class LMSweepResult:
    out: Path
    config: LMSweepConfig
    results: dict[str, list]  # results.parquet's columns
    curves: dict[str, list]   # curves.parquet's columns
    cells: list[Cell] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The `--json` object: one entry per cell x task with its grid keys and final numbers."""
        keys = ("cell", "size", "params", "non_embedding_params", "tasks", "unit", "grid_frequency", "frequency",
                "gap", "seed", "task", "kind", "step", "tokens_seen", "train_loss", "train_acc_labels", "test_loss",
                "test_acc_labels", "test_acc_vocab", "heldout_loss", "lm_loss", "reference_loss")
        n = len(self.results.get("cell", []))
        rows = [{k: self.results[k][i] for k in keys if k in self.results} for i in range(n)]
        return {"out": str(self.out), "cells": len(self.cells), "results": [_finite_row(r) for r in rows]}


def run_sweep(cfg: LMSweepConfig, out: Path, *, progress: bool = True, overwrite: bool = False,
              workers: int = 1) -> LMSweepResult:
    """Train every cell of `cfg` into out/cells/<slug>/ (finished cells read back, unfinished ones resumed), then
    write the combined tables (the CLI then draws the figures); see the module docstring. `workers` > 1 trains that
    many cells side by side, each in its own process (`raretask lm train`), the free cores split between them."""
    out = Path(out)
    rank = int(os.environ.get("RANK", "0"))
    cells, done, meta = start_sweep(cfg, out, overwrite=overwrite, rank=rank)
    console = _console() if progress and rank == 0 else None
    timings: dict[str, Any] = {}
    pending = [c for c in cells if c.slug not in done and not is_finished(out / "cells" / c.slug, c.config)]
    if workers > 1 and len(pending) > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        timings.update(train_side_by_side(pending, out, workers, progress))
    finished: list[tuple[Cell, LMResult]] = []
    for i, cell in enumerate(cells):
        cdir = out / "cells" / cell.slug
        if cell.slug in done or is_finished(cdir, cell.config):
            result, how = read_result(cdir), "read back"
        else:
            if console is not None:
                console.print(f"[bold]cell {i + 1}/{len(cells)}[/bold] {cell.slug}")
            clock = time.perf_counter()
            result, how = train(cell.config, cdir, progress=progress), "trained"
            timings[cell.slug] = {"wall_time_s": time.perf_counter() - clock}
        entry = timings.setdefault(cell.slug, {})
        entry.setdefault("status", how)  # cells trained side by side say so
        entry["tokens_per_s"] = result.meta.get("tokens_per_s")
        finished.append((cell, result))
    results, curves = combine(finished)
    sweep = LMSweepResult(out=out, config=cfg, results=results, curves=curves, cells=cells)
    if rank == 0:
        runs.write_table(out / "curves.parquet", curves)
        runs.write_table(out / "results.parquet", results)
        assert meta is not None
        meta.finish(timings=timings)
    return sweep


def start_sweep(cfg: LMSweepConfig, out: Path, *, overwrite: bool = False, rank: int = 0, here: bool = True
                ) -> tuple[list[Cell], set[str], runs.RunMeta | None]:
    """Before any cell trains: the checks (the config and corpus of an existing DIR, the preflight of the cells to
    train), then the directory, its corpus record and meta.json (rank 0). (cells, slugs finished, meta)."""
    cells = expand_cells(cfg)
    toml = cfg.to_toml()
    existing = out / "config.toml"
    if not overwrite and existing.is_file() and not same_config(existing.read_text(), toml):
        # checked on every rank, so no rank waits for a sweep that rank 0 refused
        raise ConfigError(f"--out {out}: holds a run of a different config (choose another --out, or --overwrite)")
    corpus = check_corpus(cfg, out, overwrite)  # on every rank too, before any cell is read back or trained
    done = {c.slug for c in cells if not overwrite and is_finished(out / "cells" / c.slug, c.config)}
    if len(done) < len(cells):  # a finished sweep is read back without touching the corpus
        preflight(cfg, [c for c in cells if c.slug not in done], here=here)
    meta = None
    if rank == 0:
        runs.prepare_run_dir(out, toml, overwrite=overwrite, same=same_config)
        if corpus is not None:
            runs.write_json(out / CORPUS_RECORD, corpus)  # before any cell trains: every cell is of this corpus
        meta = runs.RunMeta(out, kind=KIND, seeds=cfg.sweep.seeds, sizes=cfg.sweep.sizes,
                            frequencies=cfg.sweep.frequencies, tasks=sorted({t for c in cells for t in c.tasks}),
                            gaps=cfg.sweep.gaps, cells=[c.slug for c in cells])
    return cells, done, meta


def cell_jobs(cells: list[Cell], out: Path) -> list[Any]:
    """Each cell as a `raretask lm train` command (a raretask.runner.Job). Its config is written beside its
    directory, so the process trains exactly the cell the sweep reads back."""
    from raretask.runner import Job

    jobs = []
    for c in cells:
        toml = out / "cells" / f"{c.slug}.toml"
        runs.write_text(toml, c.config.to_toml())
        jobs.append(Job(c.slug, ["lm", "train", str(toml), "--out", str(out / "cells" / c.slug), "--no-progress"],
                        out / "cells" / c.slug))
    return jobs


def train_side_by_side(cells: list[Cell], out: Path, workers: int, progress: bool) -> dict[str, Any]:
    """Train `cells` as separate `raretask lm train` processes, at most `workers` at a time, the free cores split
    between them (train.threads 0 takes the runner's thread count). A failed cell is a one-line error naming its
    log, after the others finished."""
    from raretask.runner import Plan, run_jobs

    jobs = cell_jobs(cells, out)
    plan = Plan.for_machine(min(workers, len(jobs)))
    results = run_jobs(jobs, plan, logs=out / "logs", progress=progress)
    failed = [r for r in results.values() if r.status == "failed"]
    if failed:
        raise ConfigError(f"{len(failed)} cell(s) failed, first {failed[0].name}: {failed[0].error} "
                          f"(log: {failed[0].log})")
    return {name: {"status": "trained side by side", "wall_time_s": r.wall_s, "workers": plan.workers,
                   "threads": plan.threads} for name, r in results.items()}


def corpus_identity(manifest_dir: str | Path) -> dict[str, str] | None:
    """What makes a corpus the same corpus for a sweep: the sha256 of its token files and of its tokenizer, as its
    manifest records them (None when there is no manifest.json: nothing to compare)."""
    from raretask.lm.corpus import Manifest

    if not (Path(manifest_dir) / "manifest.json").is_file():
        return None
    try:
        data = Manifest.load(manifest_dir).data
    except ConfigError as e:
        raise ConfigError(f"data.manifest: {e}") from None
    return {"train_sha256": data["files"]["train"]["sha256"], "heldout_sha256": data["files"]["heldout"]["sha256"],
            "tokenizer_sha256": data["tokenizer"]["sha256"]}


def check_corpus(cfg: LMSweepConfig, out: Path, overwrite: bool) -> dict[str, str] | None:
    """The identity of the config's corpus, after checking it is the one the cells already in `out` were trained
    on (out/corpus.json). A cell's config names the corpus by path only, so a corpus prepared again at that path
    (other sources, seed or tokenizer) would otherwise be silently mixed with cells trained on the old one, finished
    (read back) or not (resumed from a checkpoint). Without a manifest there is nothing to compare: finished cells
    are still read back, and an unfinished one fails in preflight. A directory without a record (new, or written
    before records were kept) takes the current corpus's."""
    corpus = corpus_identity(cfg.data.manifest)
    record = out / CORPUS_RECORD
    if overwrite or corpus is None or not record.is_file():
        return corpus
    recorded = json.loads(record.read_text())
    if recorded != corpus:
        changed = ", ".join(k.removesuffix("_sha256") for k in corpus if recorded.get(k) != corpus[k])
        raise ConfigError(f"data.manifest: {cfg.data.manifest} is not the corpus the cells in --out {out} were "
                          f"trained on ({changed} sha256 differ; choose another --out, or --overwrite)")
    return corpus


def is_finished(cell_dir: Path, cfg: LMConfig) -> bool:
    """True when `cell_dir` holds a finished training run of exactly `cfg`."""
    try:
        meta = json.loads((cell_dir / "meta.json").read_text())
        same = (cell_dir / "config.toml").read_text() == cfg.to_toml()
    except (OSError, ValueError):
        return False
    return same and meta.get("status") == "finished" and (cell_dir / "metrics.parquet").is_file()


def combine(cells: list[tuple[Cell, LMResult]]) -> tuple[dict[str, list], dict[str, list]]:
    """(results, curves): every metric row of every cell with the cell's grid keys; results keeps each cell's last
    evaluation. Columns a cell lacks (e.g. another corpus' reference tasks) are None in its rows."""
    results, curves = [], []
    for cell, r in cells:
        m = r.metrics
        n = len(m.get("step", []))
        params, non_emb = r.meta.get("params"), r.meta.get("non_embedding_params")
        keys = {**cell.keys(), "params": params, "non_embedding_params": non_emb}
        rows = [{**keys, **{k: v[i] for k, v in m.items()}} for i in range(n)]
        for row in rows:  # C = 6 N D (Chinchilla), N = all parameters, D = training tokens so far
            row["compute"] = None if params is None or row.get("tokens_seen") is None \
                else 6.0 * params * row["tokens_seen"]
        curves.extend(rows)
        last = max((row["step"] for row in rows), default=None)
        results.extend(row for row in rows if row["step"] == last)
    return _columns(results), _columns(curves)


def _columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in keys}


def _finite_row(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: non-finite floats become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def read_sweep(out: Path) -> LMSweepResult:
    """The result of a finished sweep directory from its files."""
    out = Path(out)
    cfg = load_config(LMSweepConfig, out / "config.toml")
    for name in ("results.parquet", "curves.parquet"):
        if not (out / name).is_file():
            raise ConfigError(f"{out}: no {name} (is the sweep finished?)")
    return LMSweepResult(out=out, config=cfg, results=runs.read_table(out / "results.parquet"),
                         curves=runs.read_table(out / "curves.parquet"), cells=expand_cells(cfg))


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


# --------------------------------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """`[torchrun ...] python -m raretask.lm.sweep CONFIG [key=value ...] --out DIR`: every cell on every rank."""
    ap = argparse.ArgumentParser(prog="python -m raretask.lm.sweep", description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    ap.add_argument("--out", required=True, help="sweep directory")
    ap.add_argument("--overwrite", action="store_true", help="delete an existing sweep in --out first")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--json", action="store_true", help="print the JSON summary (rank 0)")
    args = ap.parse_args(argv)
    run_entry_point(lambda: run_sweep(load_config(LMSweepConfig, args.config, cwd_overrides(args.overrides)),
                                      Path(args.out), progress=not args.no_progress, overwrite=args.overwrite),
                    as_json=args.json)


if __name__ == "__main__":
    main()
