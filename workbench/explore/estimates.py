"""Quick answers before the exact one: an estimate on a subset, the cached curve's nearest point,
or the masks alone, chosen by what fits the explorer's ``estimate_budget``.

``Estimates`` reads an ``Explorer`` (its scorer, evaluator, curves and points) and adds nothing to
its state but the subset size a test may fix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.analysis.curves import SCALAR_METRICS, Evaluator
from workbench.core.cache import fingerprint
from workbench.core.errors import WorkbenchError
from workbench.core.stats import auc_columns, compare_macro_auc
from workbench.data.dataset import Split, stratified_sample
from workbench.explore.points import Point
from workbench.prune.layer_table import layer_table
from workbench.prune.pruning import PruneSpec, make_masks


class Estimates:
    """The explorer's quick answers (see ``first_answer``), within ``explorer.estimate_budget``.

    Args:
        explorer: the session whose scorer, evaluator, cached curves and points are read.
        images: the subset's size, overriding the one the budget gives (for tests and scripts).
    """

    def __init__(self, explorer, images: int | None = None):
        self.explorer = explorer
        self.images = check_image_count(images, "estimate_images") if images is not None else None

    def size(self) -> int:
        """Evaluation images an ``estimate`` can afford within ``estimate_budget``.

        Sized from the quickest full pass seen so far (the dense pass is the first), so a pass
        slowed by a curve computing beside it does not shrink every later estimate; rounded down
        to a few sizes (64, 96, 128, 192, ...) so that few subset evaluators are built.
        """
        if self.images is not None:
            return self.images
        explorer = self.explorer
        per_image = explorer.evaluator.fastest_pass / explorer.evaluation_size
        affordable = explorer.estimate_budget / max(per_image, 1e-9)
        if affordable >= explorer.evaluation_size:
            return explorer.evaluation_size
        return max(64, _round_down_to_size(affordable))

    def first_answer(self, spec: PruneSpec, *, masks_if_slow: bool = False) -> Point:
        """The quickest good answer for a control change, to be refined by ``explorer.point(spec)``.

        The exact point when it is known or affordable within ``estimate_budget``; else, when the
        spec's curve is cached, the spec's own masks with the metrics of the curve's nearest grid
        point (no forward pass: during a drag the dot moves along the drawn curve; not for
        multi-label heads, whose curves keep no per-label metrics); else an ``estimate`` on a subset.
        With ``masks_if_slow`` (a new setting, or a move while no curve is cached) a forward pass
        longer than ``estimate_budget`` is not made here: ``masks_first`` instead.
        """
        explorer = self.explorer
        known = explorer.known_point(spec)
        if known is not None:
            return known
        size = self.size()
        slow = masks_if_slow and self._pass_seconds(size) > explorer.estimate_budget
        if size >= explorer.evaluation_size and not slow:
            return explorer.point(spec)
        curve = explorer.cached_curve(spec)
        if curve is not None and not explorer.evaluator.head.multilabel:
            return self.nearest_curve_point(spec, curve)
        return self.masks_first(spec) if slow else self.estimate(spec, size)

    def _pass_seconds(self, images: int) -> float:
        """The expected seconds of a forward pass over ``images`` evaluation images (at most all)."""
        explorer = self.explorer
        return (
            min(images, explorer.evaluation_size) * explorer.evaluator.fastest_pass / explorer.evaluation_size
        )

    def masks_first(self, spec: PruneSpec) -> Point:
        """``spec``'s masks, sparsity and per-layer table, its metrics still to come (``pending``:
        NaN, and ``changed`` 0 until they come)."""
        result = make_masks(self.explorer.scorer, spec)
        metrics = dict.fromkeys(SCALAR_METRICS, float("nan")) | {"changed": 0}
        table = layer_table(self.explorer.model, result)
        return Point(spec, result, metrics, table, exact=False, pending=True)

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
        result = make_masks(self.explorer.scorer, spec)
        table = layer_table(self.explorer.model, result)
        n = len(self.explorer.dataset.test)  # the curve's points are evaluated on every test image
        return Point(spec, result, metrics, table, exact=False, n=n, nearest=float(row[column]))

    def estimate(self, spec: PruneSpec, size: int | None = None, *, progress=None) -> Point:
        """A quick, unbiased point from a class-stratified subset of ``size`` val + test images.

        The subset is drawn afresh for each spec (seeded by the explorer's seed and the spec, so
        asking again gives the same answer): one subset shared by every move made every estimate
        of a session err the same way (a subset of easy images read high at every ε). The AUC is
        the dense model's exact AUC plus the pruned-minus-dense change measured on the subset's test
        images, which is unbiased over draws and, the two models being scored on the same images,
        far less noisy than the subset's own AUC. The point has ``exact=False``, ``n`` test images
        and ``interval``: the half-width of that AUC's 95% interval (DeLong's paired interval of the
        change, with the finite-population correction of a subset drawn from the test set).
        If the subset would be the whole set, this is ``explorer.point(spec)``.
        """
        explorer = self.explorer
        size = self.size() if size is None else check_image_count(size, "size")
        if size >= explorer.evaluation_size:
            return explorer.point(spec, progress=progress)
        evaluator = self._subset_evaluator(spec, size)
        result = make_masks(explorer.scorer, spec)
        metrics = evaluator.evaluate(result.keep, spec.structured, progress=progress)
        auc, interval = self._estimated_auc(evaluator, metrics)
        table = layer_table(explorer.model, result)
        n = len(evaluator.test)
        return Point(spec, result, metrics | {"auc": auc}, table, exact=False, n=n, interval=interval)

    def _estimated_auc(self, subset: Evaluator, metrics: dict) -> tuple[float | None, float]:
        """The test AUC a subset's metrics estimate, and its interval's half-width (see ``estimate``)."""
        dense, dense_on_subset, pruned_on_subset = (
            self.explorer.dense_metrics["auc"],
            subset.dense_metrics["auc"],
            metrics["auc"],
        )
        if dense is None or dense_on_subset is None or pruned_on_subset is None:
            return None, float("nan")  # a class missing from test (or from the subset)
        # clipped: an AUC shown above 1 reads as a bug; it only moves estimates at the boundary
        auc = float(np.clip(dense + pruned_on_subset - dense_on_subset, 0.0, 1.0))
        labels = subset.test.labels
        half = _paired_half_width(subset.dense_test, metrics["test_probs"], labels, subset)
        return auc, half * np.sqrt(1.0 - len(labels) / len(self.explorer.dataset.test))

    def _subset_evaluator(self, spec: PruneSpec, size: int) -> Evaluator:
        """An evaluator on a class-stratified subset of ``size`` evaluation images drawn for ``spec``.

        Its dense probabilities are the full pass's rows (no pass of its own); it shares the
        compiled forward pass, so building it costs no trace.
        """
        explorer = self.explorer
        full, data = explorer.evaluator, explorer.dataset
        share = size / explorer.evaluation_size
        seed = int(fingerprint(explorer.seed, repr(spec))[:8], 16)
        (val, dense_val), (test, dense_test) = (
            _sample_rows(split, probs, max(8, round(share * len(split))), seed)
            for split, probs in ((data.val, full.dense_val), (data.test, full.dense_test))
        )
        dense = (dense_val, dense_test, full.fastest_pass)
        options = dict(evidence=False, forward=full.forward, dense=dense)
        return Evaluator(explorer.model, val, test, **explorer.evaluation_options, **options)


def check_image_count(count, name: str) -> int:
    """``count`` if it is a whole number of images >= 2 (an estimate's subset); else ValueError."""
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 2:
        raise WorkbenchError(f"{name} must be a whole number of images >= 2, got {count!r}")
    return int(count)


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
