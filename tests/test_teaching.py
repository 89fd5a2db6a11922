"""Lesson 05's hints pass the teacher's solutions, name the mistake in wrong answers, never print a
value to copy, and hold no function that hands out an exercise's answer."""

from __future__ import annotations

import inspect
import re

import nbformat
import numpy as np
import pytest

import workbench as wb
from workbench.core.paths import PROJECT_ROOT
from workbench.course import exercises as hints
from workbench.model.registry import get_kernels

LESSON = (
    PROJECT_ROOT
    / "notebooks"
    / "teacher"
    / "source"
    / "pruning_lesson"
    / "05_teaching_gradient_pruning.ipynb"
)


@pytest.fixture(scope="module")
def solutions() -> dict:
    """The teacher's functions: every solution cell of lesson 05's source, executed."""
    namespace = {"np": np, "wb": wb}  # what the lesson's first cells import
    for cell in nbformat.read(LESSON, as_version=4).cells:
        if cell.metadata.get("nbgrader", {}).get("solution") and cell.cell_type == "code":
            exec(cell.source, namespace)
    return namespace


@pytest.fixture(scope="module")
def cnn_case(_trained_tiny_once, tiny_dataset):
    """What the lesson passes to exercises 5 and 6: a model, two scorings, test images and labels."""
    kernels = {name: np.abs(k) for name, k in get_kernels(_trained_tiny_once).items()}
    grads = {name: np.random.default_rng(1).random(k.shape) * (k > 0.01) for name, k in kernels.items()}
    scores = {"gradient": grads, "snip": {n: grads[n] * kernels[n] for n in grads}}
    return _trained_tiny_once, scores, tiny_dataset.test.images, tiny_dataset.test.labels


WARM_UPS = ["prune_mask", "sparsity", "epsilon_for", "filter_scores"]


@pytest.mark.parametrize("exercise", WARM_UPS)
def test_hint_PassesTheTeachersSolution_OnFreshCasesEveryTime(solutions, exercise, capsys):
    # Many draws: a rare random case that rejects a correct answer once made CI fail.
    for _ in range(300):
        hints.CHECKS[exercise](solutions[exercise])
    assert "✓" in capsys.readouterr().out


def test_cnn_hints_PassTheTeachersSolutions(solutions, cnn_case):
    model, scores, images, labels = cnn_case
    hints.check_prune_and_report(solutions["prune_and_report"], model, scores["snip"], images, labels)
    hints.check_equal_sparsity(solutions["equal_sparsity"], model, scores, images, labels)


# wrong answers: (exercise, answer, words the message must contain)
WRONG = [
    ("prune_mask", lambda s, e: s > e, "exactly equal to ε"),
    ("prune_mask", lambda s, e: s < e, "inverted"),
    ("prune_mask", lambda s, e: np.ones(s.shape, bool), "wrong"),
    ("prune_mask", lambda s, e: (s >= e).astype(int), "boolean"),
    ("sparsity", lambda keep: float(np.mean(keep)), "fraction *kept*"),
    ("sparsity", lambda keep: 0.4, "wrong on a hidden mask"),
    ("sparsity", lambda keep: 1 - keep.mean(axis=0), "one number"),
    ("epsilon_for", lambda s, t: float(np.quantile(s, 1 - t)), "1 - target"),
    ("epsilon_for", lambda s, t: 1e-3, "of a hidden set of scores instead of"),
    ("filter_scores", lambda k, g: (k * g).sum(axis=(0, 1, 2)), "|w|"),
    ("filter_scores", lambda k, g: float((np.abs(k) * g).sum()), "one score per filter"),
    ("filter_scores", lambda k, g: np.zeros(k.shape[-1]), "wrong on a hidden kernel"),
    ("filter_scores", lambda k, g: None, "returned None"),
]


@pytest.mark.parametrize(("exercise", "answer", "words"), WRONG)
def test_hint_FailsWrongAnswers_WithAHelpfulMessage_AndNoValueToCopy(exercise, answer, words):
    with pytest.raises(hints.CheckFailed, match=re.escape(words)) as failure:
        hints.CHECKS[exercise](answer)
    assert not re.search(r"\d\.\d", str(failure.value)), "a failure must not print a value to copy"


