"""The ε explorer dashboard: ipywidgets controls over an ``Explorer``, figures updated in place.

Glue only: a control change calls one ``Explorer`` method and one plot-update helper. The figure
is drawn with matplotlib's Agg backend and shown as PNG bytes in an ``ipywidgets.Image``, so it
renders the same in JupyterLab, Voilà and a headless papermill run (``dashboard.figure`` is a
normal matplotlib Figure for static display).
"""

from __future__ import annotations

import functools
import html
import logging

import ipywidgets as w
import numpy as np
from matplotlib.figure import Figure

from workbench import plots
from workbench.prune import PruneSpec
from workbench.scores import CRITERIA, GRANULARITIES
from workbench.sweep import Explorer, Point
from workbench.train import Recipe

log = logging.getLogger(__name__)

METRICS = ("accuracy", "auc")
# Shown only once the page has lost its kernel (it crashed or was shut down): ipywidgets then marks
# every view "jupyter-widgets-disconnected". Plain CSS, because a dead kernel cannot send a message.
KERNEL_LOST = (
    "<style>.wb-kernel-lost{display:none;color:#b00020;font-weight:bold}"
    ".jupyter-widgets-disconnected .wb-kernel-lost{display:inline}</style>"
    "<span class='wb-kernel-lost'>The kernel has stopped (it crashed or was shut down), so the dashboard "
    "no longer updates. Reload the page (Voilà) or restart the kernel and run all cells (JupyterLab).</span>"
)


