"""The `raretask` command. Every subcommand reads a TOML config plus `dotted.key=value` overrides.

User mistakes (bad config, bad flag value) print one line, `error: <field>: <what>`, and exit with status 2.
A run command computes and writes its tables, then draws its figures from them (raretask.report), so
`raretask report DIR` redraws the same figures from the run directory alone.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

import raretask
from raretask import presets
from raretask.cli.advise import advise
from raretask.cli.lm import lm
from raretask.cli.options import gather_options, handles_errors, launcher_options, run_options, with_launcher
from raretask.config import ConfigError, load_config
from raretask.report import pages


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(raretask.__version__, prog_name="raretask")
def main() -> None:
    """raretask: which model size and data mixture does a rare or complex task need before it is learned?"""


main.add_command(lm)
main.add_command(advise)


# ----------------------------------------------------------------------------------------------------- theory


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
    summary = cfg.mixture.build().summary(ws, cfg.eval.frequent_mass)
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
@run_options(dry_run_help="print the resolved config (--launcher slurm: the sbatch script) and exit")
@launcher_options
@handles_errors
def synth_run(config: str, overrides: tuple[str, ...], out: str | None, as_json: bool, dry_run: bool,
              overwrite: bool, no_progress: bool, launcher: str | None, wait: bool) -> None:
    """Train every cell of CONFIG's sweep (batched), write tables and figures to --out.

    Re-running into the same --out resumes a killed run and skips finished grid points. --launcher slurm: each
    unfinished grid point of sweep.grid is one Slurm job (the [launcher] table sets its resources); the last job
    gathers the tables (`raretask synth gather DIR`)."""
    from raretask.launcher import LauncherKind
    from raretask.synthetic.train import SynthConfig, run

    cfg = load_config(SynthConfig, config, with_launcher(overrides, launcher))
    out_dir = Path(out) if out else Path("runs") / Path(config).stem
    if cfg.launcher.kind is LauncherKind.SLURM:
        from raretask.cli.launch import launched
        from raretask.synthetic import launch

        result = launched(cfg.launcher, out_dir, dry_run=dry_run, wait=wait, as_json=as_json,
                          pending=lambda: [j.name for j in launch.pending_points(cfg, out_dir)],
                          submit=lambda w: launch.launch_sweep(cfg, out_dir, overwrite=overwrite, wait=w),
                          gather=lambda: launch.gather(out_dir))
        if result is None:
            return
    elif dry_run:
        click.echo(cfg.to_toml(), nl=False)
        return
    else:
        result = run(cfg, out_dir, progress=not no_progress, overwrite=overwrite)
    pages.draw(out_dir)
    if as_json:
        click.echo(json.dumps(result.summary()))
    else:
        click.echo(f"wrote {out_dir}/results.parquet, curves.parquet and figures")


@synth.command("cell")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("point")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@handles_errors
def synth_cell(run_dir: str, point: str, no_progress: bool) -> None:
    """Train one grid point POINT (its name under RUN_DIR/groups) of the synthetic sweep in RUN_DIR: what each job
    of `synth run --launcher slurm` runs. A finished point is left as it is; an unfinished one resumes."""
    from raretask.synthetic.launch import train_point

    train_point(Path(run_dir), point, progress=not no_progress)
    click.echo(f"wrote {Path(run_dir) / 'groups' / point}")


@synth.command("gather")
@gather_options()
def synth_gather(run_dir: str, as_json: bool, no_progress: bool) -> None:
    """The tables and figures of the synthetic sweep in RUN_DIR from its finished grid points (trains nothing; an
    unfinished point is an error). The last job of `synth run --launcher slurm` runs it."""
    from raretask.synthetic.launch import gather

    result = gather(Path(run_dir), progress=not no_progress)
    pages.draw(Path(run_dir))
    click.echo(json.dumps(result.summary()) if as_json else f"wrote {run_dir}/results.parquet, curves.parquet and "
                                                            f"figures")


@synth.command("keys")
def synth_keys() -> None:
    """List every config key of the synthetic lab with its type and meaning."""
    from raretask.synthetic.train import SynthConfig

    for key, tp, doc in SynthConfig.field_docs():
        click.echo(f"{key:32s} {tp:28s} {doc}")


@dataclass(frozen=True)
class Analysis:
    """One `synth <name>` command of the dynamics half. Its module owns a typed config and
    `run(cfg, out, *, progress, overwrite) -> result` (result.summary() is the `--json` object); the run writes
    meta.json with kind "synth.<name>", by which raretask.report.pages finds its figures and sections. Imported on
    use, so `--help` stays fast."""

    module: str
    config: str  # name of the config class
    run: str  # name of the run function
    help: str

    def load(self, attr: str) -> Any:
        """The module's config class (attr "config") or run function (attr "run")."""
        return getattr(importlib.import_module(self.module), getattr(self, attr))


