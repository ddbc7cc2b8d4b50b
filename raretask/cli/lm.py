"""`raretask lm ...`: the LM lab's commands (registered on the root command in `raretask/cli/__init__.py`).

Every command reads a TOML config plus `dotted.key=value` overrides where it takes one; user mistakes raise
`ConfigError`, printed as one line with exit status 2 by `handles_errors`. Heavy imports (OLMo-core, tokenizers)
happen inside the commands so `raretask --help` stays fast.
"""

from __future__ import annotations

from typing import Any

import click

from raretask.cli.options import (gather_options, handles_errors, launcher_options, parse_workers, run_options,
                                  with_launcher)
from raretask.report import pages


@click.group()
def lm() -> None:
    """The LM lab: OLMo-core pretraining with injected tasks at controlled frequencies."""


# ------------------------------------------------------------------------------------ models, corpus, tokenizers


@lm.command("models")
@click.option("--arch", type=click.Choice(["olmo_0724", "olmo2"]), default="olmo_0724", show_default=True,
              help="architecture the parameters are counted for")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list of objects, one per preset")
@handles_errors
def models_command(arch: str, as_json: bool) -> None:
    """The model ladder: paper Table 1 (4M..4B) and the CPU ladder, with parameters and training memory.

    Parameters are counted on OLMo-core's built model (meta device) at each preset's vocabulary; memory is the
    fp32 training estimate of raretask.lm.models.memory_estimate at the preset's recipe (micro-batch x context)."""
    import json

    from raretask.lm.models import list_models

    rows = list_models(arch)
    if as_json:
        click.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"model ladder ({arch}; non-embedding = without the embedding and LM-head matrices)")
    heads = [("name", "name"), ("params", "params"), ("non_embedding_params", "non-emb."), ("d_model", "d"),
             ("n_layers", "layers"), ("n_heads", "heads"), ("mlp_hidden", "MLP dim"), ("vocab_size", "vocab"),
             ("sequence_length", "context"), ("micro_batch_size", "micro-batch"), ("memory_gb", "train GB")]
    for _, title in heads:
        table.add_column(title, justify="left" if title == "name" else "right", no_wrap=True)
    for r in rows:
        table.add_row(*[f"{r[k]:.1f}" if k == "memory_gb" else f"{r[k]:,}" if isinstance(r[k], int) else str(r[k])
                        for k, _ in heads])
    console = Console()
    console.width = max(console.width, 132)  # never truncate numbers
    console.print(table)


@lm.command("prepare")
@run_options("corpus directory (default: runs/corpus/<config name>)", what="corpus", progress_help="no progress bars",
             json_help="print a JSON summary of the manifest on stdout")
@handles_errors
def prepare_command(config: str, overrides: tuple[str, ...], out: str | None, overwrite: bool, no_progress: bool,
                    as_json: bool, dry_run: bool) -> None:
    """Clean, tokenize and split a corpus CONFIG into OLMo-core token files (train.npy, heldout.npy) + manifest.

    Re-running the same config into the same --out does nothing; a different config there is refused."""
    import json
    from pathlib import Path

    from raretask.config import load_config
    from raretask.lm.corpus import CorpusConfig, prepare

    cfg = load_config(CorpusConfig, config, list(overrides))
    if dry_run:
        click.echo(cfg.to_toml(), nl=False)
        return
    out_dir = Path(out) if out else Path("runs") / "corpus" / Path(config).stem
    manifest = prepare(cfg, out_dir, progress=not no_progress, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(manifest.summary()))
    else:
        click.echo(f"wrote {out_dir}: {manifest.train_tokens:,} training and {manifest.heldout_tokens:,} held-out "
                   f"tokens ({manifest.tokenizer_name}, vocab {manifest.vocab_size} padded "
                   f"{manifest.padded_vocab_size}, {manifest.dtype})")


# ------------------------------------------------------------------------------------------ tasks and injection


@lm.command("natural-frequency")
@click.argument("source", type=click.Path())
@click.option("--tokenizer", "tokenizer_path", type=click.Path(), default=None,
              help="tokenizer.json that made the tokens (default: the corpus directory's)")
