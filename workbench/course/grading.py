"""Grading a lab with nbgrader, on the teacher's side.

The teacher's source notebooks (solutions, hidden tests, marking notes) live in the project at
``notebooks/teacher/source/<lab>/``, which no installed package contains. ``start_course`` copies
them into a course folder of the teacher's (on a JupyterHub: in the teacher's home, unreadable to
students) and writes its ``nbgrader_config.py``; from there nbgrader's own commands do the rest:

    python -m workbench class generate --course ~/course --exchange /srv/nbgrader/exchange
    cd ~/course && nbgrader release_assignment pruning_lesson        # into the exchange
    nbgrader collect pruning_lesson && nbgrader autograde pruning_lesson   # re-executes every submission
    python -m workbench class grades --course ~/course --lab pruning_lesson   # one row per student

Autograding re-executes each submitted notebook with the hidden tests put back, so nothing a
student's kernel recorded is trusted. ``grades`` adds what nbgrader's export lacks: a score per
graded cell, and which students handed in identical answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core import fs
from workbench.core.errors import WorkbenchError
from workbench.core.paths import PROJECT_ROOT

log = logging.getLogger(__name__)

TEACHER_SOURCES = PROJECT_ROOT / "notebooks" / "teacher" / "source"
CELL_TIMEOUT = 600  # seconds a cell may run when autograding (nbgrader's default of 30 is too short for TF)
# never copied into a release: the workbench's own manifest of the files it wrote
IGNORED = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", fs.MANIFEST]


@dataclass(frozen=True)
class Course:
    """An nbgrader course folder: ``root`` holds source/, release/, submitted/, autograded/ and
    gradebook.db; ``exchange`` is the shared folder students fetch from and submit to (JupyterHub)."""

    root: Path
    exchange: Path | None = None
    course_id: str = "workbench"
    settings: dict = field(default_factory=dict)  # more nbgrader settings, {"Class.trait": value}

    def config(self):
        """The nbgrader configuration of this course (traitlets Config)."""
        from traitlets.config import Config

        config = Config()
        for key, value in self._settings().items():
            section, trait = key.split(".")
            setattr(config[section], trait, value)
        return config

    def _settings(self) -> dict:
        settings = {
            "CourseDirectory.root": str(Path(self.root).resolve()),
            "CourseDirectory.course_id": self.course_id,
            "CourseDirectory.ignore": IGNORED,
            "Execute.timeout": CELL_TIMEOUT,
        }
        if self.exchange is not None:
            settings["Exchange.root"] = str(Path(self.exchange).resolve())
        return {**settings, **self.settings}

    def config_file(self) -> str:
        """The same settings as an ``nbgrader_config.py``, for nbgrader's commands and the formgrader."""
        lines = [f"c.{key} = {value!r}" for key, value in self._settings().items()]
        header = "# written by python -m workbench class generate\nc = get_config()  # noqa\n"
        return header + "\n".join(lines) + "\n"

    def api(self):
        """nbgrader's Python API on this course."""
        from nbgrader.apps import NbGraderAPI

        _environment_on_path()
        return NbGraderAPI(config=self.config())


def _environment_on_path() -> None:
    """Put this environment's bin/ on PATH, as activating it would: nbgrader runs the ``alembic``
    command to open its gradebook, which an unactivated ``.venv/bin/python`` would not find."""
    import os
    import sys

    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])


def labs() -> list[str]:
    """The labs the project's teacher sources hold (each an nbgrader assignment)."""
    return sorted(p.name for p in TEACHER_SOURCES.iterdir() if p.is_dir())


def _succeeded(step: str, result: dict) -> None:
    """nbgrader's API returns {success, log, error} instead of raising: raise, with its log."""
    if not result["success"]:
        raise WorkbenchError(f"nbgrader {step} failed:\n{result.get('log', '')}\n{result.get('error', '')}")


