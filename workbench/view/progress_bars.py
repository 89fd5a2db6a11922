"""The dashboard's progress bars: start one, fill it from a ``progress(done, total)`` report, time
a step with it, hide it."""

from __future__ import annotations

import contextlib
import time

import ipywidgets as w


def fill(bar: w.IntProgress, done: int, total: int) -> None:
    """Show ``bar`` at ``done`` of ``total`` (the one progress protocol)."""
    bar.max, bar.value, bar.layout.display = max(total, 1), done, None


def start(bar: w.IntProgress, description: str) -> None:
    """Show ``bar`` empty under ``description``, before the work it counts reports."""
    bar.description = description
    bar.value, bar.layout.display = 0, None


def hide(bar: w.IntProgress) -> None:
    """Hide ``bar`` once the work it counts is done."""
    bar.layout.display = "none"


@contextlib.contextmanager
def timed(bar: w.IntProgress, description: str):
    """Yield a (done, total) callback that fills ``bar`` and shows the seconds taken (a long step
    is reported again as it runs, so they move); hide the bar when the block ends."""
    begun = time.perf_counter()

    def report(done: int, total: int) -> None:
        bar.description = f"{description} {time.perf_counter() - begun:.0f} s"
        fill(bar, done, total)

    try:
        yield report
    finally:
        hide(bar)
