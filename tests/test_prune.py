"""Masked copies, exact zeros through Adam and save/load, structured units, gradual schedules."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_sparsity_pinned

from workbench.model.compat import keras
from workbench.model.registry import get_kernels
from workbench.model.train import Recipe
from workbench.prune.pruning import (
    PruneSpec,
    apply_masks,
    fine_tune,
    make_masks,
    masks_from_weights,
    polynomial_sparsity,
    prune_gradually,
)
from workbench.prune.scores import Scorer


def _scorer(model, data):
    return Scorer(model, data.val.images, data.val.labels)


def test_apply_masks_LeavesTheBaselineUnchanged(trained_tiny):
    model, data = trained_tiny
    before = [w.copy() for w in model.get_weights()]
    result = make_masks(_scorer(model, data), PruneSpec(criterion="magnitude", sparsity=0.8))
    pruned = apply_masks(model, result.keep)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert pruned is not model
    assert_sparsity_pinned(pruned, result.keep)


def test_apply_masks_ZerosExactlyThePrunedEntries(trained_tiny):
    model, data = trained_tiny
    keep = make_masks(_scorer(model, data), PruneSpec(criterion="snip", sparsity=0.6)).keep
    dense, pruned = get_kernels(model), get_kernels(apply_masks(model, keep))
    for name in dense:
        np.testing.assert_array_equal(pruned[name], dense[name] * keep[name])


def test_fine_tune_WithAdam_KeepsPrunedWeightsExactlyZero_ThroughSaveAndLoad(trained_tiny, tmp_path):
    model, data = trained_tiny
    keep = make_masks(_scorer(model, data), PruneSpec(criterion="gradient", sparsity=0.7)).keep
    pruned = apply_masks(model, keep)
    before = get_kernels(pruned)
    history = fine_tune(
        pruned, keep, data, Recipe(epochs=3, batch_size=8, learning_rate=1e-2), progress=False
    )
    assert len(history["loss"]) == 3
    assert_sparsity_pinned(pruned, keep)
    changed = [not np.array_equal(before[n][keep[n]], k[keep[n]]) for n, k in get_kernels(pruned).items()]
    assert all(changed), "the kept weights should have trained"
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert_sparsity_pinned(loaded, keep)
    recovered = masks_from_weights(loaded)
    # training can't create new zeros in practice, so the zeros are exactly the mask
    assert all(np.array_equal(recovered[n], keep[n]) for n in keep)
    fine_tune(loaded, recovered, data, Recipe(epochs=1, batch_size=8, learning_rate=1e-2), progress=False)
    assert_sparsity_pinned(loaded, keep)


def test_fine_tune_SetsBatchNormStatistics_ToTheFineTunedNetworksOwn(tiny_dataset):
    """A short fine-tune left the moving statistics part-way (momentum 0.99), so the model was
    validated and used with statistics of neither the old nor the new network."""
    from conftest import tiny_resnet

    from workbench.model.registry import flat_layers

    model, data = tiny_resnet(), tiny_dataset
    norm = next(layer for layer in flat_layers(model) if isinstance(layer, keras.layers.BatchNormalization))
    before_norm = keras.Model(model.inputs, norm.input)  # what the first BatchNorm normalises
    keep = make_masks(_scorer(model, data), PruneSpec(criterion="magnitude", sparsity=0.5)).keep
    apply_masks(model, keep)
    fine_tune(model, keep, data, Recipe(epochs=1, batch_size=8, learning_rate=1e-2), progress=False)
    features = np.asarray(before_norm(data.train.images, training=True))
    expected = features.reshape(-1, features.shape[-1]).mean(axis=0)
    np.testing.assert_allclose(np.asarray(norm.moving_mean), expected, rtol=1e-4, atol=1e-5)
    assert_sparsity_pinned(model, keep)


def test_structured_masks_RemoveWholeFiltersAndTheirBiases(trained_tiny):
    model, data = trained_tiny
    spec = PruneSpec(criterion="taylor", granularity="structured", sparsity=0.5, scope="layerwise")
    keep = make_masks(_scorer(model, data), spec).keep
    pruned = apply_masks(model, keep, structured=True)
    kernel, bias = (np.asarray(w) for w in pruned.get_layer("conv2").weights)
    dead = ~keep["conv2"].reshape(-1, 8).any(axis=0)
    assert dead.sum() == 4
    assert np.all(kernel[..., dead] == 0) and np.all(bias[dead] == 0)
    assert np.all(keep["conv2"].reshape(-1, 8)[:, ~dead])  # kept filters keep every weight


def test_apply_masks_WrongMaskShape_RaisesValueError(trained_tiny):
    model, _ = trained_tiny
    keep = {n: np.ones(k.shape, bool) for n, k in get_kernels(model).items()}
    keep["fc"] = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="mask of layer 'fc' must have the kernel's shape"):
        apply_masks(model, keep)


def test_polynomial_sparsity_FollowsTheCubicRamp():
    ramp = dict(initial=0.0, final=0.9, begin_step=10, end_step=110)
    assert polynomial_sparsity(0, **ramp) == 0.0
    assert polynomial_sparsity(110, **ramp) == pytest.approx(0.9)
    assert polynomial_sparsity(500, **ramp) == pytest.approx(0.9)
    assert polynomial_sparsity(60, **ramp) == pytest.approx(0.9 - 0.9 * 0.5**3)  # tfmot's formula
    values = [polynomial_sparsity(s, **ramp) for s in range(0, 120)]
    assert np.all(np.diff(values) >= 0)
    with pytest.raises(ValueError, match="end_step must be > begin_step"):
        polynomial_sparsity(0, initial=0.0, final=0.5, begin_step=5, end_step=5)


@pytest.mark.parametrize("criterion", ["magnitude", "gradient"])
def test_prune_gradually_ReachesTheFinalSparsityExactly_AndOnlyTightens(trained_tiny, criterion):
    model, data = trained_tiny
    spec = PruneSpec(criterion=criterion, sparsity=0.75, scope="layerwise")
    before = [w.copy() for w in model.get_weights()]
    pruned, history, ramp = prune_gradually(
        model, lambda m: _scorer(m, data), spec, data, Recipe(epochs=3, batch_size=8), progress=False
    )
    final_keep = masks_from_weights(pruned)
    for kernel in get_kernels(pruned).values():
        assert 1 - np.count_nonzero(kernel) / kernel.size == pytest.approx(0.75, abs=1 / kernel.size)
    steps, sparsities = zip(*ramp, strict=True)
    assert sparsities[0] == 0.0 and sparsities[-1] == pytest.approx(0.75)
    assert np.all(np.diff(sparsities) >= 0)
    assert len(history["loss"]) == 3
    assert_sparsity_pinned(pruned, final_keep)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_structured_masks_NeverRemoveTheOutputUnits_AndHitTheTargetElsewhere(trained_tiny):
    model, data = trained_tiny
    spec = PruneSpec(criterion="magnitude", granularity="structured", sparsity=0.5, scope="layerwise")
    keep = make_masks(_scorer(model, data), spec).keep
    assert keep["out"].all()  # the two class logits survive
    for name, units in (("conv1", 4), ("conv2", 8), ("fc", 16)):
        alive = keep[name].reshape(-1, units).any(axis=0)
        assert alive.sum() == units // 2, name


def test_prune_spec_DerivesStructuredAndByEpsilon():
    assert PruneSpec(granularity="structured").structured and not PruneSpec().structured
    assert PruneSpec(epsilon=1e-3).by_epsilon and PruneSpec().by_epsilon
    assert not PruneSpec(sparsity=0.5).by_epsilon


def test_prune_spec_Replace_IsValidatedToo():
    from dataclasses import replace

    with pytest.raises(ValueError, match="sparsity"):
        replace(PruneSpec(sparsity=0.5), sparsity=1.5)


@pytest.mark.parametrize("shorthand", [False, True], ids=["fine_tune", "prune_gradually"])
def test_gradual_structured_StaysTheExactMaskedReference_BiasesAndBatchNormPinned(tiny_dataset, shorthand):
    from conftest import tiny_resnet

    from workbench.model.train import compile_model, fit
    from workbench.prune.pruning import Gradual, copy_model

    model = compile_model(tiny_resnet())
    fit(model, tiny_dataset, Recipe(epochs=1, batch_size=8), progress=False)
    spec = PruneSpec(criterion="magnitude", granularity="structured", sparsity=0.5, scope="layerwise")
    recipe = Recipe(epochs=2, batch_size=8)
    scorer_for = lambda m: _scorer(m, tiny_dataset)  # noqa: E731
    if shorthand:  # neither says structured=True: the structured spec implies it
        pruned, _, _ = prune_gradually(model, scorer_for, spec, tiny_dataset, recipe, progress=False)
    else:
        pruned = copy_model(model)
        dense = {name: np.ones(kernel.shape, bool) for name, kernel in get_kernels(pruned).items()}
        fine_tune(pruned, dense, tiny_dataset, recipe, schedule=Gradual(scorer_for, spec), progress=False)

    keep = masks_from_weights(pruned)
    assert any(not k.reshape(-1, k.shape[-1]).any(axis=0).all() for k in keep.values()), "units were pruned"
    reference = apply_masks(pruned, keep, structured=True)  # dead units' biases and γ/β zeroed
    images = tiny_dataset.test.images
    np.testing.assert_allclose(
        pruned.predict(images, verbose=0), reference.predict(images, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize("granularity", ["unstructured", "structured"])
def test_thresholds_of_MasksMadeByAnotherRoute_EqualTheThresholdsTheSelectionReports(granularity):
    from workbench.core.masks import thresholds_of, unit_scores
    from workbench.model.registry import LayerInfo
    from workbench.prune.pruning import masks_from_scores

    infos = [LayerInfo("conv", "Conv2D", (3, 3, 2, 8), 1), LayerInfo("fc", "Dense", (8, 3), 1)]
    rng = np.random.default_rng(0)
    scores = {info.name: rng.random(info.shape) for info in infos}
    if granularity == "structured":
        scores = unit_scores(scores, {info.name: info.units_shape for info in infos})
    spec = PruneSpec(granularity=granularity, sparsity=0.4, scope="layerwise")
    result = masks_from_scores(scores, spec, infos)  # kernel-shaped masks, as an allocation's are
    assert thresholds_of(scores, result.keep, infos, spec.structured) == result.thresholds
