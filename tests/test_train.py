"""Seeded training and the atomic baseline cache."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import train
from workbench.train import Recipe, baseline

QUICK = Recipe(epochs=1, batch_size=16, seed=0)


def _weights_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_baseline_SameSeed_GivesIdenticalWeights(tmp_path, tiny_dataset):
    first, history = baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path / "a", progress=False)
    second, _ = baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path / "b", progress=False)
    assert _weights_equal(first, second)
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_baseline_DifferentSeed_GivesDifferentWeights(tmp_path, tiny_dataset):
    first, _ = baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path, progress=False)
    other, _ = baseline(tiny_dataset, "seed_cnn", Recipe(epochs=1, batch_size=16, seed=1), cache_dir=tmp_path)
    assert not _weights_equal(first, other)


def test_baseline_SecondCall_LoadsFromCacheWithoutTraining(tmp_path, tiny_dataset, monkeypatch):
    trained, history = baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("retrained a cached baseline"))
    cached, cached_history = baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path, progress=False)
    assert _weights_equal(trained, cached)
    assert cached_history == history


def test_baseline_KilledWhileSaving_LeavesNoCacheEntry(tmp_path, tiny_dataset, monkeypatch):
    def crash_mid_write(model, path, *args, **kwargs):
        with open(path, "wb") as partial:
            partial.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr("keras.Model.save", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.glob("*.keras")) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".partial")] == []


def test_baseline_UserModelFile_IsTrainedAndCachedByItsBytes(tmp_path, tiny_dataset):
    from workbench.models import seed_cnn

    path = tmp_path / "mine.keras"
    seed_cnn((24, 24, 1), 2).save(path)
    model, _ = baseline(tiny_dataset, path, QUICK, cache_dir=tmp_path / "cache", progress=False)
    assert model.output_shape == (None, 2)
    assert len(list((tmp_path / "cache").glob("mine-*.keras"))) == 1


def test_baseline_LearnsTheTinyTask(tmp_path, tiny_dataset):
    model, _ = baseline(
        tiny_dataset, "seed_cnn", Recipe(epochs=6, batch_size=8), cache_dir=tmp_path, progress=False
    )
    accuracy = (
        model.predict(tiny_dataset.test.images, verbose=0).argmax(1) == tiny_dataset.test.labels
    ).mean()
    assert accuracy >= 0.75


@pytest.mark.parametrize(("field", "value"), [("epochs", 0), ("batch_size", -1), ("learning_rate", 0.0)])
def test_recipe_BadValues_RaiseValueErrorNamingField(field, value):
    with pytest.raises(ValueError, match=field):
        Recipe(**{field: value})
