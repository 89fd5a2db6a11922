"""Immediate hints for the exercises of lesson 05: teaching aids, never a grade.

A hint draws fresh random cases on each call and says what kind of mistake it sees, never the
expected value. It holds no function that computes an exercise's answer from the exercise's
inputs: every case is built so that its answer is known by construction (a mask with a chosen
number of pruned entries, a kernel whose filter scores were chosen first), or is checked by a
property of the answer (every kept score is at least ε). Calling into this module, in a thread or
through ``exec`` of its source, therefore yields no answer to hand in.

Grades come from the teacher's side: nbgrader re-executes each submitted notebook with hidden
tests the student never had (``workbench.course.grading``), so nothing a student's kernel records
or prints is trusted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np


class CheckFailed(AssertionError):
    """A hint found a wrong answer; its message is all the student needs to see."""


def show_failures_as_messages() -> None:
    """In IPython, show a ``CheckFailed`` as one red line, without the traceback and its source."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((CheckFailed,), _one_line)


def _one_line(shell, etype, value, tb, tb_offset=None) -> list[str]:
    """IPython's handler for ``CheckFailed``: it must show the error itself (IPython 9 ignores the return)."""
    lines = [f"\x1b[31m✗ {value}\x1b[0m"]
    shell._showtraceback(etype, value, lines)  # the kernel sends this as the cell's error output
    return lines


def _fail(message: str) -> None:
    raise CheckFailed(message)


def _call(name: str, function: Callable, *args):
    """Call the student's function; fail, as the student's mistake, on None, placeholders and errors."""
    if not callable(function):
        _fail(f"{name} should be a function, got {type(function).__name__}")
    try:
        result = function(*args)
    except NotImplementedError:
        _fail(f"{name} is not written yet: replace `raise NotImplementedError` with your code")
    except Exception as err:  # the student's bug, reported as theirs
        _fail(f"{name} raised {type(err).__name__}: {err}")
    if result is None:
        _fail(f"{name} returned None: did you forget `return`?")
    return result


def _returns(expected: str) -> Callable:
    """Make a hint fail in one line when the student's function returns a value it cannot use."""

    def decorate(check: Callable) -> Callable:
        @functools.wraps(check)
        def checked(answer, *args, **kwargs):
            try:
                check(answer, *args, **kwargs)
            except CheckFailed:
                raise
            except Exception as error:  # a result of the wrong type met the hint's arithmetic
                name = getattr(answer, "__name__", "your function")
                raise CheckFailed(
                    f"{name} returned something the check cannot use ({type(error).__name__}); "
                    f"it should return {expected}"
                ) from None
            print(f"✓ {getattr(answer, '__name__', 'answer')}: no mistake found on fresh cases")

        return checked

    return decorate


def _fresh_rng() -> np.random.Generator:
    return np.random.default_rng()  # new entropy each call: no case can be memorised


# --- exercises 1-3: warm-ups ------------------------------------------------------------------


def _score_cases(rng: np.random.Generator) -> list[np.ndarray]:
    """Mean-|g|-like scores: log-spread magnitudes, a dead unit (exact zeros) and ties."""
    dense = 10.0 ** rng.uniform(-7, -1, size=(int(rng.integers(5, 12)), int(rng.integers(3, 8))))
    dense[:, int(rng.integers(dense.shape[1]))] = 0.0
    conv = 10.0 ** rng.uniform(-6, -2, size=(3, 3, int(rng.integers(1, 4)), int(rng.integers(2, 6))))
    ties = np.repeat(rng.random(4), 3)
    return [dense, conv, ties]


@_returns("a boolean array of the scores' shape")
def check_prune_mask(prune_mask: Callable[[np.ndarray, float], np.ndarray]) -> None:
    """Exercise 1: a keep-mask must keep every score >= ε and prune every other (a property check)."""
    rng = _fresh_rng()
    for scores in _score_cases(rng):
        for epsilon in (0.0, float(rng.choice(scores.ravel())), float(np.median(scores)) * 1.5):
            got = np.asarray(_call("prune_mask", prune_mask, scores.copy(), epsilon))
            if got.shape != scores.shape:
                _fail(f"the mask's shape is {got.shape}; it should be the shape of the scores it was given")
            if got.dtype != bool:
                _fail(f"the mask should be boolean (True = keep), got dtype {got.dtype}")
            _mask_properties(scores, epsilon, got)


