"""Goal mode: the explorer's goal points are ``allocate``'s masks; the readout shows their cost."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from workbench.analysis.budget import allocate
from workbench.analysis.sensitivity import Subject
from workbench.explore.session import Explorer, GoalPoint

GRID = (0.25, 0.5, 0.75, 0.9)
WAIT = 120  # seconds: a bound for hangs only


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


def test_goal_point_LayerTable_ThresholdIsEachLayersLowestKeptScore_TotalsMatchTheCost(explorer):
    from workbench.prune.layer_table import overall_counts

    point = explorer.goal_point("params", 0.3, grid=GRID)
    scores = explorer.scorer.scores("taylor", "unstructured")
    kernels = point.table.head(len(point.result.keep))  # kernels first, then biases and BatchNorm
    thresholds = dict(zip(kernels["layer"], kernels["threshold"], strict=True))
    for name, keep in point.result.keep.items():
        assert thresholds[name] == pytest.approx(float(scores[name][keep].min()))
    assert overall_counts(point.table)["sparsity"] == pytest.approx(1 - point.cost)


def test_goal_table_IsComputedOnce_ThenReadFromMemory(explorer):
    first = explorer.goal_table("taylor", "unstructured", grid=GRID)
    assert set(first.cells["criterion"]) == {"taylor"}, "an allocation reads no random rows: none computed"
    with pytest.raises(ValueError, match="without the random baseline"):
        first.with_baseline_row()
    assert first.computed == len(first.cells)  # counted column by column (the last read said 0)
    assert explorer.goal_table("taylor", "unstructured", grid=GRID) is first


def test_goal_point_BadBudget_NamesTheArgument(explorer):
    with pytest.raises(ValueError, match="fraction of dense"):
        explorer.goal_point("flops", 1.5, grid=GRID)


@pytest.fixture
def dashboard(explorer):
    from workbench.view.dashboard import Dashboard

    return Dashboard(explorer, goal_grid=GRID)


def test_dashboard_GoalMode_FlopsBudget_ReadoutShowsTheAchievedCost_MasksAreAllocates(dashboard):
    c = dashboard.controls
    c["mode"].value = "goal"
    c["goal"].value = "flops"
    c["goal_value"].value = 0.5
    point = dashboard.point
    assert isinstance(point, GoalPoint) and c["granularity"].value == "structured"
    assert c["epsilon"].layout.display == "none" and c["goal_value"].layout.display is None
    assert c["scope"].layout.display == "none"
    reference = allocate(
        Subject.from_explorer(dashboard.explorer),
        "flops",
        0.5,
        table=dashboard.explorer.goal_table("taylor", "structured", grid=GRID),
    )
    assert _same_masks(point.result.keep, reference.keep)
    assert point.cost <= 0.5
    assert point.table["threshold"].notna().sum() == len(dashboard.explorer.layers)  # an allocation has no ε
    assert f"achieved FLOPs {reference.flops:.1%}" in dashboard.readout.value
    assert "<table" in dashboard.table.value and dashboard.message.value == ""
    assert dashboard.progress.layout.display == "none"
    circles = [line for line in dashboard.figure.axes["heatmap"].lines if line.get_marker() == "o"]
    assert len(circles) == sum(s > 0 for s in point.row_sparsity.values()) > 0


def test_dashboard_GoalMode_ToleranceKnob_TakesTheGoalsRange(dashboard):
    c = dashboard.controls
    c["mode"].value = "goal"
    c["goal"].value = "tolerance"
    assert c["goal_value"].value == pytest.approx(0.01) and c["goal_value"].max == pytest.approx(0.2)
    assert dashboard.point.allocation.goal == "tolerance"
    assert dashboard.point.allocation.val_drop <= 0.01 + 1e-9
    assert "AUC drop ≤ 0.01" in dashboard.readout.value


def test_dashboard_GoalMode_UnreachableBudget_ShowsAMessage_AndBackToEpsilonWorks(dashboard):
    c = dashboard.controls
    c["mode"].value = "goal"
    c["goal"].value = "params"
    c["goal_value"].value = 0.01  # below what a 0.9 grid reaches
    assert "below what the grid reaches" in dashboard.message.value
    c["mode"].value = "epsilon"
    assert dashboard.point.spec.epsilon is not None and dashboard.message.value == ""
    assert c["goal"].layout.display == "none" and c["scope"].layout.display is None


def test_dashboard_GivenAGoalPoint_ShowsItInGoalMode(explorer):
    from workbench.view.dashboard import Dashboard

    point = explorer.goal_point("params", 0.3, grid=GRID)
    dash = Dashboard(explorer, point=point, goal_grid=GRID)
    assert dash.point is point and dash.controls["mode"].value == "goal"
    assert dash.controls["goal"].value == "params" and dash.controls["goal_value"].value == pytest.approx(0.3)
    assert "achieved FLOPs" in dash.readout.value


def _gated(explorer, monkeypatch):
    """Make the explorer's goal_point wait for the returned event (a stand-in for a slow first table)."""
    gate, real = threading.Event(), explorer.goal_point

    def slow(*args, **kwargs):
        assert gate.wait(WAIT)
        return real(*args, **kwargs)

    monkeypatch.setattr(explorer, "goal_point", slow)
    return gate