ANALYSES = {
    "residual": Analysis("raretask.synthetic.dynamics", "ResidualConfig", "run_residual",
                         "Fig. 3/19: end-of-training signal of the most frequent and rarest task vs the residual; "
                         "Thm 4."),
    "retention": Analysis("raretask.synthetic.retention", "RetentionConfig", "run_retention",
                          "Fig. 4/20: rare task injected every G steps at a matched rate: gain, decay, final signal."),
    "toy": Analysis("raretask.synthetic.toys", "ToyConfig", "run_toy",
                    "App. C.4 / Fig. 11: one-neuron update-and-forget and the 1-vs-2-neuron competition toy."),
    "interference": Analysis("raretask.synthetic.interference", "InterferenceConfig", "run_interference",
                             "Per-task encoder gradients in one pass: pairwise cosines, projection on the rare "
                             "subspace."),
    "neurons": Analysis("raretask.synthetic.neurons", "NeuronsConfig", "run_neurons",
                        "Nonlinear neurons: allocation by ablation vs width, frequency, complexity; solutions exist."),
}


def _make_analysis_command(name: str, analysis: Analysis) -> None:
    @synth.command(name, help=analysis.help + "\n\nRe-running into the same --out resumes or skips it.",
                   short_help=analysis.help.split(":")[0])
    @run_options()
    @handles_errors
    def command(config: str, overrides: tuple[str, ...], out: str | None, as_json: bool, dry_run: bool,
                overwrite: bool, no_progress: bool) -> None:
        cfg = load_config(analysis.load("config"), config, list(overrides))
        if dry_run:
            click.echo(cfg.to_toml(), nl=False)
            return
        out_dir = Path(out) if out else Path("runs") / Path(config).stem
        result = analysis.load("run")(cfg, out_dir, progress=not no_progress, overwrite=overwrite)
        pages.draw(out_dir)
        if as_json:
            click.echo(json.dumps(result.summary()))
        else:
            click.echo(f"wrote {out_dir}")


for _name, _analysis in ANALYSES.items():
    _make_analysis_command(_name, _analysis)


# ----------------------------------------------------------------------------------------------- report and demo


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@handles_errors
def report(run_dir: str) -> None:
    """Redraw every figure of a finished run (any kind: synthetic sweep, analysis, LM) from its directory alone,
    then write RUN_DIR/report.html."""
    click.echo(f"wrote {pages.write(Path(run_dir))}")


