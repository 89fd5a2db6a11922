"""Lesson checks pass the teacher's solutions, fail wrong and gaming answers, and never leak the answer."""

from __future__ import annotations

import json
import re

import nbformat
import numpy as np
import pytest

import workbench as wb
from workbench.core.paths import PROJECT_ROOT
from workbench.course import exercises as teaching
from workbench.model.registry import get_kernels
from workbench.prune.pruning import apply_masks

LESSON = PROJECT_ROOT / "notebooks" / "05_teaching_gradient_pruning.ipynb"


@pytest.fixture(scope="module")
def solutions() -> dict:
    """The teacher's functions: every cell of lesson 05 that holds a marked solution, executed."""
    namespace = {"np": np, "wb": wb, "apply_masks": apply_masks}  # what the lesson's first cells import
    for cell in nbformat.read(LESSON, as_version=4).cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            exec(cell.source, namespace)
    return namespace


@pytest.fixture
def cnn_case(trained_tiny):
    """What the notebook passes to exercises 5 and 6: a model, two scorings, test images and labels."""
    model, data = trained_tiny
    kernels = {name: np.abs(k) for name, k in get_kernels(model).items()}
    grads = {name: np.random.default_rng(1).random(k.shape) * (k > 0.01) for name, k in kernels.items()}
    scores = {"gradient": grads, "snip": {n: grads[n] * kernels[n] for n in grads}}
    return model, scores, data.test.images, data.test.labels


WARM_UPS = ["prune_mask", "sparsity", "epsilon_for", "filter_scores"]


@pytest.mark.parametrize("exercise", WARM_UPS)
def test_check_PassesTheTeachersSolution_OnFreshCasesEveryTime(solutions, exercise):
    # Many draws: a rare random case that rejects a correct answer once made CI fail.
    for _ in range(500):
        teaching.CHECKS[exercise](solutions[exercise])


def test_cnn_checks_PassTheTeachersSolutions(solutions, cnn_case):
    model, scores, images, labels = cnn_case
    teaching.check_prune_and_report(solutions["prune_and_report"], model, scores["snip"], images, labels)
    teaching.check_equal_sparsity(solutions["equal_sparsity"], model, scores, images, labels)


# wrong and gaming answers: (exercise, answer, words the message must contain)
WRONG = [
    ("prune_mask", lambda s, e: s > e, "exactly equal to ε"),
    ("prune_mask", lambda s, e: s < e, "inverted"),
    ("prune_mask", lambda s, e: np.ones(s.shape, bool), "wrong"),
    ("prune_mask", lambda s, e: (s >= e).astype(int), "boolean"),
    (
        "prune_mask",
        lambda s, e: teaching._flat({"s": s}).reshape(s.shape) >= e,
        "calls into workbench.course.exercises",
    ),
    ("sparsity", lambda keep: float(np.mean(keep)), "fraction *kept*"),
    ("sparsity", lambda keep: 0.5, "wrong on a hidden mask"),
    ("sparsity", lambda keep: 1 - keep.mean(axis=0), "one number"),
    ("epsilon_for", lambda s, t: float(np.quantile(s, 1 - t)), "1 - target"),
    ("epsilon_for", lambda s, t: 1e-3, "of a hidden set of scores instead of"),
    ("filter_scores", lambda k, g: (k * g).sum(axis=(0, 1, 2)), "|w|"),
    ("filter_scores", lambda k, g: float((np.abs(k) * g).sum()), "one score per filter"),
    ("filter_scores", lambda k, g: np.zeros(k.shape[-1]), "wrong on a hidden kernel"),
    ("filter_scores", lambda k, g: None, "returned None"),
]


@pytest.mark.parametrize(("exercise", "answer", "words"), WRONG)
def test_check_FailsWrongOrGamingAnswers_WithAHelpfulMessage(exercise, answer, words):
    with pytest.raises(teaching.CheckFailed, match=re.escape(words)) as failure:
        teaching.CHECKS[exercise](answer)
    assert not re.search(r"\d\.\d", str(failure.value)), "a failure must not print a value to copy"


def _printed_answer(model, scores, epsilon, images, labels):
    return {"sparsity": 0.73, "sensitivity": 0.57, "specificity": 0.57}  # copied from a printout


def _swapped(solutions):
    def answer(*args):
        report = solutions["prune_and_report"](*args)
        return dict(report, sensitivity=report["specificity"], specificity=report["sensitivity"])

    return answer


def test_cnn_checks_FailConstants_SwappedRates_AndCallsIntoTheChecker(solutions, cnn_case):
    model, scores, images, labels = cnn_case
    for answer, words in (
        (_printed_answer, "is wrong at a hidden ε"),
        (lambda *args: teaching._report(*args), "calls into workbench.course.exercises"),
        (lambda *args: {"sensitivity": 1.0}, "a dict with keys"),
    ):
        with pytest.raises(teaching.CheckFailed, match=re.escape(words)):
            teaching.check_prune_and_report(answer, model, scores["snip"], images, labels)
    report = solutions["prune_and_report"](model, scores["snip"], 0.0, images, labels)
    if report["sensitivity"] != report["specificity"]:  # swapping is only visible when they differ
        with pytest.raises(teaching.CheckFailed):
            for _ in range(3):
                teaching.check_prune_and_report(_swapped(solutions), model, scores["snip"], images, labels)


