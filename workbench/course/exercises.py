"""Checks for the exercises of lesson 05, and the record of each student's work.

Every check draws fresh random cases on each call and compares the student's function with an
answer computed here, so a constant or a copied printout can't pass. A failure says what kind
of mistake it is, never the expected value, and raises ``CheckFailed``, which a notebook shows
as its message alone (see ``show_failures_as_messages``) so that the check's source stays out of
sight. A student's function that calls back into this module fails: the checker is not an
answer key.

``Lab`` runs the checks and writes each student's results to a JSON file the teacher collects;
``workbench.course.classroom`` turns a folder of them into one table.
"""

from __future__ import annotations

import datetime
import functools
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.fs import write_atomically

RESULTS_MIME = "application/vnd.workbench.lab+json"
MIN_WORDS = 15  # a written answer shorter than this is not an answer yet


class CheckFailed(AssertionError):
    """A check found a wrong answer; its message is all the student needs to see."""


class _CalledTheChecker(Exception):
    """The student's function entered this module."""


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


# --- calling the student's code ----------------------------------------------------------------


def _call(name: str, function: Callable, *args):
    """Call the student's function; fail on None, NotImplementedError, errors and calls into here."""
    if not callable(function):
        _fail(f"{name} should be a function, got {type(function).__name__}")
    try:
        result = _without_checker(function, *args)
    except _CalledTheChecker:
        result = _CalledTheChecker
    except NotImplementedError:
        _fail(f"{name} is not written yet: replace `raise NotImplementedError` with your code")
    except Exception as err:  # the student's bug, reported as theirs
        _fail(f"{name} raised {type(err).__name__}: {err}")
    if result is _CalledTheChecker:
        _fail(f"{name} calls into workbench.course.exercises; write the computation yourself")
    if result is None:
        _fail(f"{name} returned None: did you forget `return`?")
    return result


def _without_checker(function: Callable, *args):
    """Run ``function`` with a profiler that stops it if it calls any function of this module."""
    here = __file__
    previous = sys.getprofile()

    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == here:
            sys.setprofile(previous)
            raise _CalledTheChecker

    sys.setprofile(watch)
    try:
        return function(*args)
    finally:
        sys.setprofile(previous)


def _fail(message: str) -> None:
    raise CheckFailed(message)


def _returns(expected: str) -> Callable:
    """Make a check fail with one line, not a traceback through this module (which would show the
    reference computation), when the student's function returns a value the check cannot use."""

    def decorate(check: Callable) -> Callable:
        @functools.wraps(check)
        def checked(answer, *args, **kwargs):
            try:
                return check(answer, *args, **kwargs)
            except CheckFailed:
                raise
            except Exception as error:  # a result of the wrong type met the reference's arithmetic
                name = getattr(answer, "__name__", "your function")
                raise CheckFailed(
                    f"{name} returned something the check cannot use ({type(error).__name__}); "
                    f"it should return {expected}"
                ) from None

        return checked

    return decorate


def _fresh_rng() -> np.random.Generator:
    return np.random.default_rng()  # new entropy each call: no case can be memorised


# --- exercise 1-3: warm-ups ------------------------------------------------------------------


def _score_cases(rng: np.random.Generator) -> list[np.ndarray]:
    """Mean-|g|-like scores: log-spread magnitudes, a dead unit (exact zeros) and ties."""
    dense = 10.0 ** rng.uniform(-7, -1, size=(int(rng.integers(5, 12)), int(rng.integers(3, 8))))
    dense[:, int(rng.integers(dense.shape[1]))] = 0.0
    conv = 10.0 ** rng.uniform(-6, -2, size=(3, 3, int(rng.integers(1, 4)), int(rng.integers(2, 6))))
    ties = np.repeat(rng.random(4), 3)
    return [dense, conv, ties]


