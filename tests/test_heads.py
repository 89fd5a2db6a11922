"""Heads: detected from the last layer, the loss the model was trained with, probabilities for metrics."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import assert_sparsity_pinned, multilabel_dataset, tiny_head_model
from sklearn.metrics import roc_auc_score, roc_curve

from workbench.analysis.curves import Evaluator, curve, evaluate_model, log_grid
from workbench.model.builders import check_model_fits, load_user_model
from workbench.model.compat import keras, tf
from workbench.model.heads import Head, detect_head
from workbench.model.registry import get_kernels
from workbench.model.train import Recipe, compile_model, fit
from workbench.prune.pruning import PruneSpec, apply_masks, fine_tune, make_masks
from workbench.prune.scores import Scorer


@pytest.mark.parametrize(
    ("units", "activation", "kind"),
    [(2, "softmax", "softmax"), (3, None, "logits"), (1, "sigmoid", "sigmoid"), (4, "sigmoid", "multilabel")],
)
def test_detect_head_ReadsTheLastLayersActivation(units, activation, kind):
    assert detect_head(tiny_head_model(units, activation)) == Head(kind, units)


def test_detect_head_SoftmaxLayerAppended_AndNestedModel_AreRead():
    appended = keras.Sequential([tiny_head_model(2, None), keras.layers.Softmax()])
    nested = keras.Sequential([keras.Input((24, 24, 1)), tiny_head_model(1, "sigmoid")])
    assert detect_head(appended).kind == "softmax"
    assert detect_head(nested).kind == "sigmoid"


def test_detect_head_OneLinearUnit_IsRefused_UnlessTheCompileConfigSaysLogits():
    model = tiny_head_model(1, None)
    with pytest.raises(ValueError, match="cannot tell what the model's output means.*pass head="):
        detect_head(model)
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    assert detect_head(model).kind == "sigmoid_logits"


def test_copies_KeepAHeadReadFromTheLoss_SoTheyNeedNoHeadArgument(tiny_dataset):
    model = tiny_head_model(1, None)
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    keep = {name: np.ones(k.shape, bool) for name, k in get_kernels(model).items()}
    pruned = apply_masks(model, keep)
    assert detect_head(pruned).kind == "sigmoid_logits" and pruned.optimizer is None
    fine_tune(pruned, keep, tiny_dataset, Recipe(epochs=1, batch_size=8), progress=False)
    assert evaluate_model(pruned, tiny_dataset.val, tiny_dataset.test)["auc"] is not None


def test_detect_head_LinearUnitsCompiledWithBinaryLogits_AreMultilabelLogits():
    model = tiny_head_model(3, None)
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    assert detect_head(model).kind == "multilabel_logits"


def test_detect_head_Override_WinsAndBadOverridesAreRefused():
    assert detect_head(tiny_head_model(2, "relu"), "logits").kind == "logits"
    with pytest.raises(ValueError, match="head must be one of"):
        detect_head(tiny_head_model(2), "probabilities")
    with pytest.raises(ValueError, match="head 'sigmoid' needs exactly one output unit"):
        detect_head(tiny_head_model(2), "sigmoid")
    with pytest.raises(ValueError, match="activation 'relu'"):
        detect_head(tiny_head_model(2, "relu"))


@pytest.mark.parametrize(
    "activation, head", [("softmax", "logits"), ("sigmoid", "multilabel_logits"), (None, "softmax")]
)
def test_detect_head_Override_ThatContradictsTheLastLayer_IsRefused(activation, head):
    """head='logits' on a softmax model applied softmax twice: probabilities squeezed towards 1/C."""
    model = tiny_head_model(2, activation)
    with pytest.raises(ValueError, match=f"head='{head}' does not fit the model's last layer"):
        detect_head(model, head)


def test_load_user_model_ReadsTheHeadFromTheSavedCompileConfig(tmp_path, tiny_dataset):
    model = tiny_head_model(1, None)
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.save(tmp_path / "logit.keras")
    loaded = load_user_model(tmp_path / "logit.keras", tiny_dataset)
    assert detect_head(loaded).kind == "sigmoid_logits"
    tiny_head_model(1, None).save(tmp_path / "bare.keras")
    with pytest.raises(ValueError, match="bare.keras: cannot tell"):
        load_user_model(tmp_path / "bare.keras", tiny_dataset)


# --- a logits model is the same model as its softmax twin -----------------------------------


def _logits_and_softmax_twin():
    logits = tiny_head_model(2, None, seed=3)
    twin = tiny_head_model(2, "softmax", seed=99)
    twin.set_weights(logits.get_weights())
    return logits, twin


def _softmax_appended(logits):
    copy = tiny_head_model(2, None, seed=99)
    copy.set_weights(logits.get_weights())
    return keras.Sequential([copy, keras.layers.Softmax(name="softmax")])


def test_logits_model_GivesExactlyTheScoresOfTheSameWeightsWithSoftmax(tiny_dataset):
    logits, twin = _logits_and_softmax_twin()
    images, labels = tiny_dataset.train.images, tiny_dataset.train.labels
    for other in (twin, _softmax_appended(logits)):
        for criterion in ("gradient", "taylor"):
            ours = Scorer(logits, images, labels).scores(criterion)
            theirs = Scorer(other, images, labels).scores(criterion)
            for name in ours:
                np.testing.assert_array_equal(ours[name], theirs[name], err_msg=f"{criterion} {name}")


def test_logits_model_GivesExactlyTheMetricsOfTheSameWeightsWithSoftmax(tiny_dataset):
    logits, twin = _logits_and_softmax_twin()
    ours = Evaluator(logits, tiny_dataset.val, tiny_dataset.test)
    theirs = Evaluator(twin, tiny_dataset.val, tiny_dataset.test)
    np.testing.assert_array_equal(ours.dense_test, theirs.dense_test)
    keep = make_masks(
        Scorer(twin, tiny_dataset.val.images, tiny_dataset.val.labels), PruneSpec(sparsity=0.5)
    ).keep
    a, b = ours.evaluate(keep), theirs.evaluate(keep)
    for key in ("accuracy", "auc", "sensitivity", "specificity", "threshold", "ece"):
        assert a[key] == b[key] or (np.isnan(a[key]) and np.isnan(b[key])), key
    assert np.allclose(ours.dense_test.sum(axis=1), 1.0)  # probabilities, not logits
    appended = Evaluator(_softmax_appended(logits), tiny_dataset.val, tiny_dataset.test)
    np.testing.assert_array_equal(ours.dense_test, appended.dense_test)


# --- one sigmoid unit -----------------------------------------------------------------------


def _reference_abs_gradients(model, images, targets, loss):
    with tf.GradientTape() as tape:
        value = loss(targets, model(images, training=False))
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    return [np.abs(g.numpy()) for g in tape.gradient(value, kernels)]


def test_sigmoid_model_ScoresAreGradientsOfBinaryCrossEntropy(tiny_dataset):
    model = tiny_head_model(1, "sigmoid")
    images, labels = tiny_dataset.val.images, tiny_dataset.val.labels  # one batch
    ours = Scorer(model, images, labels).scores("gradient")

    def bce(y, p):  # written out: an independent reference
        p = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
        return -tf.reduce_mean(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))

    reference = _reference_abs_gradients(model, images, labels.reshape(-1, 1).astype("float32"), bce)
    for got, want in zip(ours.values(), reference, strict=True):
        # float32 sums in another order (oneDNN): tiny entries may differ by 1e-9, far below a wrong loss
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_sigmoid_model_MetricsAgreeWithScikitLearn_AndFineTuneKeepsZeros(tiny_dataset):
    model = compile_model(tiny_head_model(1, "sigmoid"))
    fit(model, tiny_dataset, Recipe(epochs=2, batch_size=8), progress=False)
    check_model_fits(model, tiny_dataset)
    evaluator = Evaluator(model, tiny_dataset.val, tiny_dataset.test)
    p = model.predict(tiny_dataset.test.images, verbose=0)[:, 0]
    assert evaluator.dense_metrics["auc"] == pytest.approx(roc_auc_score(tiny_dataset.test.labels, p))
    keep = make_masks(
        Scorer(model, tiny_dataset.val.images, tiny_dataset.val.labels), PruneSpec(sparsity=0.6)
    ).keep
    pruned = apply_masks(model, keep)
    fine_tune(pruned, keep, tiny_dataset, Recipe(epochs=1, batch_size=8), progress=False)
    assert_sparsity_pinned(pruned, keep)
    assert evaluate_model(pruned, tiny_dataset.val, tiny_dataset.test)["auc"] >= 0.0


# --- L sigmoid units (multi-label) ----------------------------------------------------------


@pytest.fixture(scope="module")
def trained_multilabel():
    data = multilabel_dataset()
    model = compile_model(tiny_head_model(3, "sigmoid"))
    fit(model, data, Recipe(epochs=3, batch_size=8), progress=False)
    return model, data


def test_multilabel_model_FitsAMultilabelDataset_AndScoresByBinaryCrossEntropy(trained_multilabel):
    model, data = trained_multilabel
    assert check_model_fits(model, data).kind == "multilabel"
    images, labels = data.val.images, data.val.labels
    ours = Scorer(model, images, labels, batch_size=len(images)).scores("gradient")
    reference = _reference_abs_gradients(
        model, images, labels.astype("float32"), keras.losses.BinaryCrossentropy()
    )
    for got, want in zip(ours.values(), reference, strict=True):
        # float32 sums in another order (oneDNN): tiny entries may differ by 1e-9, far below a wrong loss
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_multilabel_metrics_AgreeWithScikitLearn_PerLabelAndMacro(trained_multilabel):
    model, data = trained_multilabel
    metrics = Evaluator(model, data.val, data.test).dense_metrics
    val_p = model.predict(data.val.images, verbose=0)
    test_p = model.predict(data.test.images, verbose=0)
    expected_auc = [roc_auc_score(data.test.labels[:, j], test_p[:, j]) for j in range(3)]
    np.testing.assert_allclose(metrics["auc_per_label"], expected_auc, rtol=1e-6)
    assert metrics["auc"] == pytest.approx(roc_auc_score(data.test.labels, test_p, average="macro"))
    for j in range(3):
        fpr, tpr, thresholds = roc_curve(data.val.labels[:, j], val_p[:, j])
        threshold = np.clip(thresholds[np.argmax(tpr - fpr)], 0, 1)
        said, truth = test_p[:, j] >= threshold, data.test.labels[:, j] == 1
        assert metrics["threshold_per_label"][j] == pytest.approx(threshold)
        assert metrics["sensitivity_per_label"][j] == pytest.approx((said & truth).sum() / truth.sum())
        assert metrics["specificity_per_label"][j] == pytest.approx((~said & ~truth).sum() / (~truth).sum())


def test_multilabel_evidence_IsDeLongsOfTheMeanOverLabels_PairedWithDense(trained_multilabel):
    from workbench.core.stats import compare_macro_auc, macro_auc_ci
    from workbench.view.dashboard import evidence_html

    model, data = trained_multilabel
    evaluator = Evaluator(model, data.val, data.test)
    scorer = Scorer(model, data.train.images, data.train.labels)
    keep = make_masks(scorer, PruneSpec(sparsity=0.95)).keep
    metrics = evaluator.evaluate(keep)
    pruned = apply_masks(model, keep).predict(data.test.images, verbose=0)
    dense = model.predict(data.test.images, verbose=0)
    assert metrics["auc"] == pytest.approx(roc_auc_score(data.test.labels, pruned, average="macro"), abs=1e-6)
    assert metrics["dense_auc"] == pytest.approx(
        roc_auc_score(data.test.labels, dense, average="macro"), abs=1e-6
    )
    expected = compare_macro_auc(data.test.labels, dense, pruned)
    assert metrics["auc_difference"] == pytest.approx(expected["difference"], abs=1e-6)
    assert metrics["auc_difference"] < 0, "the fixture's pruning should cost AUC"
    assert metrics["auc_difference_low"] < metrics["auc_difference"] < metrics["auc_difference_high"]
    assert (metrics["auc_low"], metrics["auc_high"]) == pytest.approx(
        macro_auc_ci(pruned, data.test.labels)[1:], abs=1e-6
    )
    assert metrics["noninferiority"] in ("non-inferior", "inferior", "inconclusive")
    assert "mean over labels: AUC" in re.sub(r"<[^>]+>", "", evidence_html(metrics))  # as the page shows it
    assert "auc_low" not in evaluator.evaluate(keep, evidence=False)  # curve points: no intervals


def test_multilabel_model_CurveAndFineTune_Work(trained_multilabel):
    model, data = trained_multilabel
    scorer = Scorer(model, data.train.images, data.train.labels)
    evaluator = Evaluator(model, data.val, data.test)
    table = curve(scorer, evaluator, PruneSpec(), epsilons=log_grid(1e-6, 1e-1, 6))
    assert table["auc"].notna().all() and table["sparsity"].is_monotonic_increasing
    keep = make_masks(scorer, PruneSpec(sparsity=0.5)).keep
    pruned = apply_masks(model, keep)
    fine_tune(pruned, keep, data, Recipe(epochs=1, batch_size=8), progress=False)
    assert_sparsity_pinned(pruned, keep)


def test_multilabel_labels_OfTheWrongShape_AreRefused(trained_multilabel):
    model, data = trained_multilabel
    with pytest.raises(ValueError, match=r"calibration labels must be 0/1 of shape \(N, 3\)"):
        Scorer(model, data.val.images, data.val.labels[:, :2])


def test_load_user_model_LeavesNoOptimizer_SoTrainingUsesTheRecipesLearningRate(tmp_path, tiny_dataset):
    tiny_head_model(1, "sigmoid").save(tmp_path / "mine.keras")
    loaded = load_user_model(tmp_path / "mine.keras", tiny_dataset)
    assert loaded.optimizer is None
    fit(loaded, tiny_dataset, Recipe(epochs=1, batch_size=8, learning_rate=2e-4), progress=False)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(2e-4)