def test_cnn_hints_FailAWrongSparsity_AndAMalformedReport(solutions, cnn_case):
    model, scores, images, labels = cnn_case

    def half(model, scores, epsilon, images, labels):
        return {**solutions["prune_and_report"](model, scores, epsilon, images, labels), "sparsity": 0.5}

    for answer, words in (
        (half, "'sparsity' is wrong"),
        (lambda *a: {"sensitivity": 1.0}, "a dict with keys"),
    ):
        with pytest.raises(hints.CheckFailed, match=re.escape(words)):
            hints.check_prune_and_report(answer, model, scores["snip"], images, labels)


def test_equal_sparsity_hint_FailsAFixedSparsity(solutions, cnn_case):
    model, scores, images, labels = cnn_case

    def ignores_target(model, scores_by_criterion, target, images, labels):
        return solutions["equal_sparsity"](model, scores_by_criterion, 0.0, images, labels)

    for _ in range(3):  # the hidden target is at least 5 points above the exact zeros, never 0
        with pytest.raises(hints.CheckFailed, match="target sparsity"):
            hints.check_equal_sparsity(ignores_target, model, scores, images, labels)


def _exercise_inputs(rng, cnn_case):
    """One input of each exercise and its answer, from an independent computation."""
    scores = rng.random((6, 5))
    keep = rng.random((9, 4)) < 0.3
    kernel, grads = rng.normal(size=(3, 3, 2, 4)), rng.random((3, 3, 2, 4))
    model, by_criterion, images, labels = cnn_case
    snip = by_criterion["snip"]
    epsilon = float(np.median(np.concatenate([s.ravel() for s in snip.values()])))
    masks = {name: s >= epsilon for name, s in snip.items()}
    predicted = wb.apply_masks(model, masks).predict(images, verbose=0).argmax(axis=1)
    truth = np.asarray(labels).ravel()
    report = [(predicted[truth == 1] == 1).mean(), (predicted[truth == 0] == 0).mean()]
    return [
        ((scores, 0.5), scores >= 0.5),
        ((keep,), 1 - keep.sum() / keep.size),
        ((kernel, grads), np.einsum("hwio,hwio->o", np.abs(kernel), grads)),
        ((model, snip, epsilon, images, labels), np.array(report)),
    ]


def _as_array(got) -> np.ndarray:
    if isinstance(got, dict):  # a report: its two rates
        got = [got.get("sensitivity"), got.get("specificity")]
    return np.asarray(got)


def test_hints_HoldNoFunctionThatReturnsAnAnswer(cnn_case):
    """The old checker's reference (_report), called in a thread or exec'd from its source, handed
    out exercise 5's answer."""
    namespace = {}
    exec(inspect.getsource(hints), namespace)  # every function the source defines, private ones too
    functions = [f for f in namespace.values() if inspect.isfunction(f)]
    assert len(functions) > 10
    for args, answer in _exercise_inputs(np.random.default_rng(0), cnn_case):
        for function in functions:
            try:
                got = _as_array(function(*args))
            except Exception:
                continue
            if got.dtype.kind not in "biuf":
                continue
            assert not (got.shape == np.shape(answer) and np.allclose(got, answer)), function.__name__


def test_hint_AnUnwrittenExercise_SaysNotWrittenYet():
    def placeholder(scores, epsilon):
        raise NotImplementedError()

    with pytest.raises(hints.CheckFailed, match="not written yet"):
        hints.check_prune_mask(placeholder)


def test_failure_display_ShowsTheMessageOnly_NotTheSource():
    from IPython.core.interactiveshell import InteractiveShell

    shown = []
    shell = InteractiveShell.instance()
    shell._showtraceback = lambda etype, value, lines: shown.append(lines)
    hints.show_failures_as_messages()
    shell.run_cell(
        "from workbench.course import exercises as hints\nhints.check_prune_mask(lambda s, e: s < e)"
    )
    assert len(shown) == 1 and len(shown[0]) == 1
    assert "mask is inverted" in shown[0][0] and "check_prune_mask" not in shown[0][0]


def test_hints_AResultOfTheWrongType_FailsInOneLine_WithoutATraceback():
    def sparsity(keep):
        return "0.5"

    def filter_scores(kernel, grads):
        return ["x"] * kernel.shape[-1]

    with pytest.raises(
        hints.CheckFailed, match="sparsity returned something the check cannot use.*one number"
    ):
        hints.check_sparsity(sparsity)
    with pytest.raises(hints.CheckFailed, match="filter_scores returned something") as raised:
        hints.check_filter_scores(filter_scores)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
