"""Recovery recipes of fine_tune: distillation from the dense model and the iterative schedule."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_sparsity_pinned, tiny_cnn, tiny_resnet

from workbench.core import cache
from workbench.core.errors import WorkbenchError
from workbench.model.compat import NUMERICS, keras, tf
from workbench.model.distill import Distillation, head_logits
from workbench.model.graph import Graph, reference_factors, reference_variables
from workbench.model.heads import HEADS, Head
from workbench.model.registry import get_kernels
from workbench.model.train import Recipe, baseline, cache_key, compile_model, fit
from workbench.prune.pruning import OneShot, PruneSpec, apply_masks, copy_model, fine_tune, make_masks
from workbench.prune.recovery import Iterative, recovery
from workbench.prune.scores import Scorer

DISTIL = Recipe(epochs=2, batch_size=8, learning_rate=1e-2, distillation=Distillation(temperature=2.0))
STRUCTURED = PruneSpec(criterion="magnitude", granularity="structured", sparsity=0.5, scope="layerwise")


def _scorer(model, data):
    return Scorer(model, data.val.images, data.val.labels)


@pytest.fixture(scope="module")
def trained_resnet(tiny_dataset):
    model = compile_model(tiny_resnet())
    fit(model, tiny_dataset, Recipe(epochs=1, batch_size=8), progress=False)
    return model


def assert_reference_pinned(model, keep):
    """Every dead channel's bias and BatchNorm γ/β is exactly zero, and the model answers as the
    exact masked reference of its masks does."""
    graph = Graph.of(model)
    factors, variables = reference_factors(graph, keep), reference_variables(graph, model)
    assert any(attr in ("gamma", "beta") and not f.all() for (_, attr), f in factors.items())
    for key, factor in factors.items():
        assert np.all(np.asarray(variables[key])[factor == 0] == 0.0), f"{key}: a dead channel revived"
    images = np.random.default_rng(0).uniform(size=(8, *model.input_shape[1:])).astype(np.float32)
    reference = apply_masks(model, keep, structured=True)
    np.testing.assert_allclose(model(images), reference(images), atol=1e-6)


def kl_to(teacher, student, images, temperature):
    """Mean KL(teacher_T || student_T) of softmax outputs, computed here in NumPy."""

    def soft(model):
        log_p = np.log(np.clip(model.predict(images, verbose=0), 1e-7, 1.0)) / temperature
        p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    t, s = soft(teacher), soft(student)
    return float(np.mean(np.sum(t * (np.log(t) - np.log(s)), axis=1)))


# --- distillation ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_distillation_Unstructured_KeepsPrunedWeightsExactlyZero_WithFeaturesAddingTheirError(trained_tiny):
    model, data = trained_tiny
    keep = make_masks(_scorer(model, data), PruneSpec(criterion="magnitude", sparsity=0.7)).keep
    losses = []
    for features in ((), ("fc",)):
        pruned = apply_masks(model, keep)
        recipe = Recipe(epochs=1, batch_size=8, distillation=Distillation(2.0, features=features))
        history = fine_tune(pruned, keep, data, recipe, teacher=model, progress=False)
        assert_sparsity_pinned(pruned, keep)
        losses.append(history["distillation_loss"][0])
    assert losses[1] > losses[0] > 0, "the fc layer's squared error adds to the logits' KL"


@pytest.mark.slow
def test_distillation_WithAlphaOne_MovesTheStudentTowardTheTeacher(trained_tiny):
    """alpha=1 learns from the teacher alone: a confident teacher that ignores the labels (random
    weights, sharpened) pulls the student toward its answers; training on the labels does not."""
    student, data = trained_tiny
    teacher = tiny_cnn(seed=1)
    out = teacher.get_layer("out")
    out.kernel.assign(out.kernel * 200.0)
    keep = {name: np.ones(k.shape, bool) for name, k in get_kernels(student).items()}
    only_teacher = Recipe(epochs=3, batch_size=8, learning_rate=1e-2, distillation=Distillation(2.0, 1.0))
    images = data.train.images
    before = kl_to(teacher, student, images, 2.0)
    from_labels = copy_model(student)
    fine_tune(from_labels, keep, data, Recipe(epochs=3, batch_size=8, learning_rate=1e-2), progress=False)
    fine_tune(student, keep, data, only_teacher, teacher=teacher, progress=False)
    assert kl_to(teacher, student, images, 2.0) < 0.5 * before
    assert kl_to(teacher, from_labels, images, 2.0) > kl_to(teacher, student, images, 2.0)


@pytest.mark.parametrize("kind", HEADS)
def test_head_logits_SoftmaxOfThem_IsTheHeadsProbabilities(kind):
    units = 1 if kind.startswith("sigmoid") else 3
    outputs = np.random.default_rng(0).uniform(0.05, 0.95, size=(5, units)).astype(np.float32)
    if kind == "softmax":
        outputs /= outputs.sum(axis=1, keepdims=True)
    head = Head(kind, units)
    soft = tf.nn.softmax(head_logits(head, outputs), axis=-1).numpy()
    expected = head.probabilities(outputs).numpy()
    if head.multilabel:  # a distribution (1 - p, p) per label
        soft = soft[..., 1]
    elif head.units == 1:  # one label's (1 - p, p)
        soft = soft[:, 0, :]
    np.testing.assert_allclose(soft, expected, atol=1e-5)


# --- the iterative schedule -----------------------------------------------------------------------


@pytest.mark.slow
def test_iterative_Unstructured_ReachesTheTarget_ReScoringBetweenRounds(trained_tiny):
    model, data = trained_tiny
    spec = PruneSpec(criterion="magnitude", sparsity=0.8, scope="layerwise")
    dense = {name: np.ones(k.shape, bool) for name, k in get_kernels(model).items()}
    one_shot = make_masks(_scorer(model, data), spec).keep
    seen, reported = [], []

    def scorer_for(m):
        seen.append(get_kernels(m))
        return _scorer(m, data)

    recipe = Recipe(epochs=3, batch_size=8, learning_rate=1e-2)
    history = fine_tune(
        model, dense, data, recipe, schedule=Iterative(scorer_for, spec, rounds=3),
        progress=lambda done, total: reported.append((done, total)),
    )  # fmt: skip
    keep = {name: k != 0 for name, k in get_kernels(model).items()}
    assert_sparsity_pinned(model, keep)
    pruned = sum((~k).sum() for k in keep.values()) / sum(k.size for k in keep.values())
    assert abs(pruned - 0.8) < 0.02
    assert len(seen) == 3 and not all(np.array_equal(seen[0][n], seen[2][n]) for n in seen[0])
    # scores from the dense model alone would give the one-shot masks; re-scored ones differ
    assert any(not np.array_equal(keep[name], one_shot[name]) for name in keep)
    assert [round(s, 3) for _, s in history["mask_updates"]] == [0.415, 0.658, 0.8]
    assert len(history["loss"]) == 3
    steps = int(np.ceil(len(data.train) / 8))
    done = [d for d, _ in reported]
    assert reported[-1] == (3 * steps, 3 * steps) and done == sorted(done)


@pytest.mark.slow
def test_iterative_Distilled_Structured_KeepsBiasesAndBatchNormExactlyZero(trained_resnet, tiny_dataset):
    """Both recovery recipes at once, on BatchNorm and a shortcut: the model stays the exact masked
    reference of its masks through every round (and the teacher is left as it was given)."""
    model = copy_model(trained_resnet)
    dense = {name: np.ones(k.shape, bool) for name, k in get_kernels(model).items()}
    before = [w.copy() for w in trained_resnet.get_weights()]
    schedule = Iterative(lambda m: _scorer(m, tiny_dataset), STRUCTURED, rounds=2)
    history = fine_tune(
        model, dense, tiny_dataset, DISTIL, teacher=trained_resnet, schedule=schedule, progress=False
    )
    assert len(history["distillation_loss"]) == 2, "each round distils"
    keep = {name: k != 0 for name, k in get_kernels(model).items()}
    assert any(not k.reshape(-1, k.shape[-1]).any(axis=0).all() for k in keep.values()), "units pruned"
    assert_reference_pinned(model, keep)
    assert all(np.array_equal(a, b) for a, b in zip(before, trained_resnet.get_weights(), strict=True))
    assert trained_resnet.trainable, "the teacher must be left trainable, as it was given"


def test_iterative_Sparsities_PruneTheSameShareOfTheSurvivorsEachRound():
    schedule = Iterative(lambda m: None, PruneSpec(sparsity=0.96), rounds=2)
    assert np.allclose(schedule.sparsities(), [0.8, 0.96])
    assert schedule.epochs(Recipe(epochs=5)) == [2, 3]


def test_recovery_Names_GiveTheirRecipeAndSchedule_KeepingARecipesOwnDistillation():
    spec, own, scorer_for = PruneSpec(sparsity=0.9), Distillation(temperature=2.0), _scorer
    plain, tuned = Recipe(epochs=2), Recipe(epochs=2, distillation=own)
    recipe, schedule = recovery("one-shot", plain, scorer_for, spec)
    assert recipe == plain and isinstance(schedule, OneShot)
    recipe, schedule = recovery("iterative+distill", plain, scorer_for, spec)
    assert recipe.distillation == Distillation() and schedule.rounds == 2  # one epoch a round at least
    assert recovery("distill", tuned, scorer_for, spec)[0].distillation == own
    assert recovery("one-shot", tuned, scorer_for, spec)[0].distillation == own
    with pytest.raises(WorkbenchError, match="recovery must be one of"):
        recovery("distil", plain, scorer_for, spec)


# --- validation and cache keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, named",
    [
        (lambda: Distillation(temperature=0), "temperature"),
        (lambda: Distillation(temperature=float("inf")), "temperature"),
        (lambda: Distillation(alpha=0), "alpha"),
        (lambda: Distillation(alpha=1.5), "alpha"),
        (lambda: Distillation(alpha=True), "alpha"),
        (lambda: Distillation(features="conv1"), "features"),
        (lambda: Recipe(distillation="logits"), "distillation"),
        (lambda: Iterative(lambda m: None, PruneSpec(), rounds=2), "sparsity"),
        (lambda: Iterative(lambda m: None, PruneSpec(sparsity=0.5), rounds=0), "rounds"),
        (lambda: Iterative("scorer", PruneSpec(sparsity=0.5)), "scorer_for"),
        (lambda: Iterative(lambda m: m, PruneSpec(sparsity=0.5), 4).epochs(Recipe(epochs=3)), "epochs"),
    ],
)
def test_recovery_settings_OutOfRange_RaiseNamingTheArgument(make, named):
    with pytest.raises(WorkbenchError, match=named):
        make()


def test_fine_tune_DistillingRecipe_RefusesAMissingOrWrongTeacher(trained_tiny):
    model, data = trained_tiny
    keep = {name: np.ones(k.shape, bool) for name, k in get_kernels(model).items()}
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(WorkbenchError, match="teacher="):
        fine_tune(model, keep, data, DISTIL, progress=False)
    with pytest.raises(WorkbenchError, match="another model"):
        fine_tune(model, keep, data, DISTIL, teacher=model, progress=False)
    with pytest.raises(WorkbenchError, match="output shape"):
        fine_tune(model, keep, data, DISTIL, teacher=tiny_cnn(classes=3), progress=False)
    features = Recipe(epochs=1, distillation=Distillation(features=("no_such_layer",)))
    with pytest.raises(WorkbenchError, match="no_such_layer"):
        fine_tune(model, keep, data, features, teacher=copy_model(model), progress=False)
    with pytest.raises(WorkbenchError, match="baseline trains from its labels"):
        baseline(data, "seed_cnn", DISTIL, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_cache_key_RecipeWithoutDistillation_KeepsTheKeyItHadBefore(tiny_dataset):
    """Baselines are cached by recipe: adding the field must not retrain every user's baseline."""
    old_settings = ({"epochs": 12, "batch_size": 64, "learning_rate": 1e-3, "seed": 0},)
    versions = (f"keras {keras.__version__} tf {tf.__version__}", NUMERICS)
    before = cache.cache_key(
        "baseline", weights="seed_cnn", data=tiny_dataset.fingerprint(), settings=old_settings + versions
    )
    assert cache_key(tiny_dataset, "seed_cnn", Recipe()) == before
    distilled = Recipe(distillation=Distillation())
    assert cache_key(tiny_dataset, "seed_cnn", distilled) != before


