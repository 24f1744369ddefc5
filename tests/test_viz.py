import matplotlib
import numpy as np
import pytest

from helpers import uncertainty, viz

matplotlib.use("Agg")


def test_error_bars_draw_an_interval_that_excludes_its_estimate_by_rounding():
    """Notebook 04 crashed at seed 1: F1 equal over every click draw, the bootstrap interval [0.7, 0.7] lies one
    rounding error above the mean 0.6999999999999998, and matplotlib refuses the negative length."""
    import matplotlib.pyplot as plt

    ci = uncertainty.bootstrap_ci(np.full(20, 0.7), seed=0)
    assert ci["low"] > ci["mean"]                          # the case itself
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="negative"):
        ax.bar([0], [ci["mean"]], yerr=[[ci["mean"] - ci["low"]], [ci["high"] - ci["mean"]]])
    errors = viz.interval_error_bars([ci["mean"]], [ci["low"]], [ci["high"]])
    ax.bar([0], [ci["mean"]], yerr=errors)
    plt.close(fig)
    assert errors.shape == (2, 1) and (errors >= 0).all()


def test_error_bars_cover_the_estimate_and_the_whole_interval():
    estimate, low, high = np.array([0.5, 0.2, 0.9]), np.array([0.4, 0.3, 0.1]), np.array([0.7, 0.6, 0.8])
    below, above = viz.interval_error_bars(estimate, low, high)
    np.testing.assert_allclose(estimate - below, np.minimum(estimate, low))
    np.testing.assert_allclose(estimate + above, np.maximum(estimate, high))
    with pytest.raises(ValueError, match="one value of each per bar"):
        viz.interval_error_bars([0.5, 0.2], [0.4], [0.7])
