"""Intervals and paired tests against independent references: a slow DeLong, hand-worked cases, scipy."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from workbench.core.stats import (
    INCONCLUSIVE,
    INFERIOR,
    NONINFERIOR,
    auc_ci,
    bootstrap_ci,
    compare_auc,
    compare_macro_auc,
    delong,
    ece_ci,
    macro_auc_ci,
    macro_auc_of,
    mcnemar_p,
    noninferiority,
    wilson_ci,
)


def _slow_delong(labels, *scores):
    """DeLong 1988 by its definition: pairwise kernel psi over all m x n pairs, sample covariances."""
    labels = np.asarray(labels, bool)
    v10s, v01s = [], []
    for s in scores:
        s = np.asarray(s, float)
        x, y = s[labels], s[~labels]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
    v10, v01 = np.array(v10s), np.array(v01s)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.array([[np.sum((a - a.mean()) * (b - b.mean())) / (m - 1) for b in v10] for a in v10])
    s01 = np.array([[np.sum((a - a.mean()) * (b - b.mean())) / (n - 1) for b in v01] for a in v01])
    return v10.mean(axis=1), s10 / m + s01 / n


def _binormal(rng, n_pos, n_neg, shift, correlation=0.0):
    """Two correlated scores per case; positives shifted by ``shift`` (true AUC = Phi(shift / sqrt 2))."""
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    common = rng.normal(size=labels.size)
    a = np.sqrt(correlation) * common + np.sqrt(1 - correlation) * rng.normal(size=labels.size)
    b = np.sqrt(correlation) * common + np.sqrt(1 - correlation) * rng.normal(size=labels.size)
    return labels, a + shift * labels, b + shift * labels


@pytest.mark.parametrize("tied", [False, True])
def test_delong_AgreesWithSlowDefinition_RandomAndTiedScores(tied):
    rng = np.random.default_rng(1)
    labels, a, b = _binormal(rng, 37, 52, 0.8, correlation=0.5)
    if tied:  # few distinct values: many ties within and across classes
        a, b = np.round(a), np.round(b * 2) / 2
    aucs, covariance = delong(labels, a, b)
    slow_aucs, slow_covariance = _slow_delong(labels, a, b)
    np.testing.assert_allclose(aucs, slow_aucs, atol=1e-12)
    np.testing.assert_allclose(covariance, slow_covariance, atol=1e-12)
    assert aucs[0] == pytest.approx(roc_auc_score(labels, a))
    value, low, high = auc_ci(labels, a)
    half = scipy_stats.norm.ppf(0.975) * np.sqrt(slow_covariance[0, 0])
    assert (value, low, high) == pytest.approx((slow_aucs[0], slow_aucs[0] - half, slow_aucs[0] + half))
    paired = compare_auc(labels, a, b)
    se = np.sqrt(slow_covariance[0, 0] + slow_covariance[1, 1] - 2 * slow_covariance[0, 1])
    difference = slow_aucs[1] - slow_aucs[0]
    assert paired["difference"] == pytest.approx(difference)
    assert paired["ci_low"] == pytest.approx(difference - 1.959964 * se, abs=1e-6)
    assert paired["p_value"] == pytest.approx(2 * scipy_stats.norm.sf(abs(difference) / se))


def test_compare_auc_HandWorkedPairedVariance():
    # positives are cases 0,1; negatives 2,3. Score a: psi rows [1,1],[0,1] -> V10=[1,.5], V01=[.5,1];
    # score b swaps the positives -> V10=[.5,1], V01=[.5,1]. Both AUC .75; var a = var b = .125/2+.125/2
    # = .125; cov = (-.125)/2 + .125/2 = 0; so var(b - a) = .25 and the difference is 0 with p = 1.
    labels = [1, 1, 0, 0]
    a, b = [0.9, 0.4, 0.5, 0.1], [0.3, 0.9, 0.5, 0.1]
    aucs, covariance = delong(labels, a, b)
    np.testing.assert_allclose(aucs, [0.75, 0.75])
    np.testing.assert_allclose(covariance, [[0.125, 0.0], [0.0, 0.125]], atol=1e-15)
    paired = compare_auc(labels, a, b, level=0.95)
    assert paired["difference"] == 0 and paired["p_value"] == pytest.approx(1.0)
    assert paired["ci_high"] == pytest.approx(1.959964 * 0.5, abs=1e-6)


def test_compare_auc_SameScores_ZeroDifferenceAndNonInferior():
    rng = np.random.default_rng(2)
    labels, a, _ = _binormal(rng, 30, 40, 1.0)
    paired = compare_auc(labels, a, a)
    assert paired["difference"] == 0 and paired["ci_low"] == 0 and paired["ci_high"] == 0
    assert paired["p_value"] == 1.0
    assert noninferiority(paired["ci_low"], paired["ci_high"], 0.02) == NONINFERIOR


def test_auc_ci_SingleClass_RaisesNamingTheProblem():
    with pytest.raises(ValueError, match="single class"):
        auc_ci([1, 1, 1], [0.2, 0.4, 0.9])
    with pytest.raises(ValueError, match="single class"):
        compare_auc([0, 0], [0.1, 0.2], [0.3, 0.1])
    with pytest.raises(ValueError, match="level"):
        auc_ci([0, 1], [0.1, 0.9], level=95)


def test_auc_ci_ConstantScores_GiveHalf_AndNoVariationsBound():
    assert auc_ci([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == (0.5, 0.0, 1.0)  # 2 cases a class: ±ln(40)/2


def test_auc_ci_CoversTrueAucAtAboutNominalRate():
    rng = np.random.default_rng(3)
    shift = 1.0
    true_auc = scipy_stats.norm.cdf(shift / np.sqrt(2))
    covered, rejected = 0, 0
    trials = 400
    for _ in range(trials):
        labels, a, b = _binormal(rng, 60, 90, shift, correlation=0.6)
        _, low, high = auc_ci(labels, a)
        covered += low <= true_auc <= high
        rejected += compare_auc(labels, a, b)["p_value"] < 0.05  # equal true AUCs: a 5% false alarm rate
    assert 0.91 <= covered / trials <= 0.98
    assert 0.015 <= rejected / trials <= 0.09


def test_wilson_ci_AgreesWithScipyAndHandFormula():
    for k, n in [(0, 10), (3, 10), (47, 50), (624, 624)]:
        value, low, high = wilson_ci(k, n, 0.95)
        z = scipy_stats.norm.ppf(0.975)
        p = k / n
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
        assert value == p
        assert (low, high) == pytest.approx((max(centre - half, 0), min(centre + half, 1)), abs=1e-9)
    try:
        from statsmodels.stats.proportion import proportion_confint
    except ImportError:
        return
    assert wilson_ci(3, 10)[1:] == pytest.approx(proportion_confint(3, 10, method="wilson"))


def test_wilson_ci_NoTrials_Raises():
    with pytest.raises(ValueError, match="trials"):
        wilson_ci(0, 0)


def test_mcnemar_p_MatchesExactBinomialOnDiscordantPairs():
    a = np.array([1] * 10 + [1] * 8 + [0] * 2 + [0] * 5, bool)  # 8 right only for a, 2 only for b
    b = np.array([1] * 10 + [0] * 8 + [1] * 2 + [0] * 5, bool)
    assert mcnemar_p(a, b) == pytest.approx(scipy_stats.binomtest(2, 10).pvalue)
    assert mcnemar_p(a, b) == pytest.approx(2 * sum(scipy_stats.binom.pmf(k, 10, 0.5) for k in range(3)))
    assert mcnemar_p(a, a) == 1.0


def test_noninferiority_ReadsTheIntervalAgainstTheMargin():
    assert noninferiority(-0.01, 0.03, margin=0.02) == NONINFERIOR
    assert noninferiority(-0.08, -0.03, margin=0.02) == INFERIOR
    assert noninferiority(-0.05, 0.01, margin=0.02) == INCONCLUSIVE
    with pytest.raises(ValueError, match="margin"):
        noninferiority(0.0, 0.0, margin=-0.1)


def test_bootstrap_ci_OfTheMean_CoversAtAboutNominalRate():
    rng = np.random.default_rng(4)
    covered = 0
    trials = 200
    for seed in range(trials):
        x = rng.exponential(size=80)
        _, low, high = bootstrap_ci(
            lambda idx, x=x: x[idx].mean(axis=-1), 80, resamples=400, seed=seed, vectorized=True
        )
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / trials <= 0.98


def test_ece_ci_ValueMatchesEvaluateEce_AndIntervalBracketsIt():
    from workbench.core.metrics import expected_calibration_error

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 300)
    p = np.clip(0.5 + (labels - 0.5) * rng.random(300) * 1.2, 0, 1)
    probs = np.stack([1 - p, p], axis=1)
    value, low, high = ece_ci(probs, labels)
    assert value == pytest.approx(expected_calibration_error(probs, labels))
    assert low < value < high


def test_ece_ci_OnSmallSets_AlwaysHoldsItsEstimate():
    """ECE's upward bias put every resample above the estimate on 9 of 200 sets of 40 cases."""
    from workbench.core.stats import bootstrap_ci, calibration_gaps, ece_of

    rng, outside = np.random.default_rng(1), 0
    for _ in range(60):
        labels = rng.integers(0, 2, 40)
        p = 1 / (1 + np.exp(-(2 * (labels - 0.5) + rng.normal(size=40))))
        probs = np.stack([1 - p, p], axis=1)
        value, low, high = ece_ci(probs, labels)
        assert low <= value <= high
        which, gaps = calibration_gaps(probs.max(axis=1), probs.argmax(axis=1) == labels)
        ece = functools.partial(ece_of, which, gaps)
        _, plain_low, plain_high = bootstrap_ci(ece, 40, vectorized=True)
        assert low <= plain_low and high >= plain_high  # only ever wider than the bootstrap's
        outside += not plain_low <= value <= plain_high
    assert outside > 0  # these sets do hit the case


