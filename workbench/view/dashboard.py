"""The ε explorer dashboard: ipywidgets controls over an ``Explorer``, a ``Scheduler`` and an
``ExplorerFigure``.

Glue only. A control change asks one question (the explorer's ``setting``, or the scheduler's
``answer``/``move``/``curve``), copies the answer into the controls and hands the point to the
figure (``draw`` or ``move``), whose PNG goes into an ``ipywidgets.Image``. The goal and the
fine-tune button are panels of their own (``goal_panel``, ``finetune_panel``) that it holds.
That renders the same in JupyterLab, Voilà and a headless papermill run, where the dashboard's
static fallback is the same PNG. What runs when, and what a newer value cancels, is the
scheduler's (``workbench.explore.scheduler``); the texts are ``workbench.view.readouts``'.
"""

from __future__ import annotations

import base64
import functools
import html
from dataclasses import replace

import ipywidgets as w
import pandas as pd

from workbench.analysis.sensitivity import DEFAULT_GRID
from workbench.core.errors import WorkbenchError
from workbench.explore.points import GoalPoint, Point, Setting
from workbench.explore.scheduler import Scheduler
from workbench.explore.session import Explorer
from workbench.prune.pruning import PruneSpec
from workbench.view import progress_bars
from workbench.view.controls import Wiring, make_controls, progress_bar
from workbench.view.epsilon_control import parse_epsilon, place
from workbench.view.figure import ExplorerFigure
from workbench.view.finetune_panel import FineTunePanel
from workbench.view.goal_panel import GoalPanel
from workbench.view.guard import reports_errors
from workbench.view.readouts import (  # noqa: F401 - also read from here by older imports
    KERNEL_LOST,
    evidence_html,
    goal_text,
    number,
    readout_html,
    refusal,
    status,
    table_html,
)


