"""Clinical metrics against scikit-learn and hand-worked cases; FLOPs and compressed size."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from workbench.core.metrics import (
    EVIDENCE_KEYS,
    NO_VERDICT,
    ChanceReferenceWarning,
    OperatingPoint,
    Predictions,
    auc,
    changed_predictions,
    clinical_metrics,
    compare_to_dense,
    expected_calibration_error,
    multilabel_metrics,
    operating_threshold,
    validated_metrics,
)
from workbench.model.builders import seed_cnn
from workbench.model.cost import flops, gzip_bytes, parameter_counts
from workbench.prune.pruning import apply_masks


def _binary(p_positive):
    p = np.asarray(p_positive, dtype=float)
    return np.stack([1 - p, p], axis=1)


def _tagged(val, test, val_labels, test_labels):
    """Predictions of hand-made probabilities, all tagged as of one set of images (the statistics'
    tests; ``curves.predictions`` tags a model's real outputs)."""
    return Predictions(val, test, val_labels, test_labels, images="hand-made")


def test_auc_AgreesWithScikitLearn_BinaryAndMultiClass():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    p = np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1)
    assert auc(_binary(p), labels) == pytest.approx(roc_auc_score(labels, p))
    labels3 = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + np.eye(3)[labels3]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert auc(probs, labels3) == pytest.approx(roc_auc_score(labels3, probs, multi_class="ovr"))
    with pytest.warns(UndefinedMetricWarning, match="AUC is undefined"):
        assert auc(_binary([0.2, 0.9]), [1, 1]) is None


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
    from workbench.core.masks import select
    from workbench.model.builders import small_resnet
    from workbench.model.registry import get_kernels
    from workbench.prune.layer_table import layer_table, overall_counts

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


# --- operating points, undefined metrics, evidence against the dense model ----------------------


def _scores(rng, n, shift=1.2):
    labels = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + shift * (2 * labels - 1))))
    return _binary(p), labels


@pytest.mark.parametrize("target", [0.8, 0.95, 0.99])
def test_operating_threshold_TargetSensitivity_IsReachedOnValidation_AtMostSpecificity(target):
    rng = np.random.default_rng(7)
    val, labels = _scores(rng, 400)
    threshold = operating_threshold(val, labels, operating=OperatingPoint("sensitivity", target))
    said = val[:, 1] >= threshold
    assert said[labels == 1].mean() >= target
    # the next higher distinct score would miss the target: the threshold is as strict as allowed
    higher = np.unique(val[:, 1])[np.unique(val[:, 1]) > threshold]
    if higher.size:
        assert (val[labels == 1, 1] >= higher[0]).mean() < target


def test_operating_threshold_TargetSpecificity_IsReachedOnValidation():
    rng = np.random.default_rng(8)
    val, labels = _scores(rng, 400)
    threshold = operating_threshold(val, labels, operating=OperatingPoint("specificity", 0.9))
    assert (val[labels == 0, 1] < threshold).mean() >= 0.9
    test, test_labels = _scores(rng, 300)
    m = validated_metrics(val, labels, test, test_labels, operating=OperatingPoint("specificity", 0.9))
    assert m["threshold"] == pytest.approx(threshold, rel=1e-6) and m["rule"] == "specificity>=0.9"


def test_operating_point_BadRuleOrTarget_RaisesNamingIt():
    with pytest.raises(ValueError, match="rule"):
        OperatingPoint("accuracy")
    with pytest.raises(ValueError, match="target"):
        OperatingPoint("sensitivity")
    with pytest.raises(ValueError, match="target"):
        OperatingPoint("specificity", 1.5)


def test_validated_metrics_SingleClassValidation_WarnsAndSaysArgmax_NoSilentHalf():
    test = _binary([0.1, 0.7, 0.4, 0.9])
    with pytest.warns(UndefinedMetricWarning, match="validation holds a single class"):
        m = validated_metrics(_binary([0.2, 0.3]), np.array([0, 0]), test, np.array([0, 1, 1, 1]))
    assert m["threshold"] is None and m["rule"] == "argmax"
    assert m["sensitivity"] == pytest.approx(2 / 3)  # argmax decisions, said so


