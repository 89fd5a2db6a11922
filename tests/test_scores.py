"""The criteria, checked against independent computations, and the score cache."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from conftest import tiny_cnn, tiny_head_model

from workbench.model.compat import keras, tf
from workbench.model.registry import get_kernels, prunable_layers
from workbench.prune import scores as scores_module
from workbench.prune.scores import CRITERIA, Scorer, gradient_stats


def _reference_abs_gradients(model, images, labels, batch_size):
    """Mean over batches of |dL/dW| with a plain GradientTape: an independent reference."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    total, batches = None, 0
    for start in range(0, len(images), batch_size):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels[start : start + batch_size], model(images[start : start + batch_size]))
        grads = [np.abs(g.numpy()) for g in tape.gradient(loss, kernels)]
        total = grads if total is None else [t + g for t, g in zip(total, grads, strict=True)]
        batches += 1
    return [t / batches for t in total]


def test_gradient_score_IsMeanAbsoluteGradientOverBatches(tiny_dataset):
    model = tiny_cnn()
    images, labels = tiny_dataset.train.images[:40], tiny_dataset.train.labels[:40]
    ours = gradient_stats(model, images, labels, batch_size=16).abs_grad
    reference = _reference_abs_gradients(model, images, labels, batch_size=16)
    for got, want in zip(ours.values(), reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)


def test_criteria_AreTheDocumentedFunctionsOfWeightsAndGradients(tiny_dataset):
    model = tiny_cnn()
    scorer = Scorer(model, tiny_dataset.val.images, tiny_dataset.val.labels)
    kernels, stats = get_kernels(model), scorer.stats()
    for name, w in kernels.items():
        np.testing.assert_allclose(scorer.scores("magnitude")[name], np.abs(w))
        np.testing.assert_allclose(scorer.scores("snip")[name], np.abs(w) * stats.abs_grad[name])
        np.testing.assert_allclose(scorer.scores("taylor")[name], w**2 * stats.sq_grad[name])
        assert scorer.scores("random")[name].shape == w.shape


def test_structured_taylor_IsSquaredSumOfGradTimesWeightPerFilter(tiny_dataset):
    model = tiny_cnn()
    images, labels = tiny_dataset.val.images, tiny_dataset.val.labels  # 12 images: one batch
    scorer = Scorer(model, images, labels, batch_size=64)
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(labels, model(images))
    grad = tape.gradient(loss, model.get_layer("conv2").kernel).numpy()
    expected = ((grad * get_kernels(model)["conv2"]).reshape(-1, 8).sum(axis=0)) ** 2
    np.testing.assert_allclose(scorer.scores("taylor", "structured")["conv2"], expected, rtol=1e-4)
    assert scorer.scores("magnitude", "structured")["fc"].shape == (16,)


def test_dead_relu_unit_HasExactlyZeroGradientScores(tiny_dataset):
    model = tiny_cnn()
    bias = model.get_layer("fc").bias
    bias.assign(np.where(np.arange(16) == 5, -1e4, np.asarray(bias)))  # unit 5 never fires
    scores = Scorer(model, tiny_dataset.val.images, tiny_dataset.val.labels).scores("gradient")
    assert np.all(scores["fc"][:, 5] == 0.0)  # weights into the dead unit
    assert np.all(scores["out"][5, :] == 0.0)  # weights out of it
    assert scores["fc"][:, 4].any()


def test_random_scores_AreSeeded(tiny_dataset):
    model, data = tiny_cnn(), tiny_dataset
    first = Scorer(model, data.val.images, data.val.labels, seed=1).scores("random")
    again = Scorer(model, data.val.images, data.val.labels, seed=1).scores("random")
    other = Scorer(model, data.val.images, data.val.labels, seed=2).scores("random")
    assert all(np.array_equal(first[n], again[n]) for n in first)
    assert not np.array_equal(first["fc"], other["fc"])


