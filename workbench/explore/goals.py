"""The goal service: per-layer sparsities for a tolerated AUC drop or a FLOPs/parameter budget.

``Goals`` reads an ``Explorer``'s model, scorer and evaluator; its sensitivity tables (computed
once per criterion/granularity/grid, cells on disk) are its own state. The engine's rules for
goals live here, not in a widget: a budget implies its granularity, and the fine-tune the goal's
candidates get is ``FINE_TUNE_RECIPE`` at the epochs asked for.
"""

from __future__ import annotations

from dataclasses import replace

from workbench.analysis.budget import allocate, check_goal, picks_after_fine_tuning
from workbench.analysis.sensitivity import DEFAULT_GRID, Sensitivity, Subject, check_grid, sensitivity
from workbench.core.masks import MaskResult, thresholds_of
from workbench.core.progress import Progress
from workbench.explore.points import GoalPoint
from workbench.model.train import Recipe
from workbench.prune.layer_table import layer_table
from workbench.prune.pruning import FINE_TUNE_RECIPE, PruneSpec


def goal_granularity(goal: str, chosen: str) -> str | None:
    """The granularity to ask ``goal`` for: the one ``chosen`` for a tolerance; None for a budget,
    which implies its own (FLOPs: structured, parameters: unstructured)."""
    return chosen if goal == "tolerance" else None


def fine_tune_recipe(epochs: int) -> Recipe:
    """The explorer's fine-tune (the button's, and a goal's candidates'): ``FINE_TUNE_RECIPE``
    for ``epochs`` epochs."""
    return replace(FINE_TUNE_RECIPE, epochs=epochs)


def goal_recipe(goal: str, tune: bool, epochs: int) -> Recipe | None:
    """The recipe a goal's candidates are fine-tuned with when ``tune`` is asked and the goal's
    answer depends on it (``picks_after_fine_tuning``), else None."""
    return fine_tune_recipe(epochs) if tune and picks_after_fine_tuning(goal) else None


class Goals:
    """Sensitivity tables and goal points of one explorer (``explorer.goals``)."""

    def __init__(self, explorer):
        self.explorer = explorer
        self._tables: dict[tuple, Sensitivity] = {}

    def table(
        self,
        criterion: str = "taylor",
        granularity: str = "structured",
        *,
        grid=DEFAULT_GRID,
        progress: Progress | None = None,
    ) -> Sensitivity:
        """The sensitivity table of ``criterion``/``granularity``: computed once, then from memory or disk.

        The first computation prunes every row alone at every grid sparsity, which is slow; it runs
        one grid column at a time so that ``progress(columns done, columns)`` can report (and, by
        raising ``Cancelled``, stop) between columns. Finished cells are on disk (``cache_dir``/
        sensitivity, else the workbench's cache), so a stopped table resumes where it was.
        """
        grid = check_grid(grid)
        key = (criterion, granularity, grid)
        if key in self._tables:
            return self._tables[key]
        explorer = self.explorer
        cache = explorer.cache_dir / "sensitivity" if explorer.cache_dir is not None else None
        options = dict(baseline=False, cache=cache, progress=False)  # an allocation reads no random rows
        with explorer.curve_lock:
            subject = self.subject()
            computed = 0
            for done, sparsity in enumerate(grid):
                if progress is not None:
                    progress(done, len(grid))
                computed += sensitivity(subject, criterion, granularity, (sparsity,), **options).computed
            table = sensitivity(subject, criterion, granularity, grid, **options)
            self._tables[key] = replace(table, computed=computed)  # this call's cells, column by column
        if progress is not None:
            progress(len(grid), len(grid))
        return self._tables[key]

    def point(
        self,
        goal: str,
        value: float,
        *,
        criterion: str = "taylor",
        granularity: str | None = None,
        grid=DEFAULT_GRID,
        recipe: Recipe | None = None,
        progress: Progress | None = None,
        on_stage=None,
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
                with (candidates done, candidates) before each candidate and after every training
                batch while they fine-tune; it may raise ``Cancelled`` to stop.
            on_stage: called with "sensitivity", then "fine-tune" when the candidates fine-tune
                (what a bar's label says).

        Raises:
            WorkbenchError: from ``workbench.analysis.budget``, for a bad goal or value;
                UnreachableGoal for a budget the grid cannot reach.
        """
        explorer = self.explorer
        granularity, value = check_goal(goal, value, granularity)
        if on_stage is not None:
            on_stage("sensitivity")
        table = self.table(criterion, granularity, grid=grid, progress=progress)
        tuning = {}
        if recipe is not None:
            tuning = dict(dataset=explorer.dataset, recipe=recipe, progress=_staged(progress, on_stage))
        allocation = allocate(self.subject(), goal, value, table=table, **tuning)
        spec = PruneSpec(
            criterion=criterion, granularity=granularity, scope="layerwise", min_keep=table.min_keep
        )
        scores = explorer.scorer.scores(criterion, granularity)
        thresholds = thresholds_of(scores, allocation.keep, explorer.scorer.infos, spec.structured)
        result = MaskResult(allocation.keep, thresholds)
        metrics = explorer.evaluator.evaluate(result.keep, structured=spec.structured)
        rows = {row.name: allocation.layer_sparsity[row.layers[0]] for row in table.rows}
        return GoalPoint(
            spec,
            result,
            metrics,
            layer_table(explorer.model, result),
            n=len(explorer.dataset.test),
            allocation=allocation,
            sensitivity=table,
            row_sparsity=rows,
        )

    def subject(self) -> Subject:
        """The sensitivity subject: the explorer's model, scorer and evaluator."""
        explorer = self.explorer
        return Subject(explorer.model, explorer.dataset.val, explorer.scorer, explorer.evaluator)


def _staged(progress: Progress | None, on_stage) -> Progress | bool:
    """``allocate``'s progress: it reports only while the candidates fine-tune, so its first call
    tells ``on_stage`` that the "fine-tune" stage began; False (no bar) when nobody listens."""
    if progress is None and on_stage is None:
        return False
    begun = []

    def report(done: int, total: int) -> None:
        if on_stage is not None and not begun:
            begun.append(True)
            on_stage("fine-tune")
        if progress is not None:
            progress(done, total)

    return report