class Dashboard:
    """Controls, live figure, per-layer table and a fine-tune button for one model and dataset.

    Args:
        explorer: the session every control change asks.
        point: show the dashboard at this evaluated point (from ``explorer.point(spec)``), exactly
            as the engine computed it; the controls only display its setting.
        criterion: the starting criterion when no ``point`` is given.
        background: answer control changes with an estimate first and refine on workers
            (interactive use); False computes every answer exactly before returning (tests).
        goal_grid: the sparsity grid of the sensitivity table behind the goal mode.

    Example (not run here: it needs a notebook's widgets)::

        point = explorer.point(PruneSpec(epsilon=1e-4))
        dash = Dashboard(explorer, point=point)
        dash.controls["epsilon"].value = 1e-3              # what a slider move does
    """

    def __init__(
        self,
        explorer: Explorer,
        *,
        point: Point | None = None,
        criterion: str = "gradient",
        background: bool = False,
        dpi: int = 72,
        goal_grid=DEFAULT_GRID,
    ):
        self.explorer = explorer
        start = point.spec if point is not None else PruneSpec(criterion=criterion, epsilon=1e-4)
        self.controls = make_controls(start, explorer.layers)
        self.wiring = Wiring(self.controls)
        self.image = w.Image(format="png", layout=w.Layout(width="100%"))
        self.readout, self.message, self.table = w.HTML(), w.HTML(), w.HTML()
        self.kernel_lost = w.HTML(KERNEL_LOST)
        self.progress = progress_bar()
        self.figure = ExplorerFigure(
            explorer.dataset.class_names,
            multilabel=explorer.evaluator.head.multilabel,
            unit_axes={info.name: info.unit_axes for info in explorer.scorer.infos},
            dpi=dpi,
        )
        self.scheduler = Scheduler(explorer, background=background)
        self.point: Point | None = None
        self.curve: pd.DataFrame | None = None
        self.setting: Setting | None = None
        self._wire(goal_grid)
        if isinstance(point, GoalPoint):  # shown as the engine computed it, in goal mode
            self.goal_panel.open(point)
        else:
            self._show_setting(explorer.setting(start), given=point, choose_layer=True)

    # --- layout -------------------------------------------------------------------------------

    @property
    def widget(self) -> w.Widget:
        c = self.controls
        knobs = ("epsilon", "epsilon_text", "sparsity", "goal", "goal_value", "goal_tune", "layer")
        return w.VBox(
            [
                w.HBox([c["mode"], c["criterion"]]),
                w.HBox([c["scope"], c["granularity"]]),
                w.HBox([c[name] for name in knobs]),
                self.readout,
                self.progress,
                self.message,
                self.kernel_lost,
                self.image,
                self.table,
                self.finetune_panel.widget,
            ]
        )

    def _repr_mimebundle_(self, **kwargs):
        # The live widget where widgets render (JupyterLab, Voilà), the same frame as a PNG
        # elsewhere (papermill, nbconvert): no second, stale copy of the figure on the page.
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.image.value).decode()
        return bundle

    def _wire(self, goal_grid) -> None:
        self.finetune_panel = FineTunePanel(
            self.scheduler,
            self.controls,
            point=lambda: self.point,
            figure=self.figure,
            image=self.image,
            show_message=self.show_message,
        )
        self.goal_panel = GoalPanel(
            self.scheduler,
            self.wiring,
            self.progress,
            goal_grid,
            fine_tune=self.finetune_panel,
            ask=self.on_setting_change,
            show_point=self._show_goal,
            show_message=self.show_message,
        )
        # read by tests and scripts from the dashboard, as before the panels
        self.tune_progress, self.recovered = self.finetune_panel.bar, self.finetune_panel.recovered
        observe = self.wiring.observe
        for name in ("mode", "criterion", "scope", "granularity", "goal_value", "goal_tune"):
            observe(name, lambda _: self.on_setting_change())
        observe("epsilon", lambda _: self.on_threshold_change())
        observe("sparsity", lambda _: self.on_threshold_change())
        observe("epsilon_text", lambda change: self.on_typed_epsilon(change["new"]))
        observe("layer", lambda _: self.on_layer_change())

    # --- controls -> spec ---------------------------------------------------------------------

    def spec(self) -> PruneSpec:
        """The spec the controls show."""
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
    def layer(self) -> str:
        return self.controls["layer"].value

    # --- callbacks ----------------------------------------------------------------------------

    @reports_errors
    def on_setting_change(self) -> None:
        """Criterion, scope, granularity or mode changed: the explorer gives the new spec and range."""
        if self.controls["mode"].value == "goal":
            self.goal_panel.answer()
            return
        keep = self.point.result.sparsity if self.point is not None else None
        self.scheduler.cancel_background()  # the old setting's curve is obsolete, and the bar is needed
        with progress_bars.timed(self.progress, f"scores {self.spec().criterion}") as report:
            setting = self.explorer.setting(self.spec(), keep_sparsity=keep, progress=report)
        self._show_setting(setting)

    @reports_errors
    def on_threshold_change(self) -> None:
        """ε or target sparsity moved: answer (quick, then exact); only moving artists redraw.

        In the background the whole answer runs on the scheduler's answers worker, so the kernel
        takes the slider's next value at once, and no curve computing meanwhile delays it.
        """
        spec = self.spec()
        if spec.epsilon is not None:
            self.wiring.set(epsilon_text=f"{spec.epsilon:.3g}")
        self.scheduler.move(spec, self._show_point)

    @reports_errors
    def on_typed_epsilon(self, text: str) -> None:
        """A typed ε goes to the engine as typed; the slider only shows it (clamped to its range)."""
        value = parse_epsilon(text)
        if value is None:
            return
        self.scheduler.answer(replace(self.spec(), epsilon=value, sparsity=None), self._show_point)
        with self.wiring.quiet():
            place(self.controls["epsilon"], value, self.setting.decades)

    @reports_errors
    def on_layer_change(self) -> None:
        """Show the chosen layer's mask; an unknown name gives a message listing the layers."""
        if self.layer not in self.explorer.layers:
            raise WorkbenchError(f"layer must be one of {self.explorer.layers}, got {self.layer!r}")
        with self.scheduler.lock:
            self.image.value = self.figure.show_layer(self.point, self.layer)
        self.show_message("")

    # --- panels -------------------------------------------------------------------------------

    def on_finetune(self) -> None:
        """Fine-tune the shown mask and mark the recovered point; a second click cancels it
        (what the fine-tune button does)."""
        self.finetune_panel.on_click()

    def fine_tune_running(self) -> bool:
        """Whether the fine-tune button's fine-tune is running in the background and still wanted."""
        return self.finetune_panel.running()

    def _show_goal(self, answer: GoalPoint) -> None:
        self.point = answer
        self.wiring.set(granularity=answer.spec.granularity)
        self.image.value = self.figure.draw_goal(answer, self._shown_layer())
        self._update_text()

    # --- answers ------------------------------------------------------------------------------

    def _show_setting(self, setting: Setting, given: Point | None = None, choose_layer: bool = False) -> None:
        """Copy a setting into the controls, show its point, then start its curve.

        The first figure is drawn before a curve starts computing in the background, so the two
        do not compete for the CPU. ``choose_layer`` shows the most pruned layer's mask (at open).
        """
        self.setting, spec = setting, setting.spec
        self.wiring.show_setting(setting)
        self.wiring.show_knobs("epsilon" if spec.sparsity is None else "sparsity")
        self.scheduler.cancel_background()
        self.curve = self.explorer.cached_curve(spec)
        if self.curve is None and not self.scheduler.background:
            self._start_curve(spec)  # inline: the figure is then drawn once, with its curve

        def show(point: Point, redraw: bool) -> None:
            if redraw and choose_layer:
                self.wiring.set(layer=point.most_pruned_layer())  # the layer with the most to see
            self._show_point(point, redraw)

        self.scheduler.answer(spec, show, given=given)
        self.scheduler.warm_up()  # after the first figure, before the curve: the first move need not trace
        if self.curve is None:
            self._start_curve(spec)

    def _show_point(self, point: Point, redraw: bool = False) -> None:
        self.point = point
        if redraw:
            self._draw()
        else:
            self.image.value = self.figure.move(point, self.layer)
        self._update_text()

    def _shown_layer(self) -> str:
        return self.layer if self.layer in self.explorer.layers else self.explorer.layers[0]

    def _draw(self, curve: pd.DataFrame | None = None) -> None:
        # before its curve is computed the figure shows the curve's grid blank (or filled in so
        # far), so the layout is final and the finished curve only updates the artists in place
        if curve is None:
            curve = self.curve if self.curve is not None else self.explorer.placeholder_curve(self.point.spec)
        self.image.value = self.figure.draw(
            curve,
            self.point,
            self.explorer.dense_metrics,
            x="epsilon" if self.controls["mode"].value == "epsilon" else "target",  # the curve's grid
            layer=self._shown_layer(),
            threshold_name=self.setting.threshold_name,
        )

    def _start_curve(self, spec: PruneSpec) -> None:
        """Compute ``spec``'s curve (in the background) with a progress bar."""
        progress_bars.start(self.progress, f"curve {spec.criterion}")
        report = functools.partial(progress_bars.fill, self.progress)
        self.scheduler.curve(spec, report, self._show_partial, functools.partial(self._curve_ready, spec))

    def _show_partial(self, spec: PruneSpec, table: pd.DataFrame) -> None:
        if self._showing(spec):
            self._draw(table)

    def _showing(self, spec: PruneSpec) -> bool:
        """Whether the shown point has ``spec``'s curve (same criterion, scope, granularity, mode)."""
        key = self.explorer.curve_key
        return self.point is not None and key(self.point.spec) == key(spec)

    def _curve_ready(self, spec: PruneSpec, curve: pd.DataFrame) -> None:
        self.curve = curve
        progress_bars.hide(self.progress)
        if self._showing(spec) and self.point is not None and self.setting is not None:
            self._draw()  # else the point's answer draws it

    # --- text ---------------------------------------------------------------------------------

    def _update_text(self) -> None:
        self.readout.value = readout_html(self.point, self.explorer.dense_metrics)
        self.table.value = table_html(self.point.table)
        self.show_message("")

    def show_message(self, text: str, error: bool = False) -> None:
        color = "#b00020" if error else "#333"
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>" if text else ""

    def render(self) -> bytes:
        """Redraw the moving artists into the Image widget; returns the PNG bytes."""
        with self.scheduler.lock:
            self.image.value = self.figure.png()
        return self.image.value

    def wait(self, timeout: float | None = None) -> None:
        """Block until background work (curve, exact answer, fine-tune) is done (scripts, benchmarks)."""
        self.scheduler.wait(timeout)
