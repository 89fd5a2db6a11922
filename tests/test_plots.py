"""Plot functions draw the data they are given onto the Axes they are given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from workbench.view import plots  # noqa: E402


def _curve():
    eps = np.array([0.0, 1e-4, 1e-3, 1e-2])
    return pd.DataFrame(
        {
            "epsilon": eps,
            "sparsity": [0, 0.3, 0.6, 0.9],
            "accuracy": [0.9, 0.9, 0.8, 0.5],
            "auc": [0.95, 0.94, 0.9, 0.6],
            "sparsity/a": [0, 0.2, 0.5, 1.0],
            "sparsity/b": [0, 0.4, 0.7, 0.8],
        }
    )


def test_sparsity_heatmap_DrawsLayersByGridOnTheGivenAxes():
    fig, ax = plt.subplots()
    returned = plots.sparsity_heatmap(_curve(), current=1e-3, ax=ax)
    assert returned is ax
    np.testing.assert_array_equal(ax.images[0].get_array(), [[0, 0.2, 0.5, 1.0], [0, 0.4, 0.7, 0.8]])
    assert ax.lines[0].get_xdata()[0] == pytest.approx(2.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    plt.close(fig)


def test_grid_position_InterpolatesOnALogGrid():
    grid = np.array([0.0, 1e-4, 1e-2])
    assert plots.grid_position(grid, 1e-3) == pytest.approx(1.5)
    assert plots.grid_position(grid, 5.0) == 2.0
    assert plots.grid_position(grid, 0.0) == 0.0


def test_metric_curves_PlotMetricsBaselineAndCurrentPoint():
    fig, ax = plt.subplots()
    plots.metric_curves(
        _curve(),
        x="sparsity",
        dense={"accuracy": 0.9, "auc": 0.95},
        current=_curve().iloc[2].to_dict(),
        ax=ax,
    )
    solid = [line for line in ax.lines if line.get_marker() not in ("o",) and line.get_linestyle() == "-"]
    assert list(solid[0].get_ydata()) == [0.9, 0.9, 0.8, 0.5]
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert [tuple(d.get_ydata()) for d in dots] == [(0.8,), (0.9,)]
    plots.update_marker(ax, ("accuracy", "auc"), {"sparsity": 0.9, "accuracy": 0.5, "auc": 0.6}, "sparsity")
    assert [tuple(d.get_ydata()) for d in dots] == [(0.5,), (0.6,)]
    plt.close(fig)


def test_confusion_WritesCountsAndUpdatesInPlace():
    fig, ax = plt.subplots()
    plots.confusion(np.array([[5, 1], [2, 7]]), ("neg", "pos"), ax=ax)
    assert [t.get_text() for t in ax.texts] == ["5", "1", "2", "7"]
    plots.update_confusion(ax, np.array([[6, 0], [1, 8]]))
    assert [t.get_text() for t in ax.texts] == ["6", "0", "1", "8"]
    plt.close(fig)


def test_mask_image_LaysKernelsOutAsInputsByUnits():
    mask = np.zeros((3, 3, 2, 4), bool)
    mask[..., 1] = True
    fig, ax = plt.subplots()
    plots.mask_image(mask, ax=ax)
    shown = ax.images[0].get_array()
    assert shown.shape == (18, 4) and not shown[:, 1].any() and shown[:, 0].all()  # 1: pruned
    plt.close(fig)


def test_mask_and_heatmap_OneColourPerMeaning_KeptIsDense_PrunedIsAllPruned():
    """Black meant "dense" in the heatmap and "pruned" in the mask beside it."""
    fig, (heat, mask) = plt.subplots(1, 2)
    plots.sparsity_heatmap(_curve(), ax=heat)  # layer a goes from 0 (dense) to 1.0 (all pruned)
    keep = np.array([[True, False]])
    plots.mask_image(keep, ax=mask)
    dense, all_pruned = heat.images[0].to_rgba(np.array([0.0, 1.0]))
    kept, pruned = mask.images[0].to_rgba(np.asarray(mask.images[0].get_array()).ravel())
    np.testing.assert_allclose(kept, dense)
    np.testing.assert_allclose(pruned, all_pruned)
    plt.close(fig)


def _contrast(foreground, background) -> float:
    """WCAG 2 contrast ratio, computed here from the standard's formula."""
    from matplotlib.colors import to_rgb

    def luminance(colour):
        c = np.array(to_rgb(colour))
        c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_confusion_CountsContrastWithTheirCells_AlsoAfterAnUpdate():
    """Dark digits on the darkest blue could not be read."""
    fig, ax = plt.subplots()
    plots.confusion(np.array([[50, 1], [20, 30]]), ("neg", "pos"), ax=ax)
    for matrix in (None, np.array([[0, 60], [45, 5]])):
        if matrix is not None:
            plots.update_confusion(ax, matrix)
        cells = ax.images[0].to_rgba(np.asarray(ax.images[0].get_array()).ravel())
        ratios = [_contrast(text.get_color(), cell[:3]) for text, cell in zip(ax.texts, cells, strict=True)]
        assert min(ratios) >= 4.5, ratios  # WCAG AA for text
    plt.close(fig)


