"""Running a lab for a class: student versions of notebooks, a shared baseline, a summary of results.

python -m workbench class student notebooks/05_teaching_gradient_pruning.ipynb --out class/
python -m workbench class prepare                 # phantom data + the dashboard's baseline, once
python -m workbench class summary class/handed_in --out summary.csv   # (the parser: workbench/__main__.py)

A teacher's notebook marks solutions the nbgrader way; ``student_version`` replaces each marked
block with ``raise NotImplementedError``, each model answer (in a string) with a prompt, and
drops cells tagged ``teacher``::

    def sparsity(keep):
        ### BEGIN SOLUTION
        return 1.0 - keep.mean()
        ### END SOLUTION

    why = '''
    ### BEGIN ANSWER
    Because ...
    ### END ANSWER
    '''
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from workbench.core import fs
from workbench.core.errors import WorkbenchError

log = logging.getLogger(__name__)

TEACHER_TAG = "teacher"
# marker kind -> what the student gets instead of the teacher's text (at the marker's indent)
PLACEHOLDERS = {
    "SOLUTION": "{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()",
    "ANSWER": "{indent}Write your answer here, in your own words.",
}


def _block(kind: str) -> re.Pattern:
    return re.compile(rf"^([ \t]*)### BEGIN {kind}[ \t]*\n.*?^[ \t]*### END {kind}[ \t]*$", re.M | re.S)


def strip_solutions(source: str) -> str:
    """Replace every marked solution or model-answer block in ``source`` by a placeholder.

    Raises:
        ValueError: a BEGIN marker without its END (or the reverse).
    """
    for kind, placeholder in PLACEHOLDERS.items():
        source = _block(kind).sub(lambda m, p=placeholder: p.format(indent=m[1]), source)
        if f"### BEGIN {kind}" in source or f"### END {kind}" in source:
            raise WorkbenchError(
                f"unbalanced markers: every '### BEGIN {kind}' needs an '### END {kind}' line"
            )
    return source


def student_version(notebook):
    """Return a copy of ``notebook`` without teacher cells, solutions or outputs.

    Raises:
        ValueError: a cell has unbalanced solution markers.
    """
    import copy

    student = copy.deepcopy(notebook)
    student.cells = [c for c in student.cells if TEACHER_TAG not in c.metadata.get("tags", [])]
    for cell in student.cells:
        cell.source = strip_solutions(cell.source)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return student


def write_student_version(
    notebook_path: str | Path, out_dir: str | Path, *, overwrite: bool = False, allow: str = "overwrite=True"
) -> Path:
    """Write the student version of ``notebook_path`` into ``out_dir``.

    A student version written before is replaced (the teacher edited the lesson); a file of that
    name that the workbench did not write, or that was changed since (a student's work), is not,
    unless ``overwrite``.

    Raises:
        FileNotFoundError: if the notebook does not exist.
        FileExistsError: naming the file in the way (``allow`` says how to replace it).
    """
    import nbformat

    source = Path(notebook_path)
    if not source.is_file():
        raise FileNotFoundError(f"notebook not found: {source}")
    student = nbformat.writes(student_version(nbformat.read(source, as_version=4)))
    student += "\n"  # as nbformat.write ends a file
    with fs.claim(Path(out_dir), [source.name], overwrite, allow=allow) as folder:
        fs.write_atomically(folder / source.name, student)
    return Path(out_dir) / source.name


# --- collecting results ----------------------------------------------------------------------


def read_record(path: Path) -> dict | None:
    """A student's record from a results .json, or the newest one an executed notebook displayed.

    Returns None for a file that holds no lab record; raises ValueError, naming the file, for one
    that cannot be read or whose record is malformed.
    """
    from workbench.course.exercises import RESULTS_MIME

    try:
        if path.suffix == ".json":
            record = json.loads(path.read_text())
            return _checked(record, path) if isinstance(record, dict) and "checks" in record else None
        import nbformat

        notebook = nbformat.read(path, as_version=4)
    except Exception as error:  # JSON, encoding or nbformat errors: the file is named, the rest go on
        raise WorkbenchError(f"{path}: not readable ({type(error).__name__}: {error})") from None
    found = [
        output["data"][RESULTS_MIME]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if RESULTS_MIME in output.get("data", {})
    ]
    if not found:
        return None
    newest = max(range(len(found)), key=lambda i: (_latest(found[i]), i))  # cells may run out of order
    return _checked(dict(found[newest]), path)


def _latest(record: dict) -> str:
    """The time of a record's newest check or answer (ISO text: it sorts as time does)."""
    entries = [e for section in ("checks", "answers") for e in dict(record.get(section) or {}).values()]
    return max((str(e.get("at", "")) for e in entries if isinstance(e, dict)), default="")


def _checked(record: dict, path: Path) -> dict:
    from workbench.course.exercises import is_lab_record

    if not is_lab_record(record):
        raise WorkbenchError(f"{path}: its checks or answers are not a lab record's (name -> entry)")
    return record


def class_summary(folder: str | Path):
    """One row per student record (.json results or executed .ipynb) under ``folder``.

    Columns: student, lesson, file, passed, failed, answers (those of at least ``MIN_WORDS``
    words), duplicate_of (the file of an earlier record with the same checks and answers, times
    included: a copy), then one column per exercise ('passed', 'failed' or empty) and one per
    written answer (its text). Unreadable files are skipped with a warning that names them;
    Jupyter's checkpoint copies are left out.
    """
    import pandas as pd

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"class folder not found: {folder}")
    rows, seen = [], {}
    for path in sorted([*folder.rglob("*.json"), *folder.rglob("*.ipynb")]):
        if ".ipynb_checkpoints" in path.parts:
            continue
        try:
            record = read_record(path)
        except ValueError as error:
            log.warning("skipped %s", error)
            continue
        if record is None:
            log.info("no lab record in %s", path)
            continue
        work = json.dumps([record.get("checks", {}), record.get("answers", {})], sort_keys=True)
        rows.append(
            _row(record, path.relative_to(folder), seen.setdefault(work, str(path.relative_to(folder))))
        )
    return pd.DataFrame(rows)


