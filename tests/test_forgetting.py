"""What pruning forgot: counts match a hand computation."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kprune.methods.forgetting import forgetting_report  # noqa: E402

Y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
DENSE = np.array([0, 0, 1, 1, 1, 2, 2, 0])
PRUNED = np.array([0, 1, 1, 1, 0, 2, 0, 2])


def test_counts_match_hand_computation():
    r = forgetting_report(DENSE, PRUNED, y=Y)
    np.testing.assert_array_equal(r.counts, [3, 2, 3])
    np.testing.assert_allclose(r.dense_accuracy, [2 / 3, 1.0, 2 / 3])
    np.testing.assert_allclose(r.pruned_accuracy, [1 / 3, 0.5, 2 / 3])
    assert r.dense_overall == 6 / 8 and r.pruned_overall == 4 / 8
    np.testing.assert_array_equal(r.pie_indices, [1, 4, 6])
    np.testing.assert_array_equal(r.recovered_indices, [7])
    np.testing.assert_array_equal(r.disagreement_indices, [1, 4, 6, 7])
    np.testing.assert_array_equal(r.pies_per_class(), [1, 1, 1])
    np.testing.assert_allclose(r.relative_change, np.array([-1 / 3, -0.5, 0.0]) + 0.25)


def test_table_lists_worst_class_first_and_totals():
    r = forgetting_report(DENSE, PRUNED, y=Y, class_names=["zero", "one", "two"])
    lines = r.table().splitlines()
    assert lines[2].startswith("one")  # -50 points
    assert lines[-1].split()[0] == "all" and lines[-1].split()[-1] == "3"
    assert "3 pruning-identified exemplars" in str(r)


def test_scores_and_populations_use_the_modal_label():
    scores = np.eye(3)[DENSE]  # (n, classes) scores
    # Three pruned "models": the modal label is PRUNED; ties go to the lowest label.
    other = PRUNED.copy()
    other[0] = 2
    r = forgetting_report(scores, [PRUNED, other, PRUNED], y=Y)
    np.testing.assert_array_equal(r.pruned_labels, PRUNED)
    tie = forgetting_report(DENSE, [np.full(8, 2), np.full(8, 1)], y=Y)
    np.testing.assert_array_equal(tie.pruned_labels, np.ones(8))


def test_models_are_run_on_x():
    x = np.eye(3, dtype="float32")[Y]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, use_bias=False)])
    model.layers[0].kernel.assign(np.eye(3, dtype="float32"))  # predicts y exactly
    r = forgetting_report(model, PRUNED, x, Y)
    assert r.dense_overall == 1.0
    np.testing.assert_array_equal(r.pie_indices, np.flatnonzero(PRUNED != Y))


def test_plot_returns_a_figure_with_exemplars():
    x = np.random.default_rng(0).random((8, 16))
    fig = forgetting_report(DENSE, PRUNED, y=Y).plot(x)
    assert len(fig.axes) == 1 + 3


def test_errors():
    with pytest.raises(ValueError, match="y"):
        forgetting_report(DENSE, PRUNED)
    with pytest.raises(ValueError, match="examples"):
        forgetting_report(DENSE[:4], PRUNED, y=Y)
