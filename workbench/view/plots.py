"""Figures. Each function takes data and an optional ``ax`` and returns the Axes it drew on.

No module-level figure state: callers own their figures. Interactive views keep the returned
artists (``ax.images[0]``, ``ax.lines``) and update them in place with the ``update_*`` helpers.
"""

from __future__ import annotations

import io

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

METRIC_STYLE = {
    "accuracy": "tab:blue",
    "auc": "tab:orange",
    "sensitivity": "tab:green",
    "specificity": "tab:red",
}


def _axes(ax: Axes | None) -> Axes:
    return ax if ax is not None else plt.subplots()[1]


def layer_columns(table: pd.DataFrame) -> list[str]:
    """The ``sparsity/<layer>`` columns of a curve table, in layer order."""
    return [c for c in table.columns if c.startswith("sparsity/")]


def grid_label(x: str, threshold_name: str = "") -> str:
    """Axis label for a curve's grid: ε (and what it thresholds), target or overall sparsity."""
    if x == "epsilon":
        return f"ε (threshold on {threshold_name})" if threshold_name else "ε"
    return "target sparsity" if x == "target" else "overall sparsity"


def short_number(value: float) -> str:
    """A compact tick label: 0, 1e-4, 3e-2, 0.25."""
    if value == 0:
        return "0"
    if abs(value) < 1e-2 or abs(value) >= 1e3:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.2g}"


# One colour scale for "how much is pruned" in every panel: the sparsity heatmap and the mask
# (dark: kept, dense; light yellow: pruned). Grey: a curve point not computed yet.
HEATMAP = matplotlib.colormaps["magma"].with_extremes(bad="0.85")
PRUNED_COLOURS = "dark: kept, light: pruned"  # how titles say it
MAX_ROW_LABELS = 24  # layer names a heatmap writes; with more rows it labels every k-th


