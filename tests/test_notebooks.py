"""Every notebook runs top to bottom under papermill with small parameters, and is committed clean.

All notebooks share one data folder (WORKBENCH_DATA), so the phantom volumes are generated once
and the 1-epoch baseline is trained once and then loaded from the cache by the others.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))

SMALL = {
    "01_explore_threshold.ipynb": {"epochs": 1, "grid_points": 6},
    "02_compare_criteria.ipynb": {
        "epochs": 1,
        "sparsities": [0.0, 0.5, 0.9],
        "finetune_sparsities": [0.9],
        "finetune_epochs": 1,
    },
    "03_finetune_and_schedules.ipynb": {"epochs": 1, "finetune_epochs": 1},
    "04_nifti_volumes.ipynb": {"epochs": 1, "finetune_epochs": 1},
    "05_teaching_gradient_pruning.ipynb": {
        "epochs": 1,
        "early_epochs": 1,
        "results_path": str(Path(tempfile.gettempdir()) / "workbench-test-results" / "05.json"),
    },
    "07_lab_worksheet.ipynb": {
        "epochs": 1,
        "results_path": str(Path(tempfile.gettempdir()) / "workbench-test-results" / "07.json"),
    },
    "06_sensitivity_and_budgets.ipynb": {
        "epochs": 1,
        "grid": [0.5, 0.9],
        "flops_budget": 0.5,
        "params_budget": 0.2,
        "tolerance": 0.05,
        "finetune_epochs": 1,
    },
}


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory, monkeypatch_module):
    folder = tmp_path_factory.mktemp("workbench-data")
    monkeypatch_module.setenv("WORKBENCH_DATA", str(folder))  # the kernels inherit it
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _run(name: str, tmp_path: Path, **parameters) -> nbformat.NotebookNode:
    out = tmp_path / name
    papermill.execute_notebook(
        str(NOTEBOOKS / name),
        str(out),
        parameters=parameters,
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        progress_bar=False,
    )
    return nbformat.read(out, as_version=4)


def _outputs(notebook, mime: str) -> list:
    return [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if mime in o.get("data", {})
    ]


def test_every_notebook_HasSmallParametersHere():
    assert [p.name for p in ALL] == sorted(SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_RunsHeadless_AndRecordsStaticFigures(name, shared_data, tmp_path):
    executed = _run(name, tmp_path, **SMALL[name])
    assert _outputs(executed, "image/png"), f"{name} left no static figure in a headless run"


@pytest.mark.slow
def test_explorer_notebook_WritesItsResults_WithTheUsersClassNames(shared_data, tmp_path):
    executed = _run(
        "01_explore_threshold.ipynb",
        tmp_path,
        **SMALL["01_explore_threshold.ipynb"],
        results_dir=str(tmp_path / "out"),
        class_names=["calm", "storm"],  # a user's own names for the classes of their data
    )
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "storm" in printed
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0.0 <= metrics["sparsity"] < 1.0 and metrics["criterion"] == "gradient"
    assert (
        (tmp_path / "out" / "layers.csv")
        .read_text()
        .startswith("layer,kind,shape,weights,pruned,sparsity,threshold")
    )


@pytest.mark.slow
def test_budgets_notebook_WritesItsResults_WithTheAllocationPickedAfterFineTuning(shared_data, tmp_path):
    name = "06_sensitivity_and_budgets.ipynb"
    _run(name, tmp_path, **SMALL[name], results_dir=str(tmp_path / "out"))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {a["method"] for a in metrics["allocations"]} == {"sensitivity", "uniform", "global"}
    assert 0.0 <= metrics["dense_test_auc"] <= 1.0
    picked = metrics["picked_after_fine_tune"]
    assert picked["flops"] <= SMALL[name]["flops_budget"] and 0.0 <= picked["tuned_val_auc"] <= 1.0
    assert (tmp_path / "out" / "layers.csv").read_text().startswith("criterion,row,target,sparsity")


@pytest.mark.slow
@pytest.mark.parametrize("head", ["one sigmoid", "multi-label"])
def test_budgets_notebook_OnAUsersModelWithAnotherHead_MeetsItsBudgets(head, shared_data, tmp_path):
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
    options = {**SMALL[name], "dataset": str(npz), "model": str(tmp_path / "mine.keras")}
    _run(name, tmp_path, **options, results_dir=str(tmp_path / "out"))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0.0 <= metrics["dense_test_auc"] <= 1.0
    assert all(0.0 <= a["test_auc"] <= 1.0 for a in metrics["allocations"])
    assert metrics["picked_after_fine_tune"]["flops"] <= SMALL[name]["flops_budget"]


@pytest.mark.slow
def test_teaching_notebook_StudentVersion_FailsAtTheFirstExercise(shared_data, tmp_path):
    from workbench.course.classroom import write_student_version

    student = write_student_version(NOTEBOOKS / "05_teaching_gradient_pruning.ipynb", tmp_path / "class")
    with pytest.raises(papermill.PapermillExecutionError, match="prune_mask is not written yet"):
        papermill.execute_notebook(
            str(student),
            str(tmp_path / "out.ipynb"),
            parameters={**SMALL[student.name], "results_path": str(tmp_path / "r.json")},
            cwd=str(NOTEBOOKS),
            kernel_name="python3",
            progress_bar=False,
        )


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
def test_explorer_notebook_UsersModelWithACustomLayer_OpensWithModelModules(shared_data, tmp_path):
    """A registered custom layer defined in the user's .py file: the kernel imports it (model_modules)."""
    from conftest import custom_layer_model_file, write_npz

    model, module = custom_layer_model_file(tmp_path)
    name = "01_explore_threshold.ipynb"
    options = {
        **SMALL[name],
        "dataset": str(write_npz(tmp_path / "mine.npz")),
        "model": str(model),
        "model_modules": [str(module)],
        "calibration_size": 16,
    }
    _run(name, tmp_path, **options, results_dir=str(tmp_path / "out"))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0.0 <= metrics["sparsity"] < 1.0
    layers = (tmp_path / "out" / "layers.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in layers[1:3]] == ["Conv2D", "Dense"]  # the prunable ones
    assert any(row.startswith("channel_attention") for row in layers), layers  # the user's layer, listed
