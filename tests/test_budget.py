"""Allocation to a goal: budgets are met on the real joint mask, guards and coupling hold, tolerances too."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_cnn, tiny_resnet
from sklearn.metrics import roc_auc_score

from workbench.analysis.budget import allocate, allocate_from_table
from workbench.analysis.sensitivity import Subject, sensitivity
from workbench.core.errors import Cancelled
from workbench.model.cost import flops
from workbench.prune.pruning import apply_masks
from workbench.prune.slim import couple_masks, mask_structured

GRID = (0.25, 0.5, 0.75, 0.9)


@pytest.fixture(scope="module")
def resnet(tiny_dataset, tmp_path_factory):
    from workbench.model.train import Recipe, compile_model, fit

    model = compile_model(tiny_resnet())
    fit(model, tiny_dataset, Recipe(epochs=2, batch_size=8), progress=False)
    subject = Subject.build(model, tiny_dataset)
    cache = tmp_path_factory.mktemp("sensitivity")
    return subject, sensitivity(subject, "taylor", "structured", GRID, cache=cache, progress=False)


@pytest.fixture(scope="module")
def cnn(_trained_tiny_once, tiny_dataset, tmp_path_factory):
    """The trained tiny CNN's Subject and unstructured table, shared: allocating only reads them
    (fine-tuning works on a pruned copy)."""
    from workbench.prune.pruning import copy_model

    subject = Subject.build(copy_model(_trained_tiny_once), tiny_dataset)
    cache = tmp_path_factory.mktemp("sensitivity")
    return subject, sensitivity(subject, "taylor", "unstructured", GRID, cache=cache, progress=False)


def _units_alive(mask):
    return mask.reshape(-1, mask.shape[-1]).any(axis=0)


def _answer(subject, table, method, goal, value, **options):
    """``allocate``'s answer for a method, or the table's answer over the output distortion alone."""
    if method == "distortion":
        return allocate_from_table(table, subject, goal, value, "distortion")
    return allocate(
        subject, goal, value, method=method, table=table if method == "sensitivity" else None, **options
    )


@pytest.mark.parametrize("method", ["sensitivity", "distortion", "uniform", "global"])
@pytest.mark.parametrize("budget", [0.5, 0.25])
def test_flops_budget_IsMet_GuardHolds_AndCoupledChannelsAgree(resnet, method, budget):
    subject, table = resnet
    allocation = _answer(subject, table, method, "flops", budget)
    counts = flops(subject.model, allocation.keep)  # the reference, recomputed from the masks alone
    assert counts["filter_pruned"] / counts["dense"] == pytest.approx(allocation.flops)
    assert allocation.flops <= budget
    assert allocation.flops > budget / 3, "the budget should be used, not thrown away"
    for name, mask in allocation.keep.items():
        assert _units_alive(mask).sum() >= 1, f"{name} lost its guard"
    assert all(
        np.array_equal(allocation.keep[n], m)
        for n, m in couple_masks(subject.model, allocation.keep, "all").items()
    )
    assert _units_alive(allocation.keep["logits"]).all()


def test_flops_allocation_Validation_MatchesTheMaskedReference(resnet):
    subject, table = resnet
    allocation = allocate(subject, "flops", 0.5, table=table)
    probs = apply_masks(subject.model, allocation.keep, structured=True).predict(
        subject.val.images, verbose=0
    )
    assert allocation.val_auc == pytest.approx(roc_auc_score(subject.val.labels, probs[:, 1]), abs=1e-6)
    assert mask_structured(subject.model, allocation.keep) is not None  # slim accepts it as structured


@pytest.fixture(scope="module")
def guarded(cnn, tmp_path_factory):
    """The tiny CNN's unstructured table with a guard of 2 weights per layer (shared, read only)."""
    subject, _ = cnn
    cache = tmp_path_factory.mktemp("guarded")
    table = sensitivity(subject, "taylor", "unstructured", GRID, min_keep=2, cache=cache, progress=False)
    return subject, table


@pytest.mark.parametrize("method", ["sensitivity", "distortion", "uniform", "global"])
def test_params_budget_IsMet_AndEveryLayerKeepsMinKeep(guarded, method):
    subject, table = guarded
    allocation = _answer(subject, table, method, "params", 0.2, min_keep=2)
    kept = sum(int(m.sum()) for m in allocation.keep.values())
    assert kept / sum(m.size for m in allocation.keep.values()) == pytest.approx(allocation.params)
    assert allocation.params <= 0.2
    assert all(mask.sum() >= 2 for mask in allocation.keep.values()), "a layer lost its guard of 2"


