"""Goal mode: the explorer's goal points are ``allocate``'s masks; the readout shows their cost."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.budget import allocate
from workbench.explorer import Explorer, GoalPoint
from workbench.sensitivity import Subject

GRID = (0.25, 0.5, 0.75, 0.9)


@pytest.fixture
def explorer(trained_tiny, tmp_path):
    model, data = trained_tiny
    return Explorer(model, data, calibration_size=32, grid_points=6, cache_dir=tmp_path)


def _same_masks(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


def test_goal_point_Params_MasksAreAllocatesAndWithinBudget(explorer):
    calls = []
    point = explorer.goal_point("params", 0.3, grid=GRID, progress=lambda *a: calls.append(a))
    table = explorer.goal_table("taylor", "unstructured", grid=GRID)
    reference = allocate(Subject.from_explorer(explorer), "params", 0.3, table=table)
    assert isinstance(point, GoalPoint) and point.spec.granularity == "unstructured"
    assert _same_masks(point.result.keep, reference.keep)
    assert point.cost == pytest.approx(reference.params) and point.cost <= 0.3
    kept = sum(int(m.sum()) for m in point.result.keep.values()) / sum(
        m.size for m in point.result.keep.values()
    )
    assert kept == pytest.approx(point.cost)  # independent of the allocation's own bookkeeping
    assert calls[0] == (0, len(GRID)) and calls[-1] == (len(GRID), len(GRID))
    assert set(point.row_sparsity) == set(explorer.layers)


def test_goal_table_IsComputedOnce_ThenReadFromMemory(explorer):
    first = explorer.goal_table("taylor", "unstructured", grid=GRID)
    assert first.computed == 0  # the last call only reads: the columns before it computed every cell
    assert explorer.goal_table("taylor", "unstructured", grid=GRID) is first


def test_goal_point_BadBudget_NamesTheArgument(explorer):
    with pytest.raises(ValueError, match="fraction of dense"):
        explorer.goal_point("flops", 1.5, grid=GRID)
