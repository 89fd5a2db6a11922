"""3-D CNNs on volumes and multi-label models, end to end: score -> curve -> fine-tune -> metrics."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from workbench.explore.session import Explorer
from workbench.model.builders import build_model
from workbench.model.registry import get_kernels, prunable_layers
from workbench.model.train import Recipe, baseline
from workbench.prune.pruning import PruneSpec, apply_masks, fine_tune, make_masks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def volume_model(tiny_volume_dataset, tmp_path_factory):
    model, _ = baseline(
        tiny_volume_dataset, "seed_cnn3d", Recipe(epochs=2, seed=0), cache_dir=tmp_path_factory.mktemp("c")
    )
    return model


def test_seed_cnn3d_Conv3DKernels_ArePrunableUnitByUnit(volume_model):
    kinds = {info.name: info.shape for info in prunable_layers(volume_model)}
    assert kinds["conv1"] == (3, 3, 3, 1, 16) and kinds["conv2"] == (3, 3, 3, 16, 32)


def test_seed_cnn3d_OnVolumes_CurveAndMetricsAgreeWithScikitLearn(volume_model, tiny_volume_dataset):
    explorer = Explorer(volume_model, tiny_volume_dataset, calibration_size=16, grid_points=4)
    curve = explorer.curve(PruneSpec(criterion="gradient"))
    assert len(curve) >= 4 and curve["sparsity"].is_monotonic_increasing
    point = explorer.point(PruneSpec(criterion="gradient", sparsity=0.5))
    pruned = apply_masks(volume_model, point.result.keep)
    probs = pruned.predict(tiny_volume_dataset.test.images, verbose=0)
    expected = roc_auc_score(tiny_volume_dataset.test.labels, probs[:, 1])
    assert point.metrics["auc"] == pytest.approx(expected, abs=1e-6)


def test_seed_cnn3d_StructuredFineTune_KeepsPrunedFiltersExactlyZero(volume_model, tiny_volume_dataset):
    explorer = Explorer(volume_model, tiny_volume_dataset, calibration_size=16, grid_points=4)
    keep = make_masks(explorer.scorer, PruneSpec(granularity="structured", sparsity=0.5)).keep
    pruned = apply_masks(volume_model, keep, structured=True)
    fine_tune(pruned, keep, tiny_volume_dataset, Recipe(epochs=1, seed=0))
    kernels = get_kernels(pruned)
    for name, mask in keep.items():
        assert np.all(kernels[name][~mask] == 0), name
    assert any((~keep[name]).any() for name in ("conv1", "conv2"))  # whole Conv3D filters went


def test_build_model_VolumeBuilderOnImages_RaisesNamingTheShape(tiny_dataset):
    with pytest.raises(ValueError, match="seed_cnn3d.*takes volumes.*use seed_cnn or small_resnet"):
        build_model("seed_cnn3d", tiny_dataset)


def test_build_model_MultilabelData_EndsInOneSigmoidPerLabel(tiny_multilabel_dataset):
    model = build_model("seed_cnn", tiny_multilabel_dataset)
    assert model.layers[-1].units == 3 and model.layers[-1].activation.__name__ == "sigmoid"


def test_seed_cnn_MultilabelData_ExplorerGivesPerLabelAucs(tiny_multilabel_dataset, tmp_path):
    model, _ = baseline(tiny_multilabel_dataset, "seed_cnn", Recipe(epochs=1, seed=0), cache_dir=tmp_path)
    explorer = Explorer(model, tiny_multilabel_dataset, calibration_size=16, grid_points=3)
    metrics = explorer.point(PruneSpec(criterion="gradient", epsilon=0.0)).metrics
    probs = model.predict(tiny_multilabel_dataset.test.images, verbose=0)
    labels = tiny_multilabel_dataset.test.labels
    expected = [roc_auc_score(labels[:, j], probs[:, j]) for j in range(3)]
    np.testing.assert_allclose(metrics["auc_per_label"], expected, atol=1e-5)


def test_dashboard_MultilabelModel_DrawsWithoutAConfusionMatrix(tiny_multilabel_dataset, tmp_path):
    from workbench.view.dashboard import Dashboard

    model, _ = baseline(tiny_multilabel_dataset, "seed_cnn", Recipe(epochs=1, seed=0), cache_dir=tmp_path)
    explorer = Explorer(model, tiny_multilabel_dataset, calibration_size=16, grid_points=3)
    dash = Dashboard(explorer, point=explorer.point(PruneSpec(criterion="gradient", epsilon=0.0)))
    assert (
        dash.image.value[:4] == b"\x89PNG"
        and "multi-label" in dash.figure.axes["confusion"].texts[0].get_text()
    )


def test_dashboard_MultilabelModel_WithSlowPasses_ShowsMasksFirst_WithoutAConfusionMatrix(
    tiny_multilabel_dataset, tmp_path
):
    from workbench.view.dashboard import Dashboard

    model, _ = baseline(tiny_multilabel_dataset, "seed_cnn", Recipe(epochs=1, seed=0), cache_dir=tmp_path)
    slow = dict(calibration_size=16, grid_points=3, estimate_budget=1e-9)  # every pass is over budget
    explorer = Explorer(model, tiny_multilabel_dataset, **slow)
    dash = Dashboard(explorer, background=True)
    assert dash.point.pending, "the masks come first"
    dash.wait(60)
    assert dash.point.exact and "exact" in dash.readout.value
    texts = [text.get_text() for text in dash.figure.axes["confusion"].texts]
    assert texts == ["multi-label: per-label\nmetrics in the readout"], texts