def test_validated_metrics_Binary_AccuracyCountsTheSameDecisionsAsTheConfusionMatrix():
    # every p(positive) below 0.5 but perfectly ranked: argmax says "negative" for all
    labels = np.arange(20) % 2
    probs = _binary(0.3 + 0.1 * labels + np.linspace(0, 0.01, 20))
    m = validated_metrics(probs, labels, probs, labels)
    assert m["confusion"].tolist() == [[10, 0], [0, 10]]
    assert m["accuracy"] == 1.0 == np.trace(m["confusion"]) / 20


def test_clinical_metrics_SingleClassTest_AucAndSpecificityUndefined_WithWarnings():
    with pytest.warns(UndefinedMetricWarning) as caught:
        m = clinical_metrics(_binary([0.2, 0.9, 0.7]), np.array([1, 1, 1]), threshold=0.5)
    assert m["auc"] is None and m["specificity"] is None
    assert m["accuracy"] == pytest.approx(2 / 3) and m["sensitivity"] == pytest.approx(2 / 3)
    messages = " | ".join(str(record.message) for record in caught)
    assert "AUC is undefined" in messages and "specificity" in messages


def test_compare_to_dense_DenseAgainstItself_ZeroDifferenceNonInferior():
    rng = np.random.default_rng(9)
    val, val_labels = _scores(rng, 200)
    test, test_labels = _scores(rng, 300)
    evidence = compare_to_dense(*[_tagged(val, test, val_labels, test_labels)] * 2)
    assert tuple(evidence) == EVIDENCE_KEYS
    assert evidence["auc_difference"] == 0 and evidence["auc_difference_p"] == 1.0
    assert evidence["noninferiority"] == "non-inferior" and evidence["mcnemar_p"] == 1.0
    assert evidence["auc"] == evidence["dense_auc"] == pytest.approx(roc_auc_score(test_labels, test[:, 1]))
    assert evidence["auc_low"] < evidence["auc"] < evidence["auc_high"]
    assert evidence["sensitivity_low"] < evidence["sensitivity"] < evidence["sensitivity_high"]
    assert evidence["ece_low"] <= evidence["ece"] <= evidence["ece_high"]
    assert evidence["rule"] == "youden" and evidence["margin"] == 0.02


def test_compare_to_dense_UselessPrunedModel_IsInferior_AndMcNemarSeesIt():
    rng = np.random.default_rng(10)
    val, val_labels = _scores(rng, 200, shift=2.0)
    test, test_labels = _scores(rng, 400, shift=2.0)
    noise = _binary(rng.random(400))
    dense = _tagged(val, test, val_labels, test_labels)
    evidence = compare_to_dense(dense, _tagged(_binary(rng.random(200)), noise, val_labels, test_labels))
    assert evidence["noninferiority"] == "inferior"
    assert evidence["auc_difference_high"] < -0.02 and evidence["auc_difference_p"] < 1e-6
    assert evidence["mcnemar_p"] < 1e-6


def test_compare_to_dense_SingleClassTest_VerdictUndefined_NoNumbers():
    rng = np.random.default_rng(11)
    val, val_labels = _scores(rng, 100)
    test = _binary(rng.random(20))
    with pytest.warns(UndefinedMetricWarning, match="AUC evidence is undefined"):
        evidence = compare_to_dense(*[_tagged(val, test, val_labels, np.ones(20, int))] * 2)
    assert evidence["noninferiority"] == "undefined"
    assert evidence["auc"] is None and evidence["auc_difference_p"] is None
    assert evidence["specificity"] is None and evidence["sensitivity"] is not None


