"""Notebook 01 prunes at exactly the swept ε through the engine; no widget touches the value."""

from __future__ import annotations

import re

import papermill
import pytest
from conftest import SHARED_RUN

NAME = "01_explore_threshold.ipynb"


@pytest.mark.slow
def test_epsilon_zero_GivesTheDenseModel(run_notebook):
    assert SHARED_RUN[NAME]["epsilon"] == 0.0  # the shared run of notebook 01 is the one at ε = 0
    metrics = run_notebook(NAME, **SHARED_RUN[NAME]).metrics
    assert metrics["epsilon"] == 0.0 and metrics["sparsity"] == 0.0
    assert metrics["changed_predictions"] == 0
    assert metrics["accuracy"] == metrics["dense_accuracy"] and metrics["auc"] == metrics["dense_auc"]


@pytest.mark.slow
def test_negative_epsilon_FailsTheRun_WithTheEnginesMessage(run_notebook):
    failed = run_notebook(NAME, epsilon=-1.0)
    assert isinstance(failed.error, papermill.PapermillExecutionError)
    assert re.search(r"epsilon must be .*-1", str(failed.error))
    assert not (failed.results / "metrics.json").exists()


@pytest.mark.slow
def test_large_epsilon_IsKeptAsGiven_NotClampedToASliderRange(run_notebook):
    metrics = run_notebook(NAME, epsilon=1e9).metrics
    assert metrics["epsilon"] == 1e9 and metrics["sparsity"] > 0.99


@pytest.mark.slow
def test_users_backbone_And_npz_AreExploredAsGiven_WeightsUntouched(run_notebook, tmp_path):
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

    options = {"dataset": str(data), "model": str(path), "calibration_size": 16, "epsilon": 1e-6}
    metrics = run_notebook(NAME, **options).metrics

    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    dense = keras.models.load_model(path).predict(arrays["test_images"] / 255.0, verbose=0)[:, 0]
    from sklearn.metrics import roc_auc_score

    expected = roc_auc_score(arrays["test_labels"].ravel(), dense)
    assert metrics["dense_auc"] == pytest.approx(expected, abs=1e-4)  # the file's model, not a retrained one
