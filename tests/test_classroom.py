"""Student versions carry no solutions; a class folder of results becomes one CSV."""

from __future__ import annotations

import json
import re

import nbformat
import pandas as pd
import pytest

from workbench.__main__ import main
from workbench.core.paths import PROJECT_ROOT
from workbench.course import classroom

NOTEBOOKS = PROJECT_ROOT / "notebooks"
TEACHER_NOTEBOOKS = ["05_teaching_gradient_pruning.ipynb", "07_lab_worksheet.ipynb"]
BLOCK = re.compile(r"### BEGIN (SOLUTION|ANSWER)\n(.*?)### END \1", re.S)


def _hidden_lines(notebook) -> list[str]:
    """Every substantial line the teacher wrote between markers."""
    return [
        line.strip()
        for cell in notebook.cells
        for _, block in BLOCK.findall(cell.source)
        for line in block.splitlines()
        if len(line.strip()) > 12
    ]


@pytest.mark.parametrize("name", TEACHER_NOTEBOOKS)
def test_student_version_ContainsNoSolutionOrModelAnswer(name):
    teacher = nbformat.read(NOTEBOOKS / name, as_version=4)
    hidden = _hidden_lines(teacher)
    assert len(hidden) >= 6, "the teacher's version should carry solutions"
    student = nbformat.writes(classroom.student_version(teacher))
    assert "BEGIN SOLUTION" not in student and "BEGIN ANSWER" not in student
    assert [line for line in hidden if line in student] == []
    assert "solutions" not in student.lower().replace("teaching_gradient", "")


def test_student_version_DropsTeacherCells_AndOutputs():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("model answers", metadata={"tags": ["teacher"]}),
        nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n"),
    ]
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", text="1")]
    student = classroom.student_version(notebook)
    assert len(student.cells) == 1 and student.cells[0].outputs == []
    assert student.cells[0].source == "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"


def test_strip_solutions_UnbalancedMarkers_RaiseValueError():
    with pytest.raises(ValueError, match="END SOLUTION"):
        classroom.strip_solutions("### BEGIN SOLUTION\nreturn 1\n")


def test_write_student_version_ReplacesItsOwn_NeverAStudentsWork(tmp_path):
    written = classroom.write_student_version(NOTEBOOKS / TEACHER_NOTEBOOKS[0], tmp_path)
    again = classroom.write_student_version(NOTEBOOKS / TEACHER_NOTEBOOKS[0], tmp_path)  # an edited lesson
    assert again == written
    with written.open("a") as notebook:
        notebook.write("\n")  # a student saved their work in it
    with pytest.raises(FileExistsError, match=f"{written} exists and was not written by the workbench"):
        classroom.write_student_version(NOTEBOOKS / TEACHER_NOTEBOOKS[0], tmp_path)
    assert main(["class", "student", str(NOTEBOOKS / TEACHER_NOTEBOOKS[0]), "--out", str(tmp_path)]) == 2
    assert written.read_text().endswith("\n\n")


