"""The lab graded the nbgrader way, headless, from the teacher's source notebooks:
generate -> release -> four students fetch and submit (correct, wrong, gaming, copied) -> collect
-> autograde -> the teacher's grades table.

One module-scoped course serves every assertion: autograding re-executes each submission (a
TensorFlow notebook), so it runs once, with small parameters.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from workbench.course import grading

pytestmark = pytest.mark.slow

LAB = "pruning_lesson"
NOTEBOOK = "05_teaching_gradient_pruning.ipynb"
SMALL = {"epochs": 1, "early_epochs": 1, "calibration_size": 64}
CODE_TESTS = {  # graded test cell -> its points in the teacher's source
    "test_prune_mask": 1,
    "test_sparsity": 1,
    "test_epsilon_for": 1,
    "test_filter_scores": 2,
    "test_prune_and_report": 3,
    "test_equal_sparsity": 3,
}


def set_parameters(path: Path, values: dict) -> None:
    """Give the parameters cell of the notebook at ``path`` these values (annotations kept)."""
    notebook = nbformat.read(path, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    for name, value in values.items():
        cell.source, found = re.subn(
            rf"^({name}: \w+ = )[^#]*", rf"\g<1>{value!r}  ", cell.source, flags=re.M
        )
        assert found == 1, name
    nbformat.write(notebook, path)


# --- what each student writes ------------------------------------------------------------------

WRONG = {
    "prune_mask": "def prune_mask(scores, epsilon):\n    return scores > epsilon\n",
    "sparsity": "def sparsity(keep):\n    return float(np.mean(keep))\n",
    "epsilon_for": "def epsilon_for(scores, target):\n    return float(np.quantile(scores, 1 - target))\n",
    "filter_scores": (
        "def filter_scores(kernel, mean_abs_grad):\n    return (kernel * mean_abs_grad).sum(axis=(0, 1, 2))\n"
    ),
    "prune_and_report": (
        "def prune_and_report(model, scores, epsilon, images, labels):\n"
        "    keep = {name: prune_mask(s, epsilon) for name, s in scores.items()}\n"
        "    predicted = wb.apply_masks(model, keep).predict(images, verbose=0).argmax(axis=1)\n"
        "    labels = np.asarray(labels).ravel()\n"
        "    return {'sparsity': sparsity(np.concatenate([k.ravel() for k in keep.values()])),\n"
        "            'sensitivity': float((predicted[labels == 0] == 0).mean()),  # swapped\n"
        "            'specificity': float((predicted[labels == 1] == 1).mean())}\n"
    ),
    "equal_sparsity": (
        "def equal_sparsity(model, scores_by_criterion, target, images, labels):\n"
        "    return {c: {'epsilon': 1e-6, **prune_and_report(model, s, 1e-6, images, labels)}\n"
        "            for c, s in scores_by_criterion.items()}\n"
    ),
}

# Routes that passed the student-side checks of the old lab (issue 28): each is tried here.
GAMING = {
    # a thread: run whatever reference the hints module holds, outside any guard of the main thread
    "prune_mask": (
        "import threading\n"
        "def prune_mask(scores, epsilon):\n"
        "    found = {}\n"
        "    def work():\n"
        "        for name in dir(hints):\n"
        "            try:\n"
        "                got = np.asarray(getattr(hints, name)(scores, epsilon))\n"
        "            except Exception:\n"
        "                continue\n"
        "            if got.dtype == bool and got.shape == scores.shape:\n"
        "                found.setdefault('mask', got)\n"
        "    thread = threading.Thread(target=work)\n"
        "    thread.start(); thread.join()\n"
        "    return found.get('mask', scores > epsilon)\n"
    ),
    # replacing a check: the hint is switched off, so a wrong answer shows no red line
    "sparsity": (
        "hints.check_sparsity = lambda answer: print('✓ sparsity')\n"
        "hints.CHECKS['sparsity'] = hints.check_sparsity\n"
        "def sparsity(keep):\n    return 0.5\n"
    ),
    # exec of a reference: the hints' source, run to find a computation to call
    "filter_scores": (
        "import inspect\n"
        "namespace = {}\n"
        "exec(inspect.getsource(hints), namespace)\n"
        "def filter_scores(kernel, mean_abs_grad):\n"
        "    for name, f in namespace.items():\n"
        "        if callable(f) and name.startswith('_') and 'filter' in name:\n"
        "            try:\n"
        "                return f(kernel, mean_abs_grad)\n"
        "            except Exception:\n"
        "                pass\n"
        "    return (kernel * mean_abs_grad).sum(axis=(0, 1, 2))\n"
    ),
    "epsilon_for": "def epsilon_for(scores, target):\n    return 1e-3\n",
    "prune_and_report": WRONG["prune_and_report"],
    # editing a record: a results file claiming every check passed
    "equal_sparsity": (
        "import json, os\n"
        "os.makedirs('results', exist_ok=True)\n"
        "record = {'checks': {n: {'passed': True} for n in hints.CHECKS}}\n"
        "json.dump(record, open('results/05_lesson.json', 'w'))\n" + WRONG["equal_sparsity"]
    ),
}


def _fill(notebook, answers: dict, why: str, edited_tests: dict | None = None) -> None:
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
        elif grade_id == "why":
            cell.source = why
        elif grade_id in (edited_tests or {}):
            cell.source = edited_tests[grade_id]  # a locked test cell, edited: nbgrader puts it back


def _teachers_solutions(source: Path) -> dict:
    cells = nbformat.read(source, as_version=4).cells
    return {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in cells
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")
    }


WHY = "Removing a weight costs about g times w, and |g| ignores the size of the weight, so SNIP ranks better."


def _write_submissions(homes: Path, source: Path) -> None:
    released = homes / "ada" / LAB / NOTEBOOK
    for student, answers, edited in (
        ("ada", _teachers_solutions(source), None),
        ("bob", WRONG, None),
        ("cy", GAMING, {"test_epsilon_for": "print('✓ epsilon_for: correct')"}),
    ):
        path = homes / student / LAB / NOTEBOOK
        notebook = nbformat.read(path, as_version=4)
        _fill(notebook, answers, WHY, edited)
        nbformat.write(notebook, path)
    copied = released.read_text().replace("return scores >= epsilon", "return scores >= epsilon ")
    (homes / "dee" / LAB / NOTEBOOK).write_text(copied)  # ada's work, one space added


def _student_api(course: grading.Course, home: Path, student: str):
    from nbgrader.apps import NbGraderAPI

    config = course.config()
    config.Exchange.assignment_dir = str(home)
    config.CourseDirectory.student_id = student
    api = NbGraderAPI(config=config)
    api.coursedir.assignment_id = LAB
    return api


def _exchange(api, action: str) -> None:
    app = getattr(api.exchange, action)(coursedir=api.coursedir, authenticator=api.authenticator, parent=api)
    app.start()


@pytest.fixture(scope="module")
def graded(tmp_path_factory, notebook_data):
    """The course after the whole flow; returns (course, grades table)."""
    root = tmp_path_factory.mktemp("nbgrader")
    course = grading.Course(
        root / "course", root / "exchange", settings={"Exchange.cache": str(root / "cache")}
    )
    (root / "exchange").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_DATA", str(notebook_data))  # the kernels inherit it
        source = grading.start_course(course, LAB) / NOTEBOOK
        set_parameters(source, SMALL)
        grading.generate(course, LAB)
        assert course.api().release_assignment(LAB)["success"]
        for student in ("ada", "bob", "cy", "dee"):
            _exchange(_student_api(course, root / "homes" / student, student), "fetch_assignment")
        _write_submissions(root / "homes", source)
        for student in ("ada", "bob", "cy", "dee"):
            _exchange(_student_api(course, root / "homes" / student, student), "submit")
        assert course.api().collect(LAB)["success"]
        assert grading.autograde(course, LAB) == ["ada", "bob", "cy", "dee"]
        yield course, grading.grades(course, LAB).set_index("student")


def _code_scores(table, student: str) -> dict:
    return {name: table.loc[student, f"{NOTEBOOK[:-6]}:{name}"] for name in CODE_TESTS}


def test_autograde_CorrectSubmission_GetsFullMarksForEveryCodeCell(graded):
    _, table = graded
    assert _code_scores(table, "ada") == CODE_TESTS
    assert "why" in table.loc["ada", "needs_manual_grade"]  # the written answer waits for the formgrader


@pytest.mark.parametrize("student", ["bob", "cy"], ids=["wrong", "gaming"])
def test_autograde_WrongAndGamingSubmissions_GetNothingForTheCodeCells(graded, student):
    _, table = graded
    assert _code_scores(table, student) == dict.fromkeys(CODE_TESTS, 0.0)


def test_autograde_PutsBackTheTestCellAGamingStudentEdited(graded):
    course, _ = graded
    autograded = course.root / "autograded" / "cy" / LAB / NOTEBOOK
    cells = nbformat.read(autograded, as_version=4).cells
    test = next(c for c in cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_epsilon_for")
    assert "hints.check_epsilon_for(epsilon_for)" in test.source and "BEGIN HIDDEN TESTS" in test.source


def test_grades_ACopiedSubmission_IsShownAsIdenticalToItsSource(graded):
    _, table = graded
    assert table.loc["dee", "identical_to"] == "ada"
    assert set(table.loc[["ada", "bob", "cy"], "identical_to"]) == {""}
    assert _code_scores(table, "dee") == CODE_TESTS


HIDDEN = re.compile(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n(.*?)### END \1", re.S)


def hidden_lines(notebook_path: Path) -> set[str]:
    """Every substantial line the teacher's source holds between solution or hidden-test markers."""
    cells = nbformat.read(notebook_path, as_version=4).cells
    blocks = [block for cell in cells for _, block in HIDDEN.findall(cell.source)]
    return {line.strip() for block in blocks for line in block.splitlines() if len(line.strip()) > 12}


def test_release_HoldsNoSolutionHiddenTestOrMarkingNote(graded):
    course, _ = graded
    released = (course.root / "release" / LAB / NOTEBOOK).read_text()
    lines = hidden_lines(course.root / "source" / LAB / NOTEBOOK)
    assert len(lines) > 20
    assert [line for line in lines if line in released] == []
    assert not list((course.root / "release" / LAB).glob(".workbench-files.json"))