def test_scorer_CachesGradients_UntilTheWeightsChange(tiny_dataset, monkeypatch):
    model = tiny_cnn()
    calls = []
    real = scores_module.gradient_stats
    monkeypatch.setattr(scores_module, "gradient_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    scorer = Scorer(model, tiny_dataset.val.images, tiny_dataset.val.labels)
    for criterion in ("gradient", "snip", "taylor", "gradient", "magnitude", "snip"):
        scorer.scores(criterion)
    scorer.scores("taylor", "structured")
    assert len(calls) == 1
    model.get_layer("fc").kernel.assign(np.zeros((8 * 9 * 9, 16), np.float32))
    scorer.scores("gradient")
    assert len(calls) == 2


def test_scorer_BadInputs_RaiseValueErrorsNamingTheArgument(tiny_dataset):
    model, val = tiny_cnn(), tiny_dataset.val
    scorer = Scorer(model, val.images, val.labels)
    with pytest.raises(ValueError, match="criterion must be one of"):
        scorer.scores("hessian")
    with pytest.raises(ValueError, match="granularity must be one of"):
        scorer.scores("snip", "blocks")
    with pytest.raises(ValueError, match=r"calibration images must have shape \(N, 24, 24, 1\)"):
        Scorer(model, np.zeros((4, 28, 28, 1)), np.zeros(4, int))
    with pytest.raises(ValueError, match="calibration labels must be in"):
        Scorer(model, val.images, val.labels + 5)
    image, covariates = keras.Input((24, 24, 1)), keras.Input((4,))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(image))
    joined = keras.layers.Concatenate()([pooled, covariates])
    two_inputs = keras.Model([image, covariates], keras.layers.Dense(2, activation="softmax")(joined))
    with pytest.raises(ValueError, match="has 2 inputs; the workbench prunes models with one image input"):
        Scorer(two_inputs, val.images, val.labels)


def test_model_without_prunable_layers_RaisesValueError(tiny_dataset):
    model = keras.Sequential(
        [keras.Input((24, 24, 1)), keras.layers.GlobalAveragePooling2D(), keras.layers.Softmax()]
    )
    with pytest.raises(ValueError, match="no prunable layers"):
        prunable_layers(model)


def test_non_finite_gradients_RaiseValueError(tiny_dataset):
    model = tiny_cnn()
    model.get_layer("out").kernel.assign(np.full((16, 2), np.inf, np.float32))  # softmax of inf: NaN loss
    with pytest.raises(ValueError, match="gradients of layer .* are NaN or inf"):
        Scorer(model, tiny_dataset.val.images, tiny_dataset.val.labels).scores("gradient")


def test_every_criterion_ScoresEveryPrunableKernel(tiny_dataset):
    model = tiny_cnn()
    scorer = Scorer(model, tiny_dataset.val.images, tiny_dataset.val.labels)
    for criterion in (name for name, c in CRITERIA.items() if "unstructured" in c.granularities):
        got = scorer.scores(criterion)
        assert {n: v.shape for n, v in got.items()} == {n: k.shape for n, k in get_kernels(model).items()}
        assert all((v >= 0).all() for v in got.values())


def test_criteria_table_GradientFreeCriteria_NeverComputeGradients(tiny_dataset, monkeypatch):
    model = tiny_cnn()
    scorer = Scorer(model, tiny_dataset.val.images, tiny_dataset.val.labels)
    monkeypatch.setattr(scores_module, "gradient_stats", lambda *a, **k: pytest.fail("computed gradients"))
    free = [name for name, criterion in CRITERIA.items() if not criterion.needs_gradients]
    assert free == ["magnitude", "random", "fpgm", "hrank"]
    for name in free:
        for granularity in CRITERIA[name].granularities:
            assert scorer.scores(name, granularity)


def test_criteria_table_FilterCriteria_AreStructuredOnly_OthersScoreBoth():
    granularities = {name: c.granularities for name, c in CRITERIA.items()}
    both = ("unstructured", "structured")
    assert granularities == {
        **{name: both for name in ("gradient", "snip", "taylor", "magnitude", "random")},
        "fpgm": ("structured",),
        "hrank": ("structured",),
    }


def test_criteria_table_LabelsEveryThresholdForTheDashboard():
    assert {name: c.threshold_label for name, c in CRITERIA.items()} == {
        "gradient": "|g|",
        "snip": "|g·w|",
        "taylor": "(g·w)²",
        "magnitude": "|w|",
        "random": "random score",
        "fpgm": "Σ distance to other filters",
        "hrank": "mean feature-map rank",
    }


# --- the statistics on disk -------------------------------------------------------------------


