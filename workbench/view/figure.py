"""The explorer's figure, without widgets: one matplotlib figure, its axes, blitter and artist handles.

``draw`` paints every panel for a curve and a point; ``move`` updates only the artists that follow
the point (the heatmap line, the dots, the confusion counts, the mask) and blits them; ``mark``
adds a fine-tuned result. Each returns the PNG bytes of the new frame, which a widget shows as is.
"""

from __future__ import annotations

import functools

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from workbench.explore.points import GoalPoint, Point
from workbench.view import plots

# Sensitivity and specificity at the operating threshold: the curve computes them at every point.
METRICS = ("accuracy", "auc", "sensitivity", "specificity")
LEFT, GOAL_LEFT = 0.06, 0.2  # the figure's left margin: ε/sparsity views, goal view (row names)
# A classroom reads the figure from the back row: every text at least 10 px on the page. The image
# fills the output's width, 848 px in a 1280-px JupyterLab with its file browser open, so a text of
# s pt shows at s x 848 / (72 x width in inches) px: 11.25 pt ("small", 0.833 of 13.5) on a 12-in
# figure is 11 px there, and more in Voilà or with the browser closed.
LEGIBLE = {"font.size": 13.5}
FIGSIZE = (12.0, 7.0)  # inches, at the dashboard's 72 dpi: 864 x 504 px


