"""Curves over ε (or sparsity) grids, fast enough to drive an interactive view.

Scores come from a cached ``Scorer``; each point only thresholds (NumPy) and runs one compiled
forward pass (``Forward``) over the validation and test images together, with the masked kernels
passed in as arguments. No model is rebuilt or copied per point.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.core.masks import MaskResult, Masks, check_masks
from workbench.core.metrics import (
    YOUDEN,
    OperatingPoint,
    Predictions,
    at_chance,
    auc_evidence,
    changed_labels,
    check_positive,
    check_same_outputs,
    images_fingerprint,
    multilabel_metrics,
    pruned_metrics,
    validated_metrics,
)
from workbench.core.progress import Progress, reporter, ticking
from workbench.core.stats import check_evidence_options
from workbench.data.dataset import Dataset, Split, evaluation_splits
from workbench.model.builders import check_built, check_images
from workbench.model.compat import tf
from workbench.model.graph import Graph, reference_factors, reference_variables
from workbench.model.heads import Head, as_head
from workbench.model.registry import kernel_variables
from workbench.prune.pruning import PruneSpec, masks_from_scores
from workbench.prune.scores import Scorer

log = logging.getLogger(__name__)


class Forward:
    """A model's inference pass as probabilities, with the weights passed in (Keras ``stateless_call``).

    Masked weights are arguments, never assigned, so no work copy of the model is needed: one
    compiled function (traced once, for any batch size) serves every evaluator of a model, and
    any thread. The weights are a snapshot taken here; later edits of the model do not leak in.

    Images go through in chunks (``rows``) aligned from the first row, so a row always meets the
    same neighbours (batched kernels round with a row's batch) and a caller can stop a pass of
    several chunks between them (up to 1024 small images make one chunk).
    """

    CHUNK = 1024  # rows at most in a chunk
    CHUNK_VALUES = 128 * 64 * 64 * 3  # input values in a chunk: 128 images at 64x64x3, 10 at 224 px

    def rows(self, images) -> int:
        """Rows per chunk for ``images``: a chunk of 224-px images is small enough for the
        activations of a backbone (GBs at 128), one of 28-px X-rays holds all 738 (one call:
        seed_cnn's pass 74 ms instead of 86 ms in chunks of 128)."""
        per_image = max(1, int(np.prod(images.shape[1:])))
        return int(min(self.CHUNK, max(1, self.CHUNK_VALUES // per_image)))

    def __init__(self, model, head: Head):
        self.model, self.head = model, head
        variables = [*model.trainable_variables, *model.non_trainable_variables]
        self._trainable = len(model.trainable_variables)
        self._positions = {id(variable): i for i, variable in enumerate(variables)}
        self.dense = [tf.constant(np.asarray(variable)) for variable in variables]
        self._function, self._called = None, False
        self._lock = threading.Lock()

    def position(self, variable) -> int:
        """Where ``variable`` (one of the model's) sits in the list of weights a pass takes."""
        return self._positions[id(variable)]

    def trace(self, images: tf.Tensor):
        """Trace the pass for images shaped like ``images`` (any count); later calls reuse it."""
        with self._lock:
            if self._function is None:
                specs = [tf.TensorSpec(value.shape, value.dtype) for value in self.dense]
                batch = tf.TensorSpec((None, *images.shape[1:]), images.dtype)
                self._function = tf.function(self._call, input_signature=[specs, batch])
                self._function.get_concrete_function()
        return self._function

    def compile(self, images: tf.Tensor):
        """``trace``, then run the pass once on one image: TensorFlow optimises a graph on its
        first call (DenseNet121: a 2.0 s trace, then 1.2 s), so that no timed pass pays for it."""
        function = self.trace(images)
        with self._lock:
            if not self._called:
                function(self.dense, images[:1])
                self._called = True
        return function

    def _call(self, values, images):
        outputs, _ = self.model.stateless_call(
            values[: self._trainable], values[self._trainable :], images, training=False
        )
        return self.head.probabilities(outputs)

    def __call__(
        self, images: tf.Tensor, values: list | None = None, progress: Progress | None = None
    ) -> np.ndarray:
        """Probabilities of ``images`` under ``values`` (default: the dense weights).

        ``progress`` (``workbench.core.progress``) is called with (chunks done, chunks) after
        every chunk; a ``Cancelled`` it raises stops the pass there.
        """
        function = self.compile(images)
        values = self.dense if values is None else values
        parts, rows = [], self.rows(images)
        chunks = -(-len(images) // rows)
        for start in range(0, len(images), rows):
            parts.append(function(values, images[start : start + rows]).numpy())
            if progress is not None:
                progress(len(parts), chunks)
        return np.concatenate(parts)


class Evaluator:
    """Evaluate keep-masks of one model on fixed validation and test sets, quickly and repeatedly.

    Each result holds the clinical metrics (``validated_metrics``) and the evidence against the
    dense model (``compare_to_dense``: AUC and its paired difference with intervals, the
    non-inferiority verdict at ``margin``, Wilson intervals, ECE interval, McNemar's p).
    Evaluators of one model can share a ``Forward`` (one compiled pass); they are thread-safe.
    ``dense`` = (val probabilities, test probabilities, seconds) of an earlier dense pass of the
    same weights and images (a disk cache) skips that pass; else ``progress`` is called with
    (steps done, steps) through it (the trace, the graph's first call, then each chunk), or a
    tqdm bar shows after 1 s.

    Example:
        >>> ev = Evaluator(model, data)  # or (model, data.val, data.test)
        >>> metrics = ev.evaluate(make_masks(scorer, PruneSpec(sparsity=0.5)).keep)
        >>> 0.0 <= metrics["accuracy"] <= 1.0
        True
    """

    def __init__(
        self,
        model,
        val,
        test=None,
        positive: int = 1,
        *,
        head: Head | str | None = None,
        operating: OperatingPoint = YOUDEN,
        margin: float = 0.02,
        level: float = 0.95,
        evidence: bool = True,
        forward: Forward | None = None,
        dense: tuple[np.ndarray, np.ndarray, float] | None = None,
        progress: Progress | None = None,
    ):
        val, test = evaluation_splits(val, test)  # a Dataset, or its val and test Splits
        self.head = check_evaluation(model, val, test, positive, head)  # outputs -> probabilities, metrics
        check_evidence_options(margin, level)
        self.forward = forward if forward is not None else Forward(model, self.head)
        self.model = model
        self._kernels = {
            name: self.forward.position(variable) for name, variable in kernel_variables(model).items()
        }
        self.dense_kernels = {name: self.forward.dense[i].numpy() for name, i in self._kernels.items()}
        self.shapes = {name: kernel.shape for name, kernel in self.dense_kernels.items()}
        self._reference = None  # structured mode's biases and BN γ/β: built on first use
        self.positive, self.operating, self.margin, self.level = positive, operating, margin, level
        self.evidence = evidence  # False: metrics without intervals, for curve points and estimates
        self.val, self.test = val, test
        self._images = stacked_images(val, test)
        self.fastest_pass: float | None = None  # seconds: the quickest full pass seen
        if dense is None:
            self.dense_val, self.dense_test = self._dense_pass(progress)
        else:  # a cached dense pass: (val, test probabilities, its seconds); the trace waits for a pass
            self.dense_val, self.dense_test, self.fastest_pass = dense
        self.dense_metrics = self._metrics(self.dense_val, self.dense_test, evidence)

    def probabilities(
        self, keep: Masks, structured: bool = False, *, progress: Progress | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(val, test) probabilities with ``keep`` applied to the kernels.

        ``structured`` gives the exact masked reference of ``apply_masks(structured=True)``:
        dead channels' biases and BatchNorm γ/β are zeroed too (``graph.reference_factors``).
        ``progress`` is called with (chunks done, chunks) through the pass (see ``Forward``); a
        ``Cancelled`` it raises stops it.
        """
        check_masks(keep, self.shapes)
        values = list(self.forward.dense)
        for name, position in self._kernels.items():
            values[position] = self.dense_kernels[name] * keep[name]
        if structured:
            graph, references = self._references()
            for key, factor in reference_factors(graph, keep).items():
                position, dense = references[key]
                values[position] = dense * factor
        return self._timed_pass(values, progress)

    def _dense_pass(self, progress) -> tuple[np.ndarray, np.ndarray]:
        # the trace, the graph's first call, then every chunk
        steps = 2 + -(-len(self._images) // self.forward.rows(self._images))
        with reporter(progress, steps, "dense pass", "step") as report:
            report(0, steps)
            with ticking(report, 0, steps):
                self.forward.trace(self._images)  # apart, so the pass below is timed alone
            report(1, steps)
            with ticking(report, 1, steps):
                self.forward.compile(self._images)
            report(2, steps)
            probs = self._timed_pass(self.forward.dense, lambda done, _: report(2 + done, steps))
            report(steps, steps)
        return probs

    def warm_up(self) -> None:
        """Trace the compiled pass now (it is otherwise traced by the first pass that needs it)."""
        self.forward.compile(self._images)

    def _timed_pass(self, values: list, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        probs = self.forward(self._images, values, progress)
        seconds = time.perf_counter() - start
        self.fastest_pass = seconds if self.fastest_pass is None else min(self.fastest_pass, seconds)
        val_size = len(self.val.labels)
        return probs[:val_size], probs[val_size:]

    def _references(self) -> tuple[Graph, dict]:
        """The graph, and {(layer, attribute): (position in a pass's weights, dense value)} of the
        biases and BN γ/β a structured mask may zero: read once, not on every pass."""
        if self._reference is None:
            graph = Graph.of(self.model)
            positions = {
                key: self.forward.position(v) for key, v in reference_variables(graph, self.model).items()
            }
            self._reference = graph, {key: (i, self.forward.dense[i].numpy()) for key, i in positions.items()}
        return self._reference

    def _metrics(self, val_probs: np.ndarray, test_probs: np.ndarray, evidence: bool) -> dict:
        if self.head.multilabel:
            dense = (self.dense_val, self.dense_test)
            options = dict(margin=self.margin, level=self.level, evidence=evidence)
            return multilabel_evidence(dense, (val_probs, test_probs), self.val, self.test, **options)
        return pruned_metrics(
            (self.dense_val, self.dense_test),
            (val_probs, test_probs),
            self.val.labels,
            self.test.labels,
            positive=self.positive,
            operating=self.operating,
            margin=self.margin,
            level=self.level,
            evidence=evidence,
        )

    def evaluate(
        self,
        keep: Masks,
        structured: bool = False,
        *,
        evidence: bool | None = None,
        progress: Progress | None = None,
    ) -> dict:
        """Clinical metrics and evidence on test (threshold chosen on val), and the changed decisions.

        ``evidence`` overrides the evaluator's own setting (False: no intervals, for curve points).
        ``progress``: as in ``probabilities``.
        """
        probs = self.probabilities(keep, structured, progress=progress)
        return self._metrics(*probs, self.evidence if evidence is None else evidence)


def check_evaluation(model, val, test, positive: int, head: Head | str | None = None) -> Head:
    """The model's head, or ValueError unless ``val`` and ``test`` are Splits whose images the model
    takes and whose labels fit its head, and ``positive`` is one of its classes."""
    check_built(model)
    head = as_head(model, head)
    for name, split in (("val", val), ("test", test)):
        if not isinstance(split, Split):
            raise WorkbenchError(f"{name} must be a Split (e.g. data.{name}), got {type(split).__name__}")
        check_images(model, split.images, f"{name} images")
        head.check_labels(split.labels, f"{name} labels")
    check_positive(positive, head.classes)
    return head


def multilabel_evidence(
    dense: tuple, pruned: tuple, val, test, *, margin: float = 0.02, level: float = 0.95, evidence=True
) -> dict:
    """Per-label metrics of a multi-label model, with the test cases whose decisions changed, and
    (``evidence``) the AUC evidence of the mean over labels (``auc_evidence``)."""
    check_evidence_options(margin, level)
    check_same_outputs(dense, pruned)
    metrics = multilabel_metrics(pruned[0], val.labels, pruned[1], test.labels)
    if evidence:
        metrics.update(auc_evidence(dense[1], pruned[1], test.labels, margin, level, multilabel=True))
    metrics["changed"] = changed_labels(dense[1], pruned[1])
    metrics["test_probs"] = pruned[1]
    return metrics


def stacked_images(val, test):
    """Validation and test images as one tensor: every evaluation path runs them the same way."""
    return tf.constant(np.concatenate([val.images, test.images]), tf.float32)


def split_probabilities(model, head: Head, images, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(val, test) probabilities of ``model`` (as it is now) over ``stacked_images``."""
    probs = Forward(model, head)(images)
    return probs[:val_size], probs[val_size:]


def evaluate_model(
    model,
    data,
    test=None,
    positive: int = 1,
    *,
    head: Head | str | None = None,
    dense=None,
    operating: OperatingPoint = YOUDEN,
    margin: float = 0.02,
    level: float = 0.95,
) -> dict:
    """Clinical test metrics of a model evaluated once (threshold chosen on val); no cached copy.

    Example (``model`` and ``pruned`` take the images of ``data``):
        >>> metrics = evaluate_model(pruned, data, dense=model)
        >>> metrics["noninferiority"] in ("non-inferior", "inconclusive", "inferior", "no verdict")
        True

    Args:
        data: the Dataset, evaluated on its val and test splits; or the validation Split, with
            the test Split as ``test``.
        head: the output head, when it cannot be read from ``model`` (see ``workbench.model.heads``).
        dense: the dense reference model; given, the result also holds ``compare_to_dense``'s
            evidence and ``changed``, exactly as ``Evaluator.evaluate`` returns for the same masks.
    """
    val, test = evaluation_splits(data, test)
    given, head = head, check_evaluation(model, val, test, positive, head)
    check_evidence_options(margin, level)
    if dense is not None:  # checked before any pass; its head read from it (or the head given)
        try:
            dense_head = check_evaluation(dense, val, test, positive, given)
        except ValueError as err:
            raise WorkbenchError(f"dense (the reference model): {err}") from None
    images = stacked_images(val, test)
    probs = split_probabilities(model, head, images, len(val.labels))
    if dense is None:  # the model may be the dense one: say so if it is no reference
        at_chance(
            probs[1],
            test.labels,
            positive=positive,
            multilabel=head.multilabel,
            level=level,
            what="the model",
        )
    if dense is None and head.multilabel:
        return multilabel_metrics(probs[0], val.labels, probs[1], test.labels)
    if dense is None:
        return validated_metrics(probs[0], val.labels, probs[1], test.labels, positive, operating=operating)
    reference = split_probabilities(dense, dense_head, images, len(val.labels))
    if head.multilabel:
        return multilabel_evidence(reference, probs, val, test, margin=margin, level=level)
    options = dict(positive=positive, operating=operating, margin=margin, level=level)
    return pruned_metrics(reference, probs, val.labels, test.labels, **options)


def predictions(model, dataset: Dataset, *, head: Head | str | None = None) -> Predictions:
    """Run ``model`` on ``dataset``'s validation and test images: the input of ``compare_to_dense``.

    Example:
        >>> evidence = compare_to_dense(predictions(model, data), predictions(pruned, data))
        >>> 0.0 <= evidence["auc"] <= 1.0
        True

    Raises:
        ValueError: ``dataset`` not a Dataset, or a model that does not take its images or fit its
            labels (``check_evaluation``).
    """
    if not isinstance(dataset, Dataset):
        raise WorkbenchError(f"dataset must be a Dataset (e.g. load_npz(path)), got {type(dataset).__name__}")
    val, test = dataset.val, dataset.test
    head = check_evaluation(model, val, test, 0, head)
    probs = split_probabilities(model, head, stacked_images(val, test), len(val.labels))
    return Predictions(*probs, val.labels, test.labels, images_fingerprint(val.images, test.images))


SCALAR_METRICS = ("accuracy", "auc", "sensitivity", "specificity", "ece")


def curve(
    scorer: Scorer,
    evaluator: Evaluator,
    spec: PruneSpec,
    *,
    epsilons: np.ndarray | None = None,
    sparsities: np.ndarray | None = None,
    progress: Progress | None = None,
    on_row: Callable[[int, dict], None] | None = None,
) -> pd.DataFrame:
    """Evaluate ``spec`` at every ε (or target sparsity) of a grid.

    Returns:
        One row per point: the grid value (``epsilon`` or ``target``), overall ``sparsity``, the
        metrics in ``SCALAR_METRICS``, ``changed`` (count of flipped test predictions),
        ``guarded`` (layers the collapse guard rescued), and ``sparsity/<layer>`` per layer.

    ``progress`` (``workbench.core.progress``), if given, is called with (points done, points in
    all) after each point, and again with the same numbers between the chunks of a point's
    forward pass, so a ``Cancelled`` it raises stops the curve within a chunk (and work in the
    background can yield there). ``on_row(index, row)`` sees each row as it is made.
    """
    if (epsilons is None) == (sparsities is None):
        raise WorkbenchError("give exactly one of epsilons= or sparsities=")
    grid, key = (epsilons, "epsilon") if epsilons is not None else (sparsities, "sparsity")
    scores = scorer.scores(spec.criterion, spec.granularity)  # once per curve, not per point
    rows, previous, metrics = [], None, None
    grid = np.asarray(grid, dtype=float)
    within = _within_point(progress, rows, len(grid))
    for value in grid:
        point = replace(spec, **{"epsilon": None, "sparsity": None, key: float(value)})
        result = masks_from_scores(scores, point, scorer.infos)
        if previous is None or not _same_masks(previous.keep, result.keep):
            # flat stretches of a curve reuse the last point
            structured = spec.granularity == "structured"
            metrics = evaluator.evaluate(result.keep, structured, evidence=False, progress=within)
        previous = result
        rows.append(point_row(result, metrics, **{"epsilon" if key == "epsilon" else "target": float(value)}))
        if on_row is not None:
            on_row(len(rows) - 1, rows[-1])
        if progress is not None:
            progress(len(rows), len(grid))
    return pd.DataFrame(rows)


def _within_point(progress: Progress | None, rows: list, points: int) -> Progress | None:
    """The progress a curve's point passes to its forward pass: the curve's own count so far
    (``rows`` grows as points finish), repeated between the pass's chunks."""
    if progress is None:
        return None

    def within(done: int, chunks: int) -> None:
        progress(len(rows), points)

    return within


def _same_masks(a: Masks, b: Masks) -> bool:
    return all(np.array_equal(a[name], b[name]) for name in a)


def point_row(result: MaskResult, metrics: dict, **grid_value) -> dict:
    """Flatten one curve point into a table row."""
    row = dict(grid_value, sparsity=result.sparsity)
    row.update({name: metrics[name] for name in SCALAR_METRICS})
    changed = metrics["changed"]  # the test cases, or their count (a point read from a curve)
    row["changed"] = changed if isinstance(changed, int) else len(changed)
    row["guarded"] = ",".join(result.guarded)
    row.update({f"sparsity/{name}": value for name, value in result.layer_sparsity().items()})
    return row


def log_grid(low: float, high: float, points: int = 50) -> np.ndarray:
    """A log-spaced ε grid, with 0 prepended (the dense model: nothing scores below 0)."""
    if not 0 < low < high:
        raise WorkbenchError(f"need 0 < low < high for a log grid, got low={low}, high={high}")
    if isinstance(points, bool) or not isinstance(points, int | np.integer) or points < 2:
        raise WorkbenchError(f"points must be an integer >= 2 (0, then log-spaced values), got {points!r}")
    return np.concatenate([[0.0], np.geomspace(low, high, points - 1)])
