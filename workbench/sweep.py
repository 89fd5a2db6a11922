"""Curves over ε (or sparsity) grids, fast enough to drive an interactive view.

Scores come from a cached ``Scorer``; each point only thresholds (NumPy), writes the masked
kernels into one reusable work copy of the model, and runs one compiled forward pass over the
validation and test images together. No model is rebuilt per point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from workbench.compat import tf
from workbench.evaluate import changed_predictions, layer_table, validated_metrics
from workbench.graph import Graph, reference_factors, reference_variables
from workbench.masks import (
    MaskResult,
    Masks,
    epsilon_for_sparsity,
    epsilon_range,
    normalise_per_layer,
)
from workbench.prune import PruneSpec, apply_masks, copy_model, fine_tune, make_masks, masks_from_scores
from workbench.registry import get_kernels, kernel_variables
from workbench.scores import Scorer
from workbench.train import Recipe

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
        self._reference = None  # structured mode's biases and BN γ/β: built on first use
        self.positive = positive
        self.val_labels, self.test_labels = np.asarray(val.labels), np.asarray(test.labels)
        self._images = tf.constant(np.concatenate([val.images, test.images]), tf.float32)
        self._forward = tf.function(lambda x: self.work(x, training=False))
        self.dense_val, self.dense_test = self._split(self._forward(self._images).numpy())
        self.dense_metrics = self._metrics(self.dense_val, self.dense_test)

    def _split(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return probs[: len(self.val_labels)], probs[len(self.val_labels) :]

    def probabilities(self, keep: Masks, structured: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(val, test) probabilities with ``keep`` applied to the kernels.

        ``structured`` gives the exact masked reference of ``apply_masks(structured=True)``:
        dead channels' biases and BatchNorm γ/β are zeroed too (``graph.reference_factors``).
        """
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
        return self._split(self._forward(self._images).numpy())

    def _metrics(self, val_probs: np.ndarray, test_probs: np.ndarray) -> dict:
        return validated_metrics(val_probs, self.val_labels, test_probs, self.test_labels, self.positive)

    def evaluate(self, keep: Masks, structured: bool = False) -> dict:
        """Clinical metrics on test (threshold chosen on val), plus the test images whose class changed."""
        val_probs, test_probs = self.probabilities(keep, structured)
        metrics = self._metrics(val_probs, test_probs)
        metrics["changed"] = changed_predictions(self.dense_test, test_probs)
        metrics["test_probs"] = test_probs
        return metrics


def evaluate_model(model, val, test, positive: int = 1) -> dict:
    """Clinical test metrics of a model evaluated once (threshold chosen on val); no compiled cache."""
    val_probs = model.predict(val.images, batch_size=512, verbose=0)
    test_probs = model.predict(test.images, batch_size=512, verbose=0)
    return validated_metrics(val_probs, val.labels, test_probs, test.labels, positive)


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
    scores = scorer.scores(spec.criterion, spec.granularity)  # once per curve, not per point
    rows, previous, metrics = [], None, None
    for value in np.asarray(grid, dtype=float):
        point = replace(spec, **{"epsilon": None, "sparsity": None, key: float(value)})
        result = masks_from_scores(scores, point, scorer.infos)
        if previous is None or not _same_masks(previous.keep, result.keep):
            # flat stretches of a curve reuse the last point
            metrics = evaluator.evaluate(result.keep, structured=spec.granularity == "structured")
        previous = result
        rows.append(point_row(result, metrics, **{"epsilon" if key == "epsilon" else "target": float(value)}))
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


# --- the state behind an interactive view -----------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One evaluated setting: its spec, masks, metrics and per-layer table."""

    spec: PruneSpec
    result: MaskResult
    metrics: dict
    table: pd.DataFrame

    def row(self) -> dict:
        return point_row(self.result, self.metrics, epsilon=self.spec.epsilon, target=self.spec.sparsity)


class Explorer:
    """Everything an ε explorer needs, without widgets: scores, curves and points, all cached.

    Example:
        >>> explorer = Explorer(model, data)                              # doctest: +SKIP
        >>> explorer.point(PruneSpec(criterion="snip", epsilon=1e-4))     # doctest: +SKIP
    """

    def __init__(self, model, dataset, *, calibration_size: int = 256, grid_points: int = 30, seed: int = 0):
        self.model, self.dataset, self.grid_points = model, dataset, grid_points
        calibration = slice(0, calibration_size)
        self.scorer = Scorer(
            model, dataset.train.images[calibration], dataset.train.labels[calibration], seed=seed
        )
        self.evaluator = Evaluator(model, dataset.val, dataset.test)
        self._curves: dict[tuple, pd.DataFrame] = {}

    @property
    def layers(self) -> list[str]:
        return [info.name for info in self.scorer.infos]

    def epsilon_bounds(self, spec: PruneSpec) -> tuple[float, float]:
        """A slider range for ε from the score distribution of ``spec``'s criterion."""
        scores = self.scorer.scores(spec.criterion, spec.granularity)
        return epsilon_range(normalise_per_layer(scores) if spec.normalize else scores)

    def epsilon_for(self, spec: PruneSpec, sparsity: float) -> float:
        """The ε at which ``spec``'s criterion prunes ``sparsity`` of the weights overall."""
        scores = self.scorer.scores(spec.criterion, spec.granularity)
        flat = np.concatenate(
            [s.ravel() for s in (normalise_per_layer(scores) if spec.normalize else scores).values()]
        )
        return epsilon_for_sparsity(flat, sparsity)

    def grid(self, spec: PruneSpec) -> tuple[str, np.ndarray]:
        """The curve's grid: log-spaced ε from the scores, or target sparsities 0..0.99."""
        if spec.sparsity is not None:
            return "sparsity", np.linspace(0.0, 0.99, self.grid_points)
        return "epsilon", log_grid(*self.epsilon_bounds(spec), points=self.grid_points)

    def curve(self, spec: PruneSpec) -> pd.DataFrame:
        """The curve for ``spec``'s criterion/scope/granularity/mode (cached; ε itself ignored)."""
        key = (
            spec.criterion,
            spec.scope,
            spec.granularity,
            spec.normalize,
            spec.min_keep,
            spec.sparsity is None,
        )
        if key not in self._curves:
            kind, grid = self.grid(spec)
            grid_argument = "epsilons" if kind == "epsilon" else "sparsities"
            self._curves[key] = curve(self.scorer, self.evaluator, spec, **{grid_argument: grid})
        return self._curves[key]

    def point(self, spec: PruneSpec) -> Point:
        """Masks, metrics and the per-layer table at one setting."""
        result = make_masks(self.scorer, spec)
        metrics = self.evaluator.evaluate(result.keep, structured=spec.granularity == "structured")
        return Point(spec, result, metrics, layer_table(self.model, result))

    def fine_tuned(self, point: Point, recipe: Recipe, *, progress: bool = True) -> tuple[dict, dict]:
        """Fine-tune a pruned copy at ``point``'s masks; return (test metrics, training history)."""
        pruned = apply_masks(self.model, point.result.keep, structured=point.spec.granularity == "structured")
        structured = point.spec.granularity == "structured"
        history = fine_tune(
            pruned, point.result.keep, self.dataset, recipe, structured=structured, progress=progress
        )
        return evaluate_model(pruned, self.dataset.val, self.dataset.test), history
