"""Every experiment of every `raretask reproduce` scale names a packaged preset whose config, with the scale's
overrides, loads and validates: a typo in a scale is caught here, not an hour into a run."""

from __future__ import annotations

import pytest

from raretask import presets
from raretask.cli import ANALYSES
from raretask.cli.reproduce import CORPUS, SCALES, plan
from raretask.config import load_config
from raretask.lm.corpus import CorpusConfig
from raretask.analysis.after_injection import InjectionAnalysisConfig
from raretask.analysis.features import FeatureConfig
from raretask.lm.sweep import LMSweepConfig
from raretask.synthetic.train import SynthConfig


ANALYSES_OF_RUNS = {("lm", "analyze"): FeatureConfig, ("lm", "analyze", "--what", "features"): FeatureConfig,
                    ("lm", "analyze", "--what", "interference"): InjectionAnalysisConfig,
                    ("lm", "analyze", "--what", "retention"): InjectionAnalysisConfig}


def config_class(command: tuple[str, ...]) -> type:
    if command == ("synth", "run"):
        return SynthConfig
    if command == ("lm", "sweep"):
        return LMSweepConfig
    return ANALYSES[command[1]].load("config")


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_every_experiment_of_a_scale_loads(scale, tmp_path):
    experiments = plan(scale, "all")
    assert len({e.name for e in experiments}) == len(experiments)
    assert {e.part for e in experiments} == {"synthetic", "lm"}
    sources = {e.name for e in experiments if not e.source}
    for e in experiments:
        if e.source:  # an analysis of another experiment's run: its config is the command line alone
            assert e.source.split("/cells/")[0] in sources, e.source
            assert e.command in ANALYSES_OF_RUNS, e.command
            load_config(ANALYSES_OF_RUNS[e.command], None, list(e.overrides))
            continue
        extra = [f"data.manifest={tmp_path}"] if e.part == "lm" else []
        load_config(config_class(e.command), presets.find(e.preset), [*e.overrides, *extra])
    load_config(CorpusConfig, presets.find(CORPUS[scale]))


def test_the_dry_run_names_what_each_analysis_reads():
    from click.testing import CliRunner

    from raretask.cli import main

    res = CliRunner().invoke(main, ["reproduce", "--scale", "cpu", "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines()}
    assert lines["lm/interference/retention"].endswith("raretask lm analyze --what retention DIR/lm/interference")
    assert "configs/lm/reproduce_cpu.toml" in lines["lm/sweep"]
