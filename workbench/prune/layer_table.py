"""The per-layer table of a mask: layer, kind, shape, weights, pruned, sparsity, threshold."""

from __future__ import annotations

import pandas as pd

from workbench.core.masks import MaskResult
from workbench.model.compat import keras
from workbench.model.registry import other_parameters, prunable_layers

TABLE_COLUMNS = ["layer", "kind", "shape", "weights", "pruned", "sparsity", "threshold"]


def layer_table(model: keras.Model, result: MaskResult, *, include_unpruned: bool = True) -> pd.DataFrame:
    """Per-layer report: layer, kind, shape, weights, pruned, sparsity, threshold.

    Prunable kernels come first; with ``include_unpruned`` the biases and BatchNorm parameters
    follow (never pruned, shown so the totals are the model's real parameter count).
    """
    rows = []
    for info in prunable_layers(model):
        kept = int(result.keep[info.name].sum())
        rows.append(
            [
                info.name,
                info.kind,
                info.shape,
                info.size,
                info.size - kept,
                1 - kept / info.size,
                result.thresholds[info.name],
            ]
        )
    if include_unpruned:
        for layer, weight, shape, count in other_parameters(model):
            rows.append([layer, weight, shape, count, 0, 0.0, float("nan")])
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def overall_counts(table: pd.DataFrame) -> dict[str, float]:
    """Overall sparsity of the prunable weights, and non-zero parameters of the whole model."""
    prunable = table[table["threshold"].notna()]
    return {
        "sparsity": float(prunable["pruned"].sum() / prunable["weights"].sum()),
        "parameters": int(table["weights"].sum()),
        "nonzero_parameters": int(table["weights"].sum() - table["pruned"].sum()),
    }
