"""Pruning to a goal: per-layer sparsities for a tolerated AUC drop, a FLOPs budget or a parameter budget.

Goals (``GOALS``), each a fraction or a drop, never a raw threshold:

- ``tolerance``: the validation AUC may drop by at most ``value`` (e.g. 0.01); the cost (FLOPs if
  structured, parameters if unstructured) is made as small as the sensitivity table allows.
- ``flops``: structured pruning to at most ``value`` of the dense model's FLOPs (0.25 = a quarter).
- ``params``: unstructured pruning to at most ``value`` of the prunable weights.

The method is a Lagrangian over the sensitivity table (``workbench.analysis.sensitivity``), the classic
optimal-allocation answer to a multiple-choice knapsack (Shoham & Gersho's bit allocation): for a
price λ every row (layer, or coupled channel group) independently takes the grid level that
minimises its drop + λ·cost, and λ is bisected against the *real* cost of the joint mask, so the
achieved cost is never above a budget. AIMET's greedy ratio walk was tried first and rejected: one
large layer's coarse grid step overshoots the budget and the walk cannot trade it back. Each row's
drop is taken as its running maximum over the grid (a noisy dip never makes a sparser setting look
free). What the budget has left after the bisection is spent by stepping rows back, most drop
saved per cost first, then between grid points on the row whose last step hurt most.

A tolerance is checked on the real joint mask, not on the table's sum: the distinct solutions
along λ are measured, and the cheapest whose validation drop is within it wins. Coupled channel
groups are rows, so they are pruned as one; the collapse guard (``min_keep``) holds in every row.

The table only knows single-row drops. At tight budgets every row's AUC drop saturates (alone,
each already breaks the model), the table stops telling rows apart and the Lagrangian answer is
driven by cost alone. The table's cells also hold the output distortion (mean squared change of the
logits), which does not saturate and adds up over rows; the same Lagrangian over it is a second
answer. ``allocate(method="sensitivity")`` measures both table answers beside the two one-knob
answers below on the real joint masks and keeps the best on validation (after fine-tuning, given a
recipe): the highest validation AUC within a budget, the cheapest within a tolerance.
``Allocation.candidate`` says which won ("table", "distortion", "uniform" or "global");
``allocate_from_table`` is one table answer alone.

Two reference allocations answer the same goals with one sparsity knob, found by bisection:
``uniform`` (every layer the same sparsity) and ``global`` (one ranking over all layers).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm

from workbench.analysis.curves import evaluate_model
from workbench.analysis.sensitivity import (
    DEFAULT_GRID,
    Sensitivity,
    Subject,
    check_guard,
    dense_keep,
    row_keep,
    sensitivity,
)
from workbench.analysis.sensitivity import validation_auc as _validation_auc
from workbench.core.errors import UnreachableGoal, WorkbenchError
from workbench.core.masks import Masks
from workbench.core.progress import Progress, check_progress
from workbench.data.dataset import check_dataset
from workbench.model.compat import keras
from workbench.model.graph import kernel_costs
from workbench.model.train import Recipe
from workbench.prune.pruning import PruneSpec, apply_masks, fine_tune, masks_from_scores

log = logging.getLogger(__name__)

GOALS = ("tolerance", "flops", "params")
METHODS = ("sensitivity", "uniform", "global")
_GRANULARITY = {"flops": "structured", "params": "unstructured"}


@dataclass(frozen=True)
class Allocation:
    """Per-layer sparsities chosen for a goal, their masks, and what they achieve on validation data.

    ``flops`` is the fraction of dense FLOPs and ``params`` the fraction of prunable layers' kernel
    weights kept: in the slim model for structured masks (``graph.kernel_costs``), the non-zero
    ones for unstructured masks. ``val_drop`` is the dense validation AUC minus ``val_auc``.
    """

    method: str
    goal: str
    value: float
    granularity: str
    keep: Masks = field(repr=False)  # a repr shows the scalars, not every layer's mask
    layer_sparsity: dict[str, float]
    flops: float
    params: float
    val_auc: float
    val_drop: float
    candidate: str = "table"  # which candidate the "sensitivity" method kept (see the module docstring)
    tuned_val_auc: float | None = None  # validation AUC after fine-tuning, if ``allocate`` had a recipe
    tuned_model: object = field(default=None, repr=False, compare=False)  # that fine-tuned Keras model
    measured: tuple = field(default=(), repr=False, compare=False)  # every candidate compared, winner too

    @property
    def cost(self) -> float:
        """The cost the goal is about: FLOPs fraction if structured, parameter fraction otherwise."""
        return self.flops if self.granularity == "structured" else self.params

    def summary(self) -> dict:
        """The scalars, for a results table."""
        return dict(
            method=self.method,
            goal=self.goal,
            value=self.value,
            flops=self.flops,
            params=self.params,
            val_auc=self.val_auc,
            val_drop=self.val_drop,
            candidate=self.candidate,
        )


def check_goal(goal: str, value: float, granularity: str | None) -> tuple[str, float]:
    """Return (the granularity the goal implies, ``value`` as a float); raise ValueError for an
    unknown goal or a bad value ("0.5" from a text box is a number)."""
    if goal not in GOALS:
        raise WorkbenchError(f"goal must be one of {GOALS}, got {goal!r}")
    try:
        if isinstance(value, bool):
            raise TypeError
        value = float(value)
    except (TypeError, ValueError):
        raise WorkbenchError(f"value for goal {goal!r} must be a number, got {value!r}") from None
    if goal == "tolerance" and not 0 <= value <= 1:
        raise WorkbenchError(f"value for goal 'tolerance' must be an AUC drop in [0, 1], got {value!r}")
    if goal != "tolerance" and not 0 < value <= 1:
        raise WorkbenchError(f"value for goal {goal!r} must be a fraction of dense in (0, 1], got {value!r}")
    implied = _GRANULARITY.get(goal, granularity or "structured")
    if granularity not in (None, implied):
        raise WorkbenchError(f"goal {goal!r} needs granularity {implied!r}, got granularity={granularity!r}")
    return implied, value


# --- costs ------------------------------------------------------------------------------------


def costs(model, keep: Masks, granularity: str) -> tuple[float, float]:
    """(FLOPs fraction, parameter fraction) of ``keep`` relative to the dense model.

    Structured: both of the slim model (``filter_pruned``), whose layers also lose the input
    slices of removed filters. Unstructured: FLOPs of the non-zero weights, and the kept fraction
    of the masked weights.
    """
    operations, weights = kernel_costs(model, keep)
    if granularity == "structured":
        slim = "filter_pruned"
        return operations[slim] / operations["dense"], weights[slim] / weights["dense"]
    params = sum(int(m.sum()) for m in keep.values()) / sum(m.size for m in keep.values())
    return operations["masked"] / operations["dense"], params


def _cost_fn(model, granularity: str) -> Callable[[Masks], float]:
    index = 0 if granularity == "structured" else 1
    return lambda keep: costs(model, keep, granularity)[index]


# --- the allocation over the table: a Lagrangian over per-row levels -------------------------


def lagrangian_levels(envelope: dict[str, np.ndarray], row_costs: dict[str, np.ndarray], lam: float) -> dict:
    """Per row, the grid level minimising drop + λ·cost (level 0 = dense wins ties, so λ = 0 is dense)."""
    return {name: int(np.argmin(envelope[name] + lam * row_costs[name])) for name in envelope}


def _row_costs(subject: Subject, masks: dict, cost: Callable[[Masks], float]) -> dict[str, np.ndarray]:
    """Each row's cost at each level with every other row dense (the separable estimate)."""
    return {
        name: np.array([cost(_joint(subject, masks, {name: level})) for level in range(len(levels))])
        for name, levels in masks.items()
    }


LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-5, 1e5, 300)])


MEASURES = {"drop": "table", "distortion": "distortion"}  # a table column -> the candidate it gives


def _envelopes(table: Sensitivity, measure: str = "drop") -> dict[str, np.ndarray]:
    """Per row, the running maximum of the (non-negative) ``measure`` over levels 0 (dense), 1.. (grid),
    divided by its largest value over all rows: the answer along λ does not change, and ``LAMBDAS``
    spans every trade-off whatever the measure's scale (a distortion can reach hundreds)."""
    matrix = table.matrix(value=measure)
    envelopes = {
        name: np.maximum.accumulate(np.maximum(np.concatenate([[0.0], matrix.loc[name].to_numpy()]), 0.0))
        for name in matrix.index
    }
    scale = max((float(e.max()) for e in envelopes.values()), default=0.0)
    return {name: e / scale for name, e in envelopes.items()} if scale > 0 else envelopes


def _row_masks(table: Sensitivity, subject: Subject) -> dict[str, list[Masks]]:
    infos = subject.scorer.infos
    scores = subject.scorer.scores(table.criterion, table.granularity)
    dense = dense_keep(infos)
    return {
        row.name: [{n: dense[n] for n in row.layers}]
        + [row_keep(scores, row, s, infos, table.min_keep) for s in table.grid]
        for row in table.rows
    }


