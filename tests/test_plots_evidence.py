"""The calibration and flipped-decision plots draw exactly the data they are given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from workbench.core.metrics import expected_calibration_error, reliability_curve  # noqa: E402
from workbench.view import plots  # noqa: E402


def test_reliability_curve_HandWorkedBins_WeightedGapIsTheEce():
    probs = np.array([[0.05, 0.95], [0.09, 0.91], [0.34, 0.66], [0.38, 0.62]])
    labels = np.array([1, 0, 1, 1])
    table = reliability_curve(probs, labels, bins=10)
    assert table["count"].tolist() == [2, 2]  # bins [0.6, 0.7) and [0.9, 1.0); the 0.91 case is wrong
    assert table["accuracy"].tolist() == [1.0, 0.5]
    np.testing.assert_allclose(table["confidence"], [0.64, 0.93])
    gap = (table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / 4
    assert gap == pytest.approx(expected_calibration_error(probs, labels, bins=10))


def test_reliability_diagram_DrawsOneLinePerModelPlusDiagonal_OnGivenAxes():
    rng = np.random.default_rng(0)
    p = rng.random(100)
    probs = np.stack([1 - p, p], axis=1)
    labels = (rng.random(100) < p).astype(int)
    curves = {"dense": reliability_curve(probs, labels), "pruned": reliability_curve(probs**2, labels)}
    fig, ax = plt.subplots()
    assert plots.reliability_diagram(curves, ax=ax) is ax
    assert len(ax.lines) == 3
    np.testing.assert_allclose(ax.lines[1].get_ydata(), curves["dense"]["accuracy"])
    plt.close(fig)


def test_flipped_gallery_ShowsGivenImagesWithBeforeAfterTitles_HidesSpareAxes():
    images = np.arange(5 * 4 * 4, dtype=float).reshape(5, 4, 4, 1)
    dense = np.array([[0.2, 0.8]] * 5)
    pruned = np.array([[0.7, 0.3]] * 5)
    fig, axes = plt.subplots(1, 3)
    returned = plots.flipped_gallery(
        images, dense, pruned, np.array([4, 1]), np.array([0, 1, 0, 1, 1]), axes=axes
    )
    assert returned is axes
    np.testing.assert_array_equal(axes[0].images[0].get_array(), images[4, ..., 0])
    assert axes[0].get_title() == "p 0.80 → 0.30\ntruth 1"
    assert not axes[2].get_visible()
    plt.close(fig)
