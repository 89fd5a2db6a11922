"""Answer at once, refine in the background: subset estimates, latest-wins background work, a disk cache.

- ``reporter`` / ``ticking``: progress as (done, total) calls or a tqdm bar; ``ticking`` repeats
  a step while one long call runs, so its clock moves.
- ``Latest``: runs work in one background thread; a newer request cancels the older one, and a
  result is handed on only while its request is still the newest, so a stale answer is never shown.
- ``read_cached_curve`` / ``write_cached_curve``: finished curves on disk, keyed by ``fingerprint``
  of the weights, data, calibration and spec.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.cache import FRACTION, NON_NEGATIVE, check_array, read_cached
from workbench.fs import write_atomically

log = logging.getLogger(__name__)


# --- estimates from a subset ------------------------------------------------------------------


class Cancelled(Exception):
    """Raised inside background work whose request a newer one has overtaken."""


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


@contextlib.contextmanager
def reporter(progress: Callable[[int, int], None] | None, total: int, description: str, unit: str):
    """Yield ``progress``, or one that moves a tqdm bar shown only once the work has taken 1 s."""
    if progress is not None:
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


# --- the curve cache on disk ------------------------------------------------------------------


def fingerprint(*parts) -> str:
    """A short hash of arrays, strings, numbers and tuples of them (the disk cache's key)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def _curve_path(folder: Path, key: str) -> Path:
    return Path(folder) / f"curve-{key}.csv"


def read_cached_curve(folder: str | Path, key: str, rows: int | None = None) -> pd.DataFrame | None:
    """The curve cached under ``key`` in ``folder``; None if there is none, or it is damaged
    (``cache.read_cached``: unreadable, values out of range, or not ``rows`` rows when given)."""
    table = read_cached(
        _curve_path(Path(folder), key), pd.read_csv, lambda t: check_curve(t, rows), "cached curve"
    )
    if table is not None:
        table["guarded"] = table["guarded"].fillna("").astype(str)
    return table


def check_curve(table: pd.DataFrame, rows: int | None = None) -> None:
    """Refuse a curve table (ValueError) unless its sparsities are fractions, its metrics fractions
    or NaN (undefined), its ``changed`` counts >= 0, and it has ``rows`` rows when given."""
    if rows is not None and len(table) != rows:
        raise ValueError(f"expected {rows} rows, got {len(table)} (a truncated file?)")
    for name in ("sparsity", "changed", "guarded"):
        if name not in table:
            raise ValueError(f"column {name!r} is missing")
    for name in table.columns.drop(["guarded", "epsilon", "target"], errors="ignore"):
        column = table[name]
        if name.startswith("sparsity") or name == "changed":  # always defined
            bounds = FRACTION if name != "changed" else NON_NEGATIVE
            check_array(column.to_numpy(), name, (None,), bounds)
        else:  # a metric: NaN where it is undefined (a class missing from test)
            check_array(column.dropna().to_numpy(), name, (None,), FRACTION)


def write_cached_curve(folder: str | Path, key: str, table: pd.DataFrame) -> Path:
    """Write ``table`` to the cache under ``key`` (atomically); returns the file's path."""
    path = _curve_path(Path(folder), key)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.17g")
    write_atomically(path, buffer.getvalue())
    return path