@_returns("a boolean array of the scores' shape")
def check_prune_mask(prune_mask: Callable[[np.ndarray, float], np.ndarray]) -> None:
    """Exercise 1: the keep-mask of the ε rule (True = keep, where the score is at least ε)."""
    rng = _fresh_rng()
    for scores in _score_cases(rng):
        for epsilon in (0.0, float(rng.choice(scores.ravel())), float(np.median(scores)) * 1.5):
            got = np.asarray(_call("prune_mask", prune_mask, scores.copy(), epsilon))
            if got.shape != scores.shape:
                _fail(f"the mask's shape is {got.shape}; it should be the shape of the scores it was given")
            if got.dtype != bool:
                _fail(f"the mask should be boolean (True = keep), got dtype {got.dtype}")
            wrong = got != (scores >= epsilon)
            if wrong.any():
                _fail(_mask_hint(scores, epsilon, got, wrong))


def _mask_hint(scores, epsilon, got, wrong) -> str:
    if (scores[wrong] == epsilon).all():
        return "a score exactly equal to ε should be kept (keep where score >= ε)"
    if (got == (scores < epsilon)).all():
        return "the mask is inverted: True should mean *keep*"
    return f"{int(wrong.sum())} of {wrong.size} entries are wrong on a hidden case; keep where score >= ε"


@_returns("one number")
def check_sparsity(sparsity: Callable[[np.ndarray], float]) -> None:
    """Exercise 2: the fraction of a keep-mask that is pruned (False), in [0, 1]."""
    rng = _fresh_rng()
    for shape in ((int(rng.integers(3, 40)),), (3, 3, 2, int(rng.integers(2, 9)))):
        keep = rng.random(shape) < rng.uniform(0.1, 0.9)
        if keep.mean() == 0.5:  # kept == pruned would let "fraction kept" pass
            keep.flat[0] = not keep.flat[0]
        got = _call("sparsity", sparsity, keep.copy())
        expected = 1.0 - keep.mean()
        if not np.isscalar(got) and np.ndim(got) != 0:
            _fail(f"sparsity should return one number, got an array of shape {np.shape(got)}")
        if np.isclose(got, keep.mean()) and not np.isclose(got, expected):
            _fail("that is the fraction *kept*; sparsity is the fraction pruned")
        if not np.isclose(got, expected):
            _fail("wrong on a hidden mask: count the False entries and divide by the mask's size")


@_returns("one number, the ε")
def check_epsilon_for(epsilon_for: Callable[[np.ndarray, float], float]) -> None:
    """Exercise 3: the ε that prunes (within one score) a target fraction of distinct scores."""
    rng = _fresh_rng()
    scores = 10.0 ** rng.uniform(-8, -1, size=int(rng.integers(300, 2000)))
    for target in sorted(rng.uniform(0.05, 0.95, size=3)):
        epsilon = _call("epsilon_for", epsilon_for, scores.copy(), float(target))
        pruned = float((scores < epsilon).mean())
        if abs(pruned - target) > 1.5 / len(scores) + 1e-9:
            hint = " (is it 1 - target?)" if abs(pruned - (1 - target)) < 0.01 else ""
            _fail(f"your ε prunes {pruned:.0%} of a hidden set of scores instead of {target:.0%}{hint}")


# --- exercise 4: a Conv2D kernel ---------------------------------------------------------------


