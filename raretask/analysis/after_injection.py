"""What follows an injection in trained LM runs (paper Sec. 4.4): gradient interference on the task neurons (Fig. 9)
with the layer localisation that picks them (Fig. 10), and retention of the task (Fig. 8).

    cfg = InjectionAnalysisConfig(window=500)
    analyze_interference(Path("runs/lm/retention"), cfg)   # a run or sweep directory -> DIR/interference/
    analyze_retention(Path("runs/lm/retention"), cfg)      # -> DIR/retention/
    layer_ablation(run_dir, "comparison")                  # or (model, task): Fig. 10's rows
    raretask lm analyze DIR --what interference|retention  # the same from the command line

Interference needs runs trained with the interference monitor ([monitor] in the training config:
raretask.analysis.monitor), which logs cos(g, g_r), cos(g_t, g_r), cos(g_nt, g_r) into RUN/interference.parquet as
it trains; this analysis gathers those tables, lines them up after each injection of the task (injections.parquet:
k = step - s0 for k = 0 .. `window`, so a window spans the next injections too, as in the paper's figure) and gives
per run and k the mean and std over injections. It also zero-ablates each MLP layer of the run's last checkpoint
(`layer_ablation`) and says which layer changes the task loss most, beside the layer the monitor watched. A run
trained without the monitor gets the ablation only (the summary says so).

Retention reads the task's eval loss along training: the monitor's task_loss column (every `monitor.loss_every`
steps) when the run has it (`source = "auto"` or "monitor"), else metrics.parquet's test_loss (every `eval.every`
steps; "metrics"), and applies raretask.analysis.retention per run: delta(k) after each injection, the mean curve and
the decay constant tau fitted between one injection and the next. Only burst schedules (N every N batches) have
injections to line up; runs of other schedules are skipped (an error when none is left).

Output directories (meta.json kind "lm.interference" / "lm.retention"; the run facts cell, size, params, task,
frequency, gap on every row):

  interference/interference.parquet     the monitor's rows of every run
  interference/after_injection.parquet  cell, ..., k, metric (cos_g, cos_t, cos_nt), mean, std, count
  interference/ablation.parquet         cell, ..., step, layer (None = intact), loss, accuracy, label_logit and
                                        their delta_*, monitored_layer
  retention/retention.parquet           cell, ..., source, injection, k, delta
  retention/curve.parquet               cell, ..., k, mean, std, count
  retention/decay.parquet               cell, ..., tau, amplitude, points, r2, until (the gap)

Checked before anything is written, each a one-line ConfigError: the directory is an LM run or sweep; interference:
every run has checkpoints and the named task and layers exist; retention: the named task was injected, a source the
run has.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from raretask import runs
from raretask.config import Config, ConfigError, StrEnum, load_config, option

INTERFERENCE_KIND, RETENTION_KIND = "lm.interference", "lm.retention"
COSINES = ("cos_g", "cos_t", "cos_nt")


class LossSource(StrEnum):
    AUTO = "auto"
    MONITOR = "monitor"
    METRICS = "metrics"


@dataclass
class InjectionAnalysisConfig(Config):
    task: str = option("", "task analysed (empty: the monitored task, else the run's first)")
    layers: list[int] = option(factory=list, doc="MLP layers ablated (block index; empty: all)")
    window: int = option(500, "steps after each injection lined up (Fig. 8, 9: 500)", ge=1)
    ablation_instances: int = option(1000, "held-out instances the ablation scores (0: all)", ge=0)
    source: LossSource = option(LossSource.AUTO, "retention's task loss: auto (the monitor's when logged, else "
                                                 "metrics.parquet's), monitor or metrics")
    batch_prompts: int = option(1024, "task prompts per forward in the ablation", ge=1)
    device: str = option("auto", "auto (CUDA when present), cpu or cuda")
    seed: int = option(0, "draws the ablation's instances", ge=0)

    def validate(self, path: str = "") -> None:
        super().validate(path)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        if any(layer < 0 for layer in self.layers):
            raise ConfigError(f"layers: must be >= 0, got {self.layers}")


@dataclass
class AnalysisResult:
    out: Path
    config: InjectionAnalysisConfig
    tables: dict[str, dict[str, list]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- the runs


@dataclass
class RunFacts:
    run_dir: Path
    cell: str
    size: str
    params: int | None
    task: str
    frequency: float
    gap: int  # burst period N (0: not a burst schedule)
    monitored: dict[str, Any] | None  # the run's [monitor] table, if it had one
    n_layers: int

    def keys(self) -> dict[str, Any]:
        return {"cell": self.cell, "size": self.size, "params": self.params, "task": self.task,
                "frequency": self.frequency, "gap": self.gap}


def run_facts(run_dir: Path, task: str = "") -> RunFacts:
    """The analysed task of a run and the facts every row carries; one-line ConfigError for a task it did not
    inject."""
    from raretask.lm.tasks import ScheduleKind
    from raretask.lm.train import LMConfig

    lm = load_config(LMConfig, Path(run_dir) / "config.toml")
    names = [t.name for t in lm.tasks]
    name = task or (lm.monitor.task if lm.monitor is not None and lm.monitor.task else (names or [""])[0])
    if name not in names:
        raise ConfigError(f"task: {name!r} was not injected in {run_dir} (it has: {', '.join(names) or 'none'})")
    t = lm.tasks[names.index(name)]
    meta = Path(run_dir) / "meta.json"
    params = json.loads(meta.read_text()).get("params") if meta.is_file() else None
    return RunFacts(Path(run_dir), Path(run_dir).name, lm.model.preset, params, name, t.frequency,
                    t.every if t.schedule is ScheduleKind.BURST else 0,
                    None if lm.monitor is None else lm.monitor.to_dict(), lm.model.shape().n_layers)


def injection_steps(run_dir: Path, task: str) -> list[int]:
    """The distinct steps whose batch carried an instance of `task` (injections.parquet)."""
    path = Path(run_dir) / "injections.parquet"
    if not path.is_file():
        return []
    t = runs.read_table(path)
    return sorted({int(s) for s, name in zip(t["step"], t["task"]) if name == task})


def check_out(out: Path, kind: str) -> None:
    """`out` must be new, empty or an earlier analysis of the same kind (which is replaced)."""
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return
    meta = out / "meta.json"
    found = json.loads(meta.read_text()).get("kind") if meta.is_file() else None
    if found != kind:
        raise ConfigError(f"--out {out}: exists and is not an analysis directory of kind {kind}")


def _start(path: Path, cfg: InjectionAnalysisConfig, out: Path, kind: str, facts: list[RunFacts],
           **extra: Any) -> runs.RunMeta:
    runs.write_text(out / "config.toml", cfg.to_toml())
    return runs.RunMeta(out, kind=kind, source=str(Path(path).resolve()), seeds=[cfg.seed],
                        runs=[{**f.keys(), "run_dir": str(f.run_dir.resolve())} for f in facts], **extra)


def _write(out: Path, tables: dict[str, dict[str, list]]) -> None:
    for name, cols in tables.items():
        runs.write_table(out / f"{name}.parquet", cols)


def _rows_to_columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in keys}


# ------------------------------------------------------------------------------------------- layer ablation


def layer_ablation(run_or_model: Path | Any, task: str | Any, *, step: int | None = None,
                   layers: Sequence[int] = (), instances: int = 1000, batch: int = 1024, device: Any = "cpu",
                   seed: int = 0) -> list[dict[str, Any]]:
    """Fig. 10 rows (raretask.analysis.monitor.ablation_effects) for a run directory's checkpoint `step` (default:
    the last) and task name, or for a model and a task (a raretask Task or a MonitoredTask); only `layers` when
    given (ConfigError for one the model lacks)."""
    import torch

    from raretask.analysis.activations import load_model, run_inputs
    from raretask.analysis.monitor import MonitoredTask, ablation_effects

    if isinstance(run_or_model, (str, Path)):
        model = load_model(Path(run_or_model), step, device=device)
        inputs = run_inputs(Path(run_or_model))
        task, prefix = inputs.task(task), inputs.prefix
    else:
        model, prefix = run_or_model, ()
    if not isinstance(task, MonitoredTask):
        task = MonitoredTask.from_task(task, prefix, seed=seed, loss_instances=instances)
    n = len(model.blocks)
    for layer in layers:
        if not 0 <= layer < n:
            raise ConfigError(f"layers: the model has MLP layers 0..{n - 1}, not {layer}")
    rows = ablation_effects(model, model, task, task.eval_ids, batch, torch.device(device))
    return [r for r in rows if r["layer"] is None or not layers or r["layer"] in layers]


# --------------------------------------------------------------------------------------------- interference


def lined_up(table: dict[str, list], injections: Sequence[int], window: int) -> dict[str, list]:
    """Per k = 0 .. window after an injection and cosine: mean, std and count of the logged values over injections
    (the monitor's rows at steps s0 + k)."""
    step = np.asarray(table["step"], dtype=np.int64)
    out: dict[str, list] = {"k": [], "metric": [], "mean": [], "std": [], "count": []}
    for metric in COSINES:
        values = np.array([np.nan if v is None else v for v in table[metric]], dtype=float)
        by_k: dict[int, list[float]] = {}
        for s0 in injections:
            sel = (step >= s0) & (step <= s0 + window) & np.isfinite(values)
            for s, v in zip(step[sel], values[sel]):
                by_k.setdefault(int(s - s0), []).append(float(v))
        for k in sorted(by_k):
            v = np.asarray(by_k[k])
            out["k"].append(k)
            out["metric"].append(metric)
            out["mean"].append(float(v.mean()))
            out["std"].append(float(v.std()))
            out["count"].append(len(v))
    return out


def analyze_interference(path: Path, cfg: InjectionAnalysisConfig, out: Path | None = None) -> AnalysisResult:
    """The module docstring's interference analysis of every run of `path` into `out` (default path/interference)."""
    from raretask.analysis.activations import checkpoints
    from raretask.analysis.features import run_dirs
    from raretask.devices import resolve_device

    cfg.validate()
    path = Path(path)
    facts = [run_facts(d, cfg.task) for d in run_dirs(path)]
    for f in facts:
        checkpoints(f.run_dir)
        for layer in cfg.layers:
            if layer >= f.n_layers:
                raise ConfigError(f"layers: {f.cell} has MLP layers 0..{f.n_layers - 1}, not {layer}")
    out = Path(out) if out is not None else path / "interference"
    check_out(out, INTERFERENCE_KIND)
    device = resolve_device(cfg.device, "device")
    meta = _start(path, cfg, out, INTERFERENCE_KIND, facts)
    logged, lined, ablation, missing = [], [], [], []
    for f in facts:
        keys = f.keys()
        table_path = f.run_dir / "interference.parquet"
        monitored_layer = None
        if table_path.is_file():
            t = runs.read_table(table_path)
            t = {k: [v for v, name in zip(col, t["task"]) if name == f.task] for k, col in t.items()}
            if t["step"]:
                monitored_layer = t["layer"][0]
                logged.append({**{k: [v] * len(t["step"]) for k, v in keys.items()}, **t})
                for r in _rows_of(lined_up(t, injection_steps(f.run_dir, f.task), cfg.window)):
                    lined.append({**keys, **r})
        if monitored_layer is None:
            missing.append(f.cell)
        step = checkpoints(f.run_dir)[-1][0]
        for r in layer_ablation(f.run_dir, f.task, step=step, layers=cfg.layers, instances=cfg.ablation_instances,
                                batch=cfg.batch_prompts, device=device, seed=cfg.seed):
            ablation.append({**keys, "step": step, **r, "monitored_layer": monitored_layer})
    tables = {"interference": runs.concat_columns(logged), "after_injection": _rows_to_columns(lined),
              "ablation": _rows_to_columns(ablation)}
    _write(out, {k: v for k, v in tables.items() if v})
    meta.finish(without_monitor=missing)
    return AnalysisResult(out, cfg, tables, meta.data)


def _rows_of(cols: dict[str, list]) -> list[dict[str, Any]]:
    n = len(next(iter(cols.values()), []))
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def interference_summary(result: AnalysisResult) -> dict[str, Any]:
    """The `--json` object: per run, the cosines at the injection (k = 0) and over the window (mean ± std over
    injections) and the layer the ablation points to."""
    lined, abl = result.tables.get("after_injection", {}), result.tables.get("ablation", {})
    rows = []
    for r in result.meta.get("runs", []):
        row = {k: r[k] for k in ("cell", "size", "task", "gap")}
        for metric in COSINES:
            at = [i for i in range(len(lined.get("k", []))) if lined["cell"][i] == r["cell"]
                  and lined["metric"][i] == metric]
            zero = [i for i in at if lined["k"][i] == 0]
            if zero:
                row[f"{metric}_at_injection"] = [lined["mean"][zero[0]], lined["std"][zero[0]]]
            if at:
                w = np.asarray([lined["count"][i] for i in at], float)
                row[f"{metric}_window_mean"] = float(np.average([lined["mean"][i] for i in at], weights=w))
        effects = [i for i in range(len(abl.get("cell", []))) if abl["cell"][i] == r["cell"]
                   and abl["layer"][i] is not None]
        if effects:
            best = max(effects, key=lambda i: abs(abl["delta_loss"][i]))
            row.update(ablation_layer=abl["layer"][best], ablation_delta_loss=abl["delta_loss"][best],
                       monitored_layer=abl["monitored_layer"][best])
        rows.append(row)
    return {"out": str(result.out), "runs": len(rows), "without_monitor": result.meta.get("without_monitor", []),
            "results": rows}


# ------------------------------------------------------------------------------------------------ retention


def task_losses(f: RunFacts, source: LossSource) -> tuple[str, list[int], list[float]]:
    """(source used, steps, task eval loss) of a run; ConfigError when the asked source is absent."""
    mon = f.run_dir / "interference.parquet"
    if source is not LossSource.METRICS and mon.is_file():
        t = runs.read_table(mon)
        pairs = [(s, v) for s, v, name in zip(t["step"], t["task_loss"], t["task"]) if name == f.task
                 and v is not None]
        if pairs:
            return "monitor", [s for s, _ in pairs], [v for _, v in pairs]
    if source is LossSource.MONITOR:
        raise ConfigError(f"source: {f.cell} has no task_loss logged by the interference monitor "
                          f"(train with [monitor] loss_every > 0, or source = metrics)")
    met = f.run_dir / "metrics.parquet"
    if not met.is_file():
        raise ConfigError(f"{f.run_dir}: no metrics.parquet (is the run finished?)")
    m = runs.read_table(met)
    pairs = [(s, v) for s, v, name in zip(m["step"], m["test_loss"], m["task"]) if name == f.task and v is not None]
    return "metrics", [s for s, _ in pairs], [v for _, v in pairs]


def analyze_retention(path: Path, cfg: InjectionAnalysisConfig, out: Path | None = None) -> AnalysisResult:
    """The module docstring's retention analysis of every burst-schedule run of `path` into `out` (default
    path/retention)."""
    from raretask.analysis.features import run_dirs
    from raretask.analysis.retention import after_injections, fit_decay, mean_curve

    cfg.validate()
    path = Path(path)
    every = [run_facts(d, cfg.task) for d in run_dirs(path)]
    facts = [f for f in every if f.gap > 0]
    if not facts:
        raise ConfigError(f"{path}: no run injects {every[0].task!r} on a burst schedule (N every N batches): "
                          f"there are no separate injections to line up")
    losses = {f.cell: task_losses(f, cfg.source) for f in facts}
    out = Path(out) if out is not None else path / "retention"
    check_out(out, RETENTION_KIND)
    meta = _start(path, cfg, out, RETENTION_KIND, facts, skipped=[f.cell for f in every if f.gap == 0])
    rows, curves, decays = [], [], []
    for f in facts:
        source, steps, loss = losses[f.cell]
        lined = after_injections(steps, loss, injection_steps(f.run_dir, f.task), cfg.window)
        keys = {**f.keys(), "source": source}
        rows += [{**keys, **r} for r in _rows_of(lined)]
        if lined["k"]:
            curve = mean_curve(lined)
            curves += [{**keys, **r} for r in _rows_of(curve)]
            fit = fit_decay(curve["k"], curve["mean"], until=f.gap)
        else:
            fit = fit_decay([], [])
        decays.append({**keys, "tau": fit.tau, "amplitude": fit.amplitude, "points": fit.points, "r2": fit.r2,
                       "until": f.gap})
    tables = {"retention": _rows_to_columns(rows), "curve": _rows_to_columns(curves),
              "decay": _rows_to_columns(decays)}
    _write(out, {k: v for k, v in tables.items() if v})
    meta.finish()
    return AnalysisResult(out, cfg, tables, meta.data)


def retention_summary(result: AnalysisResult) -> dict[str, Any]:
    """The `--json` object: per run, the fitted decay constant and the deepest mean drop."""
    d, c = result.tables.get("decay", {}), result.tables.get("curve", {})
    rows = []
    for i, cell in enumerate(d.get("cell", [])):
        means = [c["mean"][j] for j in range(len(c.get("cell", []))) if c["cell"][j] == cell]
        tau = d["tau"][i]
        rows.append({"cell": cell, "size": d["size"][i], "task": d["task"][i], "gap": d["gap"][i],
                     "source": d["source"][i], "tau": None if math.isnan(tau) else tau,
                     "points": d["points"][i], "deepest_drop": min(means) if means else None})
    return {"out": str(result.out), "runs": len(rows), "skipped": result.meta.get("skipped", []), "results": rows}


def read_analysis(out: Path) -> AnalysisResult:
    """An interference or retention analysis directory read back (the report's input)."""
    out = Path(out)
    cfg = load_config(InjectionAnalysisConfig, out / "config.toml")
    tables = {p.stem: runs.read_table(p) for p in sorted(out.glob("*.parquet"))}
    return AnalysisResult(out, cfg, tables, json.loads((out / "meta.json").read_text()))
