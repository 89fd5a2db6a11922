"""Clinical metrics of a classifier's probabilities, and the evidence that a pruned model is not worse.

Metrics are NumPy/scikit-learn over probability arrays (N, classes); binary and multi-class
both work. For binary tasks the operating threshold on p(positive) is chosen on validation data
(``OperatingPoint``: Youden's J, a target sensitivity or a target specificity) and then applied
unchanged to test, as a clinic would. ``compare_to_dense`` adds the evidence a reviewer asks for:
intervals, the paired AUC difference and the non-inferiority verdict (maths in ``stats``).
Undefined metrics (a single class) are None with an ``UndefinedMetricWarning``, never a number.
"""

from __future__ import annotations

import hashlib
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score, roc_curve

from workbench.core import stats
from workbench.core.cache import user_stacklevel
from workbench.core.errors import DataMismatch, WorkbenchError
from workbench.core.stats import METRICS_VERSION, auc_ci, compare_auc  # noqa: F401 - re-exported beside the metrics

RULES = ("youden", "sensitivity", "specificity")


UNDEFINED = "undefined"  # the verdict when AUC is undefined (a single class in test)


NO_VERDICT = "no verdict"  # the verdict against a reference no better than chance (``at_chance``)


NOISE_ULPS = 4  # float32 ulps by which batched kernels move a row's output with its batch position


class ChanceReferenceWarning(UserWarning):
    """A model's outputs are constant or its AUC interval holds 0.5: nothing to compare against."""


@dataclass(frozen=True)
class OperatingPoint:
    """How the binary threshold is chosen on validation: Youden's J, or a target sensitivity/specificity.

    ``OperatingPoint("sensitivity", 0.95)`` picks the highest threshold whose validation
    sensitivity is at least 0.95 (so specificity is as high as that allows); "specificity" is
    the mirror image. The threshold is then applied unchanged to test.
    """

    rule: str = "youden"
    target: float | None = None

    def __post_init__(self):
        if self.rule not in RULES:
            raise WorkbenchError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.rule == "youden" and self.target is not None:
            raise WorkbenchError(f"rule 'youden' takes no target, got target={self.target}")
        if self.rule != "youden" and not (self.target is not None and 0 < self.target <= 1):
            raise WorkbenchError(f"rule {self.rule!r} needs a target in (0, 1], got target={self.target}")

    def __str__(self) -> str:
        return self.rule if self.rule == "youden" else f"{self.rule}>={self.target:g}"


YOUDEN = OperatingPoint()


# p >= NEVER is false for every probability: "call nobody positive", a JSON-safe stand-in for inf
NEVER = float(np.nextafter(np.float32(1.0), np.float32(2.0)))


def settle(probs: np.ndarray) -> np.ndarray:
    """Make a column exactly constant where its values differ only by float32 noise; round nothing else.

    Softmax and batched kernels differ by an ulp or two with a row's position in the batch, so a
    constant model's outputs are not exactly equal and the noise would rank cases (AUC 0.556 for
    a model with every kernel pruned). A column whose whole spread is within ``NOISE_ULPS`` float32
    ulps is such a model's: it is set to its first value. Every other value is kept as it is, so
    ranking metrics equal scikit-learn's: rounding every value to 20 mantissa bits, as this did
    before, tied saturated outputs (MobileNetV3Small AUC 0.9487 against scikit-learn's 0.9511).
    Repeated evaluations agree bit for bit because ``curves.Forward`` runs every row with the
    same neighbours, not because of rounding.
    """
    probs = np.asarray(probs)
    probs = np.array(probs, dtype=np.result_type(probs.dtype, np.float32))  # float64 stays float64
    if not len(probs):
        return probs
    largest = np.abs(probs).max(axis=0).astype(np.float32)
    constant = np.ptp(probs, axis=0) <= NOISE_ULPS * np.spacing(largest)
    probs[:, constant] = probs[0, constant]
    return probs