@click.option("--dtype", default=None, help="token dtype of a raw token file (default: the manifest's, else uint16)")
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
@handles_errors
def natural_frequency(source: str, tokenizer_path: str | None, dtype: str | None, as_json: bool) -> None:
    """How often the corpus has the reference tasks R_cmp / R_add (paper Fig. 6a): exact n-gram counts.

    SOURCE is a corpus directory made by `raretask lm prepare` (its manifest.json names the train tokens, dtype
    and tokenizer) or a raw token file (then --tokenizer is required)."""
    import json

    from raretask.lm.reference import count_natural_frequency, load_tokenizer_file, resolve_source

    token_path, np_dtype, tok_path = resolve_source(source, tokenizer_path, dtype)
    counts = count_natural_frequency(token_path, np_dtype, load_tokenizer_file(tok_path))
    if as_json:
        click.echo(json.dumps({"source": str(token_path), **counts}, indent=2))
        return
    click.echo(f"{token_path}: {counts['tokens']:,} tokens")
    for name in ("cmp", "add"):
        c = counts[name]
        extra = (f"followed by a larger number {c['followed_by_larger']:,}" if name == "cmp"
                 else f"followed by the sum {c['followed_by_sum']:,}")
        click.echo(f"  R_{name}  {c['template']!r:32} {c['count']:>10,}  = {c['per_token']:.3g} per token  "
                   f"(bare {c['bare']:,}, spaced {c['spaced']:,}; {extra})")


# --------------------------------------------------------------------------------------------- train and sweep