def test_macro_auc_ci_MultiClass_BracketsScikitLearn():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3)) + np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    value, low, high = macro_auc_ci(probs, labels)
    assert value == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    logits = np.round(logits)  # few distinct rows: ties, which count one half as in scikit-learn
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rows = rng.integers(0, 150, (5, 150))
    expected = [roc_auc_score(labels[r], probs[r], multi_class="ovr") for r in rows]
    np.testing.assert_allclose(macro_auc_of(probs, labels, rows), expected)
    assert low < value < high and high - low < 0.3


def test_macro_auc_OneColumn_IsExactlyDeLong():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 120)
    a, b = labels + rng.normal(size=120), labels + 2 * rng.normal(size=120)
    assert macro_auc_ci(a[:, None], labels[:, None]) == pytest.approx(auc_ci(labels, a), abs=1e-12)
    macro = compare_macro_auc(labels[:, None], a[:, None], b[:, None])
    assert macro == pytest.approx(compare_auc(labels, a, b), abs=1e-12)


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_macro_auc_Interval_AgreesWithThePairedBootstrap(kind):
    """The delta-method interval of the mean over columns has the bootstrap's width (within 15%)."""
    rng = np.random.default_rng(4)
    if kind == "multiclass":
        labels = rng.integers(0, 4, 400)
        truth = np.eye(4, dtype=bool)[labels]
    else:
        labels = (rng.random((400, 5)) < [0.1, 0.3, 0.5, 0.3, 0.2]).astype(int)
        truth = labels.astype(bool)
    dense = truth + rng.normal(size=truth.shape)
    pruned = dense + 0.8 * rng.normal(size=truth.shape)
    if kind == "multiclass":  # probabilities, as scikit-learn's one-vs-rest AUC wants them
        dense, pruned = (np.exp(x) / np.exp(x).sum(axis=1, keepdims=True) for x in (dense, pruned))
    value, low, high = macro_auc_ci(pruned, labels)
    expected = roc_auc_score(
        labels, pruned, average="macro", **({"multi_class": "ovr"} if kind == "multiclass" else {})
    )
    assert value == pytest.approx(expected, abs=1e-12)
    _, boot_low, boot_high = bootstrap_ci(lambda i: macro_auc_of(pruned, labels, i), 400, vectorized=True)
    assert (high - low) == pytest.approx(boot_high - boot_low, rel=0.15)
    paired = compare_macro_auc(labels, dense, pruned)
    assert paired["difference"] < 0 and paired["p_value"] < 0.05

    def difference(i):
        return macro_auc_of(pruned, labels, i) - macro_auc_of(dense, labels, i)

    _, boot_low, boot_high = bootstrap_ci(difference, 400, vectorized=True)
    assert (paired["ci_high"] - paired["ci_low"]) == pytest.approx(boot_high - boot_low, rel=0.15)


