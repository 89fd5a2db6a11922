"""Clinical metrics against scikit-learn and hand-worked cases; FLOPs and compressed size."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from workbench.evaluate import (
    auc,
    changed_predictions,
    clinical_metrics,
    expected_calibration_error,
    flops,
    gzip_bytes,
    operating_threshold,
    parameter_counts,
)
from workbench.models import seed_cnn
from workbench.prune import apply_masks


def _binary(p_positive):
    p = np.asarray(p_positive, dtype=float)
    return np.stack([1 - p, p], axis=1)


def test_auc_AgreesWithScikitLearn_BinaryAndMultiClass():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    p = np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1)
    assert auc(_binary(p), labels) == pytest.approx(roc_auc_score(labels, p))
    labels3 = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + np.eye(3)[labels3]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert auc(probs, labels3) == pytest.approx(roc_auc_score(labels3, probs, multi_class="ovr"))
    assert np.isnan(auc(_binary([0.2, 0.9]), [1, 1]))


def test_clinical_metrics_HandWorkedBinaryCase():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = _binary([0.1, 0.2, 0.6, 0.3, 0.7, 0.8, 0.4, 0.9])
    m = clinical_metrics(probs, labels, threshold=0.5)
    assert m["accuracy"] == 0.75
    assert m["sensitivity"] == 0.75 and m["specificity"] == 0.75
    assert m["confusion"].tolist() == [[3, 1], [1, 3]]
    assert m["recall_per_class"] == [0.75, 0.75]
    strict = clinical_metrics(probs, labels, threshold=0.85)
    assert strict["sensitivity"] == 0.25 and strict["specificity"] == 1.0


def test_operating_threshold_ChosenOnValidation_IsAppliedToTest():
    val_labels = np.array([0, 0, 0, 1, 1, 1])
    val = _binary([0.05, 0.1, 0.15, 0.2, 0.25, 0.3])  # a shy model: positives sit at 0.2-0.3
    threshold = operating_threshold(val, val_labels)
    assert 0.15 < threshold <= 0.2
    test = _binary([0.1, 0.22, 0.28, 0.12])
    m = clinical_metrics(test, np.array([0, 1, 1, 0]), threshold)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0
    assert clinical_metrics(test, np.array([0, 1, 1, 0]))["sensitivity"] == 0.0  # argmax misses both


def test_clinical_metrics_MultiClass_ReportsPerClassRecall():
    labels = np.array([0, 1, 2, 2, 1, 0])
    probs = np.eye(3)[[0, 1, 2, 1, 1, 2]] * 0.8 + 0.2 / 3
    m = clinical_metrics(probs, labels)
    assert m["recall_per_class"] == [0.5, 1.0, 0.5]
    assert m["sensitivity"] == 1.0  # class 1 vs rest
    assert m["specificity"] == 0.75


def test_expected_calibration_error_ZeroWhenCalibrated_HighWhenOverconfident():
    labels = np.array([1] * 8 + [0] * 2)
    calibrated = _binary([0.8] * 10)  # says 80%, right 80% of the time
    assert expected_calibration_error(calibrated, labels) == pytest.approx(0.0)
    overconfident = _binary([0.99] * 5 + [0.01] * 5)
    assert expected_calibration_error(overconfident, np.array([0, 1] * 5)) > 0.45


def test_changed_predictions_ListsFlippedImages():
    dense = _binary([0.9, 0.2, 0.6, 0.4])
    pruned = _binary([0.8, 0.7, 0.4, 0.3])
    assert changed_predictions(dense, pruned).tolist() == [1, 2]


def test_flops_OfSeedCnn_MatchHandCount():
    model = seed_cnn((28, 28, 1), 2)
    # conv1 26x26 x (3*3*1*32), conv2 11x11 x (3*3*32*64), conv3 3x3 x (3*3*64*64), 576*64, 64*2
    macs = 26 * 26 * 288 + 11 * 11 * 18432 + 3 * 3 * 36864 + 576 * 64 + 64 * 2
    counts = flops(model)
    assert counts == {"dense": 2 * macs, "masked": 2 * macs, "filter_pruned": 2 * macs}


def test_flops_MaskedAndFilterPruned_CountOnlyWhatRemains():
    model = seed_cnn((28, 28, 1), 2)
    keep = {
        layer.name: np.ones(layer.kernel.shape, bool) for layer in model.layers if hasattr(layer, "kernel")
    }
    keep["conv2"][..., 32:] = False  # half of conv2's filters gone
    counts = flops(model, keep)
    conv2_half = 11 * 11 * 18432 // 2
    # conv3 also loses the inputs fed by those filters when filters are physically removed
    conv3_half = 3 * 3 * 36864 // 2
    assert counts["dense"] - counts["masked"] == 2 * conv2_half
    assert counts["dense"] - counts["filter_pruned"] == 2 * (conv2_half + conv3_half)


def test_gzip_bytes_ShrinkWithSparsity_AndParameterCountsSeeZeros():
    model = seed_cnn((28, 28, 1), 2)
    keep = {
        layer.name: np.random.default_rng(0).random(layer.kernel.shape) > 0.9
        for layer in model.layers
        if hasattr(layer, "kernel")
    }
    pruned = apply_masks(model, keep)
    assert gzip_bytes(pruned) < gzip_bytes(model) / 3
    counts = parameter_counts(pruned)
    assert counts["total"] == model.count_params()
    assert counts["nonzero"] < 0.15 * counts["total"]


def test_confusion_AgreesWithScikitLearn_MultiClass():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 300)
    probs = rng.dirichlet(np.ones(4), 300)
    expected = confusion_matrix(labels, probs.argmax(1), labels=range(4))
    np.testing.assert_array_equal(clinical_metrics(probs, labels)["confusion"], expected)


def test_layer_table_ListsPrunedKernels_ThenUnprunedBiasesAndBatchNorm():
    from workbench.evaluate import layer_table, overall_counts
    from workbench.masks import select
    from workbench.models import small_resnet
    from workbench.registry import get_kernels

    model = small_resnet((16, 16, 1), 2)
    kernels = get_kernels(model)
    result = select({n: np.abs(k) for n, k in kernels.items()}, sparsity=0.5, scope="layerwise")
    table = layer_table(model, result)
    assert list(table.columns) == ["layer", "kind", "shape", "weights", "pruned", "sparsity", "threshold"]
    head = table.iloc[: len(kernels)]
    assert list(head["layer"]) == list(kernels)
    assert (head["pruned"] == [round(k.size / 2) for k in kernels.values()]).all()
    unpruned = table.iloc[len(kernels) :]
    assert {"gamma", "beta", "moving_mean", "moving_variance", "bias"} <= set(unpruned["kind"])
    assert (unpruned["pruned"] == 0).all() and unpruned["threshold"].isna().all()
    counts = overall_counts(table)
    assert counts["parameters"] == model.count_params()
    assert counts["nonzero_parameters"] == model.count_params() - int(head["pruned"].sum())
    assert counts["sparsity"] == pytest.approx(0.5, abs=1e-3)
