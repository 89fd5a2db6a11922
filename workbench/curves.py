"""Curves over ε (or sparsity) grids, fast enough to drive an interactive view.

Scores come from a cached ``Scorer``; each point only thresholds (NumPy), writes the masked
kernels into one reusable work copy of the model, and runs one compiled forward pass over the
validation and test images together. No model is rebuilt per point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from workbench.compat import tf
from workbench.evaluate import (
    YOUDEN,
    OperatingPoint,
    changed_labels,
    multilabel_metrics,
    pruned_metrics,
    validated_metrics,
)
from workbench.graph import Graph, reference_factors, reference_variables
from workbench.heads import Head, as_head
from workbench.masks import (
    MaskResult,
    Masks,
    check_masks,
)
from workbench.prune import PruneSpec, copy_model, masks_from_scores
from workbench.registry import get_kernels, kernel_variables
from workbench.scores import Scorer

log = logging.getLogger(__name__)


class Evaluator:
    """Evaluate keep-masks of one model on fixed validation and test sets, quickly and repeatedly.

    Each result holds the clinical metrics (``validated_metrics``) and the evidence against the
    dense model (``compare_to_dense``: AUC and its paired difference with intervals, the
    non-inferiority verdict at ``margin``, Wilson intervals, ECE interval, McNemar's p).

    Example:
        >>> ev = Evaluator(model, data.val, data.test)                        # doctest: +SKIP
        >>> ev.evaluate(make_masks(scorer, PruneSpec(sparsity=0.5)).keep)     # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        val,
        test,
        positive: int = 1,
        *,
        head: Head | str | None = None,
        operating: OperatingPoint = YOUDEN,
        margin: float = 0.02,
        level: float = 0.95,
        evidence: bool = True,
    ):
        self.head = as_head(model, head)  # outputs -> probabilities, and which metrics apply
        self.work = copy_model(model)
        self.dense_kernels = get_kernels(model)
        self.shapes = {name: kernel.shape for name, kernel in self.dense_kernels.items()}
        self.variables = kernel_variables(self.work)
        self._reference = None  # structured mode's biases and BN γ/β: built on first use
        self.positive, self.operating, self.margin, self.level = positive, operating, margin, level
        self.evidence = evidence  # False: metrics without intervals, for curve points and estimates
        self.val, self.test = val, test
        self._forward, self._images = compiled_forward(self.work, self.head), stacked_images(val, test)
        self.dense_val, self.dense_test = predict_splits(self._forward, self._images, len(val.labels))
        self.dense_metrics = self._metrics(self.dense_val, self.dense_test)
        self.fastest_pass: float | None = None  # seconds: the quickest masked pass (not the traced first)

    def probabilities(self, keep: Masks, structured: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(val, test) probabilities with ``keep`` applied to the kernels.

        ``structured`` gives the exact masked reference of ``apply_masks(structured=True)``:
        dead channels' biases and BatchNorm γ/β are zeroed too (``graph.reference_factors``).
        """
        check_masks(keep, self.shapes)
        start = time.perf_counter()
        for name, variable in self.variables.items():
            variable.assign(self.dense_kernels[name] * keep[name])
        if structured and self._reference is None:
            graph = Graph(self.work)
            variables = reference_variables(graph, self.work)
            self._reference = graph, variables, {key: np.asarray(v) for key, v in variables.items()}
        if self._reference is not None:
            graph, variables, dense = self._reference
            factors = reference_factors(graph, keep) if structured else {}
            for key, variable in variables.items():
                variable.assign(dense[key] * factors.get(key, 1.0))
        probs = predict_splits(self._forward, self._images, len(self.val.labels))
        seconds = time.perf_counter() - start
        self.fastest_pass = seconds if self.fastest_pass is None else min(self.fastest_pass, seconds)
        return probs

    def _metrics(self, val_probs: np.ndarray, test_probs: np.ndarray) -> dict:
        if self.head.multilabel:
            return multilabel_evidence(
                (self.dense_val, self.dense_test), (val_probs, test_probs), self.val, self.test
            )
        return pruned_metrics(
            (self.dense_val, self.dense_test),
            (val_probs, test_probs),
            self.val.labels,
            self.test.labels,
            positive=self.positive,
            operating=self.operating,
            margin=self.margin,
            level=self.level,
            evidence=self.evidence,
        )

    def evaluate(self, keep: Masks, structured: bool = False) -> dict:
        """Clinical metrics and evidence on test (threshold chosen on val), and the changed decisions."""
        return self._metrics(*self.probabilities(keep, structured))


def multilabel_evidence(dense: tuple, pruned: tuple, val, test) -> dict:
    """Per-label metrics of a multi-label model, with the test cases whose decisions changed."""
    metrics = multilabel_metrics(pruned[0], val.labels, pruned[1], test.labels)
    metrics["changed"] = changed_labels(dense[1], pruned[1])
    metrics["test_probs"] = pruned[1]
    return metrics


def compiled_forward(model, head: Head):
    """The model's inference pass, as probabilities, in one compiled function (every evaluation path)."""
    return tf.function(lambda x: head.probabilities(model(x, training=False)))


def stacked_images(val, test):
    """Validation and test images as one tensor: every evaluation path runs them in one batch."""
    return tf.constant(np.concatenate([val.images, test.images]), tf.float32)


def predict_splits(forward, images, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(val, test) probabilities from one forward pass over ``stacked_images``.

    One pass, always the same batch: softmax and batched kernels round differently with a row's
    position in a batch, and every evaluation path must see the same numbers.
    """
    probs = forward(images).numpy()
    return probs[:val_size], probs[val_size:]


def evaluate_model(
    model,
    val,
    test,
    positive: int = 1,
    *,
    head: Head | str | None = None,
    dense=None,
    operating: OperatingPoint = YOUDEN,
    margin: float = 0.02,
    level: float = 0.95,
) -> dict:
    """Clinical test metrics of a model evaluated once (threshold chosen on val); no cached copy.

    Args:
        head: the output head, when it cannot be read from ``model`` (see ``workbench.heads``).
        dense: the dense reference model; given, the result also holds ``compare_to_dense``'s
            evidence and ``changed``, exactly as ``Evaluator.evaluate`` returns for the same masks.
    """
    head = as_head(model, head)
    images = stacked_images(val, test)
    probs = predict_splits(compiled_forward(model, head), images, len(val.labels))
    if dense is None and head.multilabel:
        return multilabel_metrics(probs[0], val.labels, probs[1], test.labels)
    if dense is None:
        return validated_metrics(probs[0], val.labels, probs[1], test.labels, positive, operating=operating)
    reference = predict_splits(compiled_forward(dense, as_head(dense, head)), images, len(val.labels))
    if head.multilabel:
        return multilabel_evidence(reference, probs, val, test)
    options = dict(positive=positive, operating=operating, margin=margin, level=level)
    return pruned_metrics(reference, probs, val.labels, test.labels, **options)


SCALAR_METRICS = ("accuracy", "auc", "sensitivity", "specificity", "ece")


def curve(
    scorer: Scorer,
    evaluator: Evaluator,
    spec: PruneSpec,
    *,
    epsilons: np.ndarray | None = None,
    sparsities: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Evaluate ``spec`` at every ε (or target sparsity) of a grid.

    Returns:
        One row per point: the grid value (``epsilon`` or ``target``), overall ``sparsity``, the
        metrics in ``SCALAR_METRICS``, ``changed`` (count of flipped test predictions),
        ``guarded`` (layers the collapse guard rescued), and ``sparsity/<layer>`` per layer.

    ``progress``, if given, is called with (points done, points in all) after each point; an
    exception it raises (e.g. a cancellation) stops the curve.
    """
    if (epsilons is None) == (sparsities is None):
        raise ValueError("give exactly one of epsilons= or sparsities=")
    grid, key = (epsilons, "epsilon") if epsilons is not None else (sparsities, "sparsity")
    scores = scorer.scores(spec.criterion, spec.granularity)  # once per curve, not per point
    rows, previous, metrics = [], None, None
    grid = np.asarray(grid, dtype=float)
    for value in grid:
        point = replace(spec, **{"epsilon": None, "sparsity": None, key: float(value)})
        result = masks_from_scores(scores, point, scorer.infos)
        if previous is None or not _same_masks(previous.keep, result.keep):
            # flat stretches of a curve reuse the last point
            metrics = evaluator.evaluate(result.keep, structured=spec.granularity == "structured")
        previous = result
        rows.append(point_row(result, metrics, **{"epsilon" if key == "epsilon" else "target": float(value)}))
        if progress is not None:
            progress(len(rows), len(grid))
    return pd.DataFrame(rows)


def _same_masks(a: Masks, b: Masks) -> bool:
    return all(np.array_equal(a[name], b[name]) for name in a)


def point_row(result: MaskResult, metrics: dict, **grid_value) -> dict:
    """Flatten one curve point into a table row."""
    row = dict(grid_value, sparsity=result.sparsity)
    row.update({name: metrics[name] for name in SCALAR_METRICS})
    row["changed"] = len(metrics["changed"])
    row["guarded"] = ",".join(result.guarded)
    row.update({f"sparsity/{name}": value for name, value in result.layer_sparsity().items()})
    return row


def log_grid(low: float, high: float, points: int = 50) -> np.ndarray:
    """A log-spaced ε grid, with 0 prepended (the dense model: nothing scores below 0)."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high for a log grid, got low={low}, high={high}")
    return np.concatenate([[0.0], np.geomspace(low, high, points - 1)])