def _student_notebook(name: str, sparsity_body: str, results: str) -> nbformat.NotebookNode:
    """A short lab as a student hands it in: two exercises and a written answer."""
    cells = [
        "from workbench.course import exercises as teaching\nimport numpy as np\n"
        f"lab = teaching.Lab('05_teaching_gradient_pruning', {results!r}, {name!r})",
        "def prune_mask(scores, epsilon):\n    return scores >= epsilon\nlab.check('prune_mask', prune_mask)",
        f"def sparsity(keep):\n    {sparsity_body}\nlab.check('sparsity', sparsity)",
        "lab.answer('why', 'because removing a weight costs about g times w ' * 3)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


@pytest.mark.slow
def test_class_summary_ReadsAFolderOfExecutedStudentNotebooks(tmp_path):
    handed_in = tmp_path / "handed_in"
    handed_in.mkdir()
    for name, body in (("ada", "return 1.0 - float(np.mean(keep))"), ("bob", "return 0.5")):
        source = tmp_path / f"{name}.ipynb"
        nbformat.write(_student_notebook(name, body, str(tmp_path / "files" / f"{name}.json")), source)
        _execute_allowing_errors(source, handed_in / source.name)
    out = tmp_path / "summary.csv"
    assert main(["class", "summary", str(handed_in), "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("student")
    assert table.loc["ada", "passed"] == 2 and table.loc["ada", "sparsity"] == "passed"
    assert table.loc["bob", "failed"] == 1 and table.loc["bob", "sparsity"] == "failed"
    assert table.loc["ada", "answers"] == 1 and "g times w" in table.loc["ada", "answer:why"]
    assert main(["class", "summary", str(handed_in), "--out", str(out)]) == 0  # its own table, again
    out.write_text("the teacher's grades")
    assert main(["class", "summary", str(handed_in), "--out", str(out)]) == 2  # never the teacher's
    assert out.read_text() == "the teacher's grades"
    from_files = classroom.class_summary(tmp_path / "files")
    assert sorted(from_files["student"]) == ["ada", "bob"]


def _execute_allowing_errors(source, target) -> None:
    """Run every cell, as a student who runs the rest after a failed check: the error stays in the output."""
    from nbclient import NotebookClient

    notebook = nbformat.read(source, as_version=4)
    NotebookClient(notebook, kernel_name="python3", allow_errors=True).execute()
    nbformat.write(notebook, target)


def test_read_record_IgnoresUnrelatedJson(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"not": "a lab"}))
    assert classroom.read_record(tmp_path / "other.json") is None
    assert classroom.class_summary(tmp_path).empty


def test_class_summary_MissingFolder_FileNotFoundError(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        classroom.class_summary(tmp_path / "nowhere")


def _record(student: str, text: str, at: str = "2026-11-26T10:00:00") -> dict:
    return {
        "lesson": "05",
        "student": student,
        "checks": {"sparsity": {"passed": True, "at": at}},
        "answers": {"why": {"text": text, "words": len(text.split()), "at": at}},
    }


def test_class_summary_SkipsDamagedFiles_FlagsCopies_CountsOnlyRealAnswers(tmp_path, caplog):
    answer = "pruning by gradient keeps the weights the loss still needs right now " * 2
    (tmp_path / "ada.json").write_text(json.dumps(_record("ada", answer)))
    (tmp_path / "cy.json").write_text(json.dumps(_record("cy", answer)))  # ada's work, the name edited
    (tmp_path / "bob.json").write_text(
        json.dumps(_record("bob", "Write your answer here, in your own words."))
    )
    (tmp_path / "truncated.json").write_text('{"checks": {')
    (tmp_path / "odd.json").write_text(json.dumps({"checks": [1, 2]}))
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "ada-checkpoint.json").write_text(json.dumps(_record("ada", answer)))
    with caplog.at_level("WARNING"):
        table = classroom.class_summary(tmp_path).set_index("student")
    assert sorted(table.index) == ["ada", "bob", "cy"]
    assert table.loc["cy", "duplicate_of"] == "ada.json" and table.loc["ada", "duplicate_of"] == ""
    assert table.loc["ada", "answers"] == 1 and table.loc["bob", "answers"] == 0
    assert "truncated.json" in caplog.text and "odd.json" in caplog.text


def test_read_record_OfANotebook_TakesTheNewestRecord_NotTheLastCell(tmp_path):
    from workbench.course.exercises import RESULTS_MIME

    newer = _record("ada", "late", at="2026-11-26T11:00:00")
    older = _record("ada", "early", at="2026-11-26T10:00:00")
    cells = []
    for record in (newer, older):  # the cell run last sits higher up
        cell = nbformat.v4.new_code_cell("lab.check(...)")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "", RESULTS_MIME: record})]
        cells.append(cell)
    path = tmp_path / "ada.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    assert classroom.read_record(path)["answers"]["why"]["text"] == "late"


def test_class_student_OneBadNotebook_WritesNone_AndNamesIt(tmp_path, capsys):
    bad = tmp_path / "bad.ipynb"
    cell = nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n")  # no END marker
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), bad)
    good = NOTEBOOKS / TEACHER_NOTEBOOKS[0]
    out = tmp_path / "students"
    assert main(["class", "student", str(good), str(bad), "--out", str(out)]) == 2
    assert "bad.ipynb" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_class_summary_Out_ReplacesItsOwnTable_NeverTheTeachersFile(tmp_path, capsys):
    """It refused even its own summary.csv (a second hand-in meant a new name), yet wrote non-atomically."""
    handed_in, out = tmp_path / "handed_in", tmp_path / "summary.csv"
    handed_in.mkdir()
    (handed_in / "ada.json").write_text(json.dumps(_record("ada", "short")))
    assert main(["class", "summary", str(handed_in), "--out", str(out)]) == 0
    (handed_in / "bob.json").write_text(json.dumps(_record("bob", "short")))
    assert main(["class", "summary", str(handed_in), "--out", str(out)]) == 0
    assert sorted(pd.read_csv(out)["student"]) == ["ada", "bob"]
    out.write_text("the teacher's grades")
    capsys.readouterr()
    assert main(["class", "summary", str(handed_in), "--out", str(out)]) == 2
    assert f"{out} exists and was not written by the workbench" in capsys.readouterr().err
    assert out.read_text() == "the teacher's grades"
    assert main(["class", "summary", str(handed_in), "--out", str(out), "--overwrite"]) == 0
