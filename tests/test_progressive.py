"""Latest-wins background work, stratified subsets, the AUC interval and the curve cache file."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.curve_cache import read_cached_curve, write_cached_curve
from workbench.core.cache import fingerprint
from workbench.core.progress import Cancelled, ticking
from workbench.explore.scheduler import Gate, Latest


def test_latest_DropsTheResultOfAnOvertakenRequest():
    runner, shown, gate, started = Latest(background=True), [], threading.Event(), threading.Event()

    def slow(ticket):
        started.set()
        gate.wait(10)
        return "old"

    old = runner.begin()
    runner.submit(old, slow, shown.append)
    started.wait(10)
    new = runner.begin()
    future = runner.submit(new, lambda ticket: "new", shown.append)
    gate.set()
    future.result(10)
    assert shown == ["new"]


def test_latest_CancelsWorkThatChecksItsTicket():
    runner, reached = Latest(background=False), []

    def work(ticket):
        runner.begin()  # a newer request arrives while this one runs
        ticket.check()
        reached.append(True)

    assert runner.submit(runner.begin(), work, print) is None
    assert reached == []
    with pytest.raises(Cancelled):
        ticket = runner.begin()
        runner.begin()
        ticket.check()


def test_curve_cache_RoundTripsExactly(tmp_path):
    table = pd.DataFrame(
        {
            "epsilon": [0.0, 1 / 3],
            "sparsity": [0.0, 0.123456789012345],
            "guarded": ["", "fc"],
            "changed": [0, 3],
        }
    )
    write_cached_curve(tmp_path, "k", table)
    pd.testing.assert_frame_equal(read_cached_curve(tmp_path, "k"), table)
    assert read_cached_curve(tmp_path, "other") is None


def test_fingerprint_ChangesWithAnyPart():
    a = np.zeros(3)
    assert fingerprint(a, "x", 1) == fingerprint(a.copy(), "x", 1)
    assert fingerprint(a, "x", 1) != fingerprint(a + 1e-9, "x", 1)
    assert fingerprint(a, "x", 1) != fingerprint(a, "x", 2)


def test_reporter_ABarShown_EndsAt100Percent_AQuickOneIsNeverShown(capsys):
    import time

    from workbench.core.progress import reporter

    with reporter(None, 3, "quick", "step") as report:
        report(1, 3), report(3, 3)
    assert "quick" not in capsys.readouterr().err
    with reporter(None, 3, "slow", "step") as report:
        report(1, 3), time.sleep(1.1), report(2, 3), report(3, 3)  # shown after its 1 s delay
    assert "slow: 100%" in capsys.readouterr().err


def test_ticking_ReportsTheSameStepAgain_WhileOneLongCallRuns():
    seen, enough = [], threading.Event()

    def report(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) >= 3:
            enough.set()

    with ticking(report, 1, 5, every=0.01):
        assert enough.wait(10)  # the block is the "long call": it ends once the clock moved 3 times
    count = len(seen)
    threading.Event().wait(0.05)
    assert set(seen) == {(1, 5)} and len(seen) == count  # nothing is reported after the block


def test_ticking_ACancellationRaisedByReport_IsRaisedWhenTheBlockEnds():
    called = threading.Event()

    def report(done: int, total: int) -> None:
        called.set()
        raise Cancelled("overtaken")

    with pytest.raises(Cancelled, match="overtaken"), ticking(report, 0, 2, every=0.01):
        assert called.wait(10)


def test_gate_BackgroundWorkWaitsAtItsNextBatch_WhileForegroundWorkRuns():
    gate, order = Gate(), []
    runner = Latest(background=False, gate=gate)
    ticket = runner.begin()
    entered, waiting = threading.Event(), threading.Event()

    def background():
        entered.wait(10)
        waiting.set()
        ticket.progress(lambda done, total: order.append(("background", done)))(1, 2)

    def foreground():
        with gate.foreground():
            entered.set()
            assert waiting.wait(10)
            threading.Event().wait(0.1)  # the background batch must not report meanwhile
            order.append(("foreground", 0))

    threads = [threading.Thread(target=background), threading.Thread(target=foreground)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == [("foreground", 0), ("background", 1)]


def test_ticket_progress_RaisesCancelled_OnceOvertaken_AndReportsBefore():
    runner, seen = Latest(background=False), []
    ticket = runner.begin()
    report = ticket.progress(lambda done, total: seen.append((done, total)))
    report(1, 3)
    runner.begin()
    with pytest.raises(Cancelled):
        report(2, 3)
    assert seen == [(1, 3)]
