"""The answer scheduler's runner: newest request wins, older background work is cancelled.

``Latest`` runs work in one background thread; a newer request cancels the older one, and a
result is handed on only while its request is still the newest, so a stale answer is never shown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from workbench.core.errors import Cancelled

log = logging.getLogger(__name__)


class Ticket:
    """One request to a ``Latest`` runner; ``check()`` raises ``Cancelled`` once it is overtaken."""

    def __init__(self, owner: Latest, generation: int):
        self.owner, self.generation = owner, generation

    @property
    def current(self) -> bool:
        return self.owner.generation == self.generation

    def check(self) -> None:
        if not self.current:
            raise Cancelled(f"request {self.generation} overtaken by {self.owner.generation}")


class Latest:
    """Run the newest request's work in the background; older requests are cancelled or dropped.

    ``begin()`` starts a request (cancelling older ones) and returns its ticket. ``submit(ticket,
    work, done)`` runs ``work(ticket)`` on the shared worker thread and then, holding ``lock``,
    calls ``done(result)`` only if the ticket is still the newest. Foreground drawing takes the
    same ``lock``, so a stale result can never overwrite a newer figure.

    With ``background=False`` work runs inline, which is how tests and headless runs use it.
    """

    def __init__(self, *, background: bool = True, executor: ThreadPoolExecutor | None = None, lock=None):
        self.generation = 0
        self.background = background
        self.lock = lock if lock is not None else threading.RLock()
        self._executor = executor if executor is not None else (_shared_executor() if background else None)
        self.future: Future | None = None
        self.preparing: Future | None = None

    def begin(self) -> Ticket:
        with self.lock:
            self.generation += 1
            return Ticket(self, self.generation)

    def cancel(self) -> None:
        """Cancel whatever is running or queued (a later ``begin`` does the same)."""
        self.begin()

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


_EXECUTOR: ThreadPoolExecutor | None = None


def _shared_executor() -> ThreadPoolExecutor:
    """One worker thread for every dashboard of the kernel: the model's work copy is not thread-safe."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbench-background")
    return _EXECUTOR
