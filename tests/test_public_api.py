"""The public face as a user meets it: every docstring example runs, and every ``wb.<name>`` that
README, the notebooks, the benchmarks and the teacher's guide write exists in ``import workbench as wb``."""

from __future__ import annotations

import ast
import doctest
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

import workbench as wb

ROOT = Path(wb.__file__).parent.parent
PACKAGE = ROOT / "workbench"
SOURCES = {
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
    for p in sorted(PACKAGE.rglob("*.py"))
}


def examples(module: str) -> list[doctest.DocTest]:
    """The module's docstring examples that hold at least one statement."""
    return [t for t in doctest.DocTestFinder().find(importlib.import_module(module)) if t.examples]


@pytest.fixture(scope="module")
def namespace(_trained_tiny_once, tiny_dataset):
    """What an example may take as given: a Dataset ``data``, a trained ``model``, its ``scorer``,
    a ``pruned`` copy at 50% sparsity, and the public names it calls."""
    from workbench.prune.pruning import PruneSpec, apply_masks, copy_model, make_masks
    from workbench.prune.scores import Scorer

    model = copy_model(_trained_tiny_once)
    scorer = Scorer(model, tiny_dataset.val)
    pruned = apply_masks(model, make_masks(scorer, PruneSpec(sparsity=0.5)).keep)
    given = dict(data=tiny_dataset, model=model, scorer=scorer, pruned=pruned, np=np, wb=wb)
    names = ("PruneSpec", "make_masks", "apply_masks", "predictions", "compare_to_dense", "stratified_sample")
    return given | {name: getattr(wb, name) for name in names}


WITH_EXAMPLES = [name for name, path in SOURCES.items() if ">>>" in path.read_text()]


@pytest.mark.parametrize("module", WITH_EXAMPLES)
def test_docstring_examples_Run(module, namespace):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in examples(module):
        test.globs = {**test.globs, **namespace}
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0, f"an example in {module} fails (its output is above)"


def test_docstring_examples_NoneIsSkipped():
    """34 of 41 examples were +SKIP and one called a function that did not exist."""
    skipped = [
        f"{test.name}: {example.source.strip()}"
        for module in WITH_EXAMPLES
        for test in examples(module)
        for example in test.examples
        if example.options.get(doctest.SKIP)
    ]
    assert not skipped, "\n".join(skipped)


def test_docstring_examples_AFailingExample_Fails(namespace):
    wrong = ">>> data.val.images.shape[1:]\n(99,)\n"
    test = doctest.DocTestParser().get_doctest(wrong, namespace, "x", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1


# --- the names the documents use --------------------------------------------------------------

DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "notebooks" / "TEACHING.md",
    *sorted((ROOT / "notebooks").glob("*.ipynb")),
    # dashboard_latency.py is rewritten with the dashboard's split (#26 item 3), and converted then
    *sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "dashboard_latency.py"),
]


def code_of(path: Path) -> str:
    """The Python a document holds: code cells, a script, or a Markdown file's python blocks."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    if path.suffix == ".md":
        return "\n".join(re.findall(r"```python\n(.*?)```", path.read_text(), re.S))
    return path.read_text()


def wb_names(text: str) -> set[str]:
    return set(re.findall(r"\bwb\.([A-Za-z_]\w*)", text))


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_documents_CallOnlyNamesThatWorkbenchHas(path):
    text = path.read_text() if path.suffix == ".md" else code_of(path)  # prose names wb.X too
    missing = sorted(wb_names(text) - set(wb.__all__) - {"__version__"})
    assert not missing, f"{path.name} uses wb.{', wb.'.join(missing)}, which 'import workbench as wb' lacks"


def test_documents_AMissingName_IsFound():
    assert wb_names("import workbench as wb\nwb.Scorer(m, d)\nwb.prune_all(x)") == {"Scorer", "prune_all"}


def deep_public_imports(code: str) -> list[str]:
    """``from workbench.<module> import <name>`` of names that ``wb`` offers (paths that may move)."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbench."):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name in wb.__all__]
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_documents_TakePublicNamesFromWb_NotTheirModules(path):
    """They wrote ``from workbench.prune.pruning import ...``; internals a benchmark measures may stay."""
    code = "\n".join(line for line in code_of(path).splitlines() if not line.lstrip().startswith(("%", "!")))
    assert not deep_public_imports(code)


def test_documents_ADeepImportOfAPublicName_IsFound():
    code = "from workbench.prune.pruning import PruneSpec, copy_model\nfrom workbench import Dashboard"
    assert deep_public_imports(code) == ["workbench.prune.pruning.PruneSpec"]


def test_readme_Layout_NamesEveryModuleOnce():
    """The lead pastes this tree into the issue: a module added, moved or removed must show."""
    text = (ROOT / "README.md").read_text()
    tree = text[text.index("## Layout") :].split("```")[1]
    listed, folder = [], ""
    for line in tree.splitlines():
        name = line.split()[0] if line.strip() else ""
        if line.startswith("  ") and not line.startswith("    ") and name.endswith("/"):
            folder = name
        elif line.startswith("  ") and name.endswith(".py"):
            listed.append(f"workbench/{folder if line.startswith('    ') else ''}{name}")
    files = [p for p in SOURCES.values() if p.name != "__init__.py" or p.parent == PACKAGE]
    modules = [str(p.relative_to(ROOT)) for p in files]
    assert sorted(listed) == sorted(modules)


def test_notebooks_UseNoUndefinedName():
    """A name left bare after its import became ``wb.``: notebook 05 failed only at its 11th cell."""
    import subprocess
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    notebooks = sorted(str(p) for p in (ROOT / "notebooks").glob("*.ipynb"))
    found = subprocess.run(
        [ruff, "check", "--select", "F821", "--no-cache", *notebooks], capture_output=True, text=True
    )
    assert found.returncode == 0, found.stdout