def test_kernel_as_image_Depthwise_ColumnsAreChannels_RowsTheTaps():
    mask = np.ones((3, 3, 5, 1), bool)
    mask[:, :, 2, 0] = False  # channel 2 pruned whole
    image = plots.kernel_as_image(mask, unit_axes=2)
    assert image.shape == (9, 5) and not image[:, 2].any() and image[:, [0, 1, 3, 4]].all()
    assert plots.kernel_as_image(np.ones((3, 3, 4, 8), bool)).shape == (
        36,
        8,
    )  # a Conv2D: one column a filter


def test_blitter_ChangesOnlyWhenAnimatedArtistsMove():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    (dot,) = ax.plot([0.5], [0.5], "o", animated=True)
    blitter = plots.Blitter(fig)
    first = blitter.full()
    assert blitter.png() == first
    dot.set_data([0.9], [0.1])
    assert blitter.png() != first


def test_blitter_Refresh_RedrawsTheChangingArtists_AsAFullDrawWould():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    (curve,) = ax.plot([0, 1], [0, 1], animated=True)
    (dot,) = ax.plot([0.5], [0.5], "o", animated=True)
    blitter = plots.Blitter(fig)
    blitter.changing = [curve]
    first = blitter.full()
    curve.set_ydata([1, 0])
    assert blitter.png() == first, "a move leaves the changing layer as it was"
    refreshed = blitter.refresh()
    assert refreshed != first
    assert blitter.full() == refreshed
    dot.set_data([0.9], [0.1])
    assert blitter.png() not in (first, refreshed)


def test_metric_curves_AgainstAFraction_SpanTheWholeRange_AgainstEpsilonTheGrid():
    table = pd.DataFrame(
        {"sparsity": [0.2, 0.4], "epsilon": [1e-3, 1e-2], "accuracy": [0.9, 0.8], "auc": [0.9, 0.7]}
    )
    fig, (a, b) = plt.subplots(1, 2)
    assert plots.metric_curves(table, x="sparsity", ax=a).get_xlim() == (-0.02, 1.02)
    # ε: a margin left of the smallest ε (the symlog axis is linear below it), up to its top decade
    assert plots.metric_curves(table, x="epsilon", ax=b).get_xlim() == pytest.approx((-3e-4, 1e-2))
    plt.close(fig)


def test_update_confusion_RescalesTheColours_FromAPlaceholderOfZeros():
    fig, ax = plt.subplots()
    plots.confusion(np.zeros((2, 2), int), ("a", "b"), ax=ax)
    plots.update_confusion(ax, np.array([[30, 5], [2, 40]]))
    assert ax.images[0].get_clim() == (0, 42) and [t.get_text() for t in ax.texts] == ["30", "5", "2", "40"]
    plt.close(fig)


def test_score_histogram_and_training_curves_ReturnTheirAxes():
    fig, (a, b) = plt.subplots(1, 2)
    assert plots.score_histogram({"w": np.array([0.0, 1e-3, 1e-2, 0.1])}, epsilon=1e-3, ax=a) is a
    assert "1 exact zeros" in a.get_legend().get_texts()[0].get_text()
    assert plots.training_curves({"loss": [1.0, 0.5], "val_accuracy": [0.6, 0.8]}, ax=b) is b
    assert list(b.lines[0].get_ydata()) == [1.0, 0.5]
    plt.close(fig)


def test_sensitivity_heatmap_AtMostSixColumnLabels_AndCellTextContrastsWithItsCell():
    """In the dashboard's goal view twelve column labels ran together and dark text sat on dark red."""
    matrix = pd.DataFrame(
        np.linspace(-0.6, 0.6, 24).reshape(2, 12), index=["conv1", "fc"], columns=np.linspace(0.1, 0.99, 12)
    )
    fig, ax = plt.subplots()
    plots.sensitivity_heatmap(matrix, ax=ax)
    assert 2 <= len(ax.get_xticks()) <= 6
    cells = ax.images[0].to_rgba(matrix.to_numpy().ravel())
    ratios = [_contrast(text.get_color(), cell[:3]) for text, cell in zip(ax.texts, cells, strict=True)]
    assert min(ratios) >= 4.5, ratios
    plt.close(fig)
