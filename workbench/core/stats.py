"""Intervals and paired tests for clinical evidence: is the pruned model as good as the dense one?

Pure NumPy/SciPy, no TensorFlow. AUC intervals and the paired AUC test follow DeLong et al.
(1988) with the fast midrank algorithm of Sun & Xu (2014), also for a macro AUC (the mean over
classes or labels, ``_case_terms``); proportions get Wilson intervals; the ECE, which has no closed
form, gets a ``scipy.stats.bootstrap`` interval. Undefined inputs (a single class) raise
``ValueError``: callers decide how to say "undefined", never a silent number.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats

from workbench.core.errors import WorkbenchError

# What the reported metrics mean, for caches and run stores that keep metrics: each version's change.
METRIC_CHANGES = {
    2: "binary accuracy counts the decisions at the validated threshold (it was argmax)",
    3: "fine-tuned models have their BatchNorm statistics recalibrated, and an ECE interval always "
    "holds its estimate",
}
METRICS_VERSION = max(METRIC_CHANGES)

NONINFERIOR, INFERIOR, INCONCLUSIVE = "non-inferior", "inferior", "inconclusive"


# --- input checks: what would give a wrong number is refused, naming the argument -------------


def _whole(value, name: str, minimum: int = 0) -> int:
    """``value`` as an int, or ValueError unless it is a whole number >= ``minimum`` (2.0 passes, 2.5 not)."""
    whole = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and np.isfinite(value)
        and float(value) == int(value)
    )
    if not whole or int(value) < minimum:
        raise WorkbenchError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _numbers(values, name: str, ndim: int | None = None) -> np.ndarray:
    """``values`` as finite floats of ``ndim`` dimensions, or ValueError naming the first bad entry."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise WorkbenchError(f"{name} must be an array of numbers, got {type(values).__name__}") from None
    if ndim is not None and array.ndim != ndim:
        raise WorkbenchError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array.reshape(-1)))
    if bad.size:
        first = tuple(int(i) for i in np.unravel_index(bad[0], array.shape))
        where = first[0] if len(first) == 1 else first
        raise WorkbenchError(
            f"{name} must be finite numbers, got {array[first]} at {bad.size} place(s), "
            f"the first at index {where}"
        )
    return array


def _probabilities(values, name: str, ndim: int | None = None) -> np.ndarray:
    """``_numbers`` that are also in [0, 1] (a head's outputs, not logits)."""
    array = _numbers(values, name, ndim)
    if array.size and (array.min() < -1e-6 or array.max() > 1 + 1e-6):
        raise WorkbenchError(
            f"{name} must be probabilities in [0, 1], got {array.min():.4g}..{array.max():.4g} (logits?)"
        )
    return array


def _flags(values, name: str) -> np.ndarray:
    """Booleans from 0/1 or boolean ``values``, or ValueError (0.5, NaN or 2 would count as True)."""
    array = np.asarray(values)
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        odd = array[~np.isin(array, (0, 1))]
        raise WorkbenchError(f"{name} must be 0/1 or booleans, got values such as {odd[:3]}")
    return array.astype(bool)


def _class_ids(labels, classes: int, name: str = "labels") -> np.ndarray:
    """(N,) int class indices in [0, ``classes``), or ValueError (NaN, 0.5 or 3 of 3 classes)."""
    array = np.asarray(labels).reshape(-1)
    valid = np.issubdtype(array.dtype, np.number) and np.isin(array, np.arange(classes)).all()
    if not valid:
        odd = array[~np.isin(array, np.arange(classes))] if array.dtype.kind in "iufb" else array
        raise WorkbenchError(f"{name} must be class indices in [0, {classes}), got values such as {odd[:3]}")
    return array.astype(np.int64)


