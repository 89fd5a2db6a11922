"""Checks for the exercises of notebooks/05_teaching_gradient_pruning.ipynb.

Each ``check_*`` calls the student's function on cases with known answers and raises an
``AssertionError`` that says what was wrong, or prints a short confirmation. The reference
answers are in ``notebooks/solutions/teaching_solutions.py``; the checks don't import them, so
a check can't pass by comparing a solution with itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_RNG_SEED = 1234


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(_RNG_SEED)
    scores = [
        rng.random((6, 4)),
        np.abs(rng.normal(size=(3, 3, 2, 5))) * 1e-3,
        np.array([0.0, 0.0, 1e-9, 2.0]),
    ]
    scores[0][0, :] = 0.0  # a dead row: exact zeros
    return scores


def _ok(name: str) -> None:
    print(f"✓ {name}: correct")


def check_prune_mask(prune_mask: Callable[[np.ndarray, float], np.ndarray]) -> None:
    """Exercise 1: keep-mask of the ε rule: True where mean |g| >= ε, False where it is below."""
    for scores in _cases():
        for epsilon in (0.0, 1e-9, float(np.median(scores)), 10.0):
            got = prune_mask(scores, epsilon)
            assert got is not None, "prune_mask returned None: replace the placeholder with your code"
            got = np.asarray(got)
            assert got.shape == scores.shape, (
                f"mask shape {got.shape} should equal the scores' {scores.shape}"
            )
            assert got.dtype == bool, f"mask should be boolean (True = keep), got dtype {got.dtype}"
            wrong = int((got != (scores >= epsilon)).sum())
            assert wrong == 0, (
                f"ε={epsilon:g}: {wrong} entries wrong; keep where score >= ε, prune where below"
            )
    _ok("prune_mask")


def check_sparsity(sparsity: Callable[[np.ndarray], float]) -> None:
    """Exercise 2: the fraction of a mask that is pruned (False), in [0, 1]."""
    for keep, expected in (
        (np.array([True, False, False, True]), 0.5),
        (np.ones((3, 3), bool), 0.0),
        (np.eye(4, dtype=bool), 0.75),
    ):
        got = sparsity(keep)
        assert got is not None, "sparsity returned None: replace the placeholder with your code"
        assert np.isclose(got, expected), f"sparsity of {keep.astype(int).tolist()} is {expected}, got {got}"
    _ok("sparsity")


def check_epsilon_for_sparsity(epsilon_for: Callable[[np.ndarray, float], float]) -> None:
    """Exercise 3: the ε that prunes (about) a target fraction of distinct scores."""
    scores = np.random.default_rng(_RNG_SEED).random(1000)
    for target in (0.1, 0.5, 0.9):
        epsilon = epsilon_for(scores, target)
        assert epsilon is not None, "epsilon_for returned None: replace the placeholder with your code"
        pruned = float((scores < epsilon).mean())
        assert abs(pruned - target) <= 0.002, (
            f"ε={epsilon:.4g} prunes {pruned:.3f} of the scores, wanted {target}"
        )
    _ok("epsilon_for_sparsity")


def check_clipping_prunes_nothing(clip_and_count: Callable[[np.ndarray, float], int]) -> None:
    """Exercise 4: clip gradients to [-c, c] and count how many became exactly zero (none did)."""
    grads = np.random.default_rng(_RNG_SEED).normal(size=500)
    grads[:7] = 0.0  # already zero before clipping
    got = clip_and_count(grads, 0.1)
    assert got is not None, "clip_and_count returned None: replace the placeholder with your code"
    assert got == 0, (
        f"you counted {got}; clipping bounds large gradients but sets none to zero, so the count of "
        "gradients that *became* zero is 0 (compare zeros after clipping with zeros before)"
    )
    _ok("clip_and_count")


def check_dead_units(dead_units: Callable[[np.ndarray], np.ndarray]) -> None:
    """Exercise 5: indices of units (columns of a Dense kernel's gradient) whose gradient is all zero."""
    grads = np.random.default_rng(_RNG_SEED).normal(size=(10, 6))
    grads[:, [1, 4]] = 0.0
    grads[3, 2] = 0.0  # one zero weight does not make a unit dead
    got = dead_units(grads)
    assert got is not None, "dead_units returned None: replace the placeholder with your code"
    assert sorted(np.asarray(got).tolist()) == [1, 4], (
        f"the dead units are [1, 4], got {sorted(np.asarray(got).tolist())}"
    )
    _ok("dead_units")
