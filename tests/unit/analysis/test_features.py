"""The feature analysis' config, which runs a directory holds, and the stratified draw of instances."""

import json

import numpy as np
import pytest

from raretask.analysis.features import FeatureConfig, run_dirs, stratified
from raretask.config import ConfigError, load_config


@pytest.mark.parametrize("override, message", [
    ("device=gpu", "device: expected auto"), ("tasks=[\"a\",\"a\"]", "tasks: names repeat"),
    ("layers=[-1]", "layers: must be >= 0"), ("pcs=0", "pcs"), ("steps=some", "steps"), ("das=sometimes", "das"),
])
def test_config_errors_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(FeatureConfig, None, [override])


def test_defaults_are_the_papers():
    cfg = load_config(FeatureConfig, None, [])
    assert (cfg.pcs, cfg.das_pairs, str(cfg.position), str(cfg.steps), str(cfg.das)) == (50, 1000, "tok1", "all",
                                                                                          "last")


def _run(path, kind):
    path.mkdir(parents=True)
    (path / "config.toml").write_text("")
    (path / "meta.json").write_text(json.dumps({"kind": kind}))
    return path


def test_a_sweep_is_its_cells_and_a_run_is_itself(tmp_path):
    sweep = _run(tmp_path / "sweep", "lm.sweep")
    cells = [_run(sweep / "cells" / name, "lm.train") for name in ("b_cell", "a_cell")]
    (sweep / "cells" / "not-a-run").mkdir()
    assert run_dirs(sweep) == sorted(cells)
    assert run_dirs(cells[0]) == [cells[0]]
    with pytest.raises(ConfigError, match="not an LM run or sweep"):
        run_dirs(_run(tmp_path / "synth", "synthetic"))
    with pytest.raises(ConfigError, match="without trained cells"):
        run_dirs(_run(tmp_path / "empty", "lm.sweep"))


def test_stratified_takes_the_same_number_per_group():
    groups = np.arange(10000) % 100
    ids = stratified(groups, 2000, 100, np.random.default_rng(0))
    assert np.bincount(groups[ids], minlength=100).tolist() == [20] * 100
    assert len(np.unique(ids)) == 2000
    assert len(stratified(groups, 10000, 100, np.random.default_rng(0))) == 10000  # all of them