# --- callers that own the dense model pass it as the teacher --------------------------------------


@pytest.mark.slow
def test_dashboard_RecoveryChoice_DistilsFromTheExplorersDenseModel(trained_tiny, monkeypatch):
    """The dashboard's recovery dropdown reaches Explorer.fine_tuned, which distils from its model."""
    from workbench.explore.session import Explorer
    from workbench.view.dashboard import Dashboard

    model, data = trained_tiny
    explorer = Explorer(model, data, calibration_size=16, grid_points=4)
    histories, fine_tuned = [], explorer.fine_tuned

    def recording(*args, **options):
        metrics, history = fine_tuned(*args, **options)
        histories.append(history)
        return metrics, history

    monkeypatch.setattr(explorer, "fine_tuned", recording)
    dash = Dashboard(explorer)
    dash.controls["mode"].value = "sparsity"
    dash.controls["sparsity"].value = 0.8
    dash.controls["epochs"].value = 1
    dash.controls["recovery"].value = "distill"
    dash.controls["finetune"].click()
    assert len(dash.recovered) == 1 and "(distill)" in dash.message.value
    assert "distillation_loss" in histories[0]


@pytest.mark.slow
def test_explorer_IterativeRecovery_OfAnEpsilonPoint_PrunesToTheSparsityItReached(trained_tiny):
    from workbench.explore.session import Explorer

    model, data = trained_tiny
    explorer = Explorer(model, data, calibration_size=16, grid_points=4)
    point = explorer.point(PruneSpec(criterion="magnitude", epsilon=0.05))
    recipe = Recipe(epochs=2, batch_size=8)
    _, history = explorer.fine_tuned(point, recipe, recovery="iterative", progress=False)
    assert len(history["mask_updates"]) == 2  # rounds: at most one per epoch
    assert history["mask_updates"][-1][1] == pytest.approx(point.result.sparsity)


