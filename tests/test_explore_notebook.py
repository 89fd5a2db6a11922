"""Notebook 01 prunes at exactly the swept ε through the engine; no widget touches the value."""

from __future__ import annotations

import json
from pathlib import Path

import papermill
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01_explore_threshold.ipynb"
SMALL = {"epochs": 1, "grid_points": 6}


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("workbench-data")
        patch.setenv("WORKBENCH_DATA", str(folder))  # the kernels inherit it
        yield folder


def _run(tmp_path: Path, **parameters) -> dict:
    out = tmp_path / "results"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / NOTEBOOK.name),
        parameters={**SMALL, **parameters, "results_dir": str(out)},
        cwd=str(NOTEBOOK.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_epsilon_zero_GivesTheDenseModel(shared_data, tmp_path):
    metrics = _run(tmp_path, epsilon=0.0)
    assert metrics["epsilon"] == 0.0 and metrics["sparsity"] == 0.0
    assert metrics["changed_predictions"] == 0
    assert metrics["accuracy"] == metrics["dense_accuracy"] and metrics["auc"] == metrics["dense_auc"]


@pytest.mark.slow
def test_negative_epsilon_FailsTheRun_WithTheEnginesMessage(shared_data, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match=r"epsilon must be .*-1"):
        _run(tmp_path, epsilon=-1.0)
    assert not (tmp_path / "results" / "metrics.json").exists()


@pytest.mark.slow
def test_large_epsilon_IsKeptAsGiven_NotClampedToASliderRange(shared_data, tmp_path):
    metrics = _run(tmp_path, epsilon=1e9)
    assert metrics["epsilon"] == 1e9 and metrics["sparsity"] > 0.99
