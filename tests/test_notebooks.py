"""Every notebook runs top to bottom under papermill with small parameters, and is committed clean.

All notebooks share one data folder (conftest's notebook_data), so the phantom volumes are generated
once and the 1-epoch baseline is trained once and then loaded from the cache by the others. Each
distinct run is executed once (conftest's run_notebook) and read by every test that checks it.
"""

from __future__ import annotations

import nbformat
import papermill
import pytest
from conftest import NOTEBOOKS, SHARED_RUN, SMALL_NOTEBOOK_PARAMETERS

LAB_SOURCES = NOTEBOOKS.glob("teacher/source/*/*.ipynb")  # the class lab's nbgrader sources
ALL = sorted([*NOTEBOOKS.glob("*.ipynb"), *LAB_SOURCES])
SMALL = SMALL_NOTEBOOK_PARAMETERS


def test_every_notebook_HasSmallParametersHere():
    assert sorted(str(p.relative_to(NOTEBOOKS)) for p in ALL) == sorted(SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_RunsHeadless_AndRecordsStaticFigures(name, run_notebook):
    executed = run_notebook(name, **SHARED_RUN.get(name, {}))
    assert executed.error is None, executed.error
    assert executed.outputs("image/png"), f"{name} left no static figure in a headless run"


@pytest.mark.slow
def test_explorer_notebook_WritesItsResults_WithTheUsersClassNames(run_notebook):
    name = "01_explore_threshold.ipynb"
    assert SHARED_RUN[name]["class_names"] == ["calm", "storm"]  # a user's own names for the classes
    executed = run_notebook(name, **SHARED_RUN[name])
    assert "storm" in executed.printed()
    metrics = executed.metrics
    assert 0.0 <= metrics["sparsity"] < 1.0 and metrics["criterion"] == "gradient"
    assert (
        (executed.results / "layers.csv")
        .read_text()
        .startswith("layer,kind,shape,weights,pruned,sparsity,threshold")
    )


@pytest.mark.slow
def test_budgets_notebook_WritesItsResults_WithTheAllocationPickedAfterFineTuning(run_notebook):
    name = "06_sensitivity_and_budgets.ipynb"
    executed = run_notebook(name)
    metrics = executed.metrics
    assert {a["method"] for a in metrics["allocations"]} == {"sensitivity", "uniform", "global"}
    assert 0.0 <= metrics["dense_test_auc"] <= 1.0
    picked = metrics["picked_after_fine_tune"]
    assert picked["flops"] <= SMALL[name]["flops_budget"] and 0.0 <= picked["tuned_val_auc"] <= 1.0
    assert (executed.results / "layers.csv").read_text().startswith("criterion,row,target,sparsity")


@pytest.mark.slow
@pytest.mark.parametrize("head", ["one sigmoid", "multi-label"])
def test_budgets_notebook_OnAUsersModelWithAnotherHead_MeetsItsBudgets(head, run_notebook, tmp_path):
    """A user's one-sigmoid or multi-label .keras and .npz: the test AUC comes from the model's own head."""
    from conftest import tiny_head_model, write_multilabel_npz, write_npz

    from workbench.data.dataset import load_npz
    from workbench.model.train import Recipe, compile_model, fit

    if head == "multi-label":
        npz, model = (
            write_multilabel_npz(tmp_path / "mine.npz", sizes=(60, 24, 24)),
            tiny_head_model(3, "sigmoid"),
        )
    else:
        npz, model = write_npz(tmp_path / "mine.npz", sizes=(60, 24, 24)), tiny_head_model(1, "sigmoid")
    fit(compile_model(model), load_npz(npz), Recipe(epochs=2, batch_size=8), progress=False)
    model.save(tmp_path / "mine.keras")
    name = "06_sensitivity_and_budgets.ipynb"
    executed = run_notebook(name, dataset=str(npz), model=str(tmp_path / "mine.keras"))
    metrics = executed.metrics
    assert 0.0 <= metrics["dense_test_auc"] <= 1.0
    assert all(0.0 <= a["test_auc"] <= 1.0 for a in metrics["allocations"])
    assert metrics["picked_after_fine_tune"]["flops"] <= SMALL[name]["flops_budget"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_IsCommittedWithoutOutputs_AndOneTaggedParametersCell(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} has {len(tagged)} cells tagged 'parameters'"
    lines = [line for line in tagged[0].source.splitlines() if line.strip()]
    assert all(": " in line and " = " in line and "  # " in line for line in lines), (
        "annotate and comment every parameter"
    )


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_EveryParameter_IsOnePapermillCanRead(path):
    """A second '=' in a comment ("empty = your login name") hid that parameter from papermill, so a
    sweep refused it as unknown and ``--help-notebook`` did not list it."""
    import ast

    cells = nbformat.read(path, as_version=4).cells
    tagged = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
    assigned = [node.target.id for node in ast.parse(tagged.source).body if isinstance(node, ast.AnnAssign)]
    assert list(papermill.inspect_notebook(str(path))) == assigned


@pytest.mark.slow
def test_explorer_notebook_UsersModelWithACustomLayer_OpensWithModelModules(run_notebook, tmp_path):
    """A registered custom layer defined in the user's .py file: the kernel imports it (model_modules)."""
    from conftest import custom_layer_model_file, write_npz

    model, module = custom_layer_model_file(tmp_path)
    name = "01_explore_threshold.ipynb"
    options = {
        "dataset": str(write_npz(tmp_path / "mine.npz")),
        "model": str(model),
        "model_modules": [str(module)],
        "calibration_size": 16,
    }
    executed = run_notebook(name, **options)
    assert 0.0 <= executed.metrics["sparsity"] < 1.0
    layers = (executed.results / "layers.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in layers[1:3]] == ["Conv2D", "Dense"]  # the prunable ones
    assert any(row.startswith("channel_attention") for row in layers), layers  # the user's layer, listed
