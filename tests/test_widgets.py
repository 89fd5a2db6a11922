"""Drive the dashboard through its controls, as a user's clicks would, and check what changes."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.sweep import Explorer
from workbench.widgets import Dashboard


@pytest.fixture
def dashboard(trained_tiny):
    model, data = trained_tiny
    return Dashboard(Explorer(model, data, calibration_size=32, grid_points=8))


def _marker_y(dash, axes="vs_grid"):
    return [tuple(line.get_ydata()) for line in dash.axes[axes].lines if line.get_marker() == "o"]


def test_dashboard_StartsWithAFigureTableAndReadout(dashboard):
    assert dashboard.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sparsity" in dashboard.readout.value
    assert "<table" in dashboard.table.value and "conv1" in dashboard.table.value
    assert dashboard.message.value == ""


def test_moving_epsilon_UpdatesFigureReadoutTableAndMarkers(dashboard):
    slider = dashboard.controls["epsilon"]
    slider.value = 10**slider.min
    before = (dashboard.image.value, dashboard.readout.value, dashboard.table.value, _marker_y(dashboard))
    heat_before = dashboard.axes["heatmap"].lines[0].get_xdata()[0]
    slider.value = 10 ** (slider.max - 0.5)  # prunes nearly everything
    assert dashboard.image.value != before[0]
    assert dashboard.readout.value != before[1]
    assert dashboard.table.value != before[2]
    assert _marker_y(dashboard) != before[3]
    assert dashboard.axes["heatmap"].lines[0].get_xdata()[0] > heat_before
    assert dashboard.point.result.sparsity > 0.5
    assert dashboard.message.value == ""


def test_mask_image_FollowsTheChosenLayer(dashboard):
    dashboard.controls["epsilon"].value = 10 ** (dashboard.controls["epsilon"].max - 1)
    dashboard.controls["layer"].value = "fc"
    shown = dashboard.axes["mask"].images[0].get_array()
    assert shown.shape == (8 * 9 * 9, 16)
    np.testing.assert_array_equal(np.asarray(shown, bool), dashboard.point.result.keep["fc"])


def test_target_sparsity_mode_HitsTheTarget(dashboard):
    dashboard.controls["mode"].value = "sparsity"
    dashboard.controls["sparsity"].value = 0.6
    assert dashboard.point.result.sparsity == pytest.approx(0.6, abs=1e-3)
    assert dashboard.controls["epsilon"].layout.display == "none"


def test_changing_criterion_RedrawsTheCurve(dashboard):
    before = dashboard.axes["vs_grid"].lines[0].get_ydata().copy()
    dashboard.controls["criterion"].value = "magnitude"
    assert dashboard.point.spec.criterion == "magnitude"
    assert not np.array_equal(before, dashboard.axes["vs_grid"].lines[0].get_ydata())


def test_unknown_layer_ShowsAMessage_AndTheDashboardStaysLive(dashboard):
    dashboard.controls["layer"].value = "conv99"
    assert "layer must be one of" in dashboard.message.value and "conv99" in dashboard.message.value
    dashboard.controls["layer"].value = "conv2"
    assert dashboard.message.value == ""


@pytest.mark.parametrize("typed", ["-1", "1e9", "abc", "nan"])
def test_bad_typed_epsilon_ShowsAMessage_AndLeavesTheSliderAlone(dashboard, typed):
    before = dashboard.controls["epsilon"].value
    dashboard.controls["epsilon_text"].value = typed
    assert "ε must be" in dashboard.message.value
    assert dashboard.controls["epsilon"].value == before


def test_good_typed_epsilon_MovesTheSlider(dashboard):
    slider = dashboard.controls["epsilon"]
    wanted = 10 ** ((slider.min + slider.max) / 2)
    dashboard.controls["epsilon_text"].value = f"{wanted:.6e}"
    assert slider.value == pytest.approx(wanted, rel=1e-5)
    assert dashboard.point.spec.epsilon == pytest.approx(wanted, rel=1e-5)


def test_finetune_button_MarksTheRecoveredPoint(dashboard):
    dashboard.controls["mode"].value = "sparsity"
    dashboard.controls["sparsity"].value = 0.8
    dashboard.controls["epochs"].value = 1
    dashboard.controls["finetune"].click()
    assert len(dashboard.recovered) == 1
    sparsity, metrics = dashboard.recovered[0]
    assert sparsity == pytest.approx(0.8, abs=1e-3)
    stars = [line for line in dashboard.axes["vs_sparsity"].lines if line.get_marker() == "*"]
    assert stars and stars[0].get_ydata()[0] == metrics["accuracy"]
    assert "fine-tuned 1 epochs" in dashboard.message.value


def test_switching_criterion_KeepsTheSparsity_SoCriteriaCompareAtEqualSparsity(dashboard):
    slider = dashboard.controls["epsilon"]
    slider.value = 10 ** ((slider.min + slider.max) / 2)
    before = dashboard.point.result.sparsity
    dashboard.controls["criterion"].value = "magnitude"
    assert dashboard.point.spec.criterion == "magnitude"
    assert dashboard.point.result.sparsity == pytest.approx(before, abs=0.02)
