"""Importance scores for every prunable weight: gradient (the ε rule), SNIP, Taylor, magnitude, random.

One pass over the calibration data accumulates, per kernel weight, the batch-mean of |g| and of
g², and per structured unit the batch-mean of (Σ g·w)². Every criterion is a cheap function of
those and the weights, and a ``Scorer`` caches them, so moving ε never recomputes gradients.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from workbench.compat import keras, tf
from workbench.masks import Scores, unit_scores
from workbench.registry import LayerInfo, get_kernels, kernel_variables, prunable_layers

log = logging.getLogger(__name__)

CRITERIA = ("gradient", "snip", "taylor", "magnitude", "random")
GRANULARITIES = ("unstructured", "structured")
NEEDS_GRADIENTS = ("gradient", "snip", "taylor")


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    return criterion


def check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return granularity


@dataclass(frozen=True)
class GradientStats:
    """Batch means over the calibration data, per prunable layer.

    abs_grad: mean |∂L/∂w| per weight.  sq_grad: mean (∂L/∂w)² per weight.
    unit_taylor: mean (Σ_unit g·w)² per structured unit (Molchanov et al.'s filter Taylor score).
    """

    abs_grad: Scores
    sq_grad: Scores
    unit_taylor: Scores
    batches: int


def check_calibration(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> None:
    """Raise ValueError unless images/labels fit the model's input and outputs."""
    images, labels = np.asarray(images), np.asarray(labels)
    expected = tuple(model.input_shape[1:])
    fits = images.ndim == len(expected) + 1 and all(
        e in (None, g) for e, g in zip(expected, images.shape[1:], strict=True)
    )
    if not fits:
        raise ValueError(f"calibration images must have shape (N, *{expected}), got {images.shape}")
    if len(images) == 0 or len(images) != len(labels.reshape(-1)):
        raise ValueError(
            "calibration images and labels must be non-empty and of equal length, "
            f"got {len(images)} and {len(labels)}"
        )
    if labels.min() < 0 or labels.max() >= model.output_shape[-1]:
        raise ValueError(
            f"calibration labels must be in [0, {model.output_shape[-1]}), got {labels.min()}..{labels.max()}"
        )


def gradient_stats(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 64
) -> GradientStats:
    """Accumulate gradient statistics of the loss over calibration batches (inference-mode BN).

    Raises:
        ValueError: for calibration data of the wrong shape, or gradients that are NaN or inf.
    """
    check_calibration(model, images, labels)
    infos = prunable_layers(model)
    variables = list(kernel_variables(model).values())
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function(reduce_retracing=True)
    def batch_gradients(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=False))
        return tape.gradient(loss, variables)

    kernels = get_kernels(model)
    sums = {key: {i.name: 0.0 for i in infos} for key in ("abs", "sq", "unit")}
    starts = range(0, len(images), batch_size)
    for start in starts:
        x = tf.constant(images[start : start + batch_size], tf.float32)
        y = tf.constant(np.asarray(labels).reshape(-1)[start : start + batch_size])
        for info, grad in zip(infos, batch_gradients(x, y), strict=True):
            _accumulate(sums, info, np.asarray(grad), kernels[info.name])
    n = len(starts)
    stats = GradientStats(
        *({k: v / n for k, v in sums[key].items()} for key in ("abs", "sq", "unit")), batches=n
    )
    _check_finite(stats)
    return stats


def _accumulate(sums: dict, info: LayerInfo, grad: np.ndarray, kernel: np.ndarray) -> None:
    sums["abs"][info.name] = sums["abs"][info.name] + np.abs(grad)
    sums["sq"][info.name] = sums["sq"][info.name] + grad**2
    per_unit = (grad * kernel).reshape(-1, int(np.prod(info.units_shape))).sum(axis=0)
    sums["unit"][info.name] = sums["unit"][info.name] + (per_unit**2).reshape(info.units_shape)


def _check_finite(stats: GradientStats) -> None:
    for name, values in stats.abs_grad.items():
        if not np.isfinite(values).all() or not np.isfinite(stats.sq_grad[name]).all():
            raise ValueError(
                f"gradients of layer {name!r} are NaN or inf on the calibration data; "
                "check the inputs are scaled to [0, 1] and the model's loss is finite"
            )


def weight_scores(criterion: str, kernels: Scores, stats: GradientStats | None, seed: int = 0) -> Scores:
    """Score every kernel weight by ``criterion``; ``stats`` is needed for gradient-based ones."""
    check_criterion(criterion)
    if criterion == "gradient":
        return dict(stats.abs_grad)
    if criterion == "snip":
        return {n: np.abs(w) * stats.abs_grad[n] for n, w in kernels.items()}
    if criterion == "taylor":
        return {n: w**2 * stats.sq_grad[n] for n, w in kernels.items()}
    if criterion == "magnitude":
        return {n: np.abs(w) for n, w in kernels.items()}
    return {n: np.random.default_rng([seed, i]).random(w.shape) for i, (n, w) in enumerate(kernels.items())}


def structured_scores(
    criterion: str, kernels: Scores, stats: GradientStats | None, infos: list[LayerInfo], seed: int = 0
) -> Scores:
    """Score every structured unit: the per-filter Taylor score, or the mean of its weights' scores."""
    if criterion == "taylor":
        return dict(stats.unit_taylor)
    return unit_scores(weight_scores(criterion, kernels, stats, seed), {i.name: i.units_shape for i in infos})


class Scorer:
    """Scores of one model on one calibration set, computed once and cached.

    The cache key includes a fingerprint of the current weights, so scoring a model after it has
    been fine-tuned recomputes, while moving ε (or switching criterion back) does not.

    Example:
        >>> scorer = Scorer(model, data.val.images, data.val.labels)  # doctest: +SKIP
        >>> scores = scorer.scores("snip")                             # doctest: +SKIP
    """

    def __init__(
        self,
        model: keras.Model,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        seed: int = 0,
        batch_size: int = 64,
    ):
        check_calibration(model, images, labels)
        self.model, self.images, self.labels = (
            model,
            np.asarray(images, np.float32),
            np.asarray(labels).reshape(-1),
        )
        self.seed, self.batch_size = seed, batch_size
        self.infos = prunable_layers(model)
        self._stats: dict[str, GradientStats] = {}
        self._scores: dict[tuple[str, str, str], Scores] = {}

    def fingerprint(self) -> str:
        digest = hashlib.sha1()
        for kernel in get_kernels(self.model).values():
            digest.update(kernel.tobytes())
        return digest.hexdigest()

    def stats(self) -> GradientStats:
        key = self.fingerprint()
        if key not in self._stats:
            log.info("accumulating gradients over %d calibration images", len(self.images))
            self._stats[key] = gradient_stats(self.model, self.images, self.labels, self.batch_size)
        return self._stats[key]

    def scores(self, criterion: str, granularity: str = "unstructured") -> Scores:
        """Return {layer: scores} per weight (unstructured) or per unit (structured), cached."""
        check_criterion(criterion)
        check_granularity(granularity)
        key = (self.fingerprint(), criterion, granularity)
        if key not in self._scores:
            stats = self.stats() if criterion in NEEDS_GRADIENTS else None
            kernels = get_kernels(self.model)
            if granularity == "structured":
                self._scores[key] = structured_scores(criterion, kernels, stats, self.infos, self.seed)
            else:
                self._scores[key] = weight_scores(criterion, kernels, stats, self.seed)
        return self._scores[key]
