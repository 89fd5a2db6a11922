"""Scores -> masks -> a pruned copy of the model; masked fine-tuning, one-shot or gradual.

Pruned weights stay exactly zero through training: each kernel variable carries a
``MaskConstraint``, which Keras 3's optimizer applies right after every update, inside the
compiled train step, so Adam's momentum can never revive a pruned weight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.masks import (
    MaskResult,
    Masks,
    Scores,
    alive_units,
    check_epsilon,
    check_masks,
    check_scope,
    check_sparsity,
    expand_units,
    select,
)
from workbench.core.progress import Progress
from workbench.data.dataset import Dataset, check_dataset
from workbench.model.builders import check_built, check_model_fits
from workbench.model.compat import keras, tf
from workbench.model.distill import check_teacher, student_of
from workbench.model.graph import Graph, reference_factors, reference_variables
from workbench.model.registry import LayerInfo, kernel_variables, prunable_layers
from workbench.model.train import RecalibrateBatchNorm, Recipe, compile_model, fit
from workbench.prune.scores import Scorer, check_criterion, check_granularity

log = logging.getLogger(__name__)

# A gentler learning rate than training from scratch: the kept weights are already good.
FINE_TUNE_RECIPE = Recipe(epochs=3, learning_rate=5e-4)


@dataclass(frozen=True)
class PruneSpec:
    """Everything that decides a mask, besides the scores: what the dashboard's controls set.

    Give at most one of ``epsilon`` (keep weights scoring >= ε) or ``sparsity`` (prune exactly
    that fraction). A spec with neither describes a curve (every ε), not a mask.

    Raises:
        ValueError: on construction, for any field out of range, naming it and its value.
    """

    criterion: str = "gradient"
    granularity: str = "unstructured"
    scope: str = "global"
    epsilon: float | None = None
    sparsity: float | None = None
    normalize: bool = False
    min_keep: int = 1

    def __post_init__(self):
        check_criterion(self.criterion)
        check_granularity(self.granularity)
        check_scope(self.scope)
        if self.epsilon is not None and self.sparsity is not None:
            raise WorkbenchError(
                f"give at most one of epsilon= or sparsity=, got epsilon={self.epsilon!r} "
                f"and sparsity={self.sparsity!r}"
            )
        if self.epsilon is not None:
            check_epsilon(self.epsilon)
        if self.sparsity is not None:
            check_sparsity(self.sparsity)
        if not isinstance(self.normalize, bool | np.bool_):
            raise WorkbenchError(f"normalize must be True or False, got {self.normalize!r}")
        if (
            not isinstance(self.min_keep, int | np.integer)
            or isinstance(self.min_keep, bool)
            or self.min_keep < 0
        ):
            raise WorkbenchError(f"min_keep must be an integer >= 0, got {self.min_keep!r}")

    @property
    def structured(self) -> bool:
        """True when whole units (filters, neurons) are pruned."""
        return self.granularity == "structured"

    @property
    def by_epsilon(self) -> bool:
        """True when the threshold is ε (or the spec describes an ε curve), False for a target sparsity."""
        return self.sparsity is None


def make_masks(scorer: Scorer, spec: PruneSpec) -> MaskResult:
    """Score (cached) and threshold; structured unit masks are expanded to kernel shapes."""
    if not isinstance(scorer, Scorer):
        raise WorkbenchError(f"scorer must be a Scorer (workbench.Scorer), got {type(scorer).__name__}")
    if not isinstance(spec, PruneSpec):
        raise WorkbenchError(
            f"spec must be a PruneSpec, e.g. PruneSpec(sparsity=0.5), got {type(spec).__name__}"
        )
    return masks_from_scores(scorer.scores(spec.criterion, spec.granularity), spec, scorer.infos)


def masks_from_scores(scores: Scores, spec: PruneSpec, infos: list[LayerInfo]) -> MaskResult:
    """Threshold ready-made scores by ``spec``; structured unit masks are expanded to kernel shapes.

    Structured pruning never removes the output layer's units: they are the classes. The output
    layer (the last prunable one) is left out of the selection and kept whole.
    """
    if spec.epsilon is None and spec.sparsity is None:
        raise WorkbenchError("spec must set epsilon= or sparsity= to make masks; it sets neither")
    output = infos[-1]
    if spec.structured:
        scores = {name: values for name, values in scores.items() if name != output.name}
    result = select(
        scores,
        epsilon=spec.epsilon,
        sparsity=spec.sparsity,
        scope=spec.scope,
        normalize=spec.normalize,
        min_keep=spec.min_keep,
    )
    if spec.structured:
        keep = {**result.keep, output.name: np.ones(output.units_shape, bool)}
        keep = expand_units({i.name: keep[i.name] for i in infos}, {i.name: i.shape for i in infos})
        result = MaskResult(keep, {**result.thresholds, output.name: 0.0}, result.guarded)
    return result


def copy_model(model: keras.Model) -> keras.Model:
    """Return an independent copy: same architecture, weights and loss, no optimizer.

    Not ``keras.models.clone_model``, which compiles the copy like the original, so a saved copy
    would carry the baseline's Adam moments (three times the file) and fine-tuning would reuse them.
    The loss is kept (compiled without an optimizer) because a head may only be readable from it,
    e.g. one linear unit trained with ``BinaryCrossentropy(from_logits=True)`` (``workbench.model.heads``).
    """
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        copy.compile(optimizer=None, loss=model.loss)
    return copy


def apply_masks(model: keras.Model, keep: Masks, *, structured: bool = False) -> keras.Model:
    """Return a copy of ``model`` with pruned kernel weights set to zero; ``model`` is untouched.

    With ``structured=True`` the copy is the exact masked reference of a structured mask: dead
    units also lose their biases, and channel-wise layers after a dead channel (BatchNorm γ/β,
    depthwise biases) are zeroed too, so every dead channel is exactly zero, as ``slim_model``
    removes it (``workbench.model.graph.reference_factors``).
    """
    pruned = copy_model(model)
    zero_pruned_weights(pruned, keep, structured=structured)
    return pruned


def zero_pruned_weights(model: keras.Model, keep: Masks, *, structured: bool = False) -> None:
    """Multiply each kernel by its mask in place (and, if ``structured``, zero dead channels)."""
    _check_masks_fit(model, keep)
    for name, variable in kernel_variables(model).items():
        variable.assign(np.asarray(variable) * keep[name])
    if structured:
        for _, variable, factor in _reference_constraints(model, keep):
            variable.assign(np.asarray(variable) * factor)


def _reference_constraints(
    model: keras.Model, keep: Masks, *, every: bool = False
) -> list[tuple[tuple[str, str], keras.Variable, np.ndarray]]:
    """((layer, attribute), variable, 0/1 factor) for the biases and BatchNorm γ/β a structured mask zeroes.

    ``every`` includes the variables whose factor is all ones (a gradual schedule may zero them later).
    """
    graph = Graph.of(model)
    variables = reference_variables(graph, model)
    factors = reference_factors(graph, keep)
    return [(key, variables[key], f) for key, f in factors.items() if every or not f.all()]


def _check_masks_fit(model: keras.Model, keep: Masks) -> None:
    check_masks(keep, {info.name: info.shape for info in prunable_layers(model)})


def masks_from_weights(model: keras.Model) -> Masks:
    """Recover keep-masks from a pruned model's zeros (e.g. after loading it from disk)."""
    return {name: np.asarray(v) != 0 for name, v in kernel_variables(model).items()}


