"""The fine-tune panel: the button, its epochs and bar, and the recovered points it marks.

Glue like the dashboard that holds it: a click asks the scheduler's ``fine_tune`` (a second click
its ``cancel_fine_tune``) and copies the answer into the button, the bar, the message line and the
figure's mark. The recipe and the rule that two fits must not run at once are the scheduler's.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as w

from workbench.core.errors import WorkbenchError
from workbench.explore.points import Point
from workbench.explore.scheduler import Scheduler
from workbench.view import progress_bars
from workbench.view.controls import FINE_TUNE, progress_bar
from workbench.view.figure import ExplorerFigure
from workbench.view.guard import reports_errors
from workbench.view.readouts import number


class FineTunePanel:
    """Fine-tune the point a dashboard shows, and mark each recovered point on its figure.

    Args:
        scheduler: runs the fine-tune on its own worker.
        controls: the dashboard's controls; the panel owns ``finetune`` (button), ``epochs`` and
            ``recovery`` (a name in ``prune.recovery.RECOVERIES``).
        point: gives the point shown now, whose masks are fine-tuned.
        figure, image: the figure that marks a recovered point and the Image showing it.
        show_message: the dashboard's message line.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        controls: dict[str, w.Widget],
        *,
        point: Callable[[], Point],
        figure: ExplorerFigure,
        image: w.Image,
        show_message: Callable[..., None],
    ):
        self.scheduler, self.point, self.figure, self.image = scheduler, point, figure, image
        self.show_message = show_message
        self.button, self.epochs, self.recovery = (
            controls["finetune"],
            controls["epochs"],
            controls["recovery"],
        )
        self.bar = progress_bar()
        self.recovered: list[tuple[float, dict]] = []  # (sparsity, metrics) of each fine-tuned point
        self.button.on_click(lambda _: self.on_click())

    @property
    def widget(self) -> w.Widget:
        return w.HBox([self.epochs, self.recovery, self.button, self.bar])

    @reports_errors
    def on_click(self) -> None:
        """Fine-tune the shown mask and mark the recovered point; a second click cancels it.

        In the background the button turns into "cancel fine-tune" while the bar beside it counts
        the training batches; the rest of the dashboard stays live.
        """
        if self.running():
            self.cancel("fine-tune cancelled")
            return

        def report(done: int, total: int) -> None:
            progress_bars.fill(self.bar, done, total)
            self.bar.description = "evaluating" if done >= total else "fine-tuning"

        recovery = self.recovery.value

        def show(recipe, answer) -> None:
            self._show_fine_tuned(recipe, answer, recovery)

        self._show_started()  # before: a quick fit may end before the call returns
        try:
            self.scheduler.fine_tune(self.point(), self.epochs.value, report, show, recovery)
        except WorkbenchError:
            self._show_ended()
            raise

    def running(self) -> bool:
        """Whether the button's fine-tune is running in the background and still wanted."""
        return self.scheduler.fine_tune_running()

    def cancel(self, why: str) -> None:
        """Stop the button's fine-tune, restore the button and say ``why``."""
        self.scheduler.cancel_fine_tune()
        self._show_ended()
        self.show_message(why)

    def _show_started(self) -> None:
        self.button.description, self.button.icon = "cancel fine-tune", "stop"
        progress_bars.start(self.bar, "fine-tuning")
        self.show_message("")

    def _show_ended(self) -> None:
        self.button.description, self.button.icon = FINE_TUNE, "play"
        progress_bars.hide(self.bar)

    def _show_fine_tuned(self, recipe, answer: tuple[Point, dict] | Exception, recovery: str) -> None:
        self._show_ended()
        if isinstance(answer, Exception):
            self.show_message(f"{type(answer).__name__}: {answer}", error=True)
            return
        point, metrics = answer
        self.recovered.append((point.result.sparsity, metrics))
        self.image.value = self.figure.mark(point.result.sparsity, metrics)
        self.show_message(
            f"fine-tuned {recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''}"
            f"{'' if recovery == 'one-shot' else f' ({recovery})'}: "
            f"accuracy {number(metrics['accuracy'])}, "
            f"AUC {number(metrics['auc'])}"
        )
