"""The sensitivity table: one row pruned at a time, AUC drops with intervals, cached and resumable."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import three_class_dataset, tiny_cnn, tiny_resnet, write_npz  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from workbench.analysis.sensitivity import (
    Subject,
    dense_keep,
    output_distortion,
    row_keep,
    sensitivity,
    sensitivity_rows,
)
from workbench.core.cache import KINDS  # noqa: E402
from workbench.data.dataset import load_npz  # noqa: E402
from workbench.prune.pruning import apply_masks  # noqa: E402
from workbench.prune.slim import coupled_groups  # noqa: E402
from workbench.view import plots  # noqa: E402

GRID = (0.25, 0.5, 0.9)


@pytest.fixture
def subject(trained_tiny):
    model, data = trained_tiny
    return Subject.build(model, data)


@pytest.fixture(scope="module")
def resnet_subject(tiny_dataset):
    return Subject.build(tiny_resnet(), tiny_dataset)


def test_rows_Unstructured_AreThePrunableLayers(subject):
    rows = sensitivity_rows(subject, "unstructured")
    assert [r.name for r in rows] == [i.name for i in subject.scorer.infos]


def test_rows_Structured_JoinCoupledGroups_AndLeaveOutTheOutputLayer(resnet_subject):
    rows = sensitivity_rows(resnet_subject, "structured")
    groups = {tuple(r.layers) for r in rows if len(r.layers) > 1}
    assert groups == set(coupled_groups(resnet_subject.model))
    assert "logits" not in {name for r in rows for name in r.layers}
    covered = sorted(name for r in rows for name in r.layers)
    assert covered == sorted(i.name for i in resnet_subject.scorer.infos[:-1])


def test_row_keep_CoupledGroup_PrunesTheSameChannelsInEveryMember_AndKeepsTheGuard(resnet_subject):
    scores = resnet_subject.scorer.scores("taylor", "structured")
    row = next(r for r in sensitivity_rows(resnet_subject, "structured") if len(r.layers) > 1)
    keep = row_keep(scores, row, 0.9, resnet_subject.scorer.infos, min_keep=3)
    alive = [keep[name].reshape(-1, keep[name].shape[-1]).any(axis=0) for name in row.layers]
    assert all(np.array_equal(alive[0], a) for a in alive)
    assert alive[0].sum() == 3  # 90% of 4 or 8 channels would leave fewer: the guard holds


def test_cell_AUC_EqualsSklearnOnTheReallyPrunedModel(subject, tmp_path):
    table = sensitivity(
        subject, "magnitude", "unstructured", GRID, baseline=False, cache=tmp_path, progress=False
    )
    cell = table.cells.iloc[4]
    row = next(r for r in table.rows if r.name == cell["row"])
    keep = {
        **dense_keep(subject.scorer.infos),
        **row_keep(subject.scorer.scores("magnitude"), row, cell["target"], subject.scorer.infos),
    }
    probs = apply_masks(subject.model, keep).predict(subject.val.images, verbose=0)[:, 1]
    assert cell["auc"] == pytest.approx(roc_auc_score(subject.val.labels, probs), abs=1e-6)
    assert cell["low"] <= cell["auc"] <= cell["high"]
    assert cell["drop_low"] <= cell["drop"] <= cell["drop_high"]
    assert cell["drop"] == pytest.approx(table.dense["auc"] - cell["auc"], abs=1e-9)
    dense = subject.model.predict(subject.val.images, verbose=0)
    pruned = apply_masks(subject.model, keep).predict(subject.val.images, verbose=0)
    assert cell["distortion"] == pytest.approx(output_distortion(dense, pruned), rel=1e-4)


def test_output_distortion_IsTheMeanSquaredChangeOfCentredLogits():
    dense = np.array([[0.5, 0.5], [0.2, 0.8]])
    assert output_distortion(dense, dense) == 0.0
    # first image: logits 0, 0 -> ±log(9)/2; second image unchanged
    pruned = np.array([[0.1, 0.9], [0.2, 0.8]])
    assert output_distortion(dense, pruned) == pytest.approx((np.log(9) / 2) ** 2 / 2)
    # it keeps growing where an AUC would have saturated: a confidently wrong output costs more
    worse = np.array([[0.001, 0.999], [0.2, 0.8]])
    assert output_distortion(dense, worse) > output_distortion(dense, pruned)


def test_distortion_IsRecordedInEveryCell_AndGrowsWithSparsity(subject, tmp_path):
    table = sensitivity(
        subject, "magnitude", "unstructured", (0.1, 0.9, 0.99), baseline=False, cache=tmp_path, progress=False
    )
    distortion = table.matrix(value="distortion")
    assert (distortion.to_numpy() >= 0).all()
    assert (distortion[0.99] > distortion[0.1]).all(), "every layer distorts more when pruned harder"


def test_table_HasEveryCell_WithTheRandomBaselineRow(subject, tmp_path):
    table = sensitivity(subject, "snip", "unstructured", GRID, cache=tmp_path, progress=False)
    assert set(table.cells["criterion"]) == {"snip", "random"}
    assert table.matrix().shape == (len(table.rows), len(GRID))
    assert table.with_baseline_row().index[-1].startswith("random")
    assert table.computed == 2 * len(table.rows) * len(GRID)


def test_cache_SecondCall_ComputesNothing_AndNewWeights_Recompute(subject, tmp_path):
    first = sensitivity(subject, "snip", "unstructured", GRID, cache=tmp_path, progress=False)
    again = sensitivity(subject, "snip", "unstructured", GRID, cache=tmp_path, progress=False)
    assert again.computed == 0 and again.cells.equals(first.cells)
    kernel = subject.model.layers[0].kernel
    kernel.assign(np.asarray(kernel) * 0.5)
    changed = Subject(
        subject.model,
        subject.val,
        type(subject.scorer)(subject.model, subject.scorer.images, subject.scorer.labels),
        subject.evaluator,
    )
    assert sensitivity(changed, "snip", "unstructured", GRID, cache=tmp_path, progress=False).computed > 0


def test_cache_FromOlderCode_IsNotReopened(subject, tmp_path, monkeypatch):
    sensitivity(subject, "snip", "unstructured", GRID, cache=tmp_path, progress=False)
    bumped = replace(KINDS["sensitivity"], version=999)  # as a code change to cells
    monkeypatch.setitem(KINDS, "sensitivity", bumped)
    assert sensitivity(subject, "snip", "unstructured", GRID, cache=tmp_path, progress=False).computed > 0


def test_bad_input_NamesTheArgument(subject, tmp_path):
    with pytest.raises(ValueError, match="grid"):
        sensitivity(subject, "snip", grid=[0.5, 1.0], cache=tmp_path)
    with pytest.raises(
        ValueError, match=r"grid must be a list .* got the text '\[0.5, 0.9\]' \(with papermill"
    ):
        sensitivity(subject, "snip", grid="[0.5, 0.9]", cache=tmp_path)  # what papermill's -p passes
    with pytest.raises(ValueError, match="grid must be a list of sparsities"):
        sensitivity(subject, "snip", grid=[0.5, "most"], cache=tmp_path)
    with pytest.raises(ValueError, match="criterion"):
        sensitivity(subject, "bogus", cache=tmp_path)
    with pytest.raises(ValueError, match="min_keep"):
        sensitivity(subject, "snip", grid=GRID, min_keep=0, cache=tmp_path)


def test_bad_input_ValidationWithOneClass_SaysBothClassesAreNeeded(trained_tiny, tmp_path):
    from dataclasses import replace

    from workbench.data.dataset import Split

    model, data = trained_tiny
    one_class = Split(data.val.images, np.zeros_like(data.val.labels), data.val.sources)
    subject = Subject.build(model, replace(data, val=one_class))
    with pytest.raises(
        ValueError, match="needs both classes in the validation labels; they hold only class 0 "
    ):
        sensitivity(subject, "snip", grid=GRID, cache=tmp_path)


SLOW_RUN = """
import sys, time
sys.path.insert(0, {tests!r})
from conftest import tiny_cnn
import workbench.analysis.sensitivity as sensitivity_module
from workbench.data.dataset import load_npz
original = sensitivity_module.cell_metrics
def slow(*args, **kwargs):
    time.sleep(0.3)
    return original(*args, **kwargs)