def sparsity_heatmap(
    table: pd.DataFrame,
    x: str = "epsilon",
    current: float | None = None,
    ax: Axes | None = None,
    threshold_name: str = "",
) -> Axes:
    """Layers x grid heatmap, colour = sparsity of that layer at that grid point; ``current`` marked.

    Columns are placed by grid index (the grid is log-spaced), labelled with the grid values.
    """
    ax = _axes(ax)
    columns = layer_columns(table)
    grid = table[x].to_numpy()
    image = ax.imshow(
        table[columns].to_numpy().T, aspect="auto", cmap=HEATMAP, vmin=0, vmax=1, interpolation="nearest"
    )
    names = [c.split("/", 1)[1] for c in columns]
    rows = range(0, len(names), -(-len(names) // MAX_ROW_LABELS))  # more would overlap: every k-th
    ax.set_yticks(rows, [names[row] for row in rows], fontsize="small" if len(names) > 12 else None)
    ticks = np.unique(np.linspace(0, len(grid) - 1, min(6, len(grid))).astype(int))
    ax.set_xticks(ticks, [short_number(grid[t]) for t in ticks])
    ax.set_xlabel(grid_label(x, threshold_name))
    ax.set_title(f"sparsity per layer ({PRUNED_COLOURS}, grey: not computed)", fontsize="small")
    ax.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label="sparsity")
    position = grid_position(grid, current if current is not None else grid[0])
    ax.axvline(position, color="cyan", lw=1.5, label="current setting")
    ax.legend(loc="upper left", fontsize="small", framealpha=0.8)
    return ax


def grid_position(grid: np.ndarray, value: float) -> float:
    """Fractional column index of ``value`` on a (log-spaced) grid, for marking it on a heatmap."""
    grid = np.asarray(grid, dtype=float)
    if value <= grid[0]:
        return 0.0
    if value >= grid[-1]:
        return float(len(grid) - 1)
    upper = int(np.searchsorted(grid, value))
    low, high = grid[upper - 1], grid[upper]
    if low > 0:
        frac = np.log(value / low) / np.log(high / low)
    else:
        frac = (value - low) / (high - low)
    return upper - 1 + float(frac)


def plottable(value) -> float:
    """A metric as a float to plot: an undefined one (None) is NaN, which matplotlib leaves out."""
    return float("nan") if value is None else float(value)


def metric_curves(
    table: pd.DataFrame,
    x: str = "epsilon",
    metrics: tuple[str, ...] = ("accuracy", "auc"),
    dense: dict | None = None,
    current: dict | None = None,
    label: str = "",
    ax: Axes | None = None,
    threshold_name: str = "",
) -> Axes:
    """Metrics against ε or sparsity; dashed lines for the dense baseline, dots for ``current``.

    The legend names each metric once, plus one entry for the dashed dense lines and one for
    the dots, whatever the number of metrics.
    """
    ax = _axes(ax)
    for metric in metrics:
        color = METRIC_STYLE.get(metric)
        ax.plot(table[x], table[metric], color=color, label=f"{label}{metric}", lw=1.5)
        if dense is not None and dense[metric] is not None:  # None: undefined (a class missing from test)
            ax.axhline(dense[metric], color=color, ls="--", lw=0.8)
        if current is not None:
            ax.plot([current[x]], [plottable(current[metric])], "o", color=color, ms=6)
    if x == "epsilon":
        epsilon_axis(ax, table[x].to_numpy())
    elif x in ("sparsity", "target"):  # fractions: the whole range, the same for every criterion
        ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(grid_label(x, threshold_name))
    ax.set_ylim(0.0, 1.02)
    handles = ax.get_legend_handles_labels()[0]
    if dense is not None:
        handles.append(Line2D([], [], color="gray", ls="--", lw=0.8, label="dense model"))
    if current is not None:
        handles.append(Line2D([], [], color="gray", marker="o", ls="", label="current setting"))
    ax.legend(
        handles=handles,
        loc="lower left",
        fontsize="small",
        framealpha=0.8,
        ncols=2 if len(metrics) > 2 else 1,
    )
    return ax


def epsilon_axis(ax: Axes, values: np.ndarray, most: int = 5) -> None:
    """A symlog ε axis with at most ``most`` labelled decades and a 0, so the labels never overlap."""
    positive = values[values > 0]
    if positive.size == 0:
        return
    low = float(positive.min())
    ax.set_xscale("symlog", linthresh=low, linscale=0.5)
    first, last = int(np.ceil(np.log10(low))), int(np.ceil(np.log10(float(positive.max()))))
    step = max(1, int(np.ceil((last - first + 1) / (most - 1))))
    decades = list(range(last, first - 1, -step))[::-1]
    ticks = ([0.0] if (values == 0).any() else []) + [10.0**d for d in decades]
    ax.set_xticks(ticks, [short_number(t) for t in ticks])
    ax.set_xlim(-0.3 * low, ticks[-1])  # fixed by the grid alone, not by what the axes showed before
    ax.xaxis.set_minor_locator(NullLocator())


def update_marker(ax: Axes, metrics: tuple[str, ...], point: dict, x: str) -> None:
    """Move the ``current`` dots drawn by ``metric_curves`` to ``point``."""
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    for dot, metric in zip(dots, metrics, strict=True):
        dot.set_data([point[x]], [point[metric]])


def confusion(matrix: np.ndarray, class_names: tuple[str, ...], ax: Axes | None = None) -> Axes:
    """Confusion matrix with counts written in the cells, white on dark cells and black on light ones."""
    ax = _axes(ax)
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.sum(axis=1).max()), 1))
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, fontsize="small")
    # upright names: long ones ("pneumonia") would run into whatever sits on the left
    ax.set_yticks(ticks, class_names, fontsize="small", rotation=90, va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize="small")
    _contrast_texts(ax)
    return ax


def update_confusion(ax: Axes, matrix: np.ndarray) -> None:
    """Refresh the cells of a matrix drawn by ``confusion`` (its colour scale too: the matrix
    first drawn may have been a placeholder of zeros)."""
    ax.images[0].set_data(matrix)
    ax.images[0].set_clim(0, max(int(matrix.sum(axis=1).max()), 1))
    for text, count in zip(ax.texts, matrix.ravel(), strict=True):
        text.set_text(str(count))
    _contrast_texts(ax)


def _contrast_texts(ax: Axes) -> None:
    """Write each cell's text (``ax.texts`` in the image's row-major order) in black or white,
    whichever contrasts more with the cell (WCAG luminance): dark digits on the darkest blue could
    not be read."""
    image = ax.images[0]
    cells = image.to_rgba(np.asarray(image.get_array()).ravel())
    for text, rgba in zip(ax.texts, cells, strict=True):
        text.set_color("white" if relative_luminance(rgba) < 0.179 else "black")


def relative_luminance(rgba) -> float:
    """A colour's relative luminance (WCAG 2): 0 for black, 1 for white."""
    channels = np.asarray(rgba, dtype=float)[:3]
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def kernel_as_image(mask: np.ndarray, unit_axes: int = 1) -> np.ndarray:
    """Lay a kernel mask out in 2D: rows are a unit's inputs (fan-in), columns the units.

    ``unit_axes`` trailing axes index one unit (``registry.LayerInfo.unit_axes``): 1 for a Conv or
    Dense kernel; 2 for a depthwise kernel (k, k, channels, multiplier), whose columns are then
    its channels and rows its k·k taps, not one column of k·k·channels.
    """
    if mask.ndim < 2:
        return mask[np.newaxis]
    return mask.reshape(-1, int(np.prod(mask.shape[-unit_axes:])))


