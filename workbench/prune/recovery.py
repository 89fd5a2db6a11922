"""Iterative pruning: prune a step of the way, fine-tune, re-score, repeat (a schedule of ``fine_tune``).

A one-shot prune to 90% of the filters removes them all by scores taken on the dense model, and
the survivors must then recover from one large shock. ``Iterative`` splits it into ``rounds``:
each round removes the same share of the surviving units (the kept fraction falls geometrically,
(1 - s)^(r / rounds)), then fine-tunes, and the next round's scores are taken on the fine-tuned
model, so a unit that became important while its neighbours were removed is kept. The total
training budget is the recipe's epochs, split over the rounds, so it compares fairly with a
one-shot fine-tune of the same recipe. Distillation (``Recipe.distillation``) applies in every
round. Pruned entries stay exactly zero (``pruning.attach_masks``) and never come back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from workbench.core.errors import WorkbenchError, check_choice
from workbench.core.masks import Masks, alive_units
from workbench.core.progress import Progress
from workbench.data.dataset import Dataset
from workbench.model.compat import keras
from workbench.model.distill import Distillation
from workbench.model.registry import LayerInfo
from workbench.model.train import Recipe
from workbench.prune.pruning import (
    OneShot,
    PruneSpec,
    Schedule,
    apply_masks,
    fine_tune,
    rescored_masks,
    train_masked,
)
from workbench.prune.scores import Scorer


@dataclass(frozen=True)
class Iterative(Schedule):
    """Schedule: reach ``spec.sparsity`` in ``rounds`` steps, fine-tuning and re-scoring between them.

    Args:
        scorer_for: a fresh ``Scorer`` of the model as it is now (called once per round).
        spec: the criterion, granularity and scope of every round, and the final ``sparsity``.
        rounds: how many prune-then-fine-tune steps; the recipe's epochs are split over them, so
            it needs ``recipe.epochs >= rounds``.

    Raises:
        WorkbenchError: on construction, for a spec without a target sparsity or rounds < 1.
    """

    scorer_for: Callable[[keras.Model], Scorer]
    spec: PruneSpec
    rounds: int = 3

    def __post_init__(self):
        if not callable(self.scorer_for):
            raise WorkbenchError(f"scorer_for must be a function model -> Scorer, got {self.scorer_for!r}")
        if not isinstance(self.spec, PruneSpec) or self.spec.sparsity is None:
            raise WorkbenchError(
                "spec must be a PruneSpec with a target sparsity, e.g. PruneSpec(sparsity=0.9), "
                f"got {self.spec!r}"
            )
        rounds = self.rounds
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise WorkbenchError(f"rounds must be an integer >= 1, got {rounds!r}")

    def sparsities(self) -> list[float]:
        """The sparsity after each round: every round prunes the same share of the survivors."""
        kept = 1.0 - self.spec.sparsity
        return [1.0 - kept ** ((r + 1) / self.rounds) for r in range(self.rounds)]

    def epochs(self, recipe: Recipe) -> list[int]:
        """The recipe's epochs split over the rounds; the later rounds get any remainder (the last
        recovers at the final sparsity)."""
        if recipe.epochs < self.rounds:
            raise WorkbenchError(
                f"an Iterative schedule of {self.rounds} rounds needs recipe.epochs >= {self.rounds} "
                f"(at least one epoch per round), got epochs={recipe.epochs}"
            )
        base, extra = divmod(recipe.epochs, self.rounds)
        return [base + (r >= self.rounds - extra) for r in range(self.rounds)]

    def train(
        self,
        model: keras.Model,
        keep: Masks,
        dataset: Dataset,
        recipe: Recipe,
        *,
        structured: bool,
        **options,
    ) -> dict[str, list]:
        """The rounds, for ``fine_tune`` (its arguments checked there), in one history.

        Returns:
            The rounds' per-epoch histories end to end, and ``mask_updates``: (training steps before the
            round, its sparsity) for each round.
        """
        structured = structured or self.spec.structured
        epochs = self.epochs(recipe)
        steps = math.ceil(len(dataset.train) / recipe.batch_size)
        progress = options.pop("progress")
        history: dict[str, list] = {"mask_updates": []}
        for r, sparsity in enumerate(self.sparsities()):
            keep = rescored_masks(self.scorer_for(model), self.spec, sparsity, keep)
            done = sum(epochs[:r]) * steps
            history["mask_updates"].append((done, sparsity))
            part = train_masked(
                model,
                keep,
                dataset,
                replace(recipe, epochs=epochs[r], seed=recipe.seed + r),  # a new shuffle each round
                schedule=OneShot(),
                structured=structured,
                progress=_offset(progress, done, recipe.epochs * steps),
                **options,
            )
            for key, values in part.items():
                history.setdefault(key, []).extend(values)
        return history


def _offset(progress: Progress | bool, done: int, total: int) -> Progress | bool:
    """A round's progress as part of the whole: (done before it + its batches, all batches)."""
    if isinstance(progress, bool) or progress is None:
        return progress
    return lambda batches, _: progress(done + batches, total)