def operating_threshold(
    val_probs: np.ndarray, val_labels: np.ndarray, positive: int = 1, operating: OperatingPoint = YOUDEN
) -> float | None:
    """Choose the p(positive) threshold on validation data by ``operating``'s rule.

    Returns:
        The threshold (decisions are ``p >= threshold``), or None with a warning when validation
        holds a single class: no threshold can be chosen, and decisions fall back to argmax.
    Raises:
        ValueError: ``val_probs`` not (N, classes) probabilities, ``val_labels`` not N class indices,
            ``positive`` not a class, or ``operating`` not an ``OperatingPoint``.
    """
    _check_probabilities(val_probs, val_labels, "val")
    check_positive(positive, np.shape(val_probs)[1])
    if not isinstance(operating, OperatingPoint):
        raise WorkbenchError(
            f"operating must be an OperatingPoint, e.g. OperatingPoint('youden'), got {operating!r}"
        )
    val_probs = np.asarray(val_probs)
    truth = np.asarray(val_labels).reshape(-1) == positive
    if truth.all() or not truth.any():
        warnings.warn(
            "validation holds a single class: no operating threshold can be chosen, decisions use argmax",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        return None
    fpr, tpr, thresholds = roc_curve(truth, val_probs[:, positive], drop_intermediate=False)
    if operating.rule == "youden":
        index = int(np.argmax(tpr - fpr))
    elif operating.rule == "sensitivity":
        index = int(np.argmax(tpr >= operating.target - 1e-12))  # first (highest) threshold reaching it
    else:
        index = int(np.flatnonzero(1 - fpr >= operating.target - 1e-12)[-1])  # last (lowest) keeping it
    return min(float(thresholds[index]), NEVER)


def decisions(probs: np.ndarray, threshold: float | None = None, positive: int = 1) -> np.ndarray:
    """Predicted classes: argmax, or for binary tasks p(positive) >= threshold when one is given."""
    if threshold is None or probs.shape[1] != 2:
        return probs.argmax(axis=1)
    return np.where(probs[:, positive] >= threshold, positive, 1 - positive)


def _undefined(what: str) -> None:
    warnings.warn(what, UndefinedMetricWarning, stacklevel=3)


def auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC: binary on p(class 1), multi-class one-vs-rest macro; None (with a warning) if undefined.

    Raises:
        ValueError: ``probs`` not (N, classes) probabilities or ``labels`` not N class indices.
    """
    _check_probabilities(probs, labels, "test")
    probs, labels = np.asarray(probs), np.asarray(labels).reshape(-1)
    if len(np.unique(labels)) < probs.shape[1]:
        _undefined(f"test holds {len(np.unique(labels))} of {probs.shape[1]} classes: AUC is undefined")
        return None
    if probs.shape[1] == 2:  # midranks (stats.delong): scikit-learn's input checks cost 10x on a hot path
        return float(stats.delong(labels == 1, probs[:, 1])[0][0])
    return float(roc_auc_score(labels, probs, multi_class="ovr"))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the bin-weighted gap between confidence (max probability) and accuracy.

    Raises:
        ValueError: ``probs`` not (N, classes) probabilities or ``labels`` not N class indices.
    """
    _check_probabilities(probs, labels, "test")
    probs, labels = np.asarray(probs), np.asarray(labels).reshape(-1)
    which, gaps = stats.calibration_gaps(probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels), bins)
    return float(stats.ece_of(which, gaps, np.arange(len(gaps)), bins)[0])


