"""Seeded training and the atomic baseline cache."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import write_npz

from workbench.data.dataset import load_npz
from workbench.model import train
from workbench.model.compat import keras
from workbench.model.train import Recipe, baseline, recalibrate_batchnorm

QUICK = Recipe(epochs=1, batch_size=16, seed=0)


def _weights_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


@pytest.fixture(scope="module")
def quick(tiny_dataset, tmp_path_factory):
    """The QUICK seed_cnn baseline, trained once: (model, history, the cache folder it went to).
    Tests that only read a cached baseline copy the folder (``cached_copy``) instead of training."""
    folder = tmp_path_factory.mktemp("quick")
    model, history = baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=folder, progress=False)
    return model, history, folder


def cached_copy(quick, folder: Path) -> Path:
    """A copy of the QUICK baseline's cache files in ``folder`` (as if trained there)."""
    import shutil

    return shutil.copytree(quick[2], folder, dirs_exist_ok=True)


def test_baseline_SameSeed_GivesIdenticalWeights(tmp_path, tiny_dataset, quick):
    first, history, _ = quick
    second, _ = baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path / "b", progress=False)
    assert _weights_equal(first, second)
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_baseline_DifferentSeed_GivesDifferentWeights(tmp_path, tiny_dataset, quick):
    cached_copy(quick, tmp_path)  # seed 0's baseline in the same cache: seed 1 must not be read from it
    other, _ = baseline(tiny_dataset, "seed_cnn", Recipe(epochs=1, batch_size=16, seed=1), cache_dir=tmp_path)
    assert not _weights_equal(quick[0], other)


def test_baseline_SecondCall_LoadsFromCacheWithoutTraining(tmp_path, tiny_dataset, monkeypatch, quick):
    trained, history, _ = quick
    cached_copy(quick, tmp_path)
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("retrained a cached baseline"))
    cached, cached_history = baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path, progress=False)
    assert _weights_equal(trained, cached)
    assert cached_history == history


@pytest.mark.parametrize("damage", ['{"loss": "n/a"}', "[1, 2]", '{"loss": [0.5, NaN]}', '{"loss": [0.'])
def test_baseline_DamagedCachedHistory_IsWarnedAboutByName_ModelStillLoads(
    tmp_path, tiny_dataset, damage, quick
):
    trained = quick[0]
    cached_copy(quick, tmp_path)
    (history_file,) = tmp_path.glob("*.history.json")
    history_file.write_text(damage)
    with pytest.warns(UserWarning, match=re.escape(str(history_file))):
        cached, history = baseline(tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path, progress=False)
    assert _weights_equal(trained, cached) and history == {}


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


def test_baseline_UserModelFile_WhenAskedToTrain_IsTrainedAndCachedByItsBytes(tmp_path, tiny_dataset):
    from workbench.model.builders import seed_cnn

    path = tmp_path / "mine.keras"
    seed_cnn((24, 24, 1), 2).save(path)
    model, history = baseline(
        tiny_dataset, path, QUICK, cache_dir=tmp_path / "cache", progress=False, train_user_model=True
    )
    assert model.output_shape == (None, 2)
    assert len(history["loss"]) == QUICK.epochs
    assert len(list((tmp_path / "cache").glob("baseline-mine-*.keras"))) == 1


def test_baseline_UserModelFile_IsExploredAsGiven_WeightsUntouched(tmp_path, tiny_dataset, monkeypatch):
    from workbench.model.builders import seed_cnn
    from workbench.model.compat import keras

    path = tmp_path / "mine.keras"
    original = seed_cnn((24, 24, 1), 2)
    original.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained the user's model"))
    model, history = baseline(tiny_dataset, path, QUICK, cache_dir=tmp_path / "cache", progress=False)
    assert history == {}
    assert _weights_equal(model, original)
    assert _weights_equal(model, keras.models.load_model(path, compile=False))
    assert path.read_bytes() == before
    assert not (tmp_path / "cache").exists()