# --- the recovery choices a notebook parameter and the dashboard offer ----------------------------

RECOVERIES = {  # name -> (distils from the dense model, prunes iteratively)
    "one-shot": (False, False),
    "distill": (True, False),
    "iterative": (False, True),
    "iterative+distill": (True, True),
}
ROUNDS = 3  # an iterative recovery's rounds, fewer when the recipe has fewer epochs


def recovery(
    name: str, recipe: Recipe, scorer_for: Callable[[keras.Model], Scorer], spec: PruneSpec
) -> tuple[Recipe, Schedule]:
    """The (recipe, schedule) of a recovery named in ``RECOVERIES``, for ``fine_tune``.

    ``"distill"`` adds ``Distillation()`` to a ``recipe`` that has none (fine_tune then needs the
    dense model as ``teacher=``; a recipe's own distillation is kept under every name).
    ``"iterative"`` gives ``Iterative(scorer_for, spec, rounds)`` with up to ``ROUNDS`` rounds, one
    epoch each at least, which starts from the dense model (all-True masks).

    Raises:
        WorkbenchError: an unknown name, or an iterative one with a spec without a target sparsity.
    """
    distils, iterates = RECOVERIES[check_choice(name, "recovery", tuple(RECOVERIES))]
    if distils and recipe.distillation is None:
        recipe = replace(recipe, distillation=Distillation())
    if not iterates:
        return recipe, OneShot()
    return recipe, Iterative(scorer_for, spec, min(ROUNDS, recipe.epochs))


def recover(
    dense: keras.Model,
    keep: Masks,
    spec: PruneSpec,
    dataset: Dataset,
    recipe: Recipe,
    name: str = "one-shot",
    *,
    scorer_for: Callable[[keras.Model], Scorer],
    **options,
) -> tuple[keras.Model, dict[str, list]]:
    """Fine-tune a pruned copy of ``dense`` by the recovery ``name``; return (the copy, its history).

    One-shot recoveries start from ``keep``; iterative ones from ``dense`` itself, pruning in rounds
    to the sparsity ``keep`` reached (``spec``'s target, or what its ε gave). Distilling ones (or a
    recipe with ``distillation``) learn from ``dense``. ``options`` go to ``fine_tune``
    (``callbacks``, ``progress``).
    """
    infos = scorer_for(dense).infos
    target = spec.sparsity if spec.sparsity is not None else reached_sparsity(keep, infos, spec.structured)
    target_spec = replace(spec, epsilon=None, sparsity=target)
    recipe, schedule = recovery(name, recipe, scorer_for, target_spec)
    if isinstance(schedule, Iterative):
        keep = {info.name: np.ones(info.shape, bool) for info in infos}
    model = apply_masks(dense, keep, structured=spec.structured)
    options = dict(teacher=dense, schedule=schedule, structured=spec.structured, **options)
    return model, fine_tune(model, keep, dataset, recipe, **options)


def reached_sparsity(keep: Masks, infos: list[LayerInfo], structured: bool) -> float:
    """The fraction of scored entries ``keep`` prunes: weights, or (``structured``) the units of every
    layer but the output one, as ``pruning.masks_from_scores`` counts them."""
    if not structured:
        return 1.0 - sum(int(keep[i.name].sum()) for i in infos) / sum(keep[i.name].size for i in infos)
    units = [alive_units(keep[i.name], int(np.prod(i.units_shape))) for i in infos[:-1]]
    return 1.0 - sum(int(u.sum()) for u in units) / sum(u.size for u in units)


def scorer_like(scorer: Scorer) -> Callable[[keras.Model], Scorer]:
    """``scorer_for`` of a schedule: a fresh Scorer of a model on ``scorer``'s calibration images,
    labels, seed, batch size and head."""
    options = dict(seed=scorer.seed, batch_size=scorer.batch_size, head=scorer.head)
    return lambda model: Scorer(model, scorer.images, scorer.labels, **options)