@lm.command("train")
@run_options("run directory (default: runs/lm/<config name>)")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint (error if none)")
@click.option("--verbose", is_flag=True, help="OLMo-core's INFO log on stderr")
@handles_errors
def train_command(config: str, overrides: tuple[str, ...], out: str | None, as_json: bool, dry_run: bool,
                  overwrite: bool, no_progress: bool, resume: bool, verbose: bool) -> None:
    """Pretrain CONFIG's model on its corpus with its tasks injected; metrics every eval.every steps.

    Writes --out/metrics.parquet (one row per evaluation and task), injections.parquet, checkpoints/, meta.json
    and curves.png.
    Re-running into the same --out resumes from the last checkpoint with identical numbers; a finished run is read
    back (`--resume` says so explicitly: it refuses an --out without a run). Data-parallel on several GPUs:
    `torchrun --nproc-per-node G -m raretask.lm.train CONFIG --out DIR`."""
    import json
    import os
    from pathlib import Path

    from raretask.config import ConfigError, load_config
    from raretask.lm.train import LMConfig, cwd_overrides, train

    cfg = load_config(LMConfig, config, cwd_overrides(overrides))
    if dry_run:
        click.echo(cfg.to_toml(), nl=False)
        return
    out_dir = Path(out) if out else Path("runs") / "lm" / Path(config).stem
    if resume and (overwrite or not (out_dir / "config.toml").is_file()):
        raise ConfigError(f"--resume: {'--overwrite starts afresh' if overwrite else f'no run in {out_dir} to resume'}")
    result = train(cfg, out_dir, progress=not no_progress, overwrite=overwrite, verbose=verbose)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one rank of a data-parallel cell (a Slurm job's task)
        from olmo_core.train import teardown_training_environment

        teardown_training_environment()
        if int(os.environ.get("RANK", "0")) != 0:
            return  # rank 0 draws and reports
    pages.draw(out_dir)
    if as_json:
        click.echo(json.dumps(result.summary()))
        return
    s = result.summary()
    click.echo(f"wrote {out_dir}: {s['steps']} steps, {s['tokens']:,} tokens, held-out loss {s['heldout_loss']:.3f}")
    for t in s["tasks"]:  # a task never injected by the end has no train loss
        train_loss = "-" if t["train_loss"] is None else f"{t['train_loss']:.3f}"
        click.echo(f"  {t['name']:16s} train loss {train_loss}  test acc {t['test_acc_labels']:.3f} (labels) "
                   f"{t['test_acc_vocab']:.3f} (vocab)")


@lm.command("keys")
def train_keys() -> None:
    """List every key of an LM training config with its type and meaning."""
    from raretask.lm.train import LMConfig

    for key, tp, doc in LMConfig.field_docs():
        click.echo(f"{key:32s} {tp:28s} {doc}")


@lm.command("sweep")
@run_options("sweep directory (default: runs/lm/<config name>)", what="sweep",
             dry_run_help="print the resolved config and its cells (--launcher slurm: the sbatch script), and exit",
             progress_help="no progress bars")
@click.option("--workers", default="1", show_default=True,
              help="cells trained side by side, one process each (auto: the free cores); threads split between them")
@launcher_options
@handles_errors
def sweep_command(config: str, overrides: tuple[str, ...], out: str | None, as_json: bool, dry_run: bool,
                  overwrite: bool, no_progress: bool, workers: str, launcher: str | None, wait: bool) -> None:
    """Train every cell of CONFIG's grid (sizes x frequencies x tasks x gaps x seeds), one run each, then write
    results.parquet, curves.parquet and the paper's Fig. 5, 6, 22, 23 to --out.

    CONFIG is an LM training config plus a [sweep] table (see raretask.lm.sweep); `data.manifest=DIR` on the
    command line is relative to the working directory. Re-running into the same --out skips finished cells and
    resumes an unfinished one from its last checkpoint. Several GPUs:
    `torchrun --nproc-per-node G -m raretask.lm.sweep CONFIG --out DIR`. On a Slurm cluster, --launcher slurm:
    each unfinished cell is one job of an array (the [launcher] table sets its GPUs, nodes, time, partition); the
    last job gathers the tables (`raretask lm gather DIR`)."""
    from pathlib import Path

    from raretask.config import load_config
    from raretask.launcher import LauncherKind
    from raretask.lm.sweep import LMSweepConfig, expand_cells, run_sweep
    from raretask.lm.train import cwd_overrides

    cfg = load_config(LMSweepConfig, config, with_launcher(cwd_overrides(overrides), launcher))
    out_dir = Path(out) if out else Path("runs") / "lm" / Path(config).stem
    if cfg.launcher.kind is LauncherKind.SLURM:
        from raretask.cli.launch import launched
        from raretask.lm import launch

        result = launched(cfg.launcher, out_dir, dry_run=dry_run, wait=wait, as_json=as_json,
                          pending=lambda: [c.slug for c in launch.pending_cells(cfg, out_dir)],
                          submit=lambda w: launch.launch_sweep(cfg, out_dir, overwrite=overwrite, wait=w),
                          gather=lambda: launch.gather(out_dir))
        if result is not None:
            _report_sweep(result, out_dir, as_json)
        return
    if dry_run:
        cells = expand_cells(cfg)
        click.echo(cfg.to_toml(), nl=False)
        click.echo(f"\n# {len(cells)} cells:\n" + "\n".join(f"#   {c.slug}" for c in cells))
        return
    result = run_sweep(cfg, out_dir, progress=not no_progress, overwrite=overwrite, workers=parse_workers(workers))
    _report_sweep(result, out_dir, as_json)


@lm.command("gather")
@gather_options("no progress bars")
def gather_command(run_dir: str, as_json: bool, no_progress: bool) -> None:
    """The tables and figures of the LM sweep in RUN_DIR from its finished cells (trains nothing; an unfinished
    cell is an error). The last job of `lm sweep --launcher slurm` runs it."""
    from pathlib import Path

    from raretask.lm.launch import gather

    _report_sweep(gather(Path(run_dir), progress=not no_progress), Path(run_dir), as_json)


def _report_sweep(result: Any, out_dir: Any, as_json: bool) -> None:
    """Draw a finished sweep's figures, then print its summary (JSON, or one line per cell and task)."""
    import json

    pages.draw(out_dir)
    if as_json:
        click.echo(json.dumps(result.summary()))
        return
    click.echo(f"wrote {out_dir}: {len(result.cells)} cells, results.parquet, curves.parquet and figures")
    nan = float("nan")
    for r in result.summary()["results"]:
        loss, acc = r.get("train_loss"), r.get("test_acc_labels")
        click.echo(f"  {r['cell']:40s} {r['task'] or '-':16s} train loss {nan if loss is None else loss:.3f}"
                   f"  test acc {nan if acc is None else acc:.3f}")


# ---------------------------------------------------------------------------------------------------- analysis


@lm.command("analyze")
@click.argument("run_dir", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--what", type=click.Choice(["features", "interference", "retention"]), default="features",
              show_default=True, help="features (Fig. 7), interference on the task neurons (Fig. 9, 10) or retention "
                                      "after injections (Fig. 8)")
@click.option("--steps", type=click.Choice(["all", "last"]), default=None,
              help="--what features: checkpoints analysed, every one saved along training (default) or the last")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="output directory (default: RUN_DIR/<what>; an earlier analysis there is replaced)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary on stdout")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@handles_errors
