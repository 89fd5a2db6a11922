"""Curves over ε and sparsity grids, checked against the slow, independent path."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis.curves import Evaluator, Forward, curve, log_grid
from workbench.core.masks import epsilon_range
from workbench.core.metrics import clinical_metrics, operating_threshold, settle
from workbench.prune.pruning import PruneSpec, apply_masks, make_masks
from workbench.prune.scores import Scorer


@pytest.fixture
def setup(trained_tiny):
    model, data = trained_tiny
    return model, data, Scorer(model, data.val.images, data.val.labels), Evaluator(model, data.val, data.test)


def test_evaluator_MatchesPruningACopyAndPredicting(setup):
    model, data, scorer, evaluator = setup
    keep = make_masks(scorer, PruneSpec(criterion="magnitude", sparsity=0.6)).keep
    fast = evaluator.evaluate(keep)
    pruned = apply_masks(model, keep)
    val_probs = pruned.predict(data.val.images, verbose=0)
    test_probs = pruned.predict(data.test.images, verbose=0)
    slow = clinical_metrics(test_probs, data.test.labels, operating_threshold(val_probs, data.val.labels))
    np.testing.assert_allclose(fast["test_probs"], test_probs, atol=1e-5)
    for key in ("accuracy", "auc", "sensitivity", "specificity", "threshold"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-6), key


def test_evaluator_DenseMetrics_AreTheUnprunedModels(setup):
    model, data, _, evaluator = setup
    probs = model.predict(data.test.images, verbose=0)
    said = settle(probs)[:, 1] >= evaluator.dense_metrics["threshold"]  # decisions at the validated threshold
    assert evaluator.dense_metrics["accuracy"] == pytest.approx((said == data.test.labels).mean())


def test_curve_OverEpsilon_IsMonotoneAndStartsDense(setup):
    _, _, scorer, evaluator = setup
    low, high = epsilon_range(scorer.scores("gradient"))
    table = curve(scorer, evaluator, PruneSpec(criterion="gradient"), epsilons=log_grid(low, high, 12))
    assert len(table) == 12
    assert table["sparsity"].is_monotonic_increasing
    assert table["sparsity"].iloc[0] == 0.0
    assert table["accuracy"].iloc[0] == pytest.approx(evaluator.dense_metrics["accuracy"])
    assert {"sparsity/conv1", "sparsity/fc", "auc", "sensitivity", "ece", "changed", "guarded"} <= set(
        table.columns
    )


def test_curve_OverSparsity_HitsEachTarget(setup):
    _, _, scorer, evaluator = setup
    targets = np.array([0.0, 0.5, 0.9])
    table = curve(scorer, evaluator, PruneSpec(criterion="snip", scope="layerwise"), sparsities=targets)
    np.testing.assert_allclose(table["sparsity"], targets, atol=1e-3)
    assert table["target"].tolist() == targets.tolist()


def test_curve_NeedsExactlyOneGrid(setup):
    _, _, scorer, evaluator = setup
    with pytest.raises(ValueError, match="exactly one of epsilons= or sparsities="):
        curve(scorer, evaluator, PruneSpec())


def test_log_grid_StartsAtZero_AndRejectsBadBounds():
    grid = log_grid(1e-5, 1e-1, 5)
    assert grid[0] == 0.0 and grid[1] == pytest.approx(1e-5) and grid[-1] == pytest.approx(1e-1)
    with pytest.raises(ValueError, match="0 < low < high"):
        log_grid(0.0, 1.0)


def test_curve_RowsEqualEvaluatingEachPointAlone(setup):
    _, _, scorer, evaluator = setup
    grid = np.concatenate(
        [[0.0, 0.0], log_grid(*epsilon_range(scorer.scores("snip")), 6)]
    )  # a repeated point
    table = curve(scorer, evaluator, PruneSpec(criterion="snip"), epsilons=grid)
    for value, row in zip(grid, table.itertuples(), strict=True):
        alone = evaluator.evaluate(make_masks(scorer, PruneSpec(criterion="snip", epsilon=value)).keep)
        assert row.accuracy == alone["accuracy"] and row.auc == pytest.approx(alone["auc"])


def test_evaluator_Structured_MatchesApplyMasksStructured(setup):
    model, data, scorer, evaluator = setup
    spec = PruneSpec(criterion="taylor", granularity="structured", sparsity=0.5, scope="layerwise")
    keep = make_masks(scorer, spec).keep
    fast = evaluator.evaluate(keep, structured=True)
    slow = apply_masks(model, keep, structured=True).predict(data.test.images, verbose=0)
    np.testing.assert_allclose(fast["test_probs"], slow, atol=1e-5)
    unstructured = evaluator.evaluate(keep)["test_probs"]  # biases of dead units still on
    assert not np.allclose(unstructured, slow, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda keep: {**keep, "nope": keep[next(iter(keep))]}, "unknown layers"),
        (lambda keep: {name: mask.astype(float) * 0.5 for name, mask in keep.items()}, "boolean"),
        (lambda keep: {name: mask[..., :1] for name, mask in keep.items()}, "shape"),
    ],
)
def test_evaluator_BadMasks_RaiseValueErrorNamingTheProblem(setup, bad, message):
    model, _, _, evaluator = setup
    keep = {name: np.ones(kernel.shape, bool) for name, kernel in evaluator.dense_kernels.items()}
    with pytest.raises(ValueError, match=message):
        evaluator.evaluate(bad(keep))


def test_evaluators_SharingAForward_TraceOnceAndLeaveTheModelUntouched(setup):
    model, data, scorer, evaluator = setup
    before = [np.array(v) for v in model.weights]
    subset = Evaluator(model, data.val, data.val, forward=evaluator.forward)  # another batch size
    keep = make_masks(scorer, PruneSpec(criterion="magnitude", sparsity=0.9)).keep
    evaluator.evaluate(keep)
    subset.evaluate(keep, structured=True)
    assert evaluator.forward._function.experimental_get_tracing_count() == 1
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))  # masks are arguments, never assigned


def test_evaluator_ModelEditedAfterwards_KeepsItsSnapshot(setup):
    model, data, _, evaluator = setup
    dense = evaluator.dense_metrics["test_probs"].copy()
    kernel = model.layers[0].kernel
    original = np.asarray(kernel)
    kernel.assign(np.zeros_like(original))
    try:
        keep = {name: np.ones(shape, bool) for name, shape in evaluator.shapes.items()}
        np.testing.assert_array_equal(evaluator.evaluate(keep)["test_probs"], dense)
    finally:
        kernel.assign(original)


def test_forward_Rows_FewLargeImagesOrManySmallOnesPerChunk(setup):
    forward = setup[3].forward
    assert forward.rows(np.zeros((1, 64, 64, 3))) == 128
    assert forward.rows(np.zeros((1, 224, 224, 3))) == 10  # a backbone's activations stay small
    assert forward.rows(np.zeros((1, 28, 28, 1))) == Forward.CHUNK  # capped


def test_evaluator_ProgressRaisesCancelled_StopsThePassAfterTheFirstChunk(setup, monkeypatch):
    from workbench.analysis.curves import Forward
    from workbench.core.errors import Cancelled

    _, data, _, evaluator = setup
    monkeypatch.setattr(Forward, "CHUNK", 4)
    calls = []

    def stop(done, total):
        calls.append((done, total))
        raise Cancelled("overtaken")

    keep = {name: np.ones(shape, bool) for name, shape in evaluator.shapes.items()}
    with pytest.raises(Cancelled):
        evaluator.evaluate(keep, progress=stop)
    (done, chunks), *later = calls
    assert done == 1 and chunks > 1 and not later, "stopped after the first chunk, before the second"


def test_evaluate_model_ADenseReferenceWithAnotherHead_IsReadThroughItsOwn(tiny_dataset):
    """The same weights as logits: the reference was read through the pruned model's softmax head."""
    from conftest import tiny_head_model

    from workbench.analysis.curves import evaluate_model

    softmax, logits = tiny_head_model(2, "softmax"), tiny_head_model(2, None)
    logits.set_weights(softmax.get_weights())
    data = tiny_dataset
    metrics = evaluate_model(softmax, data.val, data.test, dense=logits)
    assert metrics["auc_difference"] == 0.0 and len(metrics["changed"]) == 0