def test_params_budget_TheTablesAnswer_SpendsItsBudgetUnevenly(cnn):
    subject, table = cnn
    allocation = allocate_from_table(table, subject, "params", 0.2)
    assert allocation.candidate == "table"
    assert len({round(s, 2) for s in allocation.layer_sparsity.values()}) > 1


@pytest.mark.parametrize("goal, value", [("flops", 0.5), ("flops", 0.25)])
def test_sensitivity_Budget_IsNeverWorseOnValidation_ThanEitherReference(resnet, goal, value):
    subject, table = resnet
    chosen = allocate(subject, goal, value, table=table)
    references = [allocate(subject, goal, value, method=m) for m in ("uniform", "global")]
    table_answer = allocate_from_table(table, subject, goal, value)
    distortion_answer = allocate_from_table(table, subject, goal, value, "distortion")
    assert distortion_answer.candidate == "distortion"
    assert chosen.method == "sensitivity"
    answers = [*references, table_answer, distortion_answer]
    assert chosen.val_auc >= max(a.val_auc for a in answers) - 1e-12
    assert chosen.flops <= value
    winner = dict(zip(("uniform", "global", "table", "distortion"), answers, strict=True))[chosen.candidate]
    assert all(np.array_equal(chosen.keep[n], winner.keep[n]) for n in chosen.keep)


def test_sensitivity_Tolerance_KeepsTheCheapestCandidateWithinIt(cnn):
    subject, table = cnn
    options = dict(granularity="unstructured")
    chosen = allocate(subject, "tolerance", 0.02, table=table, **options)
    others = [allocate(subject, "tolerance", 0.02, method=m, **options) for m in ("uniform", "global")]
    tables = [allocate_from_table(table, subject, "tolerance", 0.02, m) for m in ("drop", "distortion")]
    assert chosen.cost <= min(a.cost for a in [*others, *tables])
    assert chosen.val_drop <= 0.02 + 1e-9


@pytest.mark.parametrize("method", ["sensitivity", "uniform", "global"])
def test_tolerance_IsRespectedOnValidation_ByTheReallyPrunedModel(cnn, method):
    subject, table = cnn
    dense = roc_auc_score(subject.val.labels, subject.model.predict(subject.val.images, verbose=0)[:, 1])
    allocation = allocate(
        subject,
        "tolerance",
        0.02,
        method=method,
        granularity="unstructured",
        table=table if method == "sensitivity" else None,
    )
    probs = apply_masks(subject.model, allocation.keep).predict(subject.val.images, verbose=0)[:, 1]
    assert dense - roc_auc_score(subject.val.labels, probs) <= 0.02 + 1e-9
    assert allocation.params < 1.0, "a tolerance this loose allows some pruning"


def test_bad_goals_NameTheArgument(cnn):
    subject, table = cnn
    with pytest.raises(ValueError, match="goal must be one of"):
        allocate(subject, "latency", 0.5)
    with pytest.raises(ValueError, match="fraction of dense"):
        allocate(subject, "flops", 1.5)
    with pytest.raises(ValueError, match="AUC drop"):
        allocate(subject, "tolerance", -0.1)
    with pytest.raises(ValueError, match="needs granularity 'structured'"):
        allocate(subject, "flops", 0.5, granularity="unstructured")
    with pytest.raises(ValueError, match="method must be"):
        allocate(subject, "params", 0.5, method="best")
    with pytest.raises(ValueError, match="below what the grid reaches"):
        allocate(subject, "params", 0.01, table=table)
    with pytest.raises(ValueError, match="measure must be one of"):
        allocate_from_table(table, subject, "params", 0.5, "loss")
    with pytest.raises(ValueError, match="value for goal 'params' must be a number, got 'half'"):
        allocate(subject, "params", "half")


def test_allocation_Repr_ShowsTheScalars_NotTheMasks(cnn):
    subject, table = cnn
    allocation = allocate(subject, "params", 0.5, table=table)
    text = repr(allocation)
    assert text.startswith("Allocation(method='sensitivity', goal='params', value=0.5")
    assert "keep=" not in text and "array(" not in text