def _beyond_reach(table: Sensitivity, subject: Subject, goal: str, value: float, reached: float, cost) -> str:
    """Why the table's sparsest answer still costs more than ``value``: the grid's top, or the guard."""
    told = (
        f"value {value} for goal {goal!r} is below what the grid reaches (up to sparsity "
        f"{max(table.grid)} per row: {reached:.3f} of dense)"
    )
    if table.min_keep > 1:
        scores, infos = subject.scorer.scores(table.criterion, table.granularity), subject.scorer.infos
        unguarded = dense_keep(infos)
        for row in table.rows:
            unguarded.update(row_keep(scores, row, max(table.grid), infos, 1))
        if cost(unguarded) < reached - 1e-9:
            return (
                f"{told}; the guard holds it there (min_keep={table.min_keep} units kept in every layer; "
                f"with min_keep=1 the grid reaches {cost(unguarded):.3f}): lower min_keep"
            )
    return f"{told}; extend the grid"


def _joint(subject: Subject, masks: dict[str, list[Masks]], levels: dict[str, int]) -> Masks:
    keep = dense_keep(subject.scorer.infos)
    for name, level in levels.items():
        keep.update(masks[name][level])
    return keep


def _val_drop(subject: Subject, keep: Masks, structured: bool, dense_auc: float) -> float:
    return dense_auc - _validation_auc(subject, keep, structured)


def _last_within(n: int, ok: Callable[[int], bool]) -> int:
    """The largest index i < n with ok(i), by bisection (ok(0) holds); then checked, stepping back."""
    low, high = 0, n - 1
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    while low > 0 and not ok(low):
        low -= 1
    return low


