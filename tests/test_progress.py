"""One progress protocol below explore/ (#26 item 4): the gradient pass, a sensitivity table, a fit,
a fine-tune and an allocation's fine-tunes all call one ``progress(done, total)`` with ``done``
rising to a fixed ``total``, and a ``Cancelled`` raised from it stops the work there; True and
False still mean a bar and none, and anything else is refused naming ``progress``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from workbench.analysis.budget import allocate
from workbench.analysis.sensitivity import Subject, sensitivity, sensitivity_rows
from workbench.core.errors import Cancelled, WorkbenchError
from workbench.model.registry import prunable_layers
from workbench.model.train import Recipe, fit
from workbench.prune.pruning import fine_tune
from workbench.prune.scores import Scorer

ONE_EPOCH = Recipe(epochs=1, batch_size=16, learning_rate=1e-4)


@dataclass(frozen=True)
class Work:
    """``run(model, data, folder, progress)`` does the work; ``total(model, data)`` is its step count
    (None: only known to the work)."""

    run: object
    total: object


def _all_kept(model) -> dict:
    return {info.name: np.ones(info.shape, bool) for info in prunable_layers(model)}


def _batches(data) -> int:
    return math.ceil(len(data.train) / ONE_EPOCH.batch_size)


WORK = {
    "gradient pass": Work(
        lambda m, d, f, p: Scorer(m, d.val.images, d.val.labels, batch_size=16).stats(p),
        lambda m, d: 1 + math.ceil(len(d.val) / 16),  # the trace, then each batch
    ),
    "sensitivity table": Work(
        lambda m, d, f, p: sensitivity(
            Subject.build(m, d), "snip", "unstructured", (0.5,), baseline=False, cache=f, progress=p
        ),
        lambda m, d: len(sensitivity_rows(Subject.build(m, d), "unstructured")),
    ),
    "fit": Work(lambda m, d, f, p: fit(m, d, ONE_EPOCH, progress=p), lambda m, d: _batches(d)),
    "fine-tune": Work(
        lambda m, d, f, p: fine_tune(m, _all_kept(m), d, ONE_EPOCH, progress=p),
        lambda m, d: _batches(d),
    ),
    "allocation's fine-tunes": Work(
        lambda m, d, f, p: allocate(m, "params", 0.5, dataset=d, recipe=ONE_EPOCH, cache=f, progress=p),
        None,  # one per candidate the table gives
    ),
}


@pytest.mark.parametrize("name", WORK)
def test_progress_OneCallback_SeesDoneRiseToAFixedTotal(name, trained_tiny, tmp_path):
    model, data = trained_tiny
    calls = []
    WORK[name].run(model, data, tmp_path, lambda done, total: calls.append((done, total)))
    dones, totals = zip(*calls, strict=True)
    assert len(set(totals)) == 1, f"one total throughout, got {sorted(set(totals))}"
    assert list(dones) == sorted(dones) and dones[-1] == totals[0], calls
    if WORK[name].total is not None:
        assert totals[0] == WORK[name].total(model, data)


@pytest.mark.parametrize("name", WORK)
def test_progress_RaisingCancelled_StopsTheWorkThere(name, trained_tiny, tmp_path):
    model, data = trained_tiny
    calls = []

    def cancel_after_first_step(done: int, total: int) -> None:
        calls.append(done)
        if done >= 1:
            raise Cancelled("stopped by the test")

    with pytest.raises(Cancelled):
        WORK[name].run(model, data, tmp_path, cancel_after_first_step)
    assert calls[-1] == 1 and all(done < 1 for done in calls[:-1]), "no step after the cancel"


def test_sensitivity_Cancelled_KeepsTheCellsWritten_AndResumes(trained_tiny, tmp_path):
    model, data = trained_tiny
    subject = Subject.build(model, data)
    options = dict(baseline=False, cache=tmp_path)

    def cancel_after_first_cell(done: int, total: int) -> None:
        if done >= 1:
            raise Cancelled("stopped by the test")

    with pytest.raises(Cancelled):
        sensitivity(subject, "snip", "unstructured", (0.5,), progress=cancel_after_first_cell, **options)
    table = sensitivity(subject, "snip", "unstructured", (0.5,), progress=False, **options)
    assert table.computed == len(table.rows) - 1  # the first cell was kept on disk


@pytest.mark.parametrize("progress", [True, False])
def test_progress_TrueOrFalse_StillMeansABarOrNone(progress, trained_tiny, capsys):
    model, data = trained_tiny
    fit(model, data, ONE_EPOCH, progress=progress)
    Scorer(model, data.val.images, data.val.labels).stats(progress)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, d, f: fit(m, d, ONE_EPOCH, progress="yes"),
        lambda m, d, f: sensitivity(Subject.build(m, d), "snip", cache=f, progress="yes"),
        lambda m, d, f: allocate(m, "params", 0.5, dataset=d, cache=f, progress="yes"),
        lambda m, d, f: Scorer(m, d.val.images, d.val.labels).stats("yes"),
    ],
    ids=["fit", "sensitivity", "allocate", "gradient pass"],
)
def test_progress_NeitherBoolNorCallable_IsRefusedNamingIt(call, trained_tiny, tmp_path):
    with pytest.raises(WorkbenchError, match=r"progress must be True, False or a callable .* got 'yes'"):
        call(*trained_tiny, tmp_path)