def reliability_curve(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """The data of a reliability diagram: per non-empty confidence bin, mean confidence, accuracy, count.

    Confidence is the max probability, as in ``expected_calibration_error``.

    Raises:
        ValueError: ``probs`` not (N, classes) probabilities or ``labels`` not N class indices.
    """
    _check_probabilities(probs, labels, "test")
    probs = np.asarray(probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels).reshape(-1)
    which, _ = stats.calibration_gaps(confidence, correct, bins)
    count = np.bincount(which, minlength=bins)
    filled = count > 0
    return pd.DataFrame(
        {
            "confidence": np.bincount(which, confidence, bins)[filled] / count[filled],
            "accuracy": np.bincount(which, correct, bins)[filled] / count[filled],
            "count": count[filled],
        }
    )


def clinical_metrics(
    probs: np.ndarray, labels: np.ndarray, threshold: float | None = None, positive: int = 1
) -> dict:
    """Accuracy, AUC, sensitivity/specificity, per-class recall, ECE and the confusion matrix.

    Accuracy, sensitivity, specificity and the confusion matrix all count the same decisions:
    at ``threshold`` when one is given (binary), else argmax.

    Args:
        probs: (N, classes) probabilities.
        threshold: binary operating threshold on p(positive) (see ``operating_threshold``);
            None means argmax. Multi-class decisions are always argmax, and sensitivity /
            specificity are then one-vs-rest for ``positive``.
    Returns:
        A dict; a metric that is undefined on these labels (AUC with one class, sensitivity with
        no positives) is None and raises an ``UndefinedMetricWarning``.
    Raises:
        ValueError: ``probs`` not (N, classes) probabilities, ``labels`` not N class indices,
            ``positive`` not a class, or ``threshold`` neither None nor a number in [0, 1].
    """
    _check_probabilities(probs, labels, "test")
    check_positive(positive, np.shape(probs)[1])
    _check_threshold(threshold, "threshold")
    probs, labels = np.asarray(probs), np.asarray(labels).reshape(-1).astype(np.int64)
    classes = probs.shape[1]
    predicted = decisions(probs, threshold, positive)
    # Plain counting, ~20x quicker than sklearn's validated confusion_matrix on a hot path.
    matrix = np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    recall = np.divide(
        matrix.diagonal(), matrix.sum(axis=1), out=np.full(classes, np.nan), where=matrix.sum(axis=1) > 0
    )
    is_pos, said_pos = labels == positive, predicted == positive
    return {
        "accuracy": float((predicted == labels).mean()),
        "auc": auc(probs, labels),
        "sensitivity": _ratio((is_pos & said_pos).sum(), is_pos.sum(), "sensitivity (no positives in test)"),
        "specificity": _ratio(
            (~is_pos & ~said_pos).sum(), (~is_pos).sum(), "specificity (no negatives in test)"
        ),
        "threshold": None if threshold is None else float(threshold),
        "ece": expected_calibration_error(probs, labels),
        "recall_per_class": recall.tolist(),
        "confusion": matrix,
    }


def _check_probabilities(probs, labels, split: str) -> None:
    """Raise ValueError unless ``probs`` are (N, classes) probabilities and ``labels`` N class indices."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise WorkbenchError(
            f"{split} probabilities must be (N, classes) with 2 or more classes, got {probs.shape}"
        )
    if not np.isfinite(probs).all() or probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise WorkbenchError(
            f"{split} probabilities must be finite and in [0, 1] (a head's outputs, not logits)"
        )
    if labels.size != len(probs) or labels.ndim > 1 and labels.shape[1] != 1:
        raise WorkbenchError(
            f"{split} labels must be {len(probs)} class indices, one per row of the probabilities, "
            f"got shape {labels.shape} (multi-label data: multilabel_metrics)"
        )
    if not np.isin(labels, np.arange(probs.shape[1])).all():  # NaN and 0.5 are no class either
        shown = f"{labels.min()}..{labels.max()}" if np.isfinite(labels.astype(float)).all() else "NaN"
        raise WorkbenchError(f"{split} labels must be class indices in [0, {probs.shape[1]}), got {shown}")


def _check_threshold(threshold, name: str) -> None:
    """Refuse a threshold that is neither None (argmax) nor a number in [0, NEVER] (NaN calls nobody)."""
    if threshold is None:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 <= threshold <= NEVER:
        raise WorkbenchError(
            f"{name} must be None (argmax) or a probability threshold in [0, 1], got {threshold!r}"
        )


def check_same_outputs(dense: tuple, pruned: tuple, splits: tuple = ("val", "test")) -> None:
    """Raise ValueError unless the dense and pruned (val, test) probabilities have the same shapes:
    a reference with other classes or images compares nothing."""
    for split, before, after in zip(splits, dense, pruned, strict=True):
        before, after = np.shape(before), np.shape(after)
        if before != after:
            raise DataMismatch(
                f"the dense model's {split} probabilities {before} and the pruned model's {after} must "
                "have the same shape: the same images, and a dense model with the same classes"
            )


def check_positive(positive, classes: int) -> None:
    """Raise ValueError unless ``positive`` is a class index in [0, classes)."""
    if (
        isinstance(positive, bool)
        or not isinstance(positive, int | np.integer)
        or not 0 <= positive < classes
    ):
        raise WorkbenchError(f"positive must be a class index in [0, {classes}), got {positive!r}")


def validated_metrics(
    val_probs: np.ndarray,
    val_labels: np.ndarray,
    test_probs: np.ndarray,
    test_labels: np.ndarray,
    positive: int = 1,
    *,
    operating: OperatingPoint = YOUDEN,
) -> dict:
    """Clinical test metrics at an operating threshold chosen on validation (binary; argmax otherwise).

    Probabilities are ``settle``d first, so every evaluation path ranks and thresholds the same
    numbers. The result also names the ``rule`` that chose the threshold.
    """
    _check_probabilities(val_probs, val_labels, "val")
    _check_probabilities(test_probs, test_labels, "test")
    val_probs, test_probs = settle(val_probs), settle(test_probs)
    check_positive(positive, test_probs.shape[1])
    binary = test_probs.shape[1] == 2
    threshold = operating_threshold(val_probs, val_labels, positive, operating) if binary else None
    metrics = clinical_metrics(test_probs, test_labels, threshold, positive)
    metrics["rule"] = str(operating) if threshold is not None else "argmax"
    return metrics


def _ratio(hits, total, what: str) -> float | None:
    if not total:
        _undefined(f"{what} is undefined")
        return None
    return float(hits / total)


def changed_predictions(
    dense_probs: np.ndarray,
    pruned_probs: np.ndarray,
    dense_threshold: float | None = None,
    pruned_threshold: float | None = None,
    positive: int = 1,
) -> np.ndarray:
    """Indices of images whose decision differs between the dense and the pruned model.

    Decisions are argmax, or each model's own operating threshold when given (binary).

    Raises:
        ValueError: probabilities of different shapes, or thresholds that are not probabilities.
    """
    check_same_outputs((dense_probs,), (pruned_probs,), ("test",))
    _check_threshold(dense_threshold, "dense_threshold")
    _check_threshold(pruned_threshold, "pruned_threshold")
    before = decisions(dense_probs, dense_threshold, positive)
    return np.flatnonzero(before != decisions(pruned_probs, pruned_threshold, positive))


EVIDENCE_KEYS = (
    "auc", "auc_low", "auc_high", "dense_auc",
    "auc_difference", "auc_difference_low", "auc_difference_high", "auc_difference_p",
    "noninferiority", "margin", "mcnemar_p",
    "sensitivity", "sensitivity_low", "sensitivity_high",
    "specificity", "specificity_low", "specificity_high",
    "ece", "ece_low", "ece_high", "threshold", "rule",
)  # fmt: skip


def images_fingerprint(val_images: np.ndarray, test_images: np.ndarray) -> str:
    """A short hash of the validation and test images, in order: which images predictions are of."""
    digest = hashlib.sha256()
    for images in (val_images, test_images):
        images = np.ascontiguousarray(images, dtype=np.float32)
        digest.update(str(images.shape).encode())
        digest.update(images.tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Predictions:
    """A model's validation and test probabilities, their labels, and which images they are of.

    Make it with ``workbench.analysis.curves.predictions(model, dataset)``, which runs the model on the
    dataset's own images: raw arrays cannot show which images they came from, and a reference
    of other images (shuffled, same shape) was called non-inferior (ΔAUC +0.372).
    ``images`` is ``images_fingerprint`` of those images; the arrays are read-only copies.
    """

    val: np.ndarray
    test: np.ndarray
    val_labels: np.ndarray
    test_labels: np.ndarray
    images: str

    def __post_init__(self) -> None:
        _check_probabilities(self.val, self.val_labels, "val")
        _check_probabilities(self.test, self.test_labels, "test")
        if not isinstance(self.images, str) or not self.images:
            raise WorkbenchError(
                f"images must be the images' fingerprint (images_fingerprint), got {self.images!r}"
            )
        for name in ("val", "test", "val_labels", "test_labels"):
            array = np.array(getattr(self, name))
            array.setflags(write=False)
            object.__setattr__(self, name, array.reshape(-1) if name.endswith("labels") else array)


def _check_predictions(value, name: str) -> Predictions:
    if not isinstance(value, Predictions):
        raise DataMismatch(
            f"{name} must be Predictions, made by workbench.predictions(model, dataset) (raw arrays "
            f"cannot show which images they are of), got {type(value).__name__}; or compare the models: "
            "evaluate_model(pruned, dataset.val, dataset.test, dense=dense_model)"
        )
    return value


def compare_to_dense(
    dense: Predictions,
    pruned: Predictions,
    *old_labels,
    positive: int = 1,
    operating: OperatingPoint = YOUDEN,
    margin: float = 0.02,
    level: float = 0.95,
) -> dict:
    """The clinical evidence that a pruned model is (or is not) as good as the dense one, on test.

    Each model's threshold is chosen on validation by ``operating`` and applied unchanged to
    test. AUC intervals and the paired difference (pruned − dense) are DeLong's (of the macro
    AUC for multi-class: ``stats.macro_auc_ci``); sensitivity and specificity get Wilson intervals,
    ECE a bootstrap one; McNemar's exact test compares the decisions that changed.

    The models' outputs come as ``Predictions``, tagged with the images they are of, not as raw
    arrays: a paired test of two models on different images is meaningless, and arrays cannot
    show it. The old form ``compare_to_dense((dense_val, dense_test), (val, test), y_val, y_test)``
    is refused, saying what to pass. Models themselves: ``curves.evaluate_model(..., dense=)``.

    Args:
        dense, pruned: each model's ``Predictions`` (``curves.predictions(model, dataset)``).
        margin: the AUC loss δ one accepts; the verdict is "non-inferior", "inferior",
            "inconclusive", "undefined" when AUC is (a single class in test), or "no verdict"
            when the dense model is no better than chance (``at_chance``, with a warning).
    Returns:
        A flat dict with exactly the keys in ``EVIDENCE_KEYS``; undefined values are None.
    Raises:
        ValueError: raw arrays instead of ``Predictions``, predictions of different images, or
            bad ``positive``, ``operating``, ``margin`` or ``level``.

    Example:
        >>> dense = predictions(model, data)  # curves.predictions: outputs tagged with their images
        >>> evidence = compare_to_dense(dense, predictions(pruned, data))
        >>> evidence["noninferiority"] in ("non-inferior", "inferior", "inconclusive", "no verdict")
        True
    """
    dense, pruned = _check_predictions(dense, "dense"), _check_predictions(pruned, "pruned")
    if old_labels:
        raise WorkbenchError(
            f"compare_to_dense takes the labels from the Predictions, got {len(old_labels)} more"
        )
    if dense.images != pruned.images:
        raise WorkbenchError(
            f"dense and pruned are predictions of different images (fingerprints {dense.images} and "
            f"{pruned.images}): run both models on the same dataset"
        )
    for split in ("val_labels", "test_labels"):
        if not np.array_equal(getattr(dense, split), getattr(pruned, split)):
            raise WorkbenchError(
                f"dense and pruned hold different {split} for the same images: one dataset's labels"
            )
    check_same_outputs((dense.val, dense.test), (pruned.val, pruned.test))
    everything = pruned_metrics(
        (dense.val, dense.test),
        (pruned.val, pruned.test),
        pruned.val_labels,
        pruned.test_labels,
        positive=positive,
        operating=operating,
        margin=margin,
        level=level,
    )
    return {key: everything[key] for key in EVIDENCE_KEYS}


def pruned_metrics(
    dense: tuple[np.ndarray, np.ndarray],
    pruned: tuple[np.ndarray, np.ndarray],
    val_labels: np.ndarray,
    test_labels: np.ndarray,
    *,
    positive: int = 1,
    operating: OperatingPoint = YOUDEN,
    margin: float = 0.02,
    level: float = 0.95,
    evidence: bool = True,
) -> dict:
    """``validated_metrics`` of the pruned model, the ``compare_to_dense`` evidence, and what changed.

    The one path behind ``compare_to_dense``, ``Evaluator.evaluate`` and ``evaluate_model``.

    Returns:
        The pruned model's clinical metrics, updated with the evidence (``EVIDENCE_KEYS``), plus
        ``changed`` (test images whose decision flipped at each model's operating point) and
        ``test_probs``. ``evidence=False`` leaves out the intervals and tests (the costly part,
        ~0.1 s with the ECE bootstrap) for curve points and quick estimates.
    """
    stats.check_evidence_options(margin, level)
    check_same_outputs(dense, pruned)
    test_labels = np.asarray(test_labels).reshape(-1)
    before = validated_metrics(dense[0], val_labels, dense[1], test_labels, positive, operating=operating)
    metrics = validated_metrics(pruned[0], val_labels, pruned[1], test_labels, positive, operating=operating)
    dense_test, pruned_test = settle(dense[1]), settle(pruned[1])
    dense_said = decisions(dense_test, before["threshold"], positive)
    pruned_said = decisions(pruned_test, metrics["threshold"], positive)
    if evidence:
        metrics.update(auc_evidence(dense_test, pruned_test, test_labels, margin, level))
        metrics["mcnemar_p"] = stats.mcnemar_p(dense_said == test_labels, pruned_said == test_labels)
        metrics.update(_rate_evidence(metrics["confusion"], positive, level))
        ece = _ece_evidence(pruned_test, test_labels, level)
        metrics["ece"], metrics["ece_low"], metrics["ece_high"] = ece
    metrics["changed"] = np.flatnonzero(dense_said != pruned_said)
    metrics["test_probs"] = pruned[1]
    return metrics


def _ece_evidence(probs: np.ndarray, labels: np.ndarray, level: float) -> tuple:
    if len(labels) < 2:
        _undefined(f"the ECE interval needs at least 2 test images, got {len(labels)}")
        return expected_calibration_error(probs, labels), None, None
    return stats.ece_ci(probs, labels, level)


def auc_evidence(
    dense: np.ndarray, pruned: np.ndarray, labels: np.ndarray, margin: float, level: float, multilabel=False
) -> dict:
    """AUC with interval, the dense AUC, the paired difference with interval and p, and the verdict.

    DeLong's, of the task's AUC (``stats.auc_columns``): the positive class's, the one-vs-rest macro
    AUC, or the mean over the labels that hold both classes in test.
    """
    names = ("auc", "auc_low", "auc_high", "dense_auc")
    names += ("auc_difference", "auc_difference_low", "auc_difference_high", "auc_difference_p")
    columns, truth, missing = stats.auc_columns(labels, dense.shape[1], 1, multilabel)
    if not columns or (missing and not multilabel):
        lacking = "no label holds both classes in test" if multilabel else f"test lacks class(es) {missing}"
        _undefined(f"{lacking}: AUC evidence is undefined")
        return dict.fromkeys(names) | {"noninferiority": UNDEFINED, "margin": float(margin)}
    paired = stats.compare_macro_auc(truth, dense[:, columns], pruned[:, columns], level)
    values = stats.macro_auc_ci(pruned[:, columns], truth, level) + (paired["auc_a"],)
    values += (paired["difference"], paired["ci_low"], paired["ci_high"], paired["p_value"])
    result = dict(zip(names, values, strict=True))
    chance = at_chance(dense, labels, multilabel=multilabel, level=level)
    result["noninferiority"] = NO_VERDICT if chance else stats.noninferiority(values[5], values[6], margin)
    result["margin"] = float(margin)
    return result


def at_chance(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    positive: int = 1,
    multilabel: bool = False,
    level: float = 0.95,
    what: str = "the dense model",
) -> bool:
    """Warn (``ChanceReferenceWarning``) and return True when ``probs`` are constant or their AUC
    interval holds 0.5: such a model is no reference, and a pruned copy of it gets ``NO_VERDICT``.

    Briefly trained BatchNorm backbones validated at 0.495–0.505 on stale moving statistics, and a
    constant model's pruned copy was called non-inferior (0.5 vs 0.5). False, silently, where the
    AUC is undefined (a class missing): that has its own warning.
    """
    columns, truth, missing = stats.auc_columns(labels, probs.shape[1], positive, multilabel)
    if not columns or (missing and not multilabel):
        return False
    scores = settle(probs[:, columns])
    if (np.ptp(scores, axis=0) == 0).all():
        reason = f"outputs are the same for all {len(probs)} test images"
    else:
        value, low, high = stats.macro_auc_ci(scores, truth, level)
        if not low <= 0.5 <= high:
            return False
        reason = (
            f"test AUC is {value:.3f} [{low:.3f}, {high:.3f}] on {len(probs)} images, "
            "not distinguishable from chance"
        )
    warnings.warn(
        f"{what}'s {reason}, so a pruned copy compared with it gets no verdict: is the model trained "
        "(after a short training, workbench.model.train.recalibrate_batchnorm often fixes its BatchNorm "
        "statistics), and is the test split large enough?",
        ChanceReferenceWarning,
        stacklevel=user_stacklevel(),
    )
    return True


def _rate_evidence(confusion: np.ndarray, positive: int, level: float) -> dict:
    """Sensitivity and specificity (one-vs-rest for ``positive``) with Wilson intervals; None if undefined."""
    positives = confusion[positive]
    negatives = np.delete(confusion, positive, axis=0)
    counts = {
        "sensitivity": (positives[positive], positives.sum()),
        "specificity": (np.delete(negatives, positive, axis=1).sum(), negatives.sum()),
    }
    result = {}
    for name, (hits, total) in counts.items():
        interval = stats.wilson_ci(hits, total, level) if total else (None, None, None)
        result[name], result[f"{name}_low"], result[f"{name}_high"] = interval
    return result


def multilabel_metrics(
    val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray, test_labels: np.ndarray
) -> dict:
    """Multi-label test metrics: per-label AUC, macro AUC, and per-label sensitivity/specificity.

    Each label's operating threshold is chosen on validation (Youden's J, as for binary tasks)
    and applied unchanged to test. ``auc``, ``sensitivity``, ``specificity``, ``accuracy`` and
    ``ece`` are macro means over labels (NaN-skipping: a label with one class in test has no AUC).

    Args:
        val_probs, test_probs: (N, L) per-label probabilities.
        val_labels, test_labels: (N, L) 0/1 labels.
    Raises:
        ValueError: probabilities not (N, L) in [0, 1], or labels not 0/1 of their shape.
    """
    for split, probs, labels in (("val", val_probs, val_labels), ("test", test_probs, test_labels)):
        _check_label_flags(probs, labels, split)
    val_probs, test_probs = np.asarray(val_probs), np.asarray(test_probs)
    val_labels, test_labels = np.asarray(val_labels), np.asarray(test_labels)
    per_label = [
        _one_label(val_probs[:, j], val_labels[:, j], test_probs[:, j], test_labels[:, j])
        for j in range(test_probs.shape[1])
    ]
    columns = {key: [row[key] for row in per_label] for key in per_label[0]}
    out = {key: _nanmean(values) for key, values in columns.items() if key != "threshold"}
    out.update({f"{key}_per_label": values for key, values in columns.items()})
    out["threshold"] = None  # one per label, see threshold_per_label
    return out


def _check_label_flags(probs, labels, split: str) -> None:
    """Raise ValueError unless ``probs`` are (N, L) probabilities and ``labels`` (N, L) 0/1 flags."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim != 2 or not np.isfinite(probs).all() or probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise WorkbenchError(
            f"{split} probabilities must be (N, labels) per-label probabilities in [0, 1], finite"
        )
    if labels.shape != probs.shape or not np.isin(labels, (0, 1)).all():
        raise WorkbenchError(
            f"{split} labels must be 0/1 flags of the probabilities' shape {probs.shape}, "
            f"got shape {labels.shape} with values {np.unique(labels)[:5]}"
        )


