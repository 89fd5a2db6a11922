"""Scores -> keep-masks: thresholds by ε or by target sparsity, scopes, normalisation, the guard.

Pure NumPy over ``{layer name: array}`` dicts (shrinkbench's shape), testable without TensorFlow.

Two user-facing quantities, one idea each:
- **ε** is a score threshold: a weight is kept where ``score >= ε``.
- **sparsity** is the fraction pruned, in [0, 1).

Scopes:
- ``global``: one threshold over all layers' scores (in ε mode, ε itself).
- ``layerwise``: every layer is pruned to the same sparsity, with its own threshold. In ε mode
  that sparsity is the one ε gives globally, so one ε slider drives both scopes.

The collapse guard then keeps at least ``min_keep`` entries (weights or units) in every layer,
the highest-scoring ones, and reports the layers where it fired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.core.errors import WorkbenchError, check_choice

SCOPES = ("global", "layerwise")
Scores = dict[str, np.ndarray]
Masks = dict[str, np.ndarray]


@dataclass(frozen=True)
class MaskResult:
    """Keep-masks (True = kept), each layer's effective threshold, and where the guard fired."""

    keep: Masks
    thresholds: dict[str, float]
    guarded: tuple[str, ...] = field(default=())

    @property
    def sparsity(self) -> float:
        return overall_sparsity(self.keep)

    def layer_sparsity(self) -> dict[str, float]:
        return {name: 1.0 - float(mask.mean()) for name, mask in self.keep.items()}


