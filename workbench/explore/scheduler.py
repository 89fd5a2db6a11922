"""The answer scheduler: what runs, where, and what a newer request cancels; no widgets.

The policy of an interactive explorer, in one place:

- **Estimate, then exact; newest wins.** A control change is answered at once with the quickest
  good answer (``Estimates.first_answer``: the known point, the cached curve's nearest point, the
  masks alone, or an estimate on a subset), then refined to the exact point. A newer request
  cancels older work, and a stale answer is never shown (``Latest``).
- **The user's input outranks background work.** Answers run on a worker of their own, never
  queued behind a curve, a goal's table or a fine-tune; and while an answer computes, background
  work waits at its next batch (``Gate``), so the two do not share the CPU.
- **One cancellation.** Work takes a ``Progress`` (``workbench.core.progress``); a ticket's
  ``progress()`` raises ``Cancelled`` there once the ticket is overtaken (and, in the background,
  first waits while an answer computes).

A view hands each request the callbacks that show its answers; callbacks run holding ``lock``,
which the view's own drawing takes too, so a stale answer never overwrites a newer figure. With
``background=False`` everything runs inline (tests and headless runs).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from workbench.core.errors import Cancelled, WorkbenchError
from workbench.core.progress import Progress
from workbench.explore.goals import fine_tune_recipe, goal_granularity, goal_recipe
from workbench.explore.points import Point
from workbench.model.train import ReportBatches
from workbench.prune.pruning import PruneSpec

log = logging.getLogger(__name__)


class Gate:
    """Holds background work at its next batch while the user's answer computes."""

    def __init__(self):
        self._busy = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def foreground(self):
        """Mark the block as the user's work: background work waits until it ends."""
        with self._changed:
            self._busy += 1
        try:
            yield
        finally:
            with self._changed:
                self._busy -= 1
                self._changed.notify_all()

    def wait(self, ticket: Ticket) -> None:
        """Wait while foreground work runs (a cancelled ticket stops waiting at once)."""
        with self._changed:
            while self._busy and ticket.current:
                self._changed.wait(0.05)


class Ticket:
    """One request to a ``Latest`` runner; ``check()`` raises ``Cancelled`` once it is overtaken."""

    def __init__(self, owner: Latest, generation: int, gate: Gate | None = None):
        self.owner, self.generation, self.gate = owner, generation, gate

    @property
    def current(self) -> bool:
        return self.owner.generation == self.generation

    def check(self) -> None:
        """Yield to the user's work (background tickets), then raise ``Cancelled`` if overtaken."""
        if self.gate is not None:
            self.gate.wait(self)
        if not self.current:
            raise Cancelled(f"request {self.generation} overtaken by {self.owner.generation}")

    def progress(self, report: Progress | None = None) -> Progress:
        """The Progress to hand this request's work: ``check()``, then ``report`` (if given)."""

        def progress(done: int, total: int) -> None:
            self.check()
            if report is not None:
                report(done, total)

        return progress


class Latest:
    """Run the newest request's work on a worker; older requests are cancelled or dropped.

    ``begin()`` starts a request (cancelling older ones) and returns its ticket. ``submit(ticket,
    work, done)`` runs ``work(ticket)`` on the worker and then, holding ``lock``, calls
    ``done(result)`` only if the ticket is still the newest. Tickets of a runner with a ``gate``
    wait in ``check()`` while foreground work runs.

    With ``background=False`` work runs inline, which is how tests and headless runs use it.
    """

    def __init__(
        self,
        *,
        background: bool = True,
        executor: ThreadPoolExecutor | None = None,
        lock=None,
        gate: Gate | None = None,
    ):
        self.generation = 0
        self.background, self.gate = background, gate
        self.lock = lock if lock is not None else threading.RLock()
        self._executor = executor if executor is not None else (_worker("background") if background else None)
        self.future: Future | None = None
        self.preparing: Future | None = None

    def begin(self) -> Ticket:
        with self.lock:
            self.generation += 1
            return Ticket(self, self.generation, self.gate)

    def cancel(self) -> None:
        """Cancel whatever is running or queued (a later ``begin`` does the same)."""
        self.begin()

    def running(self, ticket: Ticket | None) -> bool:
        """Whether ``ticket``'s work is still wanted and not done (background only)."""
        future = self.future
        return ticket is not None and ticket.current and future is not None and not future.done()

    def submit(self, ticket: Ticket, work: Callable[[Ticket], object], done: Callable[[object], None]):
        """Run ``work`` for ``ticket`` and hand its result to ``done`` if nothing newer came meanwhile."""
        if not self.background:
            return self._run(ticket, work, done)
        self.future = self._executor.submit(self._run, ticket, work, done)
        return self.future

    def prepare(self, work: Callable[[], object]) -> None:
        """Queue one-off preparation on the worker (background only); ``preparing`` is its future."""
        if self.background:
            self.preparing = self._executor.submit(work)

    def _run(self, ticket: Ticket, work, done):
        try:
            ticket.check()
            result = work(ticket)
        except Cancelled:
            log.debug("dropped overtaken request %d", ticket.generation)
            return None
        except Exception:
            if not self.background:
                raise
            log.exception("background work failed")
            return None
        with self.lock:
            if ticket.current:
                done(result)
        return result