def _legible(method):
    """Run a drawing method with ``LEGIBLE`` fonts: text sizes are fixed when text is made, and tick
    labels are made when the canvas draws, so both happen inside."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(LEGIBLE):
            return method(*args, **kwargs)

    return wrapper


class ExplorerFigure:
    """Heatmap, confusion matrix, metrics against the grid and against sparsity, and a layer's mask.

    Example (not run here: it draws a whole figure from an explorer's answers)::

        figure = ExplorerFigure(("normal", "lesion"))
        png = figure.draw(curve, point, dense, x="epsilon", layer="conv1")
        png = figure.move(explorer.point(spec), layer="conv1")
    """

    def __init__(
        self,
        class_names: tuple[str, ...],
        *,
        multilabel: bool = False,
        unit_axes: dict[str, int] | None = None,
        dpi: int = 72,
    ):
        self.class_names, self.multilabel = class_names, multilabel  # multi-label: no confusion matrix
        self.unit_axes = unit_axes or {}  # per layer, for its mask's layout (depthwise kernels: 2)
        self.figure = Figure(figsize=FIGSIZE, dpi=dpi)
        self.axes = self._make_axes()
        self.blitter = plots.Blitter(self.figure)
        self.x = "epsilon"
        self.grid: np.ndarray = np.zeros(1)
        self.heat_line = None
        self.dots: dict[str, list] = {}
        self.mask_label = None
        self.computing = None  # "curves computing" on the curve panel, shown until the first point
        self.dense: dict | None = None  # the dense metrics the panels' dashed lines show
        self._blank = True  # no panel drawn yet: nothing to clear

    @_legible  # ticks made now keep the sizes of their making
    def _make_axes(self) -> dict:
        # A fixed layout: constrained layout would cost ~0.5 s on every full redraw.
        grid = self.figure.add_gridspec(
            2, 3, left=LEFT, right=0.98, bottom=0.1, top=0.95, wspace=0.6, hspace=0.45
        )
        self._grid = grid
        return {
            "heatmap": self.figure.add_subplot(grid[0, :2]),
            "confusion": self.figure.add_subplot(grid[0, 2]),
            "vs_grid": self.figure.add_subplot(grid[1, 0]),
            "vs_sparsity": self.figure.add_subplot(grid[1, 1]),
            "mask": self.figure.add_subplot(grid[1, 2]),
        }

    @_legible
    def draw(
        self, curve: pd.DataFrame, point: Point, dense: dict, *, x: str, layer: str, threshold_name: str = ""
    ) -> bytes:
        """Draw every panel for ``curve`` and ``point``; returns the PNG of the whole figure.

        ``x`` is the grid column: "epsilon" or "target" (target sparsity). When the panels
        already show a curve of the same shape (a criterion or scope switch) their artists are
        updated in place, which costs a fraction of building them again.
        """
        if self._same_layout(curve, x, point, layer) and dense is self.dense:
            return self._refresh(curve, point, x=x, layer=layer, threshold_name=threshold_name)
        self._clear_panels()
        self._left_margin(_room_for(plots.layer_columns(curve)))
        self.x, self.grid, self.dense = x, curve[x].to_numpy(), dense
        row = point.row()
        heatmap = plots.sparsity_heatmap(
            curve, x=x, current=row[x], ax=self.axes["heatmap"], threshold_name=threshold_name
        )
        self.heat_line = heatmap.lines[0]
        for name, column in (("vs_grid", x), ("vs_sparsity", "sparsity")):
            ax = plots.metric_curves(
                curve, x=column, metrics=METRICS, dense=dense, current=row, ax=self.axes[name],
                threshold_name=threshold_name,
            )  # fmt: skip
            self.dots[name] = [line for line in ax.lines if line.get_marker() == "o"]
        self._declutter()
        self.axes["vs_grid"].set_title(
            f"{point.spec.criterion}, {point.spec.scope}: test metrics", fontsize="small"
        )
        self.axes["vs_sparsity"].set_title("test metrics against overall sparsity", fontsize="small")
        self.computing = self.axes["vs_grid"].text(
            0.5, 0.5, "curves computing\nin the background", transform=self.axes["vs_grid"].transAxes,
            ha="center", va="center", color="gray", visible=_not_computed(curve),
        )  # fmt: skip
        self._draw_confusion(point, "test confusion at the current setting")
        self._draw_mask(point, layer)
        self._animate()
        return self.blitter.full()

    def _clear_panels(self) -> None:
        if not self._blank:  # clearing rebuilds every axis' ticks: ~0.2 s, for nothing on new axes
            for ax in self.axes.values():
                _clear(ax)
        self._blank = False

    def _same_layout(self, curve: pd.DataFrame, x: str, point: Point, layer: str) -> bool:
        """Whether ``curve`` fits the drawn panels: same grid kind and size, same layers, same mask shape."""
        if self.heat_line is None or x != self.x or len(curve) != len(self.grid):
            return False
        image = self.axes["heatmap"].images[0].get_array()
        mask = self.axes["mask"].images[0].get_array()
        kernel = self._mask_of(point, layer)
        return image.shape == (len(plots.layer_columns(curve)), len(curve)) and mask.shape == kernel.shape

    def _refresh(
        self, curve: pd.DataFrame, point: Point, *, x: str, layer: str, threshold_name: str
    ) -> bytes:
        """Update every panel's artists to ``curve`` and ``point`` (same layout); redraw only those."""
        self.grid = curve[x].to_numpy()
        heatmap = self.axes["heatmap"]
        heatmap.images[0].set_data(curve[plots.layer_columns(curve)].to_numpy().T)
        ticks = heatmap.get_xticks().astype(int)
        heatmap.set_xticks(ticks, [plots.short_number(self.grid[t]) for t in ticks])
        heatmap.set_xlabel(plots.grid_label(x, threshold_name))
        for name, column in (("vs_grid", x), ("vs_sparsity", "sparsity")):
            ax = self.axes[name]
            for line in ax.lines:
                if line.get_label() in METRICS:
                    line.set_data(curve[column], curve[line.get_label()])
            if column == "epsilon":  # limits from the grid; a fraction's axis is fixed (0 to 1)
                plots.epsilon_axis(ax, curve[column].to_numpy())
            ax.set_xlabel(plots.grid_label(column, threshold_name))
        self.axes["vs_grid"].set_title(
            f"{point.spec.criterion}, {point.spec.scope}: test metrics", fontsize="small"
        )
        self.computing.set_visible(_not_computed(curve))
        self._move(point, layer)
        return self.blitter.refresh()

    def _declutter(self) -> None:
        """Drop text the figure repeats: every label costs drawing time on each full redraw."""
        right = self.axes["vs_sparsity"]  # the same metrics and y range as the panel on its left
        right.tick_params(labelleft=False)
        right.get_legend().remove()
        for ax in self.figure.axes:
            if ax not in self.axes.values():  # the heatmap's colorbar
                ax.set_yticks([0, 0.5, 1])

    def _draw_confusion(self, point: Point, title: str) -> None:
        ax = self.axes["confusion"]
        coming = point.nearest is not None or point.pending  # the counts come with the exact answer
        if self.multilabel or not (coming or "confusion" in point.metrics):  # one decision per label
            ax.text(0.5, 0.5, "multi-label: per-label\nmetrics in the readout", ha="center", va="center")
            ax.set_axis_off()
            return
        if coming:
            size = len(self.class_names)
            plots.confusion(np.zeros((size, size), int), self.class_names, ax=ax)
            ax.set_title(title, fontsize="small")
            _counts_pending(ax)
            return
        plots.confusion(point.metrics["confusion"], self.class_names, ax=ax)
        ax.set_title(title, fontsize="small")

    @_legible
    def draw_goal(self, point: GoalPoint, layer: str) -> bytes:
        """Draw a goal point's sensitivity table (allocation circled), row sparsities, confusion and mask.

        Returns the PNG of the whole figure; a goal point is always drawn in full (no blitting).
        """
        self._clear_panels()
        self._left_margin(GOAL_LEFT)  # room for the rows' names (coupled groups are long)
        plots.sensitivity_heatmap(
            point.sensitivity.matrix(), point.row_sparsity, ax=self.axes["heatmap"], label=""
        )  # the title names the colours; a colour-bar label ran into the confusion matrix's
        self.axes["heatmap"].set_title(
            f"{point.spec.criterion}: validation AUC drop of each row pruned alone; circles = allocated",
            fontsize="small",
        )
        bars = self.axes["vs_grid"]
        bars.barh(list(point.row_sparsity), list(point.row_sparsity.values()), color="tab:blue")
        bars.invert_yaxis()
        bars.tick_params(axis="y", labelsize="small")
        bars.set_xlim(0, 1)
        bars.set_title("allocated sparsity per row", fontsize="small")
        self._draw_costs(point)
        self._draw_confusion(point, "test confusion at the allocation")
        self._draw_mask(point, layer)
        self.heat_line, self.dots = None, {}
        self.blitter.changing = []
        return self.blitter.full()

    def _draw_costs(self, point: GoalPoint) -> None:
        """The achieved FLOPs and parameter fractions, with the budget as a dashed line."""
        a, ax = point.allocation, self.axes["vs_sparsity"]
        ax.bar(["FLOPs", "params"], [a.flops, a.params], color=["tab:orange", "tab:green"])
        if a.goal != "tolerance":
            ax.axhline(a.value, color="black", ls="--", lw=1, label=f"budget {a.value:.0%}")
            ax.legend(fontsize="small")
        ax.set_ylim(0, 1)
        ax.tick_params(labelleft=True)  # the ε view hides this panel's (it shares the left one's)
        ax.set_title(f"achieved cost (fraction of dense); val. AUC drop {a.val_drop:+.3f}", fontsize="small")

    def _left_margin(self, left: float) -> None:
        self._grid.update(left=left)  # the top grid: a colorbar nests the heatmap's own spec
        for ax in self.figure.axes:  # update() moves axes only in pyplot's figures; this one is not
            if ax.get_subplotspec() is not None:
                ax.set_position(ax.get_subplotspec().get_position(self.figure))

    def _changing(self) -> list:
        """What a criterion or scope switch changes in the same layout, in drawing order: the
        heatmap's image, the metric panels' lines (curves, dense lines, fine-tune stars), the ε axis
        and titles (grids differ per criterion), the legends and spines drawn over them. The sparsity
        panel's axis is fixed (0 to 1). Redrawing only these skips the ~160 static labels (a full
        draw: ~230 ms on seed_cnn)."""
        moving = {id(artist) for artist in self._moving()}
        artists = []
        for name in ("heatmap", "vs_grid", "vs_sparsity"):
            ax = self.axes[name]
            lines = [line for line in ax.lines if id(line) not in moving]
            legend = [ax.get_legend()] if ax.get_legend() is not None else []
            frame = [ax.xaxis, ax.title] if name != "vs_sparsity" else []
            frame += [self.computing] if name == "vs_grid" else []
            wanted = {id(a) for a in [*ax.images, *lines, *legend, *frame, *ax.spines.values()]}
            in_order = [
                artist for artist in ax.get_children() if id(artist) in wanted
            ]  # as Axes.draw has them
            artists += sorted(
                in_order, key=lambda artist: artist.get_zorder()
            )  # stable: ties keep that order
        return artists

    def _animate(self) -> None:
        """Hand the changing and moving artists to the blitter (animated: not in the static picture)."""
        self.blitter.changing = self._changing()
        for artist in [*self.blitter.changing, *self._moving()]:
            artist.set_animated(True)

    def _moving(self) -> list:
        confusion = self.axes["confusion"]
        dots = [dot for name in self.dots for dot in self.dots[name]]
        return [self.heat_line, *confusion.images, *confusion.texts, *dots, *self._mask_artists()]

    def _mask_of(self, point: Point, layer: str) -> np.ndarray:
        return plots.pruned_pixels(point.result.keep[layer], self.unit_axes.get(layer, 1))

    def _mask_artists(self) -> list:
        return [*self.axes["mask"].images, self.mask_label]

    def _draw_mask(self, point: Point, layer: str) -> None:
        ax = self.axes["mask"]
        _clear(ax)
        plots.mask_image(point.result.keep[layer], ax=ax, unit_axes=self.unit_axes.get(layer, 1))
        for axis in (ax.xaxis, ax.yaxis):  # a few unit and input numbers are enough to find one
            axis.set_major_locator(MaxNLocator(4, integer=True, min_n_ticks=1))
        self.mask_label = ax.text(
            0.5, 1.02, _mask_title(point, layer), transform=ax.transAxes, ha="center", fontsize="small"
        )

    @_legible
    def move(self, point: Point, layer: str) -> bytes:
        """Move the artists that follow the point; returns the blitted PNG."""
        self._move(point, layer)
        return self.blitter.png()

    def _move(self, point: Point, layer: str) -> None:
        row = point.row()
        for name, column in (("vs_grid", self.x), ("vs_sparsity", "sparsity")):
            for dot, metric in zip(self.dots[name], METRICS, strict=True):
                dot.set_data([row[column]], [plots.plottable(row[metric])])
        position = plots.grid_position(self.grid, row[self.x])
        self.heat_line.set_xdata([position, position])
        if "confusion" in point.metrics:
            plots.update_confusion(self.axes["confusion"], point.metrics["confusion"])
        elif self.axes["confusion"].images:  # an answer read from a curve: counts come with the exact one
            _counts_pending(self.axes["confusion"])
        self.axes["mask"].images[0].set_data(self._mask_of(point, layer))
        self.mask_label.set_text(_mask_title(point, layer))

    @_legible
    def show_layer(self, point: Point, layer: str) -> bytes:
        """Show ``layer``'s mask (its shape may differ, so the panel is redrawn)."""
        self._draw_mask(point, layer)
        for artist in self._mask_artists():
            artist.set_animated(True)
        return self.blitter.full()

    @_legible
    def mark(self, sparsity: float, metrics: dict) -> bytes:
        """Add a fine-tuned result to the sparsity panel as a star; returns the PNG."""
        self.axes["vs_sparsity"].plot([sparsity], [metrics["accuracy"]], "*", color="tab:purple", ms=12)
        if self.heat_line is not None:  # an ε or sparsity view: the star is drawn over the curves
            self._animate()
        return self.blitter.full()

    @_legible
    def png(self) -> bytes:
        """The current frame as PNG bytes."""
        return self.blitter.png()

    def smallest_text_px(self) -> float:
        """The smallest visible text's height in the PNG, in pixels (font points x dpi / 72)."""
        texts = [
            text
            for text in self.figure.findobj(Text)
            if text.get_visible() and text.get_text().strip() and _shown(text)
        ]
        return min(text.get_fontsize() for text in texts) * self.figure.dpi / 72


def _shown(text: Text) -> bool:
    """Whether ``text`` is drawn: its axes (if any) visible, and a tick label on a tick that shows."""
    axes = text.axes
    return axes is None or (axes.get_visible() and axes.axison) or text in axes.texts


def _counts_pending(ax) -> None:
    """Show "…" in a drawn confusion matrix's cells until the exact answer brings the counts."""
    for text in ax.texts:
        text.set_text("…")


def _room_for(columns: list[str]) -> float:
    """A left margin that fits the heatmap's longest layer name (~7.5 px a character of 13.5 pt)."""
    longest = max((len(column.split("/", 1)[1]) for column in columns), default=0)
    return float(np.clip(0.015 + 0.0087 * longest, LEFT, GOAL_LEFT))


def _clear(ax) -> None:
    for image in ax.images:
        if image.colorbar is not None:
            image.colorbar.remove()
    ax.clear()
    for artist in (ax.xaxis, *ax.spines.values()):  # clear() keeps them; a figure may have animated them
        artist.set_animated(False)


def _mask_title(point: Point, layer: str) -> str:
    return f"{layer} mask: {1 - point.result.keep[layer].mean():.1%} pruned (light)"


def _not_computed(curve: pd.DataFrame) -> bool:
    """Whether no point of ``curve`` has its metrics yet (the placeholder a dashboard opens with)."""
    return bool(curve[list(METRICS)].isna().all().all())