def _reports_errors(callback):
    """Show an exception from a control callback in the message line instead of killing the widget."""

    @functools.wraps(callback)
    def guarded(self, *args, **kwargs):
        try:
            result = callback(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - anything a user does must leave a live dashboard
            log.info("dashboard callback %s failed", callback.__name__, exc_info=True)
            self.show_message(f"{type(err).__name__}: {err}", error=True)
            return None
        return result

    return guarded


class Dashboard:
    """Controls, live figure, per-layer table and a fine-tune button for one model and dataset.

    Example:
        >>> dash = Dashboard(Explorer(model, data))   # doctest: +SKIP
        >>> dash.widget                                # display it in a notebook  # doctest: +SKIP
        >>> dash.controls["epsilon"].value = 1e-3      # what a slider move does   # doctest: +SKIP
    """

    def __init__(self, explorer: Explorer, *, criterion: str = "gradient", dpi: int = 72):
        self.explorer = explorer
        self.class_names = explorer.dataset.class_names
        self.controls = self._make_controls(criterion)
        self.image = w.Image(format="png", layout=w.Layout(width="100%"))
        self.readout, self.message, self.table = w.HTML(), w.HTML(), w.HTML()
        self.kernel_lost = w.HTML(KERNEL_LOST)
        self.progress = w.Output()
        self.figure = Figure(figsize=(13, 6.5), dpi=dpi)
        self.axes = self._make_axes()
        self.blitter = plots.Blitter(self.figure)
        self.point: Point | None = None
        self.recovered: list[tuple[float, dict]] = []
        self._curve = None
        self._changing_setting = False
        self._wire()
        self.on_setting_change()

    # --- layout -------------------------------------------------------------------------------

    def _make_controls(self, criterion: str) -> dict[str, w.Widget]:
        layer_names = self.explorer.layers
        return {
            "mode": w.ToggleButtons(
                options=[("ε threshold", "epsilon"), ("target sparsity", "sparsity")], description="select by"
            ),
            "criterion": w.Dropdown(options=list(CRITERIA), value=criterion, description="criterion"),
            "scope": w.ToggleButtons(options=["global", "layerwise"], description="scope"),
            "granularity": w.ToggleButtons(options=GRANULARITIES, description="granularity"),
            "epsilon": w.FloatLogSlider(
                value=1e-4,
                min=-8,
                max=0,
                step=0.02,
                description="ε",
                readout_format=".2e",
                continuous_update=False,
            ),
            "epsilon_text": w.Text(
                description="type ε", placeholder="e.g. 3e-4, Enter", continuous_update=False
            ),
            "sparsity": w.FloatSlider(
                value=0.5, min=0.0, max=0.99, step=0.01, description="sparsity", continuous_update=False
            ),
            "layer": w.Combobox(
                options=layer_names, value=layer_names[0], description="layer", ensure_option=False
            ),
            "epochs": w.IntSlider(value=2, min=1, max=10, description="epochs"),
            "finetune": w.Button(description="fine-tune this mask", icon="play"),
        }

    def _make_axes(self) -> dict:
        # A fixed layout: constrained layout would cost ~0.5 s on every full redraw.
        grid = self.figure.add_gridspec(
            2, 3, left=0.06, right=0.98, bottom=0.08, top=0.95, wspace=0.3, hspace=0.35
        )
        return {
            "heatmap": self.figure.add_subplot(grid[0, :2]),
            "confusion": self.figure.add_subplot(grid[0, 2]),
            "vs_grid": self.figure.add_subplot(grid[1, 0]),
            "vs_sparsity": self.figure.add_subplot(grid[1, 1]),
            "mask": self.figure.add_subplot(grid[1, 2]),
        }

    @property
    def widget(self) -> w.Widget:
        c = self.controls
        return w.VBox(
            [
                w.HBox([c["mode"], c["criterion"]]),
                w.HBox([c["scope"], c["granularity"]]),
                w.HBox([c["epsilon"], c["epsilon_text"], c["sparsity"], c["layer"]]),
                self.readout,
                self.message,
                self.kernel_lost,
                self.image,
                self.table,
                w.HBox([c["epochs"], c["finetune"]]),
                self.progress,
            ]
        )

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _wire(self) -> None:
        c = self.controls
        for name in ("mode", "criterion", "scope", "granularity"):
            c[name].observe(lambda _: self.on_setting_change(), names="value")
        c["epsilon"].observe(lambda _: self.on_threshold_change(), names="value")
        c["sparsity"].observe(lambda _: self.on_threshold_change(), names="value")
        c["epsilon_text"].observe(lambda change: self.on_typed_epsilon(change["new"]), names="value")
        c["layer"].observe(lambda _: self.on_layer_change(), names="value")
        c["finetune"].on_click(lambda _: self.on_finetune())

    # --- state -> spec ------------------------------------------------------------------------

    def spec(self) -> PruneSpec:
        c = self.controls
        by_epsilon = c["mode"].value == "epsilon"
        return PruneSpec(
            criterion=c["criterion"].value,
            granularity=c["granularity"].value,
            scope=c["scope"].value,
            epsilon=c["epsilon"].value if by_epsilon else None,
            sparsity=None if by_epsilon else c["sparsity"].value,
        )

    @property
    def grid_key(self) -> str:
        return "epsilon" if self.controls["mode"].value == "epsilon" else "target"

    # --- callbacks ----------------------------------------------------------------------------

    @_reports_errors
    def on_setting_change(self) -> None:
        """Criterion, scope, granularity or mode changed: new curve, slider range and full redraw."""
        self._changing_setting = True  # slider changes must not redraw against the old curve
        try:
            self._set_epsilon_range(*self.explorer.epsilon_bounds(self.spec()))
            if self.point is not None:  # compare criteria at equal sparsity: carry it over as ε
                self._set_epsilon(self.explorer.epsilon_for(self.spec(), self.point.result.sparsity))
        finally:
            self._changing_setting = False
        spec = self.spec()
        for name in ("epsilon", "epsilon_text"):
            self.controls[name].layout.display = None if spec.sparsity is None else "none"
        self.controls["sparsity"].layout.display = "none" if spec.sparsity is None else None
        self._curve = self.explorer.curve(spec)
        self.point = self.explorer.point(spec)
        self.recovered = []
        self._draw_all()
        self._update_text()
        self.image.value = self.blitter.full()

    @_reports_errors
    def on_threshold_change(self) -> None:
        """ε or target sparsity moved: new masks and metrics; only the moving artists are redrawn."""
        if self._changing_setting:
            return
        self.point = self.explorer.point(self.spec())
        self._move_artists()
        self._update_text()
        self.render()

    @_reports_errors
    def on_typed_epsilon(self, text: str) -> None:
        """A typed ε: checked here, so a bad value gives a message and the slider stays put."""
        if not text.strip():
            return
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"ε must be a number such as 3e-4, got {text!r}") from None
        slider = self.controls["epsilon"]
        low, high = slider.base**slider.min, slider.base**slider.max
        if not (np.isfinite(value) and low <= value <= high):
            raise ValueError(f"ε must be between {low:.2e} and {high:.2e} for these scores, got {text}")
        slider.value = value

    @_reports_errors
    def on_layer_change(self) -> None:
        """Show the chosen layer's mask; an unknown name gives a message listing the layers."""
        name = self.controls["layer"].value
        if name not in self.explorer.layers:
            raise ValueError(f"layer must be one of {self.explorer.layers}, got {name!r}")
        self._draw_mask()
        self.show_message("")
        self.image.value = self.blitter.full()

    @_reports_errors
    def on_finetune(self) -> None:
        """Fine-tune the current mask (progress bar below) and mark the recovered point."""
        self.progress.clear_output()
        recipe = Recipe(epochs=self.controls["epochs"].value, learning_rate=5e-4)
        with self.progress:
            metrics, _ = self.explorer.fine_tuned(self.point, recipe)
        self.recovered.append((self.point.result.sparsity, metrics))
        self.axes["vs_sparsity"].plot(
            [self.point.result.sparsity], [metrics["accuracy"]], "*", color="tab:purple", ms=12
        )
        self.show_message(
            f"fine-tuned {recipe.epochs} epochs: accuracy {metrics['accuracy']:.3f}, AUC {metrics['auc']:.3f}"
        )
        self.image.value = self.blitter.full()

    # --- drawing ------------------------------------------------------------------------------

    def _set_epsilon_range(self, low: float, high: float) -> None:
        """Fit the log slider to the scores (whole decades); the slider clamps its value itself."""
        slider = self.controls["epsilon"]
        low_exp, high_exp = float(np.floor(np.log10(low))), float(np.ceil(np.log10(high)))
        slider.max = max(high_exp, slider.max)  # widen first: ipywidgets refuses min > max
        slider.min = low_exp
        slider.max = high_exp

    def _set_epsilon(self, value: float) -> None:
        slider = self.controls["epsilon"]
        if value > 0:
            slider.value = float(np.clip(value, slider.base**slider.min, slider.base**slider.max))

    def _draw_all(self) -> None:
        """Draw every panel for the current curve and point; mark what a slider move changes."""
        for ax in self.axes.values():
            self._clear(ax)
        dense, row = self.explorer.evaluator.dense_metrics, self._point_row()
        plots.sparsity_heatmap(
            self._curve, x=self.grid_key, current=row[self.grid_key], ax=self.axes["heatmap"]
        )
        plots.metric_curves(
            self._curve, x=self.grid_key, metrics=METRICS, dense=dense, current=row, ax=self.axes["vs_grid"]
        )
        plots.metric_curves(
            self._curve, x="sparsity", metrics=METRICS, dense=dense, current=row, ax=self.axes["vs_sparsity"]
        )
        self.axes["vs_grid"].set_title(
            f"{self.point.spec.criterion}, {self.point.spec.scope}: test metrics", fontsize="small"
        )
        plots.confusion(self.point.metrics["confusion"], self.class_names, ax=self.axes["confusion"])
        self.axes["confusion"].set_title("confusion at the operating point", fontsize="small")
        self._draw_mask()
        moving = [
            self.axes["heatmap"].lines[0],
            *self.axes["confusion"].images,
            *self.axes["confusion"].texts,
        ]
        moving += [
            line
            for name in ("vs_grid", "vs_sparsity")
            for line in self.axes[name].lines
            if line.get_marker() == "o"
        ]
        for artist in moving:
            artist.set_animated(True)

    def _draw_mask(self) -> None:
        ax, name = self.axes["mask"], self.controls["layer"].value
        self._clear(ax)
        plots.mask_image(plots.kernel_as_image(self.point.result.keep[name]).astype(np.float32), ax=ax)
        self._mask_label = ax.text(
            0.5, 1.02, self._mask_title(name), transform=ax.transAxes, ha="center", fontsize="small"
        )
        for artist in (*ax.images, self._mask_label):
            artist.set_animated(True)

    def _move_artists(self) -> None:
        row = self._point_row()
        for name, x in (("vs_grid", self.grid_key), ("vs_sparsity", "sparsity")):
            plots.update_marker(self.axes[name], METRICS, row, x)
        position = plots.grid_position(self._curve[self.grid_key].to_numpy(), row[self.grid_key])
        self.axes["heatmap"].lines[0].set_xdata([position, position])
        plots.update_confusion(self.axes["confusion"], self.point.metrics["confusion"])
        name = self.controls["layer"].value
        self.axes["mask"].images[0].set_data(
            plots.kernel_as_image(self.point.result.keep[name]).astype(np.float32)
        )
        self._mask_label.set_text(self._mask_title(name))

    def _point_row(self) -> dict:
        row = self.point.row()
        row["target"] = self.point.spec.sparsity
        return row

    def _clear(self, ax) -> None:
        for image in ax.images:
            if image.colorbar is not None:
                image.colorbar.remove()
        ax.clear()

    def _mask_title(self, name: str) -> str:
        return f"{name} mask: {1 - self.point.result.keep[name].mean():.1%} pruned (black)"

    def _update_text(self) -> None:
        m, result = self.point.metrics, self.point.result
        guard = f" · guard kept a weight in: {', '.join(result.guarded)}" if result.guarded else ""
        self.readout.value = (
            f"<b>sparsity {result.sparsity:.1%}</b> · accuracy {m['accuracy']:.3f} · AUC {m['auc']:.3f} · "
            f"sensitivity {m['sensitivity']:.3f} · specificity {m['specificity']:.3f} · "
            f"{len(m['changed'])} test predictions changed{html.escape(guard)}"
        )
        self.table.value = self.point.table.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0)
        self.show_message("")

    def show_message(self, text: str, error: bool = False) -> None:
        color = "#b00020" if error else "#333"
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>" if text else ""

    def render(self) -> bytes:
        """Redraw the moving artists into the Image widget; returns the PNG bytes."""
        self.image.value = self.blitter.png()
        return self.image.value
