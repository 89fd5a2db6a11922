"""Latest-wins background work, stratified subsets, the AUC interval and the curve cache file."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from workbench.progressive import (
    Cancelled,
    Latest,
    auc_interval,
    fingerprint,
    read_cached_curve,
    stratified_indices,
    write_cached_curve,
)


def test_stratified_indices_KeepClassProportions_AndAreSeeded():
    labels = np.array([0] * 300 + [1] * 100)
    index = stratified_indices(labels, 40, seed=3)
    assert len(index) == 40 and (labels[index] == 1).sum() == 10
    np.testing.assert_array_equal(index, stratified_indices(labels, 40, seed=3))
    assert not np.array_equal(index, stratified_indices(labels, 40, seed=4))
    np.testing.assert_array_equal(stratified_indices(labels, 1000), np.arange(400))


def test_auc_interval_CoversTheFullSetAUC_ForMostSubsets():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    scores = labels + rng.normal(0, 1.2, 2000)
    full = roc_auc_score(labels, scores)
    covered = 0
    for seed in range(100):
        index = stratified_indices(labels, 120, seed)
        auc = roc_auc_score(labels[index], scores[index])
        positives = int(labels[index].sum())
        covered += abs(auc - full) <= auc_interval(auc, positives, len(index) - positives)
    assert covered >= 88  # a 95% interval; a wrong standard error (too small by 2x) covers ~66%


def test_auc_interval_IsNaN_WithoutBothClasses():
    assert np.isnan(auc_interval(0.8, 0, 10)) and np.isnan(auc_interval(float("nan"), 5, 5))


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
