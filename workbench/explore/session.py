"""The state behind an interactive ε view, without widgets: scores, curves and evaluated points.

An ``Explorer`` answers the questions a dashboard asks, as plain function calls:

- ``point(spec)``: masks, metrics and the per-layer table at one setting (what a headless run uses);
- ``setting(spec, keep_sparsity=...)``: after a criterion/scope/granularity/mode change, the spec to
  show and the ε slider's range, so a widget only copies values into its controls;
- ``curve(spec)``: the ε (or target-sparsity) curve of a setting, cached in memory and on disk;
- ``estimate(spec)``: a quick answer from a stratified subset of the evaluation images, with an
  DeLong interval on its AUC.
- ``goal_point(goal, value)``: the point ``workbench.analysis.budget.allocate`` chooses for a tolerated AUC
  drop or a FLOPs/parameter budget, over a sensitivity table computed once per criterion/granularity.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.analysis.budget import Allocation, allocate, check_goal
from workbench.analysis.curve_cache import read_cached_curve, write_cached_curve
from workbench.analysis.curves import SCALAR_METRICS, Evaluator, curve, evaluate_model, log_grid, point_row
from workbench.analysis.sensitivity import DEFAULT_GRID, Sensitivity, Subject, check_grid, sensitivity
from workbench.core.cache import (
    DIFFERENCE,
    FRACTION,
    cache_file,
    cache_key,
    check_array,
    check_fields,
    check_number,
    fingerprint,
    read_cached,
)
from workbench.core.errors import WorkbenchError
from workbench.core.fs import write_atomically
from workbench.core.masks import (
    MaskResult,
    epsilon_for_sparsity,
    epsilon_range,
    normalise_per_layer,
    thresholds_of,
)
from workbench.core.metrics import YOUDEN, OperatingPoint
from workbench.core.stats import auc_columns, compare_macro_auc
from workbench.data.dataset import Split, check_dataset, stratified_sample
from workbench.model.builders import check_built, check_model_fits
from workbench.model.heads import Head
from workbench.model.train import Recipe
from workbench.prune.layer_table import layer_table
from workbench.prune.pruning import PruneSpec, apply_masks, fine_tune, make_masks
from workbench.prune.scores import CRITERIA, Progress, Scorer

log = logging.getLogger(__name__)

# What ε is compared with under each criterion (the slider's name follows the criterion).


@dataclass(frozen=True)
class Point:
    """One evaluated setting: its spec, masks, metrics and per-layer table.

    ``n`` is the number of test images its metrics count. ``exact`` is False for an estimate
    from a subset of the evaluation images; ``interval`` is then the half-width of the AUC's 95%
    interval.
    An answer read from the curve has ``nearest``, the grid value whose metrics it shows (its
    masks and sparsity are the spec's own; its metrics hold no confusion matrix or evidence).
    A ``pending`` point has the spec's masks and sparsity and no metrics yet (all NaN): the first
    frame of a new setting whose quickest metrics need a forward pass over ``estimate_budget``.
    """

    spec: PruneSpec
    result: MaskResult
    metrics: dict
    table: pd.DataFrame
    exact: bool = True
    n: int = 0
    interval: float = 0.0
    nearest: float | None = None
    pending: bool = False

    def row(self) -> dict:
        """The point as a curve row (grid value, sparsity, metrics, per-layer sparsity)."""
        return point_row(self.result, self.metrics, epsilon=self.spec.epsilon, target=self.spec.sparsity)

    def most_pruned_layer(self) -> str:
        """The layer with the largest pruned fraction (the first one on ties)."""
        sparsity = self.result.layer_sparsity()
        return max(sparsity, key=sparsity.get)


# The goal knob per goal: (min, max, step, default, label); the widget copies these into its slider.
GOAL_KNOBS = {
    "tolerance": (0.0, 0.2, 0.005, 0.01, "AUC drop ≤"),
    "flops": (0.02, 1.0, 0.01, 0.5, "FLOPs ≤"),
    "params": (0.01, 1.0, 0.01, 0.2, "params ≤"),
}


@dataclass(frozen=True)
class GoalPoint(Point):
    """A point whose masks are an allocation to a goal (``workbench.analysis.budget``), with its table.

    ``row_sparsity`` maps the sensitivity table's rows (layers or coupled groups) to the sparsity
    the allocation gave them: what the heatmap marks.
    """

    allocation: Allocation | None = None
    sensitivity: Sensitivity | None = None
    row_sparsity: dict[str, float] = field(default_factory=dict)

    @property
    def cost(self) -> float:
        """The achieved cost: FLOPs fraction (structured) or parameter fraction (unstructured)."""
        return self.allocation.cost


@dataclass(frozen=True)
class Setting:
    """What a dashboard shows after a setting change: the spec and the ε slider's range.

    ``decades`` are the slider's (min, max) exponents of ten; ``spec.epsilon`` lies inside them.
    """

    spec: PruneSpec
    decades: tuple[float, float]
    threshold_name: str


class Explorer:
    """Everything an ε explorer needs, without widgets: scores, curves and points, all cached.

    Args:
        model: the trained Keras model, explored as it is now: its weights are read once (build a
            new Explorer after changing them).
        dataset: a ``workbench.data.dataset.Dataset``; scores use ``calibration_size`` training images,
            metrics use the whole validation and test sets.
        cache_dir: if given, finished curves, exact points, the dense pass and the gradient
            statistics are kept there, keyed by weights, data, calibration and spec, so reopening
            a notebook recomputes none of them.
        estimate_budget: seconds an estimate's forward pass may take (drawing comes on top); its
            subset of the evaluation images is sized from the time of one full forward pass.
        estimate_images: the subset's size, overriding the one ``estimate_budget`` gives (for tests
            and scripts); whether a pass fits the budget is still judged by its time.
        head: the model's output head when it cannot be read from the model (``workbench.model.heads``).
        operating: how the decision threshold is chosen on validation (Youden's J, or a target
            sensitivity or specificity); ``margin``: the non-inferiority margin in AUC.
        progress: called with (steps done, steps) through the dense pass when it is not cached
            (the trace, the graph's first call, then each chunk of images); by default a tqdm bar
            shows after 1 s.

    Example:
        >>> explorer = Explorer(model, data, calibration_size=16, grid_points=4)
        >>> point = explorer.point(PruneSpec(criterion="snip", sparsity=0.5))
        >>> round(point.result.sparsity, 2)
        0.5
    """

    def __init__(
        self,
        model,
        dataset,
        *,
        calibration_size: int = 256,
        grid_points: int = 30,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        estimate_budget: float = 0.03,
        estimate_images: int | None = None,
        head: Head | str | None = None,
        operating: OperatingPoint = YOUDEN,
        margin: float = 0.02,
        progress: Progress | None = None,
    ):
        if isinstance(grid_points, bool) or not isinstance(grid_points, int) or grid_points < 2:
            raise WorkbenchError(
                f"grid_points must be an integer >= 2 (points on a curve), got {grid_points!r}"
            )
        if not estimate_budget > 0:
            raise WorkbenchError(f"estimate_budget must be a number of seconds > 0, got {estimate_budget!r}")
        if estimate_images is not None:
            check_image_count(estimate_images, "estimate_images")
        check_dataset(dataset)
        check_built(model)
        # before the Scorer, which would blame its calibration labels for a model made for other classes
        fitted_head = check_model_fits(model, dataset, "model", head)
        self.model, self.dataset, self.grid_points, self.seed = model, dataset, grid_points, seed
        # a seeded, class-stratified sample: MedMNIST files are sorted by class, so the first N
        # training images would all be one class
        calibration = stratified_sample(dataset.train, calibration_size, seed)
        self.scorer = Scorer(
            model,
            calibration.images,
            calibration.labels,
            seed=seed,
            head=head,
            cache_dir=cache_dir,
            frozen=True,  # explored as given: see the class docstring
        )
        self._evaluation = dict(head=fitted_head, operating=operating, margin=margin)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._data_key = dataset.fingerprint() if cache_dir is not None else ""  # hashes every image: once
        # every weight (BatchNorm statistics too), as the evaluator snapshots them: hashed once
        self._weights_key = self.scorer.fingerprint() if cache_dir is not None else ""
        # One evaluator (one compiled pass, weights as arguments) for points, curves and goals:
        # it is thread-safe, so a curve computing in the background never blocks a point.
        self.evaluator = self._open_evaluator(progress)
        self._curve_lock = threading.Lock()  # one thread computes a curve or a goal table at a time
        self._points: dict[PruneSpec, dict] = {}  # exact metrics of every point shown (and on disk)
        self._curves: dict[tuple, pd.DataFrame] = {}
        self.estimate_budget = estimate_budget
        self._estimate_size = estimate_images
        self._bounds: dict[tuple, tuple[float, float]] = {}  # the frozen scores' ε ranges

    def _open_evaluator(self, progress: Progress | None) -> Evaluator:
        """The evaluator, with its dense pass from the disk cache when these weights and data had one."""
        data = self.dataset
        path = self._cache_file("dense")
        dense = read_cached(path, _read_dense, self._check_dense, "cached dense pass") if path else None
        if dense is not None:
            return Evaluator(self.model, data.val, data.test, **self._evaluation, dense=dense)
        evaluator = Evaluator(self.model, data.val, data.test, **self._evaluation, progress=progress)
        if path is not None:
            buffer = io.BytesIO()
            seconds = evaluator.fastest_pass
            np.savez(buffer, val=evaluator.dense_val, test=evaluator.dense_test, seconds=seconds)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, buffer.getvalue())
        return evaluator

    def _cache_file(self, kind: str, *settings) -> Path | None:
        """The disk cache's file for ``kind`` under these weights, data and evaluation (None: no cache)."""
        if self.cache_dir is None:
            return None
        return cache_file(self.cache_dir, kind, self._cache_key(kind, *settings))

    def _cache_key(self, kind: str, *settings) -> str:
        """``cache.cache_key`` of ``kind``: these weights, data and evaluation, and ``settings``."""
        # the dense pass does not depend on the calibration images; points and curves score with them
        calibration = self.scorer.calibration_key if kind != "dense" else ""
        evaluation = self._evaluation
        evaluated = (evaluation["head"].kind, str(evaluation["operating"]), evaluation["margin"])
        data = (self._data_key, calibration)
        return cache_key(kind, weights=self._weights_key, data=data, settings=(*evaluated, *settings))

    def warm_up(self) -> None:
        """Do the one-off work of the first estimate now (trace the compiled pass every subset shares).

        A dashboard queues it on its worker after drawing a setting's first figure, so that the
        first slider move does not pay for it; when already done it costs nothing.
        """
        self.evaluator.warm_up()

    @property
    def layers(self) -> list[str]:
        return [info.name for info in self.scorer.infos]

    @property
    def dense_metrics(self) -> dict:
        return self.evaluator.dense_metrics

    # --- settings and slider ranges -------------------------------------------------------

    def _scores(self, spec: PruneSpec):
        scores = self.scorer.scores(spec.criterion, spec.granularity)
        return normalise_per_layer(scores) if spec.normalize else scores

    def epsilon_bounds(self, spec: PruneSpec) -> tuple[float, float]:
        """A slider range for ε from the score distribution of ``spec``'s criterion.

        Computed once per criterion, granularity and normalisation (quantiles of every score:
        ~0.2 s on DenseNet121's 7 M weights, and a setting change asks for it twice).
        """
        key = (spec.criterion, spec.granularity, spec.normalize)
        if key not in self._bounds:
            self._bounds[key] = epsilon_range(self._scores(spec))
        return self._bounds[key]

    def epsilon_for(self, spec: PruneSpec, sparsity: float) -> float:
        """The ε at which ``spec``'s criterion prunes ``sparsity`` of the weights overall."""
        flat = np.concatenate([s.ravel() for s in self._scores(spec).values()])
        return epsilon_for_sparsity(flat, sparsity)

    def setting(
        self, spec: PruneSpec, *, keep_sparsity: float | None = None, progress: Progress | None = None
    ) -> Setting:
        """The spec and ε slider range to show after a criterion/scope/granularity/mode change.

        With ``keep_sparsity`` (the previous point's overall sparsity) an ε spec gets the ε that
        prunes that fraction under the new criterion, so criteria compare at equal sparsity.
        ``progress`` is called with (steps done, steps: the trace, then each batch) if the criterion
        needs a gradient pass not yet made (the first scoring of a model).
        """
        self.scorer.scores(spec.criterion, spec.granularity, progress)  # the one slow step, if any
        low, high = self.epsilon_bounds(spec)
        decades = (float(np.floor(np.log10(low))), float(np.ceil(np.log10(high))))
        if keep_sparsity is not None and spec.sparsity is None:
            epsilon = float(
                np.clip(self.epsilon_for(spec, keep_sparsity), 10 ** decades[0], 10 ** decades[1])
            )
            spec = replace(spec, epsilon=epsilon)
        return Setting(spec, decades, CRITERIA[spec.criterion].threshold_label)

    # --- curves ---------------------------------------------------------------------------

    def grid(self, spec: PruneSpec) -> tuple[str, np.ndarray]:
        """The curve's grid: log-spaced ε from the scores, or target sparsities 0..0.99."""
        if spec.sparsity is not None:
            return "sparsity", np.linspace(0.0, 0.99, self.grid_points)
        return "epsilon", log_grid(*self.epsilon_bounds(spec), points=self.grid_points)

    def placeholder_curve(self, spec: PruneSpec) -> pd.DataFrame:
        """``spec``'s curve before it is computed: its grid, every value NaN (drawn blank, then filled in)."""
        kind, grid = self.grid(spec)
        columns = ["sparsity", *SCALAR_METRICS, *(f"sparsity/{name}" for name in self.layers)]
        table = pd.DataFrame(np.nan, index=range(len(grid)), columns=columns)
        table.insert(0, "epsilon" if kind == "epsilon" else "target", grid)
        return table

    def curve_key(self, spec: PruneSpec) -> tuple:
        """What a curve depends on besides the model and data (ε/sparsity itself excluded)."""
        return (
            spec.criterion,
            spec.scope,
            spec.granularity,
            spec.normalize,
            spec.min_keep,
            spec.sparsity is None,
        )

    def cached_curve(self, spec: PruneSpec) -> pd.DataFrame | None:
        """The curve for ``spec`` if it is in memory or in the disk cache, else None (never computes)."""
        key = self.curve_key(spec)
        if key not in self._curves and self.cache_dir is not None:
            found = read_cached_curve(self.cache_dir, self.cache_fingerprint(spec), self.grid_points)
            if found is not None:
                self._curves[key] = found
        return self._curves.get(key)

    def curve(self, spec: PruneSpec, *, progress=None, between=None, partial=None) -> pd.DataFrame:
        """The curve for ``spec``'s criterion/scope/granularity/mode (cached; ε itself ignored).

        ``progress``, if given, is called with (points done, points in all) as the curve fills in;
        ``between`` between chunks of each forward pass (to cancel quickly); ``partial`` with the
        curve so far after each point (the placeholder's rows filled in up to that point).
        """
        found = self.cached_curve(spec)
        if found is not None:
            return found
        kind, grid = self.grid(spec)
        grid_argument = "epsilons" if kind == "epsilon" else "sparsities"
        on_row = None
        if partial is not None:
            filled = self.placeholder_curve(spec)

            def on_row(index: int, row: dict) -> None:
                filled.loc[index, filled.columns] = [row[column] for column in filled.columns]
                partial(filled)

        with self._curve_lock:
            table = curve(
                self.scorer,
                self.evaluator,
                spec,
                **{grid_argument: grid},
                progress=progress,
                between=between,
                on_row=on_row,
            )
        self._curves[self.curve_key(spec)] = table
        if self.cache_dir is not None:
            write_cached_curve(self.cache_dir, self.cache_fingerprint(spec), table)
        return table

    def cache_fingerprint(self, spec: PruneSpec) -> str:
        """A key for the disk cache: weights, data, calibration images, grid, spec, head, operating point."""
        return self._cache_key("curve", self.seed, self.grid_points, self.curve_key(spec))

    # --- points ---------------------------------------------------------------------------

    def point(self, spec: PruneSpec, *, between=None) -> Point:
        """Masks, metrics and the per-layer table at one setting, on every evaluation image.

        ``between`` is called between chunks of the forward pass; an exception it raises (a
        cancellation) stops the point.

        Raises:
            ValueError: from the engine, for a spec it refuses (e.g. a negative ε).
        """
        result = make_masks(self.scorer, spec)
        metrics = self._known_metrics(spec)
        if metrics is None:
            metrics = self.evaluator.evaluate(result.keep, spec.structured, between=between)
            self._remember(spec, metrics)
        return Point(spec, result, metrics, layer_table(self.model, result), n=len(self.dataset.test))

    def known_point(self, spec: PruneSpec) -> Point | None:
        """The exact point of ``spec`` if it was evaluated before (in memory or on disk), else None."""
        return self.point(spec) if self._known_metrics(spec) is not None else None

    def _point_file(self, spec: PruneSpec) -> Path | None:
        return self._cache_file("point", self.seed, repr(spec))

    def _known_metrics(self, spec: PruneSpec) -> dict | None:
        if spec not in self._points:
            path = self._point_file(spec)
            metrics = read_cached(path, _read_point, self._check_point, "cached point") if path else None
            if metrics is None:
                return None
            self._points[spec] = metrics
        return self._points[spec]

    def _remember(self, spec: PruneSpec, metrics: dict) -> None:
        self._points[spec] = metrics
        path = self._point_file(spec)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, _point_bytes(metrics))

    def _check_dense(self, dense: tuple) -> None:
        """Refuse a cached dense pass whose probabilities do not fit the evaluation images."""
        val, test, seconds = dense
        check_array(val, "val", (len(self.dataset.val), None), FRACTION)
        check_array(test, "test", (len(self.dataset.test), val.shape[1]), FRACTION)
        check_number(seconds, "seconds", (1e-9, math.inf))

    def _check_point(self, metrics: dict) -> None:
        """Refuse cached metrics with an AUC or rate of the wrong type or out of range, or arrays
        that do not fit the test images."""
        bounds = {name: limits for name, limits in _POINT_BOUNDS.items() if name in metrics}
        check_fields(metrics, {"auc": FRACTION, **bounds}, optional={"auc", *bounds})
        n, columns = self.evaluator.dense_test.shape
        check_array(metrics.get("changed"), "changed", (None,), (0, n - 1))
        check_array(metrics.get("test_probs"), "test_probs", (n, columns), FRACTION)

    @property
    def evaluation_size(self) -> int:
        """Validation plus test images: what an exact point evaluates."""
        return len(self.dataset.val) + len(self.dataset.test)

    def estimate_size(self) -> int:
        """Evaluation images an ``estimate`` can afford within ``estimate_budget``.

        Sized from the quickest full pass seen so far (the dense pass is the first), so a pass
        slowed by a curve computing beside it does not shrink every later estimate; rounded down
        to a few sizes (64, 96, 128, 192, ...) so that few subset evaluators are built.
        """
        if self._estimate_size is not None:
            return self._estimate_size
        per_image = self.evaluator.fastest_pass / self.evaluation_size
        affordable = self.estimate_budget / max(per_image, 1e-9)
        if affordable >= self.evaluation_size:
            return self.evaluation_size
        return max(64, _round_down_to_size(affordable))

    def estimate(self, spec: PruneSpec, size: int | None = None) -> Point:
        """A quick, unbiased point from a class-stratified subset of ``size`` val + test images.

        The subset is drawn afresh for each spec (seeded by the explorer's seed and the spec, so
        asking again gives the same answer): one subset shared by every move made every estimate
        of a session err the same way (a subset of easy images read high at every ε). The AUC is
        the dense model's exact AUC plus the pruned-minus-dense change measured on the subset's test
        images, which is unbiased over draws and, the two models being scored on the same images,
        far less noisy than the subset's own AUC. The point has ``exact=False``, ``n`` test images
        and ``interval``: the half-width of that AUC's 95% interval (DeLong's paired interval of the
        change, with the finite-population correction of a subset drawn from the test set).
        If the subset would be the whole set, this is ``point(spec)``.
        """
        size = self.estimate_size() if size is None else check_image_count(size, "size")
        if size >= self.evaluation_size:
            return self.point(spec)
        evaluator = self._subset_evaluator(spec, size)
        result = make_masks(self.scorer, spec)
        metrics = evaluator.evaluate(result.keep, spec.structured)
        auc, interval = self._estimated_auc(evaluator, metrics)
        table = layer_table(self.model, result)
        n = len(evaluator.test)
        return Point(spec, result, metrics | {"auc": auc}, table, exact=False, n=n, interval=interval)

    def _estimated_auc(self, subset: Evaluator, metrics: dict) -> tuple[float | None, float]:
        """The test AUC a subset's metrics estimate, and its interval's half-width (see ``estimate``)."""
        dense, dense_on_subset, pruned_on_subset = (
            self.dense_metrics["auc"],
            subset.dense_metrics["auc"],
            metrics["auc"],
        )
        if dense is None or dense_on_subset is None or pruned_on_subset is None:
            return None, float("nan")  # a class missing from test (or from the subset)
        # clipped: an AUC shown above 1 reads as a bug; it only moves estimates at the boundary
        auc = float(np.clip(dense + pruned_on_subset - dense_on_subset, 0.0, 1.0))
        labels = subset.test.labels
        half = _paired_half_width(subset.dense_test, metrics["test_probs"], labels, subset)
        return auc, half * np.sqrt(1.0 - len(labels) / len(self.dataset.test))

    def first_answer(self, spec: PruneSpec, *, masks_if_slow: bool = False) -> Point:
        """The quickest good answer for a control change, to be refined by ``point(spec)``.

        The exact point when it is known or affordable within ``estimate_budget``; else, when the
        spec's curve is cached, the spec's own masks with the metrics of the curve's nearest grid
        point (no forward pass: during a drag the dot moves along the drawn curve; not for
        multi-label heads, whose curves keep no per-label metrics); else an ``estimate`` on a subset.
        With ``masks_if_slow`` (a new setting: a criterion or scope switch, the opening figure) a
        forward pass longer than ``estimate_budget`` is not made here: ``masks_first`` instead.
        """
        known = self.known_point(spec)
        if known is not None:
            return known
        size = self.estimate_size()
        slow = masks_if_slow and self._pass_seconds(size) > self.estimate_budget
        if size >= self.evaluation_size and not slow:
            return self.point(spec)
        curve = self.cached_curve(spec)
        if curve is not None and not self.evaluator.head.multilabel:
            return self.nearest_curve_point(spec, curve)
        return self.masks_first(spec) if slow else self.estimate(spec, size)

    def _pass_seconds(self, images: int) -> float:
        """The expected seconds of a forward pass over ``images`` evaluation images (at most all)."""
        return min(images, self.evaluation_size) * self.evaluator.fastest_pass / self.evaluation_size

    def masks_first(self, spec: PruneSpec) -> Point:
        """``spec``'s masks, sparsity and per-layer table, its metrics still to come (``pending``:
        NaN, and ``changed`` 0 until they come)."""
        result = make_masks(self.scorer, spec)
        metrics = dict.fromkeys(SCALAR_METRICS, float("nan")) | {"changed": 0}
        return Point(spec, result, metrics, layer_table(self.model, result), exact=False, pending=True)

    def nearest_curve_point(self, spec: PruneSpec, curve: pd.DataFrame) -> Point:
        """``spec``'s masks with the metrics of the nearest point of its (cached) ``curve``."""
        column, value = ("epsilon", spec.epsilon) if spec.sparsity is None else ("target", spec.sparsity)
        grid = curve[column].to_numpy(dtype=float)
        if column == "epsilon":  # nearest on the log scale the grid is spaced on; 0 is below all
            distance = np.abs(np.log(np.maximum(grid, 1e-300)) - np.log(max(value, 1e-300)))
        else:
            distance = np.abs(grid - value)
        row = curve.iloc[int(np.argmin(distance))]
        metrics = {name: _number_or_none(row[name]) for name in SCALAR_METRICS}
        metrics["changed"] = int(row["changed"])  # a count: which images is not kept on a curve
        result = make_masks(self.scorer, spec)
        table = layer_table(self.model, result)
        n = len(self.dataset.test)  # the curve's points are evaluated on every test image
        return Point(spec, result, metrics, table, exact=False, n=n, nearest=float(row[column]))

    def _subset_evaluator(self, spec: PruneSpec, size: int) -> Evaluator:
        """An evaluator on a class-stratified subset of ``size`` evaluation images drawn for ``spec``.

        Its dense probabilities are the full pass's rows (no pass of its own); it shares the
        compiled forward pass, so building it costs no trace.
        """
        share = size / self.evaluation_size
        seed = int(fingerprint(self.seed, repr(spec))[:8], 16)
        (val, dense_val), (test, dense_test) = (
            _sample_rows(split, probs, max(8, round(share * len(split))), seed)
            for split, probs in (
                (self.dataset.val, self.evaluator.dense_val),
                (self.dataset.test, self.evaluator.dense_test),
            )
        )
        dense = (dense_val, dense_test, self.evaluator.fastest_pass)
        options = dict(evidence=False, forward=self.evaluator.forward, dense=dense)
        return Evaluator(self.model, val, test, **self._evaluation, **options)

    def fine_tuned(
        self, point: Point, recipe: Recipe, *, progress: bool = True, callbacks: list | None = None
    ) -> tuple[dict, dict]:
        """Fine-tune a pruned copy at ``point``'s masks; return (test metrics, training history).
        ``progress``: Keras's progress bar; ``callbacks``: Keras callbacks for the fit."""
        structured = point.spec.structured
        pruned = apply_masks(self.model, point.result.keep, structured=structured)
        history = fine_tune(
            pruned,
            point.result.keep,
            self.dataset,
            recipe,
            structured=structured,
            callbacks=callbacks,
            progress=progress,
        )
        metrics = evaluate_model(
            pruned, self.dataset.val, self.dataset.test, dense=self.model, **self._evaluation
        )
        return metrics, history

    # --- goals: per-layer sparsities from the sensitivity table ---------------------------

    def goal_table(
        self,
        criterion: str = "taylor",
        granularity: str = "structured",
        *,
        grid=DEFAULT_GRID,
        progress: Callable[[int, int], None] | None = None,
    ) -> Sensitivity:
        """The sensitivity table of ``criterion``/``granularity``: computed once, then from memory or disk.

        The first computation prunes every row alone at every grid sparsity, which is slow; it runs
        one grid column at a time so that ``progress(columns done, columns)`` can report (and, by
        raising, stop) between columns. Finished cells are on disk (``cache_dir``/sensitivity, else
        the workbench's cache), so a stopped table resumes where it was.
        """
        grid = check_grid(grid)
        tables = self.__dict__.setdefault("_goal_tables", {})
        key = (criterion, granularity, grid)
        if key in tables:
            return tables[key]
        cache = self.cache_dir / "sensitivity" if self.cache_dir is not None else None
        options = dict(baseline=False, cache=cache, progress=False)  # an allocation reads no random rows
        with self._curve_lock:
            subject = self._goal_subject()
            computed = 0
            for done, sparsity in enumerate(grid):
                if progress is not None:
                    progress(done, len(grid))
                computed += sensitivity(subject, criterion, granularity, (sparsity,), **options).computed
            table = sensitivity(subject, criterion, granularity, grid, **options)
            tables[key] = replace(table, computed=computed)  # this call's cells, column by column
        if progress is not None:
            progress(len(grid), len(grid))
        return tables[key]

    def goal_point(
        self,
        goal: str,
        value: float,
        *,
        criterion: str = "taylor",
        granularity: str | None = None,
        grid=DEFAULT_GRID,
        recipe: Recipe | None = None,
        progress: Callable[..., None] | None = None,
    ) -> GoalPoint:
        """The point whose masks are ``allocate``'s answer to a goal, with exact test metrics.

        Args:
            goal: ``"tolerance"`` (``value`` = tolerated validation AUC drop), ``"flops"`` (fraction
                of dense FLOPs, structured) or ``"params"`` (fraction of weights, unstructured).
            granularity: only for ``"tolerance"`` (default structured); the budgets imply theirs.
            recipe: for a budget, fine-tune every candidate allocation with it and keep the best
                validation AUC after fine-tuning (``allocate(recipe=)``); the point's metrics are the
                pruned model's before fine-tuning, as everywhere in the explorer.
            progress: called with (grid columns done, columns) while the table is computed, then
                with (candidates done, candidates, "fine-tune") before each candidate and after
                every training batch while they fine-tune; it may raise to stop.

        Raises:
            ValueError: from ``workbench.analysis.budget``, for a bad goal or value, or a budget the grid
                cannot reach.
        """
        granularity, value = check_goal(goal, value, granularity)
        table = self.goal_table(criterion, granularity, grid=grid, progress=progress)
        tuning = {}
        if recipe is not None:
            tuning = dict(dataset=self.dataset, recipe=recipe, progress=progress or False)
        allocation = allocate(self._goal_subject(), goal, value, table=table, **tuning)
        spec = PruneSpec(
            criterion=criterion, granularity=granularity, scope="layerwise", min_keep=table.min_keep
        )
        scores = self.scorer.scores(criterion, granularity)
        thresholds = thresholds_of(scores, allocation.keep, self.scorer.infos, spec.structured)
        result = MaskResult(allocation.keep, thresholds)
        metrics = self.evaluator.evaluate(result.keep, structured=spec.structured)
        rows = {row.name: allocation.layer_sparsity[row.layers[0]] for row in table.rows}
        return GoalPoint(
            spec,
            result,
            metrics,
            layer_table(self.model, result),
            n=len(self.dataset.test),
            allocation=allocation,
            sensitivity=table,
            row_sparsity=rows,
        )

    def _goal_subject(self) -> Subject:
        """The sensitivity subject: the explorer's model, scorer and evaluator."""
        return Subject(self.model, self.dataset.val, self.scorer, self.evaluator)


