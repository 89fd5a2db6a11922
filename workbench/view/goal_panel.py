"""The goal panel: the goal, its knob and "pick after fine-tuning", answered by the scheduler.

Glue like the dashboard that holds it: a goal change copies the goal's knob range into the
controls (``Wiring.set_goal_knob``), the scheduler's ``goal`` answers with a ``GoalPoint`` or the
refusal, and the dashboard shows the point. Which granularity a budget implies and which recipe a
goal fine-tunes with are the engine's (``workbench.explore.goals``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import ipywidgets as w

from workbench.analysis.budget import picks_after_fine_tuning
from workbench.core.errors import WorkbenchError
from workbench.explore.points import GoalPoint
from workbench.explore.scheduler import Scheduler
from workbench.view import progress_bars
from workbench.view.controls import Wiring
from workbench.view.finetune_panel import FineTunePanel
from workbench.view.guard import reports_errors
from workbench.view.readouts import refusal


class GoalPanel:
    """Ask the scheduler for the goal the controls show, and hand its point to the dashboard.

    Args:
        scheduler: answers goals in the background (or at once, without a background).
        wiring: the dashboard's controls and their callbacks; the panel observes ``goal`` and ``epochs``.
        progress: the dashboard's progress bar (sensitivity table, candidates' fine-tunes).
        grid: the sparsity grid of the sensitivity table behind the goals.
        fine_tune: the fine-tune panel, whose fit a goal that fine-tunes cancels.
        ask: the dashboard's "a setting changed" callback (asks this panel again in goal mode).
        show_point: shows a goal's point in the figure, the readout and the table.
        show_message: the dashboard's message line.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        wiring: Wiring,
        progress: w.IntProgress,
        grid,
        *,
        fine_tune: FineTunePanel,
        ask: Callable[[], None],
        show_point: Callable[[GoalPoint], None],
        show_message: Callable[..., None],
    ):
        self.scheduler, self.wiring, self.progress, self.grid = scheduler, wiring, progress, grid
        self.fine_tune, self.ask, self.show_point = fine_tune, ask, show_point
        self.show_message = show_message
        self.controls = wiring.controls
        wiring.observe("goal", lambda _: self.on_goal_change())
        wiring.observe("epochs", lambda _: self.on_epochs_change())

    @reports_errors
    def on_goal_change(self) -> None:
        """Another goal: its knob's range and default, then the allocation."""
        self.wiring.set_goal_knob(self.controls["goal"].value)
        self.ask()

    def on_epochs_change(self) -> None:
        """Goal mode picking after fine-tuning uses these epochs: its answer is asked again."""
        c = self.controls
        if c["mode"].value == "goal" and c["goal_tune"].value and picks_after_fine_tuning(c["goal"].value):
            self.ask()

    def open(self, point: GoalPoint) -> None:
        """Show ``point`` as the engine computed it, with the controls in goal mode."""
        self.wiring.set(mode="goal")
        self.wiring.set_goal_knob(point.allocation.goal, point.allocation.value)
        self.wiring.show_knobs("goal")
        self._answered(point)

    def answer(self) -> None:
        """Ask for the goal's point; its first sensitivity table computes with a progress bar (in
        the background the dashboard stays live, and another setting cancels it)."""
        c = self.controls
        self.wiring.show_knobs("goal")
        progress_bars.start(self.progress, "sensitivity")
        options = dict(
            criterion=c["criterion"].value,
            granularity=c["granularity"].value,
            grid=self.grid,
            tune=c["goal_tune"].value,
            epochs=c["epochs"].value,
        )

        def stage(name: str) -> None:
            self.progress.description = "fine-tuning" if name == "fine-tune" else "sensitivity"

        report = functools.partial(progress_bars.fill, self.progress)
        goal, value = c["goal"].value, c["goal_value"].value
        if self.scheduler.goal(goal, value, options, report, stage, self._answered):
            self.fine_tune.cancel("fine-tune of the mask cancelled: goal mode fine-tunes its candidates")

    def _answered(self, answer: GoalPoint | WorkbenchError) -> None:
        progress_bars.hide(self.progress)
        if isinstance(answer, WorkbenchError):
            self.show_message(refusal(answer), error=True)
            return
        self.show_point(answer)
