"""`raretask advise`: the product's question answered directly. The argument decides which half answers:

  a synthetic CONFIG (a TOML file)   Theorem 3's closed forms (raretask.advise): the smallest width, or at a width
                                     the smallest frequency; `--scaling-law [RUN_DIR]` the Sec. 2 exponent view
  an LM sweep directory              the measured threshold frequencies and their power law in size
                                     (raretask.lm.advise); `--budget` adds the run's compute (raretask.lm.budget)

Flags of the other half are refused in one line (exit 2), as is every impossible question.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from raretask.cli.options import handles_errors
from raretask.config import ConfigError, load_config

SYNTHETIC_FLAGS = ("width", "features", "target_loss", "scaling_law")
LM_FLAGS = ("frequency", "size", "target_acc", "budget", "device", "mfu")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@click.command("advise")
@click.argument("config", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--task", "task", help="the task to ask about (a name in the config, or a task of the sweep)")
@click.option("--width", type=int, help="synthetic: the smallest frequency of the task at this width instead")
@click.option("--features", type=int, help="synthetic: the m-th feature instead of the first (1..rank)")
@click.option("--target-loss", type=float, help="synthetic: a normalised loss l_k / Tr(C_k) in (0, 1) instead")
@click.option("--scaling-law", "scaling_law", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR]",
              help="synthetic: the loss exponent predicted from the Zipf exponent, against the one fitted on the "
                   "optimum and (given a finished sweep's RUN_DIR) on its trained losses")
@click.option("--frequency", type=float, help="LM: the smallest model size that learns the task at this frequency")
@click.option("--size", help="LM: the lowest frequency at this size (a size of the sweep, a preset, or a count)")
@click.option("--target-acc", type=float, help="LM: the test accuracy that counts as learned [default: 0.8]")
@click.option("--budget", is_flag=True, help="LM: the compute 6 N D and device-hours of the run the answer calls for")
@click.option("--device", help="LM, --budget: h100, h200, a100 or cpu [default: h100]")
@click.option("--mfu", type=float, help="LM, --budget: model FLOP utilisation in (0, 1] [default: 0.4]")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@handles_errors
def advise(config: str, overrides: tuple[str, ...], task: str | None, as_json: bool, **flags: Any) -> None:
    """How wide a model, or how much of a task in the data, before the task is learned?

    CONFIG, a synthetic config: without --width, the smallest width keeping the task's first (--features m: m-th)
    feature, or reaching --target-loss; with --width N, the smallest frequency pi_T (other tasks rescaled by
    (1 - pi_T)/(1 - pi_T,config)) at which width N keeps it. CONFIG, an LM sweep directory: per size the frequency
    where test accuracy crosses --target-acc, the power law f*(N) = a N^-gamma with a bootstrap interval, and with
    --frequency F the smallest size, with --size S the lowest frequency (and the upsampling factor)."""
    if Path(config).is_dir():
        given = [flag(k) for k in SYNTHETIC_FLAGS if flags[k] is not None]
        if given or overrides:
            raise ConfigError(f"{given[0] if given else 'overrides'}: only for a synthetic config, not an LM sweep "
                              f"directory")
        sweep_answer(Path(config), task, as_json, **{k: flags[k] for k in LM_FLAGS})
        return
    given = [flag(k) for k in LM_FLAGS if flags[k] not in (None, False)]
    if given:
        raise ConfigError(f"{given[0]}: only for an LM sweep directory, not a synthetic config")
    synthetic_answer(config, overrides, task, as_json, **{k: flags[k] for k in SYNTHETIC_FLAGS})


# ---------------------------------------------------------------------------------------------------- synthetic


def synthetic_answer(config: str, overrides: tuple[str, ...], task: str | None, as_json: bool, width: int | None,
                     features: int | None, target_loss: float | None, scaling_law: str | None) -> None:
    from raretask.advise import advise as answer
    from raretask.advise import scaling_law as scaling
    from raretask.synthetic.train import SynthConfig

    cfg = load_config(SynthConfig, config, list(overrides))
    if scaling_law is not None:
        trained = read_synthetic_results(Path(scaling_law)) if scaling_law else None
        a = scaling(cfg.mixture.build(), cfg.sweep.widths, cfg.mixture.zipf, trained)
        click.echo(json.dumps(a.to_json()) if as_json else scaling_text(a.evidence))
        return
    if task is None:
        raise ConfigError("--task: required (or ask --scaling-law)")
    a = answer(cfg.mixture.build(), task, width, features, target_loss, cfg.eval.frequent_mass)
    if as_json:
        click.echo(json.dumps(a.to_json()))
        return
    e, m = a.evidence, a.evidence["features"]
    what = f"feature {m}" + (f" (normalised loss <= {target_loss})" if target_loss is not None else "")
    if a.question == "width":
        click.echo(f"{task}: the smallest width keeping {what} is N = {a.answer} "
                   f"(utility pi*lambda = {e['utility']:.4g}; normalised loss there {e['normalised_loss']:.3g})")
    elif e["competitor"] is None:
        click.echo(f"{task}: {e['reason']}")
    else:
        c = e["competitor"]
        click.echo(f"{task}: width {width} keeps {what} at pi_T {'>=' if e['attained'] else '>'} {a.answer:.6g} "
                   f"(config {e['config_frequency']:.4g}: upsample x{e['upsample']:.3g}"
                   f"{', already kept at the config' if e['upsample'] <= 1 else ''}); the cut is against "
                   f"{c['task']}#{c['index']} (utility {c['utility']:.4g} -> {c['utility_at_answer']:.4g})")
    if e.get("critical_width") is not None:
        click.echo(f"Prop. 6: outside the frequent set ({', '.join(e['frequent_set'])}); critical width "
                   f"{e['critical_width']}, frequent-set residual threshold delta*_F = {e['residual_threshold']:.4g}")


def read_synthetic_results(run_dir: Path) -> dict[str, list]:
    from raretask import runs

    meta = run_dir / "meta.json"
    try:
        kind = json.loads(meta.read_text()).get("kind", "synthetic")
    except (OSError, ValueError):
        hint = " (dotted overrides go before the flags)" if "=" in str(run_dir) else ""
        raise ConfigError(f"--scaling-law: {run_dir} is not a run directory (no meta.json){hint}") from None
    if kind != "synthetic" or not (run_dir / "results.parquet").is_file():
        raise ConfigError(f"--scaling-law: {run_dir} is not a finished synthetic sweep (kind {kind!r})")
    return runs.read_table(run_dir / "results.parquet")


def scaling_text(e: dict[str, Any]) -> str:
    g = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    lines = [f"Zipf exponent beta = {e['zipf']:.3g} ({e['zipf_source']})",
             f"predicted loss exponent beta - 1 = {g(e['predicted_exponent'])}" + (f" ({e['reason']})"
                                                                                  if e.get("reason") else ""),
             f"fitted on the closed-form optimum L*(N) over N = {e['widths']}: {g(e['closed_form_exponent'])}"]
    if e["trained_loss"] is not None:
        lines.append(f"fitted on the trained mixture loss over the same widths: {g(e['trained_exponent'])}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ LM sweep


def sweep_answer(sweep_dir: Path, task: str | None, as_json: bool, frequency: float | None, size: str | None,
                 target_acc: float | None, budget: bool, device: str | None, mfu: float | None) -> None:
    from raretask.lm import advise as lm_advise

    if task is None:
        raise ConfigError("--task: required (a task of the sweep, e.g. comparison)")
    if not budget and (device is not None or mfu is not None):
        raise ConfigError(f"{'--device' if device is not None else '--mfu'}: only with --budget")
    if budget and frequency is None and size is None:
        raise ConfigError("--budget: plans a run for an answer: give --frequency or --size")
    plan = {"device": device or "h100", "mfu": 0.4 if mfu is None else mfu} if budget else None
    if plan is not None:
        from raretask.lm.budget import check

        check(plan["device"], plan["mfu"])  # before any work
    target = lm_advise.TARGET_ACCURACY if target_acc is None else target_acc
    a = lm_advise.advise_sweep(lm_advise.read_sweep_tables(sweep_dir), task, frequency, size, target, plan)
    if as_json:
        click.echo(json.dumps(a.to_json()))
        return
    click.echo(sweep_text(a.to_json()))


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, fmt)


def sweep_text(j: dict[str, Any]) -> str:
    e, fit = j["evidence"], j["evidence"]["fit"]
    unit = e["unit"].replace("_", " ")
    lines = [f"{j['task']}: threshold frequency f*(N) where test accuracy (label set, mean over seeds) crosses "
             f"{e['target_accuracy']:g}, per size (N = non-embedding parameters):"]
    top, bottom = max(e["frequencies"]), min(e["frequencies"])
    for s in e["sizes"]:
        seeds = [v for v in s["seed_thresholds"] if v is not None]
        spread = f" (seeds {min(seeds):.3g} to {max(seeds):.3g})" if len(seeds) > 1 else ""
        what = {"crosses": f"f* = {_num(s['threshold'])}{spread}", "above": f"never reaches it (f* > {top:g})",
                "below": f"reaches it at every frequency (f* < {bottom:g})"}.get(s["status"], s["status"])
        lines.append(f"  {s['size']:>12} N = {s['params']:>12,.0f}: {what}")
    lo, hi = fit["gamma_interval"] or (None, None)
    lines.append(f"fit f*(N) = {fit['coefficient']:.3g} N^-gamma over {', '.join(fit['sizes_used'])}: gamma = "
                 f"{fit['gamma']:.3g} ({fit['level']:.0%} interval {_num(lo)} to {_num(hi)}, "
                 f"{fit['resamples_kept']} of {fit['resamples']} resamples of seeds and sizes)")
    if e["leave_one_out"]:
        lines.append("held out (fit on the other sizes): " + "; ".join(
            f"{h['size']} predicted {h['predicted']:.3g} vs {h['measured']:.3g} (x{h['factor']:.2f})"
            for h in e["leave_one_out"]))
    for c in e["censored"]:
        lines.append(f"left out: {c['size']} (f* {c['bound']}; the fit says {_num(c['fit'])}, "
                     f"{'consistent' if c['agrees'] else 'inconsistent'})")
    band = j["interval"] or (None, None)
    if j["question"] == "size":
        lines.append(f"answer: at {e['asked_frequency']:g} {unit}, the smallest model that learns {j['task']} has "
                     f"N = {_num(j['answer'], ',.0f')} non-embedding parameters "
                     f"(interval {_num(band[0], ',.0f')} to {_num(band[1], ',.0f')})")
    elif j["question"] == "frequency":
        up = "" if e["upsample"] is None else (f"; upsample x{e['upsample']:.3g} over the natural rate "
                                               f"{e['natural_rate']:.3g} (x{_num(e['upsample_interval'][0])} to "
                                               f"x{_num(e['upsample_interval'][1])})")
        lines.append(f"answer: {e['asked_size']} (N = {e['asked_params']:,.0f}) learns {j['task']} from "
                     f"f = {j['answer']:.3g} {unit} (interval {_num(band[0])} to {_num(band[1])}){up}")
        if e["upsample"] is None:
            lines.append(f"natural rate unknown: {e['natural_note']}")
    else:
        lines.append(f"answer: gamma = {j['answer']:.3g}")
    if e["warning"]:
        lines.append(f"warning: {e['warning']}")
    b = e.get("budget")
    if b:
        lines.append(f"budget: C = 6 N D = 6 x {b['params']:,.0f} ({b['params_counted']}) x {b['tokens']:,.0f} "
                     f"tokens = {b['flops']:.3g} FLOP; {b['hours']:.3g} {b['hours_unit']} on {b['device']} at "
                     f"MFU {b['mfu']:g} ({b['peak_flops']:.3g} FLOP/s peak); the run sees "
                     f"{_num(b['instances'], ',.0f')} task instances. D: {b['tokens_rule']}")
    return "\n".join(lines)