def test_recipe_Budget_KeepsTheCandidateWithTheBestValidationAUC_AfterFineTuning(resnet, tiny_dataset):
    from workbench.analysis.budget import fine_tune_allocation
    from workbench.analysis.curves import evaluate_model
    from workbench.model.train import Recipe

    subject, table = resnet
    recipe = Recipe(epochs=1, batch_size=8)
    chosen = allocate(subject, "flops", 0.5, table=table, dataset=tiny_dataset, recipe=recipe)
    others = [allocate_from_table(table, subject, "flops", 0.5, m) for m in ("drop", "distortion")] + [
        allocate(subject, "flops", 0.5, method=m) for m in ("uniform", "global")
    ]
    measured = chosen.measured
    assert [a.candidate for a in measured] == ["table", "distortion", "uniform", "global"]
    for tuned, other in zip(measured, others, strict=True):  # each candidate is that method's answer
        assert all(np.array_equal(tuned.keep[n], other.keep[n]) for n in other.keep), other.candidate
    assert chosen.tuned_val_auc == max(a.tuned_val_auc for a in measured)
    assert chosen.flops <= 0.5
    # one losing candidate fine-tuned again here: fine-tuning is seeded, so the same number
    index = next(i for i, a in enumerate(measured) if a.candidate != chosen.candidate)
    again = fine_tune_allocation(subject.model, others[index], tiny_dataset, recipe)
    assert measured[index].tuned_val_auc == pytest.approx(again.tuned_val_auc)
    # the winner's fine-tuned model is handed back: its validation AUC is the one it won with
    assert evaluate_model(chosen.tuned_model, tiny_dataset.val, tiny_dataset.val)["auc"] == pytest.approx(
        chosen.tuned_val_auc
    )
    pruned = [w for w in chosen.tuned_model.weights if w.path.endswith("kernel")]
    assert any(np.any(np.asarray(w) == 0) for w in pruned), "the tuned model keeps its pruned weights at 0"
    with pytest.raises(ValueError, match="dataset="):
        allocate(subject, "flops", 0.5, table=table, recipe=recipe)


def test_recipe_References_AreFineTunedToo_AndATolerance_DoesNotUseIt(cnn, trained_tiny):
    from workbench.model.train import Recipe

    subject, table = cnn
    data, recipe = trained_tiny[1], Recipe(epochs=1, batch_size=16)
    uniform = allocate(subject, "params", 0.3, method="uniform", dataset=data, recipe=recipe)
    assert uniform.tuned_model is not None and uniform.tuned_val_auc is not None
    with pytest.warns(UserWarning, match="recipe not used"):
        within = allocate(
            subject, "tolerance", 0.05, granularity="unstructured", table=table, dataset=data, recipe=recipe
        )
    assert within.tuned_model is None and within.tuned_val_auc is None


def test_recipe_ProgressCallable_IsCalledDuringEachFineTune_AndStopsItByRaising(cnn, trained_tiny):
    from workbench.model.train import Recipe

    subject, table = cnn
    calls = []

    def progress(done, total):  # the one protocol: core.progress.Progress
        calls.append((done, total))
        if len(calls) == 3:  # the first candidate's second training batch: stop there
            raise Cancelled("stopped by the test")

    with pytest.raises(Cancelled):
        allocate(
            subject,
            "params",
            0.3,
            table=table,
            dataset=trained_tiny[1],
            recipe=Recipe(epochs=1, batch_size=8),
            progress=progress,
        )
    assert calls == [(0, 4)] * 3, "reported before the candidate and after each batch, then stopped"


def test_a_numeric_string_Value_GivesTheSameAllocation_AtEveryEntryPoint(cnn):
    subject, table = cnn  # "0.5" as a text box gives it
    for answer in (
        lambda value: allocate_from_table(table, subject, "params", value),
        lambda value: allocate(subject, "params", value, method="global"),
    ):
        typed, number = answer("0.5"), answer(0.5)
        assert typed.value == 0.5 and typed.params == number.params


def test_structured_table_And_FlopsBudget_OnADepthwiseBlock_MeetTheBudget_AndSlim(tiny_dataset, tmp_path):
    """A conv feeding a depthwise conv is one channel space (MobileNet's blocks): units (C,) and (C, 1)."""
    from workbench.model.compat import keras
    from workbench.prune.slim import slim_model

    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input(tiny_dataset.image_shape)
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, name="expand")(inputs)))
    x = layers.ReLU()(layers.BatchNormalization()(layers.DepthwiseConv2D(3, name="dw")(x)))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(6, 1, name="project")(x))
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name="logits")(x))
    subject = Subject.build(model, tiny_dataset)
    table = sensitivity(subject, "taylor", "structured", GRID, cache=tmp_path, progress=False)
    assert "expand+dw" in [row.name for row in table.rows]
    allocation = allocate(subject, "flops", 0.5, table=table)
    assert allocation.flops <= 0.5
    keep = allocation.keep
    assert np.array_equal(_units_alive(keep["expand"]), _units_alive(keep["dw"].reshape(-1, 8, 1)[..., 0]))
    masked = apply_masks(model, keep, structured=True).predict(subject.val.images, verbose=0)
    slim = slim_model(model, keep).predict(subject.val.images, verbose=0)
    np.testing.assert_allclose(slim, masked, atol=1e-5)


