"""Clinical metrics of a classifier's probabilities, and what a pruned model costs (FLOPs, bytes).

Metrics are NumPy/scikit-learn over probability arrays (N, classes); binary and multi-class
both work. For binary tasks the operating threshold on p(positive) is chosen on validation data
(Youden's J) and then applied unchanged to test, as a clinic would.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from workbench.compat import keras
from workbench.graph import flops as graph_flops
from workbench.masks import MaskResult, Masks
from workbench.registry import other_parameters, prunable_layers


def operating_threshold(val_probs: np.ndarray, val_labels: np.ndarray, positive: int = 1) -> float:
    """Choose the p(positive) threshold that maximises sensitivity + specificity on validation data."""
    truth = np.asarray(val_labels) == positive
    if truth.all() or not truth.any():
        return 0.5  # one class only: no ROC to choose from
    fpr, tpr, thresholds = roc_curve(truth, val_probs[:, positive])
    return float(np.clip(thresholds[np.argmax(tpr - fpr)], 0.0, 1.0))


def decisions(probs: np.ndarray, threshold: float | None = None, positive: int = 1) -> np.ndarray:
    """Predicted classes: argmax, or for binary tasks p(positive) >= threshold when one is given."""
    if threshold is None or probs.shape[1] != 2:
        return probs.argmax(axis=1)
    return np.where(probs[:, positive] >= threshold, positive, 1 - positive)


def auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC: binary on p(class 1), multi-class one-vs-rest macro. NaN if a class is missing."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < probs.shape[1]:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr"))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the bin-weighted gap between confidence (max probability) and accuracy."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            gap += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(gap)


def clinical_metrics(
    probs: np.ndarray, labels: np.ndarray, threshold: float | None = None, positive: int = 1
) -> dict:
    """Accuracy, AUC, sensitivity/specificity, per-class recall, ECE and the confusion matrix.

    Args:
        probs: (N, classes) probabilities.
        threshold: binary operating threshold on p(positive) (see ``operating_threshold``);
            None means argmax. Multi-class decisions are always argmax, and sensitivity /
            specificity are then one-vs-rest for ``positive``.
    """
    labels = np.asarray(labels).reshape(-1)
    classes = probs.shape[1]
    predicted = decisions(probs, threshold, positive)
    # Plain counting, ~20x quicker than sklearn's validated confusion_matrix on a hot path.
    matrix = np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    recall = np.divide(
        matrix.diagonal(), matrix.sum(axis=1), out=np.full(classes, np.nan), where=matrix.sum(axis=1) > 0
    )
    is_pos, said_pos = labels == positive, predicted == positive
    return {
        "accuracy": float((probs.argmax(axis=1) == labels).mean()),
        "auc": auc(probs, labels),
        "sensitivity": _ratio((is_pos & said_pos).sum(), is_pos.sum()),
        "specificity": _ratio((~is_pos & ~said_pos).sum(), (~is_pos).sum()),
        "threshold": float("nan") if threshold is None else float(threshold),
        "ece": expected_calibration_error(probs, labels),
        "recall_per_class": recall.tolist(),
        "confusion": matrix,
    }


def validated_metrics(
    val_probs: np.ndarray,
    val_labels: np.ndarray,
    test_probs: np.ndarray,
    test_labels: np.ndarray,
    positive: int = 1,
) -> dict:
    """Clinical test metrics at an operating threshold chosen on validation (binary; argmax otherwise)."""
    binary = test_probs.shape[1] == 2
    threshold = operating_threshold(val_probs, val_labels, positive) if binary else None
    return clinical_metrics(test_probs, test_labels, threshold, positive)


def _ratio(hits, total) -> float:
    return float(hits / total) if total else float("nan")


def changed_predictions(dense_probs: np.ndarray, pruned_probs: np.ndarray) -> np.ndarray:
    """Indices of images whose predicted class differs between the dense and the pruned model."""
    return np.flatnonzero(dense_probs.argmax(axis=1) != pruned_probs.argmax(axis=1))


# --- cost -------------------------------------------------------------------------------------


def flops(model: keras.Model, keep: Masks | None = None) -> dict[str, int]:
    """Theoretical forward FLOPs (2 per multiply-add) of the conv, depthwise and dense layers, per image.

    Returns ``dense`` (all weights), ``masked`` (only non-zero weights, i.e. ideal sparse
    kernels) and ``filter_pruned`` (what the slim model of a structured ``keep`` costs: kept
    input channels x kept units, traced through the channel graph, ``workbench.graph``).
    """
    return graph_flops(model, keep)


def gzip_bytes(model: keras.Model) -> int:
    """Size of all the model's weights, saved as a .npz and gzip-compressed (zeros compress away)."""
    buffer = io.BytesIO()
    np.savez(buffer, *[np.asarray(w) for w in model.weights])
    return len(gzip.compress(buffer.getvalue(), compresslevel=9))


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Total and non-zero parameters of all weights (kernels, biases, BatchNorm)."""
    arrays = [np.asarray(w) for w in model.weights]
    return {
        "total": int(sum(a.size for a in arrays)),
        "nonzero": int(sum(np.count_nonzero(a) for a in arrays)),
    }


# --- reports ----------------------------------------------------------------------------------

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
