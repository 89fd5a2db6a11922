"""int8 that tells the truth: export_all measures the int8 file against the model, warns on a drop,
and keeps the tensors int8 damages in float when asked."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from workbench.core.errors import WorkbenchError
from workbench.data.dataset import Split
from workbench.model.compat import keras
from workbench.prune.export import export_all, probabilities
from workbench.prune.quantize import INT8_AUC_MARGIN, Int8Warning, compare_quantized, to_int8_selective


def ranged_model(scale: float) -> keras.Model:
    """Class 1 iff an image's mean exceeds 0.5, read from a channel that sits beside one ``scale``
    times larger: at ``scale`` 1000 one int8 scale for both rounds the informative channel to zero."""
    inputs = keras.Input((8, 8, 1))
    wide = keras.layers.Conv2D(2, 1, use_bias=False, name="wide")(inputs)  # (scale * x, x)
    pick = keras.layers.Conv2D(1, 1, use_bias=False, name="pick")(wide)  # x alone
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(pick)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="out")(pooled))
    model.get_layer("wide").set_weights([np.array([scale, 1.0], np.float32).reshape(1, 1, 1, 2)])
    model.get_layer("pick").set_weights([np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1)])
    model.get_layer("out").set_weights(
        [np.array([[-20.0, 20.0]], np.float32), np.array([10.0, -10.0], np.float32)]
    )
    return model


@pytest.fixture(scope="module")
def images_and_split():
    rng = np.random.default_rng(0)
    brightness = rng.uniform(0.6, 1.4, (200, 1, 1, 1))
    images = np.clip(rng.uniform(0, 1, (200, 8, 8, 1)) * brightness, 0, 1).astype(np.float32)
    labels = (images.mean(axis=(1, 2, 3)) > 0.5).astype(int)
    return images, Split(images, labels, np.array(["phantom"] * len(images)))


def _export(model, folder, images, split, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exported = export_all(model, folder, "ranged", calibration=images[:100], validation=split, **options)
    return exported, [w for w in caught if issubclass(w.category, Int8Warning)]


@pytest.fixture(scope="module")
def damaged(images_and_split, tmp_path_factory):
    images, split = images_and_split
    return _export(ranged_model(1000.0), tmp_path_factory.mktemp("damaged"), images, split, keep_float=2)


@pytest.fixture(scope="module")
def harmless(images_and_split, tmp_path_factory):
    images, split = images_and_split
    return _export(ranged_model(1.0), tmp_path_factory.mktemp("harmless"), images, split)


def test_export_all_Int8DamagesTheModel_WarnsNamingTheDrop(damaged):
    exported, warned = damaged
    assert len(warned) == 1
    assert str(warned[0].message).startswith("int8 loses 0.500 AUC against the float model (1.000 -> 0.500")
    row = exported.check.loc["int8"]
    assert row["auc_drop"] > 0.4 and row["agreement"] < 0.7 and row["warning"] == str(warned[0].message)
    assert exported.check.loc["tflite", "warning"] == "" and exported.check.loc["onnx", "auc_drop"] == 0.0


def test_export_all_Int8HarmlessToTheModel_DoesNotWarn(harmless):
    exported, warned = harmless
    assert warned == []
    assert (exported.check["warning"] == "").all()
    assert exported.check.loc["int8", "auc_drop"] <= INT8_AUC_MARGIN
    assert exported.check.loc["int8", "agreement"] >= 0.95


def test_export_all_CheckAUC_IsScikitLearnsAUCOfTheWrittenFile(damaged, images_and_split):
    exported, _ = damaged
    images, split = images_and_split
    for fmt in ("int8", "int8_selective", "tflite"):
        expected = roc_auc_score(split.labels, probabilities(exported[fmt], images)[:, 1])
        assert exported.check.loc[fmt, "auc"] == pytest.approx(expected, abs=1e-9), fmt


def test_selective_int8_KeepsTheDamagedTensorsInFloat_AndRecoversTheAUC(damaged):
    exported, _ = damaged
    assert exported["int8_selective"].name == "ranged.int8-selective.tflite"
    row = exported.check.loc["int8_selective"]
    assert row["auc"] >= 0.99 and row["agreement"] >= 0.95 and row["warning"] == ""
    assert exported.check.loc["int8", "auc"] <= 0.6  # the same model, fully quantized


def test_compare_quantized_WithoutLabels_MeasuresAgainstTheFloatDecisions():
    float_probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    swapped = float_probs[[1, 0, 3, 2]]  # same decisions, ranking reversed inside each class
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = compare_quantized(float_probs, swapped)
    assert row["labels"] == "float decisions" and row["agreement"] == 1.0 and row["float_auc"] == 1.0
    assert row["auc"] == roc_auc_score([0, 0, 1, 1], swapped[:, 1])
    reversed_ = float_probs[::-1]
    with pytest.warns(Int8Warning, match=r"int8 loses 1\.000 AUC .*0% same decisions"):
        compare_quantized(float_probs, reversed_)


def test_compare_quantized_TheMarginIsAnArgument():
    float_probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    quant = np.array([[0.8, 0.2], [0.25, 0.75], [0.3, 0.7], [0.1, 0.9]])  # AUC 0.75 against 1.0
    with pytest.warns(Int8Warning, match=r"loses 0\.250 AUC .*75% same decisions.*margin 0\.01"):
        compare_quantized(float_probs, quant, np.array([0, 0, 1, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = compare_quantized(float_probs, quant, np.array([0, 0, 1, 1]), margin=0.3)
    assert row["warning"] == "" and row["auc_drop"] == pytest.approx(0.25) and row["labels"] == "true labels"


def test_compare_quantized_BadMargin_IsNamed():
    with pytest.raises(WorkbenchError, match=r"margin must be an AUC drop in \[0, 1\), got 5"):
        compare_quantized(np.eye(2), np.eye(2), margin=5)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_to_int8_selective_KeepFloatNotACount_IsNamed(bad):
    with pytest.raises(
        WorkbenchError, match=rf"keep_float must be a whole number of tensors >= 1, got {bad!r}"
    ):
        to_int8_selective(ranged_model(1.0), np.zeros((2, 8, 8, 1), np.float32), bad)
