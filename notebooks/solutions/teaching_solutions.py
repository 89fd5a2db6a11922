"""Reference solutions for the exercises of 05_teaching_gradient_pruning.ipynb.

For teachers: students should try first. The notebook loads this file only when run with
``solutions=True`` (which is how the test suite checks that the exercises are solvable).
"""

import numpy as np


def prune_mask(mean_abs_grad: np.ndarray, epsilon: float) -> np.ndarray:
    """Exercise 1: keep a weight when its mean |dL/dw| is at least ε."""
    return mean_abs_grad >= epsilon


def sparsity(keep: np.ndarray) -> float:
    """Exercise 2: the pruned fraction."""
    return 1.0 - float(np.mean(keep))


def epsilon_for(scores: np.ndarray, target: float) -> float:
    """Exercise 3: the target-quantile of the scores prunes that fraction (for distinct scores)."""
    return float(np.quantile(scores, target))


def clip_and_count(grads: np.ndarray, c: float) -> int:
    """Exercise 4: clipping keeps every non-zero gradient non-zero."""
    clipped = np.clip(grads, -c, c)
    return int((clipped == 0).sum() - (grads == 0).sum())


def dead_units(grads: np.ndarray) -> np.ndarray:
    """Exercise 5: units whose every incoming weight has zero gradient."""
    return np.flatnonzero(np.all(grads == 0, axis=0))