def allocate_from_table(
    table: Sensitivity, subject: Subject, goal: str, value: float, measure: str = "drop"
) -> Allocation:
    """Choose each row's grid level to meet the goal at the least estimated drop; see the module docstring.

    ``measure`` is the table's column the rows' losses are read from: the validation AUC ``drop``
    (candidate ``"table"``) or the output ``distortion`` (candidate ``"distortion"``), which keeps
    telling rows apart at budgets where every row's AUC drop has saturated.

    Raises:
        ValueError: if a budget is below what the grid's largest sparsity reaches, or for an
            unknown ``measure``.
    """
    if measure not in MEASURES:
        raise WorkbenchError(f"measure must be one of {tuple(MEASURES)}, got {measure!r}")
    granularity, value = check_goal(goal, value, table.granularity)
    structured = granularity == "structured"
    cost = _cost_fn(subject.model, granularity)
    masks, envelope = _row_masks(table, subject), _envelopes(table, measure)
    candidate = MEASURES[measure]
    row_costs = _row_costs(subject, masks, cost)

    def state(i: int) -> Masks:
        return _joint(subject, masks, lagrangian_levels(envelope, row_costs, LAMBDAS[i]))

    dense_auc = _validation_auc(subject, dense_keep(subject.scorer.infos), structured)
    if goal == "tolerance":
        keep = _cheapest_within(
            [state(i) for i in _distinct(envelope, row_costs)],
            cost,
            lambda keep: _val_drop(subject, keep, structured, dense_auc) <= value,
        )
        return _finish("sensitivity", goal, value, granularity, subject, keep, dense_auc, candidate)
    reached = cost(state(len(LAMBDAS) - 1))
    if reached > value + 1e-12:
        raise UnreachableGoal(_beyond_reach(table, subject, goal, value, reached, cost))
    index = _first_within(len(LAMBDAS), lambda i: cost(state(i)) <= value + 1e-12)
    levels = lagrangian_levels(envelope, row_costs, LAMBDAS[index])
    levels = _give_back(levels, envelope, lambda lv: cost(_joint(subject, masks, lv)), value)
    keep = _fill(table, subject, _joint(subject, masks, levels), levels, envelope, cost, value)
    return _finish("sensitivity", goal, value, granularity, subject, keep, dense_auc, candidate)


def _distinct(envelope: dict, row_costs: dict) -> list[int]:
    """Indices into LAMBDAS of the distinct solutions along λ (a few dozen, from dense to the grid's end)."""
    seen, out = set(), []
    for i, lam in enumerate(LAMBDAS):
        levels = tuple(lagrangian_levels(envelope, row_costs, lam).values())
        if levels not in seen:
            seen.add(levels)
            out.append(i)
    return out


def _cheapest_within(
    states: list[Masks], cost: Callable[[Masks], float], ok: Callable[[Masks], bool]
) -> Masks:
    """The cheapest state that passes ``ok`` (measured on validation); the first state is dense and passes."""
    passing = [keep for keep in states if ok(keep)]
    return min(passing, key=cost)


def _fill(
    table: Sensitivity,
    subject: Subject,
    keep: Masks,
    levels: dict,
    envelope: dict,
    cost: Callable[[Masks], float],
    budget: float,
) -> Masks:
    """Spend what the grid's coarse steps leave of the budget, between grid points, on one row.

    The row whose last step cost the most drop is stepped back to the least sparsity between its
    two grid points that still fits the budget.
    """
    steps = [(envelope[n][level] - envelope[n][level - 1], n) for n, level in levels.items() if level > 0]
    if not steps:
        return keep
    name = max(steps)[1]
    row, grid = next(r for r in table.rows if r.name == name), (0.0, *table.grid)
    scores, infos = subject.scorer.scores(table.criterion, table.granularity), subject.scorer.infos
    for sparsity in np.linspace(grid[levels[name] - 1], grid[levels[name]], 12)[1:-1]:
        trial = {**keep, **row_keep(scores, row, sparsity, infos, table.min_keep)}
        if cost(trial) <= budget + 1e-12:
            return trial
    return keep


def _give_back(levels: dict[str, int], envelope: dict, cost: Callable[[dict], float], budget: float) -> dict:
    """Spend what the budget has left: step rows back while within it, most drop saved per cost first.

    Steps the table calls free (zero drop) are undone too, last: single-layer drops miss how
    layers' losses add up, and unused budget is accuracy thrown away.
    """
    levels = dict(levels)
    while True:
        current, options = cost(levels), []
        for name, level in levels.items():
            gain = envelope[name][level] - envelope[name][level - 1] if level > 0 else -1.0
            if gain >= 0 and (trial := cost({**levels, name: level - 1})) <= budget + 1e-12:
                options.append(((gain + 1e-9) / max(trial - current, 1e-12), name))
        if not options:
            return levels
        levels[max(options)[1]] -= 1


