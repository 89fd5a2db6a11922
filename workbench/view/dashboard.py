"""The ε explorer dashboard: ipywidgets controls over an ``Explorer``, a ``Scheduler`` and an
``ExplorerFigure``.

Glue only. A control change asks one question (the explorer's ``setting``, or the scheduler's
``answer``/``move``/``curve``/``goal``/``fine_tune``), copies the answer into the controls and
hands the point to the figure (``draw`` or ``move``), whose PNG goes into an ``ipywidgets.Image``.
That renders the same in JupyterLab, Voilà and a headless papermill run, where the dashboard's
static fallback is the same PNG. What runs when, and what a newer value cancels, is the
scheduler's (``workbench.explore.scheduler``); the texts are ``workbench.view.readouts``'.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import logging
import time
from dataclasses import replace

import ipywidgets as w
import pandas as pd

from workbench.analysis.budget import picks_after_fine_tuning
from workbench.analysis.sensitivity import DEFAULT_GRID
from workbench.core.errors import WorkbenchError
from workbench.explore.points import GoalPoint, Point, Setting
from workbench.explore.scheduler import Scheduler
from workbench.explore.session import Explorer
from workbench.prune.pruning import PruneSpec
from workbench.view.controls import FINE_TUNE, Wiring, make_controls, progress_bar
from workbench.view.figure import ExplorerFigure
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

log = logging.getLogger(__name__)


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
        self.explorer, self.goal_grid = explorer, goal_grid
        start = point.spec if point is not None else PruneSpec(criterion=criterion, epsilon=1e-4)
        self.controls = make_controls(start, explorer.layers)
        self.wiring = Wiring(self.controls)
        self.image = w.Image(format="png", layout=w.Layout(width="100%"))
        self.readout, self.message, self.table = w.HTML(), w.HTML(), w.HTML()
        self.kernel_lost = w.HTML(KERNEL_LOST)
        self.progress, self.tune_progress = progress_bar(), progress_bar()
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
        self.recovered: list[tuple[float, dict]] = []
        self._wire()
        if isinstance(point, GoalPoint):  # shown as the engine computed it, in goal mode
            self.wiring.set(mode="goal")
            self.wiring.set_goal_knob(point.allocation.goal, point.allocation.value)
            self.wiring.show_knobs("goal")
            self._show_goal(point)
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
                w.HBox([c["epochs"], c["finetune"], self.tune_progress]),
            ]
        )

    def _repr_mimebundle_(self, **kwargs):
        # The live widget where widgets render (JupyterLab, Voilà), the same frame as a PNG
        # elsewhere (papermill, nbconvert): no second, stale copy of the figure on the page.
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.image.value).decode()
        return bundle

    def _wire(self) -> None:
        observe = self.wiring.observe
        for name in ("mode", "criterion", "scope", "granularity", "goal_value", "goal_tune"):
            observe(name, lambda _: self.on_setting_change())
        observe("epsilon", lambda _: self.on_threshold_change())
        observe("sparsity", lambda _: self.on_threshold_change())
        observe("epsilon_text", lambda change: self.on_typed_epsilon(change["new"]))
        observe("goal", lambda _: self.on_goal_change())
        observe("epochs", lambda _: self.on_epochs_change())
        observe("layer", lambda _: self.on_layer_change())
        self.controls["finetune"].on_click(lambda _: self.on_finetune())

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

    @property
    def grid_key(self) -> str:
        return "epsilon" if self.controls["mode"].value == "epsilon" else "target"

    # --- callbacks ----------------------------------------------------------------------------

    @_reports_errors
    def on_setting_change(self) -> None:
        """Criterion, scope, granularity or mode changed: the explorer gives the new spec and range."""
        if self.controls["mode"].value == "goal":
            self._answer_goal()
            return
        keep = self.point.result.sparsity if self.point is not None else None
        self.scheduler.cancel_background()  # the old setting's curve is obsolete, and the bar is needed
        with self._progress_shown(f"scores {self.spec().criterion}") as report:
            setting = self.explorer.setting(self.spec(), keep_sparsity=keep, progress=report)
        self._show_setting(setting)

    @contextlib.contextmanager
    def _progress_shown(self, description: str):
        """Yield a (done, total) callback that shows the progress bar and the seconds taken (a long
        step is reported again as it runs, so they move); hide the bar when the block ends."""
        start = time.perf_counter()

        def report(done: int, total: int) -> None:
            self.progress.description = f"{description} {time.perf_counter() - start:.0f} s"
            self._bar(self.progress, done, total)

        try:
            yield report
        finally:
            self.progress.layout.display = "none"

    @staticmethod
    def _bar(bar: w.IntProgress, done: int, total: int) -> None:
        bar.max, bar.value, bar.layout.display = max(total, 1), done, None

    @_reports_errors
    def on_threshold_change(self) -> None:
        """ε or target sparsity moved: answer (quick, then exact); only moving artists redraw.

        In the background the whole answer runs on the scheduler's answers worker, so the kernel
        takes the slider's next value at once, and no curve computing meanwhile delays it.
        """
        spec = self.spec()
        if spec.epsilon is not None:
            self.wiring.set(epsilon_text=f"{spec.epsilon:.3g}")
        self.scheduler.move(spec, self._show_point)

    @_reports_errors
    def on_typed_epsilon(self, text: str) -> None:
        """A typed ε goes to the engine as typed; the slider only shows it (clamped to its range)."""
        if not text.strip():
            return
        try:
            value = float(text)
        except ValueError:
            raise WorkbenchError(f"ε must be a number such as 3e-4, got {text!r}") from None
        self.scheduler.answer(replace(self.spec(), epsilon=value, sparsity=None), self._show_point)
        self.wiring.set(epsilon=value)

    @_reports_errors
    def on_goal_change(self) -> None:
        """Another goal: its knob's range and default, then the allocation."""
        self.wiring.set_goal_knob(self.controls["goal"].value)
        self.on_setting_change()

    @_reports_errors
    def on_layer_change(self) -> None:
        """Show the chosen layer's mask; an unknown name gives a message listing the layers."""
        if self.layer not in self.explorer.layers:
            raise WorkbenchError(f"layer must be one of {self.explorer.layers}, got {self.layer!r}")
        with self.scheduler.lock:
            self.image.value = self.figure.show_layer(self.point, self.layer)
        self.show_message("")

    def on_epochs_change(self) -> None:
        """Goal mode picking after fine-tuning uses these epochs: its answer is asked again."""
        c = self.controls
        if c["mode"].value == "goal" and c["goal_tune"].value and picks_after_fine_tuning(c["goal"].value):
            self.on_setting_change()

    @_reports_errors
    def on_finetune(self) -> None:
        """Fine-tune the current mask and mark the recovered point; a second click cancels it.

        In the background the button turns into "cancel fine-tune" while a bar beside it counts the
        training batches; the rest of the dashboard stays live.
        """
        if self.scheduler.fine_tune_running():
            self._cancel_fine_tune("fine-tune cancelled")
            return
        bar = self.tune_progress

        def report(done: int, total: int) -> None:
            self._bar(bar, done, total)
            bar.description = "evaluating" if done >= total else "fine-tuning"

        self._show_fine_tune_started()  # before: a quick fit may end before the call returns
        try:
            self.scheduler.fine_tune(self.point, self.controls["epochs"].value, report, self._show_fine_tuned)
        except WorkbenchError:
            self._show_fine_tune_ended()
            raise

    # --- goal mode ----------------------------------------------------------------------------

    def _answer_goal(self) -> None:
        """Ask for the goal's point; its first sensitivity table computes with a progress bar (in
        the background the dashboard stays live, and another setting cancels it)."""
        c = self.controls
        self.wiring.show_knobs("goal")
        self.progress.description = "sensitivity"
        self.progress.value, self.progress.layout.display = 0, None
        options = dict(
            criterion=c["criterion"].value,
            granularity=c["granularity"].value,
            grid=self.goal_grid,
            tune=c["goal_tune"].value,
            epochs=c["epochs"].value,
        )

        def stage(name: str) -> None:
            self.progress.description = "fine-tuning" if name == "fine-tune" else "sensitivity"

        report = functools.partial(self._bar, self.progress)
        goal, value = c["goal"].value, c["goal_value"].value
        if self.scheduler.goal(goal, value, options, report, stage, self._show_goal):
            self._cancel_fine_tune("fine-tune of the mask cancelled: goal mode fine-tunes its candidates")

    def _show_goal(self, answer: GoalPoint | WorkbenchError) -> None:
        self.progress.layout.display = "none"
        if isinstance(answer, WorkbenchError):
            self.show_message(refusal(answer), error=True)
            return
        self.point = answer
        self.wiring.set(granularity=answer.spec.granularity)
        self.image.value = self.figure.draw_goal(answer, self._shown_layer())
        self._update_text()

    # --- fine-tune ----------------------------------------------------------------------------

    def fine_tune_running(self) -> bool:
        """Whether the fine-tune button's fine-tune is running in the background and still wanted."""
        return self.scheduler.fine_tune_running()

    def _cancel_fine_tune(self, why: str) -> None:
        self.scheduler.cancel_fine_tune()
        self._show_fine_tune_ended()
        self.show_message(why)

    def _show_fine_tune_started(self) -> None:
        button, bar = self.controls["finetune"], self.tune_progress
        button.description, button.icon = "cancel fine-tune", "stop"
        bar.description, bar.value, bar.layout.display = "fine-tuning", 0, None
        self.show_message("")

    def _show_fine_tune_ended(self) -> None:
        button = self.controls["finetune"]
        button.description, button.icon = FINE_TUNE, "play"
        self.tune_progress.layout.display = "none"

    def _show_fine_tuned(self, recipe, answer: tuple[Point, dict] | Exception) -> None:
        self._show_fine_tune_ended()
        if isinstance(answer, Exception):
            self.show_message(f"{type(answer).__name__}: {answer}", error=True)
            return
        point, metrics = answer
        self.recovered.append((point.result.sparsity, metrics))
        self.image.value = self.figure.mark(point.result.sparsity, metrics)
        self.show_message(
            f"fine-tuned {recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''}: "
            f"accuracy {number(metrics['accuracy'])}, "
            f"AUC {number(metrics['auc'])}"
        )

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
            x=self.grid_key,
            layer=self._shown_layer(),
            threshold_name=self.setting.threshold_name,
        )

    def _start_curve(self, spec: PruneSpec) -> None:
        """Compute ``spec``'s curve (in the background) with a progress bar."""
        self.progress.description = f"curve {spec.criterion}"
        self.progress.value, self.progress.layout.display = 0, None
        report = functools.partial(self._bar, self.progress)
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
        self.progress.layout.display = "none"
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