def test_compare_to_dense_MultiClass_MacroDeLongIntervals():
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3)) + 2 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    evidence = compare_to_dense(*[_tagged(probs, probs, labels, labels)] * 2)
    assert evidence["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    assert evidence["auc_difference"] == 0 and evidence["auc_difference_p"] == 1.0
    assert evidence["auc_difference_low"] == evidence["auc_difference_high"] == 0
    assert evidence["auc_low"] < evidence["auc"] < evidence["auc_high"]
    assert evidence["noninferiority"] == "non-inferior" and evidence["rule"] == "argmax"


def test_compare_to_dense_BadMargin_Raises():
    probs, labels = _binary([0.2, 0.8]), np.array([0, 1])
    with pytest.raises(ValueError, match="margin"):
        compare_to_dense(*[_tagged(probs, probs, labels, labels)] * 2, margin=-0.1)


# --- the fast Evaluator and the one-shot evaluate_model agree --------------------------------


def _same(fast: dict, slow: dict) -> None:
    for key in (*EVIDENCE_KEYS, "accuracy", "recall_per_class"):
        assert fast[key] == slow[key], key
    np.testing.assert_array_equal(fast["changed"], slow["changed"])
    np.testing.assert_array_equal(fast["confusion"], slow["confusion"])


@pytest.mark.parametrize("structured", [False, True])
def test_evaluator_AndEvaluateModel_IdenticalMetrics_EvenWithEveryKernelPruned(trained_tiny, structured):
    from workbench.analysis.curves import Evaluator, evaluate_model
    from workbench.model.registry import get_kernels
    from workbench.prune.pruning import PruneSpec, make_masks
    from workbench.prune.scores import Scorer

    model, data = trained_tiny
    evaluator = Evaluator(model, data.val, data.test)
    half = make_masks(
        Scorer(model, data.val.images, data.val.labels), PruneSpec("magnitude", sparsity=0.6)
    ).keep
    nothing = {name: np.zeros(kernel.shape, bool) for name, kernel in get_kernels(model).items()}
    for keep in (half, nothing):
        fast = evaluator.evaluate(keep, structured=structured)
        pruned = apply_masks(model, keep, structured=structured)
        _same(fast, evaluate_model(pruned, data.val, data.test, dense=model))
    assert fast["auc"] == 0.5  # a constant model ranks nobody: ties, not float noise


def test_evaluator_TargetSensitivity_FlowsThroughToTheResult(trained_tiny):
    from workbench.analysis.curves import Evaluator, evaluate_model

    model, data = trained_tiny
    operating = OperatingPoint("sensitivity", 0.95)
    dense = Evaluator(model, data.val, data.test, operating=operating).dense_metrics
    assert dense["rule"] == "sensitivity>=0.95" and dense["noninferiority"] == "non-inferior"
    slow = evaluate_model(model, data.val, data.test, operating=operating)
    assert slow["threshold"] == dense["threshold"]


def test_validated_metrics_UlpNoiseOfAConstantModel_TiesInsteadOfRanking():
    # softmax of equal logits, as a batched kernel returns it: 0.5 or one ulp below, by batch position
    below = np.nextafter(np.float32(0.5), np.float32(0))
    labels = np.array([0, 0, 0, 1, 1, 1])
    p = np.where(labels == 1, np.float32(0.5), below).astype(np.float32)
    assert roc_auc_score(labels, p) == 1.0  # the noise alone would rank every case perfectly
    m = validated_metrics(_binary(p), labels, _binary(p), labels)
    assert m["auc"] == 0.5


# --- a dense reference must be of the same images (issue 25, item 3) --------------------------


def test_compare_to_dense_IssuesShuffledRawArrays_AreRefusedSayingWhatToPass():
    rng = np.random.default_rng(13)
    pv, yv = _scores(rng, 100)
    pt, yt = _scores(rng, 100)
    perm = rng.permutation(100)  # the dense probabilities of other images, of the same shape
    with pytest.raises(
        ValueError,
        match=r"dense must be Predictions, made by workbench\.predictions\(model, dataset\)",
    ):
        compare_to_dense((pv, pt[perm]), (pv, pt), yv, yt)


def _shuffled(data, seed=0):
    from workbench.data.dataset import Dataset

    order = np.random.default_rng(seed).permutation(len(data.test))
    return Dataset(data.name, data.train, data.val, data.test.subset(order), data.class_names)


def test_compare_to_dense_PredictionsOfOtherImages_AreRefused(trained_tiny):
    from workbench.analysis.curves import predictions

    model, data = trained_tiny
    with pytest.raises(ValueError, match="dense and pruned are predictions of different images"):
        compare_to_dense(predictions(model, _shuffled(data)), predictions(model, data))


def test_compare_to_dense_Predictions_GiveExactlyEvaluateModelsEvidence(trained_tiny):
    from workbench.analysis.curves import evaluate_model, predictions
    from workbench.prune.pruning import PruneSpec, make_masks
    from workbench.prune.scores import Scorer

    model, data = trained_tiny
    keep = make_masks(
        Scorer(model, data.val.images, data.val.labels), PruneSpec("magnitude", sparsity=0.5)
    ).keep
    pruned = apply_masks(model, keep)
    evidence = compare_to_dense(predictions(model, data), predictions(pruned, data))
    slow = evaluate_model(pruned, data.val, data.test, dense=model)
    assert evidence == {key: slow[key] for key in EVIDENCE_KEYS}


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda p: compare_to_dense(p, (p.val, p.test)), "pruned must be Predictions"),
        (
            lambda p: compare_to_dense(p, p, p.val_labels, p.test_labels),
            "takes the labels from the Predictions",
        ),
        (
            lambda p: compare_to_dense(
                p, Predictions(p.val, p.test, p.val_labels, 1 - p.test_labels, p.images)
            ),
            "different test_labels for the same images",
        ),
        (lambda p: Predictions(p.val, p.test, p.val_labels, p.test_labels, ""), "images must be the images'"),
        (
            lambda p: Predictions(p.val, p.test[:, :1], p.val_labels, p.test_labels, "x"),
            "test probabilities must",
        ),
    ],
)
def test_compare_to_dense_PredictionsMisused_AreRefused(call, pattern):
    rng = np.random.default_rng(14)
    val, val_labels = _scores(rng, 40)
    test, test_labels = _scores(rng, 40)
    with pytest.raises(ValueError, match=pattern):
        call(_tagged(val, test, val_labels, test_labels))