def pruned_pixels(keep: np.ndarray, unit_axes: int = 1) -> np.ndarray:
    """A keep-mask as the mask panel's image: 1 where a weight is pruned, 0 where kept
    (the heatmap's sparsity scale, so the colours mean the same in both)."""
    return kernel_as_image(~np.asarray(keep, dtype=bool), unit_axes).astype(np.float32)


def mask_image(mask: np.ndarray, title: str = "", ax: Axes | None = None, unit_axes: int = 1) -> Axes:
    """Show a layer's keep-mask in the heatmap's colours: dark = kept weight, light = pruned
    (layout: ``kernel_as_image``)."""
    ax = _axes(ax)
    image = pruned_pixels(mask, unit_axes)
    ax.imshow(image, cmap=HEATMAP, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_title(title, fontsize="small")
    ax.set_xlabel("unit")
    ax.set_ylabel("input weight")
    return ax


def training_curves(history: dict[str, list[float]], label: str = "", ax: Axes | None = None) -> Axes:
    """Loss and validation accuracy per epoch (Keras's accuracy: argmax, or 0.5 for one sigmoid,
    not the validated threshold of the workbench's own metrics)."""
    ax = _axes(ax)
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], label=f"{label} loss")
    if "val_accuracy" in history:
        ax.plot(epochs, history["val_accuracy"], ls="--", label=f"{label} val accuracy (Keras, argmax)")
    ax.set_xlabel("epoch")
    ax.legend(fontsize="small")
    return ax