def test_evaluate_model_TheDataset_GivesTheMetricsOfItsValAndTestSplits(trained_tiny):
    """A newcomer's line after the README's example: it failed with "missing 1 required positional
    argument: 'test'" while fine_tune took the Dataset."""
    from workbench.analysis.curves import evaluate_model

    model, data = trained_tiny
    pruned = apply_masks(model, make_masks(Scorer(model, data.val), PruneSpec(sparsity=0.5)).keep)
    by_dataset = evaluate_model(pruned, data, dense=model)
    by_splits = evaluate_model(pruned, data.val, data.test, dense=model)
    assert by_dataset["auc"] == by_splits["auc"] and by_dataset["threshold"] == by_splits["threshold"]
    assert by_dataset["noninferiority"] == by_splits["noninferiority"]


def test_scorer_ASplit_ScoresAsItsImagesAndLabels(trained_tiny):
    model, data = trained_tiny
    by_split = Scorer(model, data.val).scores("gradient")
    by_arrays = Scorer(model, data.val.images, data.val.labels).scores("gradient")
    assert all(np.array_equal(by_split[name], by_arrays[name]) for name in by_arrays)


def test_evaluator_TheDataset_EvaluatesAsItsValAndTestSplits(setup):
    model, data, _, evaluator = setup
    assert Evaluator(model, data).dense_metrics["auc"] == evaluator.dense_metrics["auc"]


def test_file_metrics_TheDataset_GivesTheMetricsOfItsSplits(trained_tiny, tmp_path):
    from workbench.prune.export import file_metrics, save_keras

    model, data = trained_tiny
    path = save_keras(model, tmp_path / "m.keras")
    assert file_metrics(path, data)["auc"] == file_metrics(path, data.val, data.test)["auc"]