# --- a reference no better than chance gets no verdict (issue 25, item 10) --------------------


def test_compare_to_dense_ConstantDenseModel_NoVerdict_WarnsNamingTheCure():
    labels = np.array([0, 1] * 30)
    constant = _tagged(_binary(np.full(60, 0.5)), _binary(np.full(60, 0.5)), labels, labels)
    with pytest.warns(ChanceReferenceWarning, match="outputs are the same .*train.recalibrate_batchnorm"):
        evidence = compare_to_dense(constant, constant)
    assert evidence["dense_auc"] == evidence["auc"] == 0.5
    assert evidence["noninferiority"] == NO_VERDICT  # it said "non-inferior" (0.5 vs 0.5)


def test_compare_to_dense_DenseAtChance_NoVerdict_WarnsWithItsInterval():
    rng = np.random.default_rng(15)
    labels = np.array([0, 1] * 40)
    chance = _tagged(_binary(rng.random(80)), _binary(rng.random(80)), labels, labels)
    with pytest.warns(ChanceReferenceWarning, match=r"test AUC is 0\.\d+ \[0\.\d+, 0\.\d+\] on 80 images"):
        evidence = compare_to_dense(chance, chance)
    assert evidence["noninferiority"] == NO_VERDICT


def _constant_model(model):
    from workbench.model.registry import get_kernels

    return apply_masks(model, {name: np.zeros(k.shape, bool) for name, k in get_kernels(model).items()})