# The (low, high) of a cached point's metrics checked when present: AUCs and rates, the AUC change
_POINT_BOUNDS = {
    **dict.fromkeys(("auc_low", "auc_high", "dense_auc", "accuracy", "sensitivity", "specificity"), FRACTION),
    **dict.fromkeys(("auc_difference", "auc_difference_low", "auc_difference_high"), DIFFERENCE),
}


def _read_dense(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    with np.load(path, allow_pickle=False) as saved:
        return saved["val"], saved["test"], float(saved["seconds"])


def _point_bytes(metrics: dict) -> bytes:
    """A point's metrics as .npz bytes: its arrays as arrays, everything else as one JSON text (no
    pickle, which would run whatever code a file it reads holds)."""
    arrays = {name: value for name, value in metrics.items() if isinstance(value, np.ndarray)}
    rest = {name: value for name, value in metrics.items() if name not in arrays}
    buffer = io.BytesIO()
    text = json.dumps(rest, default=lambda value: value.item())  # NumPy scalars as numbers
    np.savez(buffer, _json=np.array(text), **arrays)
    return buffer.getvalue()


def _read_point(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files if name != "_json"}
        return json.loads(str(saved["_json"])) | arrays


def _number_or_none(value) -> float | None:
    """A curve cell as a float; None stays None (an AUC undefined when a class is missing from test)."""
    return None if value is None or pd.isna(value) else float(value)


def _round_down_to_size(n: float) -> int:
    """The largest of 64, 96, 128, 192, 256, 384, ... (powers of two and 1.5 times them) at most ``n``."""
    size, power = 64, 64
    while power * 3 // 2 <= n:
        size = power * 3 // 2
        if power * 2 > n:
            break
        size = power = power * 2
    return size


def check_image_count(count, name: str) -> int:
    """``count`` if it is a whole number of images >= 2 (an estimate's subset); else ValueError."""
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 2:
        raise WorkbenchError(f"{name} must be a whole number of images >= 2, got {count!r}")
    return int(count)


def _sample_rows(split: Split, probs: np.ndarray, n: int, seed: int) -> tuple[Split, np.ndarray]:
    """``stratified_sample(split, n, seed)`` and the rows of ``probs`` (one per image) it took."""
    # the sample drawn from a split whose images are their own positions tells which rows it took
    positions = Split(np.arange(len(split)), split.labels, split.sources)
    rows = stratified_sample(positions, n, seed).images.astype(int)
    return split.subset(rows), probs[rows]


def _paired_half_width(dense: np.ndarray, pruned: np.ndarray, labels: np.ndarray, subset: Evaluator) -> float:
    """Half the 95% DeLong interval of the task's AUC change from ``dense`` to ``pruned``
    (``stats.auc_columns``: the columns the AUC is taken over); NaN where it is undefined."""
    multilabel = subset.head.multilabel
    columns, truth, missing = auc_columns(labels, dense.shape[1], subset.positive, multilabel)
    if not columns or (missing and not multilabel):
        return float("nan")
    change = compare_macro_auc(truth, dense[:, columns], pruned[:, columns])
    return (change["ci_high"] - change["ci_low"]) / 2