def test_background_GoalMode_LeavesTheDashboardLive_ThenShowsTheAllocation(explorer, monkeypatch):
    from workbench.view.dashboard import Dashboard

    dash = Dashboard(explorer, goal_grid=GRID, background=True)
    dash.wait(WAIT)
    gate = _gated(explorer, monkeypatch)
    dash.controls["mode"].value = "goal"  # returns at once: the table computes in the background
    assert dash.progress.layout.display is None and not isinstance(dash.point, GoalPoint)
    dash.controls["layer"].value = "fc"  # the rest of the dashboard still answers
    assert dash.message.value == ""
    gate.set()
    dash.wait(WAIT)
    assert isinstance(dash.point, GoalPoint) and dash.point.cost <= 0.5
    assert dash.progress.layout.display == "none" and "achieved FLOPs" in dash.readout.value


def test_background_LeavingGoalMode_DropsTheGoalAnswer(explorer, monkeypatch):
    from workbench.view.dashboard import Dashboard

    dash = Dashboard(explorer, goal_grid=GRID, background=True)
    dash.wait(WAIT)
    gate = _gated(explorer, monkeypatch)
    dash.controls["mode"].value = "goal"
    dash.controls["mode"].value = "sparsity"
    gate.set()
    dash.wait(WAIT)
    assert not isinstance(dash.point, GoalPoint) and dash.point.spec.sparsity is not None


def test_background_FineTuneButton_WhileGoalModeFineTunesCandidates_IsRefusedWithAMessage(
    explorer, monkeypatch
):
    from workbench.view.dashboard import Dashboard

    dash = Dashboard(explorer, goal_grid=GRID, background=True)
    dash.wait(WAIT)
    fitted = []
    metrics = {"accuracy": 1.0, "auc": 1.0}
    monkeypatch.setattr(explorer, "fine_tuned", lambda *a, **k: fitted.append(a) or (metrics, None))
    gate = _gated(explorer, monkeypatch)
    dash.controls["goal_tune"].value = True
    dash.controls["mode"].value = "goal"  # a budget: its candidates fine-tune in the background
    dash.on_finetune()
    assert "goal mode is picking after fine-tuning" in dash.message.value and not fitted
    dash.controls["mode"].value = "sparsity"  # overtaken: the button works again
    dash.on_finetune()
    dash.scheduler.tuning.future.result(WAIT)
    assert len(fitted) == 1 and "fine-tuned" in dash.message.value
    gate.set()
    dash.wait(WAIT)


def test_goal_point_Recipe_PicksTheBestCandidateAfterFineTuning_WithProgress(explorer):
    from workbench.model.train import Recipe

    calls, stages = [], []
    point = explorer.goal_point(
        "params",
        0.3,
        grid=GRID,
        recipe=Recipe(epochs=1, batch_size=16),
        progress=lambda done, total: calls.append((done, total, stages[-1])),
        on_stage=stages.append,
    )
    assert stages == ["sensitivity", "fine-tune"]  # what the bar's label says, in order
    a = point.allocation
    assert a.tuned_val_auc == max(c.tuned_val_auc for c in a.measured)
    assert {c.candidate for c in a.measured} == {"table", "distortion", "uniform", "global"}
    tuning = [call for call in calls if call[2:] == ("fine-tune",)]
    assert tuning[0] == (0, 4, "fine-tune") and tuning[-1] == (4, 4, "fine-tune")
    assert point.cost <= 0.3
    from workbench.analysis.curves import evaluate_model
    from workbench.prune.pruning import apply_masks

    pruned = apply_masks(explorer.model, point.result.keep)  # the metrics are the pruned model's, not tuned
    data = explorer.dataset
    assert point.metrics["auc"] == pytest.approx(evaluate_model(pruned, data.val, data.test)["auc"], abs=1e-6)


def test_dashboard_GoalMode_PickAfterFineTuning_SaysSoInTheReadout(dashboard):
    c = dashboard.controls
    assert c["goal_tune"].layout.display == "none"  # a goal-mode control only
    c["mode"].value = "goal"
    c["goal"].value = "params"
    c["goal_value"].value = 0.3
    assert c["goal_tune"].layout.display is None
    assert "after fine-tuning" not in dashboard.readout.value
    c["epochs"].value = 1
    c["goal_tune"].value = True
    assert dashboard.point.allocation.tuned_val_auc is not None
    assert "the best validation AUC after fine-tuning (table " in dashboard.readout.value
    assert dashboard.message.value == ""


def test_dashboard_GoalMode_EpochsReachThePick_AndATolerance_CannotAskForIt(dashboard, monkeypatch):
    c, asked = dashboard.controls, []
    real = dashboard.explorer.goal_point

    def recording(*args, recipe=None, **kwargs):
        asked.append(None if recipe is None else recipe.epochs)
        return real(*args, recipe=recipe, **kwargs)

    monkeypatch.setattr(dashboard.explorer, "goal_point", recording)
    c["mode"].value = "goal"
    c["goal"].value = "params"
    c["goal_value"].value = 0.3
    c["epochs"].value = 1
    assert asked[-1] is None and not c["goal_tune"].disabled  # epochs alone ask nothing new
    c["goal_tune"].value = True
    c["epochs"].value = 2  # asked again, with the new epochs
    assert asked[-2:] == [1, 2]
    c["goal"].value = "tolerance"
    assert c["goal_tune"].disabled and asked[-1] is None