def test_wrong_types_NameTheArgument_BeforeAnyWork(cnn, resnet, tiny_dataset):
    from workbench.model.compat import keras
    from workbench.prune.scores import Scorer

    subject, table = cnn
    with pytest.raises(ValueError, match="must be a number, got True"):
        allocate(subject, "flops", True)
    with pytest.raises(ValueError, match=r"AUC drop in \[0, 1\], got 1.5"):
        allocate(subject, "tolerance", 1.5)
    with pytest.raises(ValueError, match="source must be a Keras model, an Explorer or a Subject, got str"):
        allocate("model.keras", "flops", 0.5, dataset=tiny_dataset)
    with pytest.raises(ValueError, match="dataset must be a Dataset .*, not str"):
        allocate(subject.model, "flops", 0.5, dataset="phantom")
    with pytest.raises(ValueError, match="recipe must be a workbench.Recipe, got 'fast'"):
        allocate(subject, "params", 0.5, dataset=tiny_dataset, recipe="fast")
    with pytest.raises(ValueError, match="table was computed for another model"):
        allocate(subject, "flops", 0.5, table=resnet[1])
    with pytest.raises(ValueError, match="subject must be a Subject"):
        sensitivity(subject.model, grid=GRID, progress=False)
    with pytest.raises(ValueError, match="min_keep must be an integer >= 1 .*got .2."):
        sensitivity(subject, grid=GRID, min_keep="2", progress=False)
    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="model must be built with a known input shape"):
        Scorer(unbuilt, tiny_dataset.val.images, tiny_dataset.val.labels)


def test_structured_allocation_Params_AreTheSlimModelsKernelWeights(resnet):
    """A removed filter also takes the next layer's input slices, which no mask zeroes."""
    from workbench.model.registry import get_kernels
    from workbench.prune.slim import slim_model

    subject, table = resnet
    allocation = allocate(subject, "flops", 0.5, table=table)
    dense = sum(kernel.size for kernel in get_kernels(subject.model).values())
    slim = sum(kernel.size for kernel in get_kernels(slim_model(subject.model, allocation.keep)).values())
    assert allocation.params == pytest.approx(slim / dense)
    keep = allocation.keep.values()
    masked = sum(int(m.sum()) for m in keep) / sum(m.size for m in keep)
    assert allocation.params < masked, "the masks alone overstate what the slim model keeps"


def test_allocate_WithoutATable_ComputesOnlyTheCriterionsCells(trained_tiny, tmp_path):
    subject = Subject.build(*trained_tiny)
    allocate(subject, "params", 0.5, grid=GRID, cache=tmp_path)
    cells = [path.name for path in tmp_path.rglob("*.json") if path.name != "dense.json"]
    assert cells and all(name.startswith("taylor--") for name in cells)


def test_table_OfTheSameArchitecture_WithOtherWeights_IsRefused(cnn, tiny_dataset):
    """Only the layer names were compared: an untrained twin's table ranked the trained model's layers."""
    subject, table = cnn
    twin = Subject.build(tiny_cnn(seed=1), tiny_dataset)
    with pytest.raises(ValueError, match="table was computed for other weights or data"):
        allocate(twin, "params", 0.5, table=table)


@pytest.mark.parametrize("method", ["sensitivity", "uniform", "global"])
def test_min_keep_BelowOne_IsRefusedByEveryMethod(cnn, method):
    """uniform accepted min_keep=0 (a layer could empty) where sensitivity refused it."""
    subject, _ = cnn
    with pytest.raises(ValueError, match="min_keep must be an integer >= 1"):
        allocate(subject, "params", 0.5, method=method, min_keep=0, grid=GRID)


def test_budget_TheGuardCannotMeet_SaysToLowerMinKeep_NotToExtendTheGrid(trained_tiny, tmp_path):
    """min_keep above a layer's size keeps it whole: 'extend the grid' could never help."""
    subject = Subject.build(*trained_tiny)
    table = sensitivity(subject, "taylor", "structured", GRID, min_keep=64, cache=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"the guard holds it there \(min_keep=64.*lower min_keep"):
        allocate(subject, "flops", 0.3, table=table, min_keep=64)
