"""`lm analyze ... cells=[...]`: the named cells of a sweep, in the order given; a one-line error for a name that is
not a trained cell or for cells asked of a single run."""

from __future__ import annotations

import json

import pytest

from raretask.analysis.features import chosen_runs
from raretask.config import ConfigError


@pytest.fixture
def sweep(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "lm.sweep"}))
    for name in ("cpu-10k_f0.003_comparison_s0", "cpu-600k_f0.003_comparison_s0", "cpu-600k_f0.012_comparison_s0"):
        (tmp_path / "cells" / name).mkdir(parents=True)
        (tmp_path / "cells" / name / "config.toml").write_text("")
    (tmp_path / "cells" / "cpu-30k_f0.003_comparison_s0").mkdir()  # not trained yet: no config.toml
    return tmp_path


def test_no_cells_means_every_trained_cell(sweep):
    assert [d.name for d in chosen_runs(sweep, [])] == ["cpu-10k_f0.003_comparison_s0",
                                                       "cpu-600k_f0.003_comparison_s0",
                                                       "cpu-600k_f0.012_comparison_s0"]


def test_named_cells_in_the_order_given_once_each(sweep):
    got = chosen_runs(sweep, ["cpu-600k_f0.003_comparison_s0", "cpu-10k_f0.003_comparison_s0",
                              "cpu-600k_f0.003_comparison_s0"])
    assert [d.name for d in got] == ["cpu-600k_f0.003_comparison_s0", "cpu-10k_f0.003_comparison_s0"]
    assert all(d.parent == sweep / "cells" for d in got)


@pytest.mark.parametrize("cells, message", [
    (["cpu-2m_f0.003_comparison_s0"], "cells: no trained cell 'cpu-2m_f0.003_comparison_s0'"),
    (["cpu-30k_f0.003_comparison_s0"], "cells: no trained cell 'cpu-30k_f0.003_comparison_s0'"),
])
def test_a_cell_that_is_not_trained_is_one_line(sweep, cells, message):
    with pytest.raises(ConfigError, match=message) as err:
        chosen_runs(sweep, cells)
    assert "\n" not in str(err.value)


def test_cells_of_a_single_run_are_refused(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "lm.train"}))
    (tmp_path / "config.toml").write_text("")
    assert chosen_runs(tmp_path, []) == [tmp_path]
    with pytest.raises(ConfigError, match="is a single run, not a sweep"):
        chosen_runs(tmp_path, ["x"])