def _finish(
    method, goal, value, granularity, subject: Subject, keep: Masks, dense_auc: float, candidate="table"
) -> Allocation:
    structured = granularity == "structured"
    flops_fraction, params_fraction = costs(subject.model, keep, granularity)
    auc = _validation_auc(subject, keep, structured)
    layer_sparsity = {name: 1.0 - float(mask.mean()) for name, mask in keep.items()}
    return Allocation(
        method,
        goal,
        value,
        granularity,
        keep,
        layer_sparsity,
        flops_fraction,
        params_fraction,
        auc,
        dense_auc - auc,
        candidate,
    )


# --- one-knob references: uniform layer-wise and global ranking -------------------------------


def scope_allocation(
    subject: Subject,
    scope: str,
    goal: str,
    value: float,
    criterion: str = "taylor",
    *,
    granularity: str | None = None,
    min_keep: int = 1,
) -> Allocation:
    """Meet the goal with one sparsity for all layers (``layerwise``) or one global ranking (``global``).

    The sparsity is found by bisection: the smallest one within a budget, or the largest whose
    measured validation drop is within a tolerance. Structured global ranking normalises scores
    per layer (layers' unit scores differ in scale by orders of magnitude); coupled groups are made
    to agree with ``slim.couple_masks`` (a channel stays if any member keeps it).
    """
    granularity, value = check_goal(goal, value, granularity)
    structured = granularity == "structured"
    scores = subject.scorer.scores(criterion, granularity)
    spec = PruneSpec(
        criterion, granularity, scope, normalize=structured and scope == "global", min_keep=min_keep
    )

    def build(sparsity: float) -> Masks:
        keep = masks_from_scores(scores, replace(spec, sparsity=sparsity), subject.scorer.infos).keep
        if structured:
            from workbench.prune.slim import couple_masks

            keep = couple_masks(subject.model, keep, "any", quiet=True)  # the search measures the cost
        return keep

    dense_auc = _validation_auc(subject, dense_keep(subject.scorer.infos), structured)
    sparsities = np.linspace(0.0, 0.995, 200)
    cost = _cost_fn(subject.model, granularity)
    if goal == "tolerance":
        index = _last_within(
            len(sparsities),
            lambda i: _val_drop(subject, build(sparsities[i]), structured, dense_auc) <= value,
        )
    else:
        if cost(build(sparsities[-1])) > value:
            raise UnreachableGoal(f"value {value} for goal {goal!r} is below what {scope} pruning reaches")
        index = _first_within(len(sparsities), lambda i: cost(build(sparsities[i])) <= value)
    method = "uniform" if scope == "layerwise" else "global"
    candidate = "uniform" if scope == "layerwise" else "global"
    keep = build(sparsities[index])
    return _finish(method, goal, value, granularity, subject, keep, dense_auc, candidate)


def _first_within(n: int, ok: Callable[[int], bool]) -> int:
    """The smallest index with ok(i), by bisection (ok(n - 1) holds; cost falls with sparsity)."""
    low, high = 0, n - 1
    while low < high:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle + 1
    while not ok(low):
        low += 1
    return low


# --- the entry point --------------------------------------------------------------------------