def _mask_properties(scores: np.ndarray, epsilon: float, kept: np.ndarray) -> None:
    wrong = (~kept & (scores >= epsilon)) | (kept & (scores < epsilon))
    if not wrong.any():
        return
    if (scores[wrong] == epsilon).all():
        _fail("a score exactly equal to ε should be kept (keep where score >= ε)")
    if (kept == (scores < epsilon)).all():
        _fail("the mask is inverted: True should mean *keep*")
    _fail(f"{int(wrong.sum())} of {wrong.size} entries are wrong on a hidden case; keep where score >= ε")


@_returns("one number")
def check_sparsity(sparsity: Callable[[np.ndarray], float]) -> None:
    """Exercise 2: masks built with a chosen number of pruned entries, so the answer is known."""
    rng = _fresh_rng()
    for shape in ((int(rng.integers(4, 40)),), (3, 3, 2, int(rng.integers(2, 9)))):
        size = int(np.prod(shape))
        pruned = int(rng.integers(1, size))
        if 2 * pruned == size:  # kept == pruned would let "fraction kept" pass
            pruned += 1
        keep = np.ones(size, bool)
        keep[rng.choice(size, pruned, replace=False)] = False
        got = _call("sparsity", sparsity, keep.reshape(shape))
        if isinstance(got, str | bytes):
            raise TypeError("text is not a number")  # _returns turns this into the one-line hint
        if np.ndim(got) != 0:
            _fail(f"sparsity should return one number, got an array of shape {np.shape(got)}")
        if np.isclose(float(got), (size - pruned) / size):
            _fail("that is the fraction *kept*; sparsity is the fraction pruned")
        if not np.isclose(float(got), pruned / size):
            _fail("wrong on a hidden mask: count the False entries and divide by the mask's size")


@_returns("one number, the ε")
def check_epsilon_for(epsilon_for: Callable[[np.ndarray, float], float]) -> None:
    """Exercise 3: the ε must prune (within one score) the target fraction: a measured property."""
    rng = _fresh_rng()
    scores = 10.0 ** rng.uniform(-8, -1, size=int(rng.integers(300, 2000)))
    for target in sorted(rng.uniform(0.05, 0.95, size=3)):
        epsilon = _call("epsilon_for", epsilon_for, scores.copy(), float(target))
        pruned = float((scores < float(epsilon)).mean())
        if abs(pruned - target) > 1.5 / len(scores) + 1e-9:
            hint = " (is it 1 - target?)" if abs(pruned - (1 - target)) < 0.01 else ""
            _fail(f"your ε prunes {pruned:.0%} of a hidden set of scores instead of {target:.0%}{hint}")


# --- exercise 4: a Conv2D kernel ---------------------------------------------------------------


def _kernel_with_known_filter_scores(rng: np.random.Generator):
    """A kernel, its mean |g| and each filter's score, chosen first: products are drawn per filter,
    scaled to sum to that filter's score, then split into a signed weight and a gradient."""
    shape = (int(rng.choice([1, 3, 5])),) * 2 + (int(rng.integers(1, 5)), int(rng.integers(2, 9)))
    totals = 10.0 ** rng.uniform(-4, -1, size=shape[-1])
    products = rng.random(shape) + 0.05
    products *= totals / products.sum(axis=(0, 1, 2))
    size = 10.0 ** rng.uniform(-2, 0, size=shape)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    sign[0, 0, 0, :] = -1.0  # every filter has a negative weight to cancel
    return sign * size, products / size, totals