# --- exact zeros during training --------------------------------------------------------------


class MaskConstraint(keras.constraints.Constraint):
    """Multiply a kernel by its 0/1 mask after every optimizer step.

    The mask is a variable, so a gradual schedule can tighten it without retracing training.
    """

    def __init__(self, keep: np.ndarray):
        self.mask = tf.Variable(keep.astype(np.float32), trainable=False)

    def __call__(self, weight):
        return weight * tf.cast(self.mask, weight.dtype)

    def update(self, keep: np.ndarray) -> None:
        self.mask.assign(keep.astype(np.float32))


def attach_masks(model: keras.Model, keep: Masks, *, structured: bool = False) -> dict[str, MaskConstraint]:
    """Zero the pruned weights and pin them at zero for all later training of ``model``.

    With ``structured=True`` the dead channels' biases and BatchNorm γ/β are pinned as well, so
    the model stays the exact masked reference (and slimmable) through training.

    Returns:
        {layer: the constraint on its kernel}, for schedules that tighten the masks later; with
        ``structured``, also {(layer, "bias" | "gamma" | "beta"): the constraint on that variable}.
    """
    zero_pruned_weights(model, keep, structured=structured)
    constraints = {}
    for name, variable in kernel_variables(model).items():
        constraints[name] = variable.constraint = MaskConstraint(keep[name])
    if structured:
        for key, variable, factor in _reference_constraints(model, keep, every=True):
            constraints[key] = variable.constraint = MaskConstraint(factor)
    return constraints


