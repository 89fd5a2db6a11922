"""What the explorer answers with: a ``Point`` (one evaluated setting), a ``GoalPoint`` (an
allocation to a goal) and a ``Setting`` (the spec and slider range after a setting change)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from workbench.analysis.budget import Allocation
from workbench.analysis.curves import point_row
from workbench.analysis.sensitivity import Sensitivity
from workbench.core.masks import MaskResult
from workbench.prune.pruning import PruneSpec


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