@_returns("an array of numbers, one per filter")
def check_filter_scores(filter_scores: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Exercise 4: one SNIP score per filter, on kernels whose filter scores were chosen first."""
    rng = _fresh_rng()
    for _ in range(3):
        kernel, grads, totals = _kernel_with_known_filter_scores(rng)
        got = np.asarray(_call("filter_scores", filter_scores, kernel.copy(), grads.copy()), float)
        if got.shape != totals.shape:
            _fail(
                f"for a kernel of shape {kernel.shape} (height, width, in, filters) expected one score "
                f"per filter, shape ({kernel.shape[-1]},); got {got.shape}"
            )
        if np.allclose(got, totals, rtol=1e-6):
            continue
        if np.allclose(got, (kernel * grads).sum(axis=(0, 1, 2)), rtol=1e-6):  # the signed sum
            _fail("take |w| before multiplying: negative weights must not cancel positive ones")
        _fail("wrong on a hidden kernel: multiply |w| by mean |g|, then sum over all but the last axis")


# --- exercises 5-6: the phantom CNN ------------------------------------------------------------


def _check_report_shape(name: str, got) -> None:
    if not isinstance(got, dict) or not {"sparsity", "sensitivity", "specificity"} <= set(got):
        _fail(f"{name} should return a dict with keys 'sparsity', 'sensitivity' and 'specificity'")
    if not all(0.0 <= float(got[key]) <= 1.0 for key in ("sparsity", "sensitivity", "specificity")):
        _fail(f"{name}: sparsity, sensitivity and specificity are fractions, between 0 and 1")


def _flat(scores: dict) -> np.ndarray:
    return np.concatenate([np.ravel(s) for s in scores.values()])


def _pruned_fraction(scores: dict, epsilon: float) -> float:
    return float((_flat(scores) < epsilon).mean())


@_returns("a dict of numbers: 'sparsity', 'sensitivity', 'specificity'")
def check_prune_and_report(prune_and_report: Callable, model, scores: dict, images, labels) -> None:
    """Exercise 5: the report's form and its sparsity at a hidden ε (the rates are graded by your teacher)."""
    rng, flat = _fresh_rng(), _flat(scores)
    epsilon = float(np.quantile(flat[flat > 0], rng.uniform(0.4, 0.9)))
    got = _call("prune_and_report", prune_and_report, model, scores, epsilon, images, labels)
    _check_report_shape("prune_and_report", got)
    if not np.isclose(float(got["sparsity"]), _pruned_fraction(scores, epsilon), atol=1e-3):
        _fail("prune_and_report: 'sparsity' is wrong at a hidden ε: the share of all kernel weights pruned")


@_returns("a dict of reports, one per criterion")
def check_equal_sparsity(equal_sparsity: Callable, model, scores_by_criterion: dict, images, labels) -> None:
    """Exercise 6: one report per criterion, each at an ε that prunes the hidden target sparsity."""
    rng = _fresh_rng()
    zeros = max(float((_flat(s) == 0).mean()) for s in scores_by_criterion.values())
    target = float(rng.uniform(min(zeros + 0.05, 0.9), 0.95))
    got = _call("equal_sparsity", equal_sparsity, model, scores_by_criterion, target, images, labels)
    if not isinstance(got, dict) or set(got) != set(scores_by_criterion):
        _fail(f"equal_sparsity should return one report per criterion, keys {sorted(scores_by_criterion)}")
    for criterion, report in got.items():
        if not isinstance(report, dict) or "epsilon" not in report:
            _fail(f"equal_sparsity: the report for {criterion!r} needs the 'epsilon' you used")
        _check_report_shape(f"equal_sparsity[{criterion!r}]", report)
        reached = _pruned_fraction(scores_by_criterion[criterion], float(report["epsilon"]))
        if abs(reached - target) > 0.01:
            _fail(f"equal_sparsity: the ε of {criterion!r} doesn't prune the target sparsity it was given")


CHECKS: dict[str, Callable] = {
    "prune_mask": check_prune_mask,
    "sparsity": check_sparsity,
    "epsilon_for": check_epsilon_for,
    "filter_scores": check_filter_scores,
    "prune_and_report": check_prune_and_report,
    "equal_sparsity": check_equal_sparsity,
}