def _row(record: dict, path: Path, first: str) -> dict:
    from workbench.course.exercises import MIN_WORDS

    checks, answers = record.get("checks", {}), record.get("answers", {})
    row = {
        "student": record.get("student", ""),
        "lesson": record.get("lesson", ""),
        "file": str(path),
        "passed": sum(c.get("passed", False) for c in checks.values()),
        "failed": sum(not c.get("passed", False) for c in checks.values()),
        "answers": sum(len(str(a.get("text", "")).split()) >= MIN_WORDS for a in answers.values()),
        "duplicate_of": "" if first == str(path) else first,
    }
    row.update({name: "passed" if c.get("passed") else "failed" for name, c in checks.items()})
    row.update({f"answer:{name}": a.get("text", "") for name, a in answers.items()})
    return row


def prepare_classroom(model: str = "seed_cnn", epochs: int = 12, seed: int = 0) -> Path:
    """Generate the phantom data and train the dashboard's baseline into the data folder, once.

    Notebooks 01 and 07 with their defaults (phantom, seed_cnn, 12 epochs, seed 0) then load the
    baseline from the cache instead of training it in every student's kernel.
    """
    from workbench.core.paths import data_dir
    from workbench.data.sources import load_dataset
    from workbench.model.train import Recipe, baseline

    baseline(load_dataset("phantom", seed=seed), model, Recipe(epochs=epochs, seed=seed))
    return data_dir()


def write_student_versions(
    notebooks: list[str | Path],
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    allow: str = "overwrite=True",
) -> list[Path]:
    """Write the student version of every notebook into ``out_dir``: all of them, or none.

    Every notebook is read and stripped, and every name in ``out_dir`` checked, before the first
    is written, so one bad notebook or one file in the way leaves the folder as it was.

    Raises:
        WorkbenchError: naming a notebook that cannot be read or stripped.
        FileExistsError: naming the file in the way (``allow`` says how to replace it).
    """
    import nbformat

    for notebook in notebooks:
        try:
            student_version(nbformat.read(notebook, as_version=4))
        except Exception as error:
            raise WorkbenchError(f"{notebook}: {error}") from None
    fs.check_claim(Path(out_dir), [Path(n).name for n in notebooks], overwrite, allow=allow)
    return [write_student_version(n, out_dir, overwrite=overwrite, allow=allow) for n in notebooks]


def write_class_summary(
    folder: str | Path, out: str | Path, *, overwrite: bool = False, allow: str = "overwrite=True"
):
    """Write ``class_summary(folder)`` as a CSV at ``out`` (atomically) and return the table.

    ``out`` is replaced only if the workbench wrote it (a summary made earlier), else ``overwrite``.
    """
    out = Path(out)
    fs.check_claim(out.parent, [out.name], overwrite, allow=allow)
    table = class_summary(folder)
    with fs.claim(out.parent, [out.name], overwrite, allow=allow):
        fs.write_atomically(out, table.to_csv(index=False))
    return table