# --- gradual pruning --------------------------------------------------------------------------


def polynomial_sparsity(
    step: int, *, initial: float, final: float, begin_step: int, end_step: int, power: int = 3
) -> float:
    """Zhu & Gupta (2017) sparsity ramp, the shape of tfmot's PolynomialDecay.

    s(t) = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power, held at
    ``initial`` before ``begin_step`` and at ``final`` after ``end_step``.
    """
    check_sparsity(initial)
    check_sparsity(final)
    if end_step <= begin_step:
        raise WorkbenchError(f"end_step must be > begin_step, got {begin_step}..{end_step}")
    progress = min(max((step - begin_step) / (end_step - begin_step), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** power


class GradualPruning(keras.callbacks.Callback):
    """Raise the sparsity along ``polynomial_sparsity`` every ``frequency`` steps during training.

    ``mask_at(sparsity, previous_keep)`` returns new keep-masks; pruned weights never come back
    (the ramp only tightens), and the masks are written into the constraints in place. With
    ``structured``, dead channels' biases and BatchNorm γ/β are zeroed and pinned at each step
    too, so the model stays the exact masked reference of its masks.
    """

    def __init__(
        self,
        constraints: dict[str, MaskConstraint],
        mask_at: Callable,
        *,
        initial: float,
        final: float,
        begin_step: int,
        end_step: int,
        frequency: int,
        structured: bool = False,
    ):
        super().__init__()
        self.constraints = {key: c for key, c in constraints.items() if isinstance(key, str)}  # kernels
        self.references = {key: c for key, c in constraints.items() if not isinstance(key, str)}
        self.mask_at, self.structured = mask_at, structured
        self.ramp = dict(initial=initial, final=final, begin_step=begin_step, end_step=end_step)
        self.frequency, self.step, self.log = max(1, frequency), 0, []

    def on_train_batch_begin(self, batch, logs=None):
        if self.step % self.frequency == 0 and self.step <= self.ramp["end_step"]:
            self._tighten(polynomial_sparsity(self.step, **self.ramp))
        self.step += 1

    def _tighten(self, sparsity: float) -> None:
        previous = {n: c.mask.numpy().astype(bool) for n, c in self.constraints.items()}
        keep = self.mask_at(sparsity, previous)
        for name, constraint in self.constraints.items():
            constraint.update(keep[name] & previous[name])
        current = {n: c.mask.numpy().astype(bool) for n, c in self.constraints.items()}
        model = student_of(self.model)  # a Distiller trains its student
        zero_pruned_weights(model, current, structured=self.structured)
        if self.structured:
            for key, _, factor in _reference_constraints(model, current, every=True):
                self.references[key].update(factor)
        self.log.append((self.step, sparsity))


class Schedule:
    """How ``fine_tune`` moves the masks while it trains: ``OneShot``, ``Gradual`` or
    ``recovery.Iterative``, which overrides ``train`` (one masked training by default)."""

    def train(self, model: keras.Model, keep: Masks, dataset: Dataset, recipe: Recipe, **options) -> dict:
        """Fine-tune ``model`` in place by this schedule (``fine_tune``'s arguments, checked there)."""
        return train_masked(model, keep, dataset, recipe, schedule=self, **options)


@dataclass(frozen=True)
class OneShot(Schedule):
    """Schedule: the masks are fixed from the first step (prune once, then recover)."""


@dataclass(frozen=True)
class Gradual(Schedule):
    """Schedule: raise the sparsity from the masks given to ``spec.sparsity`` along the cubic ramp.

    The ramp ends after two thirds of the training steps; the last third recovers at the final
    sparsity. Masks are recomputed from the current weights, rescored by ``scorer_for``, every
    ``frequency`` steps (default: 8 updates along the ramp).
    """

    scorer_for: Callable[[keras.Model], Scorer]
    spec: PruneSpec
    frequency: int | None = None


def fine_tune(
    model: keras.Model,
    keep: Masks,
    dataset: Dataset,
    recipe: Recipe = FINE_TUNE_RECIPE,
    *,
    teacher: keras.Model | None = None,
    schedule: Schedule = OneShot(),
    structured: bool = False,
    callbacks: list | None = None,
    progress: Progress | bool = True,
    recalibrate: bool = True,
) -> dict[str, list]:
    """Train ``model`` in place with its pruned weights pinned at exactly zero.

    Args:
        keep: the masks to pin (for ``Gradual`` and ``Iterative``, the starting masks, usually
            all True).
        recipe: epochs, batch size, learning rate, seed; with ``distillation`` (a
            ``Distillation``) the model also learns from ``teacher``'s outputs.
        teacher: the dense model ``model`` was pruned from: required when the recipe distils,
            unused otherwise. It is not changed.
        schedule: ``OneShot()`` keeps ``keep``; ``Gradual(scorer_for, spec)`` tightens it along a
            ramp while training; ``Iterative(scorer_for, spec, rounds)`` prunes a step, fine-tunes,
            re-scores, ``rounds`` times, within the same ``recipe.epochs`` in all
            (``workbench.prune.recovery``).
        structured: also pin dead channels' biases and BatchNorm γ/β at zero (the exact
            masked reference of ``apply_masks(structured=True)``, which stays slimmable).
            A ``Gradual`` or ``Iterative`` schedule with a structured spec implies it.
        recalibrate: set BatchNorm's moving statistics to the training images' before each
            validation and at the end (``train.RecalibrateBatchNorm``): a short fine-tune leaves
            them stale, and the model would answer near chance. No weight changes.
        progress: as ``train.fit``'s: True for Keras's bar, False for none, or a
            ``core.progress.Progress`` called with (batches done, batches) after every batch
            (raising ``Cancelled`` stops the fine-tune).

    Returns:
        The per-epoch history (loss, accuracy, val_loss, val_accuracy); a gradual or iterative
        schedule adds ``mask_updates``, the (step, sparsity) points where the masks were tightened.

    Raises:
        WorkbenchError: an unknown schedule, a model that does not fit the data, a distilling
            recipe without a fitting ``teacher``.
    """
    if not isinstance(schedule, Schedule):
        raise WorkbenchError(f"schedule must be OneShot(), Gradual(...) or Iterative(...), got {schedule!r}")
    check_built(model)
    check_dataset(dataset)
    check_model_fits(model, dataset, "fine_tune's model")  # else Keras fails deep inside fit
    if recipe.distillation is not None:
        check_teacher(teacher, model, recipe.distillation)  # before any weight changes
    options = dict(teacher=teacher, callbacks=callbacks, progress=progress, recalibrate=recalibrate)
    return schedule.train(model, keep, dataset, recipe, structured=structured, **options)


def train_masked(
    model: keras.Model,
    keep: Masks,
    dataset: Dataset,
    recipe: Recipe,
    *,
    teacher: keras.Model | None,
    schedule: Schedule,
    structured: bool,
    callbacks: list | None,
    progress: Progress | bool,
    recalibrate: bool,
) -> dict[str, list]:
    """One masked training for ``fine_tune`` (arguments checked there): pin ``keep``, then fit
    from a fresh optimizer."""
    gradual = isinstance(schedule, Gradual)
    structured = structured or (gradual and schedule.spec.structured)
    constraints = attach_masks(model, keep, structured=structured)
    callbacks = list(callbacks or [])
    if recalibrate:
        callbacks.append(RecalibrateBatchNorm(dataset.train.images, recipe.batch_size, recipe.seed))
    ramp = _ramp(model, constraints, schedule, dataset, recipe, structured) if gradual else None
    compile_model(model, recipe.learning_rate)  # a fresh optimizer: no momentum from before pruning
    history = fit(
        model,
        dataset,
        recipe,
        callbacks=callbacks + ([ramp] if ramp else []),
        progress=progress,
        teacher=teacher,
    )
    if ramp is not None:
        history["mask_updates"] = ramp.log
    return history


def _ramp(
    model, constraints, schedule: Gradual, dataset: Dataset, recipe: Recipe, structured: bool
) -> GradualPruning:
    spec = schedule.spec
    final = check_sparsity(spec.sparsity if spec.sparsity is not None else 0.0)
    steps = recipe.epochs * int(np.ceil(len(dataset.train) / recipe.batch_size))
    end_step = max(1, (2 * steps) // 3)

    def mask_at(sparsity: float, previous: Masks) -> Masks:
        return rescored_masks(schedule.scorer_for(model), spec, sparsity, previous)

    return GradualPruning(
        constraints,
        mask_at,
        initial=0.0,
        final=final,
        begin_step=0,
        end_step=end_step,
        frequency=schedule.frequency or max(1, end_step // 8),
        structured=structured,
    )


def prune_gradually(
    model: keras.Model,
    scorer_for: Callable[[keras.Model], Scorer],
    spec: PruneSpec,
    dataset: Dataset,
    recipe: Recipe = FINE_TUNE_RECIPE,
    *,
    frequency: int | None = None,
    progress: Progress | bool = True,
) -> tuple[keras.Model, dict[str, list], list[tuple[int, float]]]:
    """Shorthand: ``fine_tune`` a copy of ``model`` from dense with ``Gradual(scorer_for, spec)``.

    Returns:
        (the pruned copy, its history, the (step, sparsity) points where masks were updated).
    """
    pruned = copy_model(model)
    dense = {info.name: np.ones(info.shape, bool) for info in prunable_layers(pruned)}
    schedule = Gradual(scorer_for, spec, frequency)
    history = fine_tune(pruned, dense, dataset, recipe, schedule=schedule, progress=progress)
    return pruned, history, history.pop("mask_updates")


def rescored_masks(scorer: Scorer, spec: PruneSpec, sparsity: float, previous: Masks) -> Masks:
    """Masks at ``sparsity`` from ``scorer``'s current scores; nothing ``previous`` pruned revives."""
    scores = _demote_pruned(
        scorer.scores(spec.criterion, spec.granularity), previous, scorer.infos, spec.granularity
    )
    keep = masks_from_scores(scores, replace(spec, epsilon=None, sparsity=sparsity), scorer.infos).keep
    return {name: mask & previous[name] for name, mask in keep.items()}


def _demote_pruned(scores: Scores, previous: Masks, infos: list[LayerInfo], granularity: str) -> Scores:
    """Give already-pruned entries a score below every real score, so the mask only tightens."""
    demoted = {}
    for info in infos:
        alive = previous[info.name]
        if granularity == "structured":
            alive = alive_units(alive, int(np.prod(info.units_shape))).reshape(info.units_shape)
        demoted[info.name] = np.where(alive, scores[info.name], -1.0)
    return demoted