def test_evaluate_model_ConstantModel_WarnsItIsNoReference(trained_tiny):
    from workbench.analysis.curves import evaluate_model

    model, data = trained_tiny
    with pytest.warns(ChanceReferenceWarning, match="the model's outputs are the same"):
        metrics = evaluate_model(_constant_model(model), data.val, data.test)
    assert metrics["auc"] == 0.5


def test_evaluator_ConstantDenseModel_DenseAndEveryPointGetNoVerdict(trained_tiny):
    from workbench.analysis.curves import Evaluator
    from workbench.model.registry import get_kernels

    model, data = trained_tiny
    with pytest.warns(ChanceReferenceWarning, match="the dense model's outputs"):
        evaluator = Evaluator(_constant_model(model), data.val, data.test)
        point = evaluator.evaluate({name: np.ones(k.shape, bool) for name, k in get_kernels(model).items()})
    assert evaluator.dense_metrics["noninferiority"] == point["noninferiority"] == NO_VERDICT


# --- ranking metrics from unrounded probabilities (issue 25, item 12) -------------------------


def _saturated(rng, n=300, dtype=np.float64):
    """Saturated outputs: positives and half the negatives within 1e-7 of 1, as MobileNetV3Small's."""
    labels = rng.integers(0, 2, n)
    near_one = 1 - rng.integers(1, 400, n) * (1e-9 if dtype == np.float64 else 6e-8)
    p = np.where((labels == 1) | (rng.random(n) < 0.5), near_one, rng.random(n) * 0.9)
    return np.stack([1 - p, p], axis=1).astype(dtype), labels


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_validated_metrics_SaturatedProbabilities_AucEqualsScikitLearn(dtype):
    rng = np.random.default_rng(16)
    val, val_labels = _saturated(rng, dtype=dtype)
    test, test_labels = _saturated(rng, dtype=dtype)
    expected = roc_auc_score(test_labels, test[:, 1])
    assert validated_metrics(val, val_labels, test, test_labels)["auc"] == pytest.approx(expected, abs=1e-6)
    evidence = compare_to_dense(*[_tagged(val, test, val_labels, test_labels)] * 2)
    assert evidence["auc"] == evidence["dense_auc"] == pytest.approx(expected, abs=1e-6)
    assert auc(test, test_labels) == pytest.approx(expected, abs=1e-6)


_P = _binary([0.2, 0.7, 0.4, 0.9])


@pytest.mark.parametrize(
    "call, pattern",
    [
        (
            lambda: validated_metrics(_P, [0, 1, 0, 1], _P, [0, np.nan, 0, 1]),
            r"test labels must be class indices .* got NaN",
        ),
        (
            lambda: validated_metrics(_P, [0, 0.5, 0, 1], _P, [0, 1, 0, 1]),
            r"val labels must be class indices in \[0, 2\)",
        ),
        (lambda: clinical_metrics(_P, [0, 1, 0, 1], threshold=np.nan), "threshold must be None .* got nan"),
        (lambda: auc(np.where(_P > 0.85, np.nan, _P), [0, 1, 0, 1]), "probabilities must be finite"),
        (lambda: expected_calibration_error(_P, [0, 1, 2, 1]), r"labels must be class indices in \[0, 2\)"),
        (lambda: operating_threshold(_P, [0, 1, 0], 1), "val labels must be 4 class indices"),
        (
            lambda: changed_predictions(_P, _P[:3]),
            r"test probabilities \(4, 2\) and the pruned model's \(3, 2\)",
        ),
        (lambda: multilabel_metrics(_P, [[0, 1]] * 4, _P, [[0, 2]] * 4), "test labels must be 0/1 flags"),
    ],
)
def test_evaluate_InputGivingWrongNumbers_IsRefusedNamingTheArgument(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
