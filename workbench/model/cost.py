"""What a model costs: theoretical FLOPs (dense, masked, slimmed), parameter counts, gzip bytes."""

from __future__ import annotations

import gzip
import io

import numpy as np

from workbench.core.masks import Masks
from workbench.model.compat import keras
from workbench.model.graph import flops as graph_flops


def flops(model: keras.Model, keep: Masks | None = None) -> dict[str, int]:
    """Theoretical forward FLOPs (2 per multiply-add) of the conv, depthwise and dense layers, per image.

    Returns ``dense`` (all weights), ``masked`` (only non-zero weights, i.e. ideal sparse
    kernels) and ``filter_pruned`` (what the slim model of a structured ``keep`` costs: kept
    input channels x kept units, traced through the channel graph, ``workbench.model.graph``).
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