sensitivity_module.cell_metrics = slow
subject = sensitivity_module.Subject.build(tiny_cnn(), load_npz({data!r}))
sensitivity_module.sensitivity(
    subject, "magnitude", "unstructured", {grid!r}, cache={cache!r}, progress=False
)
"""


def test_resume_AfterAKill_ComputesOnlyTheMissingCells(tmp_path):
    data_path, cache = write_npz(tmp_path / "d.npz"), tmp_path / "cache"
    grid = (0.1, 0.3, 0.5, 0.7, 0.9)
    script = SLOW_RUN.format(
        tests=str(Path(__file__).parent), data=str(data_path), grid=grid, cache=str(cache)
    )
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])
    deadline = time.time() + 120
    while len(list(cache.glob("*/*--*.json"))) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(cache.glob("*/*--*.json")))
    subject = Subject.build(tiny_cnn(), load_npz(data_path))
    total = 2 * len(subject.scorer.infos) * len(grid)
    assert 3 <= done < total, "the run was not killed mid-way"
    resumed = sensitivity(subject, "magnitude", "unstructured", grid, cache=cache, progress=False)
    assert resumed.computed == total - done
    fresh = sensitivity(subject, "magnitude", "unstructured", grid, cache=tmp_path / "fresh", progress=False)
    assert np.allclose(resumed.cells["auc"], fresh.cells["auc"])


def test_dask_ComputesTheSameCells_IntoTheSameCache(subject, tmp_path):
    distributed = pytest.importorskip("distributed")
    local = sensitivity(subject, "snip", "unstructured", GRID, cache=tmp_path / "local", progress=False)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        remote = sensitivity(
            subject,
            "snip",
            "unstructured",
            GRID,
            cache=tmp_path / "dask",
            dask_address=cluster.scheduler_address,
            progress=False,
        )
    assert remote.computed == local.computed
    assert np.allclose(remote.cells["auc"], local.cells["auc"])
    again = sensitivity(subject, "snip", "unstructured", GRID, cache=tmp_path / "dask", progress=False)
    assert again.computed == 0


def test_heatmap_DrawsOneRowPerLayer_AndMarksTheAllocation(subject, tmp_path):
    table = sensitivity(subject, "snip", "unstructured", GRID, cache=tmp_path, progress=False)
    matrix = table.with_baseline_row()
    ax = plots.sensitivity_heatmap(matrix, allocated={table.rows[0].name: 0.5})
    assert ax.images[0].get_array().shape == matrix.shape
    assert [t.get_text() for t in ax.get_yticklabels()] == list(matrix.index)
    assert ax.lines[0].get_xdata()[0] == 1 and ax.lines[0].get_ydata()[0] == 0


def test_a_model_at_chance_IsWarnedAbout_ATrainedOneIsNot(subject, tiny_dataset, tmp_path):
    import warnings

    options = dict(grid=(0.5,), cache=tmp_path, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trained model: no warning
        sensitivity(subject, "magnitude", **options)
    blind = tiny_cnn()
    out = blind.get_layer("out")
    out.kernel.assign(np.zeros(out.kernel.shape))  # every image gets the same output: AUC 0.5
    with pytest.warns(UserWarning, match="not distinguishable from chance.*recalibrate_batchnorm"):
        sensitivity(Subject.build(blind, tiny_dataset), "magnitude", **options)


# --- multi-label and multi-class models: ranked by the macro AUC on validation ------------------


def quadrant_classes(classes: int = 3, sizes=(60, 30, 30), size: int = 24, seed: int = 0):
    """A learnable C-class Dataset: class k puts a bright square in quadrant k."""
    from workbench.data.dataset import Dataset, Split

    rng = np.random.default_rng(seed)
    splits = []
    for n in sizes:
        labels = np.arange(n) % classes
        images = rng.uniform(0.0, 0.4, size=(n, size, size, 1)).astype(np.float32)
        half = size // 2
        for image, k in zip(images, labels, strict=True):
            top, left = (k // 2) * half + 2, (k % 2) * half + 2
            image[top : top + 6, left : left + 6] = 0.95
        splits.append(Split(images, labels, np.array([f"q:{i}" for i in range(n)])))
    return Dataset("quadrants", *splits, class_names=tuple(f"class{k}" for k in range(classes)))


@pytest.fixture(scope="module", params=["multilabel", "multiclass"])
def macro_subject(request):
    from conftest import multilabel_dataset, tiny_head_model

    from workbench.model.train import Recipe, compile_model, fit

    if request.param == "multilabel":
        data, model = multilabel_dataset(), tiny_head_model(3, "sigmoid")
    else:
        data, model = quadrant_classes(), tiny_head_model(3, "softmax")
    fit(compile_model(model), data, Recipe(epochs=3, batch_size=8), progress=False)
    return Subject.build(model, data), data


def _sklearn_macro_auc(labels, probs):
    multi_class = {} if labels.ndim == 2 else {"multi_class": "ovr"}
    return roc_auc_score(labels, probs, average="macro", **multi_class)


def test_macro_tasks_CellAUC_IsSklearnsMacroAUC_OfTheReallyPrunedModel(macro_subject, tmp_path):
    subject, data = macro_subject
    table = sensitivity(
        subject, "taylor", "unstructured", GRID, baseline=False, cache=tmp_path, progress=False
    )
    dense = subject.model.predict(data.val.images, verbose=0)
    assert table.dense["auc"] == pytest.approx(_sklearn_macro_auc(data.val.labels, dense), abs=1e-9)
    assert table.dense["auc"] > 0.6, "the fixture should learn its task"
    cell = table.cells.iloc[-1]  # the output layer at 90%
    row = next(r for r in table.rows if r.name == cell["row"])
    keep = {
        **dense_keep(subject.scorer.infos),
        **row_keep(subject.scorer.scores("taylor"), row, cell["target"], subject.scorer.infos),
    }
    pruned = apply_masks(subject.model, keep).predict(data.val.images, verbose=0)
    assert cell["auc"] == pytest.approx(_sklearn_macro_auc(data.val.labels, pruned), abs=1e-6)
    assert cell["low"] <= cell["auc"] <= cell["high"] and cell["low"] < cell["high"]
    assert cell["drop_low"] <= cell["drop"] <= cell["drop_high"]
    assert cell["drop"] == pytest.approx(table.dense["auc"] - cell["auc"], abs=1e-9)


def test_macro_tasks_Budget_IsMet_AndItsAUCIsSklearns(macro_subject, tmp_path):
    from workbench.analysis.budget import allocate

    subject, data = macro_subject
    allocation = allocate(subject, "params", 0.4, grid=GRID, cache=tmp_path)
    assert allocation.params <= 0.4 + 1e-9
    pruned = apply_masks(subject.model, allocation.keep).predict(data.val.images, verbose=0)
    assert allocation.val_auc == pytest.approx(_sklearn_macro_auc(data.val.labels, pruned), abs=1e-6)


def test_multilabel_ALabelWithOneClassInValidation_IsLeftOutWithAWarning(tmp_path):
    from dataclasses import replace

    from conftest import multilabel_dataset, tiny_head_model

    from workbench.data.dataset import Split

    data = multilabel_dataset()
    labels = data.val.labels.copy()
    labels[:, 1] = 0
    data = replace(data, val=Split(data.val.images, labels, data.val.sources))
    subject = Subject.build(tiny_head_model(3, "sigmoid"), data)
    with pytest.warns(UserWarning, match=r"labels \[1\] hold one class in validation"):
        table = sensitivity(subject, "magnitude", grid=(0.5,), baseline=False, cache=tmp_path, progress=False)
    probs = subject.model.predict(data.val.images, verbose=0)
    expected = roc_auc_score(labels[:, [0, 2]], probs[:, [0, 2]], average="macro")
    assert table.dense["auc"] == pytest.approx(expected, abs=1e-9)
    assert table.left_out == (1,)  # what the goal readout names

    from types import SimpleNamespace

    from workbench.view.dashboard import goal_text

    allocation = SimpleNamespace(
        goal="tolerance", value=0.02, granularity="unstructured", flops=0.5, params=0.4, val_drop=0.01
    )
    allocation.candidate, allocation.tuned_val_auc = "table", None
    spec = SimpleNamespace(criterion="taylor")
    point = SimpleNamespace(allocation=allocation, spec=spec, sensitivity=table)
    assert "leaves out labels [1], which hold one class in validation" in goal_text(point)


def test_multiclass_AClassMissingFromValidation_IsNamed(tmp_path):
    from dataclasses import replace

    from conftest import tiny_head_model

    from workbench.data.dataset import Split

    data = quadrant_classes()
    val = data.val
    keep = val.labels != 2
    data = replace(data, val=Split(val.images[keep], val.labels[keep], val.sources[keep]))
    subject = Subject.build(tiny_head_model(3, "softmax"), data)
    with pytest.raises(ValueError, match=r"validation labels miss class\(es\) \[2\]"):
        sensitivity(subject, "magnitude", grid=(0.5,), cache=tmp_path, progress=False)


def test_output_distortion_OfAMultilabelModel_IsTheChangeOfEachLabelsLogit():
    """Centred log-probabilities across labels ranked a collapsed positive label 5x below a small change."""
    dense = np.array([[0.99, 0.001, 0.5]] * 2)
    collapsed, nudged = dense.copy(), dense.copy()
    collapsed[:, 0], nudged[:, 1] = 0.5, 0.0046

    def logit(p):
        return np.log(p / (1 - p))

    expected = np.mean((logit(collapsed) - logit(dense)) ** 2)
    assert output_distortion(dense, collapsed, multilabel=True) == pytest.approx(expected)
    assert output_distortion(dense, collapsed, multilabel=True) > output_distortion(
        dense, nudged, multilabel=True
    )


def test_damaged_cache_cell_IsComputedAgain_WithAWarningNamingIt(trained_tiny, tmp_path):
    """A truncated cell file (a disk that filled up, a half-copied cache) raised a bare JSONDecodeError."""
    subject = Subject.build(*trained_tiny)
    first = sensitivity(subject, "taylor", "structured", (0.5,), cache=tmp_path, progress=False)
    damaged = sorted(first.folder.glob("taylor--*.json"))[0]
    damaged.write_text("")
    with pytest.warns(UserWarning, match=f"damaged sensitivity cache file .*{damaged.name}"):
        again = sensitivity(subject, "taylor", "structured", (0.5,), cache=tmp_path, progress=False)
    assert again.computed == 1
    pd.testing.assert_frame_equal(again.cells, first.cells)


def test_progress_False_ShowsNoBar_ForTheGradientPassEither(trained_tiny, tmp_path, monkeypatch):
    """sensitivity(progress=False) still showed the gradient pass's tqdm bar on a large model."""
    from workbench.prune import scores as scores_module

    handed, gradient_stats = [], scores_module.gradient_stats

    def recording(*args, **kwargs):
        handed.append(args[5] if len(args) > 5 else kwargs.get("progress"))
        return gradient_stats(*args, **kwargs)

    monkeypatch.setattr(scores_module, "gradient_stats", recording)
    sensitivity(Subject.build(*trained_tiny), "taylor", "structured", (0.5,), cache=tmp_path, progress=False)
    assert handed and all(callable(progress) for progress in handed)  # None would mean a tqdm bar


def test_subject_build_ModelForOtherClasses_IsRefusedAsNotFittingTheData(trained_tiny):
    """As in the Explorer: a 2-class model on 3-class data blamed the Scorer's calibration labels."""
    model, data = trained_tiny
    with pytest.raises(ValueError, match=r"model: a softmax head over 2 unit\(s\).*does not fit three"):
        Subject.build(model, three_class_dataset(data))
