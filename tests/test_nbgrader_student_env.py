"""A student's environment holds no solution: the package as a wheel installs (``pip install .``),
plus the released lab folder, and a kernel there finds no solution text anywhere it can look.

The student's interpreter is a fresh venv that sees the wheel's files and the project's third-party
packages, not the editable checkout (whose notebooks/teacher/ holds the sources). Its kernel is
registered the way TEACHING.md's JupyterHub recipe does it: ``ipykernel install --env WORKBENCH_DATA``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest
from test_nbgrader_flow import SMALL, hidden_lines, set_parameters

from workbench.core.paths import PROJECT_ROOT
from workbench.course import grading

pytestmark = pytest.mark.slow

NOTEBOOKS = {
    "pruning_lesson": "05_teaching_gradient_pruning.ipynb",
    "pruning_worksheet": "07_lab_worksheet.ipynb",
}
KERNEL = "workbench-student"

# Run in the student's kernel after the notebook: every file it can reach that could carry a
# solution, searched for the teacher's hidden lines (given as HIDDEN).
PROBE = """
import json, site, sys
from pathlib import Path
import workbench
package = Path(workbench.__file__).resolve().parent
deep = {package, Path.cwd()}                                     # every file in these
notebooks = {Path(p) for p in sys.path + site.getsitepackages() if p and Path(p).is_dir()}
for parent in package.parents:                                   # Path(wb.__file__).parents[1] / "notebooks"
    deep |= {parent / "notebooks"} if (parent / "notebooks").is_dir() else set()
shallow = set(package.parents)                                   # the files directly in each parent
files = {f for root in deep for f in root.rglob("*") if f.is_file()}
files |= {f for root in notebooks for f in root.rglob("*.ipynb")}
files |= {f for root in shallow for f in root.iterdir() if f.is_file()}
def holds(f):
    try:
        text = f.read_text(errors="ignore")
    except OSError:
        return []
    return [line for line in HIDDEN if line in text]
found = {str(f): holds(f) for f in sorted(files) if holds(f)}
roots = sorted(map(str, notebooks))
print(json.dumps({"files": len(files), "found": found, "package": str(package), "roots": roots}))
"""


@pytest.fixture(scope="module")
def student_python(tmp_path_factory) -> Path:
    """A venv whose site-packages has the wheel's files and a path to this environment's packages."""
    root = tmp_path_factory.mktemp("student")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(PROJECT_ROOT), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(root / "wheel")],
        check=True,
    )
    wheel = next((root / "wheel").glob("workbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert all(n.startswith(("workbench/", "workbench-")) for n in names), "the wheel ships only the package"
    zipfile.ZipFile(wheel).extractall(root / "site")
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # a plain path, not a site dir: the checkout's editable-install .pth there is not read
    ours = sysconfig.get_paths()["purelib"]
    (Path(site_packages) / "student.pth").write_text(f"{root / 'site'}\n{ours}\n")
    return python


@pytest.fixture(scope="module")
def student_kernel(student_python, notebook_data, tmp_path_factory) -> Path:
    """The student's kernelspec, as TEACHING.md's JupyterHub recipe installs it; returns its JUPYTER_PATH."""
    prefix = tmp_path_factory.mktemp("kernels")
    subprocess.run(
        [student_python, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL]
        + ["--display-name", "Pruning lab", "--env", "WORKBENCH_DATA", str(notebook_data)],
        check=True,
        capture_output=True,
    )
    return prefix / "share" / "jupyter"


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> dict[str, Path]:
    """The released student notebooks of every lab, and the teacher's source of each."""
    course = grading.Course(tmp_path_factory.mktemp("course"))
    sources = {}
    for lab, name in NOTEBOOKS.items():
        sources[name] = grading.start_course(course, lab) / name
        set_parameters(sources[name], SMALL if lab == "pruning_lesson" else {"epochs": 1})
        grading.generate(course, lab)
    return {name: (course.root / "release" / lab / name, sources[name]) for lab, name in NOTEBOOKS.items()}


def _run_as_student(notebook_path: Path, home: Path, jupyter_path: Path, hidden: set[str]):
    """Run the notebook top to bottom as a student would (errors shown, the rest run), then the probe;
    returns the probe's findings and the notebook's error messages."""
    from nbclient import NotebookClient

    notebook = nbformat.read(notebook_path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(f"HIDDEN = {sorted(hidden)!r}\n{PROBE}"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_path))
        client = NotebookClient(
            notebook,
            kernel_name=KERNEL,
            allow_errors=True,
            timeout=600,
            resources={"metadata": {"path": str(home)}},
        )
        client.execute()
    errors = [o.get("evalue", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    return json.loads(notebook.cells[-1].outputs[-1]["text"].strip().splitlines()[-1]), errors


@pytest.mark.parametrize("name", sorted(NOTEBOOKS.values()))
def test_student_kernel_FindsNoSolutionText_AnywhereItCanLook(name, released, student_kernel, tmp_path):
    release, source = released[name]
    home = tmp_path / "home"
    home.mkdir()
    (home / name).write_bytes(release.read_bytes())
    hidden = hidden_lines(source)
    assert len(hidden) > 5
    probe, errors = _run_as_student(home / name, home, student_kernel, hidden)
    if name.startswith("05"):  # what a student sees first: the hint under exercise 1
        assert any("prune_mask is not written yet" in e for e in errors)
    assert not probe["package"].startswith(str(PROJECT_ROOT))
    assert probe["files"] > 50, "the probe looked at too few files to mean anything"
    assert sysconfig.get_paths()["purelib"] in probe["roots"]  # the third-party packages were searched too
    assert probe["found"] == {}


def test_probe_FindsTheSolutions_WhenTheCheckoutIsReachable(released, tmp_path):
    """The probe can fail: run in this (editable) environment, it finds the teacher's sources."""
    _, source = released[NOTEBOOKS["pruning_lesson"]]
    namespace = {"HIDDEN": sorted(hidden_lines(source))}
    import contextlib
    import io
    import os

    printed, here = io.StringIO(), os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(printed):
            exec(PROBE, namespace)
    finally:
        os.chdir(here)
    found = json.loads(printed.getvalue())["found"]
    assert any("notebooks/teacher/source" in path for path in found)