def test_perfect_separation_OnFewCases_IsNotEvidence_OnManyItIs():
    """DeLong's variance is 0 on perfectly ranked cases: 6 images gave [1, 1] and 'non-inferior'."""
    few = np.array([0, 0, 0, 1, 1, 1])
    dense, pruned = np.array([-3, -2, -1, 1, 2, 3.0]), np.array([-0.2, -0.1, -0.05, 0.05, 0.1, 0.2])
    value, low, high = auc_ci(few, pruned)
    assert value == high == 1.0 and low == 0.0  # 1 - ln(40)/3 < 0: three cases a class bound nothing
    paired = compare_auc(few, dense, pruned)
    assert paired["difference"] == 0 and paired["ci_low"] == -1.0  # -ln(40)/3, clipped to [-1, 1]
    assert noninferiority(paired["ci_low"], paired["ci_high"], 0.02) == INCONCLUSIVE
    many = np.repeat([0, 1], 250)
    ranked = np.linspace(0, 1, 500)
    paired = compare_auc(many, ranked, ranked**2)  # another score, the same ranking
    assert noninferiority(paired["ci_low"], paired["ci_high"], 0.02) == NONINFERIOR
    assert compare_auc(few, pruned, pruned)["ci_low"] == 0.0  # identical scores: exactly no difference