@pytest.mark.slow
def test_allocate_DistillingRecipe_FineTunesEachCandidateFromTheDenseModel(trained_tiny):
    from workbench.analysis.budget import allocate
    from workbench.analysis.sensitivity import Subject

    model, data = trained_tiny
    recipe = Recipe(epochs=1, batch_size=16, distillation=Distillation())
    chosen = allocate(
        Subject.build(model, data), "params", 0.3, method="uniform", dataset=data, recipe=recipe
    )
    assert chosen.tuned_model is not None and chosen.tuned_val_auc is not None


@pytest.mark.slow
def test_recovery_notebook_ComparesRecoveries_AndTimesTheSlimModelInLiteRT(run_notebook):
    """Notebook 03's structured story, from its results: every recovery asked for at every fraction
    of filters, and the slim model smaller than the dense one (the run the headless test shares)."""
    from conftest import SHARED_RUN

    name = "03_finetune_and_schedules.ipynb"
    executed = run_notebook(name, **SHARED_RUN.get(name, {}))
    metrics = executed.metrics
    assert set(metrics["structured"]) == {"one-shot at 90%", "iterative+distill at 90%"}
    slim = metrics["slim"]["90% of filters removed (iterative+distill)"]
    assert slim["parameters"] < 0.5 * metrics["slim"]["dense"]["parameters"]
    assert slim["FLOPs"] < 0.5 * metrics["slim"]["dense"]["FLOPs"] and slim["LiteRT ms/image"] > 0
