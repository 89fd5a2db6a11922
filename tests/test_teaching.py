"""The exercise checks pass the reference solutions and fail wrong answers with a useful message."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from workbench import teaching
from workbench.paths import PROJECT_ROOT


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location(
        "ref", PROJECT_ROOT / "notebooks/solutions/teaching_solutions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CHECKS = [
    ("check_prune_mask", "prune_mask", lambda s, e: s > e, "entries wrong"),  # > instead of >=
    ("check_sparsity", "sparsity", lambda keep: float(np.mean(keep)), "sparsity of"),  # kept, not pruned
    ("check_epsilon_for_sparsity", "epsilon_for", lambda s, t: float(np.quantile(s, 1 - t)), "prunes"),
    (
        "check_clipping_prunes_nothing",
        "clip_and_count",
        lambda g, c: int((np.clip(g, -c, c) == 0).sum()),
        "you counted 7",
    ),
    ("check_dead_units", "dead_units", lambda g: np.flatnonzero((g == 0).any(axis=0)), "the dead units are"),
]


@pytest.mark.parametrize(("check", "solution", "wrong", "message"), CHECKS, ids=[c[0] for c in CHECKS])
def test_check_PassesReference_FailsWrongAnswer_AndPlaceholder(
    reference, check, solution, wrong, message, capsys
):
    run = getattr(teaching, check)
    run(getattr(reference, solution))
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=message):
        run(wrong)
    with pytest.raises(AssertionError, match="returned None"):
        run(lambda *args: None)