def score_histogram(
    scores: dict[str, np.ndarray], epsilon: float | None = None, ax: Axes | None = None
) -> Axes:
    """Log-histogram of positive scores per layer, with the count of exact zeros in the legend."""
    ax = _axes(ax)
    positive = np.concatenate([s[s > 0] for s in scores.values()])
    bins = np.geomspace(max(positive.min(), 1e-12), positive.max(), 50) if positive.size else 10
    for name, values in scores.items():
        zeros = int((values == 0).sum())
        ax.hist(values[values > 0], bins=bins, histtype="step", label=f"{name} ({zeros} exact zeros)")
    if epsilon is not None:
        ax.axvline(epsilon, color="k", ls=":", label=f"ε = {epsilon:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("score")
    ax.set_ylabel("weights")
    ax.legend(fontsize="x-small")
    return ax


# --- fast redraws for interactive views ---------------------------------------------------------


class Blitter:
    """Redraw only the artists that changed, over cached pictures, and return PNG bytes.

    Two layers of animated artists lie over the static picture: ``changing`` ones, which
    ``refresh()`` redraws (a curve replaced in place by another of the same layout), and the
    other animated ones, which every ``png()`` redraws (the artists that follow a slider).
    ``full()`` draws everything. This is matplotlib's blitting recipe, for an Agg canvas shown
    as an image, with one more cached picture.
    """

    def __init__(self, figure):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.figure = figure
        self.canvas = FigureCanvasAgg(figure)
        self.changing: list = []  # animated artists in drawing order, e.g. a curve panel's lines and axis
        self._static = None  # the picture without any animated artist
        self._background = None  # the static picture with the changing artists

    def animated(self) -> list:
        """The animated artists ``png()`` redraws: every animated line, image and text not ``changing``."""
        changing = {id(artist) for artist in self.changing}
        return [
            a
            for ax in self.figure.axes
            for a in (*ax.lines, *ax.images, *ax.texts)
            if a.get_animated() and id(a) not in changing
        ]

    def full(self) -> bytes:
        """Draw the whole figure, cache the static picture, return the PNG."""
        self.canvas.draw()
        self._static = self.canvas.copy_from_bbox(self.figure.bbox)
        return self.refresh()

    def refresh(self) -> bytes:
        """Redraw the changing artists over the static picture, cache that, return the PNG."""
        if self._static is None:
            return self.full()
        self._draw_over(self._static, self.changing)
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        return self.png()

    def png(self) -> bytes:
        """Restore the background, draw the animated artists, and encode the frame."""
        if self._background is None:
            return self.full()
        self._draw_over(self._background, self.animated())
        return _encode_png(np.asarray(self.canvas.buffer_rgba()))

    def _draw_over(self, picture, artists: list) -> None:
        self.canvas.restore_region(picture)
        for artist in artists:
            self.figure.draw_artist(artist)


def _encode_png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # RGBA as the canvas holds it: slicing off alpha costs a copy and encodes slower (~30%)
    Image.fromarray(rgba).save(buffer, format="png", compress_level=1)
    return buffer.getvalue()


def metric_errorbars(
    summary: pd.DataFrame, x: str, metric: str, group: str | None = None, ax: Axes | None = None
) -> Axes:
    """Mean ± std of ``metric`` against ``x`` from a sweep summary, one line per ``group`` value.

    ``summary`` has columns ``x``, ``<metric> mean`` and ``<metric> std`` (see workbench.runs.report).
    """
    ax = _axes(ax)
    groups = summary.groupby(group, sort=True) if group else [("", summary)]
    for name, part in groups:
        part = part.sort_values(x)
        ax.errorbar(
            part[x],
            part[f"{metric} mean"],
            yerr=part[f"{metric} std"].fillna(0),
            marker="o",
            capsize=3,
            label=str(name),
        )
    if x == "epsilon" and (summary[x] > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    if group:
        ax.legend(title=group, fontsize="small")
    return ax


# --- clinical evidence: calibration and the decisions that changed ---------------------------


def reliability_diagram(curves: dict[str, pd.DataFrame], ax: Axes | None = None) -> Axes:
    """Accuracy against confidence per bin for each model (e.g. dense and pruned); the diagonal is perfect.

    Args:
        curves: label -> ``workbench.core.metrics.reliability_curve`` table (confidence, accuracy, count).
    """
    ax = _axes(ax)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    for label, table in curves.items():
        ax.plot(table["confidence"], table["accuracy"], marker="o", label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def flipped_gallery(
    images: np.ndarray,
    dense_probs: np.ndarray,
    pruned_probs: np.ndarray,
    indices: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    positive: int = 1,
    axes: np.ndarray | None = None,
) -> np.ndarray:
    """Show test images whose decision flipped, titled with p(positive) before and after pruning.

    Args:
        indices: the images to show (e.g. ``changed_predictions(...)``); as many as there are axes.
        labels: true classes, added to each title when given.
        axes: an array of Axes to draw on (a grid from ``plt.subplots``); None makes a 2x4 grid.
    Returns:
        The axes array; axes without an image are switched off.
    """
    if axes is None:
        axes = plt.subplots(2, 4, figsize=(8, 4.5))[1]
    flat = np.asarray(axes).ravel()
    for ax, index in zip(flat, np.asarray(indices)[: flat.size], strict=False):
        ax.imshow(np.squeeze(images[index]), cmap="gray")
        title = f"p {dense_probs[index, positive]:.2f} → {pruned_probs[index, positive]:.2f}"
        if labels is not None:
            title += f"\ntruth {labels[index]}"
        ax.set_title(title, fontsize="small")
    for ax in flat:
        ax.set_axis_off()
    for ax in flat[len(indices) :]:
        ax.set_visible(False)
    return axes


def sensitivity_heatmap(
    matrix: pd.DataFrame,
    allocated: dict[str, float] | None = None,
    ax: Axes | None = None,
    label: str = "validation AUC drop",
) -> Axes:
    """Rows (layers or coupled groups) x target sparsity, colour = AUC drop; ``allocated`` marked.

    ``matrix`` is ``Sensitivity.matrix()`` (or ``with_baseline_row()``): index = row names,
    columns = target sparsities. ``allocated`` maps row names to the sparsity an allocation gave
    them; each is marked with a circle at the nearest grid column.
    """
    ax = _axes(ax)
    values = matrix.to_numpy(dtype=float)
    limit = max(float(np.nanmax(np.abs(values))), 1e-3)
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    for (row, col), value in np.ndenumerate(values):  # "-.03": legible text fits a narrow cell
        ax.text(col, row, f"{value:.2f}".replace("0.", "."), ha="center", va="center", fontsize="small")
    ax.set_yticks(range(len(matrix.index)), list(matrix.index))
    columns = range(0, len(matrix.columns), -(-len(matrix.columns) // 6))  # at most 6 labels: no overlap
    ax.set_xticks(columns, [f"{matrix.columns[c]:.2f}" for c in columns])
    _contrast_texts(ax)
    ax.set_xlabel("sparsity of that row alone")
    ax.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label=label)
    for name, sparsity in (allocated or {}).items():
        if name in matrix.index and sparsity > 0:
            column = int(np.argmin(np.abs(np.asarray(matrix.columns, dtype=float) - sparsity)))
            ax.plot(column, list(matrix.index).index(name), "o", ms=14, mfc="none", mec="lime", mew=2)
    return ax
