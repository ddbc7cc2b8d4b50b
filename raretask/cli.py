"""The `raretask` command. Every subcommand reads a TOML config plus `dotted.key=value` overrides.

User mistakes (bad config, bad flag value) print one line, `error: <field>: <what>`, and exit with status 2.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import click

import raretask
from raretask.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def handles_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: run the same command again to resume from the last checkpoint", err=True)
            sys.exit(130)

    return wrapper


def run_options(out_help: str = "run directory (default: runs/<config name>)", *, what: str = "run",
                dry_run_help: str = "print the resolved config and exit", progress_help: str = "no progress bar",
                json_help: str = "print a JSON summary on stdout") -> Callable:
    """The arguments and flags every run command shares: CONFIG, dotted overrides, --out, --json, --dry-run,
    --overwrite, --no-progress (then `handles_errors`), so each command states only what is its own."""

    def decorate(fn: Callable) -> Callable:
        for option in reversed([
            click.argument("config", type=click.Path(dir_okay=False)),
            click.argument("overrides", nargs=-1),
            click.option("--out", type=click.Path(file_okay=False), help=out_help),
            click.option("--json", "as_json", is_flag=True, help=json_help),
            click.option("--dry-run", is_flag=True, help=dry_run_help),
            click.option("--overwrite", is_flag=True, help=f"delete an existing {what} in --out first"),
            click.option("--no-progress", is_flag=True, help=progress_help),
        ]):
            fn = option(fn)
        return fn

    return decorate


def _parse_widths(text: str | None, dim: int) -> list[int] | None:
    if text is None:
        return None
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ConfigError(f"--widths: expected comma-separated integers, got {text!r}") from None
    if not widths:
        raise ConfigError("--widths: empty")
    for n in widths:
        if not 1 <= n <= dim:
            raise ConfigError(f"--widths: width {n} is outside 1..mixture.dim = {dim}")
    return widths


def _finite(x: float) -> float | None:
    return None if not math.isfinite(x) else x


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(raretask.__version__, prog_name="raretask")
def main() -> None:
    """raretask: which model size and data mixture does a rare or complex task need before it is learned?"""


# ----------------------------------------------------------------------------------------------------- theory


def theory_summary(cfg: Any, widths: list[int]) -> dict[str, Any]:
    """Closed-form numbers of a synthetic config (the `theory --json` object)."""
    from raretask import theory

    mix = cfg.mixture.build()
    losses = mix.theory_losses(widths)  # (K, W)
    mixture_loss = (mix.frequencies[:, None] * losses).sum(0)
    stairs = {m: mix.staircase(m) for m in (1, 2, 3)}
    F = mix.frequent_set(cfg.eval.frequent_mass)
    mu_F = theory.spectrum(mix.mixture_covariance(F))
    tasks = [{"name": name, "frequency": float(mix.frequencies[k]), "rank": mix.ranks[k],
              "eigenvalues": mix.eigenvalues[k].tolist(), "loss": losses[k].tolist(),
              "normalised_loss": (losses[k] / mix.traces[k]).tolist(),
              "staircase": {str(m): _finite(float(stairs[m][k])) for m in stairs},
              "critical_width": theory.critical_width(mu_F, float(mix.frequencies[k] * mix.eigenvalues[k][0]))
              if k not in F else None}
             for k, name in enumerate(mix.names)]
    utilities = [{"task": mix.names[u.task], "index": u.index, "utility": u.utility}
                 for u in theory.utilities(mix.frequencies, mix.eigenvalues)]
    return {"widths": widths, "tasks": tasks, "mixture_loss": mixture_loss.tolist(), "utilities": utilities,
            "orthogonal": mix.orthogonal, "frequent_set": [mix.names[k] for k in F],
            "residual_threshold": [theory.residual_threshold(mu_F, n) for n in widths]}


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--widths", help="comma-separated widths (default: the config's sweep.widths)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of a table")
@handles_errors
def theory(config: str, overrides: tuple[str, ...], widths: str | None, as_json: bool) -> None:
    """Closed-form per-task loss vs width, utilities and staircases of a synthetic CONFIG."""
    from raretask.synthetic.train import SynthConfig

    cfg = load_config(SynthConfig, config, list(overrides))
    ws = _parse_widths(widths, cfg.mixture.dim) or cfg.sweep.widths
    summary = theory_summary(cfg, ws)
    if as_json:
        click.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="theory: normalised loss l_k / Tr(C_k) of the width-N optimum (noise excluded)")
    table.add_column("task", no_wrap=True)
    table.add_column("pi", justify="right")
    table.add_column("rank", justify="right")
    table.add_column("N*(1)", justify="right")
    for n in ws:
        table.add_column(f"N={n}", justify="right")
    for t in summary["tasks"]:
        n1 = t["staircase"]["1"]
        table.add_row(t["name"], f"{t['frequency']:.4g}", str(t["rank"]), "-" if n1 is None else str(int(n1)),
                      *[f"{v:.2f}" for v in t["normalised_loss"]])
    console = Console()
    name_width = max(len(t["name"]) for t in summary["tasks"])
    console.width = max(console.width, name_width + 26 + 8 * len(ws))  # never truncate numbers: wrap instead
    console.print(table)
    top = ", ".join(f"{u['task']}#{u['index']}={u['utility']:.3g}" for u in summary["utilities"][:12])
    console.print(f"utilities (high to low): {top}{' ...' if len(summary['utilities']) > 12 else ''}")
    console.print("mixture loss L_N: " + ", ".join(f"N={n}: {v:.3g}" for n, v in zip(ws, summary["mixture_loss"])))
    console.print(f"frequent set F: {', '.join(summary['frequent_set'])}")


# -------------------------------------------------------------------------------------------------- synthetic


@main.group()
def synth() -> None:
    """The synthetic mixture-of-tasks lab."""


@synth.command("run")
@run_options()
@handles_errors
def synth_run(config: str, overrides: tuple[str, ...], out: str | None, as_json: bool, dry_run: bool,
              overwrite: bool, no_progress: bool) -> None:
    """Train every cell of CONFIG's sweep (batched), write tables and figures to --out.

    Re-running into the same --out resumes a killed run and skips finished grid points."""
    from raretask.synthetic.train import SynthConfig, run

    cfg = load_config(SynthConfig, config, list(overrides))
    if dry_run:
        click.echo(cfg.to_toml(), nl=False)
        return
    out_dir = Path(out) if out else Path("runs") / Path(config).stem
    result = run(cfg, out_dir, progress=not no_progress, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(result.summary()))
    else:
        click.echo(f"wrote {out_dir}/results.parquet, curves.parquet and figures")


@synth.command("keys")
def synth_keys() -> None:
    """List every config key of the synthetic lab with its type and meaning."""
    from raretask.synthetic.train import SynthConfig

    for key, tp, doc in SynthConfig.field_docs():
        click.echo(f"{key:32s} {tp:28s} {doc}")


# One `synth <name>` command per analysis of the dynamics half (issue: residual, retention, toys, interference,
# neurons). Each module owns its typed config, `run(cfg, out, *, progress, overwrite) -> result` (result has
# `.summary() -> dict`, the `--json` object) and `report_sections(run_dir) -> list[Section]`; every run writes
# meta.json with kind = "synth.<name>" so `raretask report` finds the sections. Imports are lazy (fast --help).
ANALYSES: dict[str, tuple[str, str, str, str, str]] = {
    # name: (module, config class, run function, report-sections function ("module:function" if elsewhere), help)
    "residual": ("raretask.synthetic.dynamics", "ResidualConfig", "run_residual", "residual_sections",
                 "Fig. 3/19: end-of-training signal of the most frequent and rarest task vs the residual; Thm 4."),
    "retention": ("raretask.synthetic.retention", "RetentionConfig", "run_retention",
                  "raretask.report.retention:retention_sections",
                  "Fig. 4/20: rare task injected every G steps at a matched rate: gain, decay, final signal."),
    "toy": ("raretask.synthetic.toys", "ToyConfig", "run_toy", "toy_sections",
            "App. C.4 / Fig. 11: one-neuron update-and-forget and the 1-vs-2-neuron competition toy."),
    "interference": ("raretask.synthetic.interference", "InterferenceConfig", "run_interference",
                     "interference_sections",
                     "Per-task encoder gradients in one pass: pairwise cosines, projection on the rare subspace."),
    "neurons": ("raretask.synthetic.neurons", "NeuronsConfig", "run_neurons", "raretask.report.neurons:neurons_sections",
                "Nonlinear neurons: allocation by ablation vs width, frequency, complexity; solutions exist."),
}


def _analysis(name: str, attr: int) -> Any:
    """ANALYSES[name][attr] imported; an entry "module:function" names a function of another module."""
    import importlib

    entry = ANALYSES[name]
    module, _, attr_name = entry[attr].rpartition(":")
    return getattr(importlib.import_module(module or entry[0]), attr_name)


def _make_analysis_command(name: str) -> None:
    @synth.command(name, help=ANALYSES[name][4] + "\n\nRe-running into the same --out resumes or skips it.",
                   short_help=ANALYSES[name][4].split(":")[0])
    @run_options()
    @handles_errors
    def command(config: str, overrides: tuple[str, ...], out: str | None, as_json: bool, dry_run: bool,
                overwrite: bool, no_progress: bool) -> None:
        cfg = load_config(_analysis(name, 1), config, list(overrides))
        if dry_run:
            click.echo(cfg.to_toml(), nl=False)
            return
        out_dir = Path(out) if out else Path("runs") / Path(config).stem
        result = _analysis(name, 2)(cfg, out_dir, progress=not no_progress, overwrite=overwrite)
        if as_json:
            click.echo(json.dumps(result.summary()))
        else:
            click.echo(f"wrote {out_dir}")


for _name in ANALYSES:
    _make_analysis_command(_name)


# -------------------------------------------------------------------------------------------- report and demo


def synthetic_report_sections(run_dir: Path) -> list[Any]:
    from raretask.report.html import Section
    from raretask.runs import read_table
    from raretask.synthetic.train import SynthConfig

    cfg = load_config(SynthConfig, run_dir / "config.toml")
    summary = theory_summary(cfg, cfg.sweep.widths)
    head = ["task", "pi", "rank"] + [f"N={n}" for n in cfg.sweep.widths]
    rows = [head] + [[t["name"], f"{t['frequency']:.3g}", str(t["rank"])] + [f"{v:.3f}" for v in
                                                                             t["normalised_loss"]]
                     for t in summary["tasks"]]
    res = read_table(run_dir / "results.parquet")
    err = max(abs(a - b) for a, b in zip(res["normalised_loss"], res["theory_normalised_loss"]))
    grid = f" Shown for the base config; the sweep also ranges over {', '.join(cfg.sweep.grid)}." \
        if cfg.sweep.grid else ""
    figs = sorted(run_dir.glob("phase_diagram*.png")) + [run_dir / "observed_vs_predicted.png"]
    return [
        Section("Theory: normalised loss of the width-N optimum",
                "Closed form (Theorem 3): width N keeps the N highest-utility features u = pi_k lambda_kj." + grid,
                table=rows),
        Section("Synthetic sweep: trained vs theory",
                f"Every cell trained online; largest |observed - predicted| normalised loss over cells and seeds: "
                f"{err:.3f}.",
                figures=figs),
    ]


def report_sections(run_dir: Path) -> list[Any]:
    """The report sections of one run directory, chosen by its meta.json `kind`."""
    meta_path = run_dir / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(f"{run_dir}: no meta.json (not a raretask run directory)")
    kind = json.loads(meta_path.read_text()).get("kind", "synthetic")
    if kind == "synthetic":
        if not (run_dir / "results.parquet").is_file():
            raise ConfigError(f"{run_dir}: no results.parquet (is the run finished?)")
        return synthetic_report_sections(run_dir)
    if kind.startswith("synth.") and kind[6:] in ANALYSES:
        return _analysis(kind[6:], 3)(run_dir)
    if kind.startswith("lm"):
        from raretask.lm.report import lm_report_sections

        return lm_report_sections(run_dir)
    raise ConfigError(f"{run_dir}: unknown run kind {kind!r}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@handles_errors
def report(run_dir: str) -> None:
    """Write RUN_DIR/report.html from a finished run (any kind: synthetic sweep, analysis, LM)."""
    from raretask.report.html import write_report

    d = Path(run_dir)
    path = write_report(d, f"raretask report: {d.name}", report_sections(d))
    click.echo(f"wrote {path}")


DEMO_ANALYSES = ("residual", "retention", "toy", "interference", "neurons")  # each has configs/synthetic/<name>.toml


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--part", type=click.Choice(["all", "synthetic", "lm"]), default="all", show_default=True,
              help="synthetic: theory, the width sweep and the dynamics analyses; lm: the CPU LM sweep")
@click.option("--no-progress", is_flag=True, help="no progress bars")
@handles_errors
def demo(out: str, part: str, no_progress: bool) -> None:
    """The default end-to-end job, then one report page (DIR/report.html).

    Synthetic: theory and the width sweep of the default preset, then the CPU presets of every dynamics analysis
    (residual, retention, toys, interference, neurons). LM: the embedded news corpus prepared with a small BPE, then
    the CPU sweep of configs/lm/demo.toml (3 sizes x 2 frequencies x both tasks). Every step resumes or skips what a
    previous demo into the same DIR finished."""
    from raretask.report.html import write_report
    from raretask.synthetic.train import SynthConfig, run

    out_dir, progress, sections = Path(out), not no_progress, []
    if part in ("all", "synthetic"):
        cfg = load_config(SynthConfig, _preset("synthetic/default.toml"))
        run(cfg, out_dir / "synthetic", progress=progress)
        sections += synthetic_report_sections(out_dir / "synthetic")
        for name in DEMO_ANALYSES:
            cfg = load_config(_analysis(name, 1), _preset(f"synthetic/{name}.toml"))
            _analysis(name, 2)(cfg, out_dir / name, progress=progress, overwrite=False)
            sections += _analysis(name, 3)(out_dir / name)
    if part in ("all", "lm"):
        from raretask.lm.corpus import CorpusConfig, prepare
        from raretask.lm.report import lm_report_sections
        from raretask.lm.sweep import LMSweepConfig, run_sweep

        corpus = out_dir / "lm" / "corpus"
        prepare(load_config(CorpusConfig, _preset("lm/corpus/embedded.toml")), corpus, progress=progress)
        cfg = load_config(LMSweepConfig, _preset("lm/demo.toml"), [f"data.manifest={corpus.resolve()}"])
        run_sweep(cfg, out_dir / "lm" / "sweep", progress=progress)
        sections += lm_report_sections(out_dir / "lm" / "sweep")
    path = write_report(out_dir, "raretask demo", sections)
    click.echo(f"wrote {path}")


def _preset(rel: str) -> Path:
    path = CONFIGS / rel
    if not path.is_file():
        raise ConfigError(f"preset not found: {path} (run from a clone of the repository)")
    return path


def _register_lm() -> None:
    from raretask.lm.cli import lm

    main.add_command(lm)


_register_lm()

if __name__ == "__main__":
    main()