def test_equal_sparsity_check_FailsAFixedSparsity(solutions, cnn_case):
    model, scores, images, labels = cnn_case

    def ignores_target(model, scores_by_criterion, target, images, labels):
        return solutions["equal_sparsity"](model, scores_by_criterion, 0.0, images, labels)

    for _ in range(3):  # the hidden target is at least 5 points above the exact zeros, never 0
        with pytest.raises(teaching.CheckFailed, match="target sparsity"):
            teaching.check_equal_sparsity(ignores_target, model, scores, images, labels)


def test_unwritten_exercise_FailsWithNotWrittenYet():
    def placeholder(scores, epsilon):
        raise NotImplementedError()

    with pytest.raises(teaching.CheckFailed, match="not written yet"):
        teaching.check_prune_mask(placeholder)


def test_failure_display_ShowsTheMessageOnly_NotTheSource():
    from IPython.core.interactiveshell import InteractiveShell

    shown = []
    shell = InteractiveShell.instance()
    shell._showtraceback = lambda etype, value, lines: shown.append(lines)
    teaching.show_failures_as_messages()
    shell.run_cell(
        "from workbench.course import exercises as teaching\nteaching.check_prune_mask(lambda s, e: s < e)"
    )
    assert len(shown) == 1 and len(shown[0]) == 1
    assert "mask is inverted" in shown[0][0] and "check_prune_mask" not in shown[0][0]


def test_lab_RecordsPassesFailuresAndAnswers_InItsFile(tmp_path, solutions):
    path = tmp_path / "alice" / "05.json"
    lab = teaching.Lab("05", path, student="alice")
    lab.check("sparsity", solutions["sparsity"])
    with pytest.raises(teaching.CheckFailed):
        lab.check("prune_mask", lambda s, e: s > e)
    with pytest.raises(teaching.CheckFailed, match="at least 15 words"):
        lab.answer("why", "because")
    lab.answer("why", "because " * 20)
    record = json.loads(path.read_text())
    assert record["student"] == "alice"
    assert record["checks"]["sparsity"]["passed"] and not record["checks"]["prune_mask"]["passed"]
    assert record["answers"]["why"]["words"] == 20
    again = teaching.Lab("05", path, student="alice")  # a re-run keeps the earlier work
    assert again.record["checks"]["sparsity"]["passed"]


def test_lab_RejectsUnknownExercise_AndNonJsonPath(tmp_path):
    with pytest.raises(ValueError, match="results_path"):
        teaching.Lab("05", tmp_path / "results.txt")
    with pytest.raises(ValueError, match="exercise must be one of"):
        teaching.Lab("05", tmp_path / "r.json").check("nope", lambda: 0)


def test_lab_FileOfAnotherLessonOrDamaged_IsRefused_AndLeftAsItIs(tmp_path):
    other = tmp_path / "results.json"
    teaching.Lab("05_teaching_gradient_pruning", other, student="alice").answer("why", "because " * 20)
    before = other.read_bytes()
    with pytest.raises(ValueError, match="holds the record of lesson '05_teaching_gradient_pruning'"):
        teaching.Lab("07_lab_worksheet", other)
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"lesson": "05", "checks": {')
    with pytest.raises(ValueError, match="damaged.json exists but is not a lab record"):
        teaching.Lab("05", damaged)
    assert other.read_bytes() == before and damaged.read_text() == '{"lesson": "05", "checks": {'


def test_checks_AResultOfTheWrongType_FailsInOneLine_WithoutTheReferencesTraceback():
    def sparsity(keep):
        return "0.5"

    def filter_scores(kernel, grads):
        return ["x"] * kernel.shape[-1]

    with pytest.raises(
        teaching.CheckFailed, match="sparsity returned something the check cannot use.*one number"
    ):
        teaching.check_sparsity(sparsity)
    with pytest.raises(teaching.CheckFailed, match="filter_scores returned something") as raised:
        teaching.check_filter_scores(filter_scores)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_lab_AFailedCheck_IsShownWithTheRecord_SoASavedNotebookCarriesIt(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(teaching.Lab, "_show", lambda self, line: shown.append((line, dict(self.record))))
    lab = teaching.Lab("05", tmp_path / "r.json", student="bob")
    with pytest.raises(teaching.CheckFailed):
        lab.check("sparsity", lambda keep: 0.5)
    assert shown and not shown[-1][1]["checks"]["sparsity"]["passed"]


def test_lab_FileOfAnotherStudent_IsRefused_AndLeftAsItIs(tmp_path):
    """Bob's Lab took over Ada's file: her checks were rewritten under his name."""
    shared = tmp_path / "results.json"
    teaching.Lab("05", shared, student="ada").answer("why", "because " * 20)
    before = shared.read_bytes()
    with pytest.raises(ValueError, match=r"holds the record of student 'ada', not 'bob'.*student='ada'"):
        teaching.Lab("05", shared, student="bob")
    assert shared.read_bytes() == before
    teaching.Lab("05", shared, student="ada").answer("how", "by " * 20)  # ada goes on with her own
