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


@pytest.mark.slow
def test_users_backbone_And_npz_AreExploredAsGiven_WeightsUntouched(shared_data, tmp_path):
    """A nested keras.applications backbone with a one-sigmoid head, on the user's own 3-channel .npz."""
    import hashlib

    import numpy as np

    from workbench.model.compat import keras

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 24), ("test", 24)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    data = tmp_path / "my_xrays.npz"
    np.savez(data, **arrays)
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="finding")(features))
    path = tmp_path / "my_model.keras"
    model.save(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    metrics = _run(tmp_path, dataset=str(data), model=str(path), calibration_size=16, epsilon=1e-6)

    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    dense = keras.models.load_model(path).predict(arrays["test_images"] / 255.0, verbose=0)[:, 0]
    from sklearn.metrics import roc_auc_score

    expected = roc_auc_score(arrays["test_labels"].ravel(), dense)
    assert metrics["dense_auc"] == pytest.approx(expected, abs=1e-4)  # the file's model, not a retrained one
