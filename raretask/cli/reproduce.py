"""`raretask reproduce --scale cpu|gpu|paper`: every experiment the report needs, side by side where independent,
then one report page. A scale is data: a list of experiments, each a preset plus overrides.

    cpu    the CPU presets of every analysis and an LM grid on the embedded corpus; within 60 minutes on 2 cores
    gpu    paper-shaped but shortened (fewer steps), for one GPU in a few hours
    paper  the paper's grids (hundreds of GPU-hours for the LM sweeps: a cluster's work)

Phases: (1) the synthetic experiments and the corpus as independent processes (raretask.runner: workers x threads
<= the free cores); (2) each LM sweep, its cells side by side; (3) the report (raretask.report.pages). Everything
resumes: a finished experiment is read back, an unfinished one continues from its checkpoints. DIR/meta.json
(kind "reproduce") records the scale, the cores and threads used, and each experiment's status and wall time (a
read-back experiment keeps the wall time of the run that made it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raretask import presets, runs
from raretask.config import ConfigError, load_config
from raretask.devices import free_cores
from raretask.runner import Job, Plan, finished, run_jobs

KIND = "reproduce"
PARTS = ("all", "synthetic", "lm")


@dataclass(frozen=True)
class Experiment:
    name: str  # the subdirectory of DIR
    command: tuple[str, ...]  # the raretask command, e.g. ("synth", "residual")
    preset: str  # a packaged preset, e.g. "synthetic/residual.toml"
    overrides: tuple[str, ...] = ()
    part: str = "synthetic"  # "synthetic" or "lm"
    source: str = ""  # an analysis: the run it reads (a subdirectory of DIR) instead of a preset


def _synthetic(suffix: str = "", steps: int | None = None, paper: bool = False) -> list[Experiment]:
    """The synthetic lab's experiments: CPU presets, or the paper's (optionally shortened to `steps`)."""
    short = (f"train.steps={steps}", f"eval.every={max(1, steps // 20)}") if steps else ()
    if not paper:
        return [Experiment("synthetic", ("synth", "run"), "synthetic/default.toml"),
                Experiment("complexity", ("synth", "run"), "synthetic/complexity_cpu.toml"),
                Experiment("rank1", ("synth", "run"), "synthetic/rank1_cpu.toml"),
                Experiment("residual", ("synth", "residual"), "synthetic/residual.toml"),
                Experiment("long_horizon", ("synth", "residual"), "synthetic/long_horizon_cpu.toml"),
                Experiment("retention", ("synth", "retention"), "synthetic/retention.toml"),
                Experiment("toy", ("synth", "toy"), "synthetic/toy.toml"),
                Experiment("interference", ("synth", "interference"), "synthetic/interference.toml"),
                Experiment("neurons", ("synth", "neurons"), "synthetic/neurons.toml")]
    return [Experiment("synthetic", ("synth", "run"), "synthetic/paper_fig2.toml", short),
            Experiment("complexity", ("synth", "run"), "synthetic/complexity_2_12.toml", short),
            Experiment("rank1", ("synth", "run"), "synthetic/paper_rank1.toml", short),
            Experiment("residual", ("synth", "residual"), "synthetic/paper_residual.toml", short),
            Experiment("long_horizon", ("synth", "residual"), "synthetic/long_horizon.toml",
                       (f"train.steps={steps * 10}", f"eval.every={steps // 2}") if steps else ()),
            Experiment("retention", ("synth", "retention"), "synthetic/paper_retention.toml"),
            Experiment("toy", ("synth", "toy"), "synthetic/toy.toml"),
            Experiment("interference", ("synth", "interference"), "synthetic/interference.toml"),
            Experiment("neurons", ("synth", "neurons"), "synthetic/neurons.toml")]


def _features(groups: dict[str, list[str]], *overrides: str) -> list[Experiment]:
    """Feature presence (Fig. 7, `raretask lm analyze`) on chosen cells of the LM grid: one job per group, so that
    the sizes the scorecard compares (L7) sit in one analysis."""
    return [Experiment(f"lm/features/{name}", ("lm", "analyze"), "",
                       (f"cells={json.dumps(cells, separators=(',', ':'))}", *overrides), part="lm", source="lm/sweep")
            for name, cells in groups.items()]


def _after_injection(sweep: str) -> list[Experiment]:
    """The interference (Figs. 9-10) and retention (Fig. 8) analyses of a sweep trained with the monitor."""
    return [Experiment(f"{sweep}/{what}", ("lm", "analyze", "--what", what), "", part="lm", source=sweep)
            for what in ("interference", "retention")]


SCALES: dict[str, list[Experiment]] = {
    "cpu": _synthetic() + [
        Experiment("lm/sweep", ("lm", "sweep"), "lm/reproduce_cpu.toml", part="lm"),
        Experiment("lm/matched", ("lm", "sweep"), "lm/reproduce_cpu_matched.toml", part="lm"),
        Experiment("lm/modular_addition", ("lm", "sweep"), "lm/reproduce_cpu_modadd.toml", part="lm"),
        # the smallest and largest size where both learn (1.2e-2) and where only the larger does (3e-3)
        *_features({f"f{f}": [f"cpu-{n}_f{f}_comparison_s0" for n in ("10k", "600k")] for f in ("0.012", "0.003")}),
        # Sec. 4.4: bursts trained with the interference monitor, then Figs. 9-10 and Fig. 8 read from them
        Experiment("lm/interference", ("lm", "sweep"), "lm/interference_cpu.toml", part="lm"),
        *_after_injection("lm/interference")],
    "gpu": _synthetic(steps=20_000, paper=True) + [
        Experiment("lm/sweep", ("lm", "sweep"), "lm/paper_sweep_comparison.toml",
                   ('sweep.sizes=["4M","20M"]', "sweep.frequencies=[2.4e-3,2.4e-4,2.4e-5]", "data.seq_len=1024",
                    "train.global_batch_seqs=64", "train.steps=2000", "eval.every=200", "train.device=auto"),
                   part="lm"),
        Experiment("lm/matched", ("lm", "sweep"), "lm/paper_matched_frequency.toml",
                   ('sweep.sizes=["20M"]', "train.global_batch_seqs=64", "train.steps=2000", "eval.every=200"),
                   part="lm")],
    "paper": _synthetic(paper=True) + [
        Experiment("lm/sweep", ("lm", "sweep"), "lm/paper_sweep_comparison.toml", part="lm"),
        Experiment("lm/sweep_modular_addition", ("lm", "sweep"), "lm/paper_sweep_modular_addition.toml", part="lm"),
        Experiment("lm/matched", ("lm", "sweep"), "lm/paper_matched_frequency.toml", part="lm")],
}
CORPUS = {"cpu": "lm/corpus/embedded.toml", "gpu": "lm/corpus/embedded_neox.toml",
          "paper": "lm/corpus/embedded_neox.toml"}


@dataclass
class ReproduceResult:
    out: Path
    scale: str
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> status, wall_s, error, log
    report: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {"out": str(self.out), "scale": self.scale, "experiments": self.experiments,
                "report": None if self.report is None else str(self.report)}


def plan(scale: str, only: str) -> list[Experiment]:
    """The experiments of `scale` in part `only` ("all", "synthetic", "lm"); one-line errors for anything else."""
    if scale not in SCALES:
        raise ConfigError(f"--scale: {scale!r} is not one of {', '.join(SCALES)}")
    if only not in PARTS:
        raise ConfigError(f"--only: {only!r} is not one of {', '.join(PARTS[1:])}")
    chosen = [e for e in SCALES[scale] if only in ("all", e.part)]
    for e in chosen:
        if e.preset and presets.find(e.preset) is None:
            raise ConfigError(f"--scale {scale}: preset {e.preset} is missing from this installation")
    return chosen


def check_out(out: Path, scale: str) -> None:
    """`out` is new, empty, or a reproduce run of the same scale; anything else is refused before writing."""
    meta = out / "meta.json"
    if meta.is_file():
        data = json.loads(meta.read_text())
        if data.get("kind") != KIND:
            raise ConfigError(f"--out {out}: holds a {data.get('kind', 'synthetic')!r} run, not a reproduce run "
                              "(choose another --out)")
        if data.get("scale") != scale:
            raise ConfigError(f"--out {out}: holds a reproduce run of scale {data.get('scale')!r}, not {scale!r}")
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: exists and is not a raretask run directory")


def check_corpus(corpus: Path | None) -> None:
    if corpus is not None and not (Path(corpus) / "manifest.json").is_file():
        raise ConfigError(f"--corpus {corpus}: no manifest.json (make one with `raretask lm prepare`)")


def reproduce(scale: str, out: Path, *, only: str = "all", corpus: Path | None = None,
              progress: bool = True) -> ReproduceResult:
    """Run (or read back) every experiment of `scale` into `out`, then write out/report.html."""
    from raretask.launcher import same_config
    from raretask.lm.sweep import LMSweepConfig, run_sweep
    from raretask.report import pages

    out = Path(out)
    experiments = plan(scale, only)
    check_out(out, scale)
    check_corpus(corpus)
    out.mkdir(parents=True, exist_ok=True)
    synthetic = [e for e in experiments if e.part == "synthetic"]
    sweeps = [e for e in experiments if e.part == "lm" and not e.source]
    analyses = [e for e in experiments if e.source]
    corpus_dir = Path(corpus) if corpus is not None else out / "lm" / "corpus"
    jobs = [Job(e.name, [*e.command, str(presets.find(e.preset)), *e.overrides, "--out", str(out / e.name),
                         "--no-progress"], out / e.name) for e in synthetic]
    if sweeps and corpus is None:
        jobs.append(Job("lm/corpus", ["lm", "prepare", str(presets.find(CORPUS[scale])), "--out", str(corpus_dir),
                                      "--no-progress"], corpus_dir))
    work = Plan.for_machine(len(jobs) or 1)
    meta = runs.RunMeta(out, kind=KIND, scale=scale, only=only, free_cores=work.free, workers=work.workers,
                        threads=work.threads, experiments=[e.name for e in experiments])
    earlier = meta.previous.get("experiments")
    earlier = earlier if isinstance(earlier, dict) else {}  # a list of names while that run was still going
    result = ReproduceResult(out, scale)
    for name, r in run_jobs(jobs, work, logs=out / "logs", progress=progress).items():
        result.experiments[name] = {"status": r.status, "wall_s": round(r.wall_s, 1), "error": r.error,
                                    "log": None if r.log is None else str(r.log)}
    for e in sweeps:  # each sweep alone, its cells side by side on the cores idle now
        entry = result.experiments[e.name] = {"status": "done before", "wall_s": 0.0, "error": None}
        if not finished(corpus_dir):
            if not finished(out / e.name):
                entry.update(status="skipped", error=f"no corpus in {corpus_dir}")
            continue
        start = time.perf_counter()
        try:
            cfg = load_config(LMSweepConfig, presets.find(e.preset),
                              [*e.overrides, "train.threads=0", f"data.manifest={corpus_dir.resolve()}"])
            if finished(out / e.name):  # read back only if it is this scale's sweep (a preset may have changed)
                if same_config((out / e.name / "config.toml").read_text(), cfg.to_toml()):
                    continue
                raise ConfigError(f"{e.name}: holds a finished sweep of another config than {e.preset} now gives "
                                  f"(delete {out / e.name} to train it again)")
            run_sweep(cfg, out / e.name, progress=progress, workers=free_cores())
            pages.draw(out / e.name)
            entry.update(status="finished")
        except ConfigError as err:  # a failed sweep is reported; the other experiments still count
            entry.update(status="failed", error=str(err))
        entry["wall_s"] = round(time.perf_counter() - start, 1)
    # the analyses of the trained LMs: independent processes again, each reading one finished run
    ready = [e for e in analyses if finished(out / e.source)]
    for e in analyses:
        if e not in ready:
            result.experiments[e.name] = {"status": "skipped", "wall_s": 0.0, "error": f"{e.source} not finished"}
    jobs = [Job(e.name, [*e.command, str(out / e.source), *e.overrides, "--out", str(out / e.name), "--no-progress"],
                out / e.name) for e in ready]
    for name, r in run_jobs(jobs, Plan.for_machine(len(jobs) or 1), logs=out / "logs", progress=progress).items():
        result.experiments[name] = {"status": r.status, "wall_s": round(r.wall_s, 1), "error": r.error,
                                    "log": None if r.log is None else str(r.log)}
    for name, entry in result.experiments.items():  # read back: the wall time of the run that made it
        if entry["status"] == "done before" and name in earlier:
            entry["wall_s"] = earlier[name].get("wall_s", 0.0)
    meta.finish(experiments=result.experiments)  # before the page, which shows each experiment's status
    result.report = pages.write(out, f"raretask reproduce --scale {scale}")
    return result
