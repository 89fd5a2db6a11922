"""The package's shape: folders for the layers, each importing only the ones below it, no import
cycle, and a public face (``import workbench as wb``) whose every name imports and says what it does."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import workbench as wb

PACKAGE = Path(wb.__file__).parent
# bottom to top; a folder may import any folder before it in this list, never one after it
LAYERS = ["core", "data", "model", "prune", "analysis", "explore", "view"]
TOP = {"runs": len(LAYERS), "course": len(LAYERS)}  # beside each other, above view


def rank(module: str) -> int | None:
    """The layer of ``workbench.<folder>...`` (None for the package's own top-level files)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "workbench":
        return None
    folder = parts[1]
    return LAYERS.index(folder) if folder in LAYERS else TOP.get(folder)


def imports_of(path: Path) -> set[str]:
    """Every ``workbench...`` module a file imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench"):
            found.add(node.module)
            named = (f"{node.module}.{a.name}" for a in node.names)
            found.update(name for name in named if _is_module(name))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("workbench"))
    return found


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative).is_dir()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def upward_imports(modules: dict[str, Path]) -> list[str]:
    wrong = []
    for name, path in modules.items():
        here = rank(name)
        if here is None:
            continue
        for imported in imports_of(path):
            there = rank(imported)
            sibling = there == here and imported.split(".")[1] != name.split(".")[1]  # runs vs course
            if there is not None and (there > here or sibling):
                wrong.append(f"{name} imports {imported}")
    return wrong


def cycles(modules: dict[str, Path]) -> list[list[str]]:
    graph = {name: {i for i in imports_of(p) if i in modules and i != name} for name, p in modules.items()}
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def test_layers_EveryFolderImportsOnlyTheFoldersBelowIt():
    assert not upward_imports(MODULES), "\n".join(upward_imports(MODULES))


def test_layers_AnUpwardImport_IsFound(tmp_path):
    (tmp_path / "stats.py").write_text("from workbench.view.plots import metric_curves\n")
    (tmp_path / "masks.py").write_text("def f():\n    from workbench.prune import scores\n")
    stats, masks = tmp_path / "stats.py", tmp_path / "masks.py"
    found = upward_imports({"workbench.core.stats": stats, "workbench.core.masks": masks})
    assert sorted(found) == [
        "workbench.core.masks imports workbench.prune",
        "workbench.core.masks imports workbench.prune.scores",
        "workbench.core.stats imports workbench.view.plots",
    ]


def test_layers_SiblingFoldersRunsAndCourse_DoNotImportEachOther(tmp_path):
    (tmp_path / "report.py").write_text("from workbench.course.exercises import Lab\n")
    assert upward_imports({"workbench.runs.report": tmp_path / "report.py"})


def test_imports_HaveNoCycle():
    assert not cycles(MODULES), cycles(MODULES)


def test_imports_ACycle_IsFound(tmp_path):
    (tmp_path / "a.py").write_text("from workbench.core.b import y\n")
    (tmp_path / "b.py").write_text("from workbench.core.a import x\n")
    assert cycles({"workbench.core.a": tmp_path / "a.py", "workbench.core.b": tmp_path / "b.py"})


def test_every_module_LivesInALayerFolder():
    loose = [
        n for n in MODULES if n.count(".") == 1 and n not in ("workbench.__init__", "workbench.__main__")
    ]
    assert not [n for n in loose if n.split(".")[1] not in (*LAYERS, *TOP)], loose


@pytest.mark.parametrize("name", wb.__all__)
def test_public_name_Imports_AndHasADocstring(name):
    value = getattr(wb, name)
    doc = getattr(value, "__doc__", None) or ""
    if not callable(value) and not hasattr(value, "__file__"):  # a constant: its module says what it is
        doc = sys.modules[value.__module__].__doc__ if hasattr(value, "__module__") else "constant"
    assert doc.strip(), f"workbench.{name} has no docstring"


def test_public_names_CoverWhatTheIssueNames():
    named = {"load_dataset", "PruneSpec", "Scorer", "make_masks", "apply_masks", "fine_tune", "slim_model",
             "export_all", "evaluate_model", "compare_to_dense", "Explorer", "sensitivity", "allocate",
             "Head", "as_head", "WorkbenchError", "UnreachableGoal", "DataMismatch", "Cancelled"}  # fmt: skip
    assert named <= set(wb.__all__)


def test_import_workbench_DoesNotImportTensorFlow():
    code = "import sys, workbench as wb; wb.PhantomConfig; wb.auc_ci; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unknown_public_name_RaisesAttributeError():
    with pytest.raises(AttributeError, match="no attribute 'Scorrer'"):
        wb.Scorrer  # noqa: B018


def _prints_or_parses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
            found.append(f"print at line {node.lineno}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [f"imports argparse at line {node.lineno}" for n in names if n == "argparse"]
    return found


def test_cli_IsBuiltInMainAlone_AndLibraryCodeNeverPrints():
    """classroom built its own 'class' sub-commands and printed from library code."""
    allowed = {
        "workbench.__main__",
        "workbench.course.exercises",  # a hint's ✓ to the student is its output
    }
    wrong = {name: _prints_or_parses(path) for name, path in MODULES.items() if name not in allowed}
    assert not {name: found for name, found in wrong.items() if found}


def test_cli_APrintInALibraryModule_IsFound(tmp_path):
    (tmp_path / "m.py").write_text("import argparse\n\ndef f():\n    print('hi')\n")
    assert _prints_or_parses(tmp_path / "m.py") == ["imports argparse at line 1", "print at line 4"]


def test_cli_EveryCommand_IsInTheOneParser():
    from workbench.__main__ import _parser

    commands = _parser()._subparsers._group_actions[0].choices
    assert set(commands) == {"summary", "download", "prepare", "notebook", "sweep", "report", "class"}
    class_actions = {"prepare", "generate", "grades", "serve"}
    assert set(commands["class"]._subparsers._group_actions[0].choices) == class_actions