def _one_label(val_p: np.ndarray, val_y: np.ndarray, test_p: np.ndarray, test_y: np.ndarray) -> dict:
    """One label as a binary task: undefined metrics are None with a warning, as for single-label data."""
    val_two, test_two = np.stack([1 - val_p, val_p], axis=1), np.stack([1 - test_p, test_p], axis=1)
    threshold = operating_threshold(val_two, val_y, positive=1)
    truth, said = test_y == 1, decisions(test_two, threshold) == 1
    return {
        "auc": auc(test_two, test_y),
        "sensitivity": _ratio((truth & said).sum(), truth.sum(), "sensitivity (no positives in test)"),
        "specificity": _ratio((~truth & ~said).sum(), (~truth).sum(), "specificity (no negatives in test)"),
        "accuracy": float((truth == said).mean()),
        "ece": expected_calibration_error(test_two, test_y.astype(int)),
        "threshold": threshold,
    }


def _nanmean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(defined)) if defined else None


def changed_labels(dense_probs: np.ndarray, pruned_probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Multi-label: indices of images where any label's decision at ``threshold`` differs."""
    check_same_outputs((dense_probs,), (pruned_probs,), ("test",))
    _check_threshold(threshold, "threshold")
    return np.flatnonzero(((dense_probs >= threshold) != (pruned_probs >= threshold)).any(axis=1))
