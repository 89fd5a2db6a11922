"""The class commands: an nbgrader course generated from the teacher's sources, its grades table,
and JupyterLab serving a released folder. (The whole grading flow: test_nbgrader_flow.py.)"""

from __future__ import annotations

import sys

import pytest
from test_nbgrader_flow import hidden_lines

from workbench.__main__ import main
from workbench.course import grading

LABS = {"pruning_lesson": "05_teaching_gradient_pruning.ipynb", "pruning_worksheet": "07_lab_worksheet.ipynb"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A course made by `class generate` (both labs: nothing is executed, so it is quick)."""
    root = tmp_path_factory.mktemp("class")
    course, exchange = root / "course", root / "exchange"
    assert main(["class", "generate", "--course", str(course), "--exchange", str(exchange)]) == 0
    return course, exchange


@pytest.mark.parametrize("lab", sorted(LABS))
def test_class_generate_ReleasesEveryLab_WithoutSolutionsHiddenTestsOrMarkingNotes(generated, lab):
    course, _ = generated
    released = (course / "release" / lab / LABS[lab]).read_text()
    hidden = hidden_lines(course / "source" / lab / LABS[lab])
    assert len(hidden) > 5
    assert [line for line in hidden if line in released] == []
    assert "BEGIN SOLUTION" not in released and "BEGIN HIDDEN TESTS" not in released


def test_class_generate_WritesTheCoursesConfig_ForNbgradersOwnCommands(generated):
    course, exchange = generated
    config = (course / "nbgrader_config.py").read_text()
    assert f"c.Exchange.root = {str(exchange.resolve())!r}" in config
    assert "c.Execute.timeout = 600" in config and ".workbench-files.json" in config


def test_class_generate_KeepsASourceTheTeacherEdited_UnlessOverwrite(tmp_path, capsys):
    course = grading.Course(tmp_path / "course")
    source = grading.start_course(course, "pruning_worksheet") / LABS["pruning_worksheet"]
    grading.start_course(course, "pruning_worksheet")  # its own copy, replaced
    source.write_text(source.read_text().replace("Question 1", "Question one"))  # the teacher's edit
    capsys.readouterr()
    args = ["class", "generate", "--course", str(course.root), "--lab", "pruning_worksheet"]
    assert main(args) == 2  # refused before nbgrader runs
    assert f"{source} exists and was not written by the workbench" in capsys.readouterr().err
    assert "Question one" in source.read_text()
    grading.start_course(course, "pruning_worksheet", overwrite=True)
    assert "Question one" not in source.read_text()


def test_class_generate_AnUnknownLab_IsNamed(tmp_path, capsys):
    assert main(["class", "generate", "--course", str(tmp_path), "--lab", "nope"]) == 2
    err = capsys.readouterr().err
    assert "lab must be one of ['pruning_lesson', 'pruning_worksheet']" in err and "got 'nope'" in err


def test_class_grades_BeforeAnySubmission_IsAnEmptyTable(generated, capsys):
    course, _ = generated
    table = grading.grades(grading.Course(course), "pruning_lesson")
    assert table.empty and "identical_to" in table.columns
    assert main(["class", "grades", "--course", str(course), "--lab", "pruning_lesson"]) == 0


def test_serve_command_OpensJupyterLabAtTheFolder_AndRefusesAMissingOne(tmp_path):
    command = grading.serve_command(tmp_path, port=8890)
    assert command[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in command and "--ServerApp.port=8890" in command
    with pytest.raises(FileNotFoundError, match="nowhere"):
        grading.serve_command(tmp_path / "nowhere")