def test_baseline_LoadedFromCache_GivesTheSameScoresAndMetrics_AsInAnotherProcess(tmp_path, tiny_dataset):
    """The ε grid must not move between the run that trained a baseline and one that loads it.

    The cache is loaded in a fresh process (where nothing has trained, so nothing else turned
    TensorFlow's op determinism on) and its gradient scores and metrics compared bit for bit.
    """
    import subprocess
    import sys

    from workbench.analysis.curves import Evaluator
    from workbench.prune.scores import Scorer

    npz = tmp_path / "tiny.npz"
    write_npz(npz)
    data = load_npz(npz, class_names=("plain", "square"))
    model, _ = baseline(data, "seed_cnn", QUICK, cache_dir=tmp_path / "cache", progress=False)
    scores = Scorer(model, data.train.images, data.train.labels).scores("gradient")
    auc = Evaluator(model, data.val, data.test).dense_metrics["auc"]
    script = f"""
import numpy as np
from workbench.data.dataset import load_npz
from workbench.prune.scores import Scorer
from workbench.analysis.curves import Evaluator
from workbench.model.train import Recipe, baseline
data = load_npz({str(npz)!r}, class_names=("plain", "square"))
recipe = Recipe(epochs=1, batch_size=16, seed=0)
model, _ = baseline(data, "seed_cnn", recipe, cache_dir={str(tmp_path / "cache")!r})
scores = Scorer(model, data.train.images, data.train.labels).scores("gradient")
auc = Evaluator(model, data.val, data.test).dense_metrics["auc"]
np.savez({str(tmp_path / "loaded.npz")!r}, auc=auc, **scores)
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parent.parent)
    loaded = np.load(tmp_path / "loaded.npz")
    for name, values in scores.items():
        np.testing.assert_array_equal(loaded[name], values, err_msg=f"layer {name}")
    assert float(loaded["auc"]) == auc


def test_baseline_LearnsTheTinyTask(tmp_path, tiny_dataset):
    model, _ = baseline(
        tiny_dataset, "seed_cnn", Recipe(epochs=6, batch_size=8), cache_dir=tmp_path, progress=False
    )
    accuracy = (
        model.predict(tiny_dataset.test.images, verbose=0).argmax(1) == tiny_dataset.test.labels
    ).mean()
    assert accuracy >= 0.75


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("epochs", True),
        ("batch_size", -1),
        ("learning_rate", 0.0),
        ("learning_rate", float("inf")),
        ("learning_rate", float("nan")),
        ("learning_rate", "1e-3"),
        ("seed", -1),
    ],
)
def test_recipe_BadValues_RaiseValueErrorNamingField(field, value):
    with pytest.raises(ValueError, match=field):
        Recipe(**{field: value})


def test_recalibrate_batchnorm_NestedModel_MovingMeanIsTheImagesMean_WeightsUntouched():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3)
    inner = keras.Model(inputs, keras.layers.BatchNormalization()(conv(inputs)))
    outer_inputs = keras.Input((8, 8, 3))
    model = keras.Model(outer_inputs, keras.layers.Flatten()(inner(outer_inputs)))
    norm = inner.layers[-1]
    images = np.random.default_rng(0).normal(3, 2, size=(100, 8, 8, 3)).astype("float32")
    kernel = conv.kernel.numpy().copy()

    assert recalibrate_batchnorm(model, images, batch_size=32) == 1

    np.testing.assert_allclose(norm.moving_mean.numpy(), conv(images).numpy().mean(axis=(0, 1, 2)), atol=1e-4)
    assert norm.momentum == 0.99  # restored
    np.testing.assert_array_equal(conv.kernel.numpy(), kernel)


# --- a shared, read-only data folder ----------------------------------------------------------


def test_baseline_ReadOnlyDataFolderWithCache_TrainsOnceKeepsItInUserCacheWithOneNote(
    data_and_user_folders, read_only, tiny_dataset, monkeypatch, caplog
):
    shared, user = data_and_user_folders
    (shared / "cache").mkdir()
    read_only(shared)
    with caplog.at_level("WARNING", logger="workbench.core.paths"):
        trained, history = baseline(tiny_dataset, "seed_cnn", QUICK, progress=False)
        monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("retrained a cached baseline"))
        cached, cached_history = baseline(tiny_dataset, "seed_cnn", QUICK, progress=False)
    assert len(history["loss"]) == QUICK.epochs and cached_history == history
    assert _weights_equal(trained, cached)
    assert [p.name for p in (user / "cache").glob("*.keras")] == [
        f"baseline-seed_cnn-{train.cache_key(tiny_dataset, 'seed_cnn', QUICK)}.keras"
    ]
    assert list((shared / "cache").iterdir()) == []
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "read-only" in notes[0] and str(user / "cache") in notes[0]


def test_baseline_ReadOnlyDataFolder_ReadsTheSharedCacheFirst(
    data_and_user_folders, read_only, tiny_dataset, monkeypatch, quick
):
    shared, user = data_and_user_folders
    prepared = quick[0]
    cached_copy(quick, shared / "cache")  # the teacher's run, cached in the shared data folder
    read_only(shared)
    monkeypatch.setattr(
        train, "fit", lambda *a, **k: pytest.fail("retrained a baseline the shared cache has")
    )
    loaded, history = baseline(tiny_dataset, "seed_cnn", QUICK, progress=False)
    assert _weights_equal(prepared, loaded) and history
    assert not user.exists()


def test_baseline_CacheCannotBeWritten_ReturnsTheTrainedModelAndWarnsNamingTheFile(tmp_path, tiny_dataset):
    (tmp_path / "a_file").write_text("not a folder")  # a real write failure, root or not
    with pytest.warns(
        UserWarning,
        match=r"could not cache the trained baseline as .*a_file/cache/baseline-seed_cnn-.*\.keras",
    ):
        model, history = baseline(
            tiny_dataset, "seed_cnn", QUICK, cache_dir=tmp_path / "a_file" / "cache", progress=False
        )
    assert model.output_shape == (None, 2) and len(history["loss"]) == QUICK.epochs