@main.command("status")
@click.argument("run_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of a table")
@handles_errors
def status_command(run_dir: str, as_json: bool) -> None:
    """Where the sweep in RUN_DIR stands: each cell finished, running, queued (submitted to Slurm), failed (its last
    error line) or not started, its steps done of its total, and an ETA. Reads the directory only (LM sweep,
    synthetic sweep, reproduce)."""
    from raretask.report.status import format_duration, read

    st = read(Path(run_dir))
    if as_json:
        click.echo(json.dumps(st.to_json()))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    styles = {"finished": "green", "running": "cyan", "queued": "yellow", "failed": "bold red", "not started": "dim"}
    table = Table(title=escape(f"{st.dir} ({st.kind})"))
    table.add_column("cell", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("ETA", justify="right", no_wrap=True)
    for c in st.cells:
        steps = f"{'?' if c.steps_done is None else c.steps_done}/{'?' if c.steps_total is None else c.steps_total}"
        table.add_row(escape(c.name), f"[{styles[c.state]}]{c.state}[/]", steps,
                      "" if c.state in ("finished", "failed") else format_duration(c.eta_s))
    console = Console()
    console.width = max(console.width, max((len(c.name) for c in st.cells), default=4) + 40)
    console.print(table)
    for c in st.cells:  # whole lines, not wrapped in a column: they are copied into searches and issues
        if c.error:
            click.echo(f"{c.name}: {c.error}")
    counts = ", ".join(f"{n} {s}" for s, n in st.counts.items() if n)
    console.print(f"{counts or 'no cells'}; ETA {format_duration(st.eta_s)}")


@main.command("presets")
def presets_command() -> None:
    """List the packaged presets. Every command finds them by these names, in a clone or after a wheel install."""
    for name in presets.names():
        click.echo(f"configs/{name}")


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
    the CPU sweep of configs/lm/demo.toml (2 sizes x 2 frequencies, comparison), its cells side by side on the free
    cores. Every step resumes or skips what a
    previous demo into the same DIR finished."""
    from raretask.synthetic.train import SynthConfig, run

    out_dir, progress, sections = Path(out), not no_progress, []

    def reported(run_dir: Path) -> None:
        pages.draw(run_dir)
        sections.extend(pages.sections(run_dir))

    if part in ("all", "synthetic"):
        run(load_config(SynthConfig, preset("synthetic/default.toml")), out_dir / "synthetic", progress=progress)
        reported(out_dir / "synthetic")
        for name in DEMO_ANALYSES:
            analysis = ANALYSES[name]
            cfg = load_config(analysis.load("config"), preset(f"synthetic/{name}.toml"))
            analysis.load("run")(cfg, out_dir / name, progress=progress, overwrite=False)
            reported(out_dir / name)
    if part in ("all", "lm"):
        from raretask.lm.corpus import CorpusConfig, prepare
        from raretask.lm.sweep import LMSweepConfig, run_sweep

        corpus = out_dir / "lm" / "corpus"
        prepare(load_config(CorpusConfig, preset("lm/corpus/embedded.toml")), corpus, progress=progress)
        cfg = load_config(LMSweepConfig, preset("lm/demo.toml"), [f"data.manifest={corpus.resolve()}"])
        from raretask.devices import free_cores

        # its cells side by side, one single-thread process per free core (the preset's train.threads = 1)
        run_sweep(cfg, out_dir / "lm" / "sweep", progress=progress, workers=free_cores())
        reported(out_dir / "lm" / "sweep")
    click.echo(f"wrote {pages.write_root(out_dir, 'raretask demo', sections)}")


@main.command("reproduce")
@click.option("--scale", default="cpu", show_default=True, help="cpu (2 cores, < 1 h), gpu (one GPU, hours) or paper")
@click.option("--only", default="all", show_default=True, help="synthetic or lm: one half only")
@click.option("--out", type=click.Path(file_okay=False), help="run directory (default: runs/reproduce-<scale>)")
@click.option("--corpus", type=click.Path(file_okay=False),
              help="a prepared corpus (default: prepare the embedded one)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary on stdout")
@click.option("--dry-run", is_flag=True, help="list the experiments and exit")
@click.option("--no-progress", is_flag=True, help="no progress bars")
@handles_errors
def reproduce_command(scale: str, only: str, out: str | None, corpus: str | None, as_json: bool, dry_run: bool,
                      no_progress: bool) -> None:
    """Run every experiment the report needs at a scale (side by side on the free cores), then DIR/report.html.

    Re-running the same command resumes: finished experiments are read back, unfinished ones continue."""
    from raretask.cli.reproduce import plan, reproduce

    if dry_run:
        for e in plan(scale, only):
            target = f"DIR/{e.source}" if e.source else f"configs/{e.preset}"  # an analysis reads a run of DIR
            click.echo(f"{e.name:28s} raretask {' '.join(e.command)} {target} {' '.join(e.overrides)}".rstrip())
        return
    out_dir = Path(out) if out else Path("runs") / f"reproduce-{scale}"
    result = reproduce(scale, out_dir, only=only, corpus=Path(corpus) if corpus else None, progress=not no_progress)
    if as_json:
        click.echo(json.dumps(result.summary()))
        return
    failed = [n for n, e in result.experiments.items() if e["status"] in ("failed", "skipped")]
    click.echo(f"wrote {result.report}" + (f"; failed or skipped: {', '.join(failed)}" if failed else ""))


def preset(name: str) -> Path:
    """A packaged preset by name ("synthetic/default.toml"); tests point `presets.root` elsewhere to shrink them."""
    path = presets.find(name)
    if path is None:
        raise ConfigError(f"preset not found: {name} (`raretask presets` lists them)")
    return path


if __name__ == "__main__":
    main()