def _counting_passes(monkeypatch) -> list:
    """Spy on gradient_stats: one entry per gradient pass over the calibration data."""
    calls, real = [], scores_module.gradient_stats
    monkeypatch.setattr(scores_module, "gradient_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_stats_cache_SecondScorerReadsTheDisk_WithoutAGradientPass(tiny_dataset, monkeypatch, tmp_path):
    model, val = tiny_cnn(), tiny_dataset.val
    calls = _counting_passes(monkeypatch)
    first = Scorer(model, val.images, val.labels, cache_dir=tmp_path).stats()
    again = Scorer(model, val.images, val.labels, cache_dir=tmp_path).stats()
    assert len(calls) == 1 and len(list(tmp_path.glob("gradients-*.npz"))) == 1
    assert again.batches == first.batches
    for field in ("abs_grad", "sq_grad", "unit_taylor"):
        for name, values in getattr(first, field).items():
            np.testing.assert_array_equal(getattr(again, field)[name], values)


def test_stats_cache_DepthwiseLayer_IsReopenedWithoutAWarningOrAPass(tiny_dataset, monkeypatch, tmp_path):
    """A depthwise kernel's units are (channels, multiplier): its filter scores are 2-D, not damaged."""
    import warnings

    inputs = keras.Input(tiny_dataset.val.images.shape[1:])
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu")(x)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model, val = keras.Model(inputs, outputs), tiny_dataset.val
    calls = _counting_passes(monkeypatch)
    Scorer(model, val.images, val.labels, cache_dir=tmp_path).stats()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache's damaged-file warning would fail here
        Scorer(model, val.images, val.labels, cache_dir=tmp_path).stats()
    assert len(calls) == 1


def test_stats_cache_IsInvalidatedByWeightsCalibrationHeadOrBatchSize(tiny_dataset, monkeypatch, tmp_path):
    model, val = tiny_head_model(2, "relu"), tiny_dataset.val  # a relu output: any head may be asked
    calls = _counting_passes(monkeypatch)
    scorer = functools.partial(Scorer, model, cache_dir=tmp_path, head="softmax")
    scorer(val.images, val.labels).stats()
    images = val.images.copy()
    images[0, 0, 0, 0] = 1.0 - images[0, 0, 0, 0]
    scorer(images, val.labels).stats()
    scorer(val.images, 1 - val.labels).stats()
    scorer(val.images, val.labels, head="logits").stats()
    scorer(val.images, val.labels, batch_size=7).stats()
    bias = model.get_layer("out").bias  # not a kernel: still changes every gradient
    bias.assign(np.asarray(bias) + 0.5)
    scorer(val.images, val.labels).stats()
    assert len(calls) == 6


def test_stats_cache_UnreadableFile_IsIgnoredAndRecomputed(tiny_dataset, monkeypatch, tmp_path):
    model, val = tiny_cnn(), tiny_dataset.val
    calls = _counting_passes(monkeypatch)
    Scorer(model, val.images, val.labels, cache_dir=tmp_path).stats()
    (cached,) = tmp_path.glob("gradients-*.npz")
    cached.write_bytes(b"not an npz")
    stats = Scorer(model, val.images, val.labels, cache_dir=tmp_path).stats()
    assert len(calls) == 2 and np.isfinite(stats.abs_grad["fc"]).all()


def test_gradient_pass_ReportsProgressPerBatch(tiny_dataset):
    model, val = tiny_cnn(), tiny_dataset.val
    seen = []
    Scorer(model, val.images, val.labels, batch_size=5).scores("snip", progress=lambda *p: seen.append(p))
    steps = 1 + -(-len(val.images) // 5)  # the trace is a step of its own
    distinct = [report for report, _ in itertools.groupby(seen)]  # a long step is reported again
    assert distinct == [(done, steps) for done in range(steps + 1)]


def test_gradient_pass_WithoutACallback_MovesATqdmBarShownAfterOneSecond(tiny_dataset, monkeypatch):
    import tqdm.auto

    bars = []

    class FakeBar:  # records what a real bar would show, and when it would appear
        format_dict = {"elapsed": 0.0}  # a quick pass: never shown, so never refreshed

        def __init__(self, **options):
            self.options, self.n = options, 0
            bars.append(self)

        def update(self, step):
            self.n += step

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    val = tiny_dataset.val
    gradient_stats(tiny_cnn(), val.images, val.labels, batch_size=5)
    (bar,) = bars
    assert bar.options["delay"] <= 1.0 and bar.n == bar.options["total"] == 1 + -(-len(val.images) // 5)


def test_fingerprint_Frozen_HashesOnce_ElseFollowsTheWeights(trained_tiny):
    from workbench.prune.pruning import copy_model
    from workbench.prune.scores import Scorer

    model, data = trained_tiny
    model = copy_model(model)
    following = Scorer(model, data.val.images, data.val.labels)
    frozen = Scorer(model, data.val.images, data.val.labels, frozen=True)
    before = (following.fingerprint(), frozen.fingerprint())
    kernel = model.layers[0].kernel
    kernel.assign(np.asarray(kernel) * 2)
    assert following.fingerprint() != before[0]
    assert frozen.fingerprint() == before[1]


def test_fingerprint_NamesTheKernelsThatCompute_AndEveryWeightNotItsName(trained_tiny, monkeypatch):
    from workbench.prune.pruning import copy_model

    model, data = trained_tiny
    key = Scorer(model, data.val.images, data.val.labels).fingerprint()
    renamed = copy_model(model)  # same weights; Keras numbers the copy's variable paths anew
    assert Scorer(renamed, data.val.images, data.val.labels).fingerprint() == key
    monkeypatch.setattr("workbench.prune.scores.NUMERICS", "oneDNN=0")  # results differ in the last bits
    assert Scorer(model, data.val.images, data.val.labels).fingerprint() != key
    monkeypatch.undo()
    batchnorm_or_bias = model.weights[1]
    batchnorm_or_bias.assign(np.asarray(batchnorm_or_bias) + 1.0)
    assert Scorer(model, data.val.images, data.val.labels).fingerprint() != key


def test_fingerprint_FollowsTheArchitecture_NotTheNamesKerasNumbers(trained_tiny, tmp_path):
    from conftest import tiny_cnn

    from workbench.analysis.sensitivity import Subject, sensitivity

    model, data = trained_tiny
    key = Scorer(model, data.val.images, data.val.labels).fingerprint()
    rebuilt = tiny_cnn()  # the same network built again: Keras names its layers anew in this process
    rebuilt.set_weights(model.get_weights())
    assert Scorer(rebuilt, data.val.images, data.val.labels).fingerprint() == key

    edited = tiny_cnn()  # the same weights, another network
    edited.get_layer("conv2").activation = keras.activations.tanh
    edited.set_weights(model.get_weights())
    assert Scorer(edited, data.val.images, data.val.labels).fingerprint() != key
    options = dict(cache=tmp_path, progress=False)
    tables = [
        sensitivity(Subject.build(m, data), "magnitude", "unstructured", (0.5,), **options)
        for m in (model, edited)
    ]
    assert tables[1].computed > 0, "the edited network's table is computed, not read from the cache"


def test_scorer_ModelWithAConv2DTranspose_WarnsThatItsWeightsAreNotPruned(tiny_dataset, caplog):
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(tiny_dataset.image_shape),
            layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            layers.Conv2DTranspose(4, 3, padding="same", name="upsample"),
            layers.LayerNormalization(name="norm"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(2, activation="softmax", name="fc"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    with caplog.at_level("WARNING", logger="workbench.prune.scores"):
        scorer = Scorer(model, tiny_dataset.train.images[:8], tiny_dataset.train.labels[:8])
    assert [info.name for info in scorer.infos] == ["conv", "fc"]
    assert "upsample (Conv2DTranspose)" in caplog.text and "norm" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="workbench.prune.scores"):
        Scorer(model, tiny_dataset.train.images[:8], tiny_dataset.train.labels[:8])  # as Gradual does
    assert "upsample" not in caplog.text  # once per model


def test_calibration_OfOneClass_IsWarnedAbout(trained_tiny):
    import warnings

    model, data = trained_tiny
    images, labels = data.train.images[:16], data.train.labels[:16]
    one = labels == labels[0]
    with pytest.warns(UserWarning, match=f"calibration labels hold only class {labels[0]}"):
        Scorer(model, images[one], labels[one])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Scorer(model, images, labels)  # both classes: no warning
