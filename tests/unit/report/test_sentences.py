"""Each figure's sentence is read from the data it draws: built tables in, the numbers they hold out."""

from __future__ import annotations

from raretask.report import interference, lm, neurons, residual, toys


def sweep_results() -> dict[str, list]:
    rows = [  # size, params, frequency, gap, train loss, test loss, accuracy, compute
        ("cpu-30k", 3e4, 1e-2, 0, 1.0, 1.1, 0.9, 1e9), ("cpu-2m", 2e6, 1e-2, 0, 0.5, 0.6, 0.95, 5e10),
        ("cpu-30k", 3e4, 3e-4, 0, 2.0, 2.1, 0.61, 1e9), ("cpu-2m", 2e6, 3e-4, 0, 1.5, 1.2, 0.83, 5e10),
        ("cpu-2m", 2e6, 3e-4, 1, 1.5, 1.3, 0.8, 5e10), ("cpu-2m", 2e6, 3e-4, 10, 1.5, 1.7, 0.7, 5e10)]
    keys = ("size", "params", "grid_frequency", "gap", "train_loss", "test_loss", "test_acc_labels", "compute")
    cols = {k: [r[i] for r in rows] for i, k in enumerate(keys)}
    n = len(rows)
    return {**cols, "task": ["cmp"] * n, "kind": ["comparison"] * n, "seed": [0] * n, "unit": ["per_token"] * n}


def test_lm_sentences_name_the_numbers_of_each_figure():
    s = lm.figure_sentences(sweep_results(), {"task": []})
    assert "cmp at 0.0003 per token: test accuracy rises from 0.61 (cpu-30k) to 0.83 (cpu-2m)" in \
        s["fig5_heatmaps.png"]
    assert "cpu-30k 1.000 → 2.000, cpu-2m 0.500 → 1.500" in s["fig6a_task_loss.png"]
    assert "final test loss at N = 1: 1.300, 10: 1.700" in s["fig6b_matched_frequency.png"]
    assert "final test loss 2.100 (cpu-30k, C = 1e+09), 1.200 (cpu-2m, C = 5e+10)" in s["fig23_compute.png"]
    assert "fig22_task_vs_lm_loss.png" not in s  # no held-out loss curves, nothing said


def test_residual_sentence_lists_the_widths_that_learn_the_rare_task():
    point = {"rare_task": "r", "widths": [2, 8, 12], "delta_F": [0.48, 0.11, 0.044], "rare_learned": [0, 0, 2],
             "threshold": 0.078, "threshold_upper": 0.112}
    assert residual.residual_sentence(point) == (
        "The rare task r is learned (in some seed) at N = 12 (δ_F 0.044) and not at N = 2, 8 (δ_F 0.48, 0.11); "
        "δ*_F(N_r^crit) = 0.078, δ*_F(N_r^crit - 1) = 0.112.")


def test_toy_sentences():
    decay = {"lr": [0.01] * 3 + [0.05] * 3, "g": [0, 1, 2] * 2,
             "ratio": [1.0, 0.98, 0.9604 * 1.001, 1.0, 0.9, 0.81 * 1.003], "linear": [1.0, 0.98, 0.9604, 1.0, 0.9, 0.81]}
    assert "within 0.30% for every eta (worst at eta = 0.05)" in toys.forget_sentence(decay, 2)
    comp = {"step": [0, 0, 9, 9, 9], "width": [1, 2, 1, 2, 2], "rare_alignment": [0.1, 0.1, 0.0, 0.9, 0.7]}
    assert toys.competition_sentence(comp) == ("At step 9 the rare task's alignment (mean over seeds) is 0.000 with "
                                               "1 neuron, 0.800 with 2 neurons.")


def test_interference_sentences_compare_the_narrowest_and_widest_widths():
    final = [{"width": 8, "rare_projection": 0.05, "rare_signal": 0.9, "mean_cosine": 0.1},
             {"width": 2, "rare_projection": 0.4, "rare_signal": 0.1, "mean_cosine": 0.3}]
    s = interference.interference_sentences(final, 0.25, 500)
    assert s["interference.png"] == ("At step 500, the frequent set's gradient share along the rare task's directions "
                                     "goes from 0.4 (N = 2) to 0.05 (N = 8) (isotropic: 0.25), while the rare task's "
                                     "signal s_r goes from 0.1 (N = 2) to 0.9 (N = 8).")
    assert s["cosines.png"] == "The mean task-by-task gradient cosine goes from 0.3 (N = 2) to 0.1 (N = 8)."
    assert interference.interference_sentences(final[:1], 0.25, 500) == {}  # one width: nothing to compare


def test_neuron_sentences_name_where_each_parity_is_learned():
    summ = {"tasks": [{"name": "rare", "frequency": 0.1}, {"name": "common", "frequency": 0.9}],
            "per_width": [{"width": 2, "accuracy": {"rare": 0.5, "common": 0.95}, "neurons": {"rare": 0, "common": 2}},
                          {"width": 8, "accuracy": {"rare": 0.85, "common": 1.0},
                           "neurons": {"rare": 1.5, "common": 5.0}}],
            "solutions": {"task": "rare", "width": 8, "after_reweighting": {"mean": 0.97},
                          "after_natural": {"mean": 0.96}, "natural_only": {"mean": 0.6}}}
    s = neurons.neuron_sentences(summ)
    assert s["accuracy_vs_width.png"] == ("Accuracy >= 0.9 first at: common (pi 0.9) at N = 2; not reached by rare "
                                          "up to N = 8.")
    assert s["allocation.png"] == "At N = 8, neurons allocated per task (mean over seeds): common 5.0, rare 1.5."
    assert s["solutions.png"] == ("Task rare at N = 8: accuracy 0.970 after the reweighted phase and 0.960 at the "
                                  "end, against 0.600 on the natural mixture alone.")
    summ["solutions"] = {"skipped": "no width"}
    assert "solutions.png" not in neurons.neuron_sentences(summ)