def analyze_command(run_dir: str, overrides: tuple[str, ...], what: str, steps: str | None, out: str | None,
                    as_json: bool, no_progress: bool) -> None:
    """Why the larger models learn it (paper Sec. 4.3-4.4), measured on trained runs.

    features: per checkpoint and layer, the R² of the value order (and DAS's interchange-intervention accuracy)
    for comparison tasks, the present Fourier modes for modular addition (Fig. 7); needs checkpoints along training
    (train.checkpoint_every; keep_checkpoints = 0 keeps them all). interference: the cosines of the batch gradient,
    its task and non-task parts with the task reference on the task neurons, lined up after each injection (Fig. 9;
    runs trained with a [monitor] table), and the zero-ablation of every MLP layer at the last checkpoint (Fig. 10).
    retention: the task's eval loss after each injection of a burst schedule and its fitted decay constant (Fig. 8).

    RUN_DIR is an LM run (`raretask lm train`) or sweep (`raretask lm sweep`: every cell). OVERRIDES are `key=value`
    of the analysis config (`raretask lm analyze-keys --what ...`). Writes Parquet tables and figures to --out."""
    import json
    from pathlib import Path

    from raretask.config import ConfigError, load_config

    if what != "features":
        if steps:
            raise ConfigError("--steps: only for --what features")
        _analyze_injections(Path(run_dir), overrides, what, Path(out) if out else None, as_json)
        return
    from raretask.analysis.features import FeatureConfig, analyze_features

    cfg = load_config(FeatureConfig, None, list(overrides) + ([f"steps={json.dumps(steps)}"] if steps else []))
    result = analyze_features(Path(run_dir), cfg, Path(out) if out else None, progress=not no_progress)
    pages.draw(result.out)
    s = result.summary()
    if as_json:
        click.echo(json.dumps(s))
        return
    click.echo(f"wrote {result.out}: {s['runs']} run(s), features.parquet, das.parquet, fourier.parquet and figures")
    for r in s["results"]:
        what = (f"max R² {r['order_r2_max']:.3f}" if "order_r2_max" in r else f"{r['fourier_modes']} Fourier modes")
        das = f"  DAS IIA {r['das_iia']:.3f} (layer {r['das_best_layer']})" if "das_iia" in r else ""
        acc = "-" if r["test_acc"] is None else f"{r['test_acc']:.3f}"
        click.echo(f"  {r['cell']:40s} {r['task']:16s} step {r['step']}: {what}{das}  test acc {acc}")


def _analyze_injections(run_dir, overrides: tuple[str, ...], what: str, out, as_json: bool) -> None:
    """`lm analyze --what interference|retention`."""
    import json

    from raretask.analysis.after_injection import (InjectionAnalysisConfig, analyze_interference,
                                                   analyze_retention, interference_summary, retention_summary)
    from raretask.config import load_config

    cfg = load_config(InjectionAnalysisConfig, None, list(overrides))
    if what == "interference":
        result = analyze_interference(run_dir, cfg, out)
        s = interference_summary(result)
    else:
        result = analyze_retention(run_dir, cfg, out)
        s = retention_summary(result)
    pages.draw(result.out)
    if as_json:
        click.echo(json.dumps(s))
        return
    click.echo(f"wrote {result.out}: {s['runs']} run(s), tables and figures")

    def pm(v) -> str:
        return "-" if v is None else f"{v[0]:+.3f} ± {v[1]:.3f}"

    for r in s["results"]:
        if what == "interference":
            watched = "-" if r.get("monitored_layer") is None else r["monitored_layer"]
            click.echo(f"  {r['cell']:40s} {r['task']:16s} at injection: cos(g, g_r) {pm(r.get('cos_g_at_injection'))}"
                       f"  cos(g_nt, g_r) {pm(r.get('cos_nt_at_injection'))}; ablation: layer "
                       f"{r.get('ablation_layer', '-')} (monitored {watched})")
        else:
            tau = "-" if r["tau"] is None else f"{r['tau']:.1f}"
            click.echo(f"  {r['cell']:40s} {r['task']:16s} N = {r['gap']}: decay constant {tau} steps "
                       f"({r['points']} points, {r['source']})")
    if what == "interference" and s["without_monitor"]:
        click.echo("  no monitor table (train with a [monitor] table for the cosines): "
                   + ", ".join(s["without_monitor"]))


@lm.command("analyze-keys")
@click.option("--what", type=click.Choice(["features", "interference", "retention"]), default="features",
              show_default=True, help="which analysis's config")
def analyze_keys(what: str) -> None:
    """List every key of an analysis config (`raretask lm analyze RUN_DIR --what ... key=value ...`)."""
    from raretask.analysis.after_injection import InjectionAnalysisConfig
    from raretask.analysis.features import FeatureConfig

    for key, tp, doc in (FeatureConfig if what == "features" else InjectionAnalysisConfig).field_docs():
        click.echo(f"{key:24s} {tp:14s} {doc}")
