"""The ε explorer dashboard: ipywidgets controls over an ``Explorer`` and an ``ExplorerFigure``.

Glue only. A control change asks the explorer one question (``setting``, ``estimate``/``point``,
``curve``), copies the answer into the controls, and hands the point to the figure (``draw`` or
``move``), whose PNG goes into an ``ipywidgets.Image``. That renders the same in JupyterLab, Voilà
and a headless papermill run, where the dashboard's static fallback is the same PNG.

With ``background=True`` a control change answers at once from an estimate on a subset of the
evaluation images, then refines to the exact answer in a background thread; curves compute in
the background with a progress bar. A newer control value cancels older work, and a stale answer
is never drawn (see ``workbench.explore.scheduler.Latest``).

The "goal" mode's knob is a tolerated validation AUC drop or a FLOPs/parameter budget; the answer
is ``Explorer.goal_point``, drawn as the sensitivity heatmap with the allocation circled. Its first
sensitivity table is slow: it computes with the progress bar, in the background when ``background``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import ipywidgets as w
import pandas as pd

from workbench.analysis.budget import picks_after_fine_tuning
from workbench.analysis.sensitivity import DEFAULT_GRID
from workbench.core.errors import UnreachableGoal, WorkbenchError
from workbench.core.progress import Cancelled
from workbench.explore.scheduler import Latest, Ticket
from workbench.explore.session import GOAL_KNOBS, Explorer, GoalPoint, Point, Setting
from workbench.model.train import Recipe, ReportBatches
from workbench.prune.pruning import PruneSpec
from workbench.prune.scores import CRITERIA, GRANULARITIES
from workbench.view.figure import ExplorerFigure

log = logging.getLogger(__name__)

# Shown only once the page has lost its kernel (it crashed or was shut down): ipywidgets then marks
# every view "jupyter-widgets-disconnected". Plain CSS, because a dead kernel cannot send a message.
KERNEL_LOST = (
    "<style>.wb-kernel-lost{display:none;color:#b00020;font-weight:bold}"
    ".jupyter-widgets-disconnected .wb-kernel-lost{display:inline}</style>"
    "<span class='wb-kernel-lost'>The kernel has stopped (it crashed or was shut down), so the dashboard "
    "no longer updates. Reload the page (Voilà) or restart the kernel and run all cells (JupyterLab).</span>"
)
SIDE_BY_SIDE = ("accuracy", "auc", "sensitivity", "specificity")
FINE_TUNE = "fine-tune this mask"  # the button's label; while one runs it reads "cancel fine-tune"


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

    A curve computing in the background redraws its filled-in part every ``REFILL_SECONDS``.

    Args:
        explorer: the engine every control change asks.
        point: show the dashboard at this evaluated point (from ``explorer.point(spec)``), exactly
            as the engine computed it; the controls only display its setting.
        criterion: the starting criterion when no ``point`` is given.
        background: answer control changes with an estimate first and refine in a thread
            (interactive use); False computes every answer exactly before returning (tests).
        goal_grid: the sparsity grid of the sensitivity table behind the goal mode.

    Example (not run here: it needs a notebook's widgets)::

        point = explorer.point(PruneSpec(epsilon=1e-4))
        dash = Dashboard(explorer, point=point)
        dash.controls["epsilon"].value = 1e-3              # what a slider move does
    """

    REFILL_SECONDS = 1.5  # not more often: each redraw takes CPU from the curve it shows

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
        self.controls = self._make_controls(start)
        self.image = w.Image(format="png", layout=w.Layout(width="100%"))
        self.readout, self.message, self.table = w.HTML(), w.HTML(), w.HTML()
        self.kernel_lost = w.HTML(KERNEL_LOST)
        self.progress = w.IntProgress(
            value=0, min=0, max=1, layout=w.Layout(display="none"), style={"description_width": "initial"}
        )
        self.tune_progress = w.IntProgress(
            value=0, min=0, max=1, layout=w.Layout(display="none"), style={"description_width": "initial"}
        )
        self.figure = ExplorerFigure(
            explorer.dataset.class_names,
            multilabel=explorer.evaluator.head.multilabel,
            unit_axes={info.name: info.unit_axes for info in explorer.scorer.infos},
            dpi=dpi,
        )
        lock = threading.RLock()  # one lock for drawing: foreground and background answers take turns
        self.points = Latest(background=background, lock=lock)
        self.curves = Latest(background=background, lock=lock)
        # a fine-tune has a worker of its own (it trains a copy), so the slider's exact answers and
        # the curves do not queue behind it; the kernel stays free to take a click on "cancel"
        tuner = ThreadPoolExecutor(1, thread_name_prefix="workbench-fine-tune") if background else None
        self.tuning = Latest(background=background, executor=tuner, lock=lock)
        self._tuning_ticket: Ticket | None = None
        self.point: Point | None = None
        self.curve: pd.DataFrame | None = None
        self.setting: Setting | None = None
        self.recovered: list[tuple[float, dict]] = []
        self._goal_tuning: Ticket | None = None  # goal mode's background answer, if it fine-tunes
        self._handlers: list[tuple[w.Widget, object]] = []
        self._wire()
        if isinstance(point, GoalPoint):  # shown as the engine computed it, in goal mode
            self._set_controls(mode="goal")
            self._set_goal_knob(point.allocation.goal, point.allocation.value)
            self._show_knobs("goal")
            self._show_goal(point)
        else:
            self._show_setting(explorer.setting(start), given=point, choose_layer=True)

    # --- layout -------------------------------------------------------------------------------

    def _make_controls(self, spec: PruneSpec) -> dict[str, w.Widget]:
        layer_names = self.explorer.layers
        return {
            "mode": w.ToggleButtons(
                options=[("ε threshold", "epsilon"), ("target sparsity", "sparsity"), ("goal", "goal")],
                value="epsilon" if spec.sparsity is None else "sparsity",
                description="select by",
            ),
            "criterion": w.Dropdown(options=list(CRITERIA), value=spec.criterion, description="criterion"),
            "scope": w.ToggleButtons(options=["global", "layerwise"], value=spec.scope, description="scope"),
            "granularity": w.ToggleButtons(
                options=GRANULARITIES, value=spec.granularity, description="granularity"
            ),
            "epsilon": w.FloatLogSlider(
                value=1e-4,
                min=-8,
                max=0,
                step=0.02,
                description="ε",
                readout_format=".2e",
                continuous_update=True,  # throttled: the worker skips overtaken values
            ),
            "epsilon_text": w.Text(
                description="type ε", placeholder="e.g. 3e-4, Enter", continuous_update=False
            ),
            "sparsity": w.FloatSlider(
                value=0.5 if spec.sparsity is None else spec.sparsity,
                min=0.0,
                max=0.99,
                step=0.01,
                description="sparsity",
                continuous_update=True,
            ),
            "goal": w.ToggleButtons(
                options=[
                    ("AUC tolerance", "tolerance"),
                    ("FLOPs budget", "flops"),
                    ("params budget", "params"),
                ],
                value="flops",
                description="goal",
            ),
            "goal_value": w.FloatSlider(
                value=GOAL_KNOBS["flops"][3],
                min=GOAL_KNOBS["flops"][0],
                max=GOAL_KNOBS["flops"][1],
                step=GOAL_KNOBS["flops"][2],
                description=GOAL_KNOBS["flops"][4],
                readout_format=".3f",
                continuous_update=False,
            ),
            "goal_tune": w.Checkbox(
                value=False,
                description="pick after fine-tuning (slower)",
                tooltip="fine-tune every candidate allocation (epochs below); keep the best on validation",
                indent=False,
            ),
            "layer": w.Combobox(
                options=layer_names, value=layer_names[0], description="layer", ensure_option=False
            ),
            "epochs": w.IntSlider(value=2, min=1, max=10, description="epochs"),
            "finetune": w.Button(description=FINE_TUNE, icon="play"),
        }

    @property
    def widget(self) -> w.Widget:
        c = self.controls
        return w.VBox(
            [
                w.HBox([c["mode"], c["criterion"]]),
                w.HBox([c["scope"], c["granularity"]]),
                w.HBox(
                    [
                        c["epsilon"],
                        c["epsilon_text"],
                        c["sparsity"],
                        c["goal"],
                        c["goal_value"],
                        c["goal_tune"],
                        c["layer"],
                    ]
                ),
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
        c = self.controls
        for name in ("mode", "criterion", "scope", "granularity"):
            self._observe(c[name], lambda _: self.on_setting_change())
        self._observe(c["epsilon"], lambda _: self.on_threshold_change())
        self._observe(c["sparsity"], lambda _: self.on_threshold_change())
        self._observe(c["epsilon_text"], lambda change: self.on_typed_epsilon(change["new"]))
        self._observe(c["goal"], lambda _: self.on_goal_change())
        self._observe(c["goal_value"], lambda _: self.on_setting_change())
        self._observe(c["goal_tune"], lambda _: self.on_setting_change())
        self._observe(c["epochs"], lambda _: self.on_epochs_change())
        self._observe(c["layer"], lambda _: self.on_layer_change())
        c["finetune"].on_click(lambda _: self.on_finetune())

    def _observe(self, control: w.Widget, handler) -> None:
        control.observe(handler, names="value")
        self._handlers.append((control, handler))

    @contextlib.contextmanager
    def _quiet(self):
        """Copy values into the controls without their callbacks firing."""
        for control, handler in self._handlers:
            control.unobserve(handler, names="value")
        try:
            yield
        finally:
            for control, handler in self._handlers:
                control.observe(handler, names="value")

    def _set_controls(self, **values) -> None:
        with self._quiet():
            for name, value in values.items():
                self.controls[name].value = value

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
        self.curves.cancel()  # the old setting's curve is obsolete, and the progress bar is needed
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
            self.progress.max, self.progress.value, self.progress.layout.display = total, done, None

        try:
            yield report
        finally:
            self.progress.layout.display = "none"

    @_reports_errors
    def on_threshold_change(self) -> None:
        """ε or target sparsity moved: answer (quick, then exact); only moving artists redraw.

        In the background the whole answer runs on the worker, so the kernel takes the slider's
        next value at once; the worker skips values overtaken meanwhile, so a drag (continuous
        updates) shows as many frames as the machine can draw and always ends on the last value.
        """
        spec = self.spec()
        if spec.epsilon is not None:
            self._set_controls(epsilon_text=f"{spec.epsilon:.3g}")
        if self.points.background:
            self._answer_later(spec)
        else:
            self._answer(spec)

    @_reports_errors
    def on_typed_epsilon(self, text: str) -> None:
        """A typed ε goes to the engine as typed; the slider only shows it (clamped to its range)."""
        if not text.strip():
            return
        try:
            value = float(text)
        except ValueError:
            raise WorkbenchError(f"ε must be a number such as 3e-4, got {text!r}") from None
        spec = replace(self.spec(), epsilon=value, sparsity=None)
        self._answer(spec)
        self._set_controls(epsilon=value)

    @_reports_errors
    def on_goal_change(self) -> None:
        """Another goal: its knob's range and default come from the explorer, then the allocation."""
        self._set_goal_knob(self.controls["goal"].value)
        self.on_setting_change()

    def _set_goal_knob(self, goal: str, value: float | None = None) -> None:
        """Copy ``goal``'s knob range (``GOAL_KNOBS``) and ``value`` (default: its own) into the controls."""
        low, high, step, default, label = GOAL_KNOBS[goal]
        slider = self.controls["goal_value"]
        self.controls["goal_tune"].disabled = not picks_after_fine_tuning(goal)
        with self._quiet():
            self.controls["goal"].value = goal
            slider.max = max(high, slider.max)  # widen first: ipywidgets refuses min > max
            slider.min, slider.max, slider.step = low, high, step
            slider.value, slider.description = default if value is None else value, label

    @_reports_errors
    def on_layer_change(self) -> None:
        """Show the chosen layer's mask; an unknown name gives a message listing the layers."""
        if self.layer not in self.explorer.layers:
            raise WorkbenchError(f"layer must be one of {self.explorer.layers}, got {self.layer!r}")
        with self.points.lock:
            self.image.value = self.figure.show_layer(self.point, self.layer)
        self.show_message("")

    def on_epochs_change(self) -> None:
        """Goal mode picking after fine-tuning uses these epochs: its answer is asked again."""
        c = self.controls
        if c["mode"].value == "goal" and c["goal_tune"].value and picks_after_fine_tuning(c["goal"].value):
            self.on_setting_change()

    def _recipe(self) -> Recipe:
        """The fine-tune the controls ask for: the fine-tune button's, and goal mode's candidates'."""
        return Recipe(epochs=self.controls["epochs"].value, learning_rate=5e-4)

    @_reports_errors
    def on_finetune(self) -> None:
        """Fine-tune the current mask and mark the recovered point.

        In the background the button turns into "cancel fine-tune" while a bar beside it counts the
        training batches; the rest of the dashboard stays live. A click on it stops the fit at the
        next batch and nothing is marked.
        """
        if self.fine_tune_running():
            self._cancel_fine_tune("fine-tune cancelled")
            return
        if self._goal_is_fine_tuning():  # two Keras fits at once would share the CPU and the random seed
            raise WorkbenchError(
                "goal mode is picking after fine-tuning in the background (its table, then a fine-tune "
                "of each candidate: see the progress bar); fine-tune this mask once it has answered, or "
                "change a setting to stop it"
            )
        recipe, point = self._recipe(), self.point
        self._tuning_ticket = ticket = self.tuning.begin()
        self._show_fine_tune_started()

        def work(ticket: Ticket) -> tuple[Point, dict] | Exception:
            def report(done: int, total: int) -> None:
                ticket.check()  # a cancel or a newer fine-tune stops the fit here
                bar = self.tune_progress
                bar.max, bar.value = max(total, 1), done
                bar.description = "evaluating" if done >= total else "fine-tuning"

            try:
                callbacks = [ReportBatches(report)]
                metrics, _ = self.explorer.fine_tuned(point, recipe, progress=False, callbacks=callbacks)
            except Cancelled:
                raise
            except Exception as err:  # noqa: BLE001 - shown in the message line, also from the background
                return err
            return point, metrics

        self.tuning.submit(ticket, work, functools.partial(self._show_fine_tuned, recipe))

    def fine_tune_running(self) -> bool:
        """Whether the fine-tune button's fine-tune is running in the background and still wanted."""
        return _still_running(self._tuning_ticket, self.tuning)

    def _cancel_fine_tune(self, why: str) -> None:
        self.tuning.cancel()
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

    def _show_fine_tuned(self, recipe: Recipe, answer: tuple[Point, dict] | Exception) -> None:
        self._show_fine_tune_ended()
        if isinstance(answer, Exception):
            self.show_message(f"{type(answer).__name__}: {answer}", error=True)
            return
        point, metrics = answer
        self.recovered.append((point.result.sparsity, metrics))
        self.image.value = self.figure.mark(point.result.sparsity, metrics)
        self.show_message(
            f"fine-tuned {recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''}: "
            f"accuracy {_number(metrics['accuracy'])}, "
            f"AUC {_number(metrics['auc'])}"
        )

    # --- answering ----------------------------------------------------------------------------

    def _show_setting(self, setting: Setting, given: Point | None = None, choose_layer: bool = False) -> None:
        """Copy a setting into the controls, show its point, then start its curve.

        The first figure is drawn before a curve starts computing in the background, so the two
        do not compete for the CPU. ``choose_layer`` shows the most pruned layer's mask (at open).
        """
        self.setting = setting
        spec = setting.spec
        slider = self.controls["epsilon"]
        with self._quiet():
            slider.max = max(setting.decades[1], slider.max)  # widen first: ipywidgets refuses min > max
            slider.min, slider.max = setting.decades
            slider.description = f"ε on {setting.threshold_name}"
            if spec.epsilon is not None:
                slider.value = spec.epsilon
                self.controls["epsilon_text"].value = f"{spec.epsilon:.3g}"
        self._show_knobs("epsilon" if spec.sparsity is None else "sparsity")
        self.curves.cancel()
        self.curve = self.explorer.cached_curve(spec)
        if self.curve is None and not self.curves.background:
            self._start_curve(spec)  # inline: the figure is then drawn once, with its curve
        self._answer(spec, given=given, redraw=True, choose_layer=choose_layer)
        # after the first figure, before the curve: so that the first slider move need not trace
        self.points.prepare(self.explorer.warm_up)
        if self.curve is None:
            self._start_curve(spec)

    def _show_knobs(self, mode: str) -> None:
        """Show the knobs of ``mode`` ("epsilon", "sparsity" or "goal") and hide the others."""
        knobs = {
            "epsilon": ("epsilon", "epsilon_text"),
            "sparsity": ("sparsity",),
            "goal": ("goal", "goal_value", "goal_tune"),
        }
        for owner, names in knobs.items():
            for name in names:
                self.controls[name].layout.display = None if owner == mode else "none"
        self.controls["scope"].layout.display = "none" if mode == "goal" else None  # allocations are per row

    def _answer_goal(self) -> None:
        """Ask the explorer for the goal's point; its first sensitivity table computes with a progress bar.

        The table is slow the first time, so in the background the dashboard stays live meanwhile;
        any other setting change cancels it between grid columns (finished cells stay on disk).
        """
        c = self.controls
        goal, value = c["goal"].value, c["goal_value"].value
        granularity = c["granularity"].value if goal == "tolerance" else None  # budgets imply theirs
        self._show_knobs("goal")
        self.points.cancel()  # an exact answer still refining belongs to the old mode
        ticket = self.curves.begin()
        self.progress.description = "sensitivity"
        self.progress.value, self.progress.layout.display = 0, None

        tune = c["goal_tune"].value and picks_after_fine_tuning(goal)
        recipe = self._recipe() if tune else None
        if tune and self.fine_tune_running():  # two fits at once would share the CPU and the random seed
            self._cancel_fine_tune("fine-tune of the mask cancelled: goal mode fine-tunes its candidates")

        def work(ticket: Ticket) -> GoalPoint | WorkbenchError:
            def report(done: int, total: int, what: str = "sensitivity") -> None:
                ticket.check()
                self.progress.description = "fine-tuning" if what == "fine-tune" else "sensitivity"
                self.progress.max, self.progress.value = total, done

            try:
                return self.explorer.goal_point(
                    goal,
                    value,
                    criterion=c["criterion"].value,
                    granularity=granularity,
                    grid=self.goal_grid,
                    recipe=recipe,
                    progress=report,
                )
            except (
                WorkbenchError
            ) as err:  # a budget out of reach or a bad value: a message, also from the background
                return err

        self._goal_tuning = ticket if tune and self.curves.background else None
        self.curves.submit(ticket, work, self._show_goal)

    def _goal_is_fine_tuning(self) -> bool:
        """Whether goal mode's background answer, still wanted, fine-tunes candidates and is not done."""
        return _still_running(self._goal_tuning, self.curves)

    def _show_goal(self, answer: GoalPoint | WorkbenchError) -> None:
        self.progress.layout.display = "none"
        if isinstance(answer, WorkbenchError):
            self.show_message(_refusal(answer), error=True)
            return
        self.point = answer
        self._set_controls(granularity=answer.spec.granularity)
        layer = self.layer if self.layer in self.explorer.layers else self.explorer.layers[0]
        self.image.value = self.figure.draw_goal(answer, layer)
        self._update_text()

    def _answer(
        self, spec: PruneSpec, *, given: Point | None = None, redraw: bool = False, choose_layer: bool = False
    ) -> None:
        """Show ``given`` or a quick answer now; refine it to the exact point in the background.

        A redraw (a new setting) may show the masks first: their metrics then follow on the
        worker, as for a slider move (an estimate, then the exact answer).
        """
        if given is not None:
            first = given
        elif self.points.background:
            first = self.explorer.first_answer(spec, masks_if_slow=redraw)
        else:
            first = self.explorer.point(spec)
        ticket = self.points.begin()  # only now: a spec the engine refuses leaves older work running
        if choose_layer:
            self._set_controls(layer=first.most_pruned_layer())  # the layer with the most to see
        with self.points.lock:
            self._show_point(first, redraw=redraw)
        if first.pending:
            self._answer_later(spec)
        elif not first.exact:
            self.points.submit(ticket, lambda t: self.explorer.point(spec, between=t.check), self._show_exact)

    def _answer_later(self, spec: PruneSpec) -> None:
        """Answer on the worker (a slider move, or a new setting shown masks first): the quick
        answer, then the exact one if that was not."""

        def work(ticket: Ticket) -> Point | None:
            try:
                first = self.explorer.first_answer(spec)
            except ValueError as err:
                self.show_message(f"ValueError: {err}", error=True)
                return None
            with self.points.lock:
                ticket.check()
                self._show_point(first, redraw=False)
            return None if first.exact else self.explorer.point(spec, between=ticket.check)

        self.points.submit(self.points.begin(), work, self._show_exact)

    def _show_exact(self, point: Point | None) -> None:
        if point is not None:
            self._show_point(point, redraw=False)

    def _show_point(self, point: Point, *, redraw: bool) -> None:
        self.point = point
        if redraw:
            self._draw()
        else:
            self.image.value = self.figure.move(point, self.layer)
        self._update_text()

    def _draw(self, curve: pd.DataFrame | None = None) -> None:
        # before its curve is computed the figure shows the curve's grid blank (or filled in so
        # far), so the layout is final and the finished curve only updates the artists in place
        if curve is None:
            curve = self.curve if self.curve is not None else self.explorer.placeholder_curve(self.point.spec)
        layer = self.layer if self.layer in self.explorer.layers else self.explorer.layers[0]
        self.image.value = self.figure.draw(
            curve,
            self.point,
            self.explorer.dense_metrics,
            x=self.grid_key,
            layer=layer,
            threshold_name=self.setting.threshold_name,
        )

    def _start_curve(self, spec: PruneSpec) -> None:
        """Compute ``spec``'s curve (in the background) with a progress bar."""
        ticket = self.curves.begin()
        self.progress.description = f"curve {spec.criterion}"
        self.progress.value, self.progress.layout.display = 0, None
        work = functools.partial(self._compute_curve, spec)
        if self.curves.background:
            self.curves.submit(ticket, work, functools.partial(self._curve_ready, spec))
        else:
            self.curve = work(ticket)
            self.progress.layout.display = "none"

    def _compute_curve(self, spec: PruneSpec, ticket: Ticket) -> pd.DataFrame:
        def report(done: int, total: int) -> None:
            ticket.check()  # a newer setting stops this curve between points
            self.progress.max, self.progress.value = total, done

        drawn = [time.perf_counter()]

        def fill_in(table: pd.DataFrame) -> None:  # the curve so far, every REFILL_SECONDS
            if time.perf_counter() - drawn[0] < self.REFILL_SECONDS:
                return
            with self.curves.lock:
                if ticket.current and self._showing(spec):
                    self._draw(table)
            drawn[0] = time.perf_counter()

        partial = fill_in if self.curves.background else None
        return self.explorer.curve(spec, progress=report, between=ticket.check, partial=partial)

    def _showing(self, spec: PruneSpec) -> bool:
        """Whether the shown point has ``spec``'s curve (same criterion, scope, granularity, mode)."""
        key = self.explorer.curve_key
        return self.point is not None and key(self.point.spec) == key(spec)

    def _curve_ready(self, spec: PruneSpec, curve: pd.DataFrame) -> None:
        self.curve = curve
        self.progress.layout.display = "none"
        if self._showing(spec):  # else the point's answer draws it
            self._draw()

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
        with self.points.lock:
            self.image.value = self.figure.png()
        return self.image.value

    def wait(self, timeout: float | None = None) -> None:
        """Block until background work (curve, exact answer, fine-tune) is done (scripts, benchmarks)."""
        for future in (self.points.preparing, self.curves.future, self.points.future, self.tuning.future):
            if future is not None:
                future.result(timeout)


def _still_running(ticket: Ticket | None, runner: Latest) -> bool:
    """Whether ``ticket``'s background work is still wanted and not done: while it is the newest,
    ``runner.future`` is its work."""
    future = runner.future
    return ticket is not None and ticket.current and future is not None and not future.done()


def _refusal(err: WorkbenchError) -> str:
    """A refusal as the dashboard shows it: a goal out of reach says so; other refusals name their kind."""
    return f"out of reach: {err}" if isinstance(err, UnreachableGoal) else f"{type(err).__name__}: {err}"


def status(point: Point) -> str:
    """'exact', 'estimate (n=96, ±0.04)' with the AUC's interval half-width, the curve point shown,
    or that the metrics of a point shown masks first are coming."""
    if point.exact:
        return "exact"
    if point.nearest is not None:
        return f"metrics of the curve's nearest point ({point.nearest:.3g}), exact answer coming"
    if point.pending:
        return "the new setting's masks; its metrics are coming"
    return f"estimate (n={point.n}, ±{point.interval:.2f})"


def readout_html(point: Point, dense: dict) -> str:
    """Sparsity, ε and status, then dense and pruned metrics side by side."""
    m, result, spec = point.metrics, point.result, point.spec
    if isinstance(point, GoalPoint):
        setting = goal_text(point)
    elif spec.epsilon is not None:
        setting = f"ε = {spec.epsilon:.3g}"
    else:
        setting = f"target {spec.sparsity:.0%}"
    guard = f" · guard kept a weight in: {_first_few(result.guarded)}" if result.guarded else ""
    changed = "…" if point.pending else point.row()["changed"]
    of = f" of {point.n}" if point.n else ""  # an estimate's count is of its subset
    head = (
        f"<b>sparsity {result.sparsity:.1%}</b> at {setting} · {status(point)} · "
        f"{changed}{of} test predictions changed{html.escape(guard)}"
    )
    cells = "".join(f"<th style='padding:0 8px'>{name}</th>" for name in SIDE_BY_SIDE)
    number = (lambda _: "…") if point.pending else _number
    rows = "".join(
        f"<tr><td>{label}</td>"
        + "".join(f"<td style='padding:0 8px'>{show(values.get(name))}</td>" for name in SIDE_BY_SIDE)
        + "</tr>"
        for label, values, show in (("dense", dense, _number), ("pruned", m, number))
    )
    return f"{head}<table><tr><th></th>{cells}</tr>{rows}</table>{evidence_html(m)}"


def _first_few(names, shown: int = 3) -> str:
    """'a, b, c and 14 more': a backbone's guarded layers ran to four lines and moved the table."""
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def goal_text(point: GoalPoint) -> str:
    """The goal and what the allocation achieved: FLOPs and parameter fractions, validation AUC drop."""
    a = point.allocation
    goal = f"AUC drop ≤ {a.value:g}" if a.goal == "tolerance" else f"{a.goal} ≤ {a.value:.0%} of dense"
    text = (
        f"goal {goal} ({a.granularity}, {point.spec.criterion}): achieved FLOPs {a.flops:.1%} and "
        f"params {a.params:.1%} of dense, validation AUC drop {a.val_drop:+.3f}; answer: {a.candidate}"
    )
    if point.sensitivity is not None and point.sensitivity.left_out:
        text += (
            f" (the validation AUC leaves out labels {list(point.sensitivity.left_out)}, which hold one"
            " class in validation)"
        )
    if a.tuned_val_auc is not None:
        others = ", ".join(f"{c.candidate} {c.tuned_val_auc:.3f}" for c in a.measured)
        text += (
            f", the best validation AUC after fine-tuning ({others}); the metrics below are the pruned"
            " model's before fine-tuning"
        )
    return text


def evidence_html(m: dict) -> str:
    """The clinical evidence line: pruned AUC with its interval, the paired difference, the verdict."""
    if "noninferiority" not in m:  # a curve point: no intervals
        return ""
    if m["auc_difference"] is None:
        return "<div>AUC difference from dense: undefined (a class is missing from the test images)</div>"
    verdict = m["noninferiority"]
    colour = {"non-inferior": "green", "inferior": "crimson"}.get(verdict, "darkorange")
    decisions = (  # multi-label: a threshold per label, in the per-label table
        f" · threshold {html.escape(str(m['rule']))} · McNemar p = {_number(m['mcnemar_p'])}"
        if "rule" in m
        else ""
    )
    mean = "mean over labels: " if "rule" not in m else ""
    return (
        f"<div>{mean}AUC {_number(m['auc'])} [{_number(m['auc_low'])}, {_number(m['auc_high'])}] · "
        f"ΔAUC vs dense {m['auc_difference']:+.3f} [{m['auc_difference_low']:+.3f}, "
        f"{m['auc_difference_high']:+.3f}], p = {_number(m['auc_difference_p'])} · "
        f"<b style='color:{colour}'>{verdict}</b> at δ = {m['margin']:g}{decisions}</div>"
    )


def table_html(table: pd.DataFrame) -> str:
    """``table`` as HTML, floats to 3 significant digits, a missing value (a bias's threshold: no
    criterion prunes it) as "—". pandas' ``to_html`` took 0.17 s for DenseNet121's ~370 rows
    (kernels, biases, BN) on every answer; this takes a few ms."""

    def cell(value) -> str:
        if isinstance(value, float):
            value = "—" if value != value else f"{value:.3g}"
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in table.columns)
    body = "".join(f"<tr>{''.join(map(cell, row))}</tr>" for row in table.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _number(value) -> str:
    return "undefined" if value is None else f"{value:.3g}" if abs(value) < 1e-3 and value else f"{value:.3f}"
