"""Feature presence along training (paper Fig. 7, App. B.4): is the injected task's feature in the model's residual
stream, at each checkpoint saved along an LM run, per layer?

    cfg = FeatureConfig(position="tok1", steps="all")
    result = analyze_features(Path("runs/lm/cpu"), cfg)          # a run or a sweep directory; -> DIR/features/
    raretask lm analyze runs/lm/cpu-sweep --steps all --json      # the same from the command line

For every run (a sweep: every cell under cells/), every analysed checkpoint (`steps`: all saved along training, or
the last) and every analysed task (`tasks`; default: each comparison and modular-addition task of the run):

  comparison         per residual layer (raretask.analysis.activations: 0 = embeddings, l = after block l - 1), the
                     held-out R² of the value order on the top-`pcs` principal components of the representation at
                     `position` (TOK1 or TOK2): raretask.analysis.presence.order_r2 (fit on half the values, scored
                     on the other half). DAS (raretask.analysis.das, pyvene) at the checkpoints `das` names: a 1-D
                     interchange intervention at `position` of every layer, trained on `das_pairs` counterfactual
                     pairs with bases from the task's train split, IIA on `das_eval_pairs` with bases from its test
                     split; the direction found is saved, oriented so the value order grows along it.
  modular_addition   per layer, the class means of the representation at TOK2 (where both operands have been read)
                     for c = (a + b) mod 100, the variance fraction P_k of each Fourier frequency and the present
                     modes (P_k > 2 * 2 / 99): raretask.analysis.presence; at the last analysed checkpoint, the class
                     means' top-2 principal coordinates per layer (the picture of the modes).

The representations come from `presence_instances` instances (stratified: the same number per value of the probed
token, or per class c), drawn from `seed`. The default takes all 10,000: then class c holds every first operand a
exactly once, so whatever part of a representation is a sum g(a) + h(b) has the same mean in every class and drops
out of V; with a subset it adds sampling noise to the class means, which the 2 P_null threshold does not allow for.
Even so the threshold is loose where a layer's variance sits in few directions (an untrained 2-layer model shows a
few "present" modes); compare presence over training rather than reading one count alone.
Everything is seeded and runs under torch.no_grad, except DAS's own training of its direction.

Output directory (default RUN/features; meta.json kind "lm.features"):

  features.parquet   cell, size, frequency, step, task, kind, layer, metric, value, test_acc: metric "order_r2"
                     (comparison) or "fourier_modes" (modular addition: present modes at that layer; the presence
                     of Fig. 7b is their sum over layers); test_acc = the run's test_acc_labels at that step
                     (metrics.parquet; None where the step was not evaluated)
  das.parquet        cell, size, frequency, step, task, layer, module, position, iia, iia_train, no_intervention,
                     loss, order_corr (|corr| of the class means' coordinate on the direction with the value order),
                     direction (list of d floats)
  fourier.parquet    cell, size, frequency, step, task, layer, k, power, present, threshold
  modes.parquet      cell, size, frequency, step, task, layer, c, pc1, pc2
  config.toml        this FeatureConfig; meta.json: the analysed runs and their steps

Checked before anything is written, each a one-line ConfigError: the directory is an LM run or sweep, every run
has checkpoints, every named task was injected in it, every layer exists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raretask import runs
from raretask.config import Config, ConfigError, StrEnum, load_config, option

KIND = "lm.features"
PROBED_KINDS = ("comparison", "modular_addition")


class Position(StrEnum):
    TOK1 = "tok1"
    TOK2 = "tok2"


class Checkpoints(StrEnum):
    ALL = "all"
    LAST = "last"


class DasAt(StrEnum):
    ALL = "all"
    LAST = "last"
    NONE = "none"


@dataclass
class FeatureConfig(Config):
    tasks: list[str] = option(factory=list, doc="task names to analyse (empty: every comparison and "
                                                "modular-addition task of the run)")
    layers: list[int] = option(factory=list, doc="residual layers, 0 = embeddings, l = after block l-1 (empty: all)")
    cells: list[str] = option(factory=list, doc="of a sweep, the cells to analyse by name (empty: every cell)")
    position: Position = option(Position.TOK1, "where comparison is probed (R² and DAS): tok1 or tok2")
    steps: Checkpoints = option(Checkpoints.ALL, "checkpoints analysed: all (every one saved along training) or last")
    pcs: int = option(50, "principal components regressed on (at most half the fitted values are used)", ge=1)
    presence_instances: int = option(10000, "instances giving the representations, the same number per value / "
                                            "class (10000: every instance)", ge=100)
    das: DasAt = option(DasAt.LAST, "checkpoints where DAS searches every layer: last, all or none")
    das_pairs: int = option(1000, "counterfactual pairs DAS trains on (bases from the train split)", ge=2)
    das_eval_pairs: int = option(1000, "held-out pairs IIA is measured on (bases from the test split)", ge=1)
    das_steps: int = option(300, "Adam steps training the 1-D direction, one minibatch each", ge=1)
    das_batch: int = option(64, "pairs per DAS minibatch", ge=1)
    das_lr: float = option(1e-2, "DAS learning rate", gt=0)
    batch_seqs: int = option(512, "sequences per forward pass when capturing activations", ge=1)
    device: str = option("auto", "auto (CUDA when present), cpu or cuda")
    seed: int = option(0, "instances, counterfactual pairs, value split and DAS initialisation", ge=0)

    def validate(self, path: str = "") -> None:
        super().validate(path)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks: names repeat ({self.tasks})")
        if any(layer < 0 for layer in self.layers):
            raise ConfigError(f"layers: must be >= 0, got {self.layers}")


@dataclass
class FeatureResult:
    out: Path
    config: FeatureConfig
    tables: dict[str, dict[str, list]] = field(default_factory=dict)  # name -> columns
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The `--json` object: per run and task, the last analysed step's presence and the best DAS layer."""
        f, d = self.tables.get("features", {}), self.tables.get("das", {})
        rows = []
        for cell in self.meta.get("runs", []):
            for task in cell["tasks"]:
                idx = [i for i in range(len(f.get("cell", []))) if f["cell"][i] == cell["cell"]
                       and f["task"][i] == task]
                if not idx:
                    continue
                last = max(f["step"][i] for i in idx)
                at = [i for i in idx if f["step"][i] == last]
                row = {"cell": cell["cell"], "size": cell["size"], "task": task, "step": last,
                       "test_acc": f["test_acc"][at[0]]}
                if f["metric"][at[0]] == "order_r2":
                    row["order_r2_max"] = max(f["value"][i] for i in at)
                    row["order_r2_by_layer"] = [f["value"][i] for i in sorted(at, key=lambda i: f["layer"][i])]
                else:
                    row["fourier_modes"] = int(sum(f["value"][i] for i in at))
                das = [i for i in range(len(d.get("cell", []))) if d["cell"][i] == cell["cell"]
                       and d["task"][i] == task and d["step"][i] == last]
                if das:
                    best = max(das, key=lambda i: d["iia"][i])
                    row.update(das_best_layer=d["layer"][best], das_iia=d["iia"][best])
                rows.append(row)
        return {"out": str(self.out), "runs": len(self.meta.get("runs", [])), "results": rows}