# --- argument checks --------------------------------------------------------------------------


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise WorkbenchError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_epsilon(epsilon: float) -> float:
    """Return ``epsilon`` as a float, or raise ValueError unless it is finite and >= 0."""
    value = _number(epsilon, "epsilon")
    if not np.isfinite(value) or value < 0:
        raise WorkbenchError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    return value


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float, or raise ValueError unless it is in [0, 1)."""
    value = _number(sparsity, "sparsity")
    if not 0.0 <= value < 1.0:  # NaN fails this too
        raise WorkbenchError(f"sparsity must be in range [0, 1), got {sparsity!r}")
    return value


def check_scope(scope: str) -> str:
    """Return ``scope``, or raise ValueError unless it is one of ``SCOPES``."""
    return check_choice(scope, "scope", SCOPES)


def check_scores(scores: Scores) -> Scores:
    if not scores:
        raise WorkbenchError("scores must hold at least one layer; the model has no prunable layers")
    for name, values in scores.items():
        if not np.isfinite(values).all():
            raise WorkbenchError(f"scores of layer {name!r} hold NaN or inf; expected finite scores")
    return scores


def check_masks(keep: Masks, shapes: dict[str, tuple[int, ...]]) -> Masks:
    """Return ``keep``, or raise ValueError unless it holds one boolean mask per layer of ``shapes``.

    A float mask of 0.5 would scale weights rather than prune them, and NaN would poison them,
    so only boolean arrays (True = kept) of exactly the kernel's shape are accepted, for exactly
    the layers in ``shapes`` (a mask for a layer the model doesn't have is a mistake, not a no-op).
    """
    if not isinstance(keep, dict):
        raise WorkbenchError(f"masks must be a dict {{layer name: boolean array}}, got {type(keep).__name__}")
    unknown = sorted(set(keep) - set(shapes))
    missing = [name for name in shapes if name not in keep]
    if unknown or missing:
        raise WorkbenchError(
            f"masks must name exactly the prunable layers {list(shapes)}; "
            f"unknown layers {unknown}, missing layers {missing}"
        )
    for name, shape in shapes.items():
        mask = keep[name]
        if not isinstance(mask, np.ndarray) or mask.dtype != bool:
            dtype = getattr(mask, "dtype", type(mask).__name__)
            raise WorkbenchError(
                f"mask of layer {name!r} must be a boolean array (True = keep), got {dtype}; "
                "a float mask would scale the weights instead of pruning them"
            )
        if tuple(mask.shape) != tuple(shape):
            raise WorkbenchError(
                f"mask of layer {name!r} must have the kernel's shape {tuple(shape)}, got {mask.shape}"
            )
    return keep


# --- normalisation, thresholds, conversions ---------------------------------------------------


def normalise_per_layer(scores: Scores) -> Scores:
    """Divide each layer's scores by that layer's mean score, so layers of different scale compare.

    A layer whose scores are all zero stays all zero.
    """
    return {name: s / s.mean() if s.mean() > 0 else np.zeros_like(s) for name, s in scores.items()}


def _flat(scores: Scores) -> np.ndarray:
    return np.concatenate([s.ravel() for s in scores.values()])


def overall_sparsity(keep: Masks) -> float:
    """Fraction of all entries pruned (False) across layers."""
    total = sum(mask.size for mask in keep.values())
    return 1.0 - sum(int(mask.sum()) for mask in keep.values()) / total


def sparsity_at_epsilon(scores: Scores, epsilon: float) -> tuple[float, dict[str, float]]:
    """Return the sparsity that ``epsilon`` gives (score < ε is pruned): overall, and per layer."""
    epsilon = check_epsilon(epsilon)
    per_layer = {name: float((s < epsilon).mean()) for name, s in scores.items()}
    total = sum(s.size for s in scores.values())
    overall = sum(per_layer[name] * s.size for name, s in scores.items()) / total
    return overall, per_layer


def epsilon_for_sparsity(values: np.ndarray, sparsity: float) -> float:
    """Return the smallest ε whose rule ``keep score >= ε`` prunes at least ``sparsity`` of ``values``.

    This is the value at sorted position ``round(sparsity * n)``. Ties can make the ε rule prune
    more than asked; ``select`` in target-sparsity mode is exact regardless.
    """
    sparsity = check_sparsity(sparsity)
    flat = np.ravel(values)
    position = min(int(round(sparsity * flat.size)), flat.size - 1)
    return float(np.partition(flat, position)[position])  # the sorted value there, in linear time


def epsilon_range(
    scores: Scores, low_quantile: float = 0.01, high_quantile: float = 0.999
) -> tuple[float, float]:
    """Return a (low, high) ε range for a log-scale slider, from the positive scores' quantiles."""
    positive = _flat(scores)
    positive = positive[positive > 0]
    if positive.size == 0:
        return 1e-12, 1.0
    low, high = np.quantile(positive, [low_quantile, high_quantile])
    return float(low), float(max(high, low * 10))


def _top_k_keep(values: np.ndarray, n_prune: int) -> np.ndarray:
    """Keep all but the ``n_prune`` lowest values; ties are broken by position, so it is exact.

    The result equals pruning the first ``n_prune`` entries of a stable argsort, in linear time
    (a partition, not a sort: the guard and the slider run it on millions of scores).
    """
    flat = values.ravel()
    if n_prune <= 0:
        return np.ones(values.shape, bool)
    if n_prune >= flat.size:
        return np.zeros(values.shape, bool)
    cut = np.partition(flat, n_prune)[n_prune]  # the lowest value that is kept (in part, if tied)
    keep = flat > cut
    tied = np.flatnonzero(flat == cut)  # in position order, as a stable sort ranks them
    keep[tied[n_prune - int((flat < cut).sum()) :]] = True
    return keep.reshape(values.shape)


# --- selection --------------------------------------------------------------------------------


def select(
    scores: Scores,
    *,
    epsilon: float | None = None,
    sparsity: float | None = None,
    scope: str = "global",
    normalize: bool = False,
    min_keep: int = 1,
) -> MaskResult:
    """Turn scores into keep-masks by ε or by target sparsity.

    Give exactly one of ``epsilon`` (keep where score >= ε) or ``sparsity`` (prune exactly that
    fraction, lowest scores first; per layer in layer-wise scope, overall in global scope).

    Example:
        >>> select({"a": np.array([0.0, 1.0, 2.0, 3.0])}, epsilon=1.5).keep["a"]
        array([False, False,  True,  True])

    Raises:
        ValueError: for both or neither of epsilon/sparsity, values out of range, unknown scope,
            empty or non-finite scores, or ``min_keep`` < 0.
    """
    check_scores(scores)
    check_scope(scope)
    if (epsilon is None) == (sparsity is None):
        raise WorkbenchError("give exactly one of epsilon= or sparsity=")
    if not isinstance(min_keep, int | np.integer) or isinstance(min_keep, bool) or min_keep < 0:
        raise WorkbenchError(f"min_keep must be an integer >= 0, got {min_keep!r}")
    if normalize:
        scores = normalise_per_layer(scores)
    if scope == "layerwise":
        target = check_sparsity(sparsity) if epsilon is None else sparsity_at_epsilon(scores, epsilon)[0]
        keep = {name: _top_k_keep(s, int(round(target * s.size))) for name, s in scores.items()}
    elif epsilon is not None:
        epsilon = check_epsilon(epsilon)
        keep = {name: s >= epsilon for name, s in scores.items()}
    else:
        flat_keep = _top_k_keep(_flat(scores), int(round(check_sparsity(sparsity) * _flat(scores).size)))
        keep = _unflatten(flat_keep, scores)
    keep, guarded = _guard(scores, keep, min_keep)
    return MaskResult(keep, effective_thresholds(scores, keep), guarded)


def _unflatten(flat: np.ndarray, like: Scores) -> Masks:
    out, start = {}, 0
    for name, s in like.items():
        out[name] = flat[start : start + s.size].reshape(s.shape)
        start += s.size
    return out


def _guard(scores: Scores, keep: Masks, min_keep: int) -> tuple[Masks, tuple[str, ...]]:
    """Keep at least ``min_keep`` highest-scoring entries in every layer (the collapse guard)."""
    guarded = []
    for name, mask in keep.items():
        needed = min(min_keep, mask.size)
        if mask.sum() < needed:
            keep[name] = _top_k_keep(scores[name], mask.size - needed)
            guarded.append(name)
    return keep, tuple(guarded)


def effective_thresholds(scores: Scores, keep: Masks) -> dict[str, float]:
    """Each layer's lowest kept score: the ε that layer effectively used (inf if all pruned)."""
    return {
        name: float(s[keep[name]].min()) if keep[name].any() else float("inf") for name, s in scores.items()
    }


def thresholds_of(scores: Scores, keep: Masks, infos: list, structured: bool) -> dict[str, float]:
    """``effective_thresholds`` of masks made some other way (an allocation's per-row levels).

    Structured ``scores`` are per unit and ``keep`` kernel-shaped: a unit counts as kept while any
    of its weights is. The output layer of a structured mask is kept whole (its threshold is 0).
    """
    if not structured:
        return effective_thresholds(scores, keep)
    units = {
        i.name: alive_units(keep[i.name], int(np.prod(i.units_shape))).reshape(i.units_shape) for i in infos
    }
    return {**effective_thresholds({i.name: scores[i.name] for i in infos[:-1]}, units), infos[-1].name: 0.0}


# --- structured units -------------------------------------------------------------------------


def unit_scores(scores: Scores, units_shapes: dict[str, tuple[int, ...]]) -> Scores:
    """Aggregate weight scores into one score per unit (filter/neuron): the mean over its weights."""
    out = {}
    for name, s in scores.items():
        shape = units_shapes[name]
        out[name] = s.reshape(-1, int(np.prod(shape))).mean(axis=0).reshape(shape)
    return out


def alive_units(mask: np.ndarray, units: int) -> np.ndarray:
    """Which of a kernel's ``units`` trailing units (filters, neurons) keep at least one weight."""
    return np.asarray(mask, bool).reshape(-1, units).any(axis=0)


def expand_units(keep: Masks, kernel_shapes: dict[str, tuple[int, ...]]) -> Masks:
    """Broadcast per-unit keep-masks to full kernel shapes (a pruned filter loses all its weights)."""
    return {name: np.broadcast_to(mask, kernel_shapes[name]).copy() for name, mask in keep.items()}
