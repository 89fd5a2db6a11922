"""Export: .keras, TFLite float and int8 and ONNX files, their sizes, and that they still classify."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_cnn

from workbench.analysis.curves import evaluate_model
from workbench.model.compat import keras, tf
from workbench.prune.export import (
    TFLiteModel,
    export_all,
    export_table,
    gzip_size,
    probabilities,
    save_keras,
    to_tflite,
)
from workbench.prune.onnx_export import to_onnx
from workbench.prune.pruning import PruneSpec, apply_masks, make_masks
from workbench.prune.scores import Scorer
from workbench.prune.slim import couple_masks, slim_model


def _all_images(data) -> np.ndarray:
    return np.concatenate([data.train.images, data.val.images, data.test.images])


@pytest.fixture(scope="module")
def exported(_trained_tiny_once, tiny_dataset, tmp_path_factory):
    """The trained tiny model exported once as .keras, .tflite and .int8.tflite."""
    folder = tmp_path_factory.mktemp("export")
    return export_all(_trained_tiny_once, folder, "tiny", calibration=tiny_dataset.train.images)


def test_export_all_WritesOneFilePerFormat(exported):
    assert sorted(exported) == ["int8", "keras", "onnx", "tflite"]
    names = [p.name for p in exported.values()]
    assert names == ["tiny.keras", "tiny.tflite", "tiny.int8.tflite", "tiny.onnx"]
    assert all(p.stat().st_size > 0 for p in exported.values())
    assert list(exported.check.index) == ["tflite", "int8", "onnx"] and not exported.failed


def test_onnx_MatchesKerasProbabilities(exported, _trained_tiny_once, tiny_dataset):
    images = _all_images(tiny_dataset)
    expected = np.asarray(_trained_tiny_once(images))
    found = probabilities(exported["onnx"], images, batch_size=7)
    assert np.abs(found - expected).max() <= 1e-4
    assert exported.check.loc["onnx", "max_abs_diff"] <= 1e-4


def test_tflite_float_MatchesKerasProbabilities(exported, _trained_tiny_once, tiny_dataset):
    images = _all_images(tiny_dataset)
    expected = np.asarray(_trained_tiny_once(images))
    np.testing.assert_allclose(probabilities(exported["tflite"], images), expected, atol=1e-5)
    np.testing.assert_allclose(probabilities(exported["keras"], images), expected, atol=1e-6)


def test_tflite_int8_StaysCloseToKeras_AndIsSmallerThanFloat(exported, _trained_tiny_once, tiny_dataset):
    images = _all_images(tiny_dataset)
    expected = np.asarray(_trained_tiny_once(images))
    int8 = probabilities(exported["int8"], images)
    assert np.abs(int8 - expected).max() < 0.1
    assert (int8.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.9
    assert exported["int8"].stat().st_size * 2.5 < exported["tflite"].stat().st_size


def test_tflite_int8_IsFullInteger_WithFloatInputAndOutput(exported):
    run = TFLiteModel(exported["int8"].read_bytes())
    assert run.input["dtype"] == np.float32 and run.output["dtype"] == np.float32
    edges = {"QUANTIZE", "DEQUANTIZE", "DELEGATE"}
    assert {"QUANTIZE", "DEQUANTIZE"} <= {op["op_name"] for op in run.interpreter._get_ops_details()}
    dtypes = {t["index"]: t["dtype"] for t in run.interpreter.get_tensor_details()}
    inner = [op for op in run.interpreter._get_ops_details() if op["op_name"] not in edges]
    used = {dtypes[i] for op in inner for i in [*op["inputs"], *op["outputs"]] if i in dtypes}
    assert any(op["op_name"] == "CONV_2D" for op in inner)
    assert used <= {np.int8, np.int32}, "every op between the edges should run in integers"


def test_export_table_AccuracyOfEveryFile_MatchesTheModel(exported, _trained_tiny_once, tiny_dataset):
    table = export_table(exported, tiny_dataset.val, tiny_dataset.test)
    reference = evaluate_model(_trained_tiny_once, tiny_dataset.val, tiny_dataset.test)
    assert table.loc["keras", "accuracy"] == reference["accuracy"]
    assert table.loc["tflite", "accuracy"] == reference["accuracy"]
    assert abs(table.loc["int8", "accuracy"] - reference["accuracy"]) <= 2 / len(tiny_dataset.test)
    assert (table["gzip_bytes"] < table["bytes"]).all()


def test_TFLiteModel_PredictInUnevenBatches_EqualsOneBigBatch(exported, tiny_dataset):
    images = _all_images(tiny_dataset)
    content = exported["tflite"].read_bytes()
    whole = TFLiteModel(content, batch_size=len(images)).predict(images)
    np.testing.assert_allclose(TFLiteModel(content, batch_size=7).predict(images), whole, atol=1e-6)
    assert TFLiteModel(content, batch_size=1)(images[:1]).shape == (1, 2)


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_TFLiteModel_Int8InputAndOutput_AreQuantizedAndDequantized(_trained_tiny_once, tiny_dataset):
    converter = tf.lite.TFLiteConverter.from_keras_model(_trained_tiny_once)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([tiny_dataset.train.images[i : i + 1]] for i in range(40))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    run = TFLiteModel(converter.convert(), batch_size=4)
    assert run.input["dtype"] == np.int8
    probs = run.predict(tiny_dataset.test.images)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)
    np.testing.assert_allclose(probs, np.asarray(_trained_tiny_once(tiny_dataset.test.images)), atol=0.1)


def test_slim_and_masked_exports_ClassifyLikeTheirModels(trained_tiny, tmp_path):
    model, data = trained_tiny
    spec = PruneSpec(criterion="taylor", granularity="structured", sparsity=0.5, scope="layerwise")
    keep = couple_masks(model, make_masks(Scorer(model, data.val.images, data.val.labels), spec).keep)
    slim = slim_model(model, keep)
    paths = export_all(slim, tmp_path, "slim", calibration=data.train.images)
    np.testing.assert_allclose(
        probabilities(paths["tflite"], data.test.images), slim(data.test.images), atol=1e-5
    )
    dense_paths = export_all(model, tmp_path, "dense", calibration=data.train.images)
    for fmt in ("keras", "tflite", "int8"):
        assert paths[fmt].stat().st_size < dense_paths[fmt].stat().st_size


def test_gzip_size_UnstructuredZeros_ShrinkTheKerasFile(trained_tiny, tmp_path):
    model, data = trained_tiny
    keep = make_masks(Scorer(model, data.val.images, data.val.labels), PruneSpec(sparsity=0.9)).keep
    dense = save_keras(model, tmp_path / "dense.keras")
    masked = save_keras(apply_masks(model, keep), tmp_path / "masked.keras")
    assert abs(dense.stat().st_size - masked.stat().st_size) < 0.01 * dense.stat().st_size  # zip stores zeros
    assert gzip_size(masked) * 3 < gzip_size(dense)
    assert gzip_size(b"\0" * 10_000) < 100


def test_save_keras_LeavesOutTheOptimizerState_ButKeepsTheOutputs(_trained_tiny_once, tiny_dataset, tmp_path):
    with_optimizer = tmp_path / "trained.keras"
    _trained_tiny_once.save(with_optimizer)
    inference = save_keras(_trained_tiny_once, tmp_path / "inference.keras")
    assert inference.stat().st_size * 2 < with_optimizer.stat().st_size  # Adam keeps two moments per weight
    images = tiny_dataset.test.images
    np.testing.assert_array_equal(probabilities(inference, images), probabilities(with_optimizer, images))


# --- bad input ---------------------------------------------------------------------------------


def test_to_tflite_BadArguments_RaiseValueError(_trained_tiny_once, tiny_dataset):
    with pytest.raises(ValueError, match="quantize"):
        to_tflite(_trained_tiny_once, "int4")
    with pytest.raises(ValueError, match="calibration"):
        to_tflite(_trained_tiny_once, "int8")
    with pytest.raises(ValueError, match="calibration"):
        to_tflite(_trained_tiny_once, "int8", calibration=np.zeros((4, 20, 20, 1), np.float32))


def test_probabilities_MissingOrUnknownFile_Raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        probabilities(tmp_path / "absent.tflite", np.zeros((1, 24, 24, 1)))
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"path must be a \.keras, \.tflite or \.onnx file, got 'model\.pt'"):
        probabilities(other, np.zeros((1, 24, 24, 1)))


def test_save_keras_WrongSuffix_RaisesValueError(tmp_path):
    with pytest.raises(ValueError, match=".keras"):
        save_keras(tiny_cnn(), tmp_path / "model.h5")


def test_TFLiteModel_BatchSizeBelowOne_RaisesValueError(exported):
    with pytest.raises(ValueError, match="batch_size"):
        TFLiteModel(exported["tflite"].read_bytes(), batch_size=0)


@pytest.mark.parametrize("kind", ["logits", "sigmoid", "sigmoid_logits"])
def test_exported_files_OfAnyHead_GiveTheModelsOwnMetrics(kind, tiny_dataset, tmp_path):
    """A logits model's files were read as probabilities (AUC 0.39 for 0.62); one-sigmoid ones crashed."""
    from conftest import tiny_head_model

    from workbench.model.compat import keras
    from workbench.model.train import Recipe, compile_model, fit

    units, activation = {"logits": (2, None), "sigmoid": (1, "sigmoid"), "sigmoid_logits": (1, None)}[kind]
    model = tiny_head_model(units, activation)
    if kind == "sigmoid_logits":
        model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    else:
        compile_model(model)
    fit(model, tiny_dataset, Recipe(epochs=2, batch_size=8), progress=False)
    paths = export_all(model, tmp_path, kind, calibration=tiny_dataset.train.images)
    reference = evaluate_model(model, tiny_dataset.val, tiny_dataset.test)
    table = export_table(paths, tiny_dataset.val, tiny_dataset.test)
    for fmt in ("keras", "tflite", "onnx"):
        assert table.loc[fmt, "auc"] == pytest.approx(reference["auc"], abs=1e-6), fmt
        assert table.loc[fmt, "accuracy"] == reference["accuracy"], fmt
    probs = probabilities(paths["tflite"], tiny_dataset.test.images)
    assert probs.shape == (len(tiny_dataset.test.images), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_TFLiteModel_BadInput_IsNamed(exported, tiny_dataset):
    with pytest.raises(ValueError, match="content must be the bytes of a .tflite model"):
        TFLiteModel(str(exported["tflite"]))
    with pytest.raises(ValueError, match=r"images must have shape \(N, 24, 24, 1\)"):
        TFLiteModel(exported["tflite"].read_bytes()).predict(tiny_dataset.test.images[:, :20, :20])


def _pooling_conv3d():
    from workbench.model.compat import keras

    return keras.Sequential(
        [
            keras.Input((8, 8, 8, 1)),
            keras.layers.Conv3D(2, 3, padding="same"),
            keras.layers.MaxPooling3D(),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def test_to_tflite_AnOpLiteRTLacks_IsNamed():
    with pytest.raises(ValueError, match=r"no builtin op for tf\.MaxPool3D; save it as \.keras"):
        to_tflite(_pooling_conv3d())


def test_export_all_AModelLiteRTCannotConvert_WritesNoFile(tmp_path):
    """It wrote name.keras, then failed on the .tflite: half an export, looking like a whole one."""
    with pytest.raises(ValueError, match="no builtin op"):
        export_all(_pooling_conv3d(), tmp_path / "out", "volumes", calibration=np.zeros((4, 8, 8, 8, 1)))
    assert not (tmp_path / "out").exists()


@keras.saving.register_keras_serializable(package="test_export")
class Bucketize(keras.layers.Layer):
    """Quarters of [0, 1] as 0..3: LiteRT has the op (BUCKETIZE), tf2onnx has no conversion for it."""

    def call(self, x):
        return keras.ops.cast(keras.ops.digitize(x, [0.25, 0.5, 0.75]), "float32")


def test_export_all_AnOpTheOnnxConverterLacks_IsNamed_AndTheOtherFilesAreWritten(tmp_path):
    inputs = keras.Input((8, 8, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(Bucketize(name="quarters")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled), name="odd")
    images = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"no conversion for op Bucketize \(layer 'quarters'\) in 'odd'"):
        paths = export_all(model, tmp_path, "odd", calibration=images)
    written = sorted(path.name for path in tmp_path.glob("odd*"))
    assert sorted(paths) == ["int8", "keras", "tflite"] and written == [
        "odd.int8.tflite",
        "odd.keras",
        "odd.tflite",
    ]
    assert "Bucketize" in paths.failed["onnx"]
    with pytest.raises(ValueError, match=r"op Bucketize \(layer 'quarters'\)"):
        to_onnx(model)


def test_export_all_RunAgain_ReplacesItsOwnFiles_NotTheUsers(exported, _trained_tiny_once, tiny_dataset):
    folder = exported["keras"].parent
    again = export_all(_trained_tiny_once, folder, "tiny", calibration=tiny_dataset.train.images)
    assert again == exported and all(p.stat().st_size > 0 for p in again.values())
    (folder / "tiny.tflite").write_bytes(b"the user's own model")
    with pytest.raises(FileExistsError, match=r"tiny\.tflite exists and was not written by the workbench"):
        export_all(_trained_tiny_once, folder, "tiny", calibration=tiny_dataset.train.images)
    assert (folder / "tiny.tflite").read_bytes() == b"the user's own model"
    export_all(_trained_tiny_once, folder, "tiny", calibration=tiny_dataset.train.images, overwrite=True)
    assert probabilities(folder / "tiny.tflite", tiny_dataset.test.images[:2]).shape == (2, 2)


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("notes.tflite", r"notes\.tflite: not a TFLite model \(.*Flatbuffer"),
        ("notes.keras", r"notes\.keras: not a \.keras model \(a \.keras model is a zip archive\)"),
        ("notes.onnx", r"notes\.onnx: not an ONNX model \(onnxruntime could not load it"),
    ],
)
def test_probabilities_ATextFileNamedAsAModel_NamesTheFile(name, pattern, tmp_path, tiny_dataset):
    """LiteRT said only "The model is not a valid Flatbuffer buffer"; Keras said "File not found"."""
    (tmp_path / name).write_text("not a model")
    with pytest.raises(ValueError, match=pattern) as caught:
        probabilities(tmp_path / name, tiny_dataset.test.images[:2])
    assert str(tmp_path / name) in str(caught.value)