def start_course(course: Course, lab: str, *, overwrite: bool = False, allow: str = "overwrite=True") -> Path:
    """Copy the teacher's source notebooks of ``lab`` into ``course.root/source/lab`` and write the
    course's ``nbgrader_config.py``; a copy the teacher edited there is kept unless ``overwrite``.

    Raises:
        WorkbenchError: naming ``lab`` if the project has no such source folder.
        FileExistsError: naming a file the teacher changed (``allow`` says how to replace it).
    """
    if lab not in labs():
        raise WorkbenchError(f"lab must be one of {labs()} (folders of {TEACHER_SOURCES}), got {lab!r}")
    sources = TEACHER_SOURCES / lab
    files = sorted(p for p in sources.iterdir() if p.is_file())
    target = Path(course.root) / "source" / lab
    fs.check_claim(Path(course.root), ["nbgrader_config.py"], overwrite, allow=allow)
    with fs.claim(target, [p.name for p in files], overwrite, allow=allow):
        for path in files:
            fs.write_atomically(target / path.name, path.read_bytes())
    with fs.claim(Path(course.root), ["nbgrader_config.py"], overwrite, allow=allow):
        fs.write_atomically(Path(course.root) / "nbgrader_config.py", course.config_file())
    return target


def generate(course: Course, lab: str) -> Path:
    """Generate the student version of ``lab`` from ``course.root/source/lab`` (see ``start_course``)
    into ``course.root/release/lab``.

    Solutions become ``raise NotImplementedError()``, hidden tests and marking notes are removed,
    outputs cleared, and the graded cells with their checksums go into the gradebook.
    """
    _succeeded("generate_assignment", course.api().generate_assignment(lab))
    return Path(course.root) / "release" / lab


def autograde(course: Course, lab: str) -> list[str]:
    """Autograde every collected submission of ``lab`` (``course.root/submitted/*/lab``).

    Returns:
        the students whose submissions were graded.
    """
    students = sorted(p.parent.name for p in (Path(course.root) / "submitted").glob(f"*/{lab}"))
    api = course.api()
    for student in students:
        _succeeded(f"autograde {student}", api.autograde(lab, student))
    return students


# --- the teacher's view --------------------------------------------------------------------------


def grades(course: Course, lab: str):
    """One row per student: each graded cell's score, the total, what still needs grading by hand,
    and ``identical_to``: the first student whose answers (every solution cell they changed) are
    the same, whitespace aside.

    Returns:
        a DataFrame: student, one column per graded cell (``notebook:cell``), score, max_score,
        needs_manual_grade, identical_to.
    """
    import pandas as pd
    from nbgrader.api import Gradebook

    rows, first = [], {}
    with Gradebook(course.api().coursedir.db_url) as gradebook:
        for submission in gradebook.assignment_submissions(lab):
            row = {"student": submission.student_id, **_cell_scores(submission)}
            submitted = Path(course.root) / "submitted" / submission.student_id / lab
            work = _answers_digest(submitted, Path(course.root) / "release" / lab)
            row["identical_to"] = first.setdefault(work, submission.student_id) if work else ""
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["student", "score", "max_score", "needs_manual_grade", "identical_to"])
    table = pd.DataFrame(rows).sort_values("student").reset_index(drop=True)
    table.loc[table["identical_to"] == table["student"], "identical_to"] = ""
    return table


def _cell_scores(submission) -> dict:
    scores, total, maximum, manual = {}, 0.0, 0.0, []
    for notebook in submission.notebooks:
        for grade in notebook.grades:
            name = f"{notebook.name}:{grade.name}"
            scores[name] = None if grade.needs_manual_grade else grade.score
            total += grade.score or 0.0
            maximum += grade.max_score
            manual += [name] if grade.needs_manual_grade else []
    return {**scores, "score": total, "max_score": maximum, "needs_manual_grade": " ".join(manual)}


def _answers_digest(folder: Path, release: Path) -> str:
    """A digest of the solution cells a student changed from the release; '' when none changed."""
    answers = []
    for path in sorted(folder.glob("*.ipynb")):
        handed_out = _solution_cells(release / path.name) if (release / path.name).is_file() else {}
        answers += [[path.name, k, v] for k, v in _solution_cells(path).items() if handed_out.get(k) != v]
    return hashlib.sha256(json.dumps(answers).encode()).hexdigest() if answers else ""


def _solution_cells(path: Path) -> dict[str, str]:
    """{grade_id: source with its whitespace collapsed} of a notebook's solution cells."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    return {
        c.metadata["nbgrader"]["grade_id"]: re.sub(r"\s+", " ", c.source).strip()
        for c in cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


def serve_command(folder: str | Path, port: int | None = None, extra: list[str] | None = None) -> list[str]:
    """The JupyterLab command that serves ``folder`` (a student's released lab) as its root."""
    import os
    import sys

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder to serve not found: {folder}")
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder.resolve()}"]
    command += [f"--ServerApp.port={port}"] if port else []
    command += ["--allow-root"] if os.geteuid() == 0 else []  # containers often run as root
    return command + list(extra or [])