def allocate(
    source,
    goal: str = "flops",
    value: float = 0.5,
    *,
    dataset=None,
    method: str = "sensitivity",
    criterion: str = "taylor",
    granularity: str | None = None,
    grid=DEFAULT_GRID,
    min_keep: int = 1,
    table: Sensitivity | None = None,
    cache=None,
    dask_address: str | None = None,
    progress: Progress | bool = False,
    recipe=None,
) -> Allocation:
    """Choose per-layer sparsities that meet a goal, and return them with their masks and results.

    Args:
        source: an ``Explorer`` (its scorer and evaluator are reused), a ``Subject``, or a Keras
            model together with ``dataset``.
        goal: ``"tolerance"`` (``value`` = tolerated validation AUC drop), ``"flops"`` (fraction of
            dense FLOPs, structured) or ``"params"`` (fraction of prunable weights, unstructured).
        method: ``"sensitivity"`` (the Lagrangian over the sensitivity table, computed or reopened
            from the cache, measured beside the one-knob answers: the best on validation wins), or
            the references ``"uniform"`` and ``"global"`` alone.
        table: a ready sensitivity table (its criterion and granularity are used).
        progress: True for tqdm bars (the table, the fine-tunes), False for none, or a
            ``core.progress.Progress``, called with (candidates fine-tuned, candidates) before each
            candidate and after every training batch (the table is then computed quietly); raising
            ``Cancelled`` stops the fine-tunes.
        recipe: a ``Recipe`` (with ``dataset``, whose training images it uses): for a budget, each
            candidate is fine-tuned with it, pruned weights pinned, and the highest validation AUC
            *after* fine-tuning wins (``Allocation.tuned_val_auc``; its fine-tuned model is
            ``tuned_model``). Slower (one fine-tune per candidate), but the masks that prune best
            are not always the ones that recover best. ``Allocation.measured`` holds every
            candidate compared. ``uniform`` and ``global`` alone are fine-tuned too. A recipe with
            ``distillation`` distils every candidate from the explorer's dense model. A tolerance
            keeps the cheapest candidate within it, before fine-tuning: the recipe is not used.

    Example (not run here: it measures every candidate model)::

        allocation = allocate(explorer, goal="flops", value=0.25)
        allocation.layer_sparsity, allocation.flops, allocation.val_drop

    Raises:
        ValueError: for an unknown goal or method, a value out of range, a granularity the goal
            doesn't allow, or a budget the grid can't reach.
    """
    if method not in METHODS:
        raise WorkbenchError(f"method must be one of {METHODS}, got {method!r}")
    if recipe is not None and not isinstance(recipe, Recipe):
        raise WorkbenchError(f"recipe must be a workbench.Recipe, got {recipe!r}")
    if recipe is not None and dataset is None:
        raise WorkbenchError("recipe needs dataset= (its training images fine-tune each candidate)")
    if table is not None and not isinstance(table, Sensitivity):
        raise WorkbenchError(f"table must be a Sensitivity (workbench.sensitivity), got {table!r}")
    check_guard(min_keep)
    check_progress(progress)
    granularity, value = check_goal(goal, value, granularity if table is None else table.granularity)
    subject = _subject(source, dataset)
    if table is not None:
        _check_table_fits(table, subject)
    tuned = recipe is not None and picks_after_fine_tuning(goal)
    if recipe is not None and not tuned:
        warnings.warn("recipe not used: a tolerance keeps the cheapest candidate within it", stacklevel=2)
    if method != "sensitivity":
        scope = "layerwise" if method == "uniform" else "global"
        answer = scope_allocation(
            subject, scope, goal, value, criterion, granularity=granularity, min_keep=min_keep
        )
        return _fine_tune_each(subject.model, [answer], dataset, recipe, progress)[0] if tuned else answer
    if table is None:
        table = sensitivity(
            subject,
            criterion,
            granularity,
            grid,
            baseline=False,  # an allocation reads no random rows
            min_keep=min_keep,
            cache=cache,
            dask_address=dask_address,
            progress=progress is True,
        )
    candidates = [allocate_from_table(table, subject, goal, value)]  # a budget the grid can't reach raises
    options = dict(granularity=granularity, min_keep=table.min_keep)
    others = {
        "distortion": lambda: allocate_from_table(table, subject, goal, value, "distortion"),
        "uniform": lambda: scope_allocation(subject, "layerwise", goal, value, table.criterion, **options),
        "global": lambda: scope_allocation(subject, "global", goal, value, table.criterion, **options),
    }
    for name, answer in others.items():
        try:
            candidates.append(answer())
        except UnreachableGoal as err:  # a budget one knob cannot reach: the other candidates remain
            log.info("%s candidate skipped: %s", name, err)
    if tuned:
        candidates = _fine_tune_each(subject.model, candidates, dataset, recipe, progress)
    best = best_on_validation(candidates, tuned=tuned)
    return replace(best, method="sensitivity", measured=tuple(candidates))