class Scheduler:
    """Answers, curves, goals and fine-tunes of one explorer, for one view.

    Args:
        explorer: the session (``workbench.explore.session.Explorer``) every request asks.
        background: answer quickly and refine on workers (interactive use); False runs every
            request inline and exactly (tests, headless runs).
        refill_seconds: a curve computing in the background shows its filled-in part at most
            this often (each redraw takes CPU from the curve it shows).
    """

    def __init__(self, explorer, *, background: bool = False, refill_seconds: float = 1.5):
        self.explorer, self.background, self.refill_seconds = explorer, background, refill_seconds
        self.lock = threading.RLock()  # drawing: answers, curves and the view's own take turns
        self.gate = Gate()
        answers = _worker("answers") if background else None
        self.answers = Latest(background=background, executor=answers, lock=self.lock)
        self.work = Latest(background=background, lock=self.lock, gate=self.gate)  # curves, goals
        # a fine-tune trains a copy on a worker of its own, so answers and curves never queue behind it
        tuner = ThreadPoolExecutor(1, thread_name_prefix="workbench-fine-tune") if background else None
        self.tuning = Latest(background=background, executor=tuner, lock=self.lock, gate=self.gate)
        self._tuning: Ticket | None = None  # the fine-tune button's request
        self._goal_tuning: Ticket | None = None  # a goal's request that fine-tunes candidates

    # --- answers ------------------------------------------------------------------------------

    def answer(self, spec: PruneSpec, show: Callable[[Point, bool], None], *, given: Point | None = None):
        """A new setting (or the opening figure): show a first answer now, from the caller's thread.

        The first answer is ``given``, else (background) the masks when the point's pass is over
        budget, else the quick answer; inline, the exact point. ``show(point, redraw)`` draws it
        with ``redraw=True``; its refinements follow with ``redraw=False``.
        """
        if given is not None:
            first = given
        elif self.background:
            first = self.explorer.estimates.first_answer(spec, masks_if_slow=True)
        else:
            first = self.explorer.point(spec)
        ticket = self.answers.begin()  # only now: a spec the engine refuses leaves older work running
        with self.lock:
            show(first, True)
        if first.pending:
            self.move(spec, show)
        elif not first.exact:
            work = functools.partial(self._exact, spec)
            self.answers.submit(ticket, work, lambda point: show(point, False))

    def move(self, spec: PruneSpec, show: Callable[[Point, bool], None]) -> None:
        """A slider move: the whole answer on the answers' worker, so the caller is free at once.

        First the quickest answer (the masks alone while no curve is cached and a pass is over
        budget), then an estimate if that was the masks, then the exact point; the worker skips
        values overtaken meanwhile, so a drag always ends on its last value.
        """
        if not self.background:
            with self.lock:
                show(self.explorer.point(spec), False)
            return

        def work(ticket: Ticket) -> Point | None:
            with self.gate.foreground():
                estimates = self.explorer.estimates
                first = estimates.first_answer(spec, masks_if_slow=True)
                self._show_current(ticket, first, show)
                if first.pending:
                    first = estimates.first_answer(spec)
                    self._show_current(ticket, first, show)
                return None if first.exact else self.explorer.point(spec, progress=ticket.progress())

        self.answers.submit(self.answers.begin(), work, lambda point: point and show(point, False))

    def _exact(self, spec: PruneSpec, ticket: Ticket) -> Point:
        with self.gate.foreground():
            return self.explorer.point(spec, progress=ticket.progress())

    def _show_current(self, ticket: Ticket, point: Point, show) -> None:
        with self.lock:
            ticket.check()
            show(point, False)

    def warm_up(self) -> None:
        """Trace the estimates' pass on the answers' worker, so that the first move need not."""
        self.answers.prepare(self.explorer.warm_up)

    # --- background work ----------------------------------------------------------------------

    def curve(self, spec: PruneSpec, progress: Progress, show: Callable, done: Callable) -> None:
        """Compute ``spec``'s curve (cancelling any older curve or goal), reporting to ``progress``;
        ``show(spec, table)`` gets the part filled in so far every ``refill_seconds`` (background
        only); ``done(table)`` the finished curve."""
        drawn = [time.perf_counter()]

        def fill_in(table) -> None:
            if time.perf_counter() - drawn[0] >= self.refill_seconds:
                with self.lock:
                    show(spec, table)
                drawn[0] = time.perf_counter()

        def work(ticket: Ticket):
            partial = fill_in if self.background else None
            return self.explorer.curve(spec, progress=ticket.progress(progress), partial=partial)

        self.work.submit(self.work.begin(), work, done)

    def cancel_background(self) -> None:
        """Cancel the running curve or goal (its setting is obsolete)."""
        self.work.cancel()

    def goal(self, goal: str, value: float, options: dict, progress: Progress, stage, done) -> bool:
        """Ask for ``goal``'s point in the background (cancelling answers, curves and older goals).

        ``options``: criterion, granularity (the one chosen; a budget implies its own), grid,
        tune (pick after fine-tuning) and epochs. ``stage(name)`` names what ``progress`` counts;
        ``done(answer)`` gets the ``GoalPoint`` or the ``WorkbenchError`` that refused it.
        Returns whether a fine-tune of the button's was cancelled for it: two fits at once would
        share the CPU and the random seed.
        """
        options = dict(options)
        recipe = goal_recipe(goal, options.pop("tune"), options.pop("epochs"))
        granularity = goal_granularity(goal, options.pop("granularity"))
        self.answers.cancel()  # an exact answer still refining belongs to the old mode
        ticket = self.work.begin()
        cancelled = recipe is not None and self.fine_tune_running()
        if cancelled:
            self.tuning.cancel()

        def work(ticket: Ticket):
            try:
                return self.explorer.goal_point(
                    goal,
                    value,
                    granularity=granularity,
                    recipe=recipe,
                    progress=ticket.progress(progress),
                    on_stage=stage,
                    **options,
                )
            except WorkbenchError as err:  # a budget out of reach or a bad value: the view says so
                return err

        self._goal_tuning = ticket if recipe is not None and self.background else None
        self.work.submit(ticket, work, done)
        return cancelled

    def fine_tune(
        self, point: Point, epochs: int, progress: Progress, done: Callable, recovery: str = "one-shot"
    ) -> None:
        """Fine-tune a copy at ``point``'s masks (``fine_tune_recipe(epochs)``, by ``recovery``: see
        ``Explorer.fine_tuned``) on its own worker; ``done(recipe, (point, metrics) or the exception)``.

        Raises:
            WorkbenchError: while a goal fine-tunes its candidates (two fits would share the CPU
                and the random seed).
        """
        if self.work.running(self._goal_tuning):
            raise WorkbenchError(
                "goal mode is picking after fine-tuning in the background (its table, then a fine-tune "
                "of each candidate: see the progress bar); fine-tune this mask once it has answered, or "
                "change a setting to stop it"
            )
        recipe = fine_tune_recipe(epochs)
        self._tuning = ticket = self.tuning.begin()

        def work(ticket: Ticket):
            callbacks = [ReportBatches(ticket.progress(progress))]
            try:
                metrics, _ = self.explorer.fine_tuned(
                    point, recipe, recovery=recovery, progress=False, callbacks=callbacks
                )
            except Cancelled:
                raise
            except Exception as err:  # noqa: BLE001 - shown by the view, also from the background
                return err
            return point, metrics

        self.tuning.submit(ticket, work, functools.partial(done, recipe))

    def fine_tune_running(self) -> bool:
        """Whether the button's fine-tune runs in the background and is still wanted."""
        return self.tuning.running(self._tuning)

    def cancel_fine_tune(self) -> None:
        """Stop the button's fine-tune at its next batch; nothing is shown for it."""
        self.tuning.cancel()

    def wait(self, timeout: float | None = None) -> None:
        """Block until every request's work is done (scripts, benchmarks)."""
        for runner in (self.answers, self.work, self.answers, self.tuning):
            for future in (runner.preparing, runner.future):
                if future is not None:
                    future.result(timeout)


_WORKERS: dict[str, ThreadPoolExecutor] = {}


def _worker(name: str) -> ThreadPoolExecutor:
    """One thread per lane for every dashboard of the kernel: "answers" (the user's) and
    "background" (curves and goals), so an answer never queues behind a curve."""
    if name not in _WORKERS:
        _WORKERS[name] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"workbench-{name}")
    return _WORKERS[name]