def _same_length(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise WorkbenchError(f"{name_a} has {len(a)} entries but {name_b} has {len(b)}: one per case each")


def check_evidence_options(margin: float, level: float) -> None:
    """Refuse a non-inferiority ``margin`` or a confidence ``level`` no interval could use."""
    _check_margin(margin)
    _z(level)


def _check_margin(margin) -> None:
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0 <= margin < 1:
        raise WorkbenchError(f"margin must be an AUC loss one accepts, in [0, 1), got {margin!r}")


def _z(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise WorkbenchError(f"level must be in (0, 1), got {level!r}")
    return float(stats.norm.ppf(0.5 + level / 2))


def _binary_truth(labels, cases: int) -> np.ndarray:
    """(cases, 1) booleans from binary labels (0/1 or boolean, 1 = positive)."""
    labels = np.asarray(labels).reshape(-1)
    if cases != labels.size:
        raise WorkbenchError(f"labels has {labels.size} entries but scores have {cases}")
    if not np.isin(labels, (0, 1)).all():
        raise WorkbenchError(f"labels must be 0/1 (1 = positive), got values {np.unique(labels)[:5]}")
    if len(np.unique(labels)) == 1:
        raise WorkbenchError(f"labels hold a single class ({int(labels[0])}): AUC is undefined")
    return labels.astype(bool)[:, None]


def _case_terms(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro AUCs (the mean over columns) of k score arrays (k, cases, columns), and per-case terms
    (k, cases) whose products ``terms @ terms.T`` are DeLong's covariance of those AUCs.

    Each column's AUC is DeLong's over its own positives and negatives (``truth``'s column). Its
    structural components, centred and scaled by 1/√(m(m−1)) for a positive and 1/√(n(n−1)) for a
    negative, are the case's term: summed over cases their products give DeLong's S10/m + S01/n
    exactly. For several columns a case's term is the mean of its columns' terms, because the cases,
    not the columns, are what is sampled (the delta method for a mean of U-statistics).
    """
    k, cases, columns = scores.shape
    aucs, terms = np.zeros(k), np.zeros((k, cases))
    for c in range(columns):
        positive = truth[:, c]
        v10, v01 = _structural_components(scores[:, positive, c], scores[:, ~positive, c])
        m, n = v10.shape[1], v01.shape[1]
        auc = v10.mean(axis=1)
        terms[:, positive] += (v10 - auc[:, None]) / np.sqrt(m * max(m - 1, 1))
        terms[:, ~positive] += (v01 - auc[:, None]) / np.sqrt(n * max(n - 1, 1))
        aucs += auc
    return aucs / columns, terms / columns


def _smaller_class(truth: np.ndarray) -> int:
    """The fewest cases of one class in any column: what a degenerate interval is bounded by."""
    positives = truth.sum(axis=0)
    return int(min(positives.min(), (len(truth) - positives).min()))


def _no_variation_half_width(smallest: int, level: float) -> float:
    """Half-width when DeLong's variance is 0 (perfect separation, or rankings that agree case by
    case): the sample shows no case that moves, and the "rule of three" (Hanley & Lippman-Hand,
    1983) bounds the share of cases that could, hence the AUC, by ln(2 / (1 - level)) / cases of
    the smaller class. Without it 6 perfectly ranked images gave the interval [1, 1]."""
    return float(np.log(2 / (1 - level)) / max(smallest, 1))


def delong(labels, *scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of one or more scores on the same cases, and DeLong's covariance matrix of them.

    Fast algorithm of Sun & Xu (2014): the structural components come from three midrankings
    instead of the O(m·n) pairwise comparison; ties count one half.

    Returns:
        ``(aucs, covariance)`` with shapes (k,) and (k, k) for k score arrays.
    Raises:
        ValueError: scores that are not finite 1-D arrays of one length, or ``labels`` not 0/1 of
            that length with both classes.
    """
    arrays = [_numbers(s, f"scores[{i}]", ndim=1) for i, s in enumerate(scores)]
    if not arrays:
        raise WorkbenchError("delong needs at least one score array, got none")
    for i, array in enumerate(arrays[1:], 1):
        _same_length("scores[0]", arrays[0], f"scores[{i}]", array)
    scores = np.stack(arrays)
    aucs, terms = _case_terms(_binary_truth(labels, scores.shape[1]), scores[:, :, None])
    return aucs, terms @ terms.T


def _structural_components(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V10 (per positive: share of negatives below it) and V01 (per negative: share of positives above it)."""
    m, n = positives.shape[1], negatives.shape[1]
    within_pos = stats.rankdata(positives, axis=1)
    within_neg = stats.rankdata(negatives, axis=1)
    overall = stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    v10 = (overall[:, :m] - within_pos) / n
    v01 = 1.0 - (overall[:, m:] - within_neg) / m
    return v10, v01


def _interval(value: float, variance: float, level: float, smallest: int) -> tuple[float, float, float]:
    """The normal interval, clipped to [0, 1]; ``_no_variation_half_width`` where the variance is 0."""
    if variance > 0:
        half = _z(level) * float(np.sqrt(variance))
    else:
        half = _no_variation_half_width(smallest, level)
    return value, max(value - half, 0.0), min(value + half, 1.0)


def _paired(scores: np.ndarray, truth: np.ndarray, level: float) -> dict:
    """The difference AUC(b) − AUC(a) of two score arrays (2, cases, columns) with its interval and
    two-sided p. Identical scores differ by exactly 0; rankings that agree case by case get
    ``_no_variation_half_width``."""
    z = _z(level)
    aucs, terms = _case_terms(truth, scores)
    se = float(np.sqrt(np.sum((terms[1] - terms[0]) ** 2)))  # from differenced terms: 0 for equal scores
    auc_a, auc_b = float(aucs[0]), float(aucs[1])
    difference = auc_b - auc_a
    if se > 0:
        half, p_value = z * se, float(2 * stats.norm.sf(abs(difference) / se))
    else:
        identical = np.array_equal(scores[0], scores[1])
        half, p_value = (0.0 if identical else _no_variation_half_width(_smaller_class(truth), level)), 1.0
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": difference,
        "ci_low": max(difference - half, -1.0),  # a difference of AUCs lies in [-1, 1]
        "ci_high": min(difference + half, 1.0),
        "p_value": p_value,
    }


def auc_ci(labels, scores, level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC of ``scores`` for binary ``labels`` with DeLong's confidence interval.

    The normal interval is clipped to [0, 1]. With perfect separation DeLong's variance vanishes;
    the interval is then bounded by the smaller class's size (``_no_variation_half_width``).

    Raises:
        ValueError: a single class in ``labels`` (AUC undefined), labels not 0/1, ``scores`` not
            finite (a NaN would give a NaN interval) or of another length, or a bad ``level``.
    """
    _z(level)
    scores = _numbers(scores, "scores", ndim=1)[None, :, None]
    truth = _binary_truth(labels, scores.shape[1])
    aucs, terms = _case_terms(truth, scores)
    return _interval(float(aucs[0]), float(terms[0] @ terms[0]), level, _smaller_class(truth))


def compare_auc(labels, scores_a, scores_b, level: float = 0.95) -> dict:
    """DeLong's paired test of two scores on the same cases: is AUC(b) different from AUC(a)?

    Returns:
        ``auc_a``, ``auc_b``, ``difference`` (b − a), its interval ``ci_low``/``ci_high`` and the
        two-sided ``p_value``. Identical scores give difference 0, interval [0, 0] and p = 1.
    Raises:
        ValueError: as ``auc_ci``, and for score arrays of different lengths.
    """
    _z(level)
    a, b = _numbers(scores_a, "scores_a", ndim=1), _numbers(scores_b, "scores_b", ndim=1)
    _same_length("scores_a", a, "scores_b", b)
    scores = np.stack([a, b])
    return _paired(scores[:, :, None], _binary_truth(labels, scores.shape[1]), level)


def wilson_ci(successes: int, trials: int, level: float = 0.95) -> tuple[float, float, float]:
    """A proportion with its Wilson score interval (scipy's ``binomtest``).

    Raises:
        ValueError: counts that are not whole numbers, ``trials`` 0 (the proportion is undefined),
            ``successes`` out of range, or a bad ``level``.
    """
    _z(level)
    successes, trials = _whole(successes, "successes"), _whole(trials, "trials")
    if trials == 0:
        raise WorkbenchError(f"trials must be positive for a proportion, got {trials}")
    if not 0 <= successes <= trials:
        raise WorkbenchError(f"successes must be in [0, trials={trials}], got {successes}")
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    return successes / trials, float(interval.low), float(interval.high)


def mcnemar_p(correct_a, correct_b) -> float:
    """McNemar's exact test on paired decisions: p-value that a and b are equally often right.

    Only the discordant cases count (a right and b wrong, or the reverse); with none, p = 1.

    Raises:
        ValueError: decisions that are not 0/1 or booleans, or of different shapes.
    """
    correct_a, correct_b = _flags(correct_a, "correct_a"), _flags(correct_b, "correct_b")
    if correct_a.shape != correct_b.shape:
        raise WorkbenchError(
            f"correct_a and correct_b differ in shape: {correct_a.shape} vs {correct_b.shape}"
        )
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def noninferiority(low: float, high: float, margin: float = 0.02) -> str:
    """Verdict from the interval of (new − reference): non-inferior, inferior or inconclusive.

    Non-inferior when the whole interval lies above −margin, inferior when it lies wholly below.

    Raises:
        ValueError: ``low``/``high`` not numbers with -1 <= low <= high <= 1 (a reversed interval
            was read as non-inferior), or a bad ``margin``.
    """
    _check_margin(margin)
    for name, bound in (("low", low), ("high", high)):
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not -1 <= bound <= 1:
            raise WorkbenchError(f"{name} must be a bound of an AUC difference, in [-1, 1], got {bound!r}")
    if low > high:
        raise WorkbenchError(
            f"low must not exceed high (an interval of new - reference), got low={low}, high={high}"
        )
    if low > -margin:
        return NONINFERIOR
    if high < -margin:
        return INFERIOR
    return INCONCLUSIVE


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    size: int,
    level: float = 0.95,
    *,
    resamples: int = 1000,
    seed: int = 0,
    vectorized: bool = False,
) -> tuple[float, float, float]:
    """A statistic of ``size`` cases with its percentile bootstrap interval (``scipy.stats.bootstrap``).

    Args:
        statistic: takes an index array into the cases (shape (size,), or (batch, size) when
            ``vectorized``) and returns the statistic of those cases (one per row when vectorized).
            Resampling indices keeps paired data (probabilities of two models, labels) paired.
            It may return NaN for a resample where it is undefined (e.g. a class missing): those
            resamples are left out of the interval.
    Returns:
        ``(value on all cases, low, high)``.
    Raises:
        ValueError: ``size`` not a whole number >= 2, ``resamples`` not one >= 1, a bad ``level``,
            or a statistic undefined on most resamples.
    """
    _z(level)
    if not callable(statistic):
        raise WorkbenchError(f"statistic must be a function of case indices, got {type(statistic).__name__}")
    size, resamples = _whole(size, "size", 2), _whole(resamples, "resamples", 1)
    indices = np.arange(size)
    function = (lambda idx, axis=-1: statistic(idx)) if vectorized else statistic  # scipy passes axis
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN resamples; handled below
        draws = stats.bootstrap(
            (indices,),
            function,
            n_resamples=resamples,
            confidence_level=level,
            method="percentile",
            vectorized=vectorized,
            random_state=np.random.default_rng(seed),
        ).bootstrap_distribution
    draws = np.asarray(draws, float)[np.isfinite(draws)]
    if draws.size < resamples / 2:
        raise WorkbenchError(
            f"the statistic is undefined on {resamples - draws.size} of {resamples} resamples"
        )
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    value = float(np.asarray(statistic(indices[None] if vectorized else indices)).reshape(-1)[0])
    return value, float(low), float(high)


def calibration_gaps(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> tuple[np.ndarray, np.ndarray]:
    """Per-case bin index and (correct − confidence) gap, the ingredients of ECE.

    Raises:
        ValueError: ``confidence`` not probabilities, ``correct`` not 0/1, lengths that differ, or
            ``bins`` not a whole number >= 1.
    """
    bins = _whole(bins, "bins", 1)
    confidence = _probabilities(confidence, "confidence", ndim=1)
    correct = _flags(correct, "correct").reshape(-1)
    _same_length("confidence", confidence, "correct", correct)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return which, correct.astype(float) - confidence


def ece_of(which: np.ndarray, gaps: np.ndarray, indices: np.ndarray, bins: int = 15) -> np.ndarray:
    """ECE of the cases ``indices`` (shape (size,) or (batch, size)): Σ_bins |Σ gaps| / size, per row.

    ``which`` and ``gaps`` come from ``calibration_gaps`` (checked there); this runs per bootstrap batch.
    """
    bins = _whole(bins, "bins", 1)
    _same_length("which", which, "gaps", gaps)
    indices = np.atleast_2d(indices)
    rows, size = indices.shape
    slots = which[indices] + bins * np.arange(rows)[:, None]
    sums = np.bincount(slots.ravel(), weights=gaps[indices].ravel(), minlength=rows * bins)
    return np.abs(sums.reshape(rows, bins)).sum(axis=1) / size


def ece_ci(
    probs: np.ndarray, labels, level: float = 0.95, bins: int = 15, *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Expected calibration error (max-probability confidence) with its bootstrap interval.

    ECE is biased upward, the more so on fewer cases, so a resample's ECE tends to lie above the
    whole set's: on small test sets every resample can (9 of 200 random sets of 40 cases), and the
    percentile interval would exclude its own estimate (so would a basic or BCa one). The interval
    is then stretched to reach the estimate: wider, never narrower than the bootstrap's, so its
    coverage is not the nominal level (it is a bias-blind interval of a biased statistic either way).

    Raises:
        ValueError: ``probs`` not (N, classes) probabilities, ``labels`` not N class indices, or
            bad ``level``, ``bins`` or ``resamples``.
    """
    probs = _probabilities(probs, "probs", ndim=2)
    labels = _class_ids(labels, probs.shape[1])
    _same_length("labels", labels, "probs", probs)
    which, gaps = calibration_gaps(probs.max(axis=1), probs.argmax(axis=1) == labels, bins)
    value, low, high = bootstrap_ci(
        lambda idx: ece_of(which, gaps, idx, bins),
        len(gaps),
        level,
        resamples=resamples,
        seed=seed,
        vectorized=True,
    )
    return value, min(low, value), max(high, value)


def indicators(labels, columns: int) -> np.ndarray:
    """(N, columns) boolean truth: class ids (N,) one-hot, or multi-label 0/1 columns (N, L) as they are.

    Raises:
        ValueError: class ids outside [0, columns) or multi-label flags other than 0/1 (either
            would be read as "no class" or "present").
    """
    columns = _whole(columns, "columns", 1)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return _flags(labels, "labels")
    return _class_ids(labels, columns)[:, None] == np.arange(columns)


def auc_columns(
    labels, classes: int, positive: int = 1, multilabel: bool = False
) -> tuple[tuple[int, ...], np.ndarray, list[int]]:
    """Which probability columns a task's AUC is taken over, their truth, and what it leaves out.

    Binary (2 columns): the positive class's column. Multi-class: every class (one-vs-rest macro).
    Multi-label (labels (N, L) 0/1): the labels that hold both classes. Returns
    ``(columns, truth (N, len(columns)) booleans, missing)``: ``missing`` lists the classes absent
    from ``labels`` (the AUC is then undefined), or for multi-label the labels left out.

    Raises:
        ValueError: ``classes`` not a whole number >= 2, ``positive`` not one of them, or labels
            outside [0, classes) (multi-label: not 0/1).
    """
    classes = _whole(classes, "classes", 2)
    if (
        isinstance(positive, bool)
        or not isinstance(positive, numbers.Integral)
        or not 0 <= positive < classes
    ):
        raise WorkbenchError(f"positive must be a class index in [0, {classes}), got {positive!r}")
    labels = np.asarray(labels)
    if multilabel:
        labels = _flags(labels.reshape(len(labels), -1), "labels")
        both = [j for j in range(labels.shape[1]) if 0 < labels[:, j].sum() < len(labels)]
        return tuple(both), labels[:, both].astype(bool), sorted(set(range(labels.shape[1])) - set(both))
    labels = _class_ids(labels, classes)
    missing = sorted(set(range(classes)) - set(np.unique(labels).tolist()))
    if classes == 2:
        return (positive,), (labels == positive)[:, None], missing
    return tuple(range(classes)), indicators(labels, classes), missing


def macro_auc_of(probs: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Macro AUC of the cases ``indices`` (shape (size,) or (batch, size)), per row: one-vs-rest
    over classes for class ids (N,), the mean over labels for 0/1 multi-label columns (N, L).

    Mann-Whitney on midranks, vectorised over bootstrap rows (scikit-learn's per-call
    validation makes a thousand resamples take a minute). NaN for rows where a column holds one class.

    Raises:
        ValueError: ``probs`` not finite (N, columns) numbers, or ``labels`` not N of them that
            fit the columns.
    """
    probs = _numbers(probs, "probs", ndim=2)
    _same_length("labels", np.asarray(labels), "probs", probs)
    indices = np.atleast_2d(indices)
    size = indices.shape[1]
    truth = indicators(labels, probs.shape[1])
    per_column = []
    for k in range(probs.shape[1]):
        ranks = stats.rankdata(probs[indices, k], axis=1)
        positive = truth[indices, k]
        m = positive.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_column.append(((ranks * positive).sum(axis=1) - m * (m + 1) / 2) / (m * (size - m)))
    macro = np.mean(per_column, axis=0)
    return np.where(np.isfinite(macro), macro, np.nan)


def _macro_truth(probs: np.ndarray, labels) -> np.ndarray:
    """``indicators`` of ``labels`` for ``probs``' columns; ValueError where a column holds one class."""
    labels = np.asarray(labels)
    _same_length("labels", labels, "probs", probs)
    truth = indicators(labels if labels.ndim == 2 else labels.reshape(-1), probs.shape[1])
    if labels.ndim == 1:
        present = int(truth.any(axis=0).sum())
        if present < probs.shape[1]:
            raise WorkbenchError(f"labels hold {present} of {probs.shape[1]} classes: macro AUC undefined")
    single = [c for c in range(truth.shape[1]) if truth[:, c].all() or not truth[:, c].any()]
    if single:
        raise WorkbenchError(f"label columns {single} hold a single class: macro AUC undefined")
    return truth


def macro_auc_ci(probs: np.ndarray, labels, level: float = 0.95) -> tuple[float, float, float]:
    """Macro AUC (see ``macro_auc_of``) with DeLong's interval of the mean (``_case_terms``).

    One column (a binary task's positive class) gives exactly ``auc_ci``.

    Raises:
        ValueError: ``probs`` not finite (N, columns) numbers, labels that do not fit them or hold
            a single class in a column, or a bad ``level``.
    """
    _z(level)
    probs = _numbers(probs, "probs", ndim=2)
    truth = _macro_truth(probs, labels)
    aucs, terms = _case_terms(truth, probs[None])
    return _interval(float(aucs[0]), float(terms[0] @ terms[0]), level, _smaller_class(truth))


def compare_macro_auc(labels, probs_a: np.ndarray, probs_b: np.ndarray, level: float = 0.95) -> dict:
    """The paired test of two models' macro AUCs on the same cases, as ``compare_auc`` for one column.

    Raises:
        ValueError: as ``macro_auc_ci``, and for probability arrays of different shapes.
    """
    _z(level)
    a, b = _numbers(probs_a, "probs_a", ndim=2), _numbers(probs_b, "probs_b", ndim=2)
    if a.shape != b.shape:
        raise WorkbenchError(
            f"probs_a {a.shape} and probs_b {b.shape} must have one shape: the same cases and columns"
        )
    probs = np.stack([a, b])
    return _paired(probs, _macro_truth(probs[0], labels), level)
