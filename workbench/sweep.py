"""Curves over ε (or sparsity) grids, fast enough to drive an interactive view.

Scores come from a cached ``Scorer``; each point only thresholds (NumPy), writes the masked
kernels into one reusable work copy of the model, and runs one compiled forward pass over the
validation and test images together. No model is rebuilt per point.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from workbench.compat import tf
from workbench.evaluate import changed_predictions, clinical_metrics, operating_threshold
from workbench.masks import MaskResult, Masks
from workbench.prune import PruneSpec, copy_model, make_masks
from workbench.registry import get_kernels, kernel_variables
from workbench.scores import Scorer

log = logging.getLogger(__name__)


class Evaluator:
    """Evaluate keep-masks of one model on fixed validation and test sets, quickly and repeatedly.

    Example:
        >>> ev = Evaluator(model, data.val, data.test)                        # doctest: +SKIP
        >>> ev.evaluate(make_masks(scorer, PruneSpec(sparsity=0.5)).keep)     # doctest: +SKIP
    """

    def __init__(self, model, val, test, positive: int = 1):
        self.work = copy_model(model)
        self.dense_kernels = get_kernels(model)
        self.variables = kernel_variables(self.work)
        self.positive = positive
        self.val_labels, self.test_labels = np.asarray(val.labels), np.asarray(test.labels)
        self._images = tf.constant(np.concatenate([val.images, test.images]), tf.float32)
        self._forward = tf.function(lambda x: self.work(x, training=False))
        self.dense_val, self.dense_test = self._split(self._forward(self._images).numpy())
        self.dense_metrics = self._metrics(self.dense_val, self.dense_test)

    def _split(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return probs[: len(self.val_labels)], probs[len(self.val_labels) :]

    def probabilities(self, keep: Masks) -> tuple[np.ndarray, np.ndarray]:
        """(val, test) probabilities of the model with ``keep`` applied to its kernels."""
        for name, variable in self.variables.items():
            variable.assign(self.dense_kernels[name] * keep[name])
        return self._split(self._forward(self._images).numpy())

    def _metrics(self, val_probs: np.ndarray, test_probs: np.ndarray) -> dict:
        threshold = operating_threshold(val_probs, self.val_labels, self.positive) if test_probs.shape[1] == 2 else None
        return clinical_metrics(test_probs, self.test_labels, threshold, self.positive)

    def evaluate(self, keep: Masks) -> dict:
        """Clinical metrics on test (threshold chosen on val), plus the test images whose class changed."""
        val_probs, test_probs = self.probabilities(keep)
        metrics = self._metrics(val_probs, test_probs)
        metrics["changed"] = changed_predictions(self.dense_test, test_probs)
        metrics["test_probs"] = test_probs
        return metrics


SCALAR_METRICS = ("accuracy", "auc", "sensitivity", "specificity", "ece")


def curve(
    scorer: Scorer,
    evaluator: Evaluator,
    spec: PruneSpec,
    *,
    epsilons: np.ndarray | None = None,
    sparsities: np.ndarray | None = None,
) -> pd.DataFrame:
    """Evaluate ``spec`` at every ε (or target sparsity) of a grid.

    Returns:
        One row per point: the grid value (``epsilon`` or ``target``), overall ``sparsity``, the
        metrics in ``SCALAR_METRICS``, ``changed`` (count of flipped test predictions),
        ``guarded`` (layers the collapse guard rescued), and ``sparsity/<layer>`` per layer.
    """
    if (epsilons is None) == (sparsities is None):
        raise ValueError("give exactly one of epsilons= or sparsities=")
    grid, key = (epsilons, "epsilon") if epsilons is not None else (sparsities, "sparsity")
    rows = []
    for value in np.asarray(grid, dtype=float):
        point = replace(spec, **{"epsilon": None, "sparsity": None, key: float(value)})
        result = make_masks(scorer, point)
        rows.append(point_row(result, evaluator.evaluate(result.keep), **{"epsilon" if key == "epsilon" else "target": float(value)}))
    return pd.DataFrame(rows)


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