@_returns("an array of numbers, one per filter")
def check_filter_scores(filter_scores: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Exercise 4: one SNIP score per filter of a Conv2D kernel: Σ |w|·mean|g| over (h, w, in)."""
    rng = _fresh_rng()
    for _ in range(3):
        shape = (int(rng.choice([1, 3, 5])),) * 2 + (int(rng.integers(1, 5)), int(rng.integers(2, 9)))
        kernel, grads = rng.normal(size=shape), 10.0 ** rng.uniform(-6, -2, size=shape)
        kernel[0, 0, 0, :] = -np.abs(kernel[0, 0, 0, :])  # every filter has a negative weight to cancel
        got = np.asarray(_call("filter_scores", filter_scores, kernel.copy(), grads.copy()))
        expected = np.einsum("hwio,hwio->o", np.abs(kernel), grads)
        if got.shape != expected.shape:
            _fail(
                f"for a kernel of shape {shape} (height, width, in, filters) expected one score per "
                f"filter, shape ({shape[-1]},); got {got.shape}"
            )
        if np.allclose(got, expected, rtol=1e-6):
            continue
        if np.allclose(got, np.einsum("hwio,hwio->o", kernel, grads)):
            _fail("take |w| before multiplying: negative weights must not cancel positive ones")
        _fail("wrong on a hidden kernel: multiply |w| by mean |g|, then sum over all but the last axis")


# --- exercises 5-6: the phantom CNN ------------------------------------------------------------


def _report(model, scores: dict, epsilon: float, images, labels) -> dict:
    """The reference: prune every layer at one ε, predict, and count sensitivity/specificity."""
    from workbench.core.metrics import clinical_metrics
    from workbench.prune.pruning import apply_masks

    keep = {name: s >= epsilon for name, s in scores.items()}
    probs = apply_masks(model, keep).predict(images, verbose=0)
    metrics = clinical_metrics(probs, labels)
    pruned = sum(int((~k).sum()) for k in keep.values()) / sum(k.size for k in keep.values())
    return {"sparsity": pruned, "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"]}


def _check_report(name: str, got, expected: dict) -> None:
    if not isinstance(got, dict) or not {"sparsity", "sensitivity", "specificity"} <= set(got):
        _fail(f"{name} should return a dict with keys 'sparsity', 'sensitivity' and 'specificity'")
    for key in ("sparsity", "sensitivity", "specificity"):
        if not np.isclose(float(got[key]), expected[key], atol=0.011):
            swapped = key != "sparsity" and np.isclose(float(got[key]), 1 - expected[key], atol=0.011)
            hint = " (sensitivity = found lesions / all lesions; specificity = cleared healthy / all healthy)"
            _fail(f"{name}: '{key}' is wrong at a hidden ε" + (hint if swapped or key != "sparsity" else ""))


def _flat(scores: dict) -> np.ndarray:
    return np.concatenate([s.ravel() for s in scores.values()])


@_returns("a dict of numbers: 'sparsity', 'sensitivity', 'specificity'")
def check_prune_and_report(prune_and_report: Callable, model, scores: dict, images, labels) -> None:
    """Exercise 5: prune the CNN at one global ε and report sparsity, sensitivity and specificity."""
    rng, flat = _fresh_rng(), _flat(scores)
    for quantile in (rng.uniform(0.4, 0.7), rng.uniform(0.8, 0.97)):
        epsilon = float(np.quantile(flat[flat > 0], quantile))
        got = _call("prune_and_report", prune_and_report, model, scores, epsilon, images, labels)
        _check_report("prune_and_report", got, _report(model, scores, epsilon, images, labels))


@_returns("a dict of reports, one per criterion")
def check_equal_sparsity(equal_sparsity: Callable, model, scores_by_criterion: dict, images, labels) -> None:
    """Exercise 6: each criterion's report at the ε that prunes one target sparsity."""
    rng = _fresh_rng()
    zeros = max(float((_flat(s) == 0).mean()) for s in scores_by_criterion.values())
    target = float(rng.uniform(min(zeros + 0.05, 0.9), 0.95))
    got = _call("equal_sparsity", equal_sparsity, model, scores_by_criterion, target, images, labels)
    if not isinstance(got, dict) or set(got) != set(scores_by_criterion):
        _fail(f"equal_sparsity should return one report per criterion, keys {sorted(scores_by_criterion)}")
    for criterion, report in got.items():
        if not isinstance(report, dict) or "epsilon" not in report:
            _fail(f"equal_sparsity: the report for {criterion!r} needs the 'epsilon' you used")
        expected = _report(model, scores_by_criterion[criterion], float(report["epsilon"]), images, labels)
        if abs(expected["sparsity"] - target) > 0.01:
            _fail(f"equal_sparsity: the ε of {criterion!r} doesn't prune the target sparsity it was given")
        _check_report(f"equal_sparsity[{criterion!r}]", report, expected)


# --- the record a teacher collects -------------------------------------------------------------

CHECKS: dict[str, Callable] = {
    "prune_mask": check_prune_mask,
    "sparsity": check_sparsity,
    "epsilon_for": check_epsilon_for,
    "filter_scores": check_filter_scores,
    "prune_and_report": check_prune_and_report,
    "equal_sparsity": check_equal_sparsity,
}


def is_lab_record(record) -> bool:
    """Whether ``record`` has a lab record's shape: its checks and answers map names to entries."""
    return isinstance(record, dict) and all(
        isinstance(record.get(section, {}), dict)
        and all(isinstance(entry, dict) for entry in record.get(section, {}).values())
        for section in ("checks", "answers")
    )


def _previous_record(path: Path, lesson: str) -> dict:
    """The record already in ``path``, or ValueError if it is not this lesson's: never overwritten."""
    try:
        previous = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WorkbenchError(
            f"results_path {path} exists but is not a lab record ({error}); it is left as it is: "
            "move it away or give another results_path"
        ) from None
    if not is_lab_record(previous):
        raise WorkbenchError(f"results_path {path} exists but is not a lab record; it is left as it is")
    if previous.get("lesson") != lesson:
        raise WorkbenchError(
            f"results_path {path} holds the record of lesson {previous.get('lesson')!r}, not {lesson!r}: "
            "give each lesson its own file"
        )
    return previous


def _check_same_student(path: Path, previous: dict, student: str) -> None:
    """Refuse to carry one student's record over into another's (it was rewritten under the new name)."""
    earlier = previous.get("student")
    if earlier and earlier != student:
        raise WorkbenchError(
            f"results_path {path} holds the record of student {earlier!r}, not {student!r}; it is left as "
            f"it is: give each student their own file (or student={earlier!r} to go on with it)"
        )


class Lab:
    """One student's session: runs checks, keeps answers, and saves both to ``results_path``.

    The file is rewritten after every check and answer, so the teacher's copy is never older
    than the student's last step. ``student`` defaults to the login name.
    """

    def __init__(self, lesson: str, results_path: str | Path, student: str = ""):
        self.path = Path(results_path)
        if self.path.suffix != ".json":
            raise WorkbenchError(f"results_path must end in .json, got {str(results_path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.record = {"lesson": lesson, "student": student or getpass.getuser(), "checks": {}, "answers": {}}
        if self.path.is_file():  # a re-run keeps what was done before
            previous = _previous_record(self.path, lesson)
            _check_same_student(self.path, previous, self.record["student"])
            self.record["checks"].update(previous.get("checks", {}))
            self.record["answers"].update(previous.get("answers", {}))
        show_failures_as_messages()

    def check(self, exercise: str, answer: Callable, **context) -> None:
        """Run the check of ``exercise`` on the student's function; record pass or fail."""
        if exercise not in CHECKS:
            raise WorkbenchError(f"exercise must be one of {sorted(CHECKS)}, got {exercise!r}")
        try:
            CHECKS[exercise](answer, **context)
        except CheckFailed as failure:
            self._save("checks", exercise, {"passed": False, "message": str(failure)})
            self._show(f"(recorded for your teacher: {exercise} not passed yet)")
            raise
        self._save("checks", exercise, {"passed": True})
        self._show(f"✓ {exercise}: correct")

    def answer(self, question: str, text: str) -> None:
        """Record a written answer; it must be at least ``MIN_WORDS`` words (the teacher reads it)."""
        text = str(text).strip()
        words = len(text.split())
        self._save("answers", question, {"text": text, "words": words})
        if words < MIN_WORDS:
            _fail(f"{question}: write at least {MIN_WORDS} words in your own words (you have {words})")
        self._show(f"✓ {question}: answer saved for your teacher")

    def _save(self, section: str, key: str, entry: dict) -> None:
        entry["at"] = datetime.datetime.now().isoformat(timespec="seconds")
        self.record[section][key] = entry
        write_atomically(self.path, json.dumps(self.record, indent=1, ensure_ascii=False))

    def _show(self, line: str) -> None:
        """Print the line; in a notebook, also attach the record so an executed notebook carries it."""
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            get_ipython = None
        if get_ipython is None or get_ipython() is None:
            print(line)
            return
        display({"text/plain": line, RESULTS_MIME: self.record}, raw=True)