def test_paired_difference_Interval_StaysWithinMinusOneAndOne():
    labels = np.array([0, 1, 2])
    dense = np.eye(3) * 0.8 + 0.1
    same_ranking = np.eye(3) * 0.6 + 0.2
    paired = compare_macro_auc(labels, dense, same_ranking)
    assert -1.0 <= paired["ci_low"] <= paired["difference"] <= paired["ci_high"] <= 1.0


# --- input that would give a wrong number is refused, naming the argument ---------------------

_LABELS = np.array([0, 0, 1, 1])
_SCORES = np.array([0.1, 0.4, 0.35, 0.8])
_PROBS = np.stack([1 - _SCORES, _SCORES], axis=1)
_NAN_SCORES = np.array([0.1, np.nan, 0.35, 0.8])


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: noninferiority(0.1, -0.1), r"low must not exceed high .* low=0\.1, high=-0\.1"),
        (
            lambda: noninferiority(np.nan, 0.1),
            r"low must be a bound of an AUC difference, in \[-1, 1\], got nan",
        ),
        (lambda: noninferiority(-0.1, 1.5), r"high must be .* in \[-1, 1\], got 1\.5"),
        (lambda: noninferiority("0.1", 0.2), "low must be a bound"),
        (
            lambda: auc_ci(_LABELS, _NAN_SCORES),
            r"scores must be finite numbers, got nan at 1 place\(s\), the first at index 1",
        ),
        (lambda: auc_ci(_LABELS, _SCORES[:3]), "labels has 4 entries but scores have 3"),
        (lambda: auc_ci([0, 0.5, 1, 1], _SCORES), "labels must be 0/1"),
        (lambda: auc_ci([0, np.nan, 1, 1], _SCORES), "labels must be 0/1"),
        (lambda: auc_ci(_LABELS, _PROBS), r"scores must have 1 dimension\(s\), got shape \(4, 2\)"),
        (lambda: auc_ci(_LABELS, _SCORES, level=np.nan), r"level must be in \(0, 1\), got nan"),
        (lambda: compare_auc(_LABELS, _SCORES, _SCORES[:3]), "scores_a has 4 entries but scores_b has 3"),
        (lambda: compare_auc(_LABELS, _SCORES, _NAN_SCORES), "scores_b must be finite numbers"),
        (lambda: delong(_LABELS, _SCORES, _NAN_SCORES), r"scores\[1\] must be finite numbers"),
        (lambda: delong(_LABELS), "at least one score array"),
        (lambda: wilson_ci(2.5, 10), r"successes must be a whole number >= 0, got 2\.5"),
        (lambda: wilson_ci(3, np.nan), "trials must be a whole number >= 0, got nan"),
        (lambda: wilson_ci(-1, 10), "successes must be a whole number >= 0, got -1"),
        (lambda: wilson_ci(True, 10), "successes must be a whole number"),
        (lambda: wilson_ci(11, 10), r"successes must be in \[0, trials=10\], got 11"),
        (lambda: wilson_ci(3, 10, level=95), r"level must be in \(0, 1\), got 95"),
        (
            lambda: mcnemar_p([1, 0, 0.5], [1, 1, 0]),
            r"correct_a must be 0/1 or booleans, got values such as \[0\.5\]",
        ),
        (lambda: mcnemar_p([1, 0, 1], [1, np.nan, 0]), "correct_b must be 0/1 or booleans"),
        (lambda: mcnemar_p([1, 0, 1], [1, 0]), "differ in shape"),
        (lambda: bootstrap_ci(np.mean, 2.5), r"size must be a whole number >= 2, got 2\.5"),
        (lambda: bootstrap_ci(np.mean, 10, resamples=0), "resamples must be a whole number >= 1, got 0"),
        (lambda: bootstrap_ci(None, 10), "statistic must be a function of case indices, got NoneType"),
        (lambda: ece_ci(_PROBS * 2, _LABELS), r"probs must be probabilities in \[0, 1\], got 0\.2\.\.1\.8"),
        (lambda: ece_ci(np.where(_PROBS > 0.85, np.nan, _PROBS), _LABELS), "probs must be finite numbers"),
        (
            lambda: ece_ci(_PROBS, [0, 1, 2, 1]),
            r"labels must be class indices in \[0, 2\), got values such as \[2\]",
        ),
        (lambda: ece_ci(_PROBS, [0, 1, 1]), "labels has 3 entries but probs has 4"),
        (lambda: ece_ci(_PROBS, _LABELS, bins=0), "bins must be a whole number >= 1, got 0"),
        (lambda: macro_auc_ci(_PROBS, [0, 1, 2, 1]), r"labels must be class indices in \[0, 2\)"),
        (
            lambda: macro_auc_ci(_PROBS, [0.0, 0.5, 1.0, 1.0]),
            r"labels must be class indices in \[0, 2\), got values such as \[0\.5\]",
        ),
        (
            lambda: macro_auc_ci(np.where(_PROBS > 0.85, np.nan, _PROBS), _LABELS),
            "probs must be finite numbers",
        ),
        (lambda: macro_auc_ci(_PROBS, _LABELS[:3]), "labels has 3 entries but probs has 4"),
        (
            lambda: macro_auc_ci(_PROBS, np.array([[0, 1], [1, 0], [2, 1], [1, 0]])),
            "labels must be 0/1 or booleans",
        ),
        (
            lambda: compare_macro_auc(_LABELS, _PROBS, _PROBS[:3]),
            r"probs_a \(4, 2\) and probs_b \(3, 2\) must have one shape",
        ),
        (lambda: macro_auc_of(_PROBS, _LABELS[:3], np.arange(3)), "labels has 3 entries but probs has 4"),
    ],
    ids=lambda value: "" if callable(value) else None,
)
def test_statistics_InputGivingWrongNumbers_IsRefusedNamingTheArgument(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_noninferiority_ReversedInterval_IsRefused():
    # the example: (0.1, -0.1) read as "low > -margin" and answered "non-inferior"
    with pytest.raises(ValueError, match="low must not exceed high"):
        noninferiority(0.1, -0.1)


def test_auc_ci_OneNanScore_IsRefused_NotANanInterval():
    with pytest.raises(ValueError, match="scores must be finite numbers, got nan"):
        auc_ci(_LABELS, _NAN_SCORES)


@pytest.mark.parametrize("counts", [(3.0, 10.0), (np.int64(3), np.int64(10)), (3, 10)])
def test_wilson_ci_WholeNumbersOfAnyType_AreCounts(counts):
    assert wilson_ci(*counts) == wilson_ci(3, 10)
