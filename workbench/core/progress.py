"""Progress and cancellation: one protocol for a bar, a widget and a test.

The protocol (``Progress``): long work calls ``progress(done, total)`` after each step, and again
with the same numbers between the batches of a long step (a step that cannot report from inside
is repeated by ``ticking``). The one cancellation: the callback raises ``Cancelled``, and the
work stops there, between two batches. A bar moves itself in the callback (``reporter``), a
widget copies the numbers, a test records them or raises; the explorer's scheduler also makes
background work wait in it while the user's answer computes.

- ``reporter``: progress as (done, total) calls, or a tqdm bar when no callback is given.
- ``ticking``: repeats a step while one long call runs, so the clock of a bar moves.
- ``Cancelled``: raised inside work whose request was overtaken or stopped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from workbench.core.errors import (
    Cancelled,  # noqa: F401 - the one cancellation, raised from a Progress
    WorkbenchError,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # progress(done, total); may raise Cancelled to stop the work


def check_progress(progress) -> None:
    """Refuse a ``progress`` that is neither None, True, False nor a callable (WorkbenchError)."""
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise WorkbenchError(
            f"progress must be True, False or a callable progress(done, total), got {progress!r}"
        )


@contextlib.contextmanager
def reporter(progress: Progress | bool | None, total: int, description: str, unit: str):
    """Yield ``progress``, or one that moves a tqdm bar shown only once the work has taken 1 s
    (``progress`` None or True), or one that does nothing (False)."""
    check_progress(progress)
    if progress is False:
        yield lambda done, total: None
        return
    if progress is not None and progress is not True:
        yield progress
        return
    from tqdm.auto import tqdm

    delay = 1.0
    with tqdm(total=total, desc=description, unit=unit, delay=delay, leave=False) as bar:

        def report(done: int, _) -> None:
            bar.update(done - bar.n)
            # tqdm skips updates within mininterval, so a log would end part-way; refresh ignores
            # the delay, so only a bar already shown is refreshed (a repeated step, ``ticking``,
            # redraws through update(0) once mininterval has passed)
            if done >= total and bar.format_dict["elapsed"] >= delay:
                bar.refresh()

        yield report


@contextlib.contextmanager
def ticking(report: Callable[[int, int], None], done: int, total: int, every: float = 0.5):
    """Report step ``done`` of ``total`` again every ``every`` s while the block runs.

    For one long call that cannot report from inside (TensorFlow tracing a graph, or optimising
    it on its first call: 1.4 s and 1.2 s for DenseNet121's gradients here), so the bar's clock
    moves and the kernel never looks hung. ``report`` is then called from another thread (the
    caller's thread waits in the block meanwhile, so the two never overlap). An exception it
    raises (a cancellation) is raised here once the block has ended.
    """
    stop, failures = threading.Event(), []

    def beat() -> None:
        while not stop.wait(every):
            try:
                report(done, total)
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread below
                failures.append(err)
                return

    thread = threading.Thread(target=beat, name="workbench-ticking", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if failures:
        raise failures[0]
