"""The feature report's numbers: presence per step (best layer's R², summed Fourier modes) and Spearman's rho."""

import math

import pandas as pd
import pytest

from raretask.report.lm_features import presence, spearman


def test_spearman_is_a_rank_correlation():
    x = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x ** 3) == pytest.approx(1)
    assert spearman(x, -x) == pytest.approx(-1)
    assert spearman(x, pd.Series([1.0, 3.0, 2.0, 5.0, 4.0])) == pytest.approx(0.8)
    assert math.isnan(spearman(x[:2], x[:2])) and math.isnan(spearman(x, pd.Series([1.0] * 5)))
    assert spearman(x, pd.Series([1.0, None, 3.0, 4.0, 5.0])) == pytest.approx(1)  # missing pairs are dropped


def test_presence_is_the_best_layer_for_r2_and_the_sum_over_layers_for_modes():
    rows = [("a", "cmp", "order_r2", 10, layer, v, 0.5) for layer, v in enumerate([0.1, 0.7, 0.3])]
    rows += [("a", "add", "fourier_modes", 10, layer, v, 0.2) for layer, v in enumerate([0.0, 2.0, 3.0])]
    f = pd.DataFrame(rows, columns=["cell", "task", "metric", "step", "layer", "value", "test_acc"])
    f["size"] = "cpu-30k"
    p = presence(f).set_index("task")
    assert p.loc["cmp", "presence"] == pytest.approx(0.7) and p.loc["add", "presence"] == pytest.approx(5.0)
    assert p.loc["cmp", "test_acc"] == 0.5
