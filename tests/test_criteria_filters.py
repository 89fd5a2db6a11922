"""The filter criteria, FPGM and HRank, against slow, obviously correct references."""

from __future__ import annotations

import html

import numpy as np
import pytest
from conftest import tiny_cnn, tiny_resnet

from workbench.core.errors import Cancelled, WorkbenchError
from workbench.model.compat import keras
from workbench.model.registry import get_kernels
from workbench.prune import scores as scores_module
from workbench.prune.pruning import PruneSpec, make_masks
from workbench.prune.scores import Scorer


@pytest.fixture(scope="module")
def calibration(tiny_dataset):
    return tiny_dataset.train.images[:20], tiny_dataset.train.labels[:20]


def _reference_fpgm(kernel: np.ndarray) -> np.ndarray:
    """Each output filter's summed Euclidean distance to every other filter, in plain loops."""
    filters = [kernel[..., j].ravel().astype(np.float64) for j in range(kernel.shape[-1])]
    return np.array([sum(np.linalg.norm(f - g) for g in filters) for f in filters])


def _reference_hrank(model, images, taps: dict[str, str]) -> dict[str, np.ndarray]:
    """Mean over images of np.linalg.matrix_rank of each channel's map at the hand-named layer."""
    ranks = {}
    for name, tap in taps.items():
        probe = keras.Model(model.inputs[0], model.get_layer(tap).output)
        per_image = []
        for image in images:
            maps = np.asarray(probe(image[None], training=False))[0]
            maps = maps.reshape(1, 1, -1) if maps.ndim == 1 else maps  # a Dense unit: a 1x1 map
            per_image.append([np.linalg.matrix_rank(maps[:, :, c]) for c in range(maps.shape[-1])])
        ranks[name] = np.mean(per_image, axis=0)
    return ranks


def test_fpgm_IsEachFiltersSummedDistanceToTheOthers(calibration):
    model = tiny_cnn()
    got = Scorer(model, *calibration).scores("fpgm", "structured")
    for name, kernel in get_kernels(model).items():
        np.testing.assert_allclose(got[name], _reference_fpgm(kernel), rtol=1e-10)


def test_fpgm_DuplicatedFilter_IsTheOnePruned(calibration):
    model = tiny_cnn()
    conv2 = model.get_layer("conv2")
    kernel, bias = conv2.get_weights()
    kernel[..., 6] = kernel[..., 3]  # filter 6 duplicates filter 3: one of the two is redundant
    conv2.set_weights([kernel, bias])
    spec = PruneSpec(criterion="fpgm", granularity="structured", scope="layerwise", sparsity=0.125)
    keep = make_masks(Scorer(model, *calibration), spec).keep["conv2"]
    pruned = np.flatnonzero(~keep.reshape(-1, 8).any(axis=0))
    assert len(pruned) == 1 and pruned[0] in (3, 6)


def test_hrank_IsTheMeanMatrixRankOfEachUnitsMap(calibration):
    model = tiny_cnn()
    got = Scorer(model, *calibration, batch_size=8).scores("hrank", "structured")  # 3 batches
    want = _reference_hrank(model, calibration[0], {n: n for n in ("conv1", "conv2", "fc", "out")})
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-12)


def test_hrank_ReadsTheMapAfterItsBatchNormAndActivation(calibration):
    model = tiny_resnet()
    got = Scorer(model, *calibration).scores("hrank", "structured")
    taps = {  # read off the model: conv -> BN -> ReLU, or conv -> BN -> Add (stop at the join)
        "stem_conv": "stem_relu",
        "block1_a_conv": "block1_relu1",
        "block1_b_conv": "block1_b_bn",
        "block2_a_conv": "block2_relu1",
        "block2_proj_conv": "block2_proj_bn",
    }
    want = _reference_hrank(model, calibration[0], taps)
    for name in taps:
        np.testing.assert_allclose(got[name], want[name], atol=1e-12)


@pytest.mark.parametrize("criterion", ["fpgm", "hrank"])
def test_filter_criterion_AskedUnstructured_RaisesNamingCriterionAndGranularity(criterion, calibration):
    scorer = Scorer(tiny_cnn(), *calibration)
    with pytest.raises(WorkbenchError, match=rf"criterion '{criterion}'.*granularity='unstructured'"):
        make_masks(scorer, PruneSpec(criterion=criterion, sparsity=0.5))


def test_hrank_ReportsProgressPerBatch_AndStopsWhenCancelled(calibration):
    calls = []
    Scorer(tiny_cnn(), *calibration, batch_size=8).ranks(lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]

    def cancel(done, total):
        if done == 1:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        Scorer(tiny_cnn(), *calibration, batch_size=8).ranks(cancel)


def test_hrank_CachedOnDisk_ReopenedScorerRunsNoPass(calibration, tmp_path, monkeypatch):
    model = tiny_cnn()
    first = Scorer(model, *calibration, cache_dir=tmp_path).scores("hrank", "structured")
    assert len(list(tmp_path.glob("activations-*.npz"))) == 1
    monkeypatch.setattr(scores_module, "feature_map_ranks", lambda *a, **k: pytest.fail("ran a pass"))
    again = Scorer(model, *calibration, cache_dir=tmp_path).scores("hrank", "structured")
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])


def test_dashboard_OffersTheFilterCriteria_StructuredOnly(trained_tiny):
    from workbench.explore.session import Explorer
    from workbench.view.dashboard import Dashboard

    model, data = trained_tiny
    dash = Dashboard(Explorer(model, data, calibration_size=32, grid_points=6))
    assert {"fpgm", "hrank"} <= set(dash.controls["criterion"].options)
    dash.controls["criterion"].value = "hrank"  # granularity is still unstructured
    message = html.unescape(dash.message.value)
    assert "criterion 'hrank'" in message and "granularity must be 'structured'" in message
    dash.controls["granularity"].value = "structured"
    assert dash.point.spec.criterion == "hrank" and dash.message.value == ""
    assert dash.controls["epsilon"].description == "ε on mean feature-map rank"