# ------------------------------------------------------------------------------------------------ what is analysed


@dataclass
class RunPlan:
    """One run to analyse, checked before anything is written."""

    run_dir: Path
    cell: str
    size: str
    tasks: list[tuple[str, str, float]]  # (name, kind, frequency)
    steps: list[int]
    n_layers: int  # residual layers: blocks + 1
    inputs: Any  # raretask.analysis.activations.RunInputs: the tasks rebuilt from the run's corpus


def chosen_runs(path: Path, cells: list[str]) -> list[Path]:
    """run_dirs(path), only the named cells of a sweep when `cells` is given (a one-line error for a name that is
    not a trained cell, or for cells asked of a single run)."""
    found = run_dirs(path)
    if not cells:
        return found
    by_name = {d.name: d for d in found}
    if found == [Path(path)]:
        raise ConfigError(f"cells: {path} is a single run, not a sweep")
    missing = [c for c in cells if c not in by_name]
    if missing:
        raise ConfigError(f"cells: no trained cell {missing[0]!r} in {path}/cells")
    return [by_name[c] for c in dict.fromkeys(cells)]


def run_dirs(path: Path) -> list[Path]:
    """The LM runs of a run directory (itself) or a sweep directory (its cells/*)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory")
    meta = path / "meta.json"
    kind = json.loads(meta.read_text()).get("kind") if meta.is_file() else None
    if kind == "lm.sweep" or (kind is None and (path / "cells").is_dir()):
        cells = sorted(d for d in (path / "cells").glob("*") if (d / "config.toml").is_file())
        if not cells:
            raise ConfigError(f"{path}: an LM sweep without trained cells")
        return cells
    if kind != "lm.train" or not (path / "config.toml").is_file():
        raise ConfigError(f"{path}: not an LM run or sweep directory (no meta.json of kind lm.train / lm.sweep)")
    return [path]


def plan_run(run_dir: Path, cfg: FeatureConfig) -> RunPlan:
    from raretask.analysis.activations import checkpoints, run_inputs
    from raretask.lm.train import LMConfig

    saved = checkpoints(run_dir)
    lm = load_config(LMConfig, run_dir / "config.toml")
    kinds = {t.name: (str(t.kind), t.frequency) for t in lm.tasks}
    for name in cfg.tasks:
        if name not in kinds:
            raise ConfigError(f"tasks: {name!r} was not injected in {run_dir} (it has: {', '.join(kinds) or 'none'})")
    names = cfg.tasks or [n for n, (k, _) in kinds.items() if k in PROBED_KINDS]
    for name in names:
        if kinds[name][0] not in PROBED_KINDS:
            raise ConfigError(f"tasks: {name!r} is of kind {kinds[name][0]!r}; feature presence is defined for "
                              f"{' and '.join(PROBED_KINDS)}")
    n_layers = lm.model.shape().n_layers + 1
    for layer in cfg.layers:
        if layer >= n_layers:
            raise ConfigError(f"layers: {run_dir.name} has residual layers 0..{n_layers - 1} (0 = embeddings), "
                              f"not {layer}")
    steps = [s for s, _ in saved] if cfg.steps is Checkpoints.ALL else [saved[-1][0]]
    return RunPlan(run_dir, run_dir.name, lm.model.preset, [(n, *kinds[n]) for n in names], steps, n_layers,
                   run_inputs(run_dir))


def check_out(out: Path) -> None:
    """`out` must be new, empty or an earlier feature analysis (which is replaced)."""
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return
    meta = out / "meta.json"
    kind = json.loads(meta.read_text()).get("kind") if meta.is_file() else None
    if kind != KIND:
        raise ConfigError(f"--out {out}: exists and is not a feature analysis directory")


# ------------------------------------------------------------------------------------------------------ analysis


def analyze_features(path: Path, cfg: FeatureConfig, out: Path | None = None, *, progress: bool = False
                     ) -> FeatureResult:
    """Analyse every run of `path` (a run or sweep directory) into `out` (default path/features); see the module
    docstring."""
    from raretask.devices import resolve_device
    from raretask.progress import progress_bar

    cfg.validate()
    path = Path(path)
    plans = [plan_run(d, cfg) for d in chosen_runs(path, cfg.cells)]
    out = Path(out) if out is not None else path / "features"
    check_out(out)
    device = resolve_device(cfg.device, "device")
    runs.write_text(out / "config.toml", cfg.to_toml())
    meta = runs.RunMeta(out, kind=KIND, source=str(path.resolve()), seeds=[cfg.seed],
                        runs=[{"cell": p.cell, "size": p.size, "run_dir": str(p.run_dir.resolve()),
                               "tasks": [t[0] for t in p.tasks], "steps": p.steps} for p in plans])
    tables: dict[str, list[dict[str, Any]]] = {"features": [], "das": [], "fourier": [], "modes": []}
    with progress_bar("checkpoints", enabled=progress) as bar:
        job = bar.add_task("features", total=sum(len(p.steps) for p in plans)) if bar is not None else None
        for p in plans:
            for part, rows in analyze_run(p, cfg, device, bar=bar, job=job).items():
                tables[part] += rows
    columns = {name: _columns(rows, TABLE_COLUMNS[name]) for name, rows in tables.items()}
    for name, cols in columns.items():
        runs.write_table(out / f"{name}.parquet", cols)
    meta.finish()
    return FeatureResult(out, cfg, columns, meta.data)


TABLE_COLUMNS = {
    "features": ["cell", "size", "frequency", "step", "task", "kind", "layer", "metric", "value", "test_acc"],
    "das": ["cell", "size", "frequency", "step", "task", "layer", "module", "position", "iia", "iia_train",
            "no_intervention", "loss", "order_corr", "direction"],
    "fourier": ["cell", "size", "frequency", "step", "task", "layer", "k", "power", "present", "threshold"],
    "modes": ["cell", "size", "frequency", "step", "task", "layer", "c", "pc1", "pc2"],
}


def _columns(rows: list[dict[str, Any]], names: list[str]) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in names}


def read_features(out: Path) -> FeatureResult:
    """A feature analysis directory read back (the report's input)."""
    out = Path(out)
    cfg = load_config(FeatureConfig, out / "config.toml")
    tables = {name: runs.read_table(out / f"{name}.parquet") for name in TABLE_COLUMNS
              if (out / f"{name}.parquet").is_file()}
    return FeatureResult(out, cfg, tables, json.loads((out / "meta.json").read_text()))


def stratified(groups: np.ndarray, total: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Instance ids, max(1, total // n_groups) per group value (fewer where a group has fewer), sorted."""
    per = max(1, total // n_groups)
    picks = [rng.permutation(np.flatnonzero(groups == g))[:per] for g in range(n_groups)]
    return np.sort(np.concatenate(picks))


def accuracy_by_step(run_dir: Path) -> dict[tuple[int, str], float]:
    """(step, task) -> test_acc_labels of the run's evaluations."""
    path = Path(run_dir) / "metrics.parquet"
    if not path.is_file():
        return {}
    m = runs.read_table(path)
    return {(s, t): a for s, t, a in zip(m["step"], m["task"], m["test_acc_labels"]) if t is not None}


def analyze_run(p: RunPlan, cfg: FeatureConfig, device: Any, *, bar: Any = None, job: Any = None
                ) -> dict[str, list[dict[str, Any]]]:
    """The rows of every table for one run (see the module docstring)."""
    import torch

    from raretask.analysis.activations import capture, layer_modules, load_model
    from raretask.analysis.das import counterfactual_pairs, das_layer
    from raretask.analysis.presence import (class_means, fourier_power, mode_pca, null_share, order_r2,
                                            present_modes)
    from raretask.lm.tasks import NUM_VALUES

    inputs = p.inputs
    acc = accuracy_by_step(p.run_dir)
    out: dict[str, list[dict[str, Any]]] = {"features": [], "das": [], "fourier": [], "modes": []}
    das_steps = {DasAt.ALL: set(p.steps), DasAt.LAST: {p.steps[-1]}, DasAt.NONE: set()}[cfg.das]
    probed = 0 if cfg.position is Position.TOK1 else 1
    # Per task, fixed across steps: the instances, their prompts and (comparison) the counterfactual pairs.
    prepared = {}
    for name, kind, freq in p.tasks:
        task = inputs.task(name)
        rng = np.random.default_rng([cfg.seed, 0xFEA7])
        groups = task.values[:, probed] if kind == "comparison" else task.labels
        ids = stratified(groups, cfg.presence_instances, NUM_VALUES, rng)
        prompts, pos = inputs.prompts(task, ids)
        pairs = None
        if kind == "comparison" and das_steps:
            prng = np.random.default_rng([cfg.seed, 0xDA5])
            pairs = (counterfactual_pairs(task, cfg.das_pairs, task.train_ids, prng, position=cfg.position.value,
                                          prefix=inputs.prefix),
                     counterfactual_pairs(task, cfg.das_eval_pairs, task.test_ids, prng,
                                          position=cfg.position.value, prefix=inputs.prefix))
        prepared[name] = (task, ids, prompts, pos, pairs)

    for step in p.steps:
        model = load_model(p.run_dir, step, device=device)
        layers = layer_modules(model, cfg.layers)
        d_model = model.d_model
        last = step == p.steps[-1]
        for name, kind, freq in p.tasks:
            task, ids, prompts, pos, pairs = prepared[name]
            keys = {"cell": p.cell, "size": p.size, "frequency": freq, "step": step, "task": name}
            position = pos[cfg.position.value] if kind == "comparison" else pos["tok2"]
            acts = capture(model, prompts, list(layers.values()), position, batch=cfg.batch_seqs, device=device)
            for layer, module in layers.items():
                reps = acts[module].double().numpy()
                if kind == "comparison":
                    values = task.values[ids, probed]
                    fit = order_r2(reps, values, pcs=cfg.pcs, seed=cfg.seed, n_values=NUM_VALUES)
                    out["features"].append({**keys, "kind": kind, "layer": layer, "metric": "order_r2",
                                            "value": fit.r2, "test_acc": acc.get((step, name))})
                    if step in das_steps:
                        fitted = das_layer(model, module, d_model, pairs[0], pairs[1],
                                           torch.as_tensor(task.label_tokens), position, steps=cfg.das_steps,
                                           batch=cfg.das_batch, lr=cfg.das_lr, seed=cfg.seed + layer, layer=layer)
                        means = class_means(reps, values, NUM_VALUES)
                        ok = np.isfinite(means).all(1)
                        corr = np.corrcoef(means[ok] @ fitted.direction, np.flatnonzero(ok))[0, 1]
                        direction = fitted.direction * (1 if corr >= 0 else -1)
                        out["das"].append({**keys, "layer": layer, "module": module, "position": str(cfg.position),
                                           "iia": fitted.iia, "iia_train": fitted.iia_train,
                                           "no_intervention": fitted.no_intervention, "loss": fitted.loss,
                                           "order_corr": float(abs(corr)) if np.isfinite(corr) else None,
                                           "direction": direction.tolist()})
                else:
                    means = class_means(reps, task.labels[ids], NUM_VALUES)
                    power = fourier_power(means)
                    present = present_modes(power, NUM_VALUES)
                    out["features"].append({**keys, "kind": kind, "layer": layer, "metric": "fourier_modes",
                                            "value": float(present.sum()), "test_acc": acc.get((step, name))})
                    out["fourier"] += [{**keys, "layer": layer, "k": k + 1, "power": float(power[k]),
                                        "present": bool(present[k]), "threshold": 2 * null_share(NUM_VALUES)}
                                       for k in range(len(power))]
                    if last:
                        coords = mode_pca(means)
                        out["modes"] += [{**keys, "layer": layer, "c": c, "pc1": float(coords[c, 0]),
                                          "pc2": float(coords[c, 1])} for c in range(NUM_VALUES)]
        del model
        if bar is not None:
            bar.advance(job)
    return out
