"""Thresholds, scopes, the collapse guard and ε <-> sparsity conversions (pure NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.core.masks import (
    epsilon_for_sparsity,
    epsilon_range,
    expand_units,
    normalise_per_layer,
    overall_sparsity,
    select,
    sparsity_at_epsilon,
    unit_scores,
)


def _scores(seed=0, zeros=0.3):
    rng = np.random.default_rng(seed)
    out = {"conv": rng.random((3, 3, 4, 8)), "dense": rng.random((10, 10)) * 1e-3}
    for values in out.values():
        values[rng.random(values.shape) < zeros] = 0.0  # dead units: exactly zero scores
    return out


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("target", [0.0, 0.1, 0.5, 0.73, 0.9, 0.99])
def test_select_TargetSparsity_IsExactDespiteTies(scope, target):
    scores = _scores()  # 30% exact zeros: many ties at the bottom
    result = select(scores, sparsity=target, scope=scope, min_keep=0)
    total = sum(s.size for s in scores.values())
    if scope == "global":
        assert total - sum(m.sum() for m in result.keep.values()) == round(target * total)
    else:
        for name, values in scores.items():
            assert values.size - result.keep[name].sum() == round(target * values.size)


@pytest.mark.parametrize("target", [0.1, 0.25, 0.5, 0.9])
def test_select_TargetSparsity_BoundaryAgreesWithNpQuantile(target):
    values = np.random.default_rng(1).normal(size=1000) ** 2  # distinct values, n * target integral
    keep = select({"w": values}, sparsity=target).keep["w"]
    cut = np.quantile(values, target)
    assert values[~keep].max() <= cut <= values[keep].min()


def test_select_EpsilonZero_PrunesOnlyExactlyZeroScores():
    scores = _scores()
    at_zero = select(scores, epsilon=0.0, min_keep=0).keep
    just_above = select(scores, epsilon=np.nextafter(0.0, 1.0), min_keep=0).keep
    for name, values in scores.items():
        assert set(np.flatnonzero(~at_zero[name])) <= set(np.flatnonzero(values == 0))
        assert np.array_equal(~just_above[name], values == 0)


def test_sparsity_IsMonotonicInEpsilon():
    scores = _scores(seed=2)
    grid = np.concatenate([[0.0], np.geomspace(1e-7, 2.0, 60)])
    for scope in ("global", "layerwise"):
        sparsities = [select(scores, epsilon=e, scope=scope).sparsity for e in grid]
        assert np.all(np.diff(sparsities) >= 0), scope
    assert sparsities[-1] > 0.99 and sparsities[0] < 0.31


def test_select_Epsilon_KeepsExactlyScoresAtOrAboveIt():
    scores = {"w": np.array([0.0, 0.1, 0.2, 0.2, 0.5])}
    assert select(scores, epsilon=0.2).keep["w"].tolist() == [False, False, True, True, True]


def test_scopes_DifferAsExpected_OnLayersOfDifferentScale():
    scores = _scores(zeros=0.0)  # dense scores are ~1000x smaller than conv scores
    global_masks = select(scores, sparsity=0.5, scope="global", min_keep=0)
    layerwise = select(scores, sparsity=0.5, scope="layerwise", min_keep=0)
    assert global_masks.layer_sparsity()["dense"] == 1.0  # one global threshold empties the small layer
    assert global_masks.layer_sparsity()["conv"] < 0.4
    assert layerwise.layer_sparsity() == pytest.approx({"conv": 0.5, "dense": 0.5}, abs=1e-3)


def test_guard_KeepsAtLeastOneWeightPerLayer_AndReportsIt():
    scores = _scores(zeros=0.0)
    result = select(scores, sparsity=0.5, scope="global")  # default min_keep=1
    assert result.keep["dense"].sum() == 1
    assert result.keep["dense"].ravel()[np.argmax(scores["dense"])]  # the best weight survives
    assert result.guarded == ("dense",)
    assert select(scores, sparsity=0.5, scope="layerwise").guarded == ()


def test_guard_WithMinKeep_KeepsThatManyTopScores():
    scores = {"w": np.arange(10.0)}
    result = select(scores, epsilon=100.0, min_keep=3)
    assert np.flatnonzero(result.keep["w"]).tolist() == [7, 8, 9]


def test_layerwise_EpsilonMode_UsesTheSparsityEpsilonGivesGlobally():
    scores = _scores(seed=3, zeros=0.0)
    epsilon = 0.5
    overall, _ = sparsity_at_epsilon(scores, epsilon)
    result = select(scores, epsilon=epsilon, scope="layerwise", min_keep=0)
    for name, values in scores.items():
        assert 1 - result.keep[name].mean() == pytest.approx(round(overall * values.size) / values.size)


def test_normalize_MakesLayersComparableUnderGlobalScope():
    scores = _scores(zeros=0.0)
    result = select(scores, sparsity=0.5, scope="global", normalize=True, min_keep=0)
    assert 0.3 < result.layer_sparsity()["dense"] < 0.7
    normalised = normalise_per_layer(scores)
    assert all(np.isclose(v.mean(), 1.0) for v in normalised.values())
    assert normalise_per_layer({"dead": np.zeros(4)})["dead"].tolist() == [0, 0, 0, 0]


def test_epsilon_and_sparsity_ConvertBothWays():
    values = np.random.default_rng(4).random(2000)
    for target in (0.0, 0.2, 0.5, 0.95):
        epsilon = epsilon_for_sparsity(values, target)
        overall, per_layer = sparsity_at_epsilon({"w": values}, epsilon)
        assert overall == pytest.approx(target, abs=1 / values.size)
        assert per_layer["w"] == overall


def test_sparsity_at_epsilon_WeightsLayersBySize():
    overall, per_layer = sparsity_at_epsilon({"a": np.zeros(10), "b": np.ones(30)}, 0.5)
    assert per_layer == {"a": 1.0, "b": 0.0}
    assert overall == 0.25


def test_thresholds_ReportEachLayersLowestKeptScore():
    result = select({"a": np.array([1.0, 2.0, 3.0]), "b": np.array([0.5, 5.0])}, epsilon=1.5)
    assert result.thresholds == {"a": 2.0, "b": 5.0}


@pytest.mark.parametrize("bad", [-1e-9, float("nan"), float("inf"), -float("inf")])
def test_select_BadEpsilon_RaisesValueErrorNamingIt(bad):
    with pytest.raises(ValueError, match="epsilon must be a finite number >= 0"):
        select(_scores(), epsilon=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_select_BadSparsity_RaisesValueErrorNamingIt(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in range \[0, 1\)"):
        select(_scores(), sparsity=bad)


def test_select_BadArguments_RaiseValueErrors():
    with pytest.raises(ValueError, match="scope must be one of"):
        select(_scores(), sparsity=0.5, scope="per-channel")
    with pytest.raises(ValueError, match="exactly one of epsilon= or sparsity="):
        select(_scores(), sparsity=0.5, epsilon=0.1)
    with pytest.raises(ValueError, match="no prunable layers"):
        select({}, sparsity=0.5)
    with pytest.raises(ValueError, match="NaN or inf"):
        select({"w": np.array([1.0, np.nan])}, sparsity=0.5)


def test_unit_scores_AverageEachFiltersWeights_AndExpandBack():
    scores = {"conv": np.arange(2 * 2 * 3 * 4, dtype=float).reshape(2, 2, 3, 4)}
    units = unit_scores(scores, {"conv": (4,)})
    assert np.allclose(units["conv"], scores["conv"].reshape(-1, 4).mean(axis=0))
    keep = select(units, sparsity=0.5, scope="layerwise").keep
    expanded = expand_units(keep, {"conv": (2, 2, 3, 4)})["conv"]
    assert expanded.shape == (2, 2, 3, 4)
    assert expanded[..., :2].sum() == 0 and expanded[..., 2:].all()
    assert overall_sparsity({"conv": expanded}) == 0.5


def test_epsilon_range_SpansThePositiveScores():
    low, high = epsilon_range(_scores())
    positive = np.concatenate([s[s > 0] for s in _scores().values()])
    assert positive.min() <= low < high <= positive.max()


@pytest.mark.parametrize("seed", range(20))
def test_top_k_keep_EqualsPruningTheStableArgsortsFirstEntries(seed):
    from workbench.core.masks import _top_k_keep

    rng = np.random.default_rng(seed)
    values = rng.integers(0, 5, size=(7, 6)).astype(float)  # many ties
    for n_prune in (0, 1, 5, 20, 41, 42, 50):
        reference = np.ones(values.size, bool)
        reference[np.argsort(values, axis=None, kind="stable")[:n_prune]] = False
        np.testing.assert_array_equal(_top_k_keep(values, n_prune), reference.reshape(values.shape))
