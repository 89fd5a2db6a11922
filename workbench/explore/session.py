"""The state behind an interactive ε view, without widgets: scores, masks, curves and points.

An ``Explorer`` answers the questions a dashboard asks, as plain function calls:

- ``point(spec)``: masks, metrics and the per-layer table at one setting (what a headless run uses);
- ``setting(spec, keep_sparsity=...)``: after a criterion/scope/granularity/mode change, the spec to
  show and the ε slider's range, so a widget only copies values into its controls;
- ``curve(spec)``: the ε (or target-sparsity) curve of a setting, cached in memory and on disk;
- ``estimate(spec)`` and ``estimates.first_answer(spec)``: quick answers before the exact one
  (``workbench.explore.estimates``);
- ``goals.point(goal, value)``: the point ``workbench.analysis.budget.allocate`` chooses for a
  tolerated AUC drop or a FLOPs/parameter budget (``workbench.explore.goals``).

What runs when, in the background or not, and what a newer request cancels, is the scheduler's
(``workbench.explore.scheduler``); the explorer holds no thread of its own.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.analysis.curve_cache import read_cached_curve, write_cached_curve
from workbench.analysis.curves import SCALAR_METRICS, Evaluator, curve, evaluate_model, log_grid
from workbench.core.cache import cache_file, cache_key
from workbench.core.errors import WorkbenchError
from workbench.core.masks import epsilon_for_sparsity, epsilon_range, normalise_per_layer
from workbench.core.metrics import YOUDEN, OperatingPoint
from workbench.core.progress import Progress
from workbench.data.dataset import check_dataset, stratified_sample
from workbench.explore.estimates import Estimates
from workbench.explore.goals import Goals
from workbench.explore.point_cache import PointCache
from workbench.explore.points import GoalPoint, Point, Setting
from workbench.model.builders import check_built, check_model_fits
from workbench.model.heads import Head
from workbench.model.train import Recipe
from workbench.prune.layer_table import layer_table
from workbench.prune.pruning import PruneSpec, make_masks
from workbench.prune.recovery import recover, scorer_like
from workbench.prune.scores import CRITERIA, Scorer

log = logging.getLogger(__name__)

__all__ = ["Explorer", "GoalPoint", "Point", "Setting"]  # the answers' classes, where they were


def _check_options(grid_points, estimate_budget) -> None:
    """Refuse a curve of fewer than two points, or an estimate with no time to run."""
    if isinstance(grid_points, bool) or not isinstance(grid_points, int) or grid_points < 2:
        raise WorkbenchError(f"grid_points must be an integer >= 2 (points on a curve), got {grid_points!r}")
    if not estimate_budget > 0:
        raise WorkbenchError(f"estimate_budget must be a number of seconds > 0, got {estimate_budget!r}")


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
        _check_options(grid_points, estimate_budget)
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
        self.evaluation_options = dict(head=fitted_head, operating=operating, margin=margin)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._data_key = dataset.fingerprint() if cache_dir is not None else ""  # hashes every image: once
        # every weight (BatchNorm statistics too), as the evaluator snapshots them: hashed once
        self._weights_key = self.scorer.fingerprint() if cache_dir is not None else ""
        # One evaluator (one compiled pass, weights as arguments) for points, curves and goals:
        # it is thread-safe, so a curve computing in the background never blocks a point.
        self.estimates = Estimates(self, estimate_images)  # quick answers before the exact one
        self._points = PointCache(self._cache_file, (len(dataset.val), len(dataset.test)), seed)
        self.evaluator = self._open_evaluator(progress)
        self.curve_lock = threading.Lock()  # one thread computes a curve or a goal table at a time
        self._curves: dict[tuple, pd.DataFrame] = {}
        self.estimate_budget = estimate_budget
        self.goals = Goals(self)  # allocations to a goal, over sensitivity tables
        self._bounds: dict[tuple, tuple[float, float]] = {}  # the frozen scores' ε ranges

    def _open_evaluator(self, progress: Progress | None) -> Evaluator:
        """The evaluator, with its dense pass from the disk cache when these weights and data had one."""
        data, dense = self.dataset, self._points.dense()
        if dense is not None:
            return Evaluator(self.model, data.val, data.test, **self.evaluation_options, dense=dense)
        evaluator = Evaluator(self.model, data.val, data.test, **self.evaluation_options, progress=progress)
        self._points.save_dense(evaluator.dense_val, evaluator.dense_test, evaluator.fastest_pass)
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
        evaluation = self.evaluation_options
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

    def curve(self, spec: PruneSpec, *, progress: Progress | None = None, partial=None) -> pd.DataFrame:
        """The curve for ``spec``'s criterion/scope/granularity/mode (cached; ε itself ignored).

        ``progress`` (``workbench.core.progress``), if given, is called with (points done, points
        in all) as the curve fills in, and between the chunks of each forward pass: a ``Cancelled``
        it raises stops the curve there.
        ``partial`` is called with the curve so far after each point (the placeholder's rows
        filled in up to that point).
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

        with self.curve_lock:
            table = curve(
                self.scorer,
                self.evaluator,
                spec,
                **{grid_argument: grid},
                progress=progress,
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

    def point(self, spec: PruneSpec, *, progress: Progress | None = None) -> Point:
        """Masks, metrics and the per-layer table at one setting, on every evaluation image.

        ``progress`` is called with (chunks done, chunks) through the forward pass; a
        ``Cancelled`` it raises stops the point.

        Raises:
            ValueError: from the engine, for a spec it refuses (e.g. a negative ε).
        """
        result = make_masks(self.scorer, spec)
        metrics = self._points.known(spec)
        if metrics is None:
            metrics = self.evaluator.evaluate(result.keep, spec.structured, progress=progress)
            self._points.remember(spec, metrics)
        return Point(spec, result, metrics, layer_table(self.model, result), n=len(self.dataset.test))

    def known_point(self, spec: PruneSpec) -> Point | None:
        """The exact point of ``spec`` if it was evaluated before (in memory or on disk), else None."""
        return self.point(spec) if self._points.known(spec) is not None else None

    @property
    def evaluation_size(self) -> int:
        """Validation plus test images: what an exact point evaluates."""
        return len(self.dataset.val) + len(self.dataset.test)

    def estimate(self, spec: PruneSpec, size: int | None = None) -> Point:
        """A quick, unbiased point from a subset of ``size`` evaluation images (``Estimates.estimate``)."""
        return self.estimates.estimate(spec, size)

    def fine_tuned(
        self,
        point: Point,
        recipe: Recipe,
        *,
        recovery: str = "one-shot",
        progress: Progress | bool = True,
        callbacks: list | None = None,
    ) -> tuple[dict, dict]:
        """Fine-tune a pruned copy at ``point``'s masks; return (test metrics, training history).

        ``recovery``: a name in ``prune.recovery.RECOVERIES`` ("distill" learns from this
        explorer's dense model, "iterative" prunes it in rounds to the point's sparsity, re-scoring
        on the calibration images); ``progress``: True for a bar, False for none, or a
        ``core.progress.Progress``; ``callbacks``: Keras callbacks for the fit."""
        pruned, history = recover(
            self.model,
            point.result.keep,
            point.spec,
            self.dataset,
            recipe,
            recovery,
            scorer_for=scorer_like(self.scorer),
            callbacks=callbacks,
            progress=progress,
        )
        metrics = evaluate_model(
            pruned, self.dataset.val, self.dataset.test, dense=self.model, **self.evaluation_options
        )
        return metrics, history

    def goal_point(self, goal: str, value: float, **options) -> GoalPoint:
        """The point ``allocate`` chooses for ``goal`` (``Goals.point``, with its options)."""
        return self.goals.point(goal, value, **options)

    def goal_table(self, criterion: str = "taylor", granularity: str = "structured", **options):
        """The sensitivity table behind goals (``Goals.table``, with its options)."""
        return self.goals.table(criterion, granularity, **options)