def picks_after_fine_tuning(goal: str) -> bool:
    """Whether a recipe changes the answer to ``goal``: a budget keeps the best candidate after
    fine-tuning; a tolerance keeps the cheapest within it, measured before fine-tuning."""
    return goal != "tolerance"


def _fine_tune_each(model, candidates: list[Allocation], dataset, recipe, progress) -> list[Allocation]:
    """``fine_tune_allocation`` for every candidate, with a tqdm bar (``progress`` True) or reporting
    to ``progress`` (a Progress; see ``allocate``)."""
    if progress is None or isinstance(progress, bool):
        steps = tqdm(candidates, desc="fine-tuning each candidate", disable=not progress, leave=False)
        return [fine_tune_allocation(model, c, dataset, recipe) for c in steps]
    tuned = []

    def report(*_, **__) -> None:
        progress(len(tuned), len(candidates))

    each_batch = keras.callbacks.LambdaCallback(on_train_batch_end=report)
    for candidate in candidates:
        report()
        tuned.append(fine_tune_allocation(model, candidate, dataset, recipe, callbacks=[each_batch]))
    report()
    return tuned


def fine_tune_allocation(model, allocation: Allocation, dataset, recipe, *, callbacks=None) -> Allocation:
    """``allocation`` with ``model`` pruned by it and fine-tuned with ``recipe`` (a copy), and that
    copy's validation AUC (``tuned_model``, ``tuned_val_auc``). ``callbacks``: Keras callbacks.
    A recipe with ``distillation`` distils from ``model``, the dense model."""
    structured = allocation.granularity == "structured"
    tuned = apply_masks(model, allocation.keep, structured=structured)
    options = dict(structured=structured, callbacks=callbacks, progress=False)
    fine_tune(tuned, allocation.keep, dataset, recipe, teacher=model, **options)
    auc = evaluate_model(tuned, dataset.val, dataset.val)["auc"]
    return replace(allocation, tuned_val_auc=auc, tuned_model=tuned)


def best_on_validation(candidates: list[Allocation], *, tuned: bool = False) -> Allocation:
    """Within a budget the highest validation AUC (after fine-tuning if ``tuned``), within a tolerance
    the cheapest; ties keep the cheaper, then the earlier. An undefined AUC ranks last."""
    if candidates[0].goal == "tolerance":
        return min(candidates, key=lambda a: a.cost)

    def auc(a: Allocation) -> float:
        value = a.tuned_val_auc if tuned else a.val_auc
        return -np.inf if value is None or np.isnan(value) else value

    return max(candidates, key=lambda a: (auc(a), -a.cost))


def _subject(source, dataset) -> Subject:
    if isinstance(source, Subject):
        return source
    if hasattr(source, "scorer") and hasattr(source, "evaluator"):
        return Subject.from_explorer(source)
    if not isinstance(source, keras.Model):
        kind = type(source).__name__
        raise WorkbenchError(f"source must be a Keras model, an Explorer or a Subject, got {kind}")
    if dataset is None:
        raise WorkbenchError("dataset is needed when source is a model; pass dataset= or an Explorer")
    check_dataset(dataset)
    return Subject.build(source, dataset)


def _check_table_fits(table: Sensitivity, subject: Subject) -> None:
    """Refuse a table computed for another model: its rows must be this model's prunable layers,
    and its cache key (weights, validation and calibration data) this subject's."""
    names = {info.name for info in subject.scorer.infos}
    foreign = [layer for row in table.rows for layer in row.layers if layer not in names]
    if foreign:
        raise WorkbenchError(
            f"table was computed for another model: its layers {foreign[:3]} are not prunable layers "
            "of this one; compute the table with this model's Subject"
        )
    if table.folder is not None and table.folder != subject.folder(
        table.folder.parent, table.granularity, table.min_keep
    ):
        raise WorkbenchError(
            "table was computed for other weights or data (the same layers, another model, validation "
            "or calibration set): its drops say nothing about this one; compute the table with this "
            "model's Subject"
        )
