"""Checks on the real chest X-rays beside the checkout; skipped cleanly on a clone without them."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.core.paths import SHARED_PNEUMONIA

pytestmark = pytest.mark.skipif(not SHARED_PNEUMONIA.is_file(), reason=f"{SHARED_PNEUMONIA} is not present")


def test_pneumoniamnist_LoadsWithOfficialClassNamesAndBalancedSplits():
    from workbench.data.sources import load_dataset

    data = load_dataset(SHARED_PNEUMONIA)
    assert data.class_names == ("normal", "pneumonia")
    assert data.image_shape == (28, 28, 1)
    assert [len(s) for s in data.splits().values()] == [2428, 270, 468]
    assert np.bincount(data.test.labels).tolist() == [234, 234]


@pytest.mark.slow
def test_trained_seed_cnn_HasMostlyExactlyZeroGradients_OnRealXrays(tmp_path):
    """The issue's claim: after training, over half the weights have exactly zero accumulated gradient."""
    from workbench.data.sources import load_dataset
    from workbench.model.train import Recipe, baseline
    from workbench.prune.scores import Scorer

    data = load_dataset(SHARED_PNEUMONIA)
    model, _ = baseline(data, "seed_cnn", Recipe(), cache_dir=tmp_path, progress=False)
    scores = Scorer(model, data.train.images[:512], data.train.labels[:512]).scores("gradient")
    zero = sum(int((s == 0).sum()) for s in scores.values()) / sum(s.size for s in scores.values())
    assert zero > 0.5
